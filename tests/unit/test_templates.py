"""Every remote template: values reach the shell only through the quoting filters, and every rendered
script parses (bash -n) and passes shellcheck."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import realparts
from wfops.settings.load import parse_settings
from wfops.targets.target import Target
from wfops.transport import rules as fsm
from wfops.transport.command import SERVE_TEMPLATE, PodCommand
from wfops.transport.render import templates_dir
from wfops.transport.requestline import request_line

EXPR = re.compile(r"{{(.*?)}}", re.S)
SAFE_FILTERS = ("| q", "| qpath", "| int")
# constants of wfops itself, never user input: its version and command names
TRUSTED = {"version", "command"}
HOSTILE = "x'; touch /tmp/wfops-pwned; echo \"$(id)\" `id` \\"


# the run template (tests/unit/test_run_template.py): every value is quoted by its environment, and `rt.NAME` is
# filled in on the pod, already quoted; it is no pod command script
RUN_TEMPLATE = "run_command.sh.j2"


def test_every_value_goes_through_a_quoting_filter():
    offenders = []
    for path in sorted(templates_dir().glob("*.j2")):
        for expr in EXPR.findall(path.read_text()):
            expr = " ".join(expr.split())
            if path.name == RUN_TEMPLATE and expr.startswith("rt.") and expr[3:].isidentifier():
                continue
            if expr not in TRUSTED and not expr.endswith(SAFE_FILTERS):
                offenders.append(f"{path.name}: {{{{ {expr} }}}}")
    assert offenders == []


def _cmd(command: str) -> PodCommand:
    quoted = '"' + HOSTILE.replace("\\", "\\\\").replace('"', '\\"') + '"'
    settings = parse_settings(f"OPS_DEFAULT_HOST=local\nWF_TMUX_SOCKET=sock\nOPS_REMOTE_REPO=~/r\nMY_X={quoted}\n"
                              "OPS_REMOTE_OUTPUTS_DIR=~/out\n",
                              environ={})
    assert settings.raw("MY_X") == HOSTILE
    return PodCommand(command, settings, Target(kind="local", label="local"))


def _request(command: str, agent_command: str, data: dict) -> dict:
    return _cmd(command).request(agent_command, data)


CASES = {
    "agent.sh.j2": ("task.run", {"request": None}),
    "run_fetch.sh.j2": ("run.fetch", {"request": None}),
    SERVE_TEMPLATE: ("fsm.status", {}),  # the kept agent's start (PodCommand.serve_script)
}
REQUESTS = {"agent.sh.j2": ("task-start", {"id": "t1", "command_text": HOSTILE, "session": "wf", "workdir": HOSTILE}),
            "run_fetch.sh.j2": ("fetch-plan", {"have": {}, "run": "r1", "all": False})}


def test_the_request_reaches_the_agent_verbatim(tmp_path):
    """The request travels after the script on bash's stdin; the agent (here a stand-in python3 that saves its
    stdin) gets it byte for byte, hostile values included, and no other command of the script reads it."""
    command = "task.run"
    request = _request(command, *REQUESTS["agent.sh.j2"])
    cmd = _cmd(command)
    script = cmd.script("agent.sh.j2").replace("/usr/bin/python3", str(tmp_path / "python3"))
    got = tmp_path / "stdin.json"
    stand_in = tmp_path / "python3"
    stand_in.write_text(f"#!/bin/sh\ncat > {got}\n")
    stand_in.chmod(0o755)
    text = script + request_line(request)
    res = subprocess.run(["bash", "-s"], input=text, capture_output=True, text=True, env={"HOME": str(tmp_path),
                                                                                         "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert got.read_text() == request_line(request)  # the guarded line (the agent reads past the guard)
    assert not Path("/tmp/wfops-pwned").exists()


def test_every_template_has_a_rendering_case():
    names = {p.name for p in templates_dir().glob("*.j2") if not p.name.startswith("_") and p.name != RUN_TEMPLATE}
    assert names <= set(CASES), names - set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_scripts_parse_and_pass_shellcheck(name, tmp_path):
    command, _ = CASES[name]
    assert command in fsm.RULES
    cmd = _cmd(command)
    if name == SERVE_TEMPLATE:
        script = cmd.serve_script()
    else:
        script = cmd.script(name, request=_request(command, *REQUESTS[name]))
    path = tmp_path / name.replace(".j2", "")
    path.write_text(script)
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    try:
        shellcheck = realparts.need("shellcheck", "apt-get install shellcheck")
    except realparts.MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)
    res = subprocess.run([shellcheck, "-s", "bash", "-S", "warning", "-e", "SC1090,SC1091", str(path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    assert shutil.which("bash")


def test_the_kept_agents_start_is_one_script_for_every_read_and_none_for_a_mutating_command():
    """One kept agent per pod layout and agent, whatever the read (wfops.transport.podserver keys it by the start
    script); never an order to serve for a command that takes the lock or a dry run, or a command not served."""
    orders = {c: _cmd(c).serve_order("fsm-show", 7, False) for c in ("fsm.status", "task.list", "sweep.status")}
    starts = {o["start"] for o in orders.values() if o is not None}
    assert len(starts) == 1 and all(o is not None and o["skip"] == 7 for o in orders.values())
    start = starts.pop()
    assert "--serve" in start and "flock" not in start and "agent.serve" in start
    assert _cmd("task.run").serve_order("fsm-show", 7, False) is None
    assert _cmd("fsm.status").serve_order("fsm-show", 7, True) is None
    assert _cmd("task.list").serve_order("task-wait", 7, False) is None


def test_the_kept_agents_start_creates_nothing_on_a_pod_without_the_agent(tmp_path):
    """A start still in flight when `wfops disconnect` closed its connection may run on the pod after the command
    returned: on a pod whose outputs were removed meanwhile it says so and makes no folder again."""
    stand_in = tmp_path / "python3"
    stand_in.write_text(f"#!/bin/sh\ntouch {tmp_path / 'ran'}\n")
    stand_in.chmod(0o755)
    script = _cmd("fsm.status").serve_script().replace("/usr/bin/python3", str(stand_in))
    res = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True,
                         env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 6
    assert "@wfops-error 6 the wfops agent is not installed in" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python3"]  # no out/_control/agent, the agent never ran
