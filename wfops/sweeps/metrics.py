"""Metrics of a sweep as tables: the metric columns of sweep.status, the rows of sweep.report's results.csv,
and their order. Pure: no fabric, no invoke, no matplotlib.

A run's metrics come from the pod (wfops/agent/metrics.py). Which value is best depends on the metric: higher
for names that read like a score (accuracy, f1, reward, ...), lower for everything else (losses, perplexity,
error rates, times).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from wfops.agent.wire import TYPE_CHECKING

if TYPE_CHECKING:  # typing is not imported at run time: the lean fast path (wfops.leancache) stays light
    from typing import Any

HIGHER_IS_BETTER = ("acc", "accuracy", "f1", "auc", "bleu", "rouge", "score", "reward", "return", "precision",
                    "recall", "mfu", "throughput", "tokens_per_sec", "tok_per_sec")


Row = dict[str, "Any"]  # a run as the pod's JSON answer has it (sweep-status rows, report runs)
Summary = dict[str, "Any"]  # one metric of a run: {last, min, max, ...}


def higher_is_better(metric: str) -> bool:
    name = metric.lower()
    return any(word in name for word in HIGHER_IS_BETTER)


def best_of(metric: str, summary: Summary) -> float | None:
    """The best value of a metric summary {last, min, max, ...} by the metric's direction."""
    if not summary:
        return None
    best: float | None = summary.get("max") if higher_is_better(metric) else summary.get("min")
    return best


def metric_names(runs: Iterable[Row]) -> list[str]:
    """Every metric name, in the order first seen: runs in order, each run's metrics in the order it reported them
    (`metric_order`; the pod's JSON answer has its keys sorted)."""
    names: list[str] = []
    for run in runs:
        for name in run.get("metric_order") or list(run.get("metrics") or {}):
            if name not in names:
                names.append(name)
    return names


def choose_columns(configured: Sequence[str], found: Sequence[str], sort: str | None = None) -> list[str]:
    """METRIC_COLUMNS, or the first metric found; a --sort metric is shown too."""
    cols = list(configured) if configured else list(found[:1])
    if sort and sort not in cols:
        cols.append(sort)
    return cols


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def sort_rows(rows: list[Row], metric: str, value_of: Callable[[Row], object]) -> list[Row]:
    """Rows by `value_of(row)` for `metric`, best first (direction by its name); rows without it last, in order."""
    have = [(number, r) for r in rows if (number := _number(value_of(r))) is not None]
    rest = [r for r in rows if _number(value_of(r)) is None]
    have.sort(key=lambda pair: pair[0], reverse=higher_is_better(metric))
    return [r for _, r in have] + rest


def fmt(value: object) -> str:
    """A metric value for a table: 4 significant digits, whole numbers as they are; '' when missing."""
    number = _number(value)
    if number is None:
        return ""
    if number.is_integer() and abs(number) < 1e12:
        return str(int(number))
    return f"{number:.4g}"


def status_metrics(rows: list[Row], configured: Sequence[str], sort: str | None) -> tuple[list[str], list[Row]]:
    """(metric columns, rows in display order) for sweep.status; each row's `metrics` is {name: last value}."""
    cols = choose_columns(configured, metric_names(rows), sort)
    if sort:
        rows = sort_rows(rows, sort, lambda r: (r.get("metrics") or {}).get(sort))
    return cols, rows


def metric_cells(row: Row, cols: Sequence[str]) -> list[str]:
    """A status row's last value of each metric column ('' where the run has none)."""
    values = row.get("metrics") or {}
    return [fmt(values.get(c)) for c in cols]


def split_overrides(overrides: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in overrides or ():  # key=value, or a bare flag (--tied: `true`)
        key, eq, value = str(item).partition("=")
        out[key.lstrip("-")] = value if eq else "true"
    return out


def report_columns(runs: list[Row], configured: Sequence[str]) -> tuple[list[str], list[str]]:
    """(override keys, metrics) of a report: every override key in the order first seen; every metric, those of
    METRIC_COLUMNS first (even when no run reported them: an empty column)."""
    keys: list[str] = []
    for run in runs:
        for key in split_overrides(run.get("overrides") or []):
            if key not in keys:
                keys.append(key)
    found = metric_names(runs)
    return keys, list(configured) + [m for m in found if m not in configured]


REPORT_FIXED = ("run_id", "state", "attempts", "duration_secs", "cost_usd", "config", "seed")  # then keys, metrics


def report_header(keys: Sequence[str], metrics: Sequence[str]) -> list[str]:
    head = [*REPORT_FIXED, *keys]
    for m in metrics:
        head += [f"{m}_final", f"{m}_best"]
    return head


def report_row(run: Row, keys: Sequence[str], metrics: Sequence[str]) -> list[object]:
    overrides = split_overrides(run.get("overrides") or [])
    cost = run.get("cost_usd")  # the pod's sum over the run's attempts (wfops.agent.cost); None: price unknown
    row: list[object] = [run.get("run_id"), run.get("state"), run.get("attempts"), run.get("duration_secs"),
                         None if cost is None else round(float(cost), 6), run.get("config"), run.get("seed"),
                         *[overrides.get(k, "") for k in keys]]
    for m in metrics:
        summary = (run.get("metrics") or {}).get(m) or {}
        row += [summary.get("last"), best_of(m, summary)]
    return row


def report_sort(runs: list[Row], metric: str | None) -> list[Row]:
    """Runs by the best value of `metric` (best first); unchanged without one."""
    if not metric:
        return runs
    return sort_rows(runs, metric, lambda r: best_of(metric, ((r.get("metrics") or {}).get(metric)) or {}))
