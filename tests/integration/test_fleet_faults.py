"""A fleet's faults from the user's side (issue 23), on the loopback fleet (tests/fleet.py) with the defaults on
(warm connections: a keeper per pod): a dead pod's runs are moved / marked lost the same with and without keepers;
a partition shorter or longer than the silence that moves runs never runs a run twice without saying so; a
damaged, unwritable or deleted ledger is one line and loses nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import wait_until
from tests.fleet import WFOPS, Fleet
from tests.integration.test_fleet import _config, _csv, _status
from tests.integration.test_fleet_edges import _ended_on


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



def test_a_pod_back_from_the_dead_without_its_queue_has_its_waiting_runs_moved(tmp_path: Path, fleet_ready: Fleet):
    """Issue 23 #2: after the dead pod came back (its sshd and volume, not its processes) sweep.rebalance still
    moved nothing: the pod answered, so it was not `down`, and its waiting runs never ran (nothing there starts
    them). A pod whose queue runner is gone is now a source of moves like a silent one."""
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1")
    rows = [f"q{i},config/train_tiny.py,{i},sleep=60,,1," for i in range(6)]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows))).returncode == 0
    back = fleet.pods[1].address
    wait_until(lambda: [r["state"] for r in _status(fleet, cfg)["runs"] if r["pod"] == back] == ["running", "pending"],
               timeout=60, interval=0.5, what="one run running and one waiting on pod 1")
    fleet.kill(1)
    fleet.revive(1)
    res = fleet.wf(cfg, "sweep.rebalance", "--json", timeout=90)
    assert res.returncode == 0, (res.stdout, res.stderr)
    moves = [(m["run_id"], m["from"], m["moved"], m["why"]) for m in json.loads(res.stdout)["moves"]]
    assert moves == [("q4", back, True, f"the queue runner of {back} is gone")], moves
    states = {r["run_id"]: (r["state"], r["pod"]) for r in _status(fleet, cfg)["runs"]}
    assert states["q4"][1] != back and states["q1"] == ("lost", back), states
    assert fleet.wf(cfg, "sweep.stop", timeout=90).returncode == 0

# ------------------------------------------------------------------ partitions (issue 23 #1)

FAST_SILENCE = {"WFOPS_SSH_KEEPALIVE_SECS": "1"}  # a frozen peer is found after 3 s (keepers inherit it)


def _start_wait(fleet: Fleet, cfg: Path, env: dict[str, str]) -> subprocess.Popen:
    """sweep.wait in the background, as a user leaves it running (fleet.wf's environment)."""
    home = cfg.parent / "client-home"
    home.mkdir(exist_ok=True)
    fleet.keeper_dirs.add(cfg.parent / "keepers")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
    base.update(HOME=str(home), WORKFLOW_CONFIG=str(cfg), PYTHONUNBUFFERED="1",
                WFOPS_KEEPER_DIR=str(cfg.parent / "keepers"), **env)
    return subprocess.Popen([str(WFOPS), "sweep.wait", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=base, cwd=cfg.parent)


def _partitioned_sweep(fleet: Fleet, tmp_path: Path, gone: str) -> tuple[Path, dict[str, str], list[str]]:
    """Nine runs over three pods of one slot each; pod 1's first run running. (config, env, pod 1's runs)."""
    env = {**FAST_SILENCE, "WFOPS_FLEET_GONE_SECS": gone}
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1", SSH_CONNECT_TIMEOUT="2")
    rows = [f"k{i},config/train_tiny.py,{i},sleep=6,,1," for i in range(9)]
    res = fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows)), env=env)
    assert res.returncode == 0, res.stderr
    on_1 = _on(_ledger(tmp_path, cfg), fleet.pods[1].address)
    assert on_1 == ["k1", "k4", "k7"], on_1
    wait_until(lambda: (fleet.pods[1].home / "outputs" / "k1" / "status.json").exists(), timeout=60,
               interval=0.2, what="k1 started on pod 1")
    return cfg, env, on_1


def _seen_silent(fleet: Fleet, cfg: Path, env: dict[str, str], i: int) -> bool:
    data = json.loads(fleet.wf(cfg, "sweep.status", "--json", env=env, timeout=60).stdout)
    return data["pods"][fleet.pods[i].address]["reachable"] is False


