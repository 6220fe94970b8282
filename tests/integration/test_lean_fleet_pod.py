"""One pod of a fleet chosen with WF_POD=NAME: its read-only commands take the lean entry and the cached fast path
(wfops.lean, wfops.leancache) as a one-pod config's do, answer from that pod and no other, and say exactly what the
full invoke path says. A name that is not in the fleet, and run.fetch (a fleet's ledger shares its runs out), stay
on the full path. Three real loopback sshd pods (tests/fleet.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Result
from tests.fleet import Fleet
from tests.integration.test_lean_cache import PROFILE, hit, said
from tests.integration.test_lean_entry import imported


def wf(fleet: Fleet, cfg: Path, *args: str, **env: str) -> Result:
    res = fleet.wf(cfg, *args, env=env)
    return Result(res.returncode, res.stdout, res.stderr)


def test_a_pod_chosen_with_wf_pod_is_read_lean_and_kept_from_that_pod_alone(fresh_fleet3: Fleet, tmp_path: Path):
    fleet = fresh_fleet3
    cfg = fleet.config(tmp_path, WF_PERSIST_SECS="120")
    names = [p.address for p in fleet.pods]
    for i, name in enumerate(names[:2]):  # two pods with a state of their own; the third stays INIT
        assert wf(fleet, cfg, "fsm.reset", "CHECKED_OUT", "--reason", f"pod number {i}", WF_POD=name).rc == 0
    assert wf(fleet, cfg, "task.run", "--id", "only-on-b", "--cmd", "true", WF_POD=names[1]).rc == 0
    assert wf(fleet, cfg, "fsm.status", WF_POD=names[2]).rc == 0  # first contact (the agent, the config) made
    for args in (("fsm.status",), ("fsm.status", "--json"), ("task.list",), ("sweep.list", "--json")):
        for name in names:
            lean = wf(fleet, cfg, *args, **PROFILE, WF_POD=name)
            full = wf(fleet, cfg, *args, **PROFILE, WF_POD=name, WFOPS_LEAN="0")
            assert "invoke" not in imported(lean) and "invoke" in imported(full), (args, name, lean.err[-2000:])
            assert said(lean) == said(full), (args, name)
    # the kept request of each pod answers for that pod: the state and reason of the pod WF_POD names
    for _round in range(2):
        for i, name in enumerate(names):
            res = wf(fleet, cfg, "fsm.status", "--json", **PROFILE, WF_POD=name)
            assert res.rc == 0 and hit(res), (name, res.err[-2000:])
            state = json.loads(res.out)
            assert (state["state"], state.get("reason")) == (
                ("CHECKED_OUT", f"pod number {i}") if i < 2 else ("INIT", None)), (name, state)
    listed = {name: wf(fleet, cfg, "task.list", **PROFILE, WF_POD=name) for name in names}
    assert [("only-on-b" in res.out, hit(res)) for res in listed.values()] == [(False, True), (True, True),
                                                                                (False, True)]


def test_a_name_not_in_the_fleet_and_a_fetch_take_the_full_path(fresh_fleet3: Fleet, tmp_path: Path):
    fleet = fresh_fleet3
    cfg = fleet.config(tmp_path, WF_PERSIST_SECS="120")
    name = fleet.pods[0].address
    assert wf(fleet, cfg, "fsm.status", WF_POD=name).rc == 0  # its keeper is warm
    nosuch = wf(fleet, cfg, "fsm.status", **PROFILE, WF_POD="nosuch")
    full = wf(fleet, cfg, "fsm.status", WF_POD="nosuch", WFOPS_LEAN="0")
    assert "invoke" in imported(nosuch) and nosuch.rc == 2 and "WF_POD='nosuch' is not a pod of the fleet" in nosuch.err
    assert said(nosuch) == said(full)
    fetch = wf(fleet, cfg, "run.fetch", "r1", **PROFILE, WF_POD=name)
    assert "invoke" in imported(fetch), fetch.err[-2000:]
    assert said(fetch) == said(wf(fleet, cfg, "run.fetch", "r1", WF_POD=name, WFOPS_LEAN="0"))


def test_a_fleets_reads_are_lean_on_every_pod_at_once_and_say_what_the_full_path_says(fresh_fleet3: Fleet,
                                                                                       tmp_path: Path):
    """fsm.status, task.status, task.list and sweep.list of a fleet (no WF_POD): one section per pod or one JSON
    document, the pods' own errors (a task only one pod has) and the worst exit, as the task shows them."""
    fleet = fresh_fleet3
    cfg = fleet.config(tmp_path, WF_PERSIST_SECS="120")
    names = [p.address for p in fleet.pods]
    assert wf(fleet, cfg, "fsm.status").rc == 0  # first contact with every pod (agent, config) made
    assert wf(fleet, cfg, "fsm.reset", "CHECKED_OUT", "--reason", "only b", WF_POD=names[1]).rc == 0
    assert wf(fleet, cfg, "task.run", "--id", "t1", "--cmd", r"printf '\033[31mred\033[0m\n'", WF_POD=names[2]).rc == 0
    assert wf(fleet, cfg, "task.wait", "--id", "t1", WF_POD=names[2]).rc == 0
    codes = set()
    for args in (("fsm.status",), ("fsm.status", "--json"), ("task.list",), ("task.list", "--json", "--limit", "1"),
                 ("task.status", "--id", "t1"), ("task.status", "--id", "t1", "--json"), ("sweep.list",),
                 ("sweep.list", "--json")):
        lean = wf(fleet, cfg, *args, **PROFILE)
        full = wf(fleet, cfg, *args, **PROFILE, WFOPS_LEAN="0")
        assert "invoke" not in imported(lean) and "invoke" in imported(full), (args, lean.err[-2000:])
        assert said(lean) == said(full), args
        codes.add(lean.rc)
    assert codes == {0, 5}  # task t1 is on one pod: the two others' "no task" is their section and the exit
    marks = [pod.sshd.mark() for pod in fleet.pods]
    warm = wf(fleet, cfg, "task.list", **PROFILE)
    assert warm.rc == 0 and "invoke" not in imported(warm)
    counted = [pod.sshd.counts(mark) for pod, mark in zip(fleet.pods, marks, strict=True)]
    assert all(conns == 0 and execs <= 1 for conns, execs in counted), counted  # warm: no connection, one exec at most
    shown = wf(fleet, cfg, "task.status", "--id", "t1").out
    assert shown.count("== pod ") == 3 and "\\x1b[31mred" in shown and "\x1b" not in shown
    doc = json.loads(wf(fleet, cfg, "fsm.status", "--json").out)
    assert [(p["pod"], p["data"]["state"]) for p in doc["pods"]] == [
        (names[0], "INIT"), (names[1], "CHECKED_OUT"), (names[2], "POD_READY")]  # task.run: INIT -> POD_READY


