"""A sweep's run rows on the pod: one row per selected run of its manifest (state, exit code, duration, GPUs,
attempt and why), their totals, and the rows a sweep keeps once its queue is over (`<sweep>.runs.json`, each
row with its cost). Read by sweep.status, sweep.list, sweep.add / retry, sweep-recover, fleet-facts, the
queue's end (scheduler.py) and sweep-start's settle_lost (sweeps.py). Standard library only, Python >= 3.8."""

from __future__ import annotations

import os
import time

from . import cost, outcome, procs, runnotes, store
from .states import (
    CANCELLED,
    PENDING,
    QUEUE_ENDED,
    QUEUE_LOST,
    QUEUE_RUNNING,
    QUEUE_STOPPED,
    RUNNING,
    RUNS_RECORD,
    SKIPPED,
    STATUS_FILE,
    SUCCESS,
    SUMMARY_FILE,
    TERMINAL,
    UNKNOWN,
    child,
    out_dir_of,
)
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

    from .states import Layout
    from .wire import Json, RunRow


def _current_row(row: Json, st: Json, summ: Optional[Json], sweep_id: str, cb: str, queue_state: str) -> None:
    state, reason = procs.liveness(st, cb)
    src = summ if (summ and summ.get("sweep_id") == sweep_id) else st
    row.update(state=state, exit_code=src.get("exit_code"), duration_secs=src.get("duration_secs"),
               note=(summ or {}).get("failure_class") or reason or st.get("rerun_why") or "",
               gpus=st.get("gpus"), attempt=st.get("attempt"), max_attempts=st.get("max_attempts"))
    if summ and summ.get("failure_evidence") and state not in (SUCCESS, RUNNING):
        row["note"] = "%s: %s" % (summ["failure_class"], summ["failure_evidence"])
    if st.get("resume"):  # resume.py: "resumed from ckpt.pt (step 40)" or "no checkpoint: from scratch"
        row["resume"] = st["resume"]
        row["note"] = "; ".join(x for x in (st["resume"], row["note"]) if x)
    more = runnotes.status_note(summ) if summ and summ.get("sweep_id") == sweep_id and state != RUNNING else ""
    row["note"] = "; ".join(filter(None, [row["note"], more]))  # runnotes: checkout writes, the CPU hint
    if state == RUNNING and st.get("started_at"):
        now = time.time()
        started = store.parse_iso(st["started_at"])
        row["duration_secs"] = round(now - started, 1) if started else None
        row["quiet_secs"] = store.quiet_secs(st, now)
    elif st.get("requeued_at") and state in TERMINAL:
        if queue_state == QUEUE_RUNNING:
            row.update(state=PENDING, note="requeued by sweep.retry (it ended %s)" % state)
        else:
            row["note"] += "; requeued, never started (the sweep %s first)" % queue_state
    elif st.get("retry_at") and state in TERMINAL and state != SUCCESS:
        if queue_state == QUEUE_RUNNING:
            row.update(state=PENDING, note="retry %s at %s (%s)" % (st.get("retry"), st["retry_at"], row["note"]))
        else:
            row["note"] += "; retry %s never started (the sweep %s first)" % (st.get("retry"), queue_state)


def _not_started_row(row: Json, run: RunRow, summ: Optional[Json], queue_state: str, force: bool,
                     requeued: bool = False) -> None:
    """A run this sweep has not started. `requeued`: sweep.retry requeued it (forced) in this sweep, while its
    status.json is still another sweep's: it is not skipped, it waits."""
    skip, why = outcome.skip_reason(run, summ, force or requeued)  # the scheduler's rule: the table says what it does
    summ = summ or {}
    if requeued:
        why = "requeued by sweep.retry" + (" (%s)" % why if why else "")
    if skip:
        row.update(state=SKIPPED, exit_code=summ.get("exit_code"), duration_secs=summ.get("duration_secs"),
                   note=why)
    elif queue_state in QUEUE_ENDED:
        row.update(state=CANCELLED, note="not started: the sweep %s first" % (
            "was stopped" if queue_state == QUEUE_STOPPED else "ended"))
    elif queue_state == QUEUE_LOST:
        row.update(state=PENDING, note="not started; the queue runner is gone (sweep.start resumes)")
    else:
        row["state"] = PENDING
        row["note"] = ("" if requeued else "will rerun: ") + why if why else (
            "previous attempt {}".format(summ.get("state")) if summ else "")


def run_row(pod: Layout, run: RunRow, sweep_id: str, queue_state: str, force: bool, cb: str,
            out_dirs: Dict[str, Tuple[str, str, bool]]) -> Json:
    """One run's row: its honest state, exit code, duration, GPUs, attempt and why; `unknown` for a damaged file.
    `out_dirs` gets run id -> (run dir, where it trains, whether it is known to be a directory): add_last_values."""
    d = pod.run_dir(run["run_id"])
    row = {"run_id": run["run_id"], "notes": run.get("notes", ""), "exit_code": None, "duration_secs": None, "note": ""}
    st, bad_st = store.load_or_note(child(d, STATUS_FILE))
    summ, bad_summ = store.load_or_note(child(d, SUMMARY_FILE))
    out_dirs[run["run_id"]] = (d, out_dir_of(d, (st, summ)), st is not None or summ is not None)  # a file read: a dir
    gone = "" if st or bad_st or not summ or summ.get("sweep_id") != sweep_id else (
        "%s is missing" % child(d, STATUS_FILE))  # removed by hand: this sweep's summary still has the run's end
    if (bad_st or gone) and summ and summ.get("state") in TERMINAL:  # the summary is written last: it has the end
        st = dict(summ)
    if bad_summ or (bad_st and not st):
        row.update(state=UNKNOWN, note=bad_st or bad_summ)
    elif st and st.get("sweep_id") == sweep_id:
        _current_row(row, st, summ, sweep_id, cb, queue_state)
    else:
        requeued = bool(st and st.get("requeued_at") and st.get("requeued_in") == sweep_id)
        _not_started_row(row, run, summ, queue_state, force, requeued)
    if (bad_st or gone) and st:
        row["note"] = "; ".join(filter(None, ((bad_st or gone) + "; its end is from summary.json", row["note"])))
    return row


