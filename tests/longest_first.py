"""The order the xdist workers take the tests in (scripts/test.sh: `--dist load --maxschedchunk 1`, one test at a
time to whichever worker is free): the longest first, so that the suite does not end with one worker on a 60-90 s
test started last while the others have nothing left to do.

How long a test takes comes from longest_first.txt (measured with `--durations`: a CI run's call times and
per-subset runs', on the 2-core machine); a test not listed there that uses a fixture of HEAVY (a managed sweep's
rig, a fleet of pods, a checked-out pod) or is marked e2e counts as HEAVY_SECS. Every other test keeps its place
after them, in pytest's order. A stale entry costs nothing but order: refresh it from a CI run's `--durations`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

SECONDS: dict[str, float] = {}  # nodeid (without parameters) -> seconds, from longest_first.txt
for _line in (Path(__file__).with_suffix(".txt")).read_text().splitlines():
    if _line.strip() and not _line.startswith("#"):
        _secs, _nodeid = _line.split()
        SECONDS[_nodeid] = float(_secs)

HEAVY = ("rig", "fleet_rig", "fleet_ready", "fresh_fleet3", "fleet3", "checked_out")
HEAVY_SECS = 10.0


class _Item(Protocol):
    nodeid: str
    fixturenames: Sequence[str]

    def get_closest_marker(self, name: str) -> object: ...


def expected_secs(item: _Item) -> float:
    known = SECONDS.get(item.nodeid.split("[", 1)[0])
    if known is not None:
        return known
    if item.get_closest_marker("e2e") is not None or any(f in HEAVY for f in item.fixturenames):
        return HEAVY_SECS
    return 0.0


def longest_first(items: list, workers: int = 1) -> list:
    """`items` sorted by expected_secs, longest first; ties (every short test) keep pytest's order. xdist's `load`
    starts each of `workers` workers with two consecutive tests (the first it runs, the one it runs next): the first
    2 * workers are laid out so that worker i gets the (i+1)-th longest and the (2 * workers - i)-th, not the two
    longest both on the first worker."""
    ordered = [item for _, _, item in sorted((-expected_secs(it), i, it) for i, it in enumerate(items))]
    if workers > 1 and len(ordered) >= 2 * workers:
        head = ordered[:2 * workers]
        ordered[:2 * workers] = [t for i in range(workers) for t in (head[i], head[2 * workers - 1 - i])]
    return ordered
