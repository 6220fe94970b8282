"""Live edits of the current sweep: sweep.add appends runs, sweep.retry requeues finished ones.

While the sweep's queue runs, the runs go to its inbox (`_manifests/<sweep>.inbox/`), which the scheduler
reads every second; the inbox lock makes "the queue is running, drop it in" and "the queue saw an empty
inbox and ended" exclusive. When the queue has ended, the sweep's queue starts again in tmux with just
these runs (same sweep id, same manifest). Either way the manifest lists every run the sweep has.
"""

from __future__ import annotations

import os

from . import addtokens, outcome, procs, runscript, store, supervisor, wire, workflow
from .registry import Refusal, command
from .rows import may_be_live, status_rows
from .states import (
    CANCELLED,
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_REMOTE,
    EXIT_USAGE,
    FAILED,
    INBOX,
    LOST,
    PENDING,
    QUEUE_LOST,
    QUEUE_RUNNING,
    RUNNING,
    STATUS_FILE,
    TERMINAL,
    TIMED_OUT,
    UNKNOWN,
    pod_path,
)
from .sweeps import (
    _check_fit,
    _check_nodes,
    _check_scripts,
    _check_workdir,
    _write_manifests,
    launch_queue,
    record_sweep,
    refuse_ending,
)
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, List, Mapping, Optional, Tuple

    from .states import Layout
    from .wire import ExecBlock, Json, Manifest, QueueEntry, RunRow, SweepQueued

NOT_OK = (FAILED, TIMED_OUT, LOST, CANCELLED)


def _current(pod: Layout) -> Tuple[Json, Manifest]:
    """(sweep record, manifest) of the current sweep; Refusal when there is none."""
    sw, problem = store.load_or_note(pod.sweep_file)
    if problem:
        raise Refusal(EXIT_REMOTE, problem + "; start a new sweep with sweep.start")
    if not sw:
        raise Refusal(EXIT_NOT_FOUND, "no sweep on this pod: start one with sweep.start")
    plan = store.load_plan(os.path.join(pod.manifests, sw["sweep_id"] + ".json"), required=("runs", "queue", "exec"))
    if not plan:
        raise Refusal(EXIT_NOT_FOUND, "the manifest of %s is gone; start a new sweep" % sw["sweep_id"])
    fault = runscript.manifest_problem(plan)  # edited on the pod since sweep-start: never start its queue again on it
    if fault:
        raise Refusal(EXIT_REMOTE, "%s is damaged (%s); start a new sweep with sweep.start" % (
            os.path.join(pod.manifests, sw["sweep_id"] + ".json"), fault))
    return sw, plan


@command(wire.SWEEP_CURRENT)
def sweep_current(pod: Layout) -> Json:
    """What sweep.add needs to build rows like the sweep's own: its id, W&B group, state."""
    sw, plan = _current(pod)
    return {"sweep_id": sw["sweep_id"], "wandb_group": plan.get("wandb_group"),
            "state": procs.queue_liveness(sw)[0]}


def _enqueue(pod: Layout, sw: Json, plan: Manifest, entries: List[QueueEntry], session: str,
             command_name: str, resume: bool = False) -> SweepQueued:
    """Hand `entries` to the running queue, or start the sweep's queue again with them. With `resume` (sweep.add,
    sweep.retry) on a queue that died (its runner lost, no totals): refused while a run of it is still ending, and
    the runs it had not started (shown pending) start again too, before `entries`, as sweep.start would resume."""
    sid = sw["sweep_id"]
    inbox = os.path.join(pod.manifests, sid + INBOX)
    with store.locked(inbox):  # the manifests dir: the scheduler takes it for its last look at the inbox
        now = store.load(pod.sweep_file) or {}
        state = procs.queue_liveness(now)[0]
        if state == QUEUE_RUNNING and now.get("stopping"):
            raise Refusal(EXIT_CONFLICT, "the queue of %s is stopping (%s): it starts no new run; run %s again once "
                          "it has ended (sweep.status), which starts its queue again" % (
                              sid, now["stopping"], command_name))
        if state == QUEUE_RUNNING:
            if isinstance(plan.get("start"), list):  # a queue started again: these are its runs too (rows.py)
                plan["start"] = plan["start"] + entries
            _write_plan(pod, plan, None)
            name = "%s-%d.json" % (store.now_precise().replace(":", ""), os.getpid())
            store.write_json(os.path.join(inbox, name), {"entries": entries})
            workflow.succeed(pod, command_name, "%s: %d run(s) queued" % (sid, len(entries)))
            return {"sweep_id": sid, "queued": len(entries), "resumed": False}
        unstarted = _unstarted(pod, now, plan, state, entries, command_name) if resume else []
        path = _write_plan(pod, plan, unstarted + entries)
        record = dict(sw, state=RUNNING, resumed_at=store.now_iso(), runs=len(unstarted + entries), session=session,
                      boot_id=procs.boot_id())
        for key in ("pid", "pid_start", "ended_at", "reason", "totals", "stopping"):
            record.pop(key, None)
        record_sweep(pod, record)
        before = workflow.read_state(pod.state_file)["state"]
        workflow.succeed(pod, command_name, "%s: %d run(s), queue started again%s" % (sid, len(entries), "; with %d "
                         "run(s) it had not started" % len(unstarted) if unstarted else ""))
        pid = launch_queue(pod, sid, path, session, before)
    out: SweepQueued = {"sweep_id": sid, "queued": len(entries), "resumed": True, "pid": pid}
    if unstarted:
        out["not_started"] = [e["run_id"] for e in unstarted]
    return out


