"""Tracked tasks: any long command on the pod, in tmux, with a status file that tells how it ended."""

from __future__ import annotations

from invoke import Collection

from wfops import watch as watching
from wfops.agent.states import TERMINAL
from wfops.errors import EXIT_WAIT_TIMEOUT, UsageError, WfopsError
from wfops.output import duration, pairs, quiet_note, table
from wfops.tasks._base import JSON_HELP, emit, settings_for, tmux_attach, wftask
from wfops.tracked import check_task_id, check_workdir, command_script, exit_code_for
from wfops.transport.command import PodCommand, call_once

ID_HELP = "task id: letters, digits, '.', '_' or '-' (up to 128), starting with a letter or digit"


def _summary(t: dict) -> str:
    items = [
        ("task", t.get("id")),
        ("state", t.get("state") + (f" (recorded: {t['recorded_state']})" if t.get("recorded_state") else "")),
        ("exit code", t.get("exit_code")),
        ("created", t.get("created_at")),
        ("started", t.get("started_at")),
        ("ended", t.get("ended_at")),
        ("duration", duration(t.get("duration_secs"))),
        ("timeout", f"{t['timeout_secs']}s" if t.get("timeout_secs") else "none"),
        ("tmux", f"{t.get('tmux_session')}:{t.get('tmux_window')}" if t.get("tmux_window") else None),
    ]
    if quiet_note(t.get("quiet_secs")):
        items.append(("output", quiet_note(t.get("quiet_secs"))))
    if t.get("reason"):
        items.append(("note", t["reason"]))
    return pairs(items)


@wftask(help={
    "id": ID_HELP,
    "cmd": "the command, run by bash on the pod exactly as given (after loading the pod env file)",
    "timeout_secs": "end the whole process tree after this many seconds (default TASK_TIMEOUT_SECS; 0: none)",
    "workdir": "directory on the pod to run in (default OPS_REMOTE_REPO, else $HOME)",
    "force": "replace an ended task with the same id (the old one is kept under _tasks/_backups/)",
    "json": JSON_HELP,
}, int_options=["timeout_secs"], fleet=True, interrupted="task {id} may have started: see task.status --id {id}")
def run(c, id=None, cmd=None, timeout_secs=None, workdir="", force=False, json=False, config=None):
    """Start a tracked task in its own tmux window; prints where to watch it."""
    task_id = check_task_id(id)
    if not cmd:
        raise UsageError("--cmd is required")
    check_workdir(workdir)
    settings = settings_for(c, config)
    timeout = settings.task_timeout_secs if timeout_secs is None else timeout_secs
    data = call_once(
        "task.run", settings, "task-start", id=task_id, command_text=command_script(settings, task_id, cmd, workdir),
        timeout=timeout, workdir=workdir, grace=settings.kill_grace_secs, force=bool(force),
        session=settings.wf_tmux_session,
    )
    emit(data, json, lambda: (
        f"started task {task_id} (timeout: {f'{timeout}s' if timeout else 'none'})\n"
        f"  watch:  inv task.status --id {task_id}   |   {tmux_attach(settings, str(data.get('tmux_session')))}\n"
        f"  files:  {data.get('dir')}/"
    ))


@wftask(help={"id": ID_HELP, "tail_lines": "lines of stdout.log to show (default 20)", "json": JSON_HELP,
              "watch": "redraw every SECS (default 2) over one connection until the task ends"},
        optional=["watch"], fleet=True)
def status(c, id=None, tail_lines=20, json=False, watch=None, config=None):
    """Show a task's state, exit code, times and the tail of its log."""
    task_id = check_task_id(id)
    secs = watching.interval(watch)
    settings = settings_for(c, config)
    if secs is not None:
        with PodCommand("task.status", settings) as cmd:
            watching.watch(lambda: cmd.call("task-show", id=task_id, tail=tail_lines), _status_text,
                           lambda d: d.get("state") in TERMINAL, secs, json)
        return
    data = call_once("task.status", settings, "task-show", id=task_id, tail=tail_lines)
    emit(data, json, lambda: _status_text(data))


def _status_text(data: dict) -> str:
    tail = data.get("tail") or []
    text = _summary(data)
    if tail:
        text += f"\n\n--- stdout.log (last {len(tail)} lines)\n" + "\n".join(tail)
    return text


@wftask(help={"id": ID_HELP, "timeout_secs": "give up waiting after this many seconds (default 0: wait until it ends)",
              "json": JSON_HELP}, fleet=True)
def wait(c, id=None, timeout_secs=0, json=False, config=None):
    """Wait until a task ends; the exit code says how: 0 success, 1 failed, 7 timed out, 8 lost, 9 still running."""
    task_id = check_task_id(id)
    settings = settings_for(c, config)
    data = call_once("task.wait", settings, "task-wait", id=task_id, timeout=timeout_secs)
    emit(data, json, lambda: _summary(data))
    if data.get("wait_timed_out"):
        raise WfopsError(f"task {task_id} is still {data.get('state')} after {timeout_secs}s", EXIT_WAIT_TIMEOUT)
    code = exit_code_for(str(data.get("state")))
    if code:
        raise WfopsError(f"task {task_id} ended {data.get('state')}"
                         + (f" (exit {data['exit_code']})" if data.get("exit_code") is not None else ""), code)


@wftask(help={"limit": "show at most this many, newest first (default 20; 0: all)", "json": JSON_HELP}, fleet=True)
def list_(c, limit=20, json=False, config=None):
    """List recent tracked tasks with their honest state."""
    settings = settings_for(c, config)
    data = call_once("task.list", settings, "task-list", limit=limit)

    def human() -> str:
        tasks = data.get("tasks") or []
        if not tasks:
            return "no tracked tasks on the pod yet (start one with task.run)"
        rows = [(t.get("id"), t.get("state"), t.get("exit_code"), t.get("started_at"),
                 duration(t.get("duration_secs")), t.get("reason")) for t in tasks]
        more = data.get("total", 0) - len(tasks)
        return table(("id", "state", "exit", "started", "duration", "note"), rows) + (
            f"\n({more} older not shown; --limit 0 shows all)" if more > 0 else "")

    emit(data, json, human)


ns = Collection("task", run, status, wait)
ns.add_task(list_, name="list")

from wfops.tasks import results as _results  # noqa: E402 - task.logs and task.attach

ns.add_task(_results.task_logs, name="logs")
ns.add_task(_results.task_attach, name="attach")
