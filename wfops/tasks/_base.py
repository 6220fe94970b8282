"""What every wfops task shares: the error boundary, option checks, config loading, and output helpers.

`wftask` is `invoke.task` plus the one place where WfopsError (and the few library exceptions a user
can provoke) become `invoke.Exit(one line, documented code)`: no traceback for expected failures. The
boundary also checks every whole-number option (`int_option`), turns SIGTERM into a clean exit, and says
what an interrupted mutating command may have left behind (its `interrupted=` declaration).

Commands that run on every pod of a fleet (fsm.status, task.list, checkout, ...) are a body and a formatter:
the body takes the settings and one pod (`member`, from wfops.targets.resolve) and returns data, the same data
`--json` prints; the formatter turns that data into the human text. `on_pods` runs the body on the config's
one pod, or on every pod of a fleet at once (wfops.fanout), and shows the results the same way for both: one
`== pod NAME ==` section per pod (its text, or `failed (exit N): why`), or `{"pods": [...]}` with `--json`,
the exit code the worst pod's. A body is a plain function, so Python code can call it and get the data:

    from pathlib import Path

    from wfops.settings.load import load_settings
    from wfops.targets import resolve
    from wfops.tasks.fsm import read_state

    settings = load_settings(Path("workflow.env"))
    states = {pod.name: read_state(settings, pod)["state"] for pod in resolve.pods(settings)}

(each call opens its own connection; wfops.fanout.run_each runs them at once). A body's progress lines go
to its `log` argument (default: stderr; on a fleet: `[pod] line`); nothing replaces `sys.stdout`. The bodies:
fsm.read_state / reset_state, task.start_task / show_task / wait_task / list_tasks, sweep.list_sweeps /
stop_sweep, prep.bootstrap_pod / checkout_pod, run.fetch_from, pod.pod_status / wait_for_pod.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from invoke import Exit, Task, task
from invoke.parser import Argument

from wfops import fanout, hints
from wfops.errors import ConflictError, UsageError, WfopsError
from wfops.fanout import Log, to_stderr
from wfops.interrupt import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_TERMINATED, InTask
from wfops.output import emit as emit
from wfops.output import error_line, visible
from wfops.quietpipe import exit_quietly_on_broken_pipe
from wfops.settings.load import (
    CONFIG_ENV_VAR,
    DEFAULT_LOCATIONS,
    Settings,
    find_config,
    load_settings,
    parse_settings,
)
from wfops.targets import resolve
from wfops.targets.resolve import Member
from wfops.tasks import _parsing  # noqa: F401  # its parser patches, for `inv` as for `wfops`
from wfops.transport import session as remote

CONFIG_HELP = "dotenv config file (default: $WORKFLOW_CONFIG, ./workflow.env, infra_scripts/workflow.env)"
CONFIG_SHORT = "c"  # `-c FILE` is --config in every wfops task (and before the task name in `wfops`)
JSON_HELP = "print JSON instead of a table"
_WHOLE = re.compile(r"[+-]?[0-9]+")
T = TypeVar("T")


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
    arguments may be left out (`inv fsm.reset` means INIT): they arrive as "" instead, unless `required` names
    them (`run.logs RUN_ID`; the `wfops` program's help shows which)."""

    def __init__(self, body: Callable, int_options: Iterable[str] = (), required: Iterable[str] = (),
                 **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self.int_options = frozenset(int_options)
        self.required = tuple(required)

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        taken_names.add(CONFIG_SHORT)  # invoke passes one set for all arguments: no other option may take it
        opts = super().arg_opts(name, default, taken_names)
        if name == "config":
            opts["names"] = ["config", CONFIG_SHORT]
        return opts

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list:
        args = [_int_text(a) if a.name in self.int_options else a for a in super().get_arguments(ignore_unknown_help)]
        for arg in args:
            arg.wfops_once = True  # type: ignore[attr-defined]  # given twice: refused (wfops.tasks._parsing)
            if arg.positional:
                arg.wfops_optional = True  # type: ignore[attr-defined]  # read by the parser patch below
        return args


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
    - Positional arguments (`positional=[...]`) are optional: a missing one arrives as "". Those named in
      `required=[...]` are not: missing, the task's `usage="run.logs RUN_ID [--follow] ..."` line is the error.
    - Under invoke's --dry (`inv -R`), every wfops task refuses to run (refuse_dry_run).
    A task that runs on every pod of a fleet says so by calling `on_pods` (see the module docstring); any other
    task refuses a fleet config unless WF_POD picks a pod.
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        params = inspect.signature(fn).parameters
        int_options = {n for n, p in params.items() if type(p.default) is int} | set(kwargs.pop("int_options", ()))
        hint = kwargs.pop("interrupted", None)
        required, usage = kwargs.pop("required", ()), kwargs.pop("usage", "")

        @functools.wraps(fn)
        def boundary(c: Any, *a: Any, **kw: Any) -> Any:
            sent_before = remote.requests_sent()
            try:
                refuse_dry_run(c)
                with InTask(), _sigterm_as_exception():
                    for name in [n for n in kw if n in int_options]:
                        kw[name] = int_option(name, kw[name])
                    if any(not kw.get(name) for name in required):
                        raise UsageError(f"usage: {hints.program()} {usage}")
                    return fn(c, *a, **kw)
            except WfopsError as exc:
                raise Exit(error_line(exc.message), exc.code) from None
            except KeyboardInterrupt as exc:
                text = hint.format(**{**{n: p.default for n, p in params.items()}, **kw}) if hint else None
                code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
                raise Exit(interrupted_message(exc, text, remote.requests_sent() > sent_before), code) from None
            except BrokenPipeError:
                exit_quietly_on_broken_pipe()
                raise Exit(code=EXIT_BROKEN_PIPE) from None

        help_ = dict(kwargs.pop("help", {}))
        if "config" in params:
            help_.setdefault("config", CONFIG_HELP)
        return task(boundary, help=help_, klass=WfTask, int_options=int_options, required=required, **kwargs)

    if args and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


def refuse_dry_run(c: Any) -> None:
    """`inv -R TASK` (invoke's run.dry) would run a wfops task for real: refused, before anything is read or sent.
    (The `wfops` program does not offer -R at all; see wfops.program.)"""
    try:
        dry = bool(c.config.run.dry)
    except AttributeError:  # called from Python with something that is no invoke Context
        return
    if dry:
        raise UsageError("invoke's -R/--dry (run.dry) is set, and wfops has no dry run; preview with sweep.validate "
                         "or checkout --dry-run instead; nothing was run")


def write_new_file(path: Path, text: str, instead: str) -> None:
    """Write `text` to a new local file at `path`, making its folder: never over an existing file (ConflictError,
    `instead` says what to do), and a path that cannot be written (a read-only folder, a file where a folder
    should be) is one line, exit 2, not a traceback."""
    if path.exists():
        raise ConflictError(f"{path} exists; not overwritten ({instead})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x") as out:
            out.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def settings_for(c: Any, config: str | None, local: bool = False) -> Settings:
    """Find and load the dotenv file, the whole of it (a fleet stays a fleet: wfops.targets.resolve picks the
    pods: `resolve.one(settings)` is a one-pod command's, the one WF_POD=NAME picks on a fleet); print its
    warnings (unknown keys) to stderr. `local`: a command that needs no pod (config.show, sweep.template,
    sweep.validate) works with the defaults when no file was named and none is found, and says so."""
    consumer_default = None
    wf_conf = c.config.get("wfops") if hasattr(c, "config") else None
    if wf_conf:
        consumer_default = wf_conf.get("config")
    named = config or os.environ.get(CONFIG_ENV_VAR) or consumer_default
    if local and not named and not any((Path.cwd() / p).is_file() for p in DEFAULT_LOCATIONS):
        print(f"wfops: no workflow.env here: using the defaults ({hints.command('config.init')} writes one)",
              file=sys.stderr)
        return parse_settings("", source="defaults")
    path = find_config(config, Path.cwd(), os.environ, consumer_default)
    settings = load_settings(path)
    for warning in settings.warnings:
        print(f"wfops: {warning}", file=sys.stderr)
    if os.environ.get(resolve.POD_ENV, "").strip():
        resolve.pods(settings)  # WF_POD=NAME must name a pod of the config: the error lists the fleet
    return settings


# ------------------------------------------------------------------ commands on every pod

def _no_verdict(data: Any) -> WfopsError | None:
    return None


def _same(data: Any) -> Any:
    return data


def _nothing(data: Any) -> None:
    return None


@dataclass(frozen=True)
class PodWork(Generic[T]):
    """What a command does on one pod, and how its result shows (the same on one pod and on a fleet).

    body(settings, member, log) -> data  the work; progress lines go to `log`
    text(data) -> str                    the human text of one pod's data
    verdict(data) -> WfopsError | None   a failure the data shows (shown after the data: pod.status, task.wait)
    view(data) -> JSON                   what --json prints of the data (default: the data itself)
    alone(data)                          one pod only, before anything is shown: may refuse (sweep.stop)
    """

    body: Callable[[Settings, Member, Log], T]
    text: Callable[[T], str]
    verdict: Callable[[T], WfopsError | None] = _no_verdict
    view: Callable[[T], Any] = _same
    alone: Callable[[T], None] = _nothing


def on_pods(settings: Settings, as_json: bool, work: PodWork[T]) -> None:
    """`work` on the config's pod, or on every pod of its fleet at once (WF_POD=NAME picks one); `settings`:
    the whole config (settings_for)."""
    if resolve.is_fleet(settings):
        run_on_fleet(settings, work, as_json)
        return
    data = work.body(settings, resolve.one(settings), to_stderr)
    work.alone(data)
    emit(work.view(data), as_json, lambda: work.text(data))
    error = work.verdict(data)
    if error is not None:
        raise error


def run_on_fleet(settings: Settings, work: PodWork[T], as_json: bool) -> None:
    """The body on every pod at once; then one section per pod, or one JSON document; the worst pod's exit."""
    outcomes = fanout.run_each(resolve.pods(settings), lambda m, log: work.body(settings, m, log))
    for o in outcomes:
        if o.error is None and o.value is not None:
            o.error = work.verdict(o.value)
    fanout.show(outcomes, as_json, work.text, work.view)


def refuse_watch_on_fleet(settings: Settings) -> None:
    """--watch redraws one pod's view: on a fleet (no WF_POD) a UsageError naming the pods."""
    if resolve.is_fleet(settings):
        raise UsageError(f"--watch redraws one pod's view: choose the pod with {resolve.POD_ENV}=NAME "
                         f"(fleet: {', '.join(p.name for p in resolve.pods(settings))})")
