"""Tracked tasks: any long command on the pod, in tmux, with a status file that tells how it ended."""

from __future__ import annotations

from typing import Any

from invoke import Collection

from wfops import hints
from wfops import watch as watching
from wfops.agent import wire
from wfops.agent.states import TERMINAL
from wfops.errors import EXIT_WAIT_TIMEOUT, UsageError, WfopsError
from wfops.fanout import Log, to_stderr
from wfops.settings.load import Settings
from wfops.targets import resolve
from wfops.targets.resolve import Member
from wfops.tasks._base import (
    JSON_HELP,
    PodWork,
    on_pods,
    refuse_watch_on_fleet,
    settings_for,
    wftask,
)
from wfops.tracked import check_task_id, check_workdir, command_script, exit_code_for
from wfops.transport.command import PodCommand, call_once
from wfops.views import task_list_text as _list_text
from wfops.views import task_status_text as _status_text
from wfops.views import task_summary as _summary

ID_HELP = "task id: letters, digits, '.', '_' or '-' (up to 128), starting with a letter or digit"


def start_task(settings: Settings, member: Member, task_id: str, cmd: str, timeout_secs: int | None = None,
               workdir: str = "", force: bool = False, log: Log = to_stderr) -> dict:
    """Start tracked task `task_id` (checked: tracked.check_task_id) on one pod; what `task.run --json` prints."""
    timeout = settings.task_timeout_secs if timeout_secs is None else timeout_secs
    return call_once("task.run", settings, wire.TASK_START, member=member, log=log, id=task_id,
                     command_text=command_script(settings, task_id, cmd, workdir), timeout=timeout, workdir=workdir,
                     grace=settings.kill_grace_secs, force=bool(force), session=settings.wf_tmux_session)


def _started_text(settings: Settings, task_id: str, timeout: int, data: dict) -> str:
    return (f"started task {task_id} (timeout: {f'{timeout}s' if timeout else 'none'})\n"
            f"  watch:  {hints.command('task.status', '--id', task_id, settings=settings)}\n"
            f"  wait:   {hints.command('task.wait', '--id', task_id, settings=settings)}\n"
            f"  files:  {data.get('dir')}/")


@wftask(required=["id", "cmd"], usage="task.run --id ID --cmd CMD [--timeout-secs N] [--workdir DIR] [--force]", help={
    "id": ID_HELP,
    "cmd": "the command, run by bash on the pod exactly as given (after loading the pod env file)",
    "timeout_secs": "end the whole process tree after this many seconds (default TASK_TIMEOUT_SECS; 0: none)",
    "workdir": "directory on the pod to run in (default OPS_REMOTE_REPO, else $HOME)",
    "force": "replace an ended task with the same id (the old one is kept under _tasks/_backups/)",
    "json": JSON_HELP,
}, int_options=["timeout_secs"], interrupted="task {id} may have started: see task.status --id {id}")
def run(c: Any, id: str | None = None, cmd: str | None = None, timeout_secs: int | None = None, workdir: str = "",
        force: bool = False, json: bool = False, config: str | None = None) -> None:
    """Start a tracked task in its own tmux window.

    Start a tracked task in its own tmux window; prints where to watch it."""
    task_id = check_task_id(id)
    if not cmd:
        raise UsageError("--cmd is required")
    check_workdir(workdir)
    settings = settings_for(c, config)
    timeout = settings.task_timeout_secs if timeout_secs is None else timeout_secs
    on_pods(settings, json, PodWork(lambda s, m, log: start_task(s, m, task_id, cmd, timeout, workdir, force, log),
                                    lambda data: _started_text(settings, task_id, timeout, data)))


def show_task(settings: Settings, member: Member, task_id: str, tail_lines: int = 20, log: Log = to_stderr) -> dict:
    """One pod's tracked task: state, exit code, times, the tail of its log (what `task.status --json` prints)."""
    return call_once("task.status", settings, wire.TASK_SHOW, member=member, log=log, id=task_id, tail=tail_lines)


