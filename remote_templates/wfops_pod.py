#!/usr/bin/env python3
"""wfops pod helper: state files, supervision and read-only reports on the pod.

Shipped inside the wfops wheel and installed by every rendered command script at
$OPS_REMOTE_OUTPUTS_DIR/_control/bin/wfops_pod_<sha>.py (the name carries its content hash, so a
runner started by an older wfops keeps its own copy). Standard library only; Python >= 3.8.

Every JSON file is written whole (temp file + rename) under an flock of its directory. Results for
the client go to stdout as one JSON document; refusals go to stderr as `@wfops-error CODE message`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

TERMINAL = ("success", "failed", "timed_out", "cancelled", "lost", "skipped")
HISTORY_LIMIT = 50
EXIT_USAGE, EXIT_STATE, EXIT_NOT_FOUND, EXIT_CONFLICT = 2, 3, 5, 10


# ------------------------------------------------------------------ small utilities

def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_iso(text):
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def fail(code: int, message: str) -> None:
    sys.stderr.write("@wfops-error %d %s\n" % (code, message.replace("\n", " ")))
    sys.stderr.flush()
    sys.exit(code)


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def locked(path: str):
    """An exclusive flock on the directory holding `path` (created if needed): no lock files lie around."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_json(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return {"state": "unknown", "error": f"unreadable {os.path.basename(path)}"}


def write_json(path: str, obj, mode: int = 0o644) -> None:
    """Write whole or not at all: temp file in the same directory, fsync, rename."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = "%s.tmp.%d.%d" % (path, os.getpid(), threading.get_ident())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def update_json(path: str, fields: dict, keep_terminal: bool = True) -> dict:
    """Merge `fields` into a JSON status file under its lock. A terminal state is never left."""
    with locked(path):
        data = read_json(path) or {}
        if keep_terminal and data.get("state") in TERMINAL and fields.get("state") not in (None, data["state"]):
            return data
        data.update(fields)
        write_json(path, data)
        return data


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def proc_start(pid: int):
    """Start time of a process in clock ticks since boot, or None when it does not exist."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    try:
        if fields[0] == b"Z":  # a zombie has ended
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid, start) -> bool:
    if not pid:
        return False
    got = proc_start(int(pid))
    return got is not None and (start is None or got == start)


def liveness(st: dict | None, current_boot: str | None = None) -> tuple[str, str]:
    """(state, reason): a non-terminal state whose runner is gone is reported `lost`."""
    if not st:
        return "missing", ""
    state = st.get("state", "unknown")
    if state in TERMINAL or state == "unknown":
        return state, st.get("reason", "")
    current_boot = boot_id() if current_boot is None else current_boot
    if st.get("boot_id") and current_boot and st["boot_id"] != current_boot:
        return "lost", "the pod rebooted after this started"
    pid = st.get("pid")
    if pid and not pid_alive(pid, st.get("pid_start")):
        return "lost", f"its runner (pid {pid}) is gone without recording an end"
    if not pid and state == "running":
        return "lost", "no runner pid recorded"
    return state, st.get("reason", "")


def wait_for_exit(pid, timeout: float) -> None:
    """Block until `pid` exits or `timeout` passes; event-driven where pidfd_open exists."""
    timeout = max(0.0, timeout)
    if pid and hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(int(pid))
        except ProcessLookupError:
            return  # already gone
        except OSError:  # an old kernel (ENOSYS) or no descriptors left: poll instead
            time.sleep(min(timeout, 0.05))
            return
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        return
    time.sleep(min(timeout, 0.1))


def tail_lines(path: str, n: int) -> list[str]:
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


# ------------------------------------------------------------------ workflow state machine

def fsm_read(path: str) -> dict:
    data = read_json(path)
    if not data or data.get("state") == "unknown":
        return {"state": "INIT", "history": [], "exists": data is not None}
    data["exists"] = True
    return data


def fsm_write(path: str, current: dict, to: str, command: str, reason: str) -> dict:
    entry = {"from": current.get("state", "INIT"), "to": to, "at": now_iso(), "command": command, "reason": reason}
    history = (current.get("history") or []) + [entry]
    data = {"state": to, "updated_at": entry["at"], "command": command, "reason": reason,
            "history": history[-HISTORY_LIMIT:]}
    write_json(path, data)
    return data


def gate(file: str, command: str, allowed_csv: str, enforce: bool, promote: bool, dry_run: bool) -> None:
    """Refuse a command the workflow state does not allow (exit 3, nothing changed); else promote
    INIT -> POD_READY when asked (a reachable pod)."""
    allowed = allowed_csv.split(":")
    with locked(file):
        cur = fsm_read(file)
        state = cur["state"]
        effective = "POD_READY" if (state == "INIT" and promote) else state
        if effective not in allowed:
            if enforce:
                fail(EXIT_STATE, "{} is not allowed in state {} (allowed: {}); see `fsm.status`, or "
                     "`fsm.reset STATE` if the pod really is elsewhere".format(command, state, ", ".join(allowed)))
            sys.stderr.write("wfops: WF_FSM_ENFORCE=0: running {} in state {} (normally allowed: {})\n".format(
                command, state, ", ".join(allowed)))
        if effective != state and not dry_run:
            fsm_write(file, cur, effective, command, f"pod reachable (promoted by {command})")


def sync_env(path: str, sha: str, payload_b64: str, dry_run: bool) -> None:
    """Write the config file (mode 600) only when its content changed."""
    import hashlib

    try:
        with open(path, "rb") as fh:
            if hashlib.sha256(fh.read()).hexdigest() == sha:
                return
    except OSError:
        pass
    if dry_run:
        sys.stderr.write(f"wfops: dry run: the config on the pod ({path}) differs and would be rewritten\n")
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = "%s.wfops.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64decode(payload_b64))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    sys.stderr.write(f"wfops: config written to {path}\n")


