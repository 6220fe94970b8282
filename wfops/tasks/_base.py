"""What every wfops task shares: the error boundary, config loading, and output helpers.

`wftask` is `invoke.task` plus the one place where WfopsError (and the few library exceptions a user
can provoke) become `invoke.Exit(one line, documented code)`: no traceback for expected failures.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Exit, Task, task
from invoke.parser.parser import ParseMachine

from ..config import Settings, find_config, load_settings
from ..errors import EXIT_FAILED, WfopsError
from ..output import to_json

CONFIG_HELP = "dotenv config file (default: $WORKFLOW_CONFIG, ./workflow.env, infra_scripts/workflow.env)"
JSON_HELP = "print JSON instead of a table"


class OptionalPositionalTask(Task):
    """A task whose positional arguments may be left out (`inv fsm.reset` means INIT): invoke makes every
    positional argument required; an argument marked here that was not given arrives as "" instead."""

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list:
        args = super().get_arguments(ignore_unknown_help)
        for arg in args:
            if arg.positional:
                arg.wfops_optional = True
        return args


_complete_context = ParseMachine.complete_context


def _complete_context_allowing_optional(self: ParseMachine) -> None:
    if self.context:
        for arg in self.context.positional_args:
            if arg.value is None and getattr(arg, "wfops_optional", False):
                arg.value = ""
    _complete_context(self)


# Only arguments marked by OptionalPositionalTask are affected; every other task parses as before.
ParseMachine.complete_context = _complete_context_allowing_optional  # type: ignore[method-assign]


def wftask(*args: Any, **kwargs: Any) -> Any:
    """`@wftask(help={...})`: an invoke task behind the error boundary; `config` help is added.
    Positional arguments (`positional=[...]`) are optional: a missing one arrives as ""."""

    def decorate(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def boundary(c: Any, *a: Any, **kw: Any) -> Any:
            try:
                return fn(c, *a, **kw)
            except WfopsError as exc:
                raise Exit(f"wfops: {exc.message}", exc.code) from None
            except KeyboardInterrupt:
                raise Exit("wfops: interrupted", 130) from None
            except BrokenPipeError:
                raise Exit(code=EXIT_FAILED) from None

        help_ = dict(kwargs.pop("help", {}))
        help_.setdefault("config", CONFIG_HELP)
        if kwargs.get("positional"):
            kwargs["klass"] = OptionalPositionalTask
        return task(boundary, help=help_, **kwargs)

    if args and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


def settings_for(c: Any, config: str | None) -> Settings:
    """Find and load the dotenv file; print its warnings (unknown keys) to stderr."""
    consumer_default = None
    wf_conf = c.config.get("wfops") if hasattr(c, "config") else None
    if wf_conf:
        consumer_default = wf_conf.get("config")
    path = find_config(config, Path.cwd(), os.environ, consumer_default)
    settings = load_settings(path)
    for warning in settings.warnings:
        print(f"wfops: {warning}", file=sys.stderr)
    return settings


def tmux_attach(settings: Settings, session: str) -> str:
    """The command that attaches to a wfops tmux session on the pod."""
    sock = settings.values["WF_TMUX_SOCKET"]
    return f"tmux {'-L ' + sock + ' ' if sock else ''}attach -t {session}"


def emit(data: object, as_json: bool, human: Callable[[], str]) -> None:
    print(to_json(data) if as_json else human())
