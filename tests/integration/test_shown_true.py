"""What is shown is true (issue 23, part 6): a run whose status file was damaged while it ran ends as it ended
(its record rebuilt by its supervisor; its end read from summary.json when the status file is damaged after),
and is not run again; damaged tasks are listed as damaged, first; sweep.add refuses what sweep.start refuses."""

from __future__ import annotations

import json

from tests.conftest import Pod, wait_until
from tests.integration.test_sweeps import states, status, swept, wait_sweep, write_csv  # noqa: F401 - fixture


def test_garbage_in_a_live_runs_status_file_does_not_change_how_it_ended(swept: Pod):  # noqa: F811
    pod = swept
    csv = write_csv(pod, "live,config/train_tiny.py,1,sleep=4,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    status_file = pod.outputs / "live" / "status.json"
    wait_until(lambda: (pod.outputs / "live" / "args.json").exists(), timeout=90, what="the run to start")
    status_file.write_text("garbage{")
    data = wait_sweep(pod)
    assert states(data) == {"live": "success"}, data["runs"]
    assert "not started" not in data["runs"][0]["note"]
    assert (pod.outputs / "live" / "status.json.damaged").read_text() == "garbage{"  # kept for a human
    assert json.loads((pod.outputs / "live" / "summary.json").read_text())["ok"] is True
    status_file.write_text("garbage again")  # damaged after the end: the end is the summary's
    row = status(pod)["runs"][0]
    assert row["state"] == "success" and "status.json is damaged" in row["note"]
    assert "its end is from summary.json" in row["note"]
    assert "success" in pod.ok("sweep.status").out
    pod.ok("sweep.start", "--csv", str(csv))
    assert states(wait_sweep(pod)) == {"live": "skipped"}  # not run again

    wide = pod.root.parent / "wide.csv"
    wide.write_text("run_id,config,seed,overrides,notes,nodes\nwide,config/train_tiny.py,1,,,2\n")
    for command in ("sweep.start", "sweep.add"):
        res = pod.wf(command, "--csv", str(wide))
        assert res.rc == 2 and res.err.strip().splitlines() == [res.last_err], (command, res.err)
        assert "multi-node runs need" in res.last_err
    assert [r["run_id"] for r in status(pod)["runs"]] == ["live"]


def test_a_run_whose_status_file_is_gone_shows_its_end_from_its_summary(swept: Pod):  # noqa: F811
    """status.json removed after the sweep ended, summary.json of this sweep still there: the run's real end, not
    `cancelled: not started` (the failed one) or `skipped: already ok in <this same sweep>` (the ok one)."""
    pod = swept
    csv = write_csv(pod, "bad,config/train_tiny.py,1,exit=3,\ngood,config/train_tiny.py,2,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    assert states(wait_sweep(pod)) == {"bad": "failed", "good": "success"}
    for run in ("bad", "good"):
        (pod.outputs / run / "status.json").unlink()
    data = status(pod)
    assert states(data) == {"bad": "failed", "good": "success"}, data["runs"]
    for row in data["runs"]:
        assert "status.json is missing; its end is from summary.json" in row["note"], row
    assert {r["run_id"]: r["exit_code"] for r in data["runs"]} == {"bad": 3, "good": 0}


def test_damaged_tasks_are_listed_as_damaged_and_first(swept: Pod):  # noqa: F811
    pod = swept
    for tid in ("t1", "t2", "t3"):
        pod.ok("task.run", "--id", tid, "--cmd", "true")
        pod.ok("task.wait", "--id", tid)
    tasks = pod.outputs / "_tasks"
    for tid, content in (("bad-json", "{trunc"), ("bad-shape", "[]"), ("bad-state", '{"state": 5}')):
        (tasks / tid).mkdir()
        (tasks / tid / "status.json").write_text(content)
    (tasks / "no-status").mkdir()
    listed = pod.ok("task.list", "--limit", "2", "--json").json()
    shown = {t["id"]: t for t in listed["tasks"]}
    assert listed["total"] == 7
    assert {"bad-json", "bad-shape", "bad-state", "no-status"} <= set(shown), shown
    assert all(shown[t]["state"] in ("unknown", "missing") and shown[t]["reason"] for t in
               ("bad-json", "bad-shape", "bad-state", "no-status"))
    table = pod.ok("task.list").out
    assert all(t in table for t in ("bad-json", "bad-shape", "bad-state", "no-status", "t1", "t2", "t3"))
