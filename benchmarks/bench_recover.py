"""The cost of losing a pod in a managed sweep (`sweep.wait --recover`), with the real lium CLI against the
tests' fake Lium API renting at once, and loopback sshd pods (tests/realparts.py).

    .venv/bin/python benchmarks/bench_recover.py [--rounds 2]

A one-run sweep of tests/fixtures/ckpt_train.py (a step every 0.25 s, a checkpoint every 8 steps = 2 s) runs on
Lium pod `train`; mid-run the pod is lost (its sshd and every process of its HOME killed by PID, the fake
reporting it FAILED). The managed command detects it, rents a pod like it (a new loopback sshd with an empty
HOME; the volume — outputs and data — is the same directory), waits for SSH, bootstraps, checks out (a clone
and a venv), and restarts the run, which resumes from its checkpoint. Printed (a markdown table, medians):
each phase from the loss (times of the managed command's lines), the time until the run runs again (its first
line of attempt 2), the GPU time lost (from the loss until the resumed run is back at the step it had reached),
and the ideal: one checkpoint interval + the time to run again. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _harness import ROOT, WFOPS, print_table  # also puts the repository root on sys.path

from tests.lium.conftest import API_KEY, BIN
from tests.lium.fake_lium import FakeLium, FakePod
from tests.realparts import SSHD, kill_sshd, start_sshd, stop_sshd

TRAIN = ROOT / "tests" / "fixtures" / "ckpt_train.py"
STEP_SECS, EVERY = 0.25, 8
PHASES = (("detected", "wfops: lost pod"), ("rented", "wfops: rented pod"),
          ("ready (SSH, bootstrap, checkout)", "answers, bootstrapped and checked out"),
          ("restarted", "wfops: restarted on"))


def _setup(base: Path, template: Path) -> tuple[FakeLium, SSHD, FakePod, dict[str, str], list[SSHD]]:
    home = base / "home0"
    shutil.copytree(template / "pod-home", home, symlinks=True)
    shutil.copytree(template / "volume", base / "volume", symlinks=True)
    first = start_sshd(base / "sshd0", host="127.0.0.20", home=home)
    api = FakeLium(ssh_host=first.host, ssh_port=first.port).start()
    api.rent_pending_polls = 0
    pod = api.add_pod("train", ssh_host=first.host, ssh_port=first.port)
    servers: list[SSHD] = []

    def machine(p: FakePod) -> None:
        s = start_sshd(base / f"sshd{len(servers) + 1}", host=f"127.0.0.{21 + len(servers)}",
                       home=base / f"home{len(servers) + 1}", client_key=first.key)
        servers.append(s)
        p.ssh_host, p.ssh_port = s.host, s.port

    api.on_rent = machine
    (base / "client" / ".lium").mkdir(parents=True)
    (base / "client" / ".lium" / "config.ini").write_text(f"[ssh]\nkey_path = {first.key}\n")
    cfg = {"LIUM_TARGET": "train", "OPS_REMOTE_OUTPUTS_DIR": str(base / "volume" / "outputs"),
           "DATA_DIR": str(base / "volume" / "data"), "OPS_REMOTE_REPO": "~/repo", "REMOTE_ENV_PATH": "~/project.env",
           "BOOTSTRAP_SCRIPT": "~/no-bootstrap.sh", "REPO_URL": f"file://{template}/training-repo.git",
           "REMOTE_PYTHON_BIN": os.environ.get("WFOPS_TEST_POD_PYTHON", "/usr/bin/python3"), "CPU_ONLY": "1",
           "WF_FAKE_GPUS": "1", "TRAIN_LAUNCHER": "python", "TRAIN_SCRIPT": str(TRAIN),
           "WF_TMUX_SOCKET": f"wb{os.getpid() % 10000}", "LOCAL_ARTIFACTS_DIR": str(base / "artifacts"),
           "LIUM_EXECUTOR_ID": str(api.executor["id"]), "LIUM_TTL": "1h",
           "REPO_INSTALL_CMD": 'pip install -q --no-build-isolation --no-deps -e "$OPS_REMOTE_REPO[examples]"'}
    (base / "workflow.env").write_text("".join(f"{k}='{v}'\n" for k, v in cfg.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_"))}
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and Path(p) != BIN]
    env.update(HOME=str(base / "client"), WORKFLOW_CONFIG=str(base / "workflow.env"),
               WFOPS_KEEPER_DIR=str(base / "keepers"), PATH=os.pathsep.join([str(BIN), *path]),
               LIUM_BASE_URL=api.base_url, LIUM_API_KEY=API_KEY, LIUM_TELEMETRY="0", LIUM_SENTRY_DSN="")
    return api, first, pod, env, servers


def _text(path: Path) -> str:
    """A log that a restart moves aside for a moment: "" meanwhile."""
    try:
        return path.read_text()
    except OSError:
        return ""


def one_round(template: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="wfops-bench-recover-") as tmp:
        base = Path(tmp)
        api, first, pod, env, servers = _setup(base, template)
        try:
            csv = base / "sweep.csv"
            csv.write_text("run_id,config,seed,overrides,notes,gpus,nodes\n"
                           f"r1,config/train_tiny.py,1,steps=200 every={EVERY} step_secs={STEP_SECS},,1,\n")
            subprocess.run([str(WFOPS), "sweep.start", "--csv", str(csv)], env=env, check=True, capture_output=True)
            log = base / "volume" / "outputs" / "r1" / "stdout.log"
            while len(re.findall(r"step \d+", _text(log))) < 3 * EVERY + 3:
                time.sleep(0.05)
            managed = subprocess.Popen([str(WFOPS), "sweep.wait", "--recover"], env=env, stderr=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, text=True)
            seen: dict[str, float] = {}

            def read() -> None:
                assert managed.stderr is not None
                for line in managed.stderr:
                    for name, mark in PHASES:
                        if mark in line:
                            seen.setdefault(name, time.monotonic())

            threading.Thread(target=read, daemon=True).start()
            time.sleep(1)
            reached = max(int(s) for s in re.findall(r"step (\d+)", _text(log)))
            lost_at = time.monotonic()
            kill_sshd(first)
            with api.lock:
                api.pods[pod.id].status = "FAILED"
            while "resumed from step" not in _text(log):
                time.sleep(0.02)
            again = time.monotonic()
            while f"step {reached}\n" not in _text(log).split("resumed from step", 1)[-1]:
                time.sleep(0.02)
            back = time.monotonic()
            managed.terminate()
            managed.wait()
            out = {name: seen[name] - lost_at for name, _ in PHASES if name in seen}
            out["running again"] = again - lost_at
            out["GPU time lost"] = back - lost_at
            out["ideal (interval + running again)"] = EVERY * STEP_SECS + out["running again"]
            return out
        finally:
            for s in [first, *servers]:
                kill_sshd(s)
                stop_sshd(s)
            api.stop()


def template(base: Path) -> Path:
    """A checked-out pod home and its volume (outputs, data), made once by a real checkout."""
    subprocess.run([str(ROOT / "scripts" / "example_repo.sh"), str(base)], check=True, capture_output=True)
    sshd = start_sshd(base / "sshd", host="127.0.0.19", home=base / "pod-home")
    try:
        cfg = base / "prep.env"
        cfg.write_text("".join(f"{k}='{v}'\n" for k, v in {
            "OPS_DEFAULT_HOST": sshd.address, "SSH_KEY_PATH": str(sshd.key), "SSH_STRICT_HOST_KEYS": "0",
            "REPO_URL": f"file://{base}/training-repo.git", "OPS_REMOTE_REPO": "~/repo",
            "OPS_REMOTE_OUTPUTS_DIR": str(base / "volume" / "outputs"), "DATA_DIR": str(base / "volume" / "data"),
            "REMOTE_ENV_PATH": "~/project.env", "BOOTSTRAP_SCRIPT": "~/no-bootstrap.sh", "DOWNLOAD_FINEWEB": "1",
            "REMOTE_PYTHON_BIN": os.environ.get("WFOPS_TEST_POD_PYTHON", "/usr/bin/python3"), "CPU_ONLY": "1",
            "REPO_INSTALL_CMD": 'pip install -q --no-build-isolation --no-deps -e "$OPS_REMOTE_REPO[examples]"',
            "WF_TMUX_SOCKET": "wbprep"}.items()))
        env = {**os.environ, "WORKFLOW_CONFIG": str(cfg), "WFOPS_KEEPER_DIR": str(base / "keepers")}
        for command in ("bootstrap", "checkout"):
            subprocess.run([str(WFOPS), command], env=env, check=True, capture_output=True)
    finally:
        kill_sshd(sshd)
        stop_sshd(sshd)
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wfops-bench-template-") as tmp:
        made = template(Path(tmp))
        rounds = [one_round(made) for _ in range(args.rounds)]
    names = [name for name, _ in PHASES] + ["running again", "GPU time lost", "ideal (interval + running again)"]
    rows = [[name, f"{statistics.median(r[name] for r in rounds if name in r):.1f} s"] for name in names]
    print_table(f"one loss of a Lium pod mid-run (checkpoint every {EVERY * STEP_SECS:.0f} s), median of "
                f"{args.rounds}, seconds from the loss", ["phase", "time"], rows)
    print(json.dumps(rounds), file=sys.stderr)


if __name__ == "__main__":
    main()