def test_a_fleet_pod_that_cannot_be_reached_is_its_section_and_the_exit_both_ways(fresh_fleet3: Fleet,
                                                                                  tmp_path: Path):
    fleet = fresh_fleet3
    down = fleet.config(tmp_path, WF_PERSIST_SECS="120")
    assert wf(fleet, down, "fsm.status").rc == 0
    fleet.kill(1)  # its sshd and its keeper's connection die
    lean = wf(fleet, down, "fsm.status", **PROFILE)
    full = wf(fleet, down, "fsm.status", **PROFILE, WFOPS_LEAN="0")
    assert "invoke" not in imported(lean), lean.err[-2000:]
    assert lean.rc == full.rc != 0 and lean.out == full.out and "failed (exit " in lean.out
    assert lean.last_err == full.last_err
    assert lean.last_err.startswith(f"wfops: 1 of 3 pod(s) failed: {fleet.pods[1].address}: ")
    ledger = wf(fleet, down, "sweep.status", **PROFILE)  # a fleet's sweep.status reads its ledger: the full path
    assert ledger.rc != 0 and "invoke" in imported(ledger)


def test_a_pod_whose_keeper_is_stale_is_asked_again_alone_and_every_other_pod_once(fresh_fleet3: Fleet,
                                                                                   tmp_path: Path):
    """Pod 0's keeper was made for another config (another SSH_CONNECT_TIMEOUT: stale for the fleet's): that pod's
    request reaches nothing and goes through the full path's session (a new keeper); the other pods are asked once
    (pod 1 warns on every command: its warning is said once, as on the full path)."""
    fleet = fresh_fleet3
    cfg = fleet.config(tmp_path, WF_PERSIST_SECS="120")
    solo = fleet.config(tmp_path, pod=0, name="solo.env", WF_PERSIST_SECS="120", SSH_CONNECT_TIMEOUT="20")
    assert wf(fleet, cfg, "fsm.status").rc == 0
    env_file = fleet.pods[1].home / "project.env"
    env_file.unlink()
    env_file.mkdir()  # the agent cannot write the config there: it warns on every command
    both = {}
    for way in ({}, {"WFOPS_LEAN": "0"}):
        assert fleet.wf(solo, "fsm.status").returncode == 0  # pod 0's keeper now has solo.env's fingerprint
        res = wf(fleet, cfg, "task.list", **PROFILE, **way)
        assert ("invoke" in imported(res)) == bool(way), res.err[-2000:]
        warned = [ln for ln in res.err.splitlines() if "could not update the config" in ln]
        assert res.rc == 0 and res.out.count("== pod ") == 3 and len(warned) == 1, (way, res.err)
        both[bool(way)] = said(res)
    assert both[False] == both[True]