def _unstarted(pod: Layout, sw: Json, plan: Manifest, state: str, entries: List[QueueEntry],
               command_name: str) -> List[QueueEntry]:
    """The queue entries of the runs a lost queue had not started (shown pending: "sweep.start resumes") and
    `entries` does not have; Refusal while a run of it still has its supervisor (sweeps.refuse_ending)."""
    if "totals" in sw:  # its queue ended and counted its runs: none is ending, none left waiting
        return []
    rows = status_rows(pod, plan, state)
    refuse_ending(pod, sw["sweep_id"], rows, command_name, "queued")
    if state != QUEUE_LOST:
        return []
    mine = {e["run_id"] for e in entries}
    waiting = {r["run_id"] for r in rows if r["state"] == PENDING and r["run_id"] not in mine}
    out = [e.copy() for e in plan["queue"] if e["run_id"] in waiting]
    for e in out:
        e.pop("_index", None)
        e.pop("rerun_why", None)
    return out


def _write_plan(pod: Layout, plan: Manifest, start: Optional[List[QueueEntry]]) -> str:
    if start is not None:
        plan["start"] = start
    return _write_manifests(pod, plan, None)


# what the command of a run depends on: added runs must be built as the sweep's own were
SAME_COMMAND = ("repo", "workdir", "train_script", "launcher", "arg_style", "inject_out_dir", "inject_data_dir",
                "data_dir", "nproc", "fake_gpus", "cpu_only")


def _check_same_command(plan: Manifest, ex: Mapping[str, Any]) -> None:
    mine: Mapping[str, Any] = plan["exec"]
    changed = ["%s: %r -> %r" % (k, mine[k], ex.get(k)) for k in SAME_COMMAND  # keys an older manifest lacks pass
               if k in mine and mine[k] != ex.get(k)]
    if changed:
        raise Refusal(EXIT_CONFLICT, "the config changed since %s started (%s): its runs are built the sweep's way; "
                      "start a new sweep for these runs, or put the config back" % (plan["sweep_id"],
                                                                                   "; ".join(changed)))


@command(wire.SWEEP_ADD)
def sweep_add(pod: Layout, runs: List[RunRow], entries: List[QueueEntry], session: str, exec_block: ExecBlock,
              sweep_id: str = "", token: str = "") -> SweepQueued:
    """Append runs (checked like sweep.start's) to the current sweep; a run_id it has queued already is
    refused (a row its filters left out may be added: it joins the sweep). With `sweep_id` (a fleet's pod)
    the current sweep must be that one. With `token` (a fleet's sweep.add; `sweep_id` then required): the add is
    applied only if no reader declared that token abandoned first (addtokens.py), and its fate is recorded."""
    if token and not sweep_id:
        raise Refusal(EXIT_USAGE, "sweep-add: a token needs the sweep_id it belongs to")
    with addtokens.Claim(pod, sweep_id, token):
        return _add(pod, runs, entries, session, exec_block, sweep_id)


def _add(pod: Layout, runs: List[RunRow], entries: List[QueueEntry], session: str, exec_block: ExecBlock,
         sweep_id: str) -> SweepQueued:
    sw, plan = _current(pod)
    if sweep_id and sw["sweep_id"] != sweep_id:
        raise Refusal(EXIT_CONFLICT, "the current sweep of this pod is %s, not %s; nothing was added"
                      % (sw["sweep_id"], sweep_id))
    _check_same_command(plan, dict(exec_block, **{k: pod_path(exec_block[k]) for k in ("repo", "workdir", "data_dir")
                                                  if isinstance(exec_block.get(k), str)}))
    known = {r.get("run_id"): i for i, r in enumerate(plan["runs"])}
    dupes = ["line %s: run_id %s is already in %s" % (r.get("line"), r["run_id"], sw["sweep_id"])
             for r in runs if r["run_id"] in known and plan["runs"][known[r["run_id"]]].get("selected", True)]
    if dupes:
        raise Refusal(EXIT_CONFLICT, "%d duplicate run id(s); nothing was added: %s" % (len(dupes), "; ".join(dupes)))
    _check_workdir(plan["exec"], runs)
    _check_fit(plan["exec"], entries)
    _check_nodes(plan["exec"], entries)
    _check_scripts(entries)
    for run in runs:
        if run["run_id"] in known:  # a row the filters left out: it is selected now
            plan["runs"][known[run["run_id"]]] = run
        else:
            plan["runs"].append(run)
    plan["queue"] += entries
    return _enqueue(pod, sw, plan, entries, session, "sweep.add", resume=True)


