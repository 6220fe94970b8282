"""The scheduler on a GPU-shaped pod: the path a real GPU pod takes, not WF_FAKE_GPUS.

The pod is a loopback sshd of its own whose sessions get a stand-in `nvidia-smi` first on PATH and a torch shim on
PYTHONPATH (tests/fixtures/gpu/: both answer from a JSON state file the test writes, in the formats the real ones
print). No WF_FAKE_GPUS, no CPU_ONLY: the scheduler counts the GPUs with `nvidia-smi -L`, packs runs onto them and
hands each its CUDA_VISIBLE_DEVICES; checkout checks CUDA through the venv's torch. Only the GPU facts are pretend:
the runs (echo_train.py, TRAIN_LAUNCHER=python) run on the CPU and record the CUDA_VISIBLE_DEVICES they were given.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    ROOT,
    Pod,
    TrainingRepo,
    checkout_config,
    copy_checked_out,
    make_pod,
    stop_keepers,
    wait_until,
)
from tests.integration.test_sweeps import states, wait_sweep
from tests.realparts import start_sshd, stop_sshd

SHIM = ROOT / "tests" / "fixtures" / "gpu"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
H100 = "NVIDIA H100 80GB HBM3"


def write_csv(pod: Pod, rows: str) -> Path:
    path = pod.root.parent / "sweep.csv"
    path.write_text("run_id,config,seed,overrides,notes,gpus\n" + rows)
    return path


def gpu_state(n: int, apps: list[dict] | None = None) -> dict:
    return {"gpus": [{"name": H100, "uuid": f"GPU-{i:08x}-1111-2222-3333-{i:012x}"} for i in range(n)],
            "apps": apps or []}


class GpuPod:
    def __init__(self, pod: Pod, state: Path) -> None:
        self.pod, self.state = pod, state

    def set(self, doc: dict) -> None:
        self.state.write_text(json.dumps(doc))

    def smi_calls(self) -> list[list[str]]:
        calls = Path(f"{self.state}.calls")
        return [json.loads(ln) for ln in calls.read_text().splitlines()] if calls.exists() else []

    def torch_asked(self) -> list[str]:
        asked = Path(f"{self.state}.torch")
        return asked.read_text().splitlines() if asked.exists() else []

    def forget_calls(self) -> None:
        for suffix in (".calls", ".torch"):
            Path(f"{self.state}{suffix}").unlink(missing_ok=True)


@pytest.fixture
def gpu_pod(tmp_path: Path, training_repo: TrainingRepo, pod_python: str, checked_out: Path) -> Iterator[GpuPod]:
    """A checked-out pod behind its own sshd whose sessions see the stand-in nvidia-smi and the torch shim."""
    state = tmp_path / "gpu-state.json"
    state.write_text(json.dumps(gpu_state(4)))
    # a short home: tmux's socket lives below it and a socket path has at most 107 bytes (pytest's tmp_path under
    # xdist, popen-gwN/<test name>, is too long for it)
    pod_home = Path(tempfile.mkdtemp(prefix="wfg-", dir="/tmp"))
    sshd = start_sshd(tmp_path / "gpu-sshd", home=pod_home, setenv={
        "PATH": f"{SHIM}:{SYSTEM_PATH}", "PYTHONPATH": str(SHIM), "WF_TEST_GPU_STATE": str(state)})
    socket = f"wf-gpu-{uuid.uuid4().hex[:8]}"
    pod = make_pod("ssh", tmp_path, sshd, socket)
    try:
        copy_checked_out(checked_out, pod)
        checkout_config(pod, training_repo, pod_python, TRAIN_SCRIPT="echo_train.py", KILL_GRACE_SECS="2",
                        CPU_ONLY="0", TRAIN_NPROC="", TRAIN_LAUNCHER="python")
        cfg = pod.config_path.read_text()
        assert "WF_FAKE_GPUS" not in cfg and "CPU_ONLY=0" in cfg, cfg  # the real GPU path, nothing pretended
        yield GpuPod(pod, state)
    finally:
        stop_keepers(pod.keeper_dir)
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True,
                       env={**os.environ, "TMUX_TMPDIR": str(pod_home / ".tmux")})
        stop_sshd(sshd)
        shutil.rmtree(pod_home, ignore_errors=True)


def _given(pod: Pod, run_id: str) -> list[str]:
    """The CUDA_VISIBLE_DEVICES the run saw (echo_train.py records it in args.json)."""
    value = json.loads((pod.outputs / run_id / "args.json").read_text())["cuda_visible_devices"]
    assert value is not None, run_id
    return value.split(",")


def test_the_stand_ins_answer_like_the_real_ones(gpu_pod: GpuPod, tmp_path: Path):
    """Positive control of the fixture: the pod's sessions run the stand-in, which prints what nvidia-smi prints."""
    env = {**os.environ, "WF_TEST_GPU_STATE": str(gpu_pod.state), "PYTHONPATH": str(SHIM)}
    gpu_pod.set(gpu_state(2, [{"gpu": 1, "pid": 4242, "name": "python3", "used_mib": 1200}]))
    smi = str(SHIM / "nvidia-smi")

    def out(*args: str) -> str:
        return subprocess.run([smi, *args], capture_output=True, text=True, env=env, check=True).stdout

    assert out("-L").splitlines() == [f"GPU 0: {H100} (UUID: GPU-00000000-1111-2222-3333-000000000000)",
                                      f"GPU 1: {H100} (UUID: GPU-00000001-1111-2222-3333-000000000001)"]
    assert out("--query-gpu=index,uuid,memory.used", "--format=csv,noheader").splitlines() == [
        "0, GPU-00000000-1111-2222-3333-000000000000, 0 MiB", "1, GPU-00000001-1111-2222-3333-000000000001, 1200 MiB"]
    assert out("--query-compute-apps=pid,process_name,used_memory", "--format=csv").splitlines() == [
        "pid, process_name, used_gpu_memory [MiB]", "4242, python3, 1200 MiB"]
    assert out("--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader,nounits").splitlines() == [
        "GPU-00000001-1111-2222-3333-000000000001, 4242"]
    bad = subprocess.run([smi, "--query-gpu=nope", "--format=csv"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stdout.startswith('Field "nope" is not a valid field to query.')
    seen = gpu_pod.pod.ok("task.run", "--id", "which", "--cmd", "command -v nvidia-smi; nvidia-smi -L | wc -l")
    assert seen.rc == 0
    gpu_pod.pod.ok("task.wait", "--id", "which")
    log = (gpu_pod.pod.outputs / "_tasks" / "which" / "stdout.log").read_text()
    assert str(SHIM / "nvidia-smi") in log and log.rstrip().endswith(" 2"), log


def test_a_gpu_pod_counts_its_gpus_with_nvidia_smi_and_packs_runs_onto_them(gpu_pod: GpuPod):
    pod = gpu_pod.pod
    gpu_pod.forget_calls()
    rows = ("big,config/train_tiny.py,1,sleep=3,,2\n"
            "one,config/train_tiny.py,2,sleep=3,,1\n"
            "two,config/train_tiny.py,3,sleep=3,,1\n"
            "next,config/train_tiny.py,4,,,2\n"
            "huge,config/train_tiny.py,5,,,5\n")
    pod.ok("sweep.start", "--csv", str(write_csv(pod, rows)))
    data = wait_sweep(pod)
    assert states(data) == {"big": "success", "one": "success", "two": "success", "next": "success",
                            "huge": "failed"}, data["runs"]
    huge = next(r for r in data["runs"] if r["run_id"] == "huge")
    assert huge["note"].startswith("no_fit"), huge  # 5 asked of the 4 nvidia-smi listed
    sweep = json.loads((pod.outputs / "_control" / "sweep.json").read_text())
    assert sweep["slots"] == ["0", "1", "2", "3"], sweep  # counted from `nvidia-smi -L`'s 4 lines
    assert ["-L"] in gpu_pod.smi_calls(), gpu_pod.smi_calls()  # the pod took the nvidia-smi path ...
    assert not [ln for ln in gpu_pod.torch_asked() if "device_count" in ln], gpu_pod.torch_asked()  # ... not torch's
    given = {rid: _given(pod, rid) for rid in ("big", "one", "two", "next")}
    assert [len(given[r]) for r in ("big", "one", "two", "next")] == [2, 1, 1, 2], given
    assert all(set(ids) <= {"0", "1", "2", "3"} for ids in given.values()), given
    # big, one and two start together (2 + 1 + 1 = 4 GPUs): their devices are disjoint, together every GPU
    assert sorted(given["big"] + given["one"] + given["two"]) == ["0", "1", "2", "3"], given
    table = pod.ok("sweep.status").out
    assert "no_fit" in table


def test_the_gpu_count_follows_what_nvidia_smi_lists(gpu_pod: GpuPod):
    pod = gpu_pod.pod
    gpu_pod.set(gpu_state(2))
    pod.ok("sweep.start", "--csv", str(write_csv(pod, "a,config/train_tiny.py,1,,,2\nb,config/train_tiny.py,2,,,3\n")))
    data = wait_sweep(pod)
    assert states(data) == {"a": "success", "b": "failed"}, data["runs"]  # 3 of 2 does not fit
    assert json.loads((pod.outputs / "_control" / "sweep.json").read_text())["slots"] == ["0", "1"]
    assert sorted(_given(pod, "a")) == ["0", "1"]
    facts = pod.ok("pod.status", "--json").json()
    assert [g.split(" (UUID")[0] for g in facts["pod"]["gpus"]] == [f"GPU 0: {H100}", f"GPU 1: {H100}"], facts


def test_checkout_on_a_gpu_pod_checks_cuda_through_the_venvs_torch(gpu_pod: GpuPod):
    pod = gpu_pod.pod
    gpu_pod.set(gpu_state(0))  # a pod whose driver lists no GPU: torch says no CUDA, checkout refuses
    res = pod.wf("checkout")
    assert res.rc != 0 and "torch.cuda.is_available() is False" in res.err, (res.rc, res.out, res.err)
    assert [ln for ln in gpu_pod.torch_asked() if "is_available False" in ln], gpu_pod.torch_asked()
    gpu_pod.set(gpu_state(2))
    gpu_pod.forget_calls()
    pod.ok("checkout")
    assert [ln for ln in gpu_pod.torch_asked() if "is_available True" in ln], gpu_pod.torch_asked()
    assert pod.ok("fsm.status", "--json").json()["state"] == "CHECKED_OUT"


def test_a_gpu_a_foreign_process_holds_is_not_handed_out_until_it_lets_go(gpu_pod: GpuPod):
    """nvidia-smi --query-compute-apps lists a process outside the sweep on GPU 1: no run gets GPU 1 while it
    does; a run that needs all four GPUs waits (it is not no_fit) and starts once the process is gone."""
    pod = gpu_pod.pod
    gpu_pod.set(gpu_state(4, [{"gpu": 1, "pid": 4242, "name": "someone-elses-python", "used_mib": 30000}]))
    rows = "".join(f"s{i},config/train_tiny.py,{i},sleep=1,,1\n" for i in range(5)) + "all,config/train_tiny.py,9,,,4\n"
    pod.ok("sweep.start", "--csv", str(write_csv(pod, rows)))
    log = pod.outputs / "_manifests"
    wait_until(lambda: all((pod.outputs / f"s{i}" / "ended.json").exists() for i in range(5)), timeout=120,
               what="the five 1-GPU runs to end")
    assert all(_given(pod, f"s{i}") != ["1"] for i in range(5)), {f"s{i}": _given(pod, f"s{i}") for i in range(5)}
    assert {d for i in range(5) for d in _given(pod, f"s{i}")} == {"0", "2", "3"}
    rows_now = {r["run_id"]: r["state"] for r in pod.ok("sweep.status", "--json").json()["runs"]}
    assert rows_now["all"] == "pending", rows_now  # waits for GPU 1: not failed no_fit
    queue_log = next(log.glob("sweep-*.log")).read_text()
    assert "GPU(s) 1 held by a process outside this sweep (nvidia-smi)" in queue_log, queue_log
    gpu_pod.set(gpu_state(4))  # the other process ended
    data = wait_sweep(pod)
    assert states(data)["all"] == "success", data["runs"]
    assert sorted(_given(pod, "all")) == ["0", "1", "2", "3"]
    assert ["--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader,nounits"] in gpu_pod.smi_calls()
