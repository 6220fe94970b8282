"""A run or task owns every process it starts: after a timeout with a worker that ignores SIGTERM, a
sweep.stop, a kill -9 of torchrun, or a `setsid` daemon, no process of it is left, and the state is
recorded only after the last one is gone. Leftovers are found by the owner mark (WFOPS_OWNER=<token>) in
/proc/*/environ; each test first shows, with the processes still running, that the same scan finds them."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.conftest import Pod, wait_until
from tests.integration.test_sweeps import (
    states,
    swept,  # noqa: F401 - fixture
    wait_sweep,
    write_csv,
)


def owned_by(token: str) -> list[int]:
    marker = f"WFOPS_OWNER={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes()
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        if marker in env.split(b"\0") and stat[stat.rfind(")") + 2] != "Z":
            found.append(int(name))
    return found


def started_run(pod: Pod, run_id: str, overrides: str, **config: str) -> tuple[str, dict]:
    """Start a one-run sweep; wait until both torchrun workers (and rank 0's daemon, if any) run."""
    pod.configure(**config)
    pod.ok("sweep.start", "--csv", str(write_csv(pod, f"{run_id},config/train_tiny.py,1,{overrides},\n")))
    run = pod.outputs / run_id

    def started() -> bool:
        if json.loads((pod.outputs / "_control" / "sweep.json").read_text()).get("state") == "completed":
            raise AssertionError(f"the sweep ended before both workers of {run_id} started:\n"  # say why at once
                                 + "".join(p.read_text()[-1500:] for p in (run / "summary.json", run / "stdout.log")
                                           if p.exists()))
        return (run / "rank1.txt").exists() and (run / "args.json").exists()

    wait_until(started, timeout=90, what="both workers to start")
    st = json.loads((pod.outputs / run_id / "status.json").read_text())
    expected = 4 if "daemon" in overrides else 3  # torchrun, two workers, the daemon
    wait_until(lambda: len(owned_by(st["owner"])) >= expected, timeout=20,
               what=f"the scan to find the run's {expected} processes (positive control)")
    return st["owner"], st


def summary(pod: Pod, run_id: str) -> dict:
    return json.loads((pod.outputs / run_id / "summary.json").read_text())


def test_timeout_with_a_worker_that_ignores_term_ends_every_process(swept: Pod):  # noqa: F811
    pod = swept
    token, _ = started_run(pod, "stubborn", "sleep=300 ignore_term=1 daemon=300", RUN_TIMEOUT_SECS="12")
    data = wait_sweep(pod)
    assert states(data) == {"stubborn": "timed_out"}
    assert summary(pod, "stubborn")["failure_class"] == "timeout"
    assert owned_by(token) == []


def test_sweep_stop_ends_every_process(swept: Pod):  # noqa: F811
    pod = swept
    token, _ = started_run(pod, "long", "sleep=300 ignore_term=1 daemon=300")
    pod.ok("sweep.stop")
    assert owned_by(token) == []  # sweep.stop returns only after the queue, and so the run, has ended
    assert states(wait_sweep(pod)) == {"long": "cancelled"}
    assert summary(pod, "long")["failure_class"] == "cancelled"


def test_kill_9_of_torchrun_ends_its_workers(swept: Pod):  # noqa: F811
    pod = swept
    token, st = started_run(pod, "orphans", "sleep=300 daemon=300")
    os.kill(st["child_pid"], signal.SIGKILL)  # command.sh execs torchrun: the supervisor's child is torchrun
    data = wait_sweep(pod)
    assert states(data) == {"orphans": "failed"}
    assert summary(pod, "orphans")["signal"] == "SIGKILL"
    assert owned_by(token) == []


def test_a_setsid_daemon_ends_with_its_successful_run(swept: Pod):  # noqa: F811
    pod = swept
    token, _ = started_run(pod, "daemonic", "sleep=3 daemon=300")
    data = wait_sweep(pod)
    assert states(data) == {"daemonic": "success"}
    status = json.loads((pod.outputs / "daemonic" / "status.json").read_text())
    assert "leftover process(es) ended after it exited" in status["note"]
    assert owned_by(token) == []


def _task_running(pod: Pod, task_id: str, cmd: str, at_least: int, *extra: str) -> str:
    pod.ok("task.run", "--id", task_id, "--cmd", cmd, *extra)
    path = pod.outputs / "_tasks" / task_id / "status.json"
    owner = wait_until(lambda: json.loads(path.read_text()).get("owner"), what="the task to start")
    wait_until(lambda: len(owned_by(owner)) >= at_least, what="the scan to find the task's processes")
    return owner


def test_task_timeout_ends_a_term_ignoring_setsid_tree(pod: Pod):
    owner = _task_running(pod, "stubborn", "trap '' TERM; setsid -f sleep 300; sleep 300", 2, "--timeout-secs", "3")
    res = pod.wf("task.wait", "--id", "stubborn", "--json")
    assert res.rc == 7 and res.json()["state"] == "timed_out"
    assert owned_by(owner) == []


def test_task_daemon_ends_with_the_task_and_kill_9_of_its_command(pod: Pod):
    owner = _task_running(pod, "daemonic", "setsid -f sleep 300; sleep 4; echo started", 2)
    res = pod.wf("task.wait", "--id", "daemonic", "--json")
    assert res.rc == 0 and res.json()["state"] == "success"
    assert owned_by(owner) == []
    owner = _task_running(pod, "victim", "setsid -f sleep 300; exec sleep 300", 2)
    st = json.loads((pod.outputs / "_tasks" / "victim" / "status.json").read_text())
    os.kill(st["child_pid"], signal.SIGKILL)
    res = pod.wf("task.wait", "--id", "victim", "--json")
    assert res.rc == 1 and res.json()["state"] == "failed" and res.json()["exit_code"] == 137
    assert owned_by(owner) == []