def status_rows(pod: Layout, plan: Mapping[str, Any], state: str,
                out_dirs: Optional[Dict[str, Tuple[str, str, bool]]] = None) -> List[Json]:
    """One row per selected run of a manifest (read as it is: a damaged one shows what it still has)."""
    cb, force, out_dirs = procs.boot_id(), bool(plan.get("force")), {} if out_dirs is None else out_dirs
    runs: List[Any] = plan["runs"] if isinstance(plan.get("runs"), list) else []
    sid: Any = plan.get("sweep_id")
    rows = [run_row(pod, run, sid, state, force, cb, out_dirs) for run in runs if _selected_row(run)]
    if state == QUEUE_RUNNING and isinstance(plan.get("start"), list):
        _not_in_its_queue(rows, plan["start"])
    return rows


def _not_in_its_queue(rows: List[Json], start: List[Any]) -> None:
    """A queue started again after its end (sweep.add / sweep.retry; sweepedit._enqueue) runs the runs it was started
    with and those added since (the manifest's "start"): a run the sweep's earlier queue never started, and this
    one does not have, is not waiting for it."""
    mine = {e.get("run_id") for e in start if isinstance(e, dict)}
    for row in rows:
        if row["state"] == PENDING and row["run_id"] not in mine:
            row.update(state=CANCELLED, note="not started: the sweep's queue ended before it ran, and the queue "
                       "running now does not run it (sweep.retry %s queues it)" % row["run_id"])


def _selected_row(run: Any) -> bool:
    return isinstance(run, dict) and bool(run.get("selected", True)) and isinstance(run.get("run_id"), str)


def count(rows: List[Json]) -> Dict[str, int]:
    states = [row["state"] for row in rows]
    return {state: states.count(state) for state in dict.fromkeys(states)}  # in the order first seen


def keep_rows(pod: Layout, sid: str, rows: List[Json], billing: Json) -> Optional[float]:
    """Each row's cost added (cost.add_costs) and the rows kept in _manifests/<sweep>.runs.json: what
    `sweep.status --sweep` shows once later sweeps reran some. Returns add_costs' latest end of any attempt."""
    last_end = cost.add_costs(pod.run_dir, rows, sid, billing)
    store.write_json(os.path.join(pod.manifests, sid + RUNS_RECORD), {"runs": rows})
    return last_end


def sweep_totals(pod: Layout, sid: str, final: str, billing: Json, log: Callable[[str], None]) -> Dict[str, int]:
    """The sweep's rows over all its runs (a resumed queue ran only some), as sweep.status shows them, kept in
    _manifests/<sweep>.runs.json (what `sweep.status --sweep` shows once later sweeps reran some), and their
    totals: the queue's end (scheduler.py)."""
    plan, problem = store.load_plan_or_note(os.path.join(pod.manifests, sid + ".json"))
    if problem or not plan:
        log("cannot count the sweep's totals: %s" % (problem or "its manifest is gone"))
        return {}
    rows = status_rows(pod, plan, final)
    keep_rows(pod, sid, rows, billing)
    return count(rows)


def may_be_live(pod: Layout, sw: Json, queue_state: str, run_id: str) -> str:
    """Why a run shown `unknown` (a damaged status.json or summary.json) may still run or wait to, or "" when
    nothing of it can: sweep.retry refuses it then (a second copy would start beside it). Its status.json read:
    its supervisor (pid and start time, this boot) is alive, or the running queue waits to start it again
    (requeued_at, retry_at). Its status.json damaged (no supervisor to check): the queue's own record of what it
    runs, its log (_manifests/<sweep>.log), shows the run's last start with no end after it (a running queue runs
    it; after a lost queue, its supervisor may still be ending it), unless the pod rebooted since the queue ran."""
    st, bad = store.load_or_note(child(pod.run_dir(run_id), STATUS_FILE))
    if st and not bad:
        if procs.liveness(st)[0] not in TERMINAL + (UNKNOWN,):
            return "its supervisor (pid %s) is alive" % st.get("pid")
        waits = queue_state == QUEUE_RUNNING and (st.get("requeued_at") or st.get("retry_at"))
        return "it waits in the running queue" if waits else ""
    if sw.get("boot_id") and sw["boot_id"] != procs.boot_id():
        return ""  # the pod rebooted since its queue ran: nothing of that boot runs
    path, started = os.path.join(pod.manifests, "%s.log" % sw.get("sweep_id")), False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                text = line.split(" ", 1)[-1]
                if text.startswith("start %s (" % run_id) or text.startswith("end %s: " % run_id):
                    started = text.startswith("start")
    except OSError as exc:
        return "its status.json is damaged and the queue's log %s cannot be read (%s)" % (path, exc.strerror or exc)
    return "its status.json is damaged and the queue's log shows it started, with no end" if started else ""
