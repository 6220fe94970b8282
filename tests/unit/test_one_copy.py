"""One copy of a run at a time: the queue never starts a run id that is running (its slots and its end stay with
the one running), an inbox entry of a run running or in its back-off is dropped and one of a run waiting in the
order replaces it at its place; and rows.may_be_live, which sweep.retry asks before it requeues a run shown
`unknown` (a damaged record), from the files and processes the agent can check."""

from __future__ import annotations

import json
import os
from pathlib import Path

from wfops.agent import procs, slots
from wfops.agent.rows import may_be_live
from wfops.agent.scheduler import Scheduler
from wfops.agent.states import Layout

EX = {"repo": "/r", "workdir": "/r/w", "train_script": "train.py", "launcher": "python", "data_dir": "/d",
      "local_root": "/l", "fake_gpus": 2}


def scheduler(tmp_path: Path) -> Scheduler:
    (tmp_path / "out" / "_manifests").mkdir(parents=True)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"sweep_id": "sweep-x", "runs": [], "queue": [], "exec": EX,
                                    "pod": {"out": str(tmp_path / "out")}}))
    sched = Scheduler(str(manifest))
    sched.slots = slots.Slots(["0", "1"])
    sched.order = slots.Order(2, 2)
    return sched


def test_a_run_id_that_is_running_is_not_started_again_and_keeps_its_slots(tmp_path: Path):
    sched = scheduler(tmp_path)
    first = object()
    sched.running["x"] = first  # the running copy: only its key is read
    sched.launch({"run_id": "x", "config": "c.py", "gpus": "1", "attempt": 1})
    assert sched.running == {"x": first} and sorted(sched.slots.free) == ["0", "1"]
    assert not (tmp_path / "out" / "x").exists()
    assert "not started: x is running already" in (tmp_path / "out" / "_manifests" / "sweep-x.log").read_text()


def test_an_inbox_copy_of_a_running_or_backing_off_run_is_dropped_and_of_a_waiting_one_replaces_it(tmp_path: Path):
    sched = scheduler(tmp_path)
    sched.running["r"] = object()
    sched.backoff.add("b")
    assert sched.admit({"run_id": "r", "config": "c.py"}) == 0
    assert sched.admit({"run_id": "b", "config": "c.py"}) == 0
    sched.enqueue({"run_id": "w", "config": "c.py"})
    sched.enqueue({"run_id": "after", "config": "c.py"})
    assert sched.admit({"run_id": "w", "config": "c.py", "force": True}) == 1  # sweep.retry's copy: forced
    assert sched.admit({"run_id": "new", "config": "c.py"}) == 1
    assert len(sched.order) == 3
    got = [sched.order.pop_fitting(2) for _ in range(3)]
    assert [(r["run_id"], r["_index"], r.get("force")) for r in got] == [
        ("w", 1, True), ("after", 2, None), ("new", 3, None)]  # the copy took the waiting one's place
    log = (tmp_path / "out" / "_manifests" / "sweep-x.log").read_text()
    assert "inbox: r is running or waits for its retry; this copy of it was dropped" in log
    assert "inbox: b is running" in log and "inbox: w was waiting in the queue; this copy replaces it" in log


def test_may_be_live_reads_the_supervisor_or_else_the_queues_log(tmp_path: Path):
    pod = Layout.from_dict({"out": str(tmp_path / "out")})
    os.makedirs(pod.run_dir("x"))
    os.makedirs(pod.manifests)
    sw = {"sweep_id": "sweep-x", "boot_id": procs.boot_id()}
    status, log = Path(pod.run_dir("x")) / "status.json", Path(pod.manifests) / "sweep-x.log"
    status.write_text("garbage{")
    assert "cannot be read" in may_be_live(pod, sw, "running", "x")  # no log: nothing says it ended
    log.write_text("2026-01-01T00:00:00Z start x (attempt 1/1, seed 1, 1 process(es))\n"
                   "2026-01-01T00:00:01Z start xy (attempt 1/1, seed 1, 1 process(es))\n")
    assert "started, with no end" in may_be_live(pod, sw, "running", "x")
    assert "started, with no end" in may_be_live(pod, sw, "lost", "x")  # its supervisor may still be ending it
    assert may_be_live(pod, dict(sw, boot_id="another-boot"), "lost", "x") == ""  # rebooted since: nothing runs
    with log.open("a") as fh:
        fh.write("2026-01-01T00:00:02Z end x: success (attempt 1/1)\n")
    assert may_be_live(pod, sw, "running", "x") == ""
    me = os.getpid()
    status.write_text(json.dumps({"state": "running", "pid": me, "pid_start": procs.proc_start(me),
                                  "boot_id": procs.boot_id()}))
    assert may_be_live(pod, sw, "running", "x") == f"its supervisor (pid {me}) is alive"
    status.write_text(json.dumps({"state": "running", "pid": me, "pid_start": -1}))  # its pid reused: gone
    assert may_be_live(pod, sw, "running", "x") == ""
    status.write_text(json.dumps({"state": "failed", "requeued_at": "2026-01-01T00:00:03Z"}))
    assert may_be_live(pod, sw, "running", "x") == "it waits in the running queue"
    assert may_be_live(pod, sw, "completed", "x") == ""
