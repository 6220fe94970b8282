"""What a sweep costs, on the pod: each attempt's share of the pod's price, the pod time the sweep's queue held,
the part of it no run used (idle), and the budget check the queue makes before it starts anything.

sweep.start sends the pod's price (Lium's `ps` row, POD_PRICE_PER_HOUR for an SSH host or `local`; None: unknown)
and SWEEP_BUDGET_USD in the manifest's `billing`. An attempt costs price x the hours it held its slots x its share
of the pod's slots (2 GPUs of 8: 2/8; a CPU pod has one slot, or WF_FAKE_GPUS pretend ones). The queue records the
spans it ran in (sweep.json `spans`); the pod time of the sweep is their sum, and what the attempts did not use of
it is idle. The arithmetic is pure (the client uses it too); the readers read only.

Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import os
import time

from . import store
from .states import ATTEMPTS_DIR, RUNNING, STATUS_FILE
from .wire import TYPE_CHECKING

BEAT_SECS = 5.0  # the queue records that it is alive this often (a lost pod's time is counted to its last one)

if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

    from .wire import Json


def attempt_cost(price: Optional[float], secs: float, held: int, total: int) -> Optional[float]:
    """price per hour x hours x held/total slots; None when the price is unknown."""
    if price is None:
        return None
    share = float(held) / total if total > 0 else 1.0
    return float(price) * max(0.0, secs) / 3600.0 * share


def held_secs(st: Json, now: float, alive: bool = True) -> float:
    """How long an attempt held its slots: its duration once it ended (start to end), to `now` while it runs, and
    to its last output (or nothing) for one that never recorded an end and is not alive."""
    duration = st.get("duration_secs")
    if st.get("ended_at") and isinstance(duration, (int, float)) and not isinstance(duration, bool):
        return max(0.0, float(duration))
    start = store.parse_iso(st.get("started_at") or "")
    if start is None:
        return 0.0
    end = store.parse_iso(st.get("ended_at") or "")
    if end is None:
        running = alive and st.get("state") == RUNNING
        end = now if running else (store.parse_iso(st.get("last_output_at") or "") or start)
    return max(0.0, end - start)


def of_attempt(st: Json, now: float, alive: bool = True) -> Optional[float]:
    """The cost of one attempt from its status record (None: no price on record); `alive`: False when the reader
    knows its runner is gone (sweep.status shows it lost)."""
    price = st.get("price_per_hour")
    if not isinstance(price, (int, float)) or isinstance(price, bool):
        return None
    held, total = st.get("slots_held"), st.get("slots_total")
    return attempt_cost(float(price), held_secs(st, now, alive), int(held or 1), int(total or 1))


def attempt_records(run_dir: str, sweep_id: str) -> List[Json]:
    """The status records of the run's attempts in this sweep: attempts/<n>/status.json, then the current one."""
    base = os.path.join(run_dir, ATTEMPTS_DIR)
    try:
        names = sorted((n for n in os.listdir(base) if n.isdigit()), key=int)
    except OSError:
        names = []
    paths = [os.path.join(base, n, STATUS_FILE) for n in names] + [os.path.join(run_dir, STATUS_FILE)]
    found = [store.load_or_note(p)[0] for p in paths]
    return [st for st in found if st and st.get("sweep_id") == sweep_id]


def of_run(run_dir: str, sweep_id: str, now: float, alive: bool = True) -> Tuple[Optional[float], Optional[float]]:
    """(the run's cost in this sweep: the sum of its attempts', None when none has a price on record; the end of
    its last attempt that ended, epoch seconds). `alive`: whether its current attempt may still be running."""
    records = attempt_records(run_dir, sweep_id)
    known = [c for c in (of_attempt(st, now, alive or i < len(records) - 1) for i, st in enumerate(records))
             if c is not None]
    ends = [e for e in (store.parse_iso(st.get("ended_at") or "") for st in records) if e is not None]
    return (round(sum(known), 6) if known else None), (max(ends) if ends else None)