@wftask(help={"id": ID_HELP, "tail_lines": "lines of stdout.log to show (default 20)", "json": JSON_HELP,
              "watch": "redraw every SECS (default 2) over one connection until the task ends"},
        optional=["watch"], required=["id"], usage="task.status --id ID [--tail-lines N] [--json] [--watch [SECS]]")
def status(c: Any, id: str | None = None, tail_lines: int = 20, json: bool = False, watch: str | None = None,
           config: str | None = None) -> None:
    """Show a task's state, exit code, times and log tail.

    Show a task's state, exit code, times and the tail of its log."""
    task_id = check_task_id(id)
    secs = watching.interval(watch)
    if secs is not None:
        settings = settings_for(c, config)
        refuse_watch_on_fleet(settings)
        with PodCommand("task.status", settings, member=resolve.one(settings)) as cmd:
            watching.watch(lambda: cmd.call(wire.TASK_SHOW, id=task_id, tail=tail_lines), _status_text,
                           lambda d: d.get("state") in TERMINAL, secs, json)
        return
    settings = settings_for(c, config)
    on_pods(settings, json, PodWork(lambda s, m, log: show_task(s, m, task_id, tail_lines, log), _status_text))


def wait_task(settings: Settings, member: Member, task_id: str, timeout_secs: int = 0, log: Log = to_stderr) -> dict:
    """Wait on one pod until a task ends (or `timeout_secs` pass; 0: no limit); what `task.wait --json` prints."""
    return call_once("task.wait", settings, wire.TASK_WAIT, member=member, log=log, id=task_id, timeout=timeout_secs)


def _wait_verdict(task_id: str, timeout_secs: int, data: dict) -> WfopsError | None:
    """How the wait ended, as an exit code: 0 success, 1 failed, 7 timed out, 8 lost, 9 still running."""
    if data.get("wait_timed_out"):
        return WfopsError(f"task {task_id} is still {data.get('state')} after {timeout_secs}s", EXIT_WAIT_TIMEOUT)
    code = exit_code_for(str(data.get("state")))
    if code:
        return WfopsError(f"task {task_id} ended {data.get('state')}"
                          + (f" (exit {data['exit_code']})" if data.get("exit_code") is not None else ""), code)
    return None


@wftask(help={"id": ID_HELP, "timeout_secs": "give up waiting after this many seconds (default 0: wait until it ends)",
              "json": JSON_HELP}, required=["id"], usage="task.wait --id ID [--timeout-secs N] [--json]")
def wait(c: Any, id: str | None = None, timeout_secs: int = 0, json: bool = False, config: str | None = None) -> None:
    """Wait until a task ends; the exit code says how.

    Wait until a task ends; the exit code says how: 0 success, 1 failed, 7 timed out, 8 lost, 9 still running."""
    task_id = check_task_id(id)
    settings = settings_for(c, config)
    on_pods(settings, json, PodWork(lambda s, m, log: wait_task(s, m, task_id, timeout_secs, log), _summary,
                                     verdict=lambda data: _wait_verdict(task_id, timeout_secs, data)))


def list_tasks(settings: Settings, member: Member, limit: int = 20, log: Log = to_stderr) -> dict:
    """One pod's damaged tasks, then its recent tracked tasks, newest first (`limit` 0: all); what `task.list
    --json` prints."""
    return call_once("task.list", settings, wire.TASK_LIST, member=member, log=log, limit=limit)


@wftask(help={"limit": "show at most this many, newest first (default 20; 0: all); damaged ones always show",
              "json": JSON_HELP})
def list_(c: Any, limit: int = 20, json: bool = False, config: str | None = None) -> None:
    """List recent tracked tasks with their honest state."""
    settings = settings_for(c, config)
    on_pods(settings, json, PodWork(lambda s, m, log: list_tasks(s, m, limit, log), _list_text))


ns = Collection("task", run, status, wait)
ns.add_task(list_, name="list")

from wfops.tasks import results as _results  # noqa: E402 - task.logs and task.attach

ns.add_task(_results.task_logs, name="logs")
ns.add_task(_results.task_attach, name="attach")
