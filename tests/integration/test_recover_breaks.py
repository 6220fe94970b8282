"""Trying to break a managed sweep (`sweep.wait --recover`) from outside, the way a researcher would hit it: a host
that is only cut off for a while (its queue goes on), two managed commands at once, a managed command started while
the pod is already down. Real loopback sshd pods (tests/fleet.py), the checkpointing script of tests/fixtures."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import wait_until
from tests.fleet import WFOPS, Fleet
from tests.integration.test_recover import CKPT_TRAIN, fleet_env, log_of, sweep_csv


def _managed(cfg: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(WFOPS), "sweep.wait", "--recover", "--json", *args], env=fleet_env(cfg),
                            cwd=cfg.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_ssh_host_cut_off_past_recover_after_secs_whose_queue_went_on_is_waited_for_not_rerun(
        tmp_path: Path, fleet_ready: Fleet) -> None:
    fleet = fleet_ready
    pod = fleet.pods[0]
    cfg = fleet.config(tmp_path, pod=0, TRAIN_SCRIPT=str(CKPT_TRAIN), WF_FAKE_GPUS="1", RECOVER_AFTER_SECS="2")
    start = fleet.wf(cfg, "sweep.start", "--csv", str(sweep_csv(tmp_path, [
        "r1,config/train_tiny.py,1,steps=60 every=5 step_secs=0.1,,1,"])))
    assert start.returncode == 0, start.stderr
    outputs = pod.home / "outputs"
    wait_until(lambda: "step 2" in log_of(outputs, "r1"), timeout=60, what="r1 running")
    managed = _managed(cfg)
    assert managed.stderr is not None
    assert managed.stderr.readline().startswith("wfops: managing sweep-")
    fleet.cut(0)  # the host is unreachable; what it runs goes on
    t0 = time.monotonic()
    wait_until(lambda: time.monotonic() - t0 > 8, timeout=30, what="longer than RECOVER_AFTER_SECS")
    fleet.revive(0)
    out, err = managed.communicate(timeout=180)
    assert managed.returncode == 0, err
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {"r1": "success"}
    assert "starting from scratch" in log_of(outputs, "r1") and "resumed" not in log_of(outputs, "r1")
    assert json.loads((outputs / "r1" / "status.json").read_text())["attempt"] == 1  # it ran once
    assert "restarted on" not in err and "recovery 1/" not in err, err  # nothing was recovered: nothing was lost
    assert f"wfops: pod {pod.address} is silent for " in err and "waiting for it to answer again" in err, err


def test_ctrl_c_of_a_managed_fleet_leaves_the_pods_and_says_how_to_go_on(tmp_path: Path, fleet_ready: Fleet) -> None:
    fleet = fleet_ready
    cfg = fleet.config(tmp_path, TRAIN_SCRIPT=str(CKPT_TRAIN), WF_FAKE_GPUS="1", RECOVER_AFTER_SECS="2")
    rows = [f"f{i},config/train_tiny.py,{i},steps=200 every=5 step_secs=0.2,,1," for i in range(3)]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(sweep_csv(tmp_path, rows))).returncode == 0
    managed = _managed(cfg)
    assert managed.stderr is not None
    assert managed.stderr.readline().startswith("wfops: managing sweep-")
    managed.send_signal(signal.SIGINT)
    _, err = managed.communicate(timeout=60)
    assert managed.returncode == 130, err
    last = err.splitlines()[-1]
    assert "every pod stays as it is" in last and "go on with `inv sweep.wait --recover`" in last, err
    assert all(p.address in last for p in fleet.pods), last
    status = fleet.wf(cfg, "sweep.status", "--json")
    assert {r["state"] for r in json.loads(status.stdout)["runs"]} <= {"running", "pending"}, status.stdout


def test_a_host_killed_right_after_sweep_start_gets_every_run_started_once_when_it_is_back(
        tmp_path: Path, fleet_ready: Fleet) -> None:
    fleet = fleet_ready
    pod = fleet.pods[0]
    cfg = fleet.config(tmp_path, pod=0, TRAIN_SCRIPT=str(CKPT_TRAIN), WF_FAKE_GPUS="1", RECOVER_AFTER_SECS="2")
    rows = [f"r{i},config/train_tiny.py,{i},steps=8 every=5 step_secs=0.1,,1," for i in range(1, 4)]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(sweep_csv(tmp_path, rows))).returncode == 0
    fleet.kill(0)  # at once: the queue may not have started its first run
    fleet.revive(0)
    managed = _managed(cfg)
    out, err = managed.communicate(timeout=240)
    assert managed.returncode == 0, err
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {f"r{i}": "success" for i in range(1, 4)}
    outputs = pod.home / "outputs"
    for i in range(1, 4):
        assert json.loads((outputs / f"r{i}" / "final.json").read_text())["step"] == 8
        assert log_of(outputs, f"r{i}").count("starting from scratch") + log_of(outputs, f"r{i}").count(
            "resumed from") == 1  # one attempt in the run dir's log: never run twice over
