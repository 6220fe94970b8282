"""A fleet of three loopback sshd pods (tests/fleet.py): commands on every pod at once, one sweep spread over
the pods, a pod that dies mid-sweep, fetching from every pod, and one run across two pods (multi-node torchrun).
Each pod runs its own agent scheduler; the client's ledger (LOCAL_ARTIFACTS_DIR/.fleet) knows who runs what."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.fleet import Fleet

HEADER = "run_id,config,seed,overrides,notes,gpus,nodes\n"


def _csv(tmp_path: Path, rows: list[str], name: str = "sweep.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def _config(fleet: Fleet, tmp_path: Path, **over: str) -> Path:
    return fleet.config(tmp_path, TRAIN_SCRIPT="echo_train.py", TRAIN_WORKDIR="examples/nanogpt", **over)


def _status(fleet: Fleet, cfg: Path) -> dict:
    res = fleet.wf(cfg, "sweep.status", "--json")
    assert res.stdout.strip(), res.stderr
    return json.loads(res.stdout)


def _sshd_logins(fleet: Fleet) -> list[int]:
    return [len(re.findall(r"Accepted publickey", p.sshd.log.read_text())) for p in fleet.pods]


@pytest.fixture
def fleet_ready(fresh_fleet3: Fleet, checked_out: Path) -> Fleet:
    fresh_fleet3.checked_out(checked_out)
    return fresh_fleet3


def test_fan_out_runs_on_every_pod_with_one_login_each_and_a_dead_pod_does_not_hide_the_others(
        tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    before = _sshd_logins(fleet)
    res = fleet.wf(cfg, "fsm.status")
    assert res.returncode == 0, res.stderr
    for pod in fleet.pods:
        assert f"== pod {pod.address} ==" in res.stdout
    assert res.stdout.count("CHECKED_OUT") >= 3
    assert [a - b for a, b in zip(_sshd_logins(fleet), before, strict=True)] == [1, 1, 1]
    data = json.loads(fleet.wf(cfg, "fsm.status", "--json").stdout)
    assert [p["pod"] for p in data["pods"]] == [p.address for p in fleet.pods]
    assert {p["data"]["state"] for p in data["pods"]} == {"CHECKED_OUT"}
    fleet.kill(1)
    res = fleet.wf(cfg, "fsm.status")
    assert res.returncode == 4, (res.stdout, res.stderr)
    assert res.stdout.count("CHECKED_OUT") >= 2 and "failed (exit 4)" in res.stdout
    assert fleet.pods[1].address in res.stderr.splitlines()[-1]
    one = fleet.wf(cfg, "task.logs", "x")
    assert one.returncode == 2 and "WF_POD=" in one.stderr
    picked = fleet.wf(cfg, "fsm.status", "--json", env={"WF_POD": fleet.pods[2].address})
    assert picked.returncode == 0 and json.loads(picked.stdout)["state"] == "CHECKED_OUT"


def test_a_twelve_run_sweep_over_three_pods_runs_every_run_exactly_once_and_fetches_from_all(
        tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    rows = [f"r{i:02d},config/train_tiny.py,{i},sleep=1,,1," for i in range(12)]
    res = fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows)))
    assert res.returncode == 0, res.stderr
    assert all(f"{p.address}: 4 run(s)" in res.stdout for p in fleet.pods), res.stdout
    done = fleet.wf(cfg, "sweep.wait", "--json", timeout=180)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr)
    data = json.loads(done.stdout)
    assert {r["run_id"]: r["state"] for r in data["runs"]} == {f"r{i:02d}": "success" for i in range(12)}
    ran = {p.index: sorted(d.name for d in (p.home / "outputs").iterdir() if (d / "ended.json").exists())
           for p in fleet.pods}
    every = [rid for ids in ran.values() for rid in ids]
    assert sorted(every) == [f"r{i:02d}" for i in range(12)]  # each run ran once, on one pod
    assert all(len(ids) == 4 for ids in ran.values()), ran
    table = fleet.wf(cfg, "sweep.status").stdout
    assert re.search(r"^r00\s+\S+:\d+\s+success", table, re.M), table
    fetched = fleet.wf(cfg, "run.fetch", "--all")
    assert fetched.returncode == 0, fetched.stderr
    local = tmp_path / "artifacts"
    assert sorted(d.name for d in local.iterdir() if not d.name.startswith(".")) == [f"r{i:02d}" for i in range(12)]
    assert all((local / f"r{i:02d}" / "summary.json").is_file() for i in range(12))


def test_a_pod_killed_mid_sweep_leaves_its_pending_runs_to_the_others(tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1")
    rows = [f"k{i},config/train_tiny.py,{i},sleep=3,,1," for i in range(9)]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows))).returncode == 0
    ledger = json.loads((tmp_path / "artifacts" / ".fleet" / "latest").read_text() and
                        next((tmp_path / "artifacts" / ".fleet").glob("sweep-*.json")).read_text())
    on_1 = sorted(rid for rid, r in ledger["runs"].items() if r["pods"] == [fleet.pods[1].address])
    assert len(on_1) == 3
    wait_until(lambda: any(r["state"] == "running" for r in _status(fleet, cfg)["runs"]
                           if r["pod"] == fleet.pods[1].address), timeout=60, what="a run on pod 1")
    fleet.kill(1)
    done = fleet.wf(cfg, "sweep.wait", "--json", timeout=240)
    data = json.loads(done.stdout)
    state = {r["run_id"]: (r["state"], r["pod"]) for r in data["runs"]}
    moved = [rid for rid in on_1 if state[rid][1] != fleet.pods[1].address]
    assert len(moved) >= 1 and all(state[rid][0] == "success" for rid in moved), state
    lost = [rid for rid in on_1 if state[rid][0] == "lost"]
    assert len(lost) <= 1 and set(moved) | set(lost) == set(on_1), state
    others = [rid for rid in state if rid not in on_1]
    assert all(state[rid][0] == "success" for rid in others), state
    assert done.returncode == (1 if lost else 0), done.stderr
