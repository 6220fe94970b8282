"""Files on the pod: atomic JSON writes, directory locks, and the one validating JSON loader.

Every JSON file is written whole (temp file in the same directory, fsync, rename) so a reader never sees a
torn file. Every JSON read goes through `load`: a file that does not parse, or has the wrong shape, is
reported as damaged (`Damaged`), never silently treated as missing or replaced.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
from datetime import datetime, timezone

from . import filecache
from .states import LOCK_FILE, TERMINAL
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Tuple

    from .wire import Json


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def iso_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def quiet_secs(record: Json, now: float) -> Optional[float]:
    """Seconds since a running run's or task's last output (or its start): what "quiet for" shows."""
    last = parse_iso(record.get("last_output_at") or record.get("started_at"))
    return round(now - last, 1) if last else None


def now_precise() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def parse_iso(text: Any) -> Optional[float]:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


READ_CHUNK = 1 << 16


class Damaged(Exception):
    """A file that exists but cannot be used: `path` and a one-line `why`."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path} is damaged ({why})")
        self.path, self.why = path, why


def read_rest(fd: int, first: int) -> bytes:
    """What is left to read of `fd`, to its end: a first read of `first` bytes (a size known: one read), then chunks."""
    chunks = [os.read(fd, first)]
    while chunks[-1]:
        chunks.append(os.read(fd, READ_CHUNK))
    return chunks[0] if len(chunks) == 2 else b"".join(chunks)


