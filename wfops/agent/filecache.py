"""What the pod's kept agent (serve.py) remembers of the files its reads parsed, so that a repeated sweep.status of
a big sweep does not open, read and parse every run's status.json, summary.json and log tail again (issue 24).

Only the kept agent uses it. Its parent process holds what is remembered and reads no file itself; each request's
child, forked from it, sees the parent's memory as it was at the fork (`start()` turns the cache on in that child).
A child that parses a file keeps the result under the file's identity as `os.stat` gives it (device, inode, size,
mtime and ctime in nanoseconds); at its end it hands what it kept to the parent (`given()`, then `take()` there),
which the next request's child inherits. A file whose identity changed in any way is read again.

Honest by construction:
- ctime is in the identity: a write, a rename over the file, a chmod or `touch -d` all set it to the current time,
  and nothing a user runs can set it back (unlike mtime).
- "racy" files are never kept: one whose mtime or ctime is less than RACY_SECS before the request started may
  still be written within the same timestamp tick, keeping size and times; such a file is read every time, until
  it has been quiet for RACY_SECS (git's index does the same for the same reason).
- the stat comes before the read: a file replaced between the two has a new identity, so what was read is never
  kept under the identity of what replaced it.
- values are kept as marshal bytes: every reader gets its own copy, so a caller that changes what it got cannot
  change what the next one gets.
- anything but a regular file (a pipe, a directory, a file that cannot be stat'ed) is read as before, never kept.

Outside the kept agent (a fresh agent per command, the queue, a supervisor) nothing is kept or looked up.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import marshal
import os
import stat
import time

from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Tuple

    Identity = Tuple[int, int, int, int, int]

RACY_SECS = 2.0
LIMIT = 50000  # entries the parent holds; past it, it starts over (one entry is a file of one run, ~0.5 KB)

_kept: Dict[Tuple[str, str], Tuple[Identity, bytes]] = {}  # (what, path) -> (identity, marshal of the value)
_new: Dict[Tuple[str, str], Tuple[Identity, bytes]] = {}  # what this request's child parsed and may keep
_since_ns: Optional[int] = None  # the request's start (None: not a kept agent's request: nothing kept or looked up)


def start() -> None:
    """In a request's child, before the request runs: use what the parent kept, note what may be kept."""
    global _since_ns
    _since_ns = time.time_ns()
    _new.clear()


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def recall(what: str, path: str, st: Optional[os.stat_result], compute: Callable[[], Any]) -> Any:
    """`compute()` (what reading the file at `path` gives, `what` naming the reading: a parsed JSON document, a
    log's last values through given patterns), or its copy kept for the same file identity. `st`: the file's
    os.stat taken BEFORE compute reads it (None: it could not be stat'ed, so nothing is kept)."""
    if _since_ns is None or st is None or not stat.S_ISREG(st.st_mode):
        return compute()
    ident = identity(st)
    got = _kept.get((what, path))
    if got is not None and got[0] == ident:
        return marshal.loads(got[1])
    value = compute()
    if max(st.st_mtime_ns, st.st_ctime_ns) <= _since_ns - int(RACY_SECS * 1e9):
        try:
            _new[(what, path)] = (ident, marshal.dumps(value))
        except ValueError:  # not marshallable (no JSON value is): read every time
            pass
    return value


def read(what: str, path: str, compute: Callable[[], Any]) -> Any:
    """recall() with the file's stat taken here; outside a kept agent's request, only compute() (no stat)."""
    return compute() if _since_ns is None else recall(what, path, stat_or_none(path), compute)


def stat_or_none(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in the path, as open() would raise it
        return None


def given() -> bytes:
    """In the child, at its end: what it may keep, for the parent (b"" when nothing is new)."""
    return marshal.dumps(_new) if _new else b""


def take(data: bytes) -> None:
    """In the parent: what a child that ended well gave; ignored when it is not whole (a child cut off)."""
    try:
        new = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return
    if not isinstance(new, dict):
        return
    if len(_kept) + len(new) > LIMIT:
        _kept.clear()
    _kept.update(new)


def size() -> int:
    return len(_kept)