def test_a_short_partition_moves_nothing_and_every_run_runs_once(tmp_path: Path, fleet_ready: Fleet):
    """Pod 1 cut off (its sshd and session tree stopped) until the client has seen it silent, but for less than
    the silence that moves runs: nothing moves, every run runs once, sweep.wait ends 0."""
    fleet = fleet_ready
    cfg, env, on_1 = _partitioned_sweep(fleet, tmp_path, gone="60")
    waiting = _start_wait(fleet, cfg, env)
    fleet.freeze(1)
    wait_until(lambda: _seen_silent(fleet, cfg, env, 1), timeout=60, interval=0.5, what="pod 1 seen silent")
    fleet.thaw()
    out, err = waiting.communicate(timeout=180)
    assert waiting.returncode == 0, (out[-2000:], err)
    data = json.loads(out)
    assert {r["run_id"]: r["state"] for r in data["runs"]} == {f"k{i}": "success" for i in range(9)}
    assert data["duplicates"] == {} and "moved" not in err, err
    assert all(r["pod"] == fleet.pods[1].address for r in data["runs"] if r["run_id"] in on_1)
    assert sorted(_ended_on(fleet).items()) == [(f"k{i}", 1) for i in range(9)]


def test_a_long_partition_never_runs_a_run_twice_without_saying_so(tmp_path: Path, fleet_ready: Fleet):
    """Issue 23 #1: pod 1 cut off longer than the silence that moves its waiting runs, while its queue goes on:
    the moved runs it started meanwhile are duplicates, shown (`ran on A and B`), counted once, and sweep.wait
    exits 10; the moved runs it had not started are withdrawn there as soon as it answers again; run.fetch
    takes the ledger's copy."""
    fleet = fleet_ready
    cfg, env, _ = _partitioned_sweep(fleet, tmp_path, gone="4")
    cut = fleet.pods[1].address
    waiting = _start_wait(fleet, cfg, env)
    fleet.freeze(1)

    def moved_and_ran_there() -> bool:
        runs = _ledger(tmp_path, cfg)["runs"]
        return runs["k4"]["pods"] != [cut] and (fleet.pods[1].home / "outputs" / "k4" / "status.json").exists()

    wait_until(moved_and_ran_there, timeout=120, interval=0.2, what="k4 moved off pod 1 and started there too")
    fleet.thaw()
    out, err = waiting.communicate(timeout=240)
    data = json.loads(out)
    ended = _ended_on(fleet)
    twice = data["duplicates"]
    assert "k4" in twice and twice["k4"]["pods"][0] == cut, (twice, err)
    assert waiting.returncode == 10 and "ran on two pods" in err, (waiting.returncode, err)
    # every execution beyond the first is reported, and each run is counted once
    assert {rid: n for rid, n in ended.items() if n > 1} == {rid: 2 for rid in twice}, (ended, twice)
    assert sorted(r["run_id"] for r in data["runs"]) == [f"k{i}" for i in range(9)]
    assert sum(data["totals"].values()) == 9, data["totals"]
    row = next(r for r in data["runs"] if r["run_id"] == "k4")
    owner = twice["k4"]["fetched_from"]
    assert row["pod"] == owner != cut and f"k4 ran on {cut} and {owner}" in row["note"], row
    table = fleet.wf(cfg, "sweep.status", env=env)
    assert table.returncode == 0 and f"k4 ran on {cut} and {owner}" in table.stdout, (table.stdout, table.stderr)
    assert "ran twice" in table.stdout, table.stdout
    (fleet.pods[1].home / "outputs" / "k4" / "STRAY").write_text("the duplicate")
    fetched = fleet.wf(cfg, "run.fetch", "--all", env=env, timeout=120)
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "artifacts" / "k4" / "summary.json").is_file()
    assert not (tmp_path / "artifacts" / "k4" / "STRAY").exists()
    shutil.rmtree(tmp_path / "artifacts" / "k4")
    one = fleet.wf(cfg, "run.fetch", "k4", env=env, timeout=120)  # one run: its ledger pod's copy alone
    assert one.returncode == 0 and not (tmp_path / "artifacts" / "k4" / "STRAY").exists(), (one.stdout, one.stderr)
    assert (tmp_path / "artifacts" / "k4" / "summary.json").is_file()
    _a_damaged_ledger_never_mixes_the_copies(fleet, tmp_path, cfg, env, {rid: t["pods"] for rid, t in twice.items()})


