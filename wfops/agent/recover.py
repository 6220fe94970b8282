"""A managed sweep's restart on a pod that came back, or on the pod that replaced a lost one (same volume): the
sweep's queue is gone (its runner died with the pod), so `sweep-recover` starts it again with the runs that had
no end: a run that was running (now `lost`) as its next attempt in the same run dir, with `lost` as the reason
(the training script finds its checkpoints there); a run that had not started as it was queued. A run that ended
(success, failed, skipped, ...) is never started again. The client (wfops.tasks.managed) decides when.
"""

from __future__ import annotations

import time

from . import cost, procs, wire
from .registry import Refusal, command
from .rows import status_rows
from .states import EXIT_CONFLICT, EXIT_NOT_FOUND, LOST, PENDING, QUEUE_RUNNING
from .sweepedit import _current, _enqueue
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Dict, List, Optional

    from .states import Layout
    from .wire import Billing, Json, QueueEntry

RECOVER_COMMAND = "sweep.recover"  # its workflow rule (states.RULES)
EVERY: List[str] = []  # sweep-recover's default run_ids: every run of the pod's sweep (never changed)
SAME_POD: Billing = {}  # sweep-recover's default billing: the pod came back (never changed)


def restart_entries(queue: List[QueueEntry], rows: Dict[str, Json], why: str,
                    only: Optional[List[str]]) -> List[QueueEntry]:
    """The queue entries to start again (pure): a `lost` run at its next attempt with `lost: why` as the reason,
    a `pending` one as queued; every other state (an end) is left alone. `only`: these run ids (a fleet pod's)."""
    out: List[QueueEntry] = []
    for entry in queue:
        rid = entry["run_id"]
        row = rows.get(rid)
        if row is None or (only is not None and rid not in only):
            continue
        again = entry.copy()
        again.pop("_index", None)
        again.pop("rerun_why", None)
        again.pop("force", None)
        if row["state"] == LOST:
            again["attempt"] = int(row.get("attempt") or 1) + 1
            again["rerun_why"] = "lost: " + (why or "its pod was lost")
        elif row["state"] == PENDING:
            again["attempt"] = int(entry.get("attempt") or 1)
        else:
            continue
        out.append(again)
    return out


@command(wire.SWEEP_RECOVER)
def sweep_recover(pod: Layout, session: str, sweep_id: str = "", why: str = "", run_ids: List[str] = EVERY,
                  billing: Billing = SAME_POD) -> Json:
    """Start the current sweep's queue again with its runs that have no end (see the module); refused while its
    queue runs (nothing to recover). `sweep_id`: the sweep must be that one; `run_ids`: only these runs (a fleet
    pod's share; empty: every run); `billing` (a replacement pod: its price): what the sweep spent so far is
    carried into the budget (cost.handover), the new price prices the time from now on."""
    sw, plan = _current(pod)
    if sweep_id and sw["sweep_id"] != sweep_id:
        raise Refusal(EXIT_CONFLICT, "the current sweep of this pod is %s, not %s; nothing was restarted"
                      % (sw["sweep_id"], sweep_id))
    state = procs.queue_liveness(sw)[0]
    if state == QUEUE_RUNNING:
        raise Refusal(EXIT_CONFLICT, "the queue of %s is running: nothing to recover" % sw["sweep_id"])
    rows = {r["run_id"]: r for r in status_rows(pod, plan, state)}
    entries = restart_entries(plan["queue"], rows, why, list(run_ids) or None)
    if not entries:
        raise Refusal(EXIT_NOT_FOUND, "no run of %s is lost or waiting: nothing to restart" % sw["sweep_id"])
    restarted = [{"run_id": e["run_id"], "attempt": e.get("attempt", 1)} for e in entries
                 if rows[e["run_id"]]["state"] == LOST]
    queued = [e["run_id"] for e in entries if rows[e["run_id"]]["state"] == PENDING]
    carried = None
    if billing:
        last_end = cost.add_costs(pod.run_dir, list(rows.values()), sw["sweep_id"], sw.get("billing") or {})
        new = cost.handover(sw, dict(billing), last_end, time.time())
        plan["billing"] = new  # type: ignore[typeddict-item]  # a Billing: the old block's keys, updated
        carried = new.get("spent_before_usd")
    answer = _enqueue(pod, sw, plan, entries, session, RECOVER_COMMAND)
    waiting = [{"run_id": e["run_id"], "attempt": e.get("attempt", 1)} for e in entries
               if rows[e["run_id"]]["state"] == PENDING]
    return {"sweep_id": sw["sweep_id"], "restarted": restarted, "queued": queued, "pid": answer.get("pid"),
            "spent_before_usd": carried, "waiting": waiting}