def add_costs(run_dir: Callable[[str], str], rows: List[Json], sweep_id: str, billing: Json,
              now: Optional[float] = None) -> Optional[float]:
    """Each row gets `cost_usd` (None: no price on record) when the pod's price is known; returns the latest end of
    any attempt (None: none, or no price)."""
    if billing.get("price_per_hour") is None:
        return None
    now = time.time() if now is None else now
    last: Optional[float] = None
    for row in rows:
        row["cost_usd"], end = of_run(run_dir(row["run_id"]), sweep_id, now, alive=row.get("state") == RUNNING)
        if end is not None and (last is None or end > last):
            last = end
    return last


def span_secs(spans: Iterable[Sequence[Any]], now: float) -> float:
    """The seconds of the queue's spans [[start, end or None], ...] (an open one runs to `now`)."""
    total = 0.0
    for span in spans:
        start, end = float(span[0]), (float(span[1]) if span[1] is not None else now)
        total += max(0.0, end - start)
    return total


def spend(billing: Json, spans: Iterable[Sequence[Any]], now: float) -> Optional[float]:
    """What the sweep has spent on this pod so far: its pod time at the pod's price, plus what earlier pods of it
    spent (billing.spent_before_usd, from a managed sweep that replaced a pod); None when the price is unknown."""
    price = billing.get("price_per_hour")
    if price is None:
        return None
    return float(billing.get("spent_before_usd") or 0) + float(price) * span_secs(spans, now) / 3600.0


def over_budget(billing: Json, spans: Iterable[Sequence[Any]], now: float) -> str:
    """Why no run or attempt may start any more ("" while the budget allows it, or there is none)."""
    budget = billing.get("budget_usd")
    spent = spend(billing, spans, now) if budget is not None else None
    if budget is None or spent is None or spent < float(budget):
        return ""
    return "budget reached: $%.2f spent of SWEEP_BUDGET_USD=%s; no run or attempt starts after it" % (
        spent, _number(budget))


def _number(x: Any) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def closed_spans(sw: Json, queue_running: bool, last_end: Optional[float]) -> List[List[Any]]:
    """The record's spans; an open one of a queue that is gone ends where it left it: its last heartbeat
    (`alive_at`) or its last attempt's end, whichever is later."""
    spans = [list(x) for x in sw.get("spans") or [] if isinstance(x, list) and len(x) == 2]
    if spans and spans[-1][1] is None and not queue_running:
        spans[-1][1] = max(float(spans[-1][0]), last_end or 0.0, _alive_at(sw))
    return spans


def _alive_at(sw: Json) -> float:
    beat = sw.get("alive_at")
    return float(beat) if isinstance(beat, (int, float)) and not isinstance(beat, bool) else 0.0


def handover(sw: Json, billing: Json, last_end: Optional[float], now: float) -> Json:
    """A managed sweep moved this pod's share to a replacement (same volume, so the same record): the billing block
    the replacement's queue runs under. What the sweep spent so far (the earlier pods' spend and the lost pod's
    spans at its price) becomes `spent_before_usd`, so SWEEP_BUDGET_USD counts it; the new pod's price
    (`billing.price_per_hour`, None: the old one) prices the time from now on. Updates `sw` (pure otherwise): its
    spans start again, the lost pod's part goes to `earlier` (what sweep.status shows as earlier pods)."""
    old: Json = dict(sw.get("billing") or {})
    spans = closed_spans(sw, False, last_end)
    secs = span_secs(spans, now)
    price = old.get("price_per_hour")
    usd = attempt_cost(float(price), secs, 1, 1) if price is not None else None
    sw["earlier"] = list(sw.get("earlier") or []) + [{"pod": old.get("pod"), "price_per_hour": price,
                                                        "pod_secs": round(secs, 1),
                                                        "usd": None if usd is None else round(usd, 6)}]
    sw["spans"] = []
    sw.pop("alive_at", None)
    new = dict(old)
    new.update({k: v for k, v in billing.items() if k == "price_per_hour" and v is not None})
    new["spent_before_usd"] = round(float(old.get("spent_before_usd") or 0) + (usd or 0.0), 6)
    sw["billing"] = new
    return new


