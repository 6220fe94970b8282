"""The sweeps a pod has had: the list (sweep-list, a read), and the rows of a lost sweep kept when the next one
starts (sweeps.sweep_start). Standard library only, Python >= 3.8."""

from __future__ import annotations

import os

from . import procs, store, wire
from .registry import command
from .states import CANCELLED, PENDING, QUEUE_RUNNING, RUNNING, RUNS_RECORD, SWEEP_RECORD, UNKNOWN
from .sweeps import SWEEP_ID, count, status_rows
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from .states import Layout
    from .wire import Json


def settle_lost(pod: Layout, new_sid: str) -> None:
    """The sweep before `new_sid`, when its queue never ended (killed, or the pod rebooted: it wrote no totals):
    its rows as they are now, before the new sweep's runs rewrite their run dirs, kept as an ended queue keeps
    them (RUNS_RECORD, and its record with its state and totals), so that `sweep.status --sweep` and `sweep.list`
    show what it left instead of reading the new sweep's runs as its own. A run it never started is cancelled."""
    prev, problem = store.load_or_note(pod.sweep_file)
    sid = str((prev or {}).get("sweep_id"))
    if problem or not prev or "totals" in prev or sid == new_sid or not SWEEP_ID.fullmatch(sid):
        return
    plan, bad = store.load_plan_or_note(os.path.join(pod.manifests, "%s.json" % sid))
    if bad or not plan:
        return
    state, reason = procs.queue_liveness(prev)
    rows = status_rows(pod, plan, state)
    for row in rows:
        if row["state"] == PENDING:
            row.update(state=CANCELLED, note="not started: its queue runner was lost, and %s started after it"
                       % new_sid)
        elif row["state"] == RUNNING:  # its supervisor outlived the queue: what it does next is in its run dir
            row["note"] = "; ".join(filter(None, [row["note"], "still running when %s started" % new_sid]))
    store.write_json(os.path.join(pod.manifests, sid + RUNS_RECORD), {"runs": rows})
    store.write_json(os.path.join(pod.manifests, sid + SWEEP_RECORD),
                     dict(prev, state=state, reason=reason, totals=count(rows)))



@command(wire.SWEEP_LIST)
def sweep_list(pod: Layout) -> Json:
    """Every sweep on the pod, newest first: id, started, state, totals. Reads only."""
    try:
        names = os.listdir(pod.manifests)
    except OSError:
        names = []
    ids = sorted({n[:-len(".json")] for n in names if SWEEP_ID.fullmatch(n[:-len(".json")])}, reverse=True)
    current, _ = store.load_or_note(pod.sweep_file)
    out = []
    for sid in ids:
        live = bool(current) and current.get("sweep_id") == sid
        rec, problem = store.load_or_note(pod.sweep_file if live else os.path.join(pod.manifests, sid + SWEEP_RECORD))
        state, reason = (UNKNOWN, problem) if problem else procs.queue_liveness(rec) if rec else (UNKNOWN, "no record")
        totals = (rec or {}).get("totals")
        if live and (state == QUEUE_RUNNING or not totals):  # running, or lost: its queue wrote no totals
            plan = store.load_plan_or_note(pod.latest_manifest)[0] or {}
            totals = count(status_rows(pod, plan, state))
        out.append({"sweep_id": sid, "started_at": (rec or {}).get("started_at"), "state": state,
                    "reason": reason, "runs": (rec or {}).get("runs"), "totals": totals or {}})
    return {"sweeps": out}
