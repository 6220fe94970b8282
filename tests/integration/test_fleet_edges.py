"""The fleet's edges on the loopback fleet (tests/fleet.py): a pod down at sweep.start, at sweep.status and at
run.fetch; runs stuck behind a busy pod; a pod that comes back after its runs were moved; sweep.add and
sweep.retry on a fleet; a missing or damaged ledger; --json and --watch on fan-out; SIGTERM of a fan-out."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.conftest import wait_until
from tests.fleet import WFOPS, Fleet
from tests.integration.test_fleet import _config, _csv, _status
from tests.procview import waits_on_pidfd_of
from tests.realparts import pids_with_env


def _states(fleet: Fleet, cfg: Path) -> dict[str, tuple[str, str]]:
    return {r["run_id"]: (r["state"], r["pod"]) for r in _status(fleet, cfg)["runs"]}


def _ended_on(fleet: Fleet) -> Counter:
    """run_id -> how many pods ran it to its end (ended.json in the pod's outputs)."""
    return Counter(d.name for p in fleet.pods if (p.home / "outputs").is_dir()
                   for d in (p.home / "outputs").iterdir() if (d / "ended.json").exists())


def _one_line(res: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr




def test_a_pod_down_at_sweep_start_starts_nothing_and_ledger_troubles_are_one_line(
        tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    for task in ("sweep.status", "sweep.rebalance", "sweep.wait", "sweep.retry --failed"):
        res = fleet.wf(cfg, *task.split())
        assert res.returncode == 5 and "no ledger" in res.stderr, (task, res.stderr)
        _one_line(res)
    fleet.kill(2)
    res = fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, [f"s{i},config/train_tiny.py,{i},,,1,"
                                                                     for i in range(4)])))
    assert res.returncode == 4 and "nothing was started" in res.stderr, (res.stdout, res.stderr)
    assert fleet.pods[2].address in res.stderr
    _one_line(res)
    assert not (tmp_path / "artifacts" / ".fleet").exists()
    for pod in fleet.pods[:2]:
        assert not list((pod.home / "outputs").glob("_manifests/sweep-*")), pod.address
        assert not list((pod.home / "outputs").glob("s*")), pod.address
    ledger = tmp_path / "artifacts" / ".fleet"
    ledger.mkdir(parents=True)
    (ledger / "latest").write_text("sweep-x")
    for damaged in ("{", "{}", '{"sweep_id": "sweep-x", "pods": {}, "runs": [], "order": []}'):
        (ledger / "sweep-x.json").write_text(damaged)
        res = fleet.wf(cfg, "sweep.status")
        assert res.returncode == 1 and "damaged" in res.stderr, (damaged, res.stderr)
        _one_line(res)
    res = fleet.wf(cfg, "sweep.status", "--sweep", "../../fleet")
    assert res.returncode == 5, res.stderr
    _one_line(res)
    dup = fleet.config(tmp_path, name="dup.env", OPS_HOSTS=f"{fleet.pods[0].address},{fleet.pods[0].address}")
    res = fleet.wf(dup, "fsm.status")
    assert res.returncode == 2 and "listed twice" in res.stderr, res.stderr
    _one_line(res)


