"""Metrics of a run, read on the pod: from the `metrics.jsonl` the run writes (one JSON object per line, a step
and numbers) or, when there is none, from its log lines matched by METRIC_PATTERNS (regexes with named groups;
`step` is the step, every other group a metric) and the named presets of METRIC_PRESETS (presets.py). Reads only.

Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import json
import os
import re
import stat

from . import filecache
from .presets import JSONL_STEP_KEYS, Extractor, record_points
from .states import LOG_FILE, STATUS_FILE, SUMMARY_FILE, child, out_dir_of
from .store import read_rest
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Optional, Tuple

    from .states import Layout
    from .wire import Json

METRICS_FILE = "metrics.jsonl"
TAIL_BYTES = 64 * 1024  # what sweep.status reads of each run's files for the last values
# a worker's log line under torchrun --tee with a rank prefix: "<ISO time> [rankN]:..."
RANK_RE = re.compile(rb"^\S+ \[rank(\d+)\]:")


def line_rank(line: bytes) -> Optional[int]:
    """The rank prefix of a log line, or None (one process, or torchrun's own lines)."""
    m = RANK_RE.match(line)
    return int(m.group(1)) if m else None


def read_text(path: str, tail: int = 0) -> str:
    """The file (or its last `tail` bytes, from a line start) as text; "" when it cannot be read."""
    try:
        return read_tail(path, tail)
    except OSError:
        return ""


def read_tail(path: str, tail: int = 0) -> str:
    """read_text's reading, whose failure raises OSError (what the kept agent keeps is only what was read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # os calls: most runs of a big sweep.status have no log (issue 24)
    try:
        filecache.opened(fd)
        if tail:  # the end by seeking: a pipe cannot seek (ESPIPE: ""), where reading it would wait for its writer
            size = os.lseek(fd, 0, os.SEEK_END)
            start = max(0, size - tail)
            os.lseek(fd, start, os.SEEK_SET)
        else:
            size, start = os.fstat(fd).st_size, 0
        data = read_rest(fd, size - start + 1)
    finally:
        os.close(fd)
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
        if isinstance(record, dict):
            for name, step, value in record_points(record, JSONL_STEP_KEYS):
                series.add(name, step, value)
    return series


def compile_patterns(patterns: Optional[Iterable[Any]]) -> Extractor:
    """METRIC_PATTERNS (regexes; one that does not compile is left out) and the presets named `@name` among them."""
    return Extractor(patterns or ())


def _own_line(line: str) -> bool:
    """Lines of ranks other than 0 are not read (they repeat rank 0's)."""
    m = RANK_RE.match(line.encode("utf-8", "replace")[:64])
    return not m or m.group(1) == b"0"


def from_log(text: str, patterns: Extractor) -> Series:
    """Metrics from log lines; lines of ranks other than 0 are ignored (they repeat rank 0's)."""
    series = Series()
    for line in text.splitlines():
        if _own_line(line):
            for name, step, value in patterns.points(line):
                series.add(name, step, value)
    return series


def _out_dir(run_dir: str) -> str:
    records = []
    for name in (STATUS_FILE, SUMMARY_FILE):
        try:
            with open(os.path.join(run_dir, name), encoding="utf-8") as fh:
                records.append(json.load(fh))
        except (OSError, ValueError):
            continue
    return out_dir_of(run_dir, records)


def run_series(run_dir: str, patterns: Extractor, tail: int = 0) -> Tuple[Any, ...]:
    """(source, Series) of one run: metrics.jsonl first, else its log through the patterns."""
    for where in (_out_dir(run_dir), run_dir):
        path = os.path.join(where, METRICS_FILE)
        if os.path.isfile(path):
            return METRICS_FILE, from_jsonl(read_text(path, tail))
    if patterns:
        return LOG_FILE, from_log(read_text(os.path.join(run_dir, LOG_FILE), tail), patterns)
    return "", Series()


def _last_from_log(text: str, patterns: Extractor) -> Json:
    """The last value of each metric, reading lines from the end (the metrics in the order found so)."""
    found: Json = {}
    for line in reversed(text.splitlines()):
        if _own_line(line):
            for name, _, value in patterns.points(line):
                found.setdefault(name, value)
    return found


def last_values(run_dir: str, patterns: Extractor, out_dir: Optional[str] = None) -> Json:
    """{metric: last value} from the end of the run's files (what sweep.status shows); `out_dir`: where the run
    trains, when its status/summary were read already (rows.status_rows)."""
    first = out_dir if out_dir is not None else _out_dir(run_dir)
    jsonl, st = _metrics_file((first, run_dir) if first != run_dir else (run_dir,))  # a file is looked at once
    try:  # the kept agent reads a file unchanged since only once (filecache.py); a read that failed keeps nothing
        if st is not None:
            values: Json = filecache.recall("jsonl", jsonl, st, lambda: _last_from_jsonl(read_tail(jsonl, TAIL_BYTES)))
            return values
        if not patterns:
            return {}
        log = child(run_dir, LOG_FILE)
        found: Json = filecache.read("log " + patterns.key, log, lambda: _last_from_log(read_tail(log, TAIL_BYTES),
                                                                                         patterns))
        return found
    except OSError:  # no log (most runs of a big sweep before they start), or one that cannot be read
        return {}


def _metrics_file(where: Tuple[str, ...]) -> Tuple[str, Optional[os.stat_result]]:
    """The first metrics.jsonl of `where` that is a file (following links, as os.path.isfile) and its stat."""
    for folder in where:
        path = child(folder, METRICS_FILE)
        st = filecache.stat_or_none(path)
        if st is not None and stat.S_ISREG(st.st_mode):
            return path, st
    return "", None


def _last_from_jsonl(text: str) -> Json:
    return {name: points[-1][1] for name, points in from_jsonl(text).data.items()}


def add_last_values(pod: Layout, rows: List[Json], patterns: Optional[Iterable[Any]],
                    out_dirs: Optional[Dict[str, Tuple[str, str, bool]]] = None) -> None:
    """sweep.status: each row of a run that has a directory gets `metrics`, {name: last value}. `out_dirs`: run
    id -> (run dir, where it trains, whether the run dir is known to be a directory), from the status/summary its
    row was made of (not read or looked at a second time: rows.run_row)."""
    compiled = compile_patterns(patterns)
    known = out_dirs or {}
    for row in rows:
        d, out_dir, is_dir = known.get(row["run_id"]) or (pod.run_dir(row["run_id"]), None, False)
        if is_dir or os.path.isdir(d):
            row["metrics"] = last_values(d, compiled, out_dir)
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