def sweep_cost(sw: Json, rows: List[Json], queue_running: bool, last_end: Optional[float], now: float) -> Json:
    """The sweep's cost on this pod: runs (the sum of the rows' cost_usd), pod time and idle (what no run used)."""
    billing: Json = sw.get("billing") or {}
    price = billing.get("price_per_hour")
    secs = span_secs(closed_spans(sw, queue_running, last_end), now)
    earlier = float(billing.get("spent_before_usd") or 0)
    out: Json = {"pod": billing.get("pod"), "price_per_hour": price, "budget_usd": billing.get("budget_usd"),
                 "pod_secs": round(secs, 1), "runs_usd": None, "pod_usd": None, "idle_usd": None,
                 "earlier_usd": round(earlier, 6) if sw.get("earlier") else None, "earlier": sw.get("earlier") or []}
    if price is not None:  # pod_usd: the sweep's whole pod time, its earlier (lost, replaced) pods' included
        pod_usd = (attempt_cost(float(price), secs, 1, 1) or 0.0) + earlier
        run_usd = sum(r["cost_usd"] for r in rows if isinstance(r.get("cost_usd"), (int, float)))
        out.update(runs_usd=round(run_usd, 6), pod_usd=round(pod_usd, 6),
                   idle_usd=round(max(0.0, pod_usd - run_usd), 6))
    return out


def status_cost(run_dir: Callable[[str], str], sw: Json, rows: List[Json], queue_running: bool, live: bool) -> Json:
    """sweep-status: each run's cost_usd (the frozen table of an older sweep has them already) and the sweep's cost
    on this pod."""
    now = time.time()
    last_end = add_costs(run_dir, rows, str(sw.get("sweep_id")), sw.get("billing") or {}, now) if live else None
    return sweep_cost(sw, rows, queue_running, last_end, now)


class Meter:
    """The queue's side: the spans it ran in (sweep.json `spans`) and SWEEP_BUDGET_USD against the spend so far."""

    def __init__(self, billing: Json) -> None:
        self.billing = billing
        self.spans: List[List[Any]] = []
        self.hit = False  # the budget stopped the queue
        self.beat_at = 0.0  # the last heartbeat (`alive_at` in sweep.json)
        self.record = ""  # sweep.json, where the heartbeat goes

    def open(self, record: Json, log_path: str, record_path: str = "") -> List[List[Any]]:
        """The spans of the sweep's record and a new one from now. A span left open by a queue that went away ends
        at its last heartbeat or its log's last line, whichever is later. `record_path`: sweep.json, where
        over_budget() records the heartbeat."""
        self.record = record_path
        self.spans = [list(x) for x in record.get("spans") or [] if isinstance(x, list) and len(x) == 2]
        if self.spans and self.spans[-1][1] is None:
            try:
                left = round(os.path.getmtime(log_path), 3)
            except OSError:
                left = 0.0
            self.spans[-1][1] = max(float(self.spans[-1][0]), left, _alive_at(record))
        self.spans.append([round(time.time(), 3), None])
        return self.spans

    def beat(self, now: float) -> Optional[float]:
        """The heartbeat to record (`alive_at`: where a span of a queue that dies with its pod ends, so the budget
        counts a lost pod's time), every BEAT_SECS; None when it is not due."""
        if now - self.beat_at < BEAT_SECS:
            return None
        self.beat_at = now
        return round(now, 3)

    def close(self) -> List[List[Any]]:
        if self.spans and self.spans[-1][1] is None:
            self.spans[-1][1] = round(time.time(), 3)
        return self.spans

    def over_budget(self) -> str:
        """Why no run or attempt may start any more ("" while the budget allows it, or there is none). The queue
        asks every round until it stops: the heartbeat is recorded here too, when due."""
        beat = self.beat(time.time()) if self.record else None
        if beat is not None:  # where the span ends if the pod dies with this queue (a lost pod's spend counts)
            store.update_json(self.record, {"alive_at": beat})
        if self.billing.get("budget_usd") is None:
            return ""
        why = over_budget(self.billing, self.spans, time.time())
        self.hit = self.hit or bool(why)
        return why
