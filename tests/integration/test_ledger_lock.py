"""The fleet ledger's lock (wfops.sweeps.ledger.ledger_lock, an flock on LOCAL_ARTIFACTS_DIR/.fleet/.lock) where
sweep.add and sweep.rebalance change the ledger: while another command holds it they wait, then read the ledger
as that command left it, so neither undoes the other's change. The test holds the lock itself (as a second
command would), sees from /proc/locks that the command waits on it, changes the ledger meanwhile, and checks the
change survives the command's own write. Without the lock the command reads the ledger at once and its write
drops the change (or never waits at all): the test fails either way, not by chance."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.fleet import WFOPS, Fleet
from tests.integration.test_fleet import _config, _csv


def _lock_waiters() -> set[int]:
    """Pids blocked on an flock now (/proc/locks: a blocked request is a line with `->`)."""
    waiting = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[2] == "FLOCK":
            waiting.add(int(fields[5]))
    return waiting


def _lock_holders() -> set[int]:
    return {int(f[4]) for f in (ln.split() for ln in Path("/proc/locks").read_text().splitlines())
            if len(f) > 4 and f[1] == "FLOCK"}


def _start(fleet: Fleet, cfg: Path, *args: str) -> subprocess.Popen:
    """`wfops ARGS` in the background, with the environment Fleet.wf gives a command."""
    home = cfg.parent / "client-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
    env.update(HOME=str(home), WORKFLOW_CONFIG=str(cfg), PYTHONUNBUFFERED="1",
               WFOPS_KEEPER_DIR=str(cfg.parent / "keepers"))
    return subprocess.Popen([str(WFOPS), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cfg.parent)


@pytest.mark.parametrize("command", ["sweep.add", "sweep.rebalance"])
def test_a_command_that_changes_the_ledger_waits_for_its_lock_and_keeps_what_the_holder_wrote(
        tmp_path: Path, fleet_ready: Fleet, command: str):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, [f"q{i},config/train_tiny.py,{i},,,1,"
                                                                     for i in range(3)]))).returncode == 0
    done = fleet.wf(cfg, "sweep.wait", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    fleet_dir = tmp_path / "artifacts" / ".fleet"
    ledger_path = next(fleet_dir.glob("sweep-*.json"))
    args = ["--csv", str(_csv(tmp_path, ["n0,config/train_tiny.py,7,,,1,"], "more.csv"))] if command == "sweep.add" \
        else []
    with open(fleet_dir / ".lock", "a") as held:  # another command holding the lock (as sweep.wait would)
        fcntl.flock(held, fcntl.LOCK_EX)
        assert os.getpid() in _lock_holders()  # positive control: /proc/locks shows the locks of this machine
        proc = _start(fleet, cfg, command, *args, "--json")
        try:
            wait_until(lambda: proc.pid in _lock_waiters() or proc.poll() is not None, timeout=60,
                       what=f"{command} to wait on the ledger's lock (or end)")
            assert proc.poll() is None, (f"{command} did not wait for the ledger's lock", proc.communicate())
            # what the holder writes meanwhile: a move of q0 it made (sweep.rebalance records moves so)
            doc = json.loads(ledger_path.read_text())
            doc["runs"]["q0"]["moves"].append({"from": "x", "to": "y", "why": "written under the lock", "at": "t"})
            ledger_path.write_text(json.dumps(doc))
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    after = json.loads(ledger_path.read_text())
    assert [m["why"] for m in after["runs"]["q0"]["moves"]] == ["written under the lock"], after["runs"]["q0"]
    if command == "sweep.add":
        assert "n0" in after["runs"] and after["order"][-1] == "n0", after["order"]
        assert fleet.wf(cfg, "sweep.wait", "--json", timeout=120).returncode == 0
        assert json.loads(fleet.wf(cfg, "sweep.status", "--json").stdout)["totals"] == {"success": 4}


def test_sweep_status_answers_while_a_sweep_add_holds_the_ledgers_lock(tmp_path: Path, fleet_ready: Fleet):
    """sweep.add holds the ledger's lock for as long as it waits for its pods (here: its agent waits for the inbox
    lock this test holds). sweep.status only reads the ledger (written whole, renamed into place) and records
    what it saw only if it gets the lock within a second: it answers while the add still holds it, with one line
    that it did not record. Before, it waited on the lock for as long as the add took."""
    from tests.integration.test_fleet_lost_answers import _add_then_fault

    fleet = fleet_ready
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1")
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, ["s0,config/train_tiny.py,1,,,1,"]))
                    ).returncode == 0
    assert fleet.wf(cfg, "sweep.wait", timeout=120).returncode == 0
    lock = tmp_path / "artifacts" / ".fleet" / ".lock"

    def status_meanwhile(adding: subprocess.Popen[str], target: int) -> None:
        assert adding.pid in _holders_of(lock)  # positive control: the add holds the ledger's lock
        shown = _start(fleet, cfg, "sweep.status", "--json")
        try:
            wait_until(lambda: shown.poll() is not None, timeout=60, what="sweep.status while sweep.add holds the lock")
        finally:
            if shown.poll() is None:
                shown.kill()
        out, err = shown.communicate()
        assert adding.poll() is None and adding.pid in _holders_of(lock), "the add let go of the lock first"
        assert shown.returncode == 0, (out, err)
        assert [r["run_id"] for r in json.loads(out)["runs"]] == ["s0", "late"]  # the add's run, not yet queued
        assert err.strip().splitlines() == [
            f"wfops: the fleet ledger in {lock.parent} is locked by another command (a sweep.add or sweep.rebalance "
            "at work); last-seen states and duplicates were not recorded"], err

    adding, _ = _add_then_fault(fleet, cfg, {}, _csv(tmp_path, ["late,config/train_tiny.py,7,,,1,"], "more.csv"),
                                status_meanwhile)
    out, err = adding.communicate(timeout=120)
    assert adding.returncode == 0, (out, err)
    assert fleet.wf(cfg, "sweep.wait", "--json", timeout=120).returncode == 0
    assert json.loads(fleet.wf(cfg, "sweep.status", "--json").stdout)["totals"] == {"success": 2}


def _holders_of(path: Path) -> set[int]:
    """Pids that hold an flock on `path` (/proc/locks, by its inode)."""
    inode = os.stat(path).st_ino
    return {int(f[4]) for f in (ln.split() for ln in Path("/proc/locks").read_text().splitlines())
            if len(f) > 5 and f[1] == "FLOCK" and int(f[5].split(":")[-1]) == inode}