def file_text(path: str) -> str:
    """The whole file as `open(path, encoding="utf-8").read()` gives it (strict UTF-8, universal newlines, the same
    exceptions), without the text and buffer layers: sweep.status reads two small files a run (issue 24)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        filecache.opened(fd)  # the kept agent keeps what it parsed under this file's identity
        data = read_rest(fd, READ_CHUNK)
    finally:
        os.close(fd)
    text = data.decode("utf-8")
    if "\r" in text:  # what text mode's universal newlines make of it (a damaged file's note counts chars)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


_NO_FILE = object()  # _parsed's answer for a file that is not there (no JSON document is it; never kept)


def _parsed(path: str) -> Any:
    """The JSON document at `path`, _NO_FILE when there is none; Damaged when unreadable or not JSON."""
    try:
        text = file_text(path)
    except FileNotFoundError:
        return _NO_FILE
    except (OSError, UnicodeDecodeError) as exc:
        raise Damaged(path, "unreadable: %s" % (getattr(exc, "strerror", None) or exc)) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise Damaged(path, "not valid JSON: %s" % exc) from None


def load(path: str, required: Tuple[str, ...] = (), kind: Any = dict) -> Any:
    """The JSON document at `path`, or None when there is no file. Raises Damaged when it does not parse,
    is not a `kind`, or lacks a `required` key."""
    data = filecache.read("json", path, lambda: _parsed(path))  # the kept agent: a file unchanged is not read again
    if data is _NO_FILE:
        return None
    if not isinstance(data, kind):
        raise Damaged(path, "expected a JSON %s" % ("object" if kind is dict else kind.__name__))
    missing = [k for k in required if k not in data]
    if missing:
        raise Damaged(path, "no %s" % ", ".join(missing))
    return data


def plan_problem(plan: Json) -> str:
    """The shape a manifest read back from the pod's disk must have for its readers (status, fetch, logs, edits):
    "runs", "queue" and "start" lists of objects with a string run_id; "exec", "filters", "csv" and "pod" objects.
    "" when it holds. (A queue checks its manifest in full before it starts: runscript.manifest_problem.)"""
    for key in ("runs", "queue", "start"):
        items = plan.get(key, [])
        if not isinstance(items, list):
            return "%s must be list, not %s" % (key, _shown(items))
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("run_id"), str):
                return "%s[%d] must be an object with a string run_id" % (key, i)
    for key in ("exec", "filters", "csv", "pod"):
        if key in plan and not isinstance(plan[key], dict):
            return "%s must be dict, not %s" % (key, _shown(plan[key]))
    return ""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_plan(path: str, required: Tuple[str, ...] = ()) -> Any:
    """A sweep manifest as `load` reads it, also Damaged when its shape is not one its readers can use
    (wire.plan_problem: `{"runs": 5}` is damaged, not a TypeError)."""
    data = load(path, required)
    fault = plan_problem(data) if data is not None else ""
    if fault:
        raise Damaged(path, fault)
    return data


def load_plan_or_note(path: str) -> Tuple[Any, str]:
    """(manifest or None, problem text or "")."""
    try:
        return load_plan(path), ""
    except Damaged as exc:
        return None, str(exc)


def load_or_note(path: str, required: Tuple[str, ...] = (), kind: Any = dict) -> Tuple[Any, str]:
    """(data or None, problem text or ""): for readers that show a damaged file instead of stopping."""
    try:
        return load(path, required, kind), ""
    except Damaged as exc:
        return None, str(exc)


@contextlib.contextmanager
def locked(path: str, create: bool = True) -> Iterator[None]:
    """An exclusive flock on the directory holding `path` (created if `create`): no lock files lie around."""
    directory = os.path.dirname(path) or "."
    if create:
        os.makedirs(directory, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def command_running(control: str) -> bool:
    """Whether a mutating wfops command holds the pod's command lock (`_control/command.lock`, taken by the
    command script's `flock`) now: e.g. a sweep-add whose client stopped waiting (Ctrl-C, a lost connection)
    and whose agent has not queued its runs yet. A pod's rows without such a run are final only when False."""
    try:
        fd = os.open(os.path.join(control, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # no lock file: no command ever took it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


RESERVE_NAME = ".wfops-reserve"
_reserves: List[str] = []  # reserve files this process holds: freed, one at a time, when a write meets a full disk


def hold_reserve(directory: str, size: int = 256 * 1024) -> None:
    """Set aside `size` bytes in `directory` while there is room, so that the final records of a run or task
    (status.json, summary.json) can still be written when its disk fills up. Best effort."""
    path = os.path.join(directory, RESERVE_NAME)
    try:
        with open(path, "wb") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
        _reserves.append(path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)


def release_reserve(all_of_them: bool = False) -> bool:
    """Free one held reserve (or all); True when something was freed."""
    freed = False
    while _reserves:
        with contextlib.suppress(OSError):
            os.unlink(_reserves.pop())
            freed = True
        if freed and not all_of_them:
            break
    return freed


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


_in_place = [True]  # may a write on a full disk fall back to _overwrite? (not inside all_or_none)


def write_bytes(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write whole or not at all: temp file in the same directory, fsync, rename. On a full disk, a held
    reserve is freed and the write tried again."""
    try:
        _write_bytes(path, data, mode)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        if release_reserve():
            _write_bytes(path, data, mode)
        elif _in_place[0]:
            _overwrite(path, data)
        else:
            raise


@contextlib.contextmanager
def all_or_none(paths: List[str]) -> Iterator[None]:
    """Every file of `paths` written in the block, or (when the block raises: a full disk, a signal) each one as
    it was before: a file that existed is put back (from a hard link taken on entry), a new one removed.
    Writes in the block are atomic (no in-place fallback on a full disk, which would change the kept copy)."""
    kept: List[Tuple[str, str]] = []
    _in_place[0] = False
    try:
        for path in paths:
            backup = "%s.before-%d" % (path, os.getpid()) if os.path.exists(path) else ""
            if backup:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(backup)
                os.link(path, backup)
            kept.append((path, backup))
        yield
    except BaseException:
        for path, backup in kept:
            with contextlib.suppress(OSError):
                if backup:
                    os.replace(backup, path)
                else:
                    os.unlink(path)
        raise
    finally:
        _in_place[0] = True
        for _, backup in kept:
            with contextlib.suppress(OSError):
                if backup:
                    os.unlink(backup)


def _overwrite(path: str, data: bytes) -> None:
    """Last resort on a full disk, for a small record that exists already: rewrite it in place (its own
    blocks are freed by the truncate and used again). Not atomic, but the end of a run gets recorded."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from None
    with os.fdopen(fd, "wb") as fh:
        fh.truncate(0)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _write_bytes(path: str, data: bytes, mode: int) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = "%s.tmp.%d.%d" % (path, os.getpid(), threading.get_ident())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def json_bytes(obj: object) -> bytes:
    """How every JSON file on the pod is laid out."""
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def write_json(path: str, obj: object, mode: int = 0o644) -> None:
    write_bytes(path, json_bytes(obj), mode)


_written: Dict[str, Tuple[int, Json]] = {}  # the last records update_json wrote in this process (a few), by inode
WRITTEN_KEPT = 64


def update_json(path: str, fields: Json, keep_terminal: bool = True) -> Json:
    """Merge `fields` into a JSON status file under its lock. A terminal state is never left. A damaged
    file is kept aside (`.damaged`) rather than merged into; the record is rebuilt from the last one this
    process wrote there, if that is what was damaged (same inode: no other process wrote it since), so a
    supervisor's end keeps the run's identity (its sweep, fingerprint, attempt)."""
    with locked(path):
        try:
            data = load(path) or {}
        except Damaged:
            ino, mine = _written.get(path) or (-1, {})
            data = dict(mine) if os.stat(path).st_ino == ino else {}
            os.replace(path, path + ".damaged")
        if keep_terminal and data.get("state") in TERMINAL and fields.get("state") not in (None, data["state"]):
            return data
        data.update(fields)
        write_json(path, data)
        _written.pop(path, None)
        _written[path] = (os.stat(path).st_ino, dict(data))
        if len(_written) > WRITTEN_KEPT:
            del _written[next(iter(_written))]
        return data


def tail_lines(path: str, n: int) -> List[str]:
    if n <= 0:
        return []
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            block, data = 8192, b""
            while size > 0 and data.count(b"\n") <= n:
                step = min(block, size)
                size -= step
                fh.seek(size)
                data = fh.read(step) + data
                block *= 2
    except OSError:
        return []
    return [ln.decode("utf-8", "replace") for ln in data.splitlines()[-n:]]


def read_tail(path: str, limit: int = 262144) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return None
