"""Every remote template: values reach the shell only through the quoting filters, and every rendered
script parses (bash -n) and passes shellcheck."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests import realparts
from wfops import fsm
from wfops.command import PodCommand
from wfops.config import parse_settings
from wfops.prepare import CheckoutPlan, Step
from wfops.render import templates_dir
from wfops.target import Target

EXPR = re.compile(r"{{(.*?)}}", re.S)
SAFE_FILTERS = ("| q", "| qpath", "| int")
# constants of wfops itself, never user input: its version, command names, the helper's hex digest, sweep ids
TRUSTED = {"version", "command", "helper.sha", "sweep_id", "runs | length"}
HOSTILE = "x'; touch /tmp/wfops-pwned; echo \"$(id)\" `id` \\"


def test_every_value_goes_through_a_quoting_filter():
    offenders = []
    for path in sorted(templates_dir().glob("*.j2")):
        for expr in EXPR.findall(path.read_text()):
            expr = " ".join(expr.split())
            if expr not in TRUSTED and not expr.endswith(SAFE_FILTERS):
                offenders.append(f"{path.name}: {{{{ {expr} }}}}")
    assert offenders == []


def _cmd(command: str) -> PodCommand:
    quoted = '"' + HOSTILE.replace("\\", "\\\\").replace('"', '\\"') + '"'
    settings = parse_settings(f"OPS_DEFAULT_HOST=local\nWF_TMUX_SOCKET=sock\nOPS_REMOTE_REPO=~/r\nMY_X={quoted}\n",
                              environ={})
    assert settings.values["MY_X"] == HOSTILE
    return PodCommand(command, settings, Target(kind="local", label="local"))


PLAN = CheckoutPlan(clone=True, force_clean=True, ref_kind="pr", ref="7", expect_sha="abc1234", venv="recreate",
                    data="download_staged", steps=(Step("link", True, "x"),))
RUN = {"run_id": "r1", "config": "config/a.py", "seed": 1, "notes": HOSTILE, "args": ["a=" + HOSTILE, "b=2"]}

CASES = {
    "fsm_status.sh.j2": ("fsm.status", {}),
    "fsm_reset.sh.j2": ("fsm.reset", {"to_state": "INIT", "reason": HOSTILE}),
    "task_run.sh.j2": ("task.run", {"task_id": "t1", "command_text": HOSTILE, "timeout_secs": 5, "grace_secs": 1,
                                    "workdir": HOSTILE, "force": True, "session": "wf"}),
    "task_status.sh.j2": ("task.status", {"task_id": "t1", "tail_lines": 5}),
    "task_wait.sh.j2": ("task.wait", {"task_id": "t1", "timeout_secs": 0}),
    "task_list.sh.j2": ("task.list", {"limit": 3}),
    "bootstrap.sh.j2": ("bootstrap", {"prereqs": ("git", "tmux"), "auto_install": True, "apt_packages": ("git",),
                                      "bootstrap_script": "/mnt/b.sh", "wandb_script": "~/w.sh", "run_wandb": True}),
    "checkout_probe.sh.j2": ("checkout", {"repo": "~/r", "data_dir": "/d", "train_workdir": HOSTILE,
                                          "link_dir": "data", "install_cmd": HOSTILE, "mount_table": "/proc/mounts"}),
    "checkout_apply.sh.j2": ("checkout", {"plan": PLAN, "repo": "~/r", "data_dir": "/d", "train_workdir": "w",
                                          "link_dir": "data", "install_cmd": HOSTILE, "repo_url": HOSTILE,
                                          "cpu_only": False, "download_cmd": HOSTILE}),
    "sweep_start.sh.j2": ("sweep.start", {"sweep_id": "sweep-1", "repo": "~/r", "train_workdir": "w",
                                          "train_script": "train.py", "config_refs": ["2:a.py"], "csv_text": HOSTILE,
                                          "plan_json": "{}", "runner_text": HOSTILE, "session": "sw", "queued": 1}),
    "sweep_runner.sh.j2": ("sweep.start", {"sweep_id": "sweep-1", "repo": "~/r", "train_workdir": "w",
                                           "train_script": "train.py", "data_dir": "/d", "local_root": "~/fast",
                                           "cpu_only": True, "nproc": None, "arg_style": "dashdash", "force": False,
                                           "fail_fast": True, "mode": "local_sync", "sync_secs": 5, "timeout_secs": 9,
                                           "grace_secs": 2, "inject_out_dir": True, "inject_data_dir": True,
                                           "runs": [RUN]}),
    "sweep_status.sh.j2": ("sweep.status", {}),
    "sweep_stop.sh.j2": ("sweep.stop", {"timeout_secs": 9, "session": "sw"}),
    "run_fetch.sh.j2": ("run.fetch", {"run_id": "r1", "all_runs": False}),
    "pod_status.sh.j2": ("pod.status", {"repo": "~/r " + HOSTILE, "mnt": "/mnt"}),
    "pod_wait.sh.j2": ("pod.wait", {}),
    "pod_down.sh.j2": ("pod.down", {"sweep_session": "sw" + HOSTILE, "force": True, "reason": HOSTILE}),
}


def test_every_template_has_a_rendering_case():
    names = {p.name for p in templates_dir().glob("*.j2") if not p.name.startswith("_")}
    assert names <= set(CASES), names - set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_scripts_parse_and_pass_shellcheck(name, tmp_path):
    command, context = CASES[name]
    assert command in fsm.RULES
    script = _cmd(command).script(name, **context)
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
