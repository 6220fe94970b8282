"""A managed sweep on an SSH host (`sweep.wait --recover`): the host dies mid-run (its sshd and every process of its
HOME killed by PID) and comes back; the run that was running restarts as its next attempt in the same run dir and
resumes from its own checkpoint, the run that had not started starts, and every run ends `success`. The pod is one
of tests/fleet.py's loopback pods, configured alone (OPS_DEFAULT_HOST)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.conftest import wait_until
from tests.fleet import WFOPS, Fleet

CKPT_TRAIN = Path(__file__).resolve().parents[1] / "fixtures" / "ckpt_train.py"
HEADER = "run_id,config,seed,overrides,notes,gpus,nodes\n"


def sweep_csv(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "sweep.csv"
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def log_of(outputs: Path, rid: str) -> str:
    path = outputs / rid / "stdout.log"
    return path.read_text() if path.exists() else ""


def test_an_ssh_host_that_comes_back_gets_its_share_again_and_the_lost_run_resumes(tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    pod = fleet.pods[0]
    cfg = fleet.config(tmp_path, pod=0, TRAIN_SCRIPT=str(CKPT_TRAIN), WF_FAKE_GPUS="1", RECOVER_AFTER_SECS="2")
    rows = ["r1,config/train_tiny.py,1,steps=40 every=5 step_secs=0.1,,1,",
            "r2,config/train_tiny.py,2,steps=3 every=5 step_secs=0.1,,1,"]
    start = fleet.wf(cfg, "sweep.start", "--csv", str(sweep_csv(tmp_path, rows)))
    assert start.returncode == 0, start.stderr
    outputs = pod.home / "outputs"
    wait_until(lambda: "step 7" in log_of(outputs, "r1"), timeout=60, what="r1 past its first checkpoint")
    managed = subprocess.Popen([str(WFOPS), "sweep.wait", "--recover", "--json"], env=fleet_env(cfg), cwd=cfg.parent,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fleet.kill(0)
    fleet.revive(0)  # the host answers again: its queue and runs are gone (every process of its HOME was killed)
    out, err = managed.communicate(timeout=180)
    assert managed.returncode == 0, (out[-2000:], err)
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {"r1": "success", "r2": "success"}
    lines = [ln for ln in err.splitlines() if ln.startswith("wfops: ")]
    assert any(ln.startswith(f"wfops: lost pod {pod.address}: ") and "(recovery 1/3)" in ln for ln in lines), err
    assert any(ln.startswith(f"wfops: restarted on {pod.address}: r1 (attempt 2)") and "queued again: r2" in ln
               for ln in lines), err
    resumed = log_of(outputs, "r1")
    assert int(re.search(r"resumed from step (\d+)", resumed).group(1)) > 0, resumed  # type: ignore[union-attr]
    assert json.loads((outputs / "r1" / "final.json").read_text())["step"] == 40
    assert json.loads((outputs / "r1" / "status.json").read_text())["attempt"] == 2
    assert (outputs / "r1" / "attempts" / "1" / "stdout.log").is_file()  # the lost attempt, kept
    status = fleet.wf(cfg, "sweep.status")
    assert f"r1: attempt 1 on {pod.address}, attempt 2 on {pod.address}" in status.stdout, status.stdout


def fleet_env(cfg: Path) -> dict[str, str]:
    """The environment Fleet.wf gives `wfops` (a client HOME and keeper dir next to the config)."""
    home = cfg.parent / "client-home"
    home.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
    base.update(HOME=str(home), WORKFLOW_CONFIG=str(cfg), PYTHONUNBUFFERED="1",
                WFOPS_KEEPER_DIR=str(cfg.parent / "keepers"))
    return base


def test_a_loss_past_recover_max_stops_the_managed_sweep_and_says_why(tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    pod = fleet.pods[0]
    cfg = fleet.config(tmp_path, pod=0, TRAIN_SCRIPT=str(CKPT_TRAIN), WF_FAKE_GPUS="1", RECOVER_AFTER_SECS="2",
                       RECOVER_MAX="1")
    start = fleet.wf(cfg, "sweep.start", "--csv", str(sweep_csv(tmp_path, [
        "r1,config/train_tiny.py,1,steps=400 every=5 step_secs=0.1,,1,"])))
    assert start.returncode == 0, start.stderr
    outputs = pod.home / "outputs"
    wait_until(lambda: "step 6" in log_of(outputs, "r1"), timeout=60, what="r1 past its first checkpoint")
    managed = subprocess.Popen([str(WFOPS), "sweep.wait", "--recover"], env=fleet_env(cfg), cwd=cfg.parent,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fleet.kill(0)
    fleet.revive(0)
    wait_until(lambda: "resumed from step" in log_of(outputs, "r1"), timeout=120, what="the first recovery")
    fleet.kill(0)  # lost a second time: RECOVER_MAX=1 is spent
    fleet.revive(0)
    _, err = managed.communicate(timeout=120)
    assert managed.returncode == 8, err
    last = err.splitlines()[-1]
    assert "spent its RECOVER_MAX=1 recoveries: stopping" in last and pod.address in last, err
    assert err.count("wfops: restarted on") == 1, err


def test_on_a_fleet_a_lost_hosts_waiting_run_moves_and_its_running_run_resumes_when_it_is_back(
        tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    lost = fleet.pods[1]
    cfg = fleet.config(tmp_path, TRAIN_SCRIPT=str(CKPT_TRAIN), WF_FAKE_GPUS="1", RECOVER_AFTER_SECS="2")
    # 10 s a run (was 20 s): `running` still runs well after its step 7 (when the pod is killed), and the moved run and
    # the resumed one run after the 20 s of silence that moves the waiting run (GONE_SECS)
    rows = [f"f{i},config/train_tiny.py,{i},steps=40 every=5 step_secs=0.25,,1," for i in range(6)]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(sweep_csv(tmp_path, rows))).returncode == 0
    ledger = json.loads(next((tmp_path / "artifacts" / ".fleet").glob("sweep-*.json")).read_text())
    mine = [rid for rid in ledger["order"] if ledger["runs"][rid]["pods"] == [lost.address]]
    assert len(mine) == 2
    running, waiting = mine
    outputs = lost.home / "outputs"
    wait_until(lambda: "step 7" in log_of(outputs, running), timeout=60, what="a run past its first checkpoint")
    assert fleet.wf(cfg, "sweep.status").returncode == 0  # the ledger has seen `running` run
    fleet.kill(1)
    managed = subprocess.Popen([str(WFOPS), "sweep.wait", "--recover", "--json"], env=fleet_env(cfg),
                               cwd=cfg.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    moved = tmp_path / "artifacts" / ".fleet"
    wait_until(lambda: any(json.loads(p.read_text())["runs"][waiting]["moves"]
                           for p in moved.glob("sweep-*.json") if not p.name.endswith(".recover.json")),
               timeout=90, what="the waiting run moved")
    fleet.revive(1)
    out, err = managed.communicate(timeout=240)
    assert managed.returncode == 0, (err, [(r["run_id"], r["state"], r.get("note")) for r in json.loads(out)["runs"]])
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {f"f{i}": "success" for i in range(6)}
    assert f"wfops: moved {waiting} from {lost.address}" in err, err
    assert any(ln.startswith(f"wfops: restarted on {lost.address}: {running} (attempt 2)")
               for ln in err.splitlines()), err
    assert int(re.search(r"resumed from step (\d+)", log_of(outputs, running)).group(1)) > 0  # type: ignore[union-attr]
    assert not (outputs / waiting / "final.json").exists()  # it ran on the pod it moved to, once
