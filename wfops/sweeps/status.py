"""The text of sweep.status and sweep.wait: one row per run (state, attempt, GPUs, exit code, duration, metric
columns, notes, why) and the totals line; a fleet's joined status gets a pod column. Pure.

tasks/sweep.py (sweep.status, sweep.list) and tasks/results.py (sweep.wait) both show it from here.
"""

from __future__ import annotations

from collections.abc import Sequence

from wfops.agent.states import CANCELLED, FAILED, LOST, PENDING, QUEUE_NONE, RUNNING, SKIPPED, SUCCESS, TIMED_OUT
from wfops.agent.wire import TYPE_CHECKING
from wfops.output import duration, quiet_note, table
from wfops.sweeps.billing import cost_line, usd
from wfops.sweeps.metrics import Row, metric_cells, status_metrics

if TYPE_CHECKING:  # typing is not imported at run time: the lean fast path (wfops.leancache) stays light
    from typing import Any

TOTALS_ORDER = (SUCCESS, FAILED, TIMED_OUT, RUNNING, PENDING, LOST, SKIPPED, CANCELLED)
ALWAYS_SHOWN = (SUCCESS, FAILED, RUNNING, PENDING, LOST)


def status_text(data: dict[str, Any], metric_columns: Sequence[str] = (), sort: str | None = None) -> str:
    """A pod's (or a fleet's joined) `sweep-status` answer as the table the user reads."""
    sw = data.get("sweep") or {}
    cols, runs = status_metrics(data.get("runs") or [], metric_columns, sort)  # metric columns, their order
    if sw.get("state") == QUEUE_NONE:
        return "no sweep has been started on this pod (sweep.start)"
    head = f"{sw.get('sweep_id')}: {sw.get('state')}" + (f" ({sw['reason']})" if sw.get("reason") else "")
    note = (data.get("workflow") or {}).get("note")
    if note:
        head += f"\nworkflow state: {note}"
    for problem in [*(data.get("problems") or []), *(d["note"] for d in (data.get("duplicates") or {}).values())]:
        head += f"\nwarning: {problem}"
    pods: tuple[str, ...] = ("pod",) if any("pod" in r for r in runs) else ()  # a fleet sweep: where each run is
    costs: tuple[str, ...] = ("cost",) if any(r.get("cost_usd") is not None for r in runs) else ()  # a known price
    rows = [(r["run_id"], *(r.get("pod") for _ in pods), r["state"], _attempt(r), r.get("gpus") or "",
             r.get("exit_code"), duration(r.get("duration_secs")), *(usd(r.get("cost_usd")) for _ in costs),
             *metric_cells(r, cols), _notes(r), _why(r)) for r in runs]
    spent = cost_line(data.get("cost"))
    return (f"{head}\n\n" + table(("run_id", *pods, "state", "attempt", "gpus", "exit", "duration", *costs, *cols,
                                   "notes", "why"), rows)
            + f"\n\n{totals_line(data.get('totals') or {})}"
            + (f" / {len(data['duplicates'])} ran twice" if data.get("duplicates") else "")
            + (f"\n{spent}" if spent else "") + _pod_history(data))


def _pod_history(data: dict[str, Any]) -> str:
    """A managed sweep's pods (sweep.wait --recover): what happened to them, which pod ran which attempt."""
    lines = data.get("pod_history") or []
    return "\n\npods (a managed sweep):\n" + "\n".join(lines) if lines else ""


def totals_line(totals: dict[str, int]) -> str:
    return " / ".join(f"{totals.get(k, 0)} {'ok' if k == SUCCESS else k}" for k in TOTALS_ORDER
                      if totals.get(k) or k in ALWAYS_SHOWN)


def _attempt(row: Row) -> str:
    """`2/3` once retries are possible or happened; `1` for a run's only attempt (as sweep.report's attempts
    column says); empty before the first."""
    n, most = row.get("attempt"), row.get("max_attempts")
    if not n:
        return ""
    return f"{n}/{most}" if most and (most > 1 or n > 1) else str(n)


def _notes(row: Row) -> str:
    notes = row.get("notes")
    return " ".join(str(notes).split())[:40] if notes else ""


def _why(row: Row) -> str:
    quiet, note = quiet_note(row.get("quiet_secs")), str(row.get("note") or "")
    return f"{quiet} {note}" if quiet and note else quiet or note