def _files(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*") if f.is_file()}


def _a_damaged_ledger_never_mixes_the_copies(fleet: Fleet, tmp_path: Path, cfg: Path, env: dict[str, str],
                                            twice: dict[str, list[str]]) -> None:
    """Issue 23 #3 with #1: the ledger truncated after runs ran on two pods. run.fetch --all took each pod's own
    records, and both pods' copies of a run went into one local folder (files of two runs mixed). Now the copy
    that wins (success first, then ended, then the pod first in OPS_HOSTS) is in RUN/, the other in
    _duplicates/<pod>/RUN/, each whole and alone."""
    local = tmp_path / "artifacts"
    for rid in twice:
        shutil.rmtree(local / rid, ignore_errors=True)
    folder = local / ".fleet"
    ledger = folder / f"{(folder / 'latest').read_text().strip()}.json"
    ledger.write_text(ledger.read_text()[:100])
    fetched = fleet.wf(cfg, "run.fetch", "--all", env=env, timeout=120)
    assert fetched.returncode == 0, (fetched.stdout, fetched.stderr)
    assert "Traceback" not in fetched.stderr and "is damaged" in fetched.stderr, fetched.stderr
    _copies_apart(fleet, local, twice, fetched)
    rid = sorted(twice)[0]  # one run by its id: the same two folders
    shutil.rmtree(local / rid)
    shutil.rmtree(local / "_duplicates")
    fetched = fleet.wf(cfg, "run.fetch", rid, env=env, timeout=120)
    assert fetched.returncode == 0 and "Traceback" not in fetched.stderr, (fetched.stdout, fetched.stderr)
    _copies_apart(fleet, local, {rid: twice[rid]}, fetched)


def _copies_apart(fleet: Fleet, local: Path, twice: dict[str, list[str]], fetched: subprocess.CompletedProcess
                  ) -> None:
    order = [p.address for p in fleet.pods]
    for rid, pods in twice.items():
        remote = {p.address: p.home / "outputs" / rid for p in fleet.pods if p.address in pods}
        state = {a: json.loads((d / "summary.json").read_text())["state"] for a, d in remote.items()}
        winner = max(pods, key=lambda a: (state[a] == "success", -order.index(a)))
        (loser,) = set(pods) - {winner}
        assert _files(local / rid) == _files(remote[winner]), (rid, winner, state)
        aside = local / "_duplicates"
        assert not (aside / re.sub(r"[^A-Za-z0-9._-]", "_", winner) / rid).exists()
        assert _files(aside / re.sub(r"[^A-Za-z0-9._-]", "_", loser) / rid) == _files(remote[loser])
        assert f"the copy from {loser} is a duplicate" in fetched.stderr, fetched.stderr


# ------------------------------------------------------------------ the ledger's faults (issue 23 #3)

def _chattr(flag: str, *paths: Path) -> None:
    """`chattr +i`: unwritable even for root (the tests run as root; ext4 here)."""
    res = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)
    assert res.returncode == 0, f"chattr {flag} (root on ext4) makes the ledger unwritable here: {res.stderr}"


def _quiet(res: subprocess.CompletedProcess, lines: int = 1) -> None:
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == lines, res.stderr


def _queued_anywhere(fleet: Fleet, run_id: str) -> list[str]:
    """The pods whose manifests (every sweep's) or outputs know `run_id`."""
    return [p.address for p in fleet.pods
            if (p.home / "outputs" / run_id).exists()
            or any(f'"{run_id}"' in m.read_text() for m in (p.home / "outputs" / "_manifests").glob("sweep-*.json"))]


