"""Tracked tasks on the pod: any long command in its own tmux window, supervised, with a status file
that ends in success, failed, timed_out, cancelled or lost."""

from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import datetime, timezone

from . import launch, procs, store, wire
from .registry import Refusal, command
from .states import (
    ACTIVE,
    BACKUPS_DIR,
    COMMAND_FILE,
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_REMOTE,
    FAILED,
    LOG_FILE,
    MISSING,
    PENDING,
    RUNNER_FILE,
    RUNNING,
    SPEC_FILE,
    STATUS_FILE,
    TERMINAL,
    UNKNOWN,
)
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple

    from .states import Layout
    from .wire import Json


def task_view(task_dir: str, tail: int = 0, current_boot: Optional[str] = None) -> Json:
    """A task's record with its honest state (a dead runner reads `lost`; a damaged file `unknown`)."""
    tid = os.path.basename(task_dir)
    st, problem = store.load_or_note(os.path.join(task_dir, STATUS_FILE))
    if problem:
        return {"id": tid, "state": UNKNOWN, "reason": problem + "; see the task dir, or task.run --force"}
    if st is None:
        return {"id": tid, "state": MISSING, "reason": "no %s in its dir; see it, or task.run --force" % STATUS_FILE}
    if not isinstance(st.get("state"), str):
        return {"id": tid, "state": UNKNOWN, "reason": "%s is damaged (no state); see the task dir, or task.run "
                "--force" % os.path.join(task_dir, STATUS_FILE)}
    state, reason = procs.liveness(st, current_boot)
    out = dict(st, id=st.get("id") or tid)
    if state != st.get("state"):
        out["recorded_state"] = st.get("state")
    out["state"], out["reason"] = state, reason
    if state == RUNNING:
        out["quiet_secs"] = store.quiet_secs(st, time.time())
    if tail:
        out["tail"] = store.tail_lines(os.path.join(task_dir, LOG_FILE), tail)
    return out


def _make_room(pod: Layout, tid: str, force: bool) -> None:
    """Refuse an existing id unless --force, which keeps the old task under _tasks/_backups/."""
    d = pod.task_dir(tid)
    if not os.path.exists(d):
        return
    view = task_view(d)
    if not force:
        raise Refusal(EXIT_CONFLICT, "task %s already exists (%s); pick another --id or pass --force (the old one "
                      "is kept under _tasks/_backups/)" % (tid, view["state"]))
    if view["state"] in ACTIVE:
        raise Refusal(EXIT_CONFLICT, "task %s is still %s; --force only replaces a task that has ended"
                      % (tid, view["state"]))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    backup = os.path.join(pod.tasks, BACKUPS_DIR, "%s.%s" % (tid, stamp))
    os.makedirs(os.path.dirname(backup), exist_ok=True)
    os.rename(d, backup)
    sys.stderr.write("wfops: kept the previous %s as %s\n" % (tid, backup))


