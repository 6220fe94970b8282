"""Live logs: `run-logs` and `task-logs` write a run's or task's stdout.log to stdout as it grows, over the one
exec of the command. With `follow` they end when the run or task ends (its state is terminal, or lost). Reads
only.

Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import os
import sys
import time

from . import procs, store, wire
from .metrics import line_rank
from .registry import Refusal
from .registry import command as agent_command
from .states import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    LOG_FILE,
    QUEUE_RUNNING,
    STATUS_FILE,
    SUCCESS,
    SUMMARY_FILE,
    TERMINAL,
    TRANSIENT,
    UNKNOWN,
)
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Callable, Optional

    from .states import Layout
    from .wire import Json

POLL_SECS = 0.25
CHUNK = 65536


def rank_filter(rank: Optional[int]) -> Callable[[bytes], bool]:
    """Which lines `--rank R` keeps: a line with a rank prefix when it is R's; a line without one (one process,
    or torchrun's own) only for rank 0. None keeps every line."""
    if rank is None:
        return lambda line: True
    return lambda line: (line_rank(line) if line_rank(line) is not None else 0) == rank


def tail_offset(path: str, lines: int, keep: Callable[[bytes], bool]) -> int:
    """Where the last `lines` kept lines of the file start (reading a growing span from its end)."""
    try:
        size = os.path.getsize(path)
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return 0
    span = CHUNK
    with fh:
        while True:
            start = max(0, size - span)
            fh.seek(start)
            data = fh.read(size - start)
            first = 0 if start == 0 else data.find(b"\n") + 1  # the first line may be cut: skip it
            offsets, at = [], first
            for line in data[first:].split(b"\n") if start == 0 or first else []:
                if line and keep(line):
                    offsets.append(start + at)
                at += len(line) + 1
            if len(offsets) >= lines:
                return offsets[-lines]
            if start == 0:
                return 0
            span *= 2


class Stream:
    """Copies the kept lines of a log file to stdout from an offset; reopens a file that was replaced."""

    def __init__(self, path: str, keep: Callable[[bytes], bool], start: int = 0) -> None:
        self.path, self.keep, self.pos, self.partial = path, keep, start, b""
        self.ino: Optional[int] = None
        self.out = sys.stdout.buffer

    def pump(self) -> bool:
        """Copy what is new; True when something was read."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        if self.ino is not None and st.st_ino != self.ino:  # a new attempt replaced the log
            self.pos, self.partial = 0, b""
        self.ino = st.st_ino
        if st.st_size <= self.pos:
            return False
        with open(self.path, "rb") as fh:
            fh.seek(self.pos)
            data = fh.read(st.st_size - self.pos)
        self.pos += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        kept = [ln + b"\n" for ln in lines if self.keep(ln)]
        if kept:
            self.out.write(b"".join(kept))
            self.out.flush()
        return True

    def finish(self) -> None:
        self.pump()
        if self.partial and self.keep(self.partial):
            self.out.write(self.partial + b"\n")
            self.out.flush()


def follow(stream: Stream, ended: Callable[[], bool]) -> None:
    """Copy until `ended()` says the writer is done (checked before the last read: nothing is lost)."""
    while True:
        over = ended()
        while stream.pump():
            pass
        if over:
            break
        time.sleep(POLL_SECS)
    stream.finish()


def show(path: str, keep: Callable[[bytes], bool], tail: int, follow_it: bool, ended: Callable[[], bool]) -> None:
    start = tail_offset(path, int(tail), keep) if tail else 0
    stream = Stream(path, keep, start)
    if follow_it:
        follow(stream, ended)
    else:
        stream.finish()


def _state_ended(status_path: str) -> bool:
    st, problem = store.load_or_note(status_path)
    if problem:
        return True
    return bool(st) and procs.liveness(st)[0] in TERMINAL + (UNKNOWN,)


def _retry_coming(pod: Layout, st: Json, run_dir: str) -> bool:
    """The queue will start this run again: it says so (retry_at, requeued_at), or it has yet to decide on an
    attempt that failed with a class it retries (the scheduler's own rule, read from the manifest)."""
    if st.get("requeued_at") or (st.get("retry_at") and st.get("state") != SUCCESS):
        return True
    if st.get("state") == SUCCESS or int(st.get("attempt") or 1) >= int(st.get("max_attempts") or 1):
        return False
    summ = store.load_or_note(os.path.join(run_dir, SUMMARY_FILE))[0] or {}
    if summ.get("attempt") != st.get("attempt"):
        return True  # this attempt's summary is not written yet: undecided
    plan = store.load_plan_or_note(pod.latest_manifest)[0] or {}
    retry_on = (plan.get("exec") or {}).get("retry_on")
    return summ.get("failure_class") in (TRANSIENT if retry_on is None else retry_on)


def _run_ended(pod: Layout, run_dir: str) -> bool:
    """A run has ended when its state is terminal and no retry (or sweep.retry) of it waits in a running queue:
    a retry starts a new log, which the stream then follows."""
    status_path = os.path.join(run_dir, STATUS_FILE)
    if not _state_ended(status_path):
        return False
    st = store.load_or_note(status_path)[0] or {}
    if not _retry_coming(pod, st, run_dir):
        return True
    sw, problem = store.load_or_note(pod.sweep_file)
    return bool(problem) or procs.queue_liveness(sw)[0] != QUEUE_RUNNING or bool((sw or {}).get("stopping"))


def _queued(pod: Layout, run_id: str) -> bool:
    """The run is in the latest sweep's queue and the queue still runs: it may yet start."""
    sw, problem = store.load_or_note(pod.sweep_file)
    if problem or procs.queue_liveness(sw)[0] != QUEUE_RUNNING:
        return False
    plan, _ = store.load_plan_or_note(pod.latest_manifest)
    return any(isinstance(r, dict) and r.get("run_id") == run_id for r in (plan or {}).get("queue") or [])


def _wait_for_dir(pod: Layout, run_id: str, d: str) -> None:
    while not os.path.isdir(d):
        if not _queued(pod, run_id):
            raise Refusal(EXIT_NOT_FOUND, "run %s has no directory on the pod and is not waiting in a running "
                          "sweep (see sweep.status)" % run_id)
        time.sleep(POLL_SECS)


@agent_command(wire.RUN_LOGS)
def run_logs(pod: Layout, run_id: str, follow: bool = False, tail: int = 0, rank: int = -1) -> None:
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise Refusal(EXIT_USAGE, "invalid run id %r" % run_id)
    d = pod.run_dir(run_id)
    if follow:
        _wait_for_dir(pod, run_id, d)
    elif not os.path.isdir(d):
        raise Refusal(EXIT_NOT_FOUND, "run %s is not in OPS_REMOTE_OUTPUTS_DIR (%s); see sweep.status"
                      % (run_id, pod.out))
    keep = rank_filter(None if rank < 0 else rank)
    show(os.path.join(d, LOG_FILE), keep, tail, follow, lambda: _run_ended(pod, d))


@agent_command(wire.TASK_LOGS)
def task_logs(pod: Layout, id: str, follow: bool = False, tail: int = 0) -> None:
    d = pod.task_dir(id)
    if not id or "/" in id or id.startswith(".") or not os.path.isdir(d):
        raise Refusal(EXIT_NOT_FOUND, "no task %s on the pod (see task.list)" % id)
    show(os.path.join(d, LOG_FILE), rank_filter(None), tail, follow,
         lambda: _state_ended(os.path.join(d, STATUS_FILE)))
