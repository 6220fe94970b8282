"""The pod agent's side of a fleet through the real queue (tmux, torchrun, echo_train.py), called as the client
does (PodCommand, one exec per call): fleet-facts, sweep-withdraw from a running and from an ended queue,
sweep-add bound to a sweep id, and a pod that starts with an empty share of the sweep."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from tests.conftest import Pod, keepers_in, wait_until
from tests.integration.test_sweeps import local_swept, states, status, wait_sweep  # noqa: F401 - fixture
from wfops.agent.states import EXIT_CONFLICT
from wfops.errors import WfopsError
from wfops.settings.load import load_settings
from wfops.sweeps.launch_script import scripts
from wfops.sweeps.model import exec_block, parse_csv, plan_runs, queue_entries
from wfops.transport.command import PodCommand

HEADER = "run_id,config,seed,overrides,notes\n"


def call(pod: Pod, command: str, agent_command: str, **data: object) -> dict:
    with keepers_in(pod.keeper_dir), PodCommand(command, load_settings(pod.write_config(), environ={})) as cmd:
        return cmd.call(agent_command, **data)


def rows_of(pod: Pod, rows: str) -> tuple:
    settings = load_settings(pod.write_config(), environ={})
    runs = parse_csv(HEADER + rows) if rows else []
    return settings, runs


def start(pod: Pod, rows: str, **plan_extra: object) -> str:
    """sweep-start as the client sends it (a fleet pod may get an empty share: no rows at all)."""
    settings, runs = rows_of(pod, rows)
    sid = "sweep-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    plan = {"sweep_id": sid, "created_at": "now", "csv": {"name": "fleet.csv"}, "filters": {}, "force": False,
            "fail_fast": False, "wandb_group": sid, "runs": plan_runs(settings, runs, {r.run_id for r in runs}),
            "queue": queue_entries(settings, runs, sid, scripts(settings, runs)), "exec": exec_block(settings),
            **plan_extra}
    got = call(pod, "sweep.start", "sweep-start", manifest=plan, csv_text=HEADER + rows,
               session=settings.sweep_tmux_session)
    return got["sweep_id"]


def add(pod: Pod, rows: str, sweep_id: str) -> dict:
    settings, runs = rows_of(pod, rows)
    return call(pod, "sweep.rebalance", "sweep-add", runs=plan_runs(settings, runs, {r.run_id for r in runs}),
                entries=queue_entries(settings, runs, sweep_id, scripts(settings, runs)),
                session=settings.sweep_tmux_session,
                exec_block=exec_block(settings), sweep_id=sweep_id)


def manifest(pod: Pod, sid: str) -> dict:
    return json.loads((pod.outputs / "_manifests" / f"{sid}.json").read_text())


def test_runs_withdrawn_from_a_running_queue_never_run_here_and_the_rest_complete(local_swept: Pod):  # noqa: F811
    pod = local_swept
    pod.configure(WF_FAKE_GPUS="1", TRAIN_NPROC="")  # one slot: the runs after `first` wait their turn
    sid = start(pod, "first,config/train_tiny.py,1,sleep=5,\n" + "".join(
        f"{r},config/train_tiny.py,{i},,\n" for i, r in enumerate(("b", "c", "d", "e"), start=2)))
    wait_until(lambda: states(status(pod)).get("first") == "running", timeout=60, interval=0.3, what="first runs")
    facts = call(pod, "sweep.status", "fleet-facts", fake_gpus=1, sweep_id=sid)
    assert facts == {"slots": 1, "sweep_id": sid, "queue_state": "running", "busy": 1, "pending": 4,
                     "pending_runs": ["b", "c", "d", "e"]}
    other = call(pod, "sweep.status", "fleet-facts", cpu_only=True, sweep_id="sweep-20000101T000000Z")
    assert (other["slots"], other["busy"], other["pending"], other["pending_runs"]) == (1, 0, 0, [])
    got = call(pod, "sweep.rebalance", "sweep-withdraw", sweep_id=sid, run_ids=["c", "first", "e", "nope"])
    assert got == {"sweep_id": sid, "withdrawn": ["c", "e"], "kept": {"first": "running", "nope": "unknown"}}
    plan = manifest(pod, sid)
    assert [r["run_id"] for r in plan["queue"]] == ["first", "b", "d"]
    assert [r["run_id"] for r in plan["runs"]] == ["first", "b", "d"]
    assert set(states(status(pod))) == {"first", "b", "d"}  # sweep.status no longer lists them
    data = wait_sweep(pod, timeout=120)
    assert states(data) == {"first": "success", "b": "success", "d": "success"}
    assert not (pod.outputs / "c").exists() and not (pod.outputs / "e").exists()
    log = (pod.outputs / "_manifests" / f"{sid}.log").read_text()
    assert "withdrawn (they run on another pod): c, e" in log
    assert not list((pod.outputs / "_manifests").glob("*.inbox/*"))  # the request and its answer are gone
    ended = call(pod, "sweep.rebalance", "sweep-withdraw", sweep_id=sid, run_ids=["b", "c"])
    assert ended == {"sweep_id": sid, "withdrawn": [], "kept": {"b": "ended", "c": "unknown"}}
    before = (pod.outputs / "_manifests" / f"{sid}.json").read_bytes()
    with pytest.raises(WfopsError) as refused:
        call(pod, "sweep.rebalance", "sweep-withdraw", sweep_id="sweep-20000101T000000Z", run_ids=["b"])
    assert refused.value.code == EXIT_CONFLICT and sid in str(refused.value)
    with pytest.raises(WfopsError) as refused:
        add(pod, "late,config/train_tiny.py,9,,\n", "sweep-20000101T000000Z")
    assert refused.value.code == EXIT_CONFLICT
    assert f"the current sweep of this pod is {sid}, not sweep-20000101T000000Z" in str(refused.value)
    assert (pod.outputs / "_manifests" / f"{sid}.json").read_bytes() == before  # nothing changed
    assert not (pod.outputs / "late").exists() and status(pod)["sweep"]["state"] == "completed"


def test_a_pod_with_an_empty_share_completes_then_runs_what_is_added_and_withdraws_what_never_started(
        local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    pod.configure(WF_FAKE_GPUS="1", TRAIN_NPROC="")
    sid = start(pod, "", fail_fast=True)
    data = wait_sweep(pod, timeout=60)
    assert (data["sweep"]["state"], data["runs"], data["totals"]) == ("completed", [], {})
    assert pod.state()["state"] == "SWEEP_COMPLETED"
    log = (pod.outputs / "_manifests" / f"{sid}.log").read_text()
    assert f"sweep {sid}: 0 run(s) queued on 1 GPU slot(s)" in log and f"sweep {sid} completed: queue finished" in log
    got = add(pod, "bad,config/train_tiny.py,1,exit=3,\nnever,config/train_tiny.py,2,,\n", sid)
    assert got["resumed"] is True and got["queued"] == 2
    data = wait_sweep(pod, timeout=120)  # fail-fast: `bad` failed, so `never` never started
    assert states(data) == {"bad": "failed", "never": "cancelled"}
    got = call(pod, "sweep.rebalance", "sweep-withdraw", sweep_id=sid, run_ids=["never", "bad"])
    assert got == {"sweep_id": sid, "withdrawn": ["never"], "kept": {"bad": "ended"}}
    assert [r["run_id"] for r in manifest(pod, sid)["queue"]] == ["bad"]
    got = add(pod, "late,config/train_tiny.py,3,,\n", sid)
    assert got["resumed"] is True
    data = wait_sweep(pod, timeout=120)
    assert states(data) == {"bad": "failed", "late": "success"}
    assert not (pod.outputs / "never").exists() and pod.state()["state"] == "SWEEP_COMPLETED"
