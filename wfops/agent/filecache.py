"""What the pod's kept agent (serve.py) remembers of the files its reads parsed, so that a repeated sweep.status of
a big sweep does not open, read and parse every run's status.json, summary.json and log tail again (issue 24).

Only the kept agent uses it. Its parent process holds what is remembered and reads no file itself; each request's
child, forked from it, sees the parent's memory as it was at the fork (`start()` turns the cache on in that child).
A child that parses a file keeps the result under the file's identity as `os.fstat` of the descriptor it read gives it
(device, inode, size, mtime and ctime in nanoseconds); a later child stats the path and uses the result where the
identity is the same. At its end a child hands what it kept to the parent (`given()`, then `take()` there),
which the next request's child inherits. A file whose identity changed in any way is read again.

Honest by construction:
- ctime is in the identity: a write, a rename over the file, a chmod or `touch -d` all set it to the current time,
  and nothing a user runs can set it back (unlike mtime).
- "racy" files are never kept: one whose mtime or ctime is less than RACY_SECS before the request started may
  still be written within the same timestamp tick, keeping size and times; such a file is read every time, until
  it has been quiet for RACY_SECS (git's index does the same for the same reason).
- the identity kept is the one of the file the read opened (fstat of its descriptor, before it read), not of what
  the path named a moment before: a folder renamed or a link retargeted in between keeps nothing wrong.
- a read that failed (an error opening or reading, even once) keeps nothing.
- values are kept as marshal bytes: every reader gets its own copy, so a caller that changes what it got cannot
  change what the next one gets.
- anything but a regular file (a pipe, a directory, a file that cannot be stat'ed) is read as before, never kept.

Outside the kept agent (a fresh agent per command, the queue, a supervisor) nothing is kept or looked up.

What it cannot see: a file changed through a shared memory map (mmap) after its first write there. Linux sets the
times at the first write to a clean page only, so later writes until the page is written back leave the identity
as it was (git's index has the same limit). Nothing of wfops writes so; a training script that writes its
metrics.jsonl through a map would show its last values as of that first write until the next one the kernel sees.

Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import marshal
import os
import stat
import time

from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

    Identity = Tuple[int, int, int, int, int]

RACY_SECS = 2.0
# entries the parent holds (~1.1 KB each with its path and identity: ~22 MB, a 6,000-run sweep with logs). Once full,
# a new entry takes the place of one no read used in the last STALE_READS reads (the least recently used first), and
# none else: a sweep too big for it has the same part of its files kept on every read (never a cache that empties
# and fills again on each one), and a sweep read after a bigger one is kept once that one is no longer read
LIMIT = 20000
STALE_READS = 2

_kept: Dict[Tuple[str, str], Tuple[Identity, bytes]] = {}  # (what, path) -> (identity, marshal of the value)
_new: Dict[Tuple[str, str], Tuple[Identity, bytes]] = {}  # what this request's child parsed and may keep
_hits: List[Tuple[str, str]] = []  # what this request's child used of _kept, told to a parent half full
_used: Dict[Tuple[str, str], int] = {}  # the parent's: the read (its number) that last used each entry
_reads = 0  # the parent's: reads ended well
_room = LIMIT  # how many new entries the next request's child may give (the parent's, inherited by the child)
_since_ns: Optional[int] = None  # the request's start (None: not a kept agent's request: nothing kept or looked up)
_opened: Any = None  # what compute() opened: None (nothing yet), its fstat, or False (more than one file)


def start() -> None:
    """In a request's child, before the request runs: use what the parent kept, note what may be kept."""
    global _since_ns
    _since_ns = time.time_ns()
    _new.clear()
    del _hits[:]


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def opened(fd: int) -> None:
    """Said by a reader (store.file_text, metrics.read_tail) right after it opened a file and before it reads it:
    the identity of the file it reads is its descriptor's, whatever the path names by then."""
    global _opened
    if _since_ns is not None and _opened is not False:  # False: a second file, or nothing may be kept
        _opened = os.fstat(fd) if _opened is None else False


def recall(what: str, path: str, st: Optional[os.stat_result], compute: Callable[[], Any]) -> Any:
    """`compute()` (what reading the file at `path` gives, `what` naming the reading: a parsed JSON document, a
    log's last values through given patterns), or its copy kept for a file of the same identity as `st` (the path's
    os.stat now; None: nothing kept is used). What compute() gives is kept under the identity of the file it opened
    (its fstat, taken before it read: a path that named another file meanwhile keeps nothing wrong), when that was
    one regular file quiet for RACY_SECS; an exception from compute() keeps nothing (a read that failed once)."""
    global _opened
    if _since_ns is None:
        return compute()
    got = _kept.get((what, path))
    if got is not None and st is not None and got[0] == identity(st):
        if len(_kept) >= LIMIT // 2:  # what is used is told once eviction draws near
            _hits.append((what, path))
        return marshal.loads(got[1])
    _opened = None if got is not None or len(_new) < _room else False  # no room: a new file is not kept
    try:
        value = compute()
        seen = _opened
    finally:
        _opened = None
    if seen and stat.S_ISREG(seen.st_mode) and max(seen.st_mtime_ns, seen.st_ctime_ns) <= _since_ns - int(
            RACY_SECS * 1e9):
        try:
            _new[(what, path)] = (identity(seen), marshal.dumps(value))
        except ValueError:  # not marshallable (no JSON value is): read every time
            pass
    return value


def read(what: str, path: str, compute: Callable[[], Any]) -> Any:
    """recall() with the path's stat taken here, only where something is kept for it; outside a kept agent's
    request, only compute()."""
    if _since_ns is None:
        return compute()
    return recall(what, path, stat_or_none(path) if (what, path) in _kept else None, compute)


def stat_or_none(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in the path, as open() would raise it
        return None


def given() -> bytes:
    """In the child, at its end: what it may keep and what it used of a full parent's, for the parent (b"": none)."""
    return marshal.dumps((_new, _hits)) if _new or _hits else b""


def take(data: bytes) -> None:
    """In the parent, after a read that ended well: what its child gave (ignored when it is not whole: a child cut
    off); then the room the next child has."""
    global _reads, _room
    _reads += 1
    try:
        new, hits = marshal.loads(data) if data else ({}, [])
    except (EOFError, ValueError, TypeError):
        new, hits = {}, []
    if not isinstance(new, dict) or not isinstance(hits, list):
        new, hits = {}, []
    for key in hits:
        if key in _kept:
            _used[key] = _reads
    stale = iter(_stale() if len(_kept) + len(new) > LIMIT else [])
    for key, entry in new.items():
        if key not in _kept and len(_kept) >= LIMIT:
            old = next(stale, None)
            while old is not None and (old not in _kept or not _stale_at(_used[old])):
                old = next(stale, None)  # replaced by this read meanwhile
            if old is None:
                continue
            del _kept[old], _used[old]
        _kept[key], _used[key] = entry, _reads
    _room = LIMIT - len(_kept) if len(_kept) < LIMIT else sum(1 for n in _used.values() if _stale_at(n))


def _stale() -> List[Tuple[str, str]]:
    """The entries no read used in the last STALE_READS reads, the least recently used first."""
    return sorted((k for k, n in _used.items() if _stale_at(n)), key=_used.__getitem__)


def _stale_at(last_used: int) -> bool:
    """Whether an entry last used by read `last_used` was used by none of the last STALE_READS reads."""
    return last_used <= _reads - STALE_READS


def size() -> int:
    return len(_kept)
