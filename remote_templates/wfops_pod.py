#!/usr/bin/env python3
"""wfops pod helper: state files, supervision and read-only reports on the pod.

Shipped inside the wfops wheel and installed by every rendered command script at
$OPS_REMOTE_OUTPUTS_DIR/_control/bin/wfops_pod-<sha>.py (the name carries its content hash, so a
runner started by an older wfops keeps its own copy). Standard library only; Python >= 3.8.

Every JSON file is written whole (temp file + rename) under an flock of `<file>.lock`. Results for
the client go to stdout as one JSON document; refusals go to stderr as `@wfops-error CODE message`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
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
    """An exclusive flock on `<path>.lock`, creating the directory if needed."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
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
        except OSError:
            return  # already gone
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


def cmd_fsm_gate(a) -> None:
    allowed = a.allowed.split(",")
    with locked(a.file):
        cur = fsm_read(a.file)
        state = cur["state"]
        effective = "POD_READY" if (state == "INIT" and a.promote) else state
        if effective not in allowed:
            if a.enforce:
                fail(EXIT_STATE, "{} is not allowed in state {} (allowed: {}); see `fsm.status`, or "
                     "`fsm.reset STATE` if the pod really is elsewhere".format(a.command, state, ", ".join(allowed)))
            sys.stderr.write("wfops: WF_FSM_ENFORCE=0: running {} in state {} (normally allowed: {})\n".format(a.command, state, ", ".join(allowed)))
        if effective != state:
            fsm_write(a.file, cur, effective, a.command, f"pod reachable (promoted by {a.command})")


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


def supervise(argv, status_path: str, log_path: str, timeout: int, grace: int, cwd=None, extra=None) -> dict:
    """Run argv in its own session; enforce the timeout on its whole process group; record the end."""
    me = os.getpid()
    cancelled = {}

    def on_signal(signum, _frame):
        cancelled.setdefault("signal", signum)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
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
    timed_out = False
    deadline = started + timeout if timeout > 0 else None
    while True:
        if cancelled:
            end_group(proc.pid, grace)
        remaining = None if deadline is None else deadline - time.time()
        if remaining is not None and remaining <= 0 and not timed_out:
            timed_out = True
            end_group(proc.pid, grace)
        try:
            proc.wait(timeout=0.2 if remaining is None else max(0.01, min(remaining, 0.2)))
            break
        except subprocess.TimeoutExpired:
            continue
    end_group(proc.pid, min(grace, 2))  # the task owns its group: nothing of it outlives the task
    stamper.thread.join(timeout=5)
    rc = proc.returncode
    exit_code = rc if rc >= 0 else 128 - rc
    fields = {"exit_code": exit_code, "ended_at": now_iso(), "duration_secs": round(time.time() - started, 3)}
    if rc < 0:
        fields["signal"] = signal.Signals(-rc).name
    if timed_out:
        fields.update(state="timed_out", reason=f"exceeded {timeout}s; process group terminated")
    elif cancelled:
        name = signal.Signals(cancelled["signal"]).name
        lost = cancelled["signal"] == signal.SIGHUP
        fields.update(state="lost" if lost else "cancelled",
                      reason="runner got {} ({}); its processes were stopped".format(name, "tmux window or server closed" if lost else "stopped"))
    else:
        fields["state"] = "success" if rc == 0 else "failed"
    return update_json(status_path, fields)


def cmd_supervise(a) -> None:
    argv = a.argv[1:] if a.argv and a.argv[0] == "--" else a.argv
    st = supervise(argv, a.status, a.log, a.timeout, a.grace, cwd=a.cwd)
    sys.exit(0 if st.get("state") == "success" else 1)


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
    with locked(os.path.join(root, ".tasks")):
        if os.path.exists(d):
            view = task_view(d)
            if not a.force:
                fail(EXIT_CONFLICT, "task {} already exists ({}); pick another --id or pass --force "
                     "(the old one is kept under _tasks/_backups/)".format(tid, view["state"]))
            if view["state"] in ("pending", "running"):
                fail(EXIT_CONFLICT, "task {} is still {}; --force only replaces a task that has ended".format(tid, view["state"]))
            backup = os.path.join(root, "_backups", "{}.{}".format(tid, datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")))
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


# ------------------------------------------------------------------ entry point

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wfops_pod")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("fsm-gate")
    s.add_argument("--file", required=True)
    s.add_argument("--command", required=True)
    s.add_argument("--allowed", required=True)
    s.add_argument("--enforce", type=int, default=1)
    s.add_argument("--promote", action="store_true")
    s.set_defaults(fn=cmd_fsm_gate)

    s = sub.add_parser("fsm-set")
    s.add_argument("--file", required=True)
    s.add_argument("--to", required=True)
    s.add_argument("--command", required=True)
    s.add_argument("--reason", default="")
    s.add_argument("--expect", default="")
    s.set_defaults(fn=cmd_fsm_set)

    s = sub.add_parser("fsm-show")
    s.add_argument("--file", required=True)
    s.set_defaults(fn=cmd_fsm_show)

    s = sub.add_parser("supervise")
    s.add_argument("--status", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--timeout", type=int, default=0)
    s.add_argument("--grace", type=int, default=20)
    s.add_argument("--cwd", default=None)
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
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
