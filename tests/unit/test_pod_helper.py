"""The pod helper (remote_templates/wfops_pod.py) as a module and as real processes: liveness, state
files, failure classes, and the workflow state under concurrent writers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HELPER = Path(__file__).resolve().parents[2] / "remote_templates" / "wfops_pod.py"
_spec = importlib.util.spec_from_file_location("wfops_pod", HELPER)
pod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pod)


def run_helper(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HELPER), *args], capture_output=True, text=True, input=stdin)


def test_liveness_reports_lost_for_dead_runner_other_boot_and_missing_pid():
    me = os.getpid()
    alive = {"state": "running", "pid": me, "pid_start": pod.proc_start(me), "boot_id": pod.boot_id()}
    assert pod.liveness(alive) == ("running", "")
    assert pod.liveness(dict(alive, pid_start=1))[0] == "lost"  # a reused pid: another process
    assert pod.liveness(dict(alive, boot_id="another-boot")) == ("lost", "the pod rebooted after this started")
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert pod.liveness(dict(alive, pid=dead.pid, pid_start=None))[0] == "lost"
    assert pod.liveness({"state": "running"})[0] == "lost"
    assert pod.liveness({"state": "success", "pid": dead.pid}) == ("success", "")
    assert pod.liveness({"state": "pending"}) == ("pending", "")


def test_a_terminal_state_never_goes_back(tmp_path):
    path = str(tmp_path / "status.json")
    pod.update_json(path, {"state": "running"})
    pod.update_json(path, {"state": "success", "exit_code": 0})
    after = pod.update_json(path, {"state": "running"})
    assert after["state"] == "success"
    assert json.loads(Path(path).read_text())["state"] == "success"


@pytest.mark.parametrize("log,state,code,expected", [
    ("Root Cause (first observed failure):\n[0]:\n  rank : 1\n  exitcode  : 3 (pid: 12)\n", "failed", 1,
     (3, "nonzero_exit")),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\nRoot Cause\n  exitcode  : 1 (pid: 9)\n",
     "failed", 1, (1, "oom")),
    ("[rank0]: NCCL error in: ProcessGroupNCCL.cpp, unhandled system error\n", "failed", 1, (1, "nccl")),
    ("Watchdog caught collective operation timeout: WorkNCCL(...)\n", "failed", 1, (1, "nccl")),
    ("Root Cause\n  exitcode  : -9 (pid: 4)\n", "failed", 1, (137, "nonzero_exit")),
    ("anything", "timed_out", 143, (143, "timeout")),
    ("anything", "success", 0, (0, None)),
])
def test_failure_classes_and_the_workers_real_exit_code(log, state, code, expected):
    got = pod.classify(log, code, state)
    assert (got["exit_code"], got["failure_class"]) == expected


def test_mount_table_lookup(tmp_path):
    table = tmp_path / "mounts"
    table.write_text("/dev/vda / ext4 rw 0 0\ns3fs /mnt fuse.s3fs rw 0 0\nnone /mnt/fast\\040disk tmpfs rw 0 0\n")
    assert pod.mount_of("/mnt/data/fineweb", str(table)) == ("/mnt", "fuse.s3fs")
    assert pod.mount_of("/root/x", str(table)) == ("/", "ext4")
    assert pod.mount_of("/mnt/fast disk/x", str(table)) == ("/mnt/fast disk", "tmpfs")


def test_fsm_gate_refuses_and_changes_nothing(tmp_path):
    state = tmp_path / "_control" / "workflow_state.json"
    assert run_helper("fsm-set", "--file", str(state), "--to", "SWEEP_RUNNING", "--command", "t").returncode == 0
    before = state.read_bytes()
    res = run_helper("fsm-gate", "--file", str(state), "--command", "bootstrap", "--allowed",
                     "POD_READY,BOOTSTRAPPED", "--promote")
    assert res.returncode == 3
    assert res.stderr.strip() == ("@wfops-error 3 bootstrap is not allowed in state SWEEP_RUNNING (allowed: POD_READY, "
                                  "BOOTSTRAPPED); see `fsm.status`, or `fsm.reset STATE` if the pod really is elsewhere")
    assert state.read_bytes() == before


def test_history_is_bounded(tmp_path):
    state = tmp_path / "state.json"
    for i in range(pod.HISTORY_LIMIT + 7):
        pod.fsm_write(str(state), pod.fsm_read(str(state)), "POD_READY" if i % 2 else "INIT", "t", str(i))
    data = json.loads(state.read_text())
    assert len(data["history"]) == pod.HISTORY_LIMIT
    assert data["history"][-1]["reason"] == str(pod.HISTORY_LIMIT + 6)


def test_concurrent_transitions_from_two_processes_never_corrupt_the_file(tmp_path):
    """Two writer processes, each making 40 transitions, while a reader keeps parsing the file."""
    state = tmp_path / "_control" / "workflow_state.json"
    script = (
        "import sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('p', {str(HELPER)!r}); p = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(p)\n"
        "for i in range(40):\n"
        "    with p.locked(sys.argv[1]):\n"
        "        cur = p.fsm_read(sys.argv[1])\n"
        "        p.fsm_write(sys.argv[1], cur, sys.argv[2], 'writer-' + sys.argv[2], str(i))\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(state), s]) for s in ("BOOTSTRAPPED", "CHECKED_OUT")]
    seen = 0
    while any(w.poll() is None for w in writers):
        if state.exists():
            json.loads(state.read_text())  # never a half-written file
            seen += 1
    assert [w.returncode for w in writers] == [0, 0]
    data = json.loads(state.read_text())
    assert len(data["history"]) == pod.HISTORY_LIMIT
    assert sorted({h["to"] for h in data["history"]}) == ["BOOTSTRAPPED", "CHECKED_OUT"]
    # no lost update: every transition's "from" is the "to" of the one before it
    assert all(a["to"] == b["from"] for a, b in zip(data["history"], data["history"][1:]))
    assert not list(state.parent.glob("*.tmp.*"))


def test_fsm_reset_from_parallel_cli_style_calls(tmp_path):
    state = tmp_path / "s.json"

    def reset(i: int) -> int:
        target = ("INIT", "POD_READY", "CHECKED_OUT")[i % 3]
        return run_helper("fsm-set", "--file", str(state), "--to", target, "--command", "fsm.reset",
                          "--reason", f"r{i}").returncode

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(reset, range(24))) == {0}
    data = json.loads(state.read_text())
    assert len(data["history"]) == 24
    assert all(a["to"] == b["from"] for a, b in zip(data["history"], data["history"][1:]))
