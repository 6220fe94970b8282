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


def test_mounts_format_table_lookup(tmp_path):
    """WF_MOUNT_TABLE may be in /proc/mounts format (the tests' fake s3fs); mountinfo is covered in tests/lium."""
    table = tmp_path / "mounts"
    table.write_text("/dev/vda / ext4 rw 0 0\ns3fs /mnt fuse.s3fs rw 0 0\nnone /mnt/fast\\040disk tmpfs rw 0 0\n")
    mounts = pod.pf_mounts(str(table))
    assert pod.deepest_mount("/mnt/data/fineweb", mounts) == ("/mnt", "fuse.s3fs", "s3fs")
    assert pod.deepest_mount("/root/x", mounts) == ("/", "ext4", "/dev/vda")
    assert pod.deepest_mount("/mnt/fast disk/x", mounts) == ("/mnt/fast disk", "tmpfs", "none")


def test_fsm_gate_refuses_and_changes_nothing(tmp_path):
    state = tmp_path / "_control" / "workflow_state.json"
    assert run_helper("fsm-set", "--file", str(state), "--to", "SWEEP_RUNNING", "--command", "t").returncode == 0
    before = state.read_bytes()
    env = tmp_path / "project.env"
    res = run_helper("--gate-file", str(state), "--gate-command", "bootstrap", "--gate-allowed",
                     "POD_READY:BOOTSTRAPPED", "--gate-promote", "--env-path", str(env), "--env-sha", "0" * 64,
                     "--env-b64", "QT0xCg==", "noop")
    assert res.returncode == 3
    assert res.stderr.strip() == (
        "@wfops-error 3 bootstrap is not allowed in state SWEEP_RUNNING (allowed: POD_READY, "
        "BOOTSTRAPPED); see `fsm.status`, or `fsm.reset STATE` if the pod really is elsewhere")
    assert state.read_bytes() == before
    assert not env.exists()  # the config sync comes after the gate


def test_config_sync_writes_mode_600_only_when_changed(tmp_path):
    import base64
    import hashlib

    env = tmp_path / "deep" / "project.env"
    payload = b"A='1 2 $x'\n"
    args = ("--env-path", str(env), "--env-sha", hashlib.sha256(payload).hexdigest(), "--env-b64",
            base64.b64encode(payload).decode(), "noop")
    first = run_helper(*args)
    assert first.returncode == 0 and first.stderr == f"wfops: config written to {env}\n"
    assert env.read_bytes() == payload and oct(env.stat().st_mode & 0o777) == "0o600"
    inode = env.stat().st_ino
    second = run_helper(*args)
    assert second.stderr == "" and env.stat().st_ino == inode


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
        f"spec = importlib.util.spec_from_file_location('p', {str(HELPER)!r})\n"
        "p = importlib.util.module_from_spec(spec)\n"
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
    assert all(a["to"] == b["from"] for a, b in zip(data["history"], data["history"][1:], strict=False))
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
    assert all(a["to"] == b["from"] for a, b in zip(data["history"], data["history"][1:], strict=False))
