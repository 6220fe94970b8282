"""What a sweep produced, for the client: `sweep-metrics` (every run's state, attempts, arguments and metric
curves, for sweep.report: one exec, no fetch) and `sweep-wait` (until the queue ends, then the status).
Both read only.

Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import os
import time

from . import metrics, procs, store, wire
from .registry import command
from .states import QUEUE_RUNNING, SUMMARY_FILE
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, List, Optional

    from .states import Layout
    from .wire import Json

POINTS_LIMIT = 2000  # points per metric and run sent for the picture (min/max/last use them all)


def attempts(run_dir: str) -> int:
    """How many times the run was started: summary.json's `attempts` list when there is one, else 1 for a run
    that has a directory, else 0."""
    if not os.path.isdir(run_dir):
        return 0
    summ, _ = store.load_or_note(os.path.join(run_dir, SUMMARY_FILE))
    tries = (summ or {}).get("attempts")
    return len(tries) if isinstance(tries, list) and tries else 1


def _status(pod: Layout, patterns: Optional[List[str]] = None, abandon: Optional[List[str]] = None) -> Json:
    from .sweeps import sweep_status  # the one reader of the sweep's state

    return sweep_status(pod, metric_patterns=patterns, abandon=abandon)


def _specs(pod: Layout) -> Json:
    plan, _ = store.load_plan_or_note(pod.latest_manifest)
    runs = (plan or {}).get("runs")
    return {r["run_id"]: r for r in runs if isinstance(r, dict) and "run_id" in r} if isinstance(runs, list) else {}


@command(wire.SWEEP_METRICS)
def sweep_metrics(pod: Layout, patterns: List[Any], points: int = POINTS_LIMIT) -> Json:
    """The status of the latest sweep, each run with its config, seed, overrides, attempts and metrics."""
    data = _status(pod)
    specs = _specs(pod)
    compiled = metrics.compile_patterns(patterns)
    for row in data.get("runs") or []:
        d = pod.run_dir(row["run_id"])
        spec = specs.get(row["run_id"]) or {}
        source, series = metrics.run_series(d, compiled)
        row.update(config=spec.get("config"), seed=spec.get("seed"), overrides=spec.get("overrides") or [],
                   attempts=attempts(d), metrics_source=source, metrics=metrics.summary(series, points),
                   metric_order=list(series.data))  # the JSON answer sorts keys: the order the run reported
    return data


@command(wire.SWEEP_WAIT)
def sweep_wait(pod: Layout, timeout: int = 0, patterns: Optional[List[str]] = None,
               abandon: Optional[List[str]] = None) -> Json:
    """Until the sweep's queue is no longer running (woken by its exit through a pidfd), or `timeout` seconds;
    then the status of every run (`abandon`: as sweep-status's, for the current sweep, settled at the end)."""
    deadline = time.monotonic() + timeout if timeout > 0 else None
    while True:
        sw, problem = store.load_or_note(pod.sweep_file)
        if problem or procs.queue_liveness(sw)[0] != QUEUE_RUNNING:
            break
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            data = _status(pod, patterns, abandon)
            if (data.get("sweep") or {}).get("state") == QUEUE_RUNNING:  # it may have ended since the check above
                data["wait_timed_out"] = True
            return data
        step = 5.0 if left is None else min(left, 5.0)
        if sw.get("pid"):
            procs.wait_for_exit(int(sw["pid"]), step)
        else:
            time.sleep(min(step, 0.2))
    return _status(pod, patterns, abandon)
