"""Faults on the pod: damaged state files, a full disk, large inputs. Damaged files are reported as damaged
and never silently replaced; read-only commands work on a full disk; a run or task that fills the disk ends
`failed` with class disk_full; nothing large travels in argv."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Pod, wait_until
from tests.integration.test_sweeps import states, status, swept, wait_sweep, write_csv  # noqa: F401 - fixture


@pytest.mark.parametrize("content,why", [('{"state": "CHECKED_', "not valid JSON"),
                                         ('{"state": "WARP_SPEED", "history": []}', "unknown state 'WARP_SPEED'"),
                                         ('["INIT"]', "expected a JSON object")])
def test_a_damaged_state_file_is_reported_kept_and_reset_on_request(pod: Pod, content: str, why: str):
    pod.ok("fsm.reset", "CHECKED_OUT")
    pod.state_file.write_text(content)
    shown = pod.ok("fsm.status", "--json").json()  # fsm.status always works
    assert shown["state"] == "unknown" and why in shown["damaged"] and str(pod.state_file) in shown["damaged"]
    assert "fsm.reset" in pod.ok("fsm.status").out
    for args in (("bootstrap",), ("task.run", "--id", "t1", "--cmd", "true"), ("sweep.status",)):
        res = pod.wf(*args)
        assert res.rc == 6 and res.last_err.startswith("wfops: the workflow state file ") and why in res.last_err
        assert len(res.err.strip().splitlines()) == 1
    assert pod.state_file.read_text() == content  # never replaced
    assert not (pod.outputs / "_tasks" / "t1").exists()
    pod.ok("task.list")  # commands allowed in any state still work
    pod.ok("fsm.reset", "CHECKED_OUT", "--reason", "after a disk fault")
    assert pod.state()["state"] == "CHECKED_OUT"
    kept = list(pod.state_file.parent.glob("workflow_state.json.damaged-*"))
    assert len(kept) == 1 and kept[0].read_text() == content


def test_damaged_run_and_task_files_show_unknown_and_the_rest_still_prints(swept: Pod):  # noqa: F811
    pod = swept
    pod.ok("sweep.start", "--csv", str(write_csv(pod, "a,config/train_tiny.py,1,,\nb,config/train_tiny.py,2,,\n"
                                                       "c,config/train_tiny.py,3,,\n")))
    wait_sweep(pod)
    (pod.outputs / "a" / "status.json").write_text("{trunc")
    (pod.outputs / "b" / "summary.json").write_text('"just a string"')
    data = status(pod)
    assert states(data) == {"a": "success", "b": "unknown", "c": "success"}  # a: its end, from its summary
    notes = {r["run_id"]: r["note"] for r in data["runs"]}
    assert "a/status.json is damaged (not valid JSON" in notes["a"] and "its end is from summary.json" in notes["a"]
    assert "b/summary.json is damaged (expected a JSON object)" in notes["b"]
    table = pod.ok("sweep.status").out
    assert "unknown" in table and "2 ok" in table
    (pod.outputs / "_manifests" / "sweep-latest.json").write_text("{")
    res = pod.ok("sweep.status")
    assert "warning: " in res.out and "sweep-latest.json is damaged" in res.out

    pod.ok("task.run", "--id", "t1", "--cmd", "true")
    pod.ok("task.wait", "--id", "t1")
    pod.ok("task.run", "--id", "t2", "--cmd", "true")
    pod.ok("task.wait", "--id", "t2")
    (pod.outputs / "_tasks" / "t1" / "status.json").write_text("[]")
    listed = {t["id"]: t for t in pod.ok("task.list", "--json").json()["tasks"]}
    assert listed["t1"]["state"] == "unknown" and "damaged" in listed["t1"]["reason"]
    assert listed["t2"]["state"] == "success"
    assert pod.ok("task.status", "--id", "t1", "--json").json()["state"] == "unknown"


# ------------------------------------------------------------------ a full disk

@pytest.fixture
def small_disk(swept: Pod):  # noqa: F811
    """The pod's outputs dir on a 24 MB tmpfs (the tests run as root); unmounted at the end."""
    pod = swept
    pod.outputs.mkdir(parents=True, exist_ok=True)
    before = {p.name: p for p in pod.outputs.iterdir()}
    saved = pod.root / "outputs-saved"
    subprocess.run(["cp", "-a", str(pod.outputs), str(saved)], check=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(pod.outputs)], capture_output=True,
                         text=True)
    assert res.returncode == 0, f"mounting a tmpfs needs root: {res.stderr}"
    try:
        subprocess.run(["cp", "-a", *[str(saved / name) for name in before], str(pod.outputs)], check=True)
        yield pod
    finally:
        subprocess.run(["tmux", "-L", pod.tmux_socket, "kill-session", "-t", f"={pod.session}-sw"],
                       capture_output=True)
        wait_until(lambda: subprocess.run(["umount", str(pod.outputs)], capture_output=True).returncode == 0,
                   timeout=30, interval=0.5, what="the tmpfs to unmount")


def fill(directory: Path) -> None:
    """Use up every byte left on the disk holding `directory`."""
    subprocess.run(["dd", "if=/dev/zero", f"of={directory / 'ballast.bin'}", "bs=1M"], capture_output=True)


