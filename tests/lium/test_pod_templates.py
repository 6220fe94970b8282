"""The pod_* templates: hostile values reach the pod's helper as single arguments. (That they parse and
pass shellcheck is checked with every other template in tests/unit/test_templates.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.unit import test_templates as all_templates

HOSTILE = all_templates.HOSTILE



def render(name: str) -> str:
    command, context = all_templates.CASES[name]
    return all_templates._cmd(command).script(name, **context)


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