def _build(pod: Layout, tid: str, command_text: str, timeout: int, grace: int, workdir: str) -> str:
    """Make the task dir whole in a hidden temp dir, then rename it into place: all or nothing."""
    final = pod.task_dir(tid)
    tmp = os.path.join(pod.tasks, ".new-%s-%d" % (tid, os.getpid()))
    try:
        os.makedirs(tmp)
        # the command's bytes as given: one that is not UTF-8 came as lone surrogates (the client's argv)
        store.write_bytes(os.path.join(tmp, COMMAND_FILE), command_text.encode("utf-8", "surrogateescape"))
        spec = {"argv": ["bash", os.path.join(final, COMMAND_FILE)], "status": os.path.join(final, STATUS_FILE),
                "log": os.path.join(final, LOG_FILE), "timeout": timeout, "grace": grace}
        store.write_json(os.path.join(tmp, SPEC_FILE), spec)
        launch.write_argv_script(os.path.join(tmp, RUNNER_FILE), "wfops tracked-task runner: supervises "
                                 "command.sh, records status.json", launch.agent_argv(wire.SUPERVISE, os.path.join(
                                     final, SPEC_FILE)))
        store.write_json(os.path.join(tmp, STATUS_FILE), {
            "id": tid, "state": PENDING, "created_at": store.now_iso(), "created_ns": time.time_ns(),
            "timeout_secs": timeout, "workdir": workdir, "boot_id": procs.boot_id(), "kind": "task"})
        os.rename(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        full = "the disk is full: " if store.is_disk_full(exc) else ""
        raise Refusal(EXIT_REMOTE, "%scannot create task %s in %s (%s); nothing was left behind"
                      % (full, tid, pod.tasks, exc.strerror or exc)) from None
    return final


@command(wire.TASK_START)
def task_start(pod: Layout, id: str, command_text: str, session: str, timeout: int = 0, grace: int = 20,
               workdir: str = "", force: bool = False) -> Json:
    """Create the task (refusing an existing id unless force) and start its runner in a tmux window."""
    with store.locked(os.path.join(pod.tasks, STATUS_FILE)):  # the _tasks directory itself
        _make_room(pod, id, force)
        d = _build(pod, id, command_text, timeout, grace, workdir)
    status = os.path.join(d, STATUS_FILE)
    try:
        pid, window = launch.tmux_window(pod, session, id, "exec " + launch.shell_words(
            ["bash", os.path.join(d, RUNNER_FILE)]))
    except Refusal as exc:
        store.update_json(status, {"state": FAILED, "reason": exc.message, "ended_at": store.now_iso()})
        raise Refusal(exc.code, "could not start task %s: %s" % (id, exc.message)) from None
    launch.record_runner(status, pid, tmux_session=session, tmux_window=window)
    return dict(task_view(d), dir=d)


def _existing(pod: Layout, tid: str) -> str:
    d = pod.task_dir(tid)
    if not os.path.isdir(d):
        raise Refusal(EXIT_NOT_FOUND, "no task %s on the pod (see task.list)" % tid)
    return d


@command(wire.TASK_SHOW)
def task_show(pod: Layout, id: str, tail: int = 0) -> Json:
    return task_view(_existing(pod, id), tail)


@command(wire.TASK_WAIT)
def task_wait(pod: Layout, id: str, timeout: int = 0) -> Json:
    """Until the task ends (woken by its runner's exit through a pidfd), or `timeout` seconds."""
    d = _existing(pod, id)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    ways: Dict[str, int] = {}
    while True:
        view = task_view(d)
        if view["state"] in TERMINAL or view["state"] in (MISSING, UNKNOWN):
            break
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            view["wait_timed_out"] = True
            break
        step = 2.0 if remaining is None else min(remaining, 2.0)
        if view.get("pid"):
            how = procs.wait_for_exit(view["pid"], step)
        else:
            time.sleep(min(step, 0.1))
            how = "poll"
        ways[how] = ways.get(how, 0) + 1
    view["waited_by"] = ways
    return view


@command(wire.TASK_LIST)
def task_list(pod: Layout, limit: int = 0) -> Json:
    """Damaged tasks (whatever `limit`), then tasks newest first (by creation time to the nanosecond; older
    records by their second)."""
    items, cb = [], procs.boot_id()
    try:
        names = os.listdir(pod.tasks)
    except FileNotFoundError:
        names = []
    for name in names:
        d = os.path.join(pod.tasks, name)
        if not name.startswith(("_", ".")) and os.path.isdir(d):
            items.append(task_view(d, 0, cb))
    items.sort(key=_created, reverse=True)
    bad = [t for t in items if t["state"] in (UNKNOWN, MISSING)]  # always shown (no time of their own; a look)
    good = [t for t in items if t["state"] not in (UNKNOWN, MISSING)]
    return {"tasks": bad + (good[:limit] if limit else good), "total": len(items)}


def _created(t: Json) -> Tuple[str, int]:
    at, ns = t.get("created_at"), t.get("created_ns")
    return at if isinstance(at, str) else "", ns if isinstance(ns, int) else 0
