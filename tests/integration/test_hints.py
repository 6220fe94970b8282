"""Every next step a command prints works when pasted in the same shell, from the same directory: the watch and
wait lines of sweep.start (one pod and a fleet) and task.run, the hints of sweep.template and config.init, and the
demo's keep-going lines (scripts/demo_next.sh, which the demo prints last) — each run here through bash,
expecting exit 0. The config is named with -c from a directory without a workflow.env, and WORKFLOW_CONFIG is not
set: a hint that leaned on either would fail."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT, WFOPS, Pod
from tests.integration.test_sweeps import local_swept, write_csv  # noqa: F401 - a fixture

LABELED = re.compile(r"^\s+(?:watch|wait|move|then):\s+(.+)$")


def _shell(pod: Pod) -> dict[str, str]:
    env = {k: v for k, v in pod.env().items() if k != "WORKFLOW_CONFIG"}
    env["PATH"] = os.environ["PATH"]
    return env


def _elsewhere(pod: Pod) -> tuple[Path, Path]:
    """The pod's config moved to conf/pod.env, and a working directory with no workflow.env."""
    pod.write_config()
    conf = pod.root.parent / "conf" / "pod.env"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(pod.config_path.read_text())
    pod.config_path.unlink()
    cwd = pod.root.parent / "work dir"
    cwd.mkdir()
    return conf, cwd


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _paste(line: str, cwd: Path, env: dict[str, str]) -> None:
    res = _run(["bash", "-c", line], cwd, env)
    assert res.returncode == 0, f"{line!r} exited {res.returncode}: {res.stderr}"


def _hints(out: str) -> list[str]:
    return [m.group(1) for m in map(LABELED.match, out.splitlines()) if m]


def test_the_hints_of_sweep_start_and_task_run_work_as_pasted(local_swept: Pod):  # noqa: F811
    pod = local_swept
    csv = write_csv(pod, "h1,config/train_tiny.py,1,,\nh2,config/train_tiny.py,2,,\n")
    conf, cwd = _elsewhere(pod)
    env = _shell(pod)
    res = _run([str(WFOPS), "sweep.start", "--csv", str(csv), "-c", str(conf)], cwd, env)
    assert res.returncode == 0, res.stderr
    hints = _hints(res.stdout)
    assert [h.split()[:2] for h in hints] == [[str(WFOPS), "sweep.status"], [str(WFOPS), "sweep.wait"]]
    assert all(f"-c {conf}" in h for h in hints)
    for hint in reversed(hints):  # sweep.wait first: then sweep.status shows the finished sweep
        _paste(hint, cwd, env)
    res = _run([str(WFOPS), "task.run", "--id", "t1", "--cmd", "echo hi", "-c", str(conf)], cwd, env)
    assert res.returncode == 0, res.stderr
    hints = _hints(res.stdout)
    assert len(hints) == 2 and "task.status --id t1" in hints[0] and "task.wait --id t1" in hints[1]
    for hint in reversed(hints):
        _paste(hint, cwd, env)


def test_the_demo_keep_going_lines_work_as_pasted(local_swept: Pod):  # noqa: F811
    pod = local_swept
    csv = write_csv(pod, "k1,config/train_tiny.py,1,,\n")
    conf, cwd = _elsewhere(pod)
    env = _shell(pod)
    assert _run([str(WFOPS), "sweep.start", "--csv", str(csv), "-c", str(conf)], cwd, env).returncode == 0
    assert _run([str(WFOPS), "sweep.wait", "-c", str(conf)], cwd, env).returncode == 0
    res = _run([str(ROOT / "scripts" / "demo_next.sh"), str(conf)], cwd, env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    commands = [ln.strip() for ln in lines[1:] if ln.startswith("  ")]
    commands.append(lines[-1].split(":  ", 1)[1])  # export PATH=...
    assert len(commands) == 6 and "run.logs k1" in commands[1]
    for command in commands:
        _paste(command, cwd, env)
    assert "sweep.status" in commands[0] and "sweep.report" in commands[2]


def test_template_and_config_init_hints_work_as_pasted(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "WF_", "LIUM_"))}
    out = _run([str(WFOPS), "config.init", "-c", "conf/pod.env"], tmp_path, env).stdout
    hint = out.rsplit("then: ", 1)[1].strip()
    assert hint == f"{WFOPS} config.show -c conf/pod.env"
    _paste(hint, tmp_path, env)
    out = _run([str(WFOPS), "sweep.template", "-c", "conf/pod.env", "--csv", "my.csv"], tmp_path, env).stdout
    hint = out.rsplit("check it: ", 1)[1].strip()
    assert hint == f"{WFOPS} sweep.validate --csv my.csv -c {tmp_path / 'conf' / 'pod.env'}"
    _paste(hint, tmp_path, env)


def test_the_hints_of_a_fleet_sweep_start_work_as_pasted(tmp_path: Path, fleet_ready):
    fleet = fleet_ready
    cfg = fleet.config(tmp_path, TRAIN_SCRIPT="echo_train.py", TRAIN_WORKDIR="examples/nanogpt")
    csv = tmp_path / "fleet.csv"
    csv.write_text("run_id,config,seed,overrides,notes\nf1,config/train_tiny.py,1,,\nf2,config/train_tiny.py,2,,\n")
    res = fleet.wf(cfg, "sweep.start", "--csv", str(csv))
    assert res.returncode == 0, res.stderr
    hints = _hints(res.stdout)
    assert [h.split()[1] for h in hints] == ["sweep.status", "sweep.wait", "sweep.rebalance"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
    env.update(HOME=str(tmp_path / "client-home"), WFOPS_KEEPER_DIR=str(tmp_path / "keepers"))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    for hint in (hints[2], hints[1], hints[0]):  # rebalance (nothing to move), wait, then the finished table
        _paste(hint, cwd, env)