def prelude(a) -> None:
    """What every command does first, in this order: the state gate, then the config sync."""
    if a.gate_command:
        gate(a.gate_file, a.gate_command, a.gate_allowed, bool(a.gate_enforce), a.gate_promote, a.dry_run)
    if a.env_path:
        sync_env(a.env_path, a.env_sha, a.env_b64, a.dry_run)


def cmd_noop(a) -> None:
    pass


def cmd_fsm_set(a) -> None:
    with locked(a.file):
        cur = fsm_read(a.file)
        if a.expect and cur["state"] not in a.expect.split(","):
            emit({"changed": False, "state": cur["state"]})
            return
        data = fsm_write(a.file, cur, a.to, a.command, a.reason)
    emit({"changed": True, "state": data["state"]})


def cmd_fsm_show(a) -> None:
    data = fsm_read(a.file)
    data["file"] = a.file
    emit(data)


# ------------------------------------------------------------------ supervision of one command

class Stamper:
    """Copies a child's output into a log, each line prefixed by an ISO-8601 time."""

    def __init__(self, src, log_path: str) -> None:
        self.src = src
        self.log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed in run()
        self.at_line_start = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def stamp(self) -> bytes:
        return datetime.now(timezone.utc).isoformat(timespec="milliseconds").encode() + b" "

    def run(self) -> None:
        try:
            while True:
                chunk = os.read(self.src.fileno(), 65536)
                if not chunk:
                    break
                out = bytearray()
                for piece in chunk.splitlines(keepends=True):
                    if self.at_line_start:
                        out += self.stamp()
                    out += piece
                    self.at_line_start = piece.endswith((b"\n", b"\r"))
                self.log.write(bytes(out))
        finally:
            if not self.at_line_start:
                self.log.write(b"\n")
            self.log.close()


def kill_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def end_group(pgid: int, grace: float) -> None:
    """TERM the whole process group, then KILL whatever is left after `grace` seconds."""
    if not kill_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.05)
    kill_group(pgid, signal.SIGKILL)


