"""How much slower this machine is right now than the quiet 2-core machine the tests' deadlines were written for,
so that a deadline means "something is wrong", not "the machine is busy".

`factor()` is WF_TEST_SLOWNESS when set (a number >= 1; `1` keeps every deadline as written), else measured: the
larger of the 1-minute load average per core and the time this machine takes to start a bare Python
(`python -I -S -c pass`, median of 3) against that quiet machine's (REFERENCE_SPAWN_SECS), between 1 and
MAX_FACTOR. It is measured again at most every REMEASURE_SECS (the load moves during a run of the suite).
`scaled(secs)` is a deadline times the factor. tests/conftest.py's `wait_until`, `Pod.wf` and tests/fleet.py's
`Fleet.wf` scale their deadlines with it; a test that times something on purpose (an "at once" bound) does not.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time

REFERENCE_SPAWN_SECS = 0.015  # `python -I -S -c pass` on the quiet 2-core machine: 10-15 ms
MAX_FACTOR = 10.0
REMEASURE_SECS = 30.0

_lock = threading.Lock()
_last: tuple[float, float] | None = None  # (when measured, factor)


def _spawn_secs() -> float:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure() -> float:
    """The factor measured now (no cache, no WF_TEST_SLOWNESS)."""
    per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    return min(MAX_FACTOR, max(1.0, per_core, _spawn_secs() / REFERENCE_SPAWN_SECS))


def factor() -> float:
    global _last
    forced = os.environ.get("WF_TEST_SLOWNESS", "").strip()
    if forced:
        try:
            return max(1.0, float(forced))
        except ValueError:
            raise SystemExit(f"WF_TEST_SLOWNESS={forced!r} is not a number") from None
    with _lock:
        now = time.monotonic()
        if _last is None or now - _last[0] > REMEASURE_SECS:
            _last = (now, measure())
        return _last[1]


def scaled(secs: float) -> float:
    """A deadline of `secs` seconds on the quiet machine, on this one now."""
    return secs * factor()
