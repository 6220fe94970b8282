"""The pod_* templates: rendered with hostile values, every script parses (bash -n) and passes shellcheck,
and the hostile values reach the pod's helper as single arguments."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.unit import test_templates as all_templates

HOSTILE = all_templates.HOSTILE

CASES = {
    "pod_status.sh.j2": ("pod.status", {"repo": "~/r " + HOSTILE, "mnt": "/mnt"}),
    "pod_wait.sh.j2": ("pod.wait", {}),
    "pod_down.sh.j2": ("pod.down", {"sweep_session": "sw" + HOSTILE, "force": True, "reason": HOSTILE}),
}


def render(name: str) -> str:
    command, context = CASES[name]
    return all_templates._cmd(command).script(name, **context)


@pytest.mark.parametrize("name", sorted(CASES))
def test_pod_scripts_parse_and_pass_shellcheck(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same check as every other template's (tests/unit/test_templates.py), on the pod_* cases here."""
    monkeypatch.setitem(all_templates.CASES, name, CASES[name])
    all_templates.test_rendered_scripts_parse_and_pass_shellcheck(name, tmp_path)


def test_hostile_values_stay_one_word(tmp_path: Path):
    """The pod_down line, run with a stub helper, hands the hostile values over verbatim."""
    script = render("pod_down.sh.j2")
    line = next(ln for ln in script.splitlines() if ln.startswith("wf_py pod-down"))
    out = tmp_path / "argv"
    stub = f'wf_py() {{ printf "%s\\n" "$@" > {out}; }}\nWF_STATE=/s\nWF_SWEEP_ALIVE=0\n{line.replace(">&3", "")}\n'
    subprocess.run(["bash", "-c", stub], check=True, cwd=tmp_path)
    argv = out.read_text().split("\n")
    assert argv[argv.index("--session") + 1] == "sw" + HOSTILE
    assert argv[argv.index("--reason") + 1] == HOSTILE
    assert not Path("/tmp/wfops-pwned").exists()