def die_with_parent(sig: int) -> None:
    """Ask Linux to signal us when our parent (tmux, or the sweep queue) dies, so no run outlives it silently."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class SyncLoop:
    """local_sync: mirror the fast local output into the durable run dir with rsync every `interval` seconds,
    and once more, always, at the end (`final()`, which returns rsync's exit code)."""

    def __init__(self, src: str, dst: str, interval: float, log_path: str) -> None:
        self.src, self.dst, self.interval, self.log_path = src, dst, interval, log_path
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def sync(self, what: str) -> int:
        with open(self.log_path, "ab", buffering=0) as log:
            log.write(("%s %s\n" % (now_iso(), what)).encode())
            return subprocess.call(["rsync", "-a", self.src, self.dst], stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL)

    def loop(self) -> None:
        while not self.stop.wait(self.interval):
            self.sync("periodic sync")

    def final(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.sync("final sync")


def supervise(argv, status_path: str, log_path: str, timeout: int, grace: int, cwd=None, extra=None,
              sync=None) -> dict:
    """Run argv in its own session; enforce the timeout on its whole process group; record the end.
    `sync` = (src, dst, interval, log) runs the local_sync loop beside it; its final rc lands in `sync_rc`."""
    me = os.getpid()
    cancelled = {}

    def on_signal(signum, _frame):
        cancelled.setdefault("signal", signum)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    parent = os.getppid()
    die_with_parent(signal.SIGHUP)
    if os.getppid() != parent:  # the parent died before the request took effect
        cancelled.setdefault("signal", signal.SIGHUP)
    started = time.time()
    update_json(status_path, dict(extra or {}, state="running", pid=me, pid_start=proc_start(me),
                                  boot_id=boot_id(), started_at=now_iso(), timeout_secs=timeout))
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
    except OSError as exc:
        return update_json(status_path, {"state": "failed", "exit_code": 127, "ended_at": now_iso(),
                                         "duration_secs": 0.0, "reason": f"cannot start: {exc}"})
    update_json(status_path, {"child_pgid": proc.pid})
    stamper = Stamper(proc.stdout, log_path)
    syncer = SyncLoop(*sync) if sync else None
    timed_out = False
    deadline = started + timeout if timeout > 0 else None
    while True:
        if cancelled:
            end_group(proc.pid, grace)
        remaining = None if deadline is None else deadline - time.time()
        if remaining is not None and remaining <= 0 and not timed_out:
            timed_out = True
            end_group(proc.pid, grace)
        if proc.poll() is not None:
            break
        wait_for_exit(proc.pid, 0.2 if remaining is None else max(0.01, min(remaining, 0.2)))  # wakes at its exit
    end_group(proc.pid, min(grace, 2))  # the task owns its group: nothing of it outlives the task
    stamper.thread.join(timeout=5)
    rc = proc.returncode
    exit_code = rc if rc >= 0 else 128 - rc
    fields = {"exit_code": exit_code, "ended_at": now_iso(), "duration_secs": round(time.time() - started, 3)}
    if syncer is not None:
        fields["sync_rc"] = syncer.final()
    if rc < 0:
        fields["signal"] = signal.Signals(-rc).name
    if timed_out:
        fields.update(state="timed_out", reason=f"exceeded {timeout}s; process group terminated")
    elif cancelled:
        name = signal.Signals(cancelled["signal"]).name
        lost = cancelled["signal"] == signal.SIGHUP
        fields.update(state="lost" if lost else "cancelled",
                      reason="runner got {} ({}); its processes were stopped".format(
                          name, "its tmux window, tmux server or queue runner went away" if lost else "stopped"))
    else:
        fields["state"] = "success" if rc == 0 else "failed"
    return update_json(status_path, fields)


# how a supervisor's exit status tells its caller (the sweep queue) the run's final state, with no extra call
STATE_CODES = {"success": 0, "failed": 1, "timed_out": 2, "cancelled": 3, "lost": 4}


def cmd_supervise(a) -> None:
    argv = a.argv[1:] if a.argv and a.argv[0] == "--" else a.argv
    extra = dict(item.partition("=")[::2] for item in a.set)
    extra.update((k, json.loads(v)) for k, v in (item.partition("=")[::2] for item in a.set_json))
    sync = (a.sync_src, a.sync_dst, a.sync_interval, a.sync_log) if a.sync_src else None
    st = supervise(argv, a.status, a.log, a.timeout, a.grace, cwd=a.cwd, extra=extra, sync=sync)
    if a.summary:
        write_summary(os.path.dirname(a.status), st)
    sys.exit(STATE_CODES.get(st.get("state"), 1))


# ------------------------------------------------------------------ tracked tasks

def task_view(task_dir: str, tail: int = 0, current_boot=None) -> dict:
    st = read_json(os.path.join(task_dir, "status.json"))
    if st is None:
        return {"id": os.path.basename(task_dir), "state": "missing"}
    state, reason = liveness(st, current_boot)
    out = dict(st)
    out["id"] = st.get("id") or os.path.basename(task_dir)
    if state != st.get("state"):
        out["recorded_state"] = st.get("state")
    out["state"], out["reason"] = state, reason
    if tail:
        out["tail"] = tail_lines(os.path.join(task_dir, "stdout.log"), tail)
    return out


def cmd_task_new(a) -> None:
    """Create the task dir (refusing an existing id unless --force, which keeps a backup)."""
    root, tid = a.root, a.id
    d = os.path.join(root, tid)
    with locked(os.path.join(root, "status.json")):  # the _tasks directory itself
        if os.path.exists(d):
            view = task_view(d)
            if not a.force:
                fail(EXIT_CONFLICT, "task {} already exists ({}); pick another --id or pass --force "
                     "(the old one is kept under _tasks/_backups/)".format(tid, view["state"]))
            if view["state"] in ("pending", "running"):
                fail(EXIT_CONFLICT, "task %s is still %s; --force only replaces a task that has ended"
                     % (tid, view["state"]))
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
            backup = os.path.join(root, "_backups", "%s.%s" % (tid, stamp))
            os.makedirs(os.path.dirname(backup), exist_ok=True)
            os.rename(d, backup)
            sys.stderr.write(f"wfops: kept the previous {tid} as {backup}\n")
        os.makedirs(d)
    with open(os.path.join(d, "command.sh"), "wb") as fh:
        fh.write(base64.b64decode(a.command_b64))
    write_json(os.path.join(d, "status.json"), {
        "id": tid, "state": "pending", "created_at": now_iso(), "timeout_secs": a.timeout,
        "workdir": a.workdir, "boot_id": boot_id(), "kind": "task"})


def cmd_task_launched(a) -> None:
    pid = int(a.pid)
    with locked(os.path.join(a.dir, "status.json")):
        st = read_json(os.path.join(a.dir, "status.json")) or {}
        if not st.get("pid"):  # the runner may have recorded itself already
            st.update(pid=pid, pid_start=proc_start(pid))
        st.update(tmux_session=a.session, tmux_window=a.window)
        write_json(os.path.join(a.dir, "status.json"), st)
    emit(dict(task_view(a.dir), dir=a.dir))


def cmd_task_abort(a) -> None:
    update_json(os.path.join(a.dir, "status.json"), {"state": "failed", "reason": a.reason,
                                                     "ended_at": now_iso()})


def cmd_task_show(a) -> None:
    d = os.path.join(a.root, a.id)
    if not os.path.isdir(d):
        fail(EXIT_NOT_FOUND, f"no task {a.id} on the pod (see task.list)")
    emit(task_view(d, a.tail))


def cmd_task_wait(a) -> None:
    d = os.path.join(a.root, a.id)
    if not os.path.isdir(d):
        fail(EXIT_NOT_FOUND, f"no task {a.id} on the pod (see task.list)")
    deadline = time.monotonic() + a.timeout if a.timeout > 0 else None
    while True:
        view = task_view(d)
        if view["state"] in TERMINAL or view["state"] in ("missing", "unknown"):
            break
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            view["wait_timed_out"] = True
            break
        step = 2.0 if remaining is None else min(remaining, 2.0)
        if view.get("pid"):
            wait_for_exit(view["pid"], step)
        else:
            time.sleep(min(step, 0.1))
    emit(view)


def cmd_task_list(a) -> None:
    items = []
    cb = boot_id()
    try:
        names = os.listdir(a.root)
    except FileNotFoundError:
        names = []
    for name in names:
        d = os.path.join(a.root, name)
        if name.startswith(("_", ".")) or not os.path.isdir(d):
            continue
        items.append(task_view(d, 0, cb))
    items.sort(key=lambda t: t.get("created_at") or "", reverse=True)
    emit({"tasks": items[: a.limit] if a.limit else items, "total": len(items)})


# ------------------------------------------------------------------ sweeps

OOM_RE = re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|std::bad_alloc")
NCCL_RE = re.compile(r"NCCL error|nccl(?:Internal|System|UnhandledCuda|Remote|InvalidUsage)Error|NCCL WARN|"
                     r"Watchdog caught collective operation timeout|ProcessGroupNCCL.*[Tt]ime(?:d )?out")
ROOT_CAUSE_RE = re.compile(r"Root Cause.*?exitcode\s*:\s*(-?\d+)", re.S)
STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+[+-]\d\d:\d\d ")  # the time stamps of stdout.log


def log_line(text: str, start: int, end: int) -> str:
    """The whole log line around [start, end), without its time stamp."""
    first = text.rfind("\n", 0, start) + 1
    last = text.find("\n", end)
    return STAMP_RE.sub("", text[first:last if last >= 0 else None]).strip()[:300]


def read_tail(path: str, limit: int = 262144) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def classify(log_text: str, exit_code, state: str) -> dict:
    """The worker's real exit code (torchrun itself exits 1) and a failure class where one can be told."""
    out = {"exit_code": exit_code, "failure_class": None, "evidence": None}
    m = ROOT_CAUSE_RE.search(log_text)
    if m:
        code = int(m.group(1))
        out["exit_code"] = 128 - code if code < 0 else code
        out["evidence"] = log_line(log_text, m.start(1), m.end(1))
    if state == "success":
        return out
    if state in ("timed_out", "cancelled", "lost"):
        out["failure_class"] = {"timed_out": "timeout"}.get(state, state)
        return out
    for name, rx in (("oom", OOM_RE), ("nccl", NCCL_RE)):
        hit = rx.search(log_text)
        if hit:
            out.update(failure_class=name, evidence=log_line(log_text, hit.start(), hit.end()))
            return out
    out["failure_class"] = "nonzero_exit"
    return out


def cmd_summary_ok(a) -> None:
    data = read_json(a.file) or {}
    sys.exit(0 if data.get("ok") is True else 1)


def write_summary(run_dir: str, st: dict) -> dict:
    """summary.json of an ended run: ok, state, the worker's real exit code, the failure class."""
    state = st["state"]
    info = classify(read_tail(os.path.join(run_dir, "stdout.log")), st.get("exit_code"), state)
    summary = {k: st.get(k) for k in ("run_id", "sweep_id", "config", "seed", "notes", "out_dir",
                                      "mode", "git_sha", "started_at", "ended_at", "duration_secs", "signal")}
    summary.update(ok=state == "success", state=state, exit_code=info["exit_code"],
                   torchrun_exit_code=st.get("exit_code"), failure_class=info["failure_class"],
                   failure_evidence=info["evidence"], reason=st.get("reason"))
    if st.get("sync_rc") is not None:
        summary["final_sync"] = "ok" if st["sync_rc"] == 0 else "failed (rsync exit %s)" % st["sync_rc"]
        if st["sync_rc"] != 0:
            summary["ok"] = False
    write_json(os.path.join(run_dir, "summary.json"), summary)
    return summary


def cmd_run_summary(a) -> None:
    """For a run whose supervisor was killed before it recorded an end: end what it supervised, make the
    final sync, record `lost`, write summary.json; print the state."""
    st_path = os.path.join(a.dir, "status.json")
    with locked(st_path):
        st = read_json(st_path) or {}
        if st.get("state") not in TERMINAL:
            if st.get("child_pgid"):  # what it supervised must not run on unobserved
                end_group(int(st["child_pgid"]), a.grace)
            st.update(state="lost", reason=st.get("reason") or "the run's supervisor ended without recording an end",
                      ended_at=now_iso())
            if a.sync_src:
                st["sync_rc"] = SyncLoop(a.sync_src, a.dir + "/", 1e9, a.sync_log).final()
            write_json(st_path, st)
    print(write_summary(a.dir, st)["state"])


def cmd_sweep_mark(a) -> None:
    fields = {}
    for item in a.set:
        key, _, value = item.partition("=")
        fields[key] = value
    if a.self_pid:
        pid = os.getppid()
        fields.update(pid=pid, pid_start=proc_start(pid), boot_id=boot_id())
    if fields.get("state") in ("completed", "stopped"):
        fields["ended_at"] = now_iso()
    update_json(a.file, fields, keep_terminal=False)


def sweep_liveness(sw):
    if not sw:
        return "none", ""
    state = sw.get("state", "unknown")
    if state != "running":
        return state, sw.get("reason", "")
    if sw.get("boot_id") and sw["boot_id"] != boot_id():
        return "lost", "the pod rebooted during the sweep"
    if not pid_alive(sw.get("pid"), sw.get("pid_start")):
        return "lost", "the queue runner (pid {}) is gone".format(sw.get("pid"))
    return "running", ""


def run_row(out_dir: str, run: dict, sweep_id: str, sweep_state: str, force: bool, cb: str) -> dict:
    d = os.path.join(out_dir, run["run_id"])
    st = read_json(os.path.join(d, "status.json"))
    summ = read_json(os.path.join(d, "summary.json"))
    row = {"run_id": run["run_id"], "notes": run.get("notes", ""), "exit_code": None, "duration_secs": None,
           "note": ""}
    current = (st or {}).get("sweep_id") == sweep_id
    if st and current:
        state, reason = liveness(st, cb)
        src = summ if (summ and summ.get("sweep_id") == sweep_id) else st
        row.update(state=state, exit_code=src.get("exit_code"), duration_secs=src.get("duration_secs"),
                   note=(summ or {}).get("failure_class") or reason or "")
        if state == "running" and st.get("started_at"):
            started = parse_iso(st["started_at"])
            row["duration_secs"] = round(time.time() - started, 1) if started else None
    elif summ and summ.get("ok") and not force:
        row.update(state="skipped", exit_code=summ.get("exit_code"), duration_secs=summ.get("duration_secs"),
                   note="already ok (sweep {})".format(summ.get("sweep_id")))
    elif sweep_state in ("stopped", "completed"):
        row.update(state="cancelled", note="not started: the sweep %s first" % (
            "was stopped" if sweep_state == "stopped" else "ended"))
    elif sweep_state == "lost":
        row.update(state="pending", note="not started; the queue runner is gone (sweep.start resumes)")
    else:
        row["state"] = "pending"
        if summ:
            row["note"] = "previous attempt {}".format(summ.get("state"))
    return row


def cmd_sweep_status(a) -> None:
    sw = read_json(os.path.join(a.out, "_control", "sweep.json"))
    plan = read_json(os.path.join(a.out, "_manifests", "sweep-latest.json"))
    state, reason = sweep_liveness(sw)
    rows = []
    if plan and sw:
        cb = boot_id()
        force = bool(plan.get("force"))
        for run in plan.get("runs", []):
            if run.get("selected", True):
                rows.append(run_row(a.out, run, plan.get("sweep_id"), state, force, cb))
    totals = {}
    for row in rows:
        totals[row["state"]] = totals.get(row["state"], 0) + 1
    reconciled = None
    with locked(a.state_file):
        cur = fsm_read(a.state_file)
        if cur["state"] == "SWEEP_RUNNING" and state != "running":
            why = f"sweep {state}: {reason}" if reason else f"sweep {state}"
            fsm_write(a.state_file, cur, "SWEEP_COMPLETED", "sweep.status", why)
            reconciled = f"SWEEP_RUNNING -> SWEEP_COMPLETED ({why})"
    emit({"sweep": dict(sw or {}, state=state, reason=reason), "plan": {k: (plan or {}).get(k) for k in (
        "sweep_id", "created_at", "git_sha", "filters", "csv")}, "runs": rows, "totals": totals,
        "reconciled": reconciled})


def cmd_sweep_guard(a) -> None:
    sw = read_json(os.path.join(a.out, "_control", "sweep.json"))
    state, _ = sweep_liveness(sw)
    if state == "running":
        fail(EXIT_CONFLICT, "sweep {} is still running (queue pid {}, since {}); watch it with sweep.status or end it "
             "with sweep.stop".format(sw.get("sweep_id"), sw.get("pid"), sw.get("started_at")))


def cmd_sweep_new(a) -> None:
    write_json(os.path.join(a.out, "_control", "sweep.json"), {
        "sweep_id": a.id, "state": "running", "started_at": now_iso(), "boot_id": boot_id(), "session": a.session,
        "runs": a.runs, "plan": f"_manifests/{a.id}.json", "runner_log": f"_manifests/{a.id}.log"})


def cmd_sweep_launched(a) -> None:
    path = os.path.join(a.out, "_control", "sweep.json")
    pid = int(a.pid)
    with locked(path):
        sw = read_json(path) or {}
        if sw.get("sweep_id") == a.id and not sw.get("pid"):
            sw.update(pid=pid, pid_start=proc_start(pid))
            write_json(path, sw)


def cmd_sweep_stop(a) -> None:
    path = os.path.join(a.out, "_control", "sweep.json")
    sw = read_json(path)
    state, reason = sweep_liveness(sw)
    if state != "running":
        emit({"sweep_id": (sw or {}).get("sweep_id"), "state": state, "reason": reason, "was_running": False})
        return
    pid = int(sw["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + a.timeout
    while pid_alive(pid, sw.get("pid_start")) and time.monotonic() < deadline:
        wait_for_exit(pid, min(1.0, max(0.0, deadline - time.monotonic())))
    if pid_alive(pid, sw.get("pid_start")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for_exit(pid, 5)
        update_json(path, {"state": "stopped", "reason": f"killed by sweep.stop after {a.timeout}s",
                           "ended_at": now_iso()}, keep_terminal=False)
    sw = read_json(path) or {}
    emit({"sweep_id": sw.get("sweep_id"), "state": sw.get("state"), "reason": sw.get("reason", ""),
          "was_running": True})


def cmd_check_configs(a) -> None:
    missing = []
    if not os.path.isfile(os.path.join(a.workdir, a.script)):
        fail(EXIT_NOT_FOUND, f"the training script {a.script} is not in {a.workdir}; "
             "check TRAIN_WORKDIR / TRAIN_SCRIPT and run "
             "checkout")
    for item in a.configs:
        line, _, path = item.partition(":")
        if not os.path.isfile(os.path.join(a.workdir, path)):
            missing.append(f"line {line}: config {path} does not exist in {a.workdir}")
    if missing:
        fail(EXIT_USAGE, "the sweep CSV names %d missing config(s); nothing was uploaded or started: %s"
             % (len(missing), "; ".join(missing)))


def cmd_fetch_list(a) -> None:
    """Run dirs to fetch, one per line, with their total size on stderr as `@wfops-size N`."""
    if a.all:
        plan = read_json(os.path.join(a.out, "_manifests", "sweep-latest.json"))
        if not plan:
            fail(EXIT_NOT_FOUND, "no sweep manifest on the pod (start a sweep first, or fetch one run by id)")
        ids = [r["run_id"] for r in plan.get("runs", []) if r.get("selected", True)
               and os.path.isdir(os.path.join(a.out, r["run_id"]))]
        if not ids:
            fail(EXIT_NOT_FOUND, "none of the sweep's runs has a run directory yet")
    else:
        if not os.path.isdir(os.path.join(a.out, a.run)):
            fail(EXIT_NOT_FOUND, f"run {a.run} is not in OPS_REMOTE_OUTPUTS_DIR ({a.out}); see sweep.status")
        ids = [a.run]
    total = 0
    for rid in ids:
        for root, _dirs, files in os.walk(os.path.join(a.out, rid)):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_size
    sys.stderr.write("@wfops-size %d\n" % total)
    sys.stdout.write("".join(rid + "\n" for rid in ids))


# ------------------------------------------------------------------ checkout facts (one probe)

def run_out(argv, cwd=None, timeout=120, strip=True):
    """(exit code, stdout, stripped unless told); a missing program is exit 127."""
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout, text=True)
    except FileNotFoundError:
        return 127, ""
    except subprocess.TimeoutExpired:
        return 124, ""
    return p.returncode, p.stdout.strip() if strip else p.stdout


DEP_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt")
TORCH_PROBE = (
    "import json, sys\n"
    "import os\n"
    "info = {'python': sys.executable, 'version': sys.version.split()[0], 'is_venv': sys.prefix != sys.base_prefix,\n"
    "        'base_prefix': sys.base_prefix, 'exe_dir': os.path.dirname(os.path.realpath(sys.executable))}\n"
    "try:\n"
    "    import torch\n"
    "    info.update(importable=True, torch_version=torch.__version__.split('+')[0], torch_file=torch.__file__,\n"
    "                cuda=bool(torch.cuda.is_available()), cuda_devices=torch.cuda.device_count())\n"
    "except Exception as exc:\n"
    "    info.update(importable=False, error='%s: %s' % (type(exc).__name__, exc))\n"
    "print(json.dumps(info))\n"
)


def read_text(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return None


def deps_hash(repo: str, install_cmd: str) -> str:
    import hashlib

    h = hashlib.sha256(install_cmd.encode())
    for name in DEP_FILES:
        path = os.path.join(repo, name)
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                h.update(name.encode() + b"\0" + fh.read())
    return h.hexdigest()


def shards(directory: str):
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return [], []
    train = [n for n in names if n.startswith("fineweb_train_") and n.endswith(".bin")]
    val = [n for n in names if n.startswith("fineweb_val_") and n.endswith(".bin")]
    return train, val


def venv_torch_dirs(venv: str):
    import glob

    return sorted(glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "torch")))


def cmd_facts(a) -> None:
    repo, venv = a.repo, os.path.join(a.repo, ".venv")
    facts = {"repo": {"path": repo, "exists": os.path.exists(repo)}}
    r = facts["repo"]
    r["is_git"] = os.path.isdir(os.path.join(repo, ".git"))
    r["empty"] = r["exists"] and os.path.isdir(repo) and not os.listdir(repo)
    if r["is_git"]:
        r["head"] = run_out(["git", "-C", repo, "rev-parse", "HEAD"])[1] or None
        r["branch"] = run_out(["git", "-C", repo, "symbolic-ref", "--short", "-q", "HEAD"])[1] or None
        r["origin"] = run_out(["git", "-C", repo, "remote", "get-url", "origin"])[1] or None
        code, out = run_out(["git", "-C", repo, "status", "--porcelain", "-z", "--untracked-files=no"], strip=False)
        r["dirty"] = [entry[3:] for entry in out.split("\0") if len(entry) > 3] if code == 0 else []
    r["deps_hash"] = deps_hash(repo, a.install_cmd) if r["is_git"] else None
    cfg = {}
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as fh:
            for line in fh:
                if "=" in line:
                    k, v = line.split("=", 1)
                    cfg[k.strip()] = v.strip()
    except OSError:
        pass
    marker = os.path.join(venv, ".wfops-installed")
    facts["venv"] = {
        "path": venv, "exists": os.path.isdir(venv),
        "python_ok": os.access(os.path.join(venv, "bin", "python"), os.X_OK),
        "system_site": cfg.get("include-system-site-packages", "").lower() == "true",
        "home": cfg.get("home"),
        "home_real": os.path.realpath(cfg["home"]) if cfg.get("home") else None,
        "torch_inside": venv_torch_dirs(venv),
        "installed_hash": read_text(marker),
    }
    code, out = run_out([a.python, "-c", TORCH_PROBE], timeout=300)
    try:
        facts["python"] = json.loads(out.splitlines()[-1]) if code == 0 and out else {"found": False}
        facts["python"].setdefault("found", True)
    except ValueError:
        facts["python"] = {"found": False}
    if not facts["python"]["found"]:
        facts["python"]["error"] = "exit %d running %s" % (code, a.python) if code != 127 else f"{a.python} not found"
    code, out = run_out(["nvidia-smi", "-L"], timeout=60)
    facts["gpus"] = [ln for ln in out.splitlines() if ln.startswith("GPU")] if code == 0 else []
    train, val = shards(a.data_dir)
    disk = pf_disk(a.data_dir, pf_mounts(a.mounts))
    point, fstype = disk["mount_point"], disk["fs_type"]
    facts["data"] = {"dir": a.data_dir, "exists": os.path.isdir(a.data_dir), "train": train, "val": val,
                     "mount_point": point, "fs_type": fstype}
    link_dir = os.path.join(repo, a.workdir, a.link_dir)
    linked = []
    for name in train + val:
        target = os.path.join(link_dir, name)
        if os.path.islink(target) and os.path.realpath(target) == os.path.realpath(os.path.join(a.data_dir, name)):
            linked.append(name)
    facts["link"] = {"dir": link_dir, "linked": linked}
    emit(facts)


def cmd_deps_hash(a) -> None:
    print(deps_hash(a.repo, a.install_cmd))


def cmd_kv(a) -> None:
    """A JSON object from key=value arguments (values stay strings; `key:=json` parses): printed, or
    merged into a file with --into."""
    out = {}
    for item in a.pairs:
        key, _, value = item.partition("=")
        if key.endswith(":"):
            out[key[:-1]] = json.loads(value)
        else:
            out[key] = value
    if a.into:
        update_json(a.into, out, keep_terminal=False)
    else:
        emit(out)


def cmd_fsm_state(a) -> None:
    print(fsm_read(a.file)["state"])


# ------------------------------------------------------------------ pod facts (pod.status)
# and the pod side of pod.down. Read-only except `pod-down`, which resets the workflow state.

def pf_unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def pf_mounts(table: str = "/proc/self/mountinfo"):
    """[(mount point, fs type, source)] in mount order (a later mount on the same point hides earlier ones),
    from a mountinfo table or a mounts/fstab-format one (WF_MOUNT_TABLE)."""
    out = []
    try:
        with open(table, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if "-" in parts[6:]:  # mountinfo: ... mount-point ... - fstype source ...
                    sep = parts.index("-", 6)
                    if len(parts) >= sep + 3:
                        out.append((pf_unescape(parts[4]), parts[sep + 1], pf_unescape(parts[sep + 2])))
                elif len(parts) >= 3 and not parts[0].startswith("#"):  # mounts: source mount-point fstype ...
                    out.append((pf_unescape(parts[1]), parts[2], pf_unescape(parts[0])))
    except OSError:
        pass
    return out


def deepest_mount(path: str, mounts):
    """(mount point, fs type, source) of the deepest mount holding the absolute, resolved `path`."""
    best = ("", "", "")
    for mp, fs, src in mounts:
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best[0]):
            best = (mp, fs, src)
    return best


def pf_disk(path: str, mounts) -> dict:
    """The disk holding `path` or, when it does not exist yet, its nearest existing parent."""
    wanted = os.path.abspath(path)
    probe = wanted
    while not os.path.exists(probe) and probe != os.path.dirname(probe):
        probe = os.path.dirname(probe)
    real = os.path.realpath(probe)
    point, fstype, source = deepest_mount(real, mounts)
    out = {"path": path, "exists": probe == wanted, "existing": probe, "mount_point": point, "fs_type": fstype,
           "source": source, "is_mount": bool(point) and real == point}
    try:
        st = os.statvfs(probe)
        out.update(free_bytes=st.f_bavail * st.f_frsize, total_bytes=st.f_blocks * st.f_frsize)
    except OSError as exc:
        out.update(free_bytes=None, total_bytes=None, error=str(exc))
    return out


def pf_gpus() -> dict:
    import shutil

    smi = shutil.which("nvidia-smi")
    if not smi:
        return {"gpus": [], "gpu_error": "nvidia-smi not found"}
    try:
        p = subprocess.run([smi, "-L"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=30, text=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"gpus": [], "gpu_error": f"nvidia-smi -L: {exc}"}
    gpus = [ln.strip() for ln in p.stdout.splitlines() if ln.startswith("GPU ")]
    error = None if p.returncode == 0 else "nvidia-smi -L exited %d: %s" % (p.returncode, p.stdout.strip()[-200:])
    return {"gpus": gpus, "gpu_error": error}


def cmd_pod_facts(a) -> None:
    import pwd
    import socket

    mounts = pf_mounts()
    facts = {"user": pwd.getpwuid(os.geteuid()).pw_name, "host": socket.gethostname(), "boot_id": boot_id(),
             "mnt": pf_disk(a.mnt, mounts), "repo": pf_disk(a.repo, mounts), "state": fsm_read(a.state_file)["state"]}
    facts.update(pf_gpus())
    emit(facts)


def cmd_pod_down(a) -> None:
    """Refuse while a sweep runs (unless --force); otherwise reset the workflow state to INIT."""
    with locked(a.file):
        cur = fsm_read(a.file)
        why = []
        if cur["state"] == "SWEEP_RUNNING":
            why.append("workflow state SWEEP_RUNNING")
        if a.tmux_alive:
            why.append(f"tmux session {a.session} is alive")
        if why and not a.force:
            fail(EXIT_CONFLICT, "a sweep is still running on the pod ({}); nothing was removed. pod.down --force "
                 "removes the pod anyway (the sweep dies with it)".format(", ".join(why)))
        fsm_write(a.file, cur, "INIT", "pod.down", a.reason)
    emit({"state_before": cur["state"], "state": "INIT", "sweep_running": bool(why), "why": why, "file": a.file})


def add_pod_parsers(sub) -> None:
    s = sub.add_parser("pod-facts")
    s.add_argument("--repo", required=True)
    s.add_argument("--mnt", default="/mnt")
    s.add_argument("--state-file", required=True)
    s.set_defaults(fn=cmd_pod_facts)

    s = sub.add_parser("pod-down")
    s.add_argument("--file", required=True)
    s.add_argument("--session", required=True)
    s.add_argument("--tmux-alive", type=int, default=0)
    s.add_argument("--force", type=int, default=0)
    s.add_argument("--reason", default="pod removed (pod.down)")
    s.set_defaults(fn=cmd_pod_down)


# ------------------------------------------------------------------ entry point

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wfops_pod")
    g = p.add_argument_group("prelude (before the subcommand)")
    g.add_argument("--gate-file", default="")
    g.add_argument("--gate-command", default="")
    g.add_argument("--gate-allowed", default="")
    g.add_argument("--gate-enforce", type=int, default=1)
    g.add_argument("--gate-promote", action="store_true")
    g.add_argument("--env-path", default="")
    g.add_argument("--env-sha", default="")
    g.add_argument("--env-b64", default="")
    g.add_argument("--dry-run", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("noop", help="only the prelude (gate and config sync)")
    s.set_defaults(fn=cmd_noop)

    s = sub.add_parser("fsm-set")
    s.add_argument("--file", required=True)
    s.add_argument("--to", required=True)
    s.add_argument("--command", required=True)
    s.add_argument("--reason", default="")
    s.add_argument("--expect", default="")
    s.set_defaults(fn=cmd_fsm_set)

    s = sub.add_parser("fsm-state")
    s.add_argument("--file", required=True)
    s.set_defaults(fn=cmd_fsm_state)

    s = sub.add_parser("fsm-show")
    s.add_argument("--file", required=True)
    s.set_defaults(fn=cmd_fsm_show)

    s = sub.add_parser("supervise")
    s.add_argument("--status", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--timeout", type=int, default=0)
    s.add_argument("--grace", type=int, default=20)
    s.add_argument("--cwd", default=None)
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recorded in status.json")
    s.add_argument("--set-json", action="append", default=[], metavar="KEY=JSON")
    s.add_argument("--summary", action="store_true", help="write summary.json beside the status file at the end")
    s.add_argument("--sync-src", default="")
    s.add_argument("--sync-dst", default="")
    s.add_argument("--sync-interval", type=float, default=60)
    s.add_argument("--sync-log", default="")
    s.add_argument("argv", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_supervise)

    s = sub.add_parser("task-new")
    s.add_argument("--root", required=True)
    s.add_argument("--id", required=True)
    s.add_argument("--timeout", type=int, default=0)
    s.add_argument("--workdir", default="")
    s.add_argument("--force", action="store_true")
    s.add_argument("--command-b64", required=True)
    s.set_defaults(fn=cmd_task_new)

    s = sub.add_parser("task-launched")
    s.add_argument("--dir", required=True)
    s.add_argument("--pid", required=True)
    s.add_argument("--window", default="")
    s.add_argument("--session", default="")
    s.set_defaults(fn=cmd_task_launched)

    s = sub.add_parser("task-abort")
    s.add_argument("--dir", required=True)
    s.add_argument("--reason", required=True)
    s.set_defaults(fn=cmd_task_abort)

    for name, fn in (("task-show", cmd_task_show), ("task-wait", cmd_task_wait)):
        s = sub.add_parser(name)
        s.add_argument("--root", required=True)
        s.add_argument("--id", required=True)
        s.add_argument("--tail", type=int, default=0)
        s.add_argument("--timeout", type=int, default=0)
        s.set_defaults(fn=fn)

    s = sub.add_parser("task-list")
    s.add_argument("--root", required=True)
    s.add_argument("--limit", type=int, default=0)
    s.set_defaults(fn=cmd_task_list)
    s = sub.add_parser("facts")
    for opt in ("--repo", "--python", "--data-dir", "--workdir", "--link-dir", "--mounts", "--install-cmd"):
        s.add_argument(opt, required=True)
    s.set_defaults(fn=cmd_facts)

    s = sub.add_parser("deps-hash")
    s.add_argument("--repo", required=True)
    s.add_argument("--install-cmd", required=True)
    s.set_defaults(fn=cmd_deps_hash)

    s = sub.add_parser("kv")
    s.add_argument("--into", default="")
    s.add_argument("pairs", nargs="*")
    s.set_defaults(fn=cmd_kv)
    add_pod_parsers(sub)
    s = sub.add_parser("summary-ok")
    s.add_argument("file")
    s.set_defaults(fn=cmd_summary_ok)

    s = sub.add_parser("run-summary")
    s.add_argument("--dir", required=True)
    s.add_argument("--grace", type=float, default=5)
    s.add_argument("--sync-src", default="")
    s.add_argument("--sync-log", default="")
    s.set_defaults(fn=cmd_run_summary)

    s = sub.add_parser("sweep-mark")
    s.add_argument("--file", required=True)
    s.add_argument("--self-pid", action="store_true", help="record the calling shell as the queue runner")
    s.add_argument("set", nargs="*")
    s.set_defaults(fn=cmd_sweep_mark)

    s = sub.add_parser("sweep-status")
    s.add_argument("--out", required=True)
    s.add_argument("--state-file", required=True)
    s.set_defaults(fn=cmd_sweep_status)

    s = sub.add_parser("sweep-guard")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_sweep_guard)

    s = sub.add_parser("sweep-new")
    s.add_argument("--out", required=True)
    s.add_argument("--id", required=True)
    s.add_argument("--session", required=True)
    s.add_argument("--runs", type=int, required=True)
    s.set_defaults(fn=cmd_sweep_new)

    s = sub.add_parser("sweep-launched")
    s.add_argument("--out", required=True)
    s.add_argument("--id", required=True)
    s.add_argument("--pid", required=True)
    s.set_defaults(fn=cmd_sweep_launched)

    s = sub.add_parser("sweep-stop")
    s.add_argument("--out", required=True)
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_sweep_stop)

    s = sub.add_parser("check-configs")
    s.add_argument("--workdir", required=True)
    s.add_argument("--script", required=True)
    s.add_argument("configs", nargs="*")
    s.set_defaults(fn=cmd_check_configs)

    s = sub.add_parser("fetch-list")
    s.add_argument("--out", required=True)
    s.add_argument("--run", default="")
    s.add_argument("--all", action="store_true")
    s.set_defaults(fn=cmd_fetch_list)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    prelude(args)
    args.fn(args)


if __name__ == "__main__":
    main()
