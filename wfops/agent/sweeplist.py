"""The sweeps a pod has had: the list (sweep-list, a read). Standard library only, Python >= 3.8."""

from __future__ import annotations

import os

from . import procs, store, wire
from .registry import command
from .rows import count, status_rows
from .states import QUEUE_RUNNING, SWEEP_RECORD, UNKNOWN
from .sweeps import SWEEP_ID
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from .states import Layout
    from .wire import Json


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
