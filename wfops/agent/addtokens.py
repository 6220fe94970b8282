"""The tokens of a fleet's sweep-add requests: proof that a pod will never apply an add whose answer was lost.

A fleet's sweep.add sends a token with each pod's request (and keeps it in the ledger's `sent` mark). The agent
keeps one small file per token in the sweep's `_manifests/<sweep>.adds/` folder and holds an flock on it while it
applies that add, so the token's file says, under its lock, where that request stands:

    claimed    an add took it and is at work (its flock held); a claim whose lock is free is an agent that died
    applied    the add queued its runs
    failed     the add ended without queueing (refused: a duplicate id, another sweep, ...)
    abandoned  a reader (sweep-status for the client) declared it given up first: the add, if it ever arrives
               (its process was stopped before it got here, or is still waiting for the command lock), is refused

`abandon` is how a reader asks: a token with no file, or with a dead claim, becomes `abandoned` at once (a later
add with it is refused), and rows read after that are final for it; a token whose add holds its lock is `busy`
(nothing can be concluded yet). The folder lives as long as the sweep (an add to any other sweep is refused
anyway): no token is forgotten while it could still matter.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time

from . import store
from .registry import Refusal
from .states import EXIT_CONFLICT, EXIT_USAGE
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Dict, Optional, Sequence

    from .states import Layout

TOKEN = re.compile(r"[0-9a-f]{8,64}")
SWEEP_ID = re.compile(r"sweep-[0-9A-Za-z][0-9A-Za-z-]{0,70}")  # a file name in _manifests: no '/', no '.'
ADDS = ".adds"
CLAIMED, APPLIED, FAILED, ABANDONED, BUSY = "claimed", "applied", "failed", "abandoned", "busy"
FINAL = (FAILED, ABANDONED)  # the add of such a token queued nothing and never will
BUSY_WAIT_SECS = 0.5  # a reader waits this long (for all its tokens) for adds at work before it answers `busy`


def _path(pod: Layout, sweep_id: str, token: str) -> str:
    if not TOKEN.fullmatch(token):
        raise Refusal(EXIT_USAGE, "invalid sweep.add token %.70r" % token)
    if not SWEEP_ID.fullmatch(sweep_id):
        raise Refusal(EXIT_USAGE, "invalid sweep id %.80r" % sweep_id)
    return os.path.join(pod.manifests, sweep_id + ADDS, token)


def _open(path: str) -> int:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _read(fd: int) -> Dict[str, str]:
    try:
        doc = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except ValueError:  # torn by a crash mid-write: like a claim whose agent died
        return {"state": CLAIMED}
    return doc if isinstance(doc, dict) else {"state": CLAIMED}


def _write(fd: int, doc: Dict[str, str]) -> None:
    data = json.dumps(doc, sort_keys=True).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _locked(fd: int, wait: Optional[float]) -> bool:
    """flock fd (exclusive); `wait` None: until it is free; else at most that long. False: it stayed held."""
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
                raise
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


class Claim:
    """`with Claim(pod, sweep_id, token):` around the work of one sweep-add: Refusal when its token was
    abandoned (or used) already; the file says `applied` when the block ends without an exception, else
    `failed`. An empty token (a single pod's sweep.add) claims nothing."""

    def __init__(self, pod: Layout, sweep_id: str, token: str) -> None:
        self.path = _path(pod, sweep_id, token) if token else ""
        self.fd = -1

    def __enter__(self) -> Claim:
        if not self.path:
            return self
        self.fd = _open(self.path)
        _locked(self.fd, None)  # a reader holds it for a moment only
        doc = _read(self.fd)
        seen = doc.get("state")
        if seen == ABANDONED:
            doc["arrived_late_at"] = store.now_iso()
            _write(self.fd, doc)
            self._close()
            raise Refusal(EXIT_CONFLICT, "this sweep.add arrived after the client had given up waiting for it and "
                          "a status had declared it abandoned (its runs were taken out of the fleet ledger); nothing "
                          "was added")
        if seen:  # claimed by a dead agent, applied, failed: a token is used once
            self._close()
            raise Refusal(EXIT_CONFLICT, "this sweep.add request was handled already (%s); nothing was added" % seen)
        _write(self.fd, {"state": CLAIMED, "at": store.now_iso(), "pid": str(os.getpid())})
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if self.fd >= 0:
            _write(self.fd, {"state": FAILED if kind is not None else APPLIED, "at": store.now_iso()})
            self._close()

    def _close(self) -> None:
        os.close(self.fd)  # the flock goes with it
        self.fd = -1


def abandon(pod: Layout, sweep_id: str, tokens: Sequence[str]) -> Dict[str, str]:
    """token -> its state after this call: a token no add has claimed (or whose claimer died) becomes
    `abandoned`; one whose add is at work is `busy`. Call it before reading the rows it is to settle."""
    out: Dict[str, str] = {}
    deadline = time.monotonic() + BUSY_WAIT_SECS  # for all of them together
    for token in list(dict.fromkeys(tokens))[:256]:
        path = _path(pod, sweep_id, token)
        try:
            out[token] = _abandon_one(path, max(0.0, deadline - time.monotonic()))
        except OSError:  # a full or read-only disk: nothing can be concluded (the run waits), the rows still come
            out[token] = BUSY
    return out


def _abandon_one(path: str, wait: float) -> str:
    fd = _open(path)
    try:
        if not _locked(fd, wait):
            return BUSY
        doc = _read(fd)
        if (doc.get("state") or "") in ("", CLAIMED):  # never claimed, or its agent died before it queued anything
            doc = {"state": ABANDONED, "at": store.now_iso()}
            _write(fd, doc)
        return doc["state"] if doc.get("state") in (APPLIED, FAILED, ABANDONED) else BUSY
    finally:
        os.close(fd)


def answer(pod: Layout, sweep_id: object, tokens: object) -> Dict[str, str]:
    """sweep-status's `abandon` (tokens of sweep.add requests to `sweep_id` whose client stopped waiting): each
    one's state (abandon), {} for none; Refusal for an argument that is not a list of tokens."""
    if tokens is None or tokens == []:
        return {}
    if not isinstance(tokens, list) or not all(isinstance(t, str) and TOKEN.fullmatch(t) for t in tokens):
        raise Refusal(EXIT_USAGE, "abandon must be a list of sweep.add tokens (hex), not %.60r" % (tokens,))
    if not isinstance(sweep_id, str) or not SWEEP_ID.fullmatch(sweep_id):
        return {t: FAILED for t in tokens}  # no sweep here: no add to one can be applied
    return abandon(pod, sweep_id, tokens)
