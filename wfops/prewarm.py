"""Start the target's keeper at the very start of a `wfops` command, before the task tree is imported.

A cold command (no keeper yet) then makes its SSH connection in the keeper while this process imports invoke
and the task modules, instead of after. Only for commands that talk to the pod through a plain SSH target with
WF_PERSIST_SECS > 0; anything unusual (help, no or a bad config, a Lium or local target, a local-only task)
does nothing here: the command itself reports it as usual. Never raises.
"""

from __future__ import annotations

import os
from pathlib import Path

# tasks that reach the pod over the target's connection (a wrong guess costs a connection made for nothing)
POD_TASKS = ("fsm.", "task.", "run.", "bootstrap", "checkout")
LOCAL_SWEEP_TASKS = ("sweep.template", "sweep.validate")
NO_COMMAND = {"-h", "--help", "-l", "--list", "-V", "--version", "--complete", "--print-completion-script", "-d",
              "--debug"}


def _task_and_config(argv: list[str]) -> tuple[str, str | None]:
    task, config, i = "", None, 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-c", "--config") and i + 1 < len(argv):
            config = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif not task and not arg.startswith("-"):
            task = arg
        i += 1
    return task, config


def wanted(task: str) -> bool:
    if task.startswith("sweep."):
        return not task.startswith(LOCAL_SWEEP_TASKS)
    return task.startswith(POD_TASKS)


def prewarm(argv: list[str]) -> None:
    if NO_COMMAND & set(argv):
        return
    task, config = _task_and_config(argv)
    if not wanted(task):
        return
    try:
        from wfops.settings.load import find_config, load_settings
        from wfops.targets import resolve
        from wfops.targets.target import SSH
        from wfops.transport.launch import prestart

        settings = load_settings(find_config(config, Path.cwd(), os.environ, None))
        if not settings.wf_persist_secs:
            return
        member = resolve.one(settings)  # the command's pod, as the command will resolve it (WF_POD included)
        if member.provider == SSH:
            prestart(resolve.target(settings, member), float(settings.wf_persist_secs))
    except Exception:  # the command reports every problem itself, in its own words
        return