def test_a_pod_down_after_its_runs_ended_status_fetch_json_and_exit_codes(tmp_path: Path, fleet_ready: Fleet):
    """Status rows of the dead pod are unknown (exit 4), the others' are there; run.fetch --all brings the
    others' runs (exit 4); --json is one valid document on stdout; the exit code is the worst pod's;
    --watch is refused on a fan-out; the pod back, sweep.retry --failed and sweep.add work on the fleet."""
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    rows = [f"d{i},config/train_tiny.py,{i},,,1," for i in range(5)] + ["bad,config/train_tiny.py,9,exit=3,,1,"]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows))).returncode == 0
    done = fleet.wf(cfg, "sweep.wait", "--json", timeout=120)
    assert done.returncode == 1, (done.stdout[-2000:], done.stderr)
    where = {r["run_id"]: r["pod"] for r in json.loads(done.stdout)["runs"]}
    dead = fleet.pods[1].address
    fleet.kill(1)

    res = fleet.wf(cfg, "sweep.status", "--json")
    assert res.returncode == 4, res.stderr
    data = json.loads(res.stdout)
    for r in data["runs"]:
        assert r["state"] == ("unknown" if where[r["run_id"]] == dead else
                              ("failed" if r["run_id"] == "bad" else "success")), r
    assert data["pods"][dead]["reachable"] is False
    human = fleet.wf(cfg, "sweep.status")
    assert human.returncode == 4 and "unknown" in human.stdout and "did not answer" in human.stderr

    fetched = fleet.wf(cfg, "run.fetch", "--all")
    assert fetched.returncode == 4, (fetched.stdout, fetched.stderr)
    local = tmp_path / "artifacts"
    got = sorted(d.name for d in local.iterdir() if not d.name.startswith("."))
    assert got == sorted(rid for rid, pod in where.items() if pod != dead), (got, where)

    js = fleet.wf(cfg, "task.list", "--json")
    doc = json.loads(js.stdout)  # one document on stdout, whatever the pods printed on stderr
    assert js.returncode == 4 and [p["ok"] for p in doc["pods"]] == [True, False, True], doc
    assert all(line.startswith("[") or line.startswith("wfops:") for line in js.stderr.splitlines()), js.stderr
    worst = fleet.wf(cfg, "task.status", "--id", "nosuch")  # two pods: not found (5), one: does not answer (4)
    assert worst.returncode == 5 and worst.stdout.count("failed (exit 5)") == 2, (worst.stdout, worst.stderr)
    assert "failed (exit 4)" in worst.stdout
    watch = fleet.wf(cfg, "task.status", "--id", "x", "--watch")
    assert watch.returncode == 2 and "WF_POD" in watch.stderr, watch.stderr

    fleet.revive(1)
    retried = fleet.wf(cfg, "sweep.retry", "--failed", "--json")
    assert retried.returncode == 0 and json.loads(retried.stdout)["queued"] == 1, (retried.stdout, retried.stderr)
    added = fleet.wf(cfg, "sweep.add", "--csv", str(_csv(tmp_path, [f"a{i},config/train_tiny.py,{i},,,1,"
                                                                   for i in range(3)], "more.csv")), "--json")
    assert added.returncode == 0, added.stderr
    assert len({w[0] for w in json.loads(added.stdout)["placed"].values()}) == 3  # one on each idle pod
    final = fleet.wf(cfg, "sweep.wait", "--json", timeout=120)
    states = {r["run_id"]: r["state"] for r in json.loads(final.stdout)["runs"]}
    assert states == {**{f"d{i}": "success" for i in range(5)}, "bad": "failed",
                      **{f"a{i}": "success" for i in range(3)}}, states
    assert all(n == 1 for n in _ended_on(fleet).values()), _ended_on(fleet)


def test_rebalance_moves_a_run_stuck_behind_a_busy_pod_to_an_idle_one_and_it_runs_once(
        tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1")
    rows = [f"b{i},config/train_tiny.py,{i},{'sleep=25' if i == 0 else ''},,1," for i in range(6)]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows))).returncode == 0
    busy = fleet.pods[0].address
    assert _states(fleet, cfg)["b3"][1] == busy  # b0 and b3 on pod 0: b3 waits behind the long b0
    wait_until(lambda: all(s == "success" for rid, (s, _) in _states(fleet, cfg).items() if rid not in ("b0", "b3")),
               timeout=90, interval=1, what="the short runs")
    res = fleet.wf(cfg, "sweep.rebalance", "--json")
    assert res.returncode == 0, res.stderr
    moves = json.loads(res.stdout)["moves"]
    assert [(m["run_id"], m["from"], m["moved"]) for m in moves] == [("b3", busy, True)], moves
    done = fleet.wf(cfg, "sweep.wait", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    assert _states(fleet, cfg)["b3"] == ("success", moves[0]["to"])
    assert not (fleet.pods[0].home / "outputs" / "b3").exists()
    assert all(n == 1 for n in _ended_on(fleet).values()), _ended_on(fleet)


def test_a_pod_that_comes_back_after_its_waiting_runs_moved_does_not_run_them_again(
        tmp_path: Path, fleet_ready: Fleet):
    """Pod 1 stops answering (its sshd only: the queue there goes on), its waiting run moves; once it answers
    again the next rebalance takes that run back out of its queue, so it runs once; its running run ends
    on it and the joined status shows it."""
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1")
    rows = [f"c{i},config/train_tiny.py,{i},{'sleep=30' if i == 1 else 'sleep=1'},,1," for i in range(6)]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows))).returncode == 0
    gone = fleet.pods[1].address
    wait_until(lambda: _states(fleet, cfg)["c1"][0] == "running", timeout=60, interval=0.5, what="c1 running")
    fleet.cut(1)  # its sshd and every connection to it (the keepers' too): the pod is alive but unreachable
    res = fleet.wf(cfg, "sweep.rebalance", "--json")
    moved = [m["run_id"] for m in json.loads(res.stdout)["moves"] if m["moved"]]
    assert moved == ["c4"], (res.stdout, res.stderr)
    fleet.revive(1)
    back = fleet.wf(cfg, "sweep.rebalance", "--json")
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["reclaimed"] == ["c4"], back.stdout
    done = fleet.wf(cfg, "sweep.wait", "--json", timeout=150)
    states = {r["run_id"]: (r["state"], r["pod"]) for r in json.loads(done.stdout)["runs"]}
    assert _ended_on(fleet)["c4"] == 1 and not (fleet.pods[1].home / "outputs" / "c4").exists(), states
    assert states["c1"] == ("success", gone), states  # it ran on, where it was: not lost
    assert done.returncode == 0, (states, done.stderr)