def test_an_unwritable_truncated_or_deleted_ledger_is_one_line_and_loses_nothing(tmp_path: Path, fleet_ready: Fleet):
    """Issue 23 #3: an unwritable ledger made sweep.status print a PermissionError traceback, and a sweep.add
    that crashed on it had already queued its run (which status and fetch never showed); a truncated ledger made
    run.fetch --all refuse on every pod."""
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, [f"g{i},config/train_tiny.py,{i},,,1,"
                                                                     for i in range(3)]))).returncode == 0
    assert fleet.wf(cfg, "sweep.wait", timeout=120).returncode == 0
    more = _csv(tmp_path, ["x0,config/train_tiny.py,7,,,1,"], "more.csv")
    folder = tmp_path / "artifacts" / ".fleet"
    ledger = folder / f"{(folder / 'latest').read_text().strip()}.json"
    text = ledger.read_text()

    _chattr("+i", folder, ledger, folder / "latest")  # the lock file stays usable: the ledger write itself fails
    try:
        shown = fleet.wf(cfg, "sweep.status")
        assert shown.returncode == 0 and shown.stdout.count("success") == 3, (shown.stdout, shown.stderr)
        _quiet(shown)
        assert "cannot write the fleet ledger" in shown.stderr, shown.stderr
        added = fleet.wf(cfg, "sweep.add", "--csv", str(more))
        assert added.returncode == 1 and "nothing was added" in added.stderr, (added.stdout, added.stderr)
        _quiet(added)
        assert _queued_anywhere(fleet, "x0") == []  # no work a status cannot see
        moved = fleet.wf(cfg, "sweep.rebalance")
        assert moved.returncode == 1 and "nothing was moved" in moved.stderr, moved.stderr
        _quiet(moved)
        waited = fleet.wf(cfg, "sweep.wait", "--json", timeout=60)
        assert waited.returncode == 0 and len(json.loads(waited.stdout)["runs"]) == 3, waited.stderr
        _quiet(waited)
        started = fleet.wf(cfg, "sweep.start", "--csv", str(more))
        assert started.returncode == 1 and "nothing was started" in started.stderr, started.stderr
        _quiet(started)
        assert _queued_anywhere(fleet, "x0") == []
        _chattr("+i", folder / ".lock")  # now not even its lock
        shown = fleet.wf(cfg, "sweep.status", "--json")
        assert shown.returncode == 0 and len(json.loads(shown.stdout)["runs"]) == 3, shown.stderr
        _quiet(shown)
        added = fleet.wf(cfg, "sweep.add", "--csv", str(more))
        assert added.returncode == 1 and "cannot lock the fleet ledger" in added.stderr, added.stderr
        _quiet(added)
        assert _queued_anywhere(fleet, "x0") == []
    finally:
        _chattr("-i", folder, ledger, folder / "latest", folder / ".lock")
    assert ledger.read_text() == text  # nothing was half-written

    ledger.write_text(text[: len(text) // 2])  # truncated
    for task in ("sweep.status", "sweep.rebalance", "sweep.wait", f"sweep.add --csv {more}", "sweep.report",
                 "sweep.retry --failed"):
        res = fleet.wf(cfg, *task.split())
        assert res.returncode == 1 and "damaged" in res.stderr, (task, res.stderr)
        _quiet(res)
    assert _queued_anywhere(fleet, "x0") == []
    fetched = fleet.wf(cfg, "run.fetch", "--all", timeout=120)
    assert fetched.returncode == 0, (fetched.stdout, fetched.stderr)
    assert "Traceback" not in fetched.stderr and fetched.stderr.count("each pod's own sweep records") == 1
    assert sorted(d.name for d in (tmp_path / "artifacts").iterdir() if d.name[0] not in "._") == ["g0", "g1", "g2"]

    ledger.unlink()  # deleted
    for task in ("sweep.status", "sweep.rebalance", "sweep.wait", f"sweep.add --csv {more}", "sweep.report",
                 "sweep.retry --failed"):
        res = fleet.wf(cfg, *task.split())
        assert res.returncode == 5 and "no ledger" in res.stderr, (task, res.stderr)
        _quiet(res)
    fetched = fleet.wf(cfg, "run.fetch", "--all", timeout=120)
    assert fetched.returncode == 0 and "Traceback" not in fetched.stderr, fetched.stderr


def test_a_ledger_of_valid_json_and_the_wrong_shape_is_damaged_in_one_line(tmp_path: Path, fleet_ready: Fleet):
    """Found from outside (review of issue 23): a hand-edited ledger that is valid JSON with the right top-level
    keys but the wrong shape below them (a pod or a run that is a number, an order naming no run, a run without
    its pods) made sweep.status, sweep.add, sweep.rebalance and run.fetch --all print a TypeError / KeyError
    traceback. It is damaged like a truncated one: one line, and run.fetch --all takes each pod's own rows."""
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, [f"s{i},config/train_tiny.py,{i},,,1,"
                                                                     for i in range(3)]))).returncode == 0
    assert fleet.wf(cfg, "sweep.wait", timeout=120).returncode == 0
    more = _csv(tmp_path, ["x0,config/train_tiny.py,7,,,1,"], "more.csv")
    folder = tmp_path / "artifacts" / ".fleet"
    ledger = folder / f"{(folder / 'latest').read_text().strip()}.json"
    good = json.loads(ledger.read_text())
    run = good["runs"]["s0"]
    shapes = {"a pod is a number": dict(good, pods={n: 1 for n in good["pods"]}),
              "a run is a number": dict(good, runs={"s0": 5}),
              "the order names no run": dict(good, order=["s0", 5]),
              "a run without its pods": dict(good, runs={"s0": {k: v for k, v in run.items() if k != "pods"}}),
              "a run's sent mark is a string": dict(good, runs={"s0": dict(run, sent="yes")})}
    for what, doc in shapes.items():
        ledger.write_text(json.dumps(doc))
        for task in ("sweep.status", "sweep.rebalance", f"sweep.add --csv {more}", "sweep.wait"):
            res = fleet.wf(cfg, *task.split(), timeout=60)
            assert res.returncode == 1 and "damaged" in res.stderr, (what, task, res.stderr)
            _quiet(res)
        assert _queued_anywhere(fleet, "x0") == [], what
        for i in range(3):
            shutil.rmtree(tmp_path / "artifacts" / f"s{i}", ignore_errors=True)
        fetched = fleet.wf(cfg, "run.fetch", "--all", timeout=120)
        assert fetched.returncode == 0 and "Traceback" not in fetched.stderr, (what, fetched.stderr)
        assert all((tmp_path / "artifacts" / f"s{i}" / "summary.json").is_file() for i in range(3)), what


