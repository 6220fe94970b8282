"""A fleet's faults from the user's side (issue 23), on the loopback fleet (tests/fleet.py) with the defaults on
(warm connections: a keeper per pod): a dead pod's runs are moved / marked lost the same with and without keepers;
a partition shorter or longer than the silence that moves runs never runs a run twice without saying so; a
damaged, unwritable or deleted ledger is one line and loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import wait_until
from tests.fleet import Fleet
from tests.integration.test_fleet import _config, _csv, _status


def _ledger(tmp_path: Path, cfg: Path) -> dict:
    fleet_dir = cfg.parent / "artifacts" / ".fleet"
    return json.loads((fleet_dir / f"{(fleet_dir / 'latest').read_text().strip()}.json").read_text())


def _on(ledger: dict, pod: str) -> list[str]:
    return sorted(rid for rid, r in ledger["runs"].items() if r["pods"] == [pod])


def _dead_pod_rebalance(fleet: Fleet, tmp_path: Path, **over: str) -> tuple[list, list, dict]:
    """Pod 1 holds a running and a waiting run; it dies (kill -9 of its sshd and everything with its HOME) after
    a status warmed the connections; sweep.rebalance: (moves off pod 1, lost runs, what the ledger had there)."""
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1", **over)
    rows = [f"p{i},config/train_tiny.py,{i},sleep=60,,1," for i in range(6)]
    res = fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows)))
    assert res.returncode == 0, res.stderr
    gone = fleet.pods[1].address
    on_1 = _on(_ledger(tmp_path, cfg), gone)
    wait_until(lambda: [r["state"] for r in _status(fleet, cfg)["runs"] if r["pod"] == gone] == ["running", "pending"],
               timeout=60, interval=0.5, what="one run running and one waiting on pod 1")
    fleet.kill(1)
    res = fleet.wf(cfg, "sweep.rebalance", "--json", timeout=90)
    assert res.returncode == 0, (res.stdout, res.stderr)
    data = json.loads(res.stdout)
    assert gone in data["down"], data
    moves = sorted((m["run_id"], m["from"], m["moved"]) for m in data["moves"])
    return moves, sorted(data["lost_runs"]), {"on_1": on_1, "gone": gone}


def test_a_dead_pods_runs_are_moved_and_lost_the_same_with_and_without_keepers(
        tmp_path: Path, fleet_ready: Fleet, checked_out: Path):
    """Issue 23 #2: with warm connections (the default) the keeper of a dead pod answered, so the pod was never
    `down`: sweep.rebalance moved nothing and its running run stayed `unknown` for ever. A keeper's failed
    reconnect is now a ConnectError like a cold connect's."""
    fleet = fleet_ready
    got = {}
    for mode, over in (("warm", {}), ("cold", {"WF_PERSIST_SECS": "0"})):
        where = tmp_path / mode
        where.mkdir()
        moves, lost, seen = _dead_pod_rebalance(fleet, where, **over)
        running, waiting = seen["on_1"]  # p1 runs, p4 waits (one slot per pod, spread in order)
        assert moves == [(waiting, seen["gone"], True)], (mode, moves)
        assert lost == [running], (mode, lost)
        got[mode] = (moves, lost)
        stopped = fleet.wf(_config(fleet, where, WF_FAKE_GPUS="1", **over), "sweep.stop", timeout=90)
        assert stopped.returncode in (0, 4), stopped.stderr  # pod 1 is dead: exit 4 for it
        fleet.reset()
        fleet.checked_out(checked_out)
    assert got["warm"] == got["cold"]