@command(wire.SWEEP_RETRY)
def sweep_retry(pod: Layout, run_ids: List[str], failed: bool = False, session: str = "") -> SweepQueued:
    """Requeue finished runs of the current sweep (one that did not end ok goes on as its next attempt in its run
    dir, resuming from its checkpoint when RESUME_WHEN matches; an ok one starts again at attempt 1, the old run
    dir going to _previous/): the named ones, or with `failed` every run that ended failed, timed_out, lost or
    cancelled."""
    sw, plan = _current(pod)
    state = procs.queue_liveness(sw)[0]
    rows = {r["run_id"]: r for r in status_rows(pod, plan, state)}
    run_ids = list(dict.fromkeys(run_ids))  # r1,r1 is r1 once
    if failed:
        run_ids = [rid for rid, r in rows.items() if r["state"] in NOT_OK]
        if not run_ids:
            raise Refusal(EXIT_NOT_FOUND, "no run of %s ended failed, timed_out, lost or cancelled" % sw["sweep_id"])
    unknown = [rid for rid in run_ids if rid not in rows]
    if unknown:
        raise Refusal(EXIT_NOT_FOUND, "not a queued run of %s: %s" % (sw["sweep_id"], ", ".join(unknown)))
    if state != QUEUE_RUNNING:  # before anything is changed: its lost runs are ended by their own supervisors
        refuse_ending(pod, sw["sweep_id"], list(rows.values()), "sweep.retry", "requeued")
    busy = [_busy(pod, sw, state, rid, rows[rid]["state"]) for rid in run_ids]
    if any(busy):
        raise Refusal(EXIT_CONFLICT, "still running or waiting to run: %s; nothing was requeued" % ", ".join(
            b for b in busy if b))
    queued = {e["run_id"]: e for e in plan["queue"]}
    entries = [queued[rid].copy() for rid in run_ids]
    for entry in entries:
        entry.pop("_index", None)  # the queue's own (wire.QueueEntry): the entry as sweep.start sent it
        entry.pop("rerun_why", None)
        entry["attempt"] = _next_attempt(pod, sw["sweep_id"], entry, rows[entry["run_id"]]["state"], plan["exec"])
        entry["force"] = True
        status = os.path.join(pod.run_dir(entry["run_id"]), STATUS_FILE)
        if os.path.isfile(status):
            store.update_json(status, {"requeued_at": store.now_iso(), "requeued_in": sw["sweep_id"]})
    return _enqueue(pod, sw, plan, entries, session, "sweep.retry", resume=True)


def _busy(pod: Layout, sw: Json, queue_state: str, rid: str, shown: str) -> str:
    """Why sweep.retry must not requeue a run (a second copy would run beside it), or "": a run shown running (its
    supervisor is alive, whatever the queue's state), one shown waiting in a running queue (pending: not started,
    requeued, or a retry in its back-off; a lost queue runs nothing), one shown unknown while it may be live
    (rows.may_be_live)."""
    if shown == RUNNING or (shown == PENDING and queue_state == QUEUE_RUNNING):
        return "%s (%s)" % (rid, shown)
    why = may_be_live(pod, sw, queue_state, rid) if shown == UNKNOWN else ""
    return "%s (unknown: %s)" % (rid, why) if why else ""


def _next_attempt(pod: Layout, sid: str, entry: QueueEntry, state: str, ex: ExecBlock) -> int:
    """A run of this sweep that did not end ok goes on as its next attempt in the same run dir (its output, and so
    its checkpoints, stay: resume.py); an ok run, a node of a multi-node run or a run of another sweep starts again
    at attempt 1 (its run dir goes to _previous/). A lost attempt whose record was never ended is ended first."""
    d = pod.run_dir(entry["run_id"])
    st = store.load_or_note(os.path.join(d, STATUS_FILE))[0] or {}
    attempt = st.get("attempt")
    if state not in NOT_OK or entry.get("node") or st.get("sweep_id") != sid or not isinstance(attempt, int):
        return 1
    if st.get("state") not in TERMINAL:  # lost: its queue or pod went away before it recorded an end
        st = supervisor.recover(d, st, float(ex.get("grace_secs", 20)))
        outcome.write_summary(d, st)
    return attempt + 1


def read_inbox(path: str) -> Tuple[List[QueueEntry], List[str]]:
    """The entries of one inbox file (_enqueue writes them) the queue can run, and a line for each entry or file it
    cannot (dropped). sweep-add checked them at its door: only a hand-made file gets a line here."""
    doc, problem = store.load_or_note(path, required=("entries",))
    entries = (doc or {}).get("entries")
    if problem or not isinstance(entries, list):
        return [], ["%s; that file was dropped" % (problem or "%s: entries must be list, not %.60r" % (path, entries))]
    out: List[QueueEntry] = []
    faults: List[str] = []
    for i, run in enumerate(entries):
        fault = wire.problem(run, wire.QUEUE_ENTRY, "entries[%d]" % i)
        if not fault and runscript.problem(run.get("script")):
            fault = "entries[%d]: %s" % (i, runscript.problem(run.get("script")))
        if fault:
            faults.append("%s: %s; that entry was dropped: %.200r" % (path, fault, run))
        else:
            out.append(run)
    return out, faults
