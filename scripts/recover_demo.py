#!/usr/bin/env python3
"""The recovery demo, on this machine: a managed sweep (`sweep.wait --recover`) loses its pod mid-run and ends with
every run `success`.

One loopback sshd "pod" (127.0.0.9, its own HOME under .wfops-recover-demo/) is bootstrapped and checked out; a
sweep of three runs of a training script that checkpoints every 5 steps and resumes from its checkpoint
(tests/fixtures/ckpt_train.py) starts; `sweep.wait --recover` waits; the pod dies (its sshd and every process of
its HOME killed by PID) and comes back; the managed sweep restarts the lost run as its next attempt in the same run
dir (it resumes from its checkpoint) and the runs that had not started, and waits until all have ended.
Run it through scripts/recover_demo.sh (which runs scripts/setup.sh first).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.realparts import kill_sshd, revive_sshd, start_sshd, stop_sshd  # noqa: E402

DEMO = ROOT / ".wfops-recover-demo"
WFOPS = ROOT / ".venv" / "bin" / "wfops"
TRAIN = ROOT / "tests" / "fixtures" / "ckpt_train.py"


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def wf(*args: str, check: bool = True) -> int:
    code = subprocess.call([str(WFOPS), *args], env=ENV, cwd=DEMO)
    if check and code:
        sys.exit(f"recover_demo: wfops {' '.join(args)} exited {code}")
    return code


def main() -> int:
    pod = start_sshd(DEMO / "sshd", host="127.0.0.9", home=DEMO / "pod-home", new_session=True)
    try:
        (DEMO / "workflow.env").write_text("\n".join([
            f"OPS_DEFAULT_HOST={pod.address}", f"SSH_KEY_PATH={pod.key}", "SSH_STRICT_HOST_KEYS=0",
            f"REPO_URL=file://{DEMO}/training-repo.git", "OPS_REMOTE_REPO=~/repo", "OPS_REMOTE_OUTPUTS_DIR=~/outputs",
            "REMOTE_ENV_PATH=~/project.env", "DATA_DIR=~/data/fineweb10B", "BOOTSTRAP_SCRIPT=~/bootstrap-pod.sh",
            f"REMOTE_PYTHON_BIN={os.environ.get('WFOPS_TEST_POD_PYTHON', '/usr/bin/python3')}", "CPU_ONLY=1",
            "WF_FAKE_GPUS=1", "DOWNLOAD_FINEWEB=1", "TRAIN_LAUNCHER=python", f"TRAIN_SCRIPT={TRAIN}",
            "WF_TMUX_SOCKET=wfops-recover-demo", f"LOCAL_ARTIFACTS_DIR={DEMO}/artifacts", "RECOVER_AFTER_SECS=10",
            f"SWEEP_CSV={DEMO}/sweep.csv", ""]))
        (DEMO / "sweep.csv").write_text("run_id,config,seed,overrides,notes,gpus,nodes\n" + "".join(
            f"run{i},config/train_tiny.py,{i},steps=40 every=5 step_secs=0.25,,1,\n" for i in (1, 2, 3)))
        step("wfops bootstrap, checkout"); wf("bootstrap"); wf("checkout")  # noqa: E702
        step("wfops sweep.start (three runs, one GPU slot: one runs, two wait)"); wf("sweep.start")  # noqa: E702
        step("wfops sweep.wait --recover (in the background)")
        managed = subprocess.Popen([str(WFOPS), "sweep.wait", "--recover"], env=ENV, cwd=DEMO)
        log = Path(pod.home or "") / "outputs" / "run1" / "stdout.log"
        deadline = time.time() + 120
        while "step 12" not in (log.read_text() if log.exists() else "") and time.time() < deadline:
            time.sleep(0.2)
        step("the pod dies (sshd and every process of its HOME killed), then comes back")
        kill_sshd(pod)
        time.sleep(3)
        revive_sshd(pod)
        code = managed.wait()
        step(f"sweep.wait --recover exited {code}; wfops sweep.status (with the pods' history)"); wf("sweep.status")  # noqa: E702
        print("\nrun1's log around the restart:")
        print("\n".join(ln for ln in log.read_text().splitlines() if "resumed" in ln or "scratch" in ln))
        return code
    finally:
        wf("disconnect", "--all", check=False)  # the demo's warm connections (keepers) end with it
        kill_sshd(pod)
        stop_sshd(pod)


if __name__ == "__main__":
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    subprocess.check_call([str(ROOT / "scripts" / "example_repo.sh"), str(DEMO)])
    ENV = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_"))}
    ENV.update(WORKFLOW_CONFIG=str(DEMO / "workflow.env"), WFOPS_KEEPER_DIR=str(DEMO / "keepers"))
    sys.exit(main())
