"""The pod_* templates: rendered with hostile values, every script parses (bash -n) and passes shellcheck,
and the hostile values reach the pod's helper as single arguments."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import realparts
from wfops.command import PodCommand
from wfops.config import parse_settings
from wfops.target import Target

HOSTILE = "x'; touch /tmp/wfops-pwned; echo \"$(id)\" `id` \\"

CASES = {
    "pod_status.sh.j2": ("pod.status", {"repo": "~/r " + HOSTILE, "mnt": "/mnt"}),
    "pod_wait.sh.j2": ("pod.wait", {}),
    "pod_down.sh.j2": ("pod.down", {"sweep_session": "sw" + HOSTILE, "force": True, "reason": HOSTILE}),
}


def render(name: str) -> str:
    command, context = CASES[name]
    settings = parse_settings("OPS_DEFAULT_HOST=local\nWF_TMUX_SOCKET=sock\n", environ={})
    return PodCommand(command, settings, Target(kind="local", label="local")).script(name, **context)


@pytest.mark.parametrize("name", sorted(CASES))
def test_pod_scripts_parse_and_pass_shellcheck(name: str, tmp_path: Path):
    path = tmp_path / name.removesuffix(".j2")
    path.write_text(render(name))
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    try:
        shellcheck = realparts.need("shellcheck", "apt-get install shellcheck")
    except realparts.MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)
    res = subprocess.run([shellcheck, "-s", "bash", "-S", "warning", "-e", "SC1090,SC1091", str(path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


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
