"""One run or tracked task, supervised: start it, stamp its log, enforce its timeout, run the local_sync
loop beside it, end every process it started, and only then record how it ended.

The supervisor is a child subreaper and marks its tree with WFOPS_OWNER (procs.py), so training workers
that torchrun moved to their own sessions, and daemons a task started with setsid, end with the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

from . import outcome, procs, runnotes, store, wire
from .registry import command
from .states import (
    CANCELLED,
    COMMAND_FILE,
    FAIL_DISK,
    FAIL_STALLED,
    FAILED,
    LOST,
    OWNER_ENV,
    RUNNING,
    SPEC_FILE,
    STATE_CODES,
    STATUS_FILE,
    SUCCESS,
    SUMMARY_FILE,
    SYNC_LOG,
    SYNC_TMP_DIR,
    TERMINAL,
    TIMED_OUT,
)
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from subprocess import Popen
    from types import FrameType
    from typing import IO, List, Optional, Tuple

    from .states import Layout
    from .wire import Json


class Stamper:
    """Copies a child's output into a log, each line prefixed by an ISO-8601 time. It keeps the last 64 KB
    in memory too, and keeps draining the pipe when the log cannot be written (a full disk): the child
    never blocks on its output, and the end of its output can still be classified."""

    TAIL = 65536

    def __init__(self, src: IO[bytes], log_path: str) -> None:
        self.src = src
        self.write_error: Optional[OSError] = None
        self.log: Optional[IO[bytes]]
        try:
            self.log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed by the thread
        except OSError as exc:
            self.log, self.write_error = None, exc
        self.tail = bytearray()
        self.at_line_start = True
        self.last_output = 0.0  # time.time() of the last output (0: none yet)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def write(self, data: bytes) -> None:
        self.tail += data
        del self.tail[:-self.TAIL]
        if self.log is not None and self.write_error is None:
            try:
                self.log.write(data)
            except OSError as exc:
                self.write_error = exc

    def disk_full(self) -> bool:
        return self.write_error is not None and store.is_disk_full(self.write_error)

    def run(self) -> None:
        try:
            while True:
                chunk = os.read(self.src.fileno(), 65536)
                if not chunk:
                    break
                self.last_output = time.time()
                out = bytearray()
                for piece in chunk.splitlines(keepends=True):
                    if self.at_line_start:
                        out += datetime.now(timezone.utc).isoformat(timespec="milliseconds").encode() + b" "
                    out += piece
                    self.at_line_start = piece.endswith((b"\n", b"\r"))
                self.write(bytes(out))
        finally:
            if not self.at_line_start:
                self.write(b"\n")
            if self.log is not None:
                with contextlib.suppress(OSError):
                    self.log.close()


class SyncLoop:
    """local_sync: mirror the fast local output into the durable run dir with rsync every `interval`
    seconds, and once more, always, at the end (`final()`, which returns rsync's exit code)."""

    def __init__(self, src: str, dst: str, interval: float, log_path: str, start: bool = True) -> None:
        self.src, self.dst, self.interval, self.log_path = src, dst, interval, log_path
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        if start:
            self.thread.start()

    def sync(self, what: str) -> int:
        """One rsync of the local output into the run dir. rsync writes each file under a temporary name and renames
        it into place: in SYNC_TMP_DIR (which run.fetch does not send), so that a fetch during a sync never sees a
        half-written `.NAME.XXXXXX` in the run dir (it would stay here as a file gone on the pod, for good)."""
        with open(self.log_path, "ab", buffering=0) as log:
            log.write(("%s %s\n" % (store.now_iso(), what)).encode())
            try:
                temp = os.path.join(self.dst, SYNC_TMP_DIR)
                os.makedirs(temp, exist_ok=True)
                return subprocess.call(["rsync", "-a", "--temp-dir=" + temp, self.src, self.dst], stdout=log,
                                       stderr=log, stdin=subprocess.DEVNULL)
            except OSError as exc:
                log.write(("rsync: %s\n" % exc).encode())
                return 127

    def loop(self) -> None:
        while not self.stop.wait(self.interval):
            self.sync("periodic sync")

    def halt(self) -> None:
        """End the periodic loop (waiting for a sync in progress) so no rsync runs while the tree is ended."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def final(self) -> int:
        self.halt()
        return self.sync("final sync")


class Quiet:
    """Tells when a run has gone silent: no new log output and no change in its output dir for `limit`
    seconds (0: never). Records `last_output_at` in status.json at most every 5 s while output flows."""

    OWN = frozenset((STATUS_FILE, SUMMARY_FILE, SPEC_FILE, COMMAND_FILE, SYNC_LOG, store.RESERVE_NAME))

    def __init__(self, status_path: str, stamper: Stamper, limit: float, watch_dir: str) -> None:
        self.status_path, self.stamper, self.limit, self.dir = status_path, stamper, limit, watch_dir
        self.started = self.last_change = time.time()
        self.recorded = 0.0
        self.signature: Optional[Tuple[float, int]] = None
        self.next_scan = 0.0

    def dir_signature(self) -> Tuple[float, int]:
        newest, count = 0.0, 0
        for root, dirs, files in os.walk(self.dir):
            for name in files:
                if name in self.OWN:
                    continue
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(root, name))
                    newest, count = max(newest, st.st_mtime, st.st_ctime), count + 1
            dirs[:] = [d for d in dirs if not d.startswith(".new-")]
        return newest, count

    def check(self) -> bool:
        """Record progress; True when the run has been quiet for `limit` seconds."""
        now, out = time.time(), self.stamper.last_output
        if out > self.recorded and now - self.recorded >= 5:
            self.recorded = out
            with contextlib.suppress(OSError):
                store.update_json(self.status_path, {"last_output_at": store.iso_of(out)})
        if self.limit <= 0:
            return False
        if self.dir and now >= self.next_scan:
            self.next_scan = now + min(10.0, self.limit / 3)
            sig = self.dir_signature()
            if sig != self.signature:
                self.signature, self.last_change = sig, now
        return now - max(out, self.last_change, self.started) >= self.limit


class Signals:
    """TERM/INT mean "stop" (cancelled); HUP means tmux or the queue went away (lost)."""

    def __init__(self) -> None:
        self.got: Optional[int] = None
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, self.on_signal)
        parent = os.getppid()
        procs.die_with_parent(signal.SIGHUP)
        if os.getppid() != parent:  # the parent died before the request took effect
            self.got = signal.SIGHUP

    def on_signal(self, signum: int, _frame: Optional[FrameType]) -> None:
        if self.got is None:
            self.got = signum


def _start(spec: Json, token: str) -> Popen[bytes]:
    env = dict(os.environ, **{OWNER_ENV: token})
    return subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=spec.get("cwd") or None, env=env)


def _watch(proc: Popen[bytes], timeout: float, grace: float, token: str, signals: Signals, syncer: Optional[SyncLoop],
           quiet: Quiet) -> str:
    """Wait for the child; on timeout, silence or a stop signal end the whole tree. Returns why it ended
    it: "timeout", "stalled", "signal", or "" when the child ended by itself."""
    me, why = os.getpid(), ""
    deadline = time.time() + timeout if timeout > 0 else None
    while proc.poll() is None:
        remaining = None if deadline is None else deadline - time.time()
        if not why:
            if signals.got is not None:
                why = "signal"
            elif remaining is not None and remaining <= 0:
                why = "timeout"
            elif quiet.check():
                why = "stalled"
            if why:
                if syncer is not None:
                    syncer.halt()
                procs.end_tree(me, token, grace, keep={proc.pid})
        step = 0.2 if remaining is None or why else max(0.01, min(remaining, 0.2))
        procs.wait_for_exit(proc.pid, step)  # wakes at its exit
    return why


def _ending(rc: int, why: str, signals: Signals, spec: Json) -> Json:
    fields: Json = {"exit_code": rc if rc >= 0 else 128 - rc}
    if rc < 0:
        fields["signal"] = signal.Signals(-rc).name
    if why == "timeout":
        fields.update(state=TIMED_OUT, reason="exceeded %ss; every process of it was ended" % spec.get("timeout"))
    elif why == "stalled":
        fields.update(state=FAILED, failure_class=FAIL_STALLED, reason="no log output and no change in its output "
                      "dir for %ss (RUN_STALL_SECS); every process of it was ended" % spec.get("stall"))
    elif signals.got is not None:
        name = signal.Signals(signals.got).name
        lost = signals.got == signal.SIGHUP
        fields.update(state=LOST if lost else CANCELLED, reason="runner got %s (%s); its processes were ended" % (
            name, "its tmux window, tmux server or queue runner went away" if lost else "stopped"))
    else:
        fields["state"] = SUCCESS if rc == 0 else FAILED
    return fields


FULL_BELOW = 1 << 20  # bytes free under which a failed run's disk counts as full


def _disk_full(stamper: Stamper, dirs: List[str]) -> str:
    """Why the run or task ran out of disk ("" when it did not, as far as can be told): its log could not be
    written, its output says so, or a disk it writes to is full now (a worker's own output may have gone to a
    file on that disk, e.g. torchrun's per-rank logs, and be lost)."""
    error = stamper.write_error
    if error is not None and stamper.disk_full():
        return "its log could not be written: %s" % (error.strerror or error)
    if outcome.DISK_RE.search(bytes(stamper.tail).decode("utf-8", "replace")):
        return "its output says No space left on device"
    for d in dirs:
        try:
            st = os.statvfs(d)
        except OSError:
            continue
        if st.f_bavail * st.f_frsize < FULL_BELOW:
            return "%d bytes are free on the disk of %s" % (st.f_bavail * st.f_frsize, d)
    return ""


class Home:
    """The run dir, held by descriptor from the run's start. Its end is recorded where that dir is now (moved to
    _previous/ while this supervisor still ended its processes: a lost queue's run), never by path into a newer run's
    folder, and never into a status.json another supervisor owns (another `owner` token)."""

    def __init__(self, status: str, token: str) -> None:
        self.path, self.token = os.path.dirname(status), token
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def now(self) -> str:
        """Where the run dir is now; "" when it is gone or no longer this run's (nothing is to be written)."""
        try:
            where = os.readlink("/proc/self/fd/%d" % self.fd)
        except OSError:  # no /proc: the path it had, checked by its owner below
            where = self.path
        if where.endswith(" (deleted)") or not os.path.isdir(where):
            return ""
        st = store.load_or_note(os.path.join(where, STATUS_FILE))[0] or {}
        return where if st.get("owner") in (None, self.token) else ""


def _finish(spec: Json, fields: Json, stamper: Stamper, syncer: Optional[SyncLoop], started: float,
            home: Home) -> Json:
    stamper.thread.join(timeout=5)
    where = home.now()
    if not where:  # its run dir went away or is another run's: its end is nobody's to record
        sys.stderr.write("supervisor %d: %s is no longer this run's dir; its end (%s) is not recorded\n" % (
            os.getpid(), home.path, fields.get("state")))
        return dict(fields, ended_at=store.now_iso(), not_recorded=True, output_tail="")
    spec["status"] = os.path.join(where, STATUS_FILE)  # run_spec writes the summary beside it
    if syncer is not None:
        syncer.dst = where + "/"
    fields.update(ended_at=store.now_iso(), duration_secs=round(time.time() - started, 3))
    dirs = [d for d in (os.path.dirname(spec["status"]), spec.get("watch_dir")) if d]
    full = _disk_full(stamper, dirs) if fields["state"] != SUCCESS else ""
    if full:
        fields.update(failure_class=FAIL_DISK, reason="the disk is full (%s); free space on it and run again" % full)
    holders = procs.gpu_holders()
    if holders:
        fields["gpu_memory_held_by"] = holders
    if syncer is not None:
        fields["sync_rc"] = syncer.final()
    final = store.update_json(spec["status"], fields)
    final["output_tail"] = bytes(stamper.tail).decode("utf-8", "replace")
    return final


def supervise(spec: Json, signals: Optional[Signals] = None) -> Json:
    """Run spec["argv"]; record status.json (spec["status"]) from start to end. Returns the final record
    (with `output_tail`, the end of the output as the supervisor saw it, which is not stored). `signals`: the
    handlers a forked supervisor installed before it let signals in (fork_run)."""
    signals = signals or Signals()
    procs.become_subreaper()
    me, token = os.getpid(), spec.get("token") or os.urandom(8).hex()
    timeout, grace = float(spec.get("timeout") or 0), float(spec.get("grace", 20))
    started = time.time()
    store.update_json(spec["status"], dict(spec.get("extra") or {}, state=RUNNING, pid=me,
                                           pid_start=procs.proc_start(me), boot_id=procs.boot_id(), owner=token,
                                           started_at=store.now_iso(), timeout_secs=spec.get("timeout") or 0))
    home = Home(spec["status"], token)
    store.hold_reserve(os.path.dirname(spec["status"]))
    checkout = runnotes.Watch(spec.get("checkout"))  # listed before the run can write into it
    try:
        proc = _start(spec, token)
    except OSError as exc:
        return store.update_json(spec["status"], {"state": FAILED, "exit_code": 127, "ended_at": store.now_iso(),
                                                  "duration_secs": 0.0, "reason": "cannot start: %s" % exc})
    store.update_json(spec["status"], {"child_pid": proc.pid})
    assert proc.stdout is not None  # stdout=PIPE
    stamper = Stamper(proc.stdout, spec["log"])
    sync = spec.get("sync")
    syncer = SyncLoop(sync["src"], sync["dst"], float(sync["interval"]), sync["log"]) if sync else None
    quiet = Quiet(spec["status"], stamper, float(spec.get("stall") or 0), spec.get("watch_dir") or "")
    why = _watch(proc, timeout, grace, token, signals, syncer, quiet)
    fields = _ending(proc.returncode, why, signals, spec)
    if syncer is not None:
        syncer.halt()
    ended = procs.end_tree(me, token, min(grace, 2))  # the run owns its processes: none outlives it
    procs.reap()
    if ended and fields["state"] == SUCCESS:
        fields["note"] = "%d leftover process(es) ended after it exited" % len(ended)
    fields.update(checkout.fields())
    return _finish(spec, fields, stamper, syncer, started, home)


def recover(run_dir: str, status: Json, grace: float, sync: Optional[Json] = None) -> Json:
    """A run whose supervisor died before it recorded an end: end whatever still carries its owner mark,
    make the final sync, record `lost`."""
    path = os.path.join(run_dir, STATUS_FILE)
    with store.locked(path):
        st = dict(status)
        if st.get("state") not in TERMINAL:
            if st.get("owner"):
                procs.end_tree(int(st.get("pid") or 0), st["owner"], grace)
                procs.reap()
            st.update(state=LOST, reason=st.get("reason") or "the run's supervisor ended without recording an end",
                      ended_at=store.now_iso())
            if sync:
                st["sync_rc"] = SyncLoop(sync["src"], sync["dst"], 1e9, sync["log"], start=False).final()
            store.write_json(path, st)
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(run_dir, store.RESERVE_NAME))
    return st


def run_spec(spec: str, signals: Optional[Signals] = None) -> int:
    """Supervise what the spec file says, write the summary it asks for; returns the exit status (the final
    state, states.STATE_CODES)."""
    data = store.load(spec, required=("argv", "status", "log"))
    final = supervise(data, signals)
    if data.get("summary") and not final.get("not_recorded"):
        tail = final.pop("output_tail", "")
        final = outcome.write_summary(os.path.dirname(data["status"]), final, tail)
        runnotes.into_summary(os.path.dirname(data["status"]), final, tail)
    store.release_reserve(all_of_them=True)
    return STATE_CODES.get(str(final.get("state")), 1)


@command(wire.SUPERVISE)
def supervise_command(pod: Layout, spec: str) -> None:
    """Internal (runner.sh of a tracked task): supervise what the spec file says; the exit status is the final
    state (states.STATE_CODES)."""
    raise SystemExit(run_spec(spec))
