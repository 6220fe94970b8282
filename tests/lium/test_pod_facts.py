"""The pod side of pod.status and pod.down (wfops/agent/facts.py), run in
process on synthetic mount tables and real directories."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_agent import agent


@pytest.fixture(scope="module")
def helper():
    from wfops.agent import facts

    return facts


def test_mountinfo_is_parsed_with_its_escapes(helper, tmp_path: Path):
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "40 22 0:45 / /mnt/my\\040data rw,nosuid master:2 - fuse.s3fs s3fs rw,user_id=0\n"
        "41 22 0:46 / /proc rw - proc proc rw\n"
    )
    assert helper.pf_mounts(str(table)) == [("/", "ext4", "/dev/vda"), ("/mnt/my data", "fuse.s3fs", "s3fs"),
                                            ("/proc", "proc", "proc")]
    assert helper.pf_mounts(str(tmp_path / "missing")) == []


def test_a_mounted_dir_and_the_nearest_parent_of_a_missing_one(helper, tmp_path: Path):
    mnt = tmp_path / "mnt"
    (mnt / "repo").mkdir(parents=True)
    mounts = [("/", "ext4", "/dev/vda"), (str(tmp_path), "tmpfs", "tmpfs"), (str(mnt), "fuse.s3fs", "s3fs")]
    d = helper.pf_disk(str(mnt), mounts)
    assert d["is_mount"] and d["exists"] and d["fs_type"] == "fuse.s3fs" and d["source"] == "s3fs"
    assert d["free_bytes"] >= 0 and d["total_bytes"] > 0
    missing = helper.pf_disk(str(mnt / "repo" / "a" / "b"), mounts)
    assert not missing["exists"] and missing["existing"] == str(mnt / "repo")
    assert missing["mount_point"] == str(mnt) and not missing["is_mount"]
    other = helper.pf_disk(str(tmp_path / "elsewhere"), mounts)
    assert other["fs_type"] == "tmpfs" and other["existing"] == str(tmp_path)


def test_pod_down_refuses_a_running_sweep_then_resets(tmp_path: Path):
    out = tmp_path / "out"
    state = out / "_control" / "workflow_state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"state": "SWEEP_RUNNING", "history": []}))
    sock = f"wfops-pod-down-{os.getpid()}"
    res = agent("pod-down", {"session": "sweeps"}, out, tmux_socket=sock)
    assert res.returncode == 10
    assert "a sweep is still running on the pod (workflow state SWEEP_RUNNING)" in res.stderr
    assert json.loads(state.read_text())["state"] == "SWEEP_RUNNING"
    subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-s", "sweeps", "sleep 60"], check=True)
    try:
        res = agent("pod-down", {"session": "sweeps", "force": True}, out, tmux_socket=sock)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["state_before"] == "SWEEP_RUNNING" and got["sweep_running"] is True
    assert got["why"] == ["workflow state SWEEP_RUNNING", "tmux session sweeps is alive"]
    assert json.loads(state.read_text())["state"] == "INIT"


def test_gpus_come_from_nvidia_smi(helper, tmp_path: Path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 9\n"
                   "echo 'GPU 0: NVIDIA H200 (UUID: GPU-aaaa)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-bbbb)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert helper.pf_gpus() == {"gpus": ["GPU 0: NVIDIA H200 (UUID: GPU-aaaa)", "GPU 1: NVIDIA H200 (UUID: GPU-bbbb)"],
                                "gpu_error": None}
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver'\nexit 9\n")
    got = helper.pf_gpus()
    assert got["gpus"] == [] and got["gpu_error"].startswith("nvidia-smi -L exited 9: NVIDIA-SMI has failed")
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert helper.pf_gpus() == {"gpus": [], "gpu_error": "nvidia-smi not found"}
