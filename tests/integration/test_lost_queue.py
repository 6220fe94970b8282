"""A sweep whose queue runner died (kill -9): what sweep.start, sweep.retry and sweep.add do next. While a run of it
still has its supervisor (ending its processes after the SIGHUP, up to KILL_GRACE_SECS) each is refused (exit 10,
naming it); once it is recorded lost, sweep.start starts the run again in a fresh dir and the old supervisor's end
stays in the old one. sweep.add / sweep.retry start the sweep's queue again with the runs it had not started, so the
table's `pending` is true while that queue runs."""

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


def _lost_with_a_run_not_started(pod: Pod) -> None:
    """A sweep of `victim` (running, 300 s) and `after` (not started) whose queue runner was killed."""
    csv = write_csv(pod, "victim,config/train_tiny.py,1,sleep=300,\nafter,config/train_tiny.py,2,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    wait_until(lambda: (pod.outputs / "victim" / "args.json").exists(), timeout=90, what="the run to start")
    _kill_queue(pod)


def test_sweep_add_on_a_lost_queue_starts_its_runs_not_started_too(ssh_swept: Pod):  # noqa: F811 - the fixture
    pod = ssh_swept
    _lost_with_a_run_not_started(pod)
    assert states(_lost(pod, "victim")) == {"victim": "lost", "after": "pending"}  # "sweep.start resumes"
    more = write_csv(pod, "extra,config/train_tiny.py,3,sleep=4,\n", name="more.csv")
    out = pod.ok("sweep.add", "--csv", str(more)).out
    assert "its queue started again, with the 1 run(s) it had not started: after" in out, out
    assert status(pod)["sweep"]["state"] == "running"
    end = wait_sweep(pod)
    assert states(end) == {"victim": "lost", "after": "success", "extra": "success"}, end["runs"]


def test_a_queue_started_again_after_a_stop_shows_the_runs_it_will_not_run_as_not_waiting(ssh_swept: Pod):  # noqa: F811
    """sweep.add after sweep.stop starts the queue again with just the added run: the run the stopped queue never
    started is not shown `pending` while that queue runs (it never runs it); a run added to the running queue is."""
    pod = ssh_swept
    csv = write_csv(pod, "long,config/train_tiny.py,1,sleep=300,\nnext,config/train_tiny.py,2,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    wait_until(lambda: (pod.outputs / "long" / "args.json").exists(), timeout=90, what="the run to start")
    pod.ok("sweep.stop")
    assert states(status(pod)) == {"long": "cancelled", "next": "cancelled"}
    pod.ok("sweep.add", "--csv", str(write_csv(pod, "extra,config/train_tiny.py,3,sleep=15,\n", name="a.csv")))
    added = pod.ok("sweep.add", "--json", "--csv", str(write_csv(pod, "more,config/train_tiny.py,4,,\n", name="b.csv")))
    assert added.json()["resumed"] is False  # into the running queue's inbox
    during = status(pod)
    assert during["sweep"]["state"] == "running"
    assert states(during)["next"] == "cancelled", during["runs"]
    assert "the queue running now does not run it (sweep.retry next queues it)" in during["runs"][1]["note"]
    assert states(during)["more"] == "pending"
    assert states(wait_sweep(pod)) == {"long": "cancelled", "next": "cancelled", "extra": "success", "more": "success"}


def test_sweep_retry_on_a_lost_queue_starts_its_runs_not_started_too(ssh_swept: Pod):  # noqa: F811 - the fixture
    pod = ssh_swept
    _lost_with_a_run_not_started(pod)
    _lost(pod, "victim")
    answer = pod.ok("sweep.retry", "--json", "victim").json()
    assert answer["resumed"] is True and answer["not_started"] == ["after"], answer
    wait_until(lambda: states(status(pod))["after"] == "success", timeout=90, what="the run not started to run")
    pod.ok("sweep.stop")  # victim's second attempt sleeps 300 s
