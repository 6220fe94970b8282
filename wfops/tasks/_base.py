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

from invoke import Exit, task

from ..config import Settings, find_config, load_settings
from ..errors import EXIT_FAILED, WfopsError
from ..output import to_json

CONFIG_HELP = "dotenv config file (default: $WORKFLOW_CONFIG, ./workflow.env, infra_scripts/workflow.env)"
JSON_HELP = "print JSON instead of a table"


def wftask(*args: Any, **kwargs: Any) -> Any:
    """`@wftask(help={...})`: an invoke task behind the error boundary; `config` help is added."""

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


def emit(data: object, as_json: bool, human: Callable[[], str]) -> None:
    print(to_json(data) if as_json else human())