def test_a_full_disk_read_only_commands_work_and_task_creation_is_all_or_nothing(small_disk: Pod):
    pod = small_disk
    pod.ok("task.run", "--id", "before", "--cmd", "true")  # installs the agent while there is room
    pod.ok("task.wait", "--id", "before")
    fill(pod.outputs)
    before = pod.state_file.read_bytes()
    for args in (("fsm.status",), ("task.list",), ("task.status", "--id", "before"), ("sweep.status",)):
        res = pod.wf(*args)
        assert res.rc == 0 and "Traceback" not in res.err, (args, res.err)
    assert pod.state_file.read_bytes() == before
    res = pod.wf("task.run", "--id", "big", "--cmd", "true")
    assert res.rc == 6 and "the disk is full" in res.last_err and "nothing was left behind" in res.last_err
    assert not (pod.outputs / "_tasks" / "big").exists()
    assert not [p for p in (pod.outputs / "_tasks").iterdir() if p.name.startswith(".new")]
    (pod.outputs / "ballast.bin").unlink()
    pod.ok("task.run", "--id", "big", "--cmd", "true")  # the id is free to use
    assert pod.ok("task.wait", "--id", "big", "--json").json()["state"] == "success"


def test_a_task_that_fills_the_disk_fails_with_disk_full(small_disk: Pod):
    pod = small_disk
    out = pod.outputs / "filler.bin"
    pod.ok("task.run", "--id", "filler", "--cmd", f"head -c 100000000 /dev/zero > {out}")
    res = pod.wf("task.wait", "--id", "filler", "--json")
    data = res.json()
    assert res.rc == 1 and data["state"] == "failed" and data["failure_class"] == "disk_full"
    assert "the disk is full" in data["reason"]
    assert "the disk is full" in pod.ok("task.status", "--id", "filler").out


def test_a_run_that_fills_the_disk_fails_with_disk_full_and_the_queue_says_why(small_disk: Pod):
    pod = small_disk
    csv = write_csv(pod, "filler,config/train_tiny.py,1,fill=1,\nnext,config/train_tiny.py,2,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    data = wait_sweep(pod)
    assert data["runs"][0]["state"] == "failed" and data["runs"][0]["note"].startswith("disk_full: ")
    summary = json.loads((pod.outputs / "filler" / "summary.json").read_text())
    assert summary["failure_class"] == "disk_full" and summary["ok"] is False
    assert data["sweep"]["state"] == "completed"  # the queue went on and recorded its end: never lost
    assert pod.state()["state"] == "SWEEP_COMPLETED"
    nxt = pod.outputs / "next"
    if nxt.exists():  # freed reserves may leave room for it: then its dir is whole
        assert (nxt / "command.sh").is_file() and (nxt / "spec.json").is_file() and (nxt / "status.json").is_file()
        assert data["runs"][1]["state"] in ("success", "failed")
    else:  # or it never started, and the sweep says why
        assert data["runs"][1]["state"] == "cancelled"
        assert data["sweep"]["reason"].startswith("disk full: next did not start")
    assert not [p for p in pod.outputs.iterdir() if p.name.startswith(".new-")]


# ------------------------------------------------------------------ large inputs: nothing travels in argv

def test_large_values_commands_and_notes_travel_without_argv_limits(swept: Pod):  # noqa: F811
    pod = swept
    pod.configure(MY_BIG="v" * 140_000, EXTRA_ENV_KEYS="MY_BIG")
    res = pod.wf("fsm.status")  # too big for any process environment: refused before connecting, limit named
    assert res.rc == 2 and res.last_err.startswith("wfops: config: MY_BIG (workflow.env line ")
    assert "environment strings of 131,072 bytes or more" in res.last_err
    big = "v" * 100_000
    pod.configure(MY_BIG=big)
    cmd = ": " + "x" * 100_000 + "\nprintf '%s' \"${#MY_BIG}\""
    pod.ok("task.run", "--id", "big", "--cmd", cmd)
    done = pod.ok("task.wait", "--id", "big", "--json").json()
    assert done["state"] == "success"
    assert pod.ok("task.status", "--id", "big", "--json").json()["tail"][-1].endswith(" 100000")
    too_long = write_csv(pod, [["noted", "config/train_tiny.py", "1", "", "n" * 131_073]], name="long.csv")
    res = pod.wf("sweep.start", "--csv", str(too_long))  # beyond the CSV field limit: refused up front, named
    assert res.rc == 2 and "field larger than field limit (131072)" in res.err
    assert "no sweep has been started" in pod.ok("sweep.status").out
    notes = "n" * 131_072
    pod.ok("sweep.start", "--csv", str(write_csv(pod, [["noted", "config/train_tiny.py", "1", "", notes]])))
    data = wait_sweep(pod)
    assert states(data) == {"noted": "success"} and data["runs"][0]["notes"] == notes


def test_a_killed_tmux_session_stops_the_queue_honestly_and_sweep_start_works_again(swept: Pod):  # noqa: F811
    pod = swept
    csv = write_csv(pod, "long,config/train_tiny.py,1,sleep=300,\nnext,config/train_tiny.py,2,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    wait_until(lambda: (pod.outputs / "long" / "args.json").exists(), timeout=90, what="the run to start")
    pod.tmux("kill-session", "-t", f"={pod.session}-sw")
    data = wait_sweep(pod)
    assert data["sweep"]["state"] == "stopped" and "tmux session or server went away" in data["sweep"]["reason"]
    assert states(data)["long"] in ("lost", "cancelled") and states(data)["next"] == "cancelled"
    res = pod.ok("sweep.start", "--csv", str(write_csv(pod, "next,config/train_tiny.py,2,,\n", name="again.csv")))
    assert "started sweep-" in res.out
    assert states(wait_sweep(pod)) == {"next": "success"}