def test_run_fetch_all_with_a_damaged_ledger_skips_the_pods_that_ran_none_of_the_runs(
        tmp_path: Path, fleet_ready: Fleet):
    """Found from outside (review of issue 23): one run on a fleet of three, the ledger truncated: run.fetch --all
    fetched the run, then exited 5 with `2 of 3 pod(s) failed: ... none of the runs of the sweep has a run
    directory yet` (each pod's own rows said it had nothing, and it was asked anyway). Now those pods are not
    asked: exit 0, the run fetched, no failure line."""
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, ["o0,config/train_tiny.py,1,,,1,"]))
                    ).returncode == 0
    assert fleet.wf(cfg, "sweep.wait", timeout=120).returncode == 0
    folder = tmp_path / "artifacts" / ".fleet"
    ledger = folder / f"{(folder / 'latest').read_text().strip()}.json"
    ledger.write_text(ledger.read_text()[:40])  # truncated
    fetched = fleet.wf(cfg, "run.fetch", "--all", timeout=120)
    assert fetched.returncode == 0, (fetched.stdout, fetched.stderr)
    assert "failed" not in fetched.stderr and "Traceback" not in fetched.stderr, fetched.stderr
    assert (tmp_path / "artifacts" / "o0" / "summary.json").is_file()


def test_run_fetch_of_a_run_on_a_pod_removed_from_the_config_says_so(tmp_path: Path, fleet_ready: Fleet):
    """Found from outside (review of issue 23): a pod taken out of OPS_HOSTS after the sweep (the ledger still has
    runs on it). sweep.status, sweep.add and sweep.rebalance refused with one line, but `run.fetch RUN` of a run
    on that pod, and `run.fetch --all`, exited 0 having fetched nothing of it, and said nothing. Now they refuse
    with the same line (exit 5), and fetch again once the pod is back in the config."""
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, [f"k{i},config/train_tiny.py,{i},,,1,"
                                                                     for i in range(3)]))).returncode == 0
    assert fleet.wf(cfg, "sweep.wait", timeout=120).returncode == 0
    gone = fleet.pods[2].address
    (on_gone,) = _on(_ledger(tmp_path, cfg), gone)
    fewer = fleet.config(tmp_path, name="fewer.env", TRAIN_SCRIPT="echo_train.py", TRAIN_WORKDIR="examples/nanogpt",
                         OPS_HOSTS=",".join(p.address for p in fleet.pods[:2]))
    for args in ([on_gone], ["--all"]):
        res = fleet.wf(fewer, "run.fetch", *args, timeout=120)
        assert res.returncode == 5 and f"the ledger names pod(s) the config does not: {gone}" in res.stderr, (
            args, res.returncode, res.stdout, res.stderr)
        _quiet(res)
        assert not (tmp_path / "artifacts" / on_gone).exists()
    res = fleet.wf(cfg, "run.fetch", on_gone, timeout=120)
    assert res.returncode == 0 and (tmp_path / "artifacts" / on_gone / "summary.json").is_file(), res.stderr