def test_sigterm_of_a_fan_out_exits_143_at_once_and_leaves_no_client_process(tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    res = fleet.wf(cfg, "task.run", "--id", "long", "--cmd", "sleep 60")
    assert res.returncode == 0, res.stderr
    home = tmp_path / "client-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "WF_", "LIUM_"))}
    env.update(HOME=str(home), WORKFLOW_CONFIG=str(cfg), PYTHONUNBUFFERED="1",
               WFOPS_KEEPER_DIR=str(tmp_path / "keepers"))
    proc = subprocess.Popen([str(WFOPS), "task.wait", "--id", "long"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    runners = {p.index: json.loads((p.home / "outputs" / "_tasks" / "long" / "status.json").read_text())["pid"]
               for p in fleet.pods}
    wait_until(lambda: all(any(waits_on_pidfd_of(pid, runners[p.index]) for pid in pids_with_env("HOME", str(p.home)))
                           for p in fleet.pods), timeout=60, what="task.wait waiting on every pod")
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 143 and "terminated" in err, (proc.returncode, out, err)
    assert time.monotonic() - t0 < 10
    left = [p for p in pids_with_env("HOME", str(home))  # the warm keepers stay, as designed (WF_PERSIST_SECS)
            if b"wfops.transport.keeper" not in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")]
    assert left == []
    local = fleet.config(tmp_path, name="mixed.env", OPS_HOSTS=f"local,{fleet.pods[0].address}")
    mixed = fleet.wf(local, "fsm.status", "--json")
    doc = json.loads(mixed.stdout)
    assert [p["pod"] for p in doc["pods"]] == ["local", fleet.pods[0].address], doc
    assert doc["pods"][1]["data"]["state"] == "CHECKED_OUT", doc


def test_runs_of_a_pod_that_refused_its_share_at_sweep_start_are_moved_and_sweep_wait_ends(
        tmp_path: Path, fresh_fleet3: Fleet, checked_out: Path):
    """sweep.start says "sweep.rebalance queues those runs on the others" when one pod refuses its share (here:
    pod 2 cannot write its manifests): it must, and sweep.wait must not wait forever on them."""
    fleet = fresh_fleet3
    fleet.checked_out(checked_out)
    manifests = fleet.pods[2].home / "outputs" / "_manifests"
    shutil.rmtree(manifests, ignore_errors=True)
    manifests.write_text("not a folder")
    cfg = _config(fleet, tmp_path)
    res = fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, [f"u{i},config/train_tiny.py,{i},,,1,"
                                                                     for i in range(6)])))
    assert res.returncode != 0 and "sweep.rebalance" in res.stderr, (res.stdout, res.stderr)
    refused = fleet.pods[2].address
    assert "NOT STARTED" in res.stdout
    done = fleet.wf(cfg, "sweep.wait", "--json", timeout=120)  # rebalances the refused share on the way
    states = {r["run_id"]: (r["state"], r["pod"]) for r in json.loads(done.stdout)["runs"]}
    assert done.returncode == 0 and all(s == "success" and p != refused for s, p in states.values()), states
    assert "moved u2" in done.stderr and "moved u5" in done.stderr, done.stderr
    assert sorted(_ended_on(fleet)) == [f"u{i}" for i in range(6)] and set(_ended_on(fleet).values()) == {1}
