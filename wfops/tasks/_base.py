"""What every wfops task shares: the error boundary, option checks, config loading, and output helpers.

`wftask` is `invoke.task` plus the one place where WfopsError (and the few library exceptions a user
can provoke) become `invoke.Exit(one line, documented code)`: no traceback for expected failures. The
boundary also checks every whole-number option (`int_option`), turns SIGTERM into a clean exit, and says
what an interrupted mutating command may have left behind (its `interrupted=` declaration).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import json as jsonlib
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from invoke import Exit, Task, task
from invoke.parser import Argument
from invoke.parser.parser import ParseMachine

from wfops.errors import EXIT_FAILED, UsageError, WfopsError
from wfops.output import to_json, visible
from wfops.settings.load import Settings, find_config, load_settings
from wfops.targets import fleet, resolve
from wfops.transport import session as remote

CONFIG_HELP = "dotenv config file (default: $WORKFLOW_CONFIG, ./workflow.env, infra_scripts/workflow.env)"
CONFIG_SHORT = "c"  # `-c FILE` is --config in every wfops task (and before the task name in `wfops`)
JSON_HELP = "print JSON instead of a table"
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as a shell reports it
EXIT_TERMINATED = 143  # SIGTERM
_WHOLE = re.compile(r"[+-]?[0-9]+")
_MEMBER: contextvars.ContextVar[Settings | None] = contextvars.ContextVar("wfops_member", default=None)
_ON_FLEET = contextvars.ContextVar("wfops_on_fleet", default=False)


def on_fleet() -> bool:
    """True in a fleet command's pod thread (one pod of several): a task may be lenient where one pod of a fleet
    has nothing to do (sweep.stop on a pod whose share has ended)."""
    return _ON_FLEET.get()


# ------------------------------------------------------------------ options

def int_option(name: str, value: object, minimum: int = 0) -> int | None:
    """The one check of a whole-number option (`--timeout-secs`, `--tail-lines`, `--limit`, ...): None stays None
    (not given: the task's default applies); anything else is a whole number >= minimum, or a UsageError."""
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not _WHOLE.fullmatch(text) or int(text) < minimum:
        flag = "--" + name.replace("_", "-")
        raise UsageError(f"{flag}={visible(text, one_line=True)!r} is not valid: expected a whole number >= {minimum}")
    return int(text)


class _IntText(Argument):
    """An INT option (so `--help` says INT) whose text reaches the task unconverted: the boundary checks it with
    `int_option`, so `--limit abc` is one line and exit 2 instead of invoke's ValueError traceback."""

    def set_value(self, value: Any, cast: bool = True) -> None:
        super().set_value(value, cast=False)


def _int_text(arg: Argument) -> Argument:
    return _IntText(names=arg.names, kind=int, default=arg.default, help=arg.help, positional=arg.positional,
                    optional=arg.optional, incrementable=arg.incrementable, attr_name=arg.attr_name)


class WfTask(Task):
    """A wfops task: `--config` is `-c` everywhere (invoke gives short flags first come, first served, so it was
    `-c` in some tasks and `-o` in others), whole-number options are checked by the boundary, and positional
    arguments may be left out (`inv fsm.reset` means INIT): they arrive as "" instead."""

    def __init__(self, body: Callable, int_options: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self.int_options = frozenset(int_options)

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        taken_names.add(CONFIG_SHORT)  # invoke passes one set for all arguments: no other option may take it
        opts = super().arg_opts(name, default, taken_names)
        if name == "config":
            opts["names"] = ["config", CONFIG_SHORT]
        return opts

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list:
        args = [_int_text(a) if a.name in self.int_options else a for a in super().get_arguments(ignore_unknown_help)]
        for arg in args:
            if arg.positional:
                arg.wfops_optional = True
        return args


# Invoke makes every positional argument required and offers no hook for an optional one: the check and the
# decision to take the next word as the positional read the same `value is None`. A Program subclass would
# cover `wfops` but not `inv`, and options instead of positionals would break `fsm.reset STATE` and
# `run.fetch RUN_ID`. So this one patch stays; it changes nothing for arguments other than those marked by
# WfTask (`wfops_optional`), is installed once, and keeps invoke's own method underneath.
_complete_context = ParseMachine.complete_context


def _complete_context_allowing_optional(self: ParseMachine) -> None:
    if self.context:
        for arg in self.context.positional_args:
            if arg.value is None and getattr(arg, "wfops_optional", False):
                arg.value = ""
    _complete_context(self)


if not getattr(ParseMachine.complete_context, "wfops_patch", False):
    _complete_context_allowing_optional.wfops_patch = True  # type: ignore[attr-defined]
    ParseMachine.complete_context = _complete_context_allowing_optional  # type: ignore[method-assign]


# ------------------------------------------------------------------ interruptions

class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C, so every cleanup path (`finally`, `except BaseException`)
    runs for it too: a terminated run.fetch removes its staging folder."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (a task called from a consumer's thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_message(exc: KeyboardInterrupt, hint: str | None, sent: bool) -> str:
    """What an interrupted command knows: nothing reached the pod, or (for a mutating command) what to check."""
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    if hint is None:
        return f"wfops: {what}"
    if not sent:
        return f"wfops: {what} before anything was sent to the pod; nothing was changed"
    return f"wfops: {what} after the request was sent: {hint}"


# ------------------------------------------------------------------ the boundary

def wftask(*args: Any, **kwargs: Any) -> Any:
    """`@wftask(help={...})`: an invoke task behind the error boundary; `config` help is added.

    - Options whose default is a whole number, and those named in `int_options=[...]` (default None), are checked
      with `int_option` before the task runs: the task gets an int (or None), a bad value exits 2.
    - `interrupted="the sweep may have started: run sweep.status"`: a mutating task says what to check when Ctrl-C
      or SIGTERM stops it after its request reached the pod; `{name}` is replaced by the task's argument.
    - Positional arguments (`positional=[...]`) are optional: a missing one arrives as "".
    - `fleet=True`: on a config that names a fleet (LIUM_TARGETS / OPS_HOSTS, no WF_POD), the task runs on every
      pod at once (wfops.targets.fleet.run_each) and prints one section per pod (`--json`: {"pods": [...]}); the exit
      code is the worst pod's. A task without it refuses a fleet config unless WF_POD picks a pod.
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        params = inspect.signature(fn).parameters
        int_options = {n for n, p in params.items() if type(p.default) is int} | set(kwargs.pop("int_options", ()))
        hint = kwargs.pop("interrupted", None)
        fan_out = kwargs.pop("fleet", False)

        @functools.wraps(fn)
        def boundary(c: Any, *a: Any, **kw: Any) -> Any:
            sent_before = remote.requests_sent()
            try:
                with _sigterm_as_exception():
                    for name in [n for n in kw if n in int_options]:
                        kw[name] = int_option(name, kw[name])
                    fleet_settings = kw.pop("_wfops_fleet", None)
                    if fleet_settings is not None:
                        return run_on_fleet(fn, c, a, kw, fleet_settings)
                    return fn(c, *a, **kw)
            except WfopsError as exc:
                raise Exit(f"wfops: {visible(exc.message)}", exc.code) from None
            except KeyboardInterrupt as exc:
                text = hint.format(**{**{n: p.default for n, p in params.items()}, **kw}) if hint else None
                code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
                raise Exit(interrupted_message(exc, text, remote.requests_sent() > sent_before), code) from None
            except BrokenPipeError:
                raise Exit(code=EXIT_FAILED) from None

        if fan_out:  # on a fleet config: the same task on every pod at once, its output in one section each
            boundary = _fleet_boundary(fn, boundary)

        help_ = dict(kwargs.pop("help", {}))
        help_.setdefault("config", CONFIG_HELP)
        return task(boundary, help=help_, klass=WfTask, int_options=int_options, **kwargs)

    if args and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


def _fleet_boundary(fn: Callable[..., Any], boundary: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def fan_out(c: Any, *a: Any, **kw: Any) -> Any:
        if _MEMBER.get() is not None:
            return boundary(c, *a, **kw)
        try:
            settings = settings_for(c, kw.get("config"))
        except WfopsError:
            return boundary(c, *a, **kw)  # the boundary reports it
        if fleet.is_fleet(settings):
            return boundary(c, *a, **dict(kw, _wfops_fleet=settings))
        token = _MEMBER.set(settings)  # loaded once: the task's own settings_for gets these
        try:
            return boundary(c, *a, **kw)
        finally:
            _MEMBER.reset(token)

    return fan_out


def run_on_fleet(fn: Callable[..., Any], c: Any, a: tuple, kw: dict, settings: Settings) -> None:
    """The task body once per pod, in parallel; then one section per pod, or one JSON document."""
    if kw.get("watch") is not None:
        raise UsageError(f"--watch redraws one pod's view: choose the pod with {fleet.POD_ENV}=NAME "
                         f"(fleet: {', '.join(fleet.names(settings))})")
    def work(member: fleet.Member) -> None:
        _MEMBER.set(settings)
        _ON_FLEET.set(True)
        with resolve.picked(member):  # this thread's pod: resolve.one(settings) is `member` in here
            fn(c, *a, **kw)

    outcomes = fleet.run_each(fleet.members(settings), work)
    if kw.get("json"):
        print(to_json({"pods": [_pod_json(o) for o in outcomes]}))
    else:
        for o in outcomes:
            print(visible(f"== pod {o.member.name} =="))
            if o.out.strip():
                print(visible(o.out.rstrip("\n")))  # a pod's own output: what it printed raw stays harmless
            if o.error is not None:
                print(visible(f"failed (exit {o.code}): {o.error.message}"))
    code = fleet.worst(outcomes)
    if code:
        raise WfopsError(fleet.failures_line(outcomes), code)


def _pod_json(o: fleet.Outcome) -> dict[str, Any]:
    doc: dict[str, Any] = {"pod": o.member.name, "ok": o.error is None, "exit_code": o.code}
    text = o.out.strip()
    if text:
        try:
            doc["data"] = jsonlib.loads(text)
        except ValueError:
            doc["output"] = text
    if o.error is not None:
        doc["error"] = o.error.message
    return doc


def settings_for(c: Any, config: str | None) -> Settings:
    """Find and load the dotenv file; print its warnings (unknown keys) to stderr. In a fleet command's pod thread:
    the settings loaded once for all pods (resolve.one(settings) is that thread's pod)."""
    member = _MEMBER.get()
    if member is not None:
        return member
    consumer_default = None
    wf_conf = c.config.get("wfops") if hasattr(c, "config") else None
    if wf_conf:
        consumer_default = wf_conf.get("config")
    path = find_config(config, Path.cwd(), os.environ, consumer_default)
    settings = load_settings(path)
    for warning in settings.warnings:
        print(f"wfops: {warning}", file=sys.stderr)
    if os.environ.get(resolve.POD_ENV, "").strip():
        resolve.pods(settings)  # WF_POD=NAME must name a pod of the config: the error lists the fleet
    return settings


def tmux_attach(settings: Settings, session: str) -> str:
    """The command that attaches to a wfops tmux session on the pod."""
    sock = settings.wf_tmux_socket
    return f"tmux {'-L ' + sock + ' ' if sock else ''}attach -t {session}"


def emit(data: object, as_json: bool, human: Callable[[], str]) -> None:
    """Print JSON exactly, or the human text with control characters made visible (see wfops.output.visible)."""
    print(to_json(data) if as_json else visible(human()))
