"""Metrics of a run, read on the pod: from the `metrics.jsonl` the run writes (one JSON object per line, a step
and numbers) or, when there is none, from its log lines matched by METRIC_PATTERNS (regexes with named groups;
`step` is the step, every other group a metric). Reads only.

Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import json
import math
import os
import re

from .states import LOG_FILE, STATUS_FILE, SUMMARY_FILE
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Optional, Pattern, Tuple

    from .states import Layout
    from .wire import Json

METRICS_FILE = "metrics.jsonl"
STEP_KEYS = ("step", "iter", "iteration", "it")
TAIL_BYTES = 64 * 1024  # what sweep.status reads of each run's files for the last values
# a worker's log line under torchrun --tee with a rank prefix: "<ISO time> [rankN]:..."
RANK_RE = re.compile(rb"^\S+ \[rank(\d+)\]:")


def line_rank(line: bytes) -> Optional[int]:
    """The rank prefix of a log line, or None (one process, or torchrun's own lines)."""
    m = RANK_RE.match(line)
    return int(m.group(1)) if m else None


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        out = float(value)
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def read_text(path: str, tail: int = 0) -> str:
    """The file (or its last `tail` bytes, from a line start) as text; "" when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            if tail:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - tail))
            data = fh.read()
    except OSError:
        return ""
    if tail and len(data) >= tail:
        data = data[data.find(b"\n") + 1:]
    return data.decode("utf-8", "replace")


class Series:
    """metric -> [[step, value], ...], metrics in the order first seen."""

    def __init__(self) -> None:
        self.data: Dict[str, List[List[Any]]] = {}

    def add(self, name: str, step: Any, value: Any) -> None:
        points = self.data.setdefault(name, [])
        points.append([len(points) if step is None else step, value])


def from_jsonl(text: str) -> Series:
    series = Series()
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        key = next((k for k in STEP_KEYS if _number(record.get(k)) is not None), None)
        step = _number(record[key]) if key else None
        for name, raw in record.items():
            value = _number(raw) if not isinstance(raw, str) else None
            if name != key and value is not None:
                series.add(name, step, value)
    return series


def compile_patterns(patterns: Optional[Iterable[Any]]) -> List[Pattern[str]]:
    out = []
    for p in patterns or ():
        try:
            out.append(re.compile(str(p)))
        except re.error:
            continue
    return out


def from_log(text: str, patterns: List[Any]) -> Series:
    """Metrics from log lines; lines of ranks other than 0 are ignored (they repeat rank 0's)."""
    series = Series()
    for line in text.splitlines():
        m = RANK_RE.match(line.encode("utf-8", "replace")[:64])
        if m and m.group(1) != b"0":
            continue
        for pattern in patterns:
            found = pattern.search(line)
            if not found:
                continue
            groups = found.groupdict()
            step = _number(groups.pop("step", None))
            for name, raw in groups.items():
                value = _number(raw)
                if value is not None:
                    series.add(name, step, value)
    return series


def _out_dir(run_dir: str) -> str:
    """Where the run trains (local_sync: on local disk, fresher than the synced copy)."""
    for name in (STATUS_FILE, SUMMARY_FILE):
        try:
            with open(os.path.join(run_dir, name), encoding="utf-8") as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("out_dir"), str):
            out_dir: str = record["out_dir"]
            return out_dir
    return run_dir


def run_series(run_dir: str, patterns: List[Any], tail: int = 0) -> Tuple[Any, ...]:
    """(source, Series) of one run: metrics.jsonl first, else its log through the patterns."""
    for where in (_out_dir(run_dir), run_dir):
        path = os.path.join(where, METRICS_FILE)
        if os.path.isfile(path):
            return METRICS_FILE, from_jsonl(read_text(path, tail))
    if patterns:
        return LOG_FILE, from_log(read_text(os.path.join(run_dir, LOG_FILE), tail), patterns)
    return "", Series()


def _last_from_log(text: str, patterns: List[Any]) -> Json:
    """The last value of each pattern's metrics, reading lines from the end and stopping once every pattern has
    matched (sweep.status over many runs stays cheap)."""
    found: Json = {}
    waiting = list(patterns)
    for line in reversed(text.splitlines()):
        if not waiting:
            break
        m = RANK_RE.match(line.encode("utf-8", "replace")[:64])
        if m and m.group(1) != b"0":
            continue
        for pattern in list(waiting):
            hit = pattern.search(line)
            if hit:
                waiting.remove(pattern)
                for name, raw in hit.groupdict().items():
                    value = _number(raw)
                    if name != "step" and value is not None:
                        found.setdefault(name, value)
    return found


def last_values(run_dir: str, patterns: List[Any]) -> Json:
    """{metric: last value} from the end of the run's files (what sweep.status shows)."""
    for where in (_out_dir(run_dir), run_dir):
        path = os.path.join(where, METRICS_FILE)
        if os.path.isfile(path):
            return {name: points[-1][1] for name, points in from_jsonl(read_text(path, TAIL_BYTES)).data.items()}
    if not patterns:
        return {}
    return _last_from_log(read_text(os.path.join(run_dir, LOG_FILE), TAIL_BYTES), patterns)


def add_last_values(pod: Layout, rows: List[Json], patterns: Optional[Iterable[Any]]) -> None:
    """sweep.status: each row of a run that has a directory gets `metrics`, {name: last value}."""
    compiled = compile_patterns(patterns)
    for row in rows:
        d = pod.run_dir(row["run_id"])
        if os.path.isdir(d):
            row["metrics"] = last_values(d, compiled)
            row["metric_order"] = list(row["metrics"])  # the JSON answer sorts keys: the order the run reported


def thin(points: List[Any], limit: int) -> List[Any]:
    """At most `limit` points, evenly spread, the first and the last kept."""
    if limit <= 1 or len(points) <= limit:
        return points
    stride = (len(points) - 1) / (limit - 1)
    return [points[round(i * stride)] for i in range(limit)]


def summary(series: Series, limit: int) -> Json:
    """{metric: {last, min, max, n, points}} with the points thinned to `limit` for a picture."""
    out = {}
    for name, points in series.data.items():
        values = [v for _, v in points]
        out[name] = {"last": values[-1], "min": min(values), "max": max(values), "n": len(values),
                     "points": thin(points, limit)}
    return out
