"""The ledger of a fleet sweep, on this machine: `LOCAL_ARTIFACTS_DIR/.fleet/<sweep id>.json` (each run's pod,
queue entry and last seen state) and `latest` (the sweep that commands without --sweep use). Written whole
(a temp file renamed into place); changed under `ledger_lock` (an flock on `.fleet/.lock`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from wfops.errors import NotFoundError, WfopsError
from wfops.settings.load import Settings

if TYPE_CHECKING:  # the wire's TypedDicts exist for the type checker only (the pod agent never imports typing)
    from wfops.agent.wire import QueueEntry, RunRow

LEDGER_DIR = ".fleet"
LATEST = "latest"


# ------------------------------------------------------------------ the ledger's shape (it never goes to a pod)
class LedgerPod(TypedDict, total=False):
    slots: int  # its GPU slots when the sweep started (fleet-facts)
    sweep_id: str  # the sweep id its share runs under (the pod may have made it unique)
    started: bool  # whether its sweep-start succeeded
    error: str | None  # why not


# one move of a run that had not started, from one pod's queue to another's ("from" is a keyword: this form)
LedgerMove = TypedDict("LedgerMove", {"from": str, "to": str, "why": str, "at": str})


class LastSeen(TypedDict):
    state: str
    at: str


class _LedgerRunReq(TypedDict):
    pods: list[str]  # node 0's pod first
    entry: QueueEntry  # its queue entry (node 0's)
    row: RunRow | None  # its CSV row
    moves: list[LedgerMove]


class LedgerCopy(TypedDict):
    """A copy of a run on a pod the ledger does not have it on (it ran there too: wfops.sweeps.fleet_copies)."""
    state: str
    secs: float | None  # how long it ran there (GPU time wasted)
    at: str  # when it was seen


class _LedgerSentReq(TypedDict):
    pod: str
    at: str
    why: str


class LedgerSent(_LedgerSentReq, total=False):
    """sweep.add sent the run to `pod` and had no answer (the connection died, the pod froze): it may be queued
    there. The pod's own rows say which at the next contact (sweep.status / sweep.wait: wfops.sweeps.fleet_copies);
    "not there" counts only from an answer asked after `closed`."""
    closed: float  # when sweep.add stopped waiting for the answer (time.time()); absent while it still waits
    token: str  # the request's token (wfops.agent.addtokens): the pod proves it will never apply that add


class LedgerRun(_LedgerRunReq, total=False):
    last: LastSeen  # its state when sweep.status last saw it
    sent: LedgerSent  # sweep.add's request for it got no answer: maybe queued on that pod (written before sending)
    lost: str  # why it can run nowhere (a pod of a multi-node run is gone)
    copies: dict[str, LedgerCopy]  # pod -> a duplicate that ran there (a partition: moved, yet it ran where it was)


class _LedgerReq(TypedDict):
    sweep_id: str
    pods: dict[str, LedgerPod]
    order: list[str]  # run ids in CSV order
    runs: dict[str, LedgerRun]


class Ledger(_LedgerReq, total=False):
    created_at: str
    wandb_group: str | None


class LedgerDamaged(WfopsError):
    """The ledger file is there but is not a fleet ledger (truncated, hand-edited)."""


class LedgerUnwritable(WfopsError):
    """The ledger cannot be written or locked (a read-only or immutable folder, a full disk)."""


def _ledger_dir(settings: Settings) -> Path:
    return Path(settings.local_artifacts_dir).expanduser() / LEDGER_DIR


def save_ledger(settings: Settings, doc: Ledger, latest: bool = False) -> None:
    """Write the ledger; `latest` (sweep.start only): it becomes the sweep that commands without --sweep use.
    LedgerUnwritable (one line) when it cannot: the ledger on disk is then as it was."""
    d = _ledger_dir(settings)
    files = [(f"{doc['sweep_id']}.json", json.dumps(doc, indent=1))] + ([(LATEST, doc["sweep_id"])] if latest else [])
    tmp = d / "."
    try:
        d.mkdir(parents=True, exist_ok=True)
        for name, text in files:
            tmp = d / f".{name}.{os.getpid()}.tmp"
            tmp.write_text(text)
            os.replace(tmp, d / name)
    except OSError as exc:
        if tmp.name.endswith(".tmp"):
            with suppress(OSError):
                tmp.unlink()
        raise LedgerUnwritable(f"cannot write the fleet ledger in {d}: {exc.strerror or exc}") from None


class LedgerBusy(WfopsError):
    """Another command holds the ledger's lock (a sweep.add waiting for its pods, a sweep.rebalance) longer than
    a reader that only records what it saw wants to wait."""


@contextmanager
def ledger_lock(settings: Settings, wait: float | None = None) -> Iterator[None]:
    """Held while a command reads, changes and writes the ledger (sweep.rebalance, sweep.add, the last-seen
    states of sweep.status): two of them at once (a sweep.wait here, a sweep.add in another terminal) take turns
    instead of one undoing the other's moves. `wait`: at most that many seconds, then LedgerBusy (sweep.status
    records its last-seen states only if it can: it never waits for a sweep.add at work)."""
    d = _ledger_dir(settings)
    if not d.is_dir():  # no ledger at all: nothing to guard (the command says so); leave no trace
        yield
        return
    try:
        fh = open(d / ".lock", "a")  # noqa: SIM115 - held for the whole block below
    except OSError as exc:
        raise LedgerUnwritable(f"cannot lock the fleet ledger in {d}: {exc.strerror or exc}") from None
    with fh:
        if wait is None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        elif not _flock_within(fh.fileno(), wait):
            raise LedgerBusy(f"the fleet ledger in {d} is locked by another command (a sweep.add or "
                             "sweep.rebalance at work)")
        yield


def _flock_within(fd: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def load_ledger(settings: Settings, sweep_id: str = "") -> Ledger:
    d = _ledger_dir(settings)
    which = f"sweep {sweep_id!r}" if sweep_id else "a fleet sweep"
    try:
        sid = sweep_id or (d / LATEST).read_text().strip()
        if not sid or "/" in sid or sid.startswith("."):  # a sweep id names a file in d, nothing else
            raise OSError(sid)
        text = (d / f"{sid}.json").read_text()
    except OSError:
        raise NotFoundError(f"no ledger of {which} in {d} (sweep.start on the fleet writes it)") from None
    try:
        doc = json.loads(text)
        ok = _ledger_shape(doc)
    except ValueError:
        ok = False
    if not ok:
        raise LedgerDamaged(f"the ledger of {which} in {d} is damaged ({sid}.json is not a fleet ledger); "
                            "sweep.status on each pod (WF_POD=NAME) still works")
    ledger: Ledger = doc
    return ledger


def _ledger_shape(doc: object) -> bool:
    """Whether valid JSON is a fleet ledger down to what the commands index (each pod's sweep id, each run's pods
    and entry, the order's ids): a hand-edited one of the wrong shape is LedgerDamaged, not a traceback."""
    if not (isinstance(doc, dict) and isinstance(doc.get("sweep_id"), str) and isinstance(doc.get("pods"), dict)
            and isinstance(doc.get("runs"), dict) and isinstance(doc.get("order"), list)):
        return False
    pods, runs = doc["pods"], doc["runs"]
    return (all(isinstance(p, dict) and isinstance(p.get("sweep_id"), str) for p in pods.values())
            and all(isinstance(r, dict) and isinstance(r.get("pods"), list) and r["pods"]
                    and all(isinstance(n, str) for n in r["pods"]) and isinstance(r.get("entry"), dict)
                    and isinstance(r.get("moves", []), list) and _optional_shape(r) for r in runs.values())
            and all(isinstance(rid, str) and rid in runs for rid in doc["order"]))


def _optional_shape(run: dict[str, object]) -> bool:
    sent, last, copies = run.get("sent"), run.get("last"), run.get("copies", {})
    return ((sent is None or (isinstance(sent, dict) and isinstance(sent.get("pod"), str)
                              and isinstance(sent.get("why", ""), str) and isinstance(sent.get("token", ""), str)
                              and isinstance(sent.get("closed", 0.0), (int, float))))
            and (last is None or (isinstance(last, dict) and isinstance(last.get("state"), str)))
            and isinstance(copies, dict) and all(isinstance(c, dict) for c in copies.values()))


def restarted(run: LedgerRun) -> None:
    """A run started again on its pod (sweep.wait --recover): no longer lost, its last seen state unknown."""
    run.pop("lost", None)
    run.pop("last", None)