# ------------------------------------------------------------------ two terminals (review of issue 23)


def test_a_sweep_add_while_sweep_wait_runs_is_waited_for(tmp_path: Path, fleet_ready: Fleet):
    """sweep.wait loaded the ledger once: a run another terminal added meanwhile made its check for runs stuck
    next to free slots raise KeyError (a traceback) instead of waiting for that run too."""
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1")
    rows = [f"w{i},config/train_tiny.py,{i},sleep=12,,1," for i in range(3)]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows))).returncode == 0
    waiting = _start_wait(fleet, cfg, {})
    more = _csv(tmp_path, ["w9,config/train_tiny.py,9,sleep=1,,1,"], "more.csv")
    added = fleet.wf(cfg, "sweep.add", "--csv", str(more))
    assert added.returncode == 0, added.stderr
    assert "w9" in _ledger(tmp_path, cfg)["runs"]
    out, err = waiting.communicate(timeout=180)
    assert "Traceback" not in err and waiting.returncode == 0, (waiting.returncode, err[-3000:])
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {
        **{f"w{i}": "success" for i in range(3)}, "w9": "success"}


def test_two_waiters_through_a_long_partition_lose_no_run_and_agree_on_the_duplicates(
        tmp_path: Path, fleet_ready: Fleet):
    """Two sweep.wait clients through a long partition: one moved the cut-off pod's runs away, the other, once
    the pod answered again, moved a run stuck behind a busy pod back to it; the pod had run a copy, so its sweep
    refused the run, which had already been withdrawn from the pod it left: in no queue at all, both waits waited
    for ever (and said `moved`). Now the refused run stays where it was, every run ends, both waits exit 10 with
    the same duplicates, and no run runs three times."""
    fleet = fleet_ready
    cfg, env, _ = _partitioned_sweep(fleet, tmp_path, gone="4")
    cut = fleet.pods[1].address
    waits = [_start_wait(fleet, cfg, env), _start_wait(fleet, cfg, env)]
    fleet.freeze(1)

    def moved_and_ran_there() -> bool:
        runs = _ledger(tmp_path, cfg)["runs"]
        return runs["k4"]["pods"] != [cut] and (fleet.pods[1].home / "outputs" / "k4" / "status.json").exists()

    wait_until(moved_and_ran_there, timeout=120, interval=0.2, what="k4 moved off pod 1 and started there too")
    fleet.thaw()
    ended = [w.communicate(timeout=240) for w in waits]
    assert [w.returncode for w in waits] == [10, 10], [err[-2000:] for _, err in ended]
    twice = [set(json.loads(out)["duplicates"]) for out, _ in ended]
    ran = _ended_on(fleet)
    assert max(ran.values()) == 2 and twice[0] == twice[1] == {rid for rid, n in ran.items() if n == 2}, (ran, twice)
