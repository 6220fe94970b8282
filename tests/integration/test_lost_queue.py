"""A sweep whose queue runner died (kill -9): what sweep.start, sweep.retry and sweep.add do next. While a run of it
still has its supervisor (ending its processes after the SIGHUP, up to KILL_GRACE_SECS) each is refused (exit 10,
naming it); once it is recorded lost, sweep.start starts the run again in a fresh dir and the old supervisor's end
stays in the old one."""

from __future__ import annotations

import json
import os
import signal

from tests.conftest import Pod, wait_until
from tests.integration.test_sweeps import (
    ssh_swept,  # noqa: F401 - fixture
    states,
    status,
    venv_procs,
    wait_sweep,
    write_csv,
)


def _kill_queue(pod: Pod) -> None:
    os.kill(json.loads((pod.outputs / "_control" / "sweep.json").read_text())["pid"], signal.SIGKILL)


def _lost(pod: Pod, run_id: str) -> dict:
    return wait_until(lambda: (lambda s: s if states(s)[run_id] == "lost" else None)(status(pod)), timeout=60,
                      what=f"{run_id} to be recorded lost by its own supervisor")


def test_a_lost_queues_run_still_ending_refuses_a_new_start_and_its_end_never_lands_in_the_new_run(
        ssh_swept: Pod):  # noqa: F811 - the fixture
    pod = ssh_swept
    pod.configure(KILL_GRACE_SECS="15")  # the run ignores SIGTERM: its supervisor ends it after 15 s
    csv = write_csv(pod, "victim,config/train_tiny.py,1,sleep=12 ignore_term=1,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    wait_until(lambda: (pod.outputs / "victim" / "args.json").exists(), timeout=90, what="the run to start")
    _kill_queue(pod)
    assert pod.wf("sweep.wait", "--timeout-secs", "30").rc == 8  # lost
    for args in (("sweep.start", "--csv", str(csv)), ("sweep.retry", "victim"),
                 ("sweep.add", "--csv", str(write_csv(pod, "extra,config/train_tiny.py,3,,\n", name="more.csv")))):
        res = pod.wf(*args)
        assert res.rc == 10, (args, res.out, res.err)
        assert "still ending: victim (supervisor pid" in res.err and "wait until sweep.status" in res.err, res.err
    assert venv_procs(pod), "the old run's processes are still there (they ignore SIGTERM)"
    assert states(status(pod)) == {"victim": "running"}  # nothing was changed: no extra row, no new queue
    _lost(pod, "victim")
    pod.ok("sweep.start", "--csv", str(csv))
    sid = json.loads((pod.outputs / "_control" / "sweep.json").read_text())["sweep_id"]
    assert states(wait_sweep(pod)) == {"victim": "success"}
    summary = json.loads((pod.outputs / "victim" / "summary.json").read_text())
    assert summary["sweep_id"] == sid and summary["state"] == "success"
    (old,) = (pod.outputs / "_previous").glob("victim.*")
    assert json.loads((old / "status.json").read_text())["state"] == "lost"  # the old run's end, in its own dir
