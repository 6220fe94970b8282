"""The lean entry of `wfops`: a read-only command whose target's keeper is warm, without invoke or the task tree.

`wfops fsm.status` (task.status, task.list, sweep.status, sweep.list) through its pod's keeper spends most of its
time importing invoke and every task module, and tearing the interpreter down. Here the command line
is read by a small parser that agrees with the task's own options (LEAN; tests/unit/test_lean.py compares both
with invoke's parser for every read-only task), the settings and target are made as the task makes them, the
script is rendered (from the script cache: no Jinja), sent through the keeper, the answer printed as the task
prints it (wfops.views, wfops.sweeps.status), and the process ends at once (flush, os._exit).

`try_lean(argv)` returns (and the full invoke path runs the command: the same behaviour) on anything unusual:
WFOPS_LEAN=0, a command not in LEAN, an option the parser does not know or a value it would have to judge
(short flags but `-c`, --help, --watch, a repeated option, a number that is not plain digits), an invoke config
(file or INVOKE_* variable: it may name wfops.config), a config with warnings, a fleet's sweep.status and
run.fetch (they read its ledger), run.fetch with WF_POD, a pod that is not a plain SSH one or has notes, a keeper
gone, stale or frozen before it opened a channel, any error before the request left. No keeper answering: it is
started here as the full path starts it (wfops.transport.leanexec), so the first command does not pay for invoke
either. WF_PERSIST_SECS=0 (cold): this process connects as the full path does (wfops.transport.ssh, paramiko
without Fabric or invoke); a failed connection is the command's error. From there on the command is this path's:
an error ends it as the task boundary does (wfops.output.error_line, the same exit code).

A fleet's other reads (FLEET) run here on every pod at once, as the task runs them (wfops.fanout), and show as
it shows them; one pod of a fleet chosen with WF_POD=NAME is a one-pod command, kept like any other.

run.fetch (one pod, not a fleet) takes this path too (LOCAL_WRITES): on the pod it only reads, and a repeated
fetch with nothing changed then costs about a warm read-only command. It runs wfops.artifacts.transfer.fetch_runs
as the task does; SIGTERM is raised like Ctrl-C there, so its staging folder is removed on the way out.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wfops.errors import Fallback
from wfops.interrupt import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_TERMINATED
from wfops.leancache import end as _end
from wfops.leancache import invoke_configured, show
from wfops.leancache import terminated as _terminated
from wfops.leanpods import Fleet, pod_request, session

OFF_ENV = "WFOPS_LEAN"  # "0": always the full invoke path (the tests compare the two paths with it)
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Option:
    """One option of a task, as its signature declares it: `kind` bool is a flag, int a whole number, str a value."""

    name: str
    kind: type
    default: object

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


JSON = Option("json", bool, False)
CONFIG = Option("config", str, None)
WATCH = Option("watch", str, None)  # given: the full path (a --watch loop)
LEAN: dict[str, tuple[Option, ...]] = {
    "fsm.status": (JSON, CONFIG),
    "task.status": (Option("id", str, None), Option("tail_lines", int, 20), JSON, WATCH, CONFIG),
    "task.list": (Option("limit", int, 20), JSON, CONFIG),
    "sweep.status": (Option("sweep", str, ""), Option("sort", str, None), JSON, WATCH, CONFIG),
    "sweep.list": (JSON, CONFIG),
}
# run.fetch is not read-only (it writes here: LOCAL_ARTIFACTS_DIR), but on the pod it only reads: a repeated fetch
# with nothing changed costs about a warm read-only command this way (issue 24); its one positional is the run id
LOCAL_WRITES: dict[str, tuple[Option, ...]] = {
    "run.fetch": (Option("run_id", str, None), Option("all", bool, False), Option("sweep", str, None),
                  Option("hash", bool, False), Option("merge_replaced", bool, False), CONFIG),
}
POSITIONAL = {"run.fetch": "run_id"}
# on a fleet (no WF_POD): the commands whose task runs on every pod at once (wfops.tasks._base.on_pods); a fleet's
# sweep.status reads its ledger too (wfops.sweeps.fleet_status) and run.fetch shares runs out by it: the full path
FLEET = ("fsm.status", "task.status", "task.list", "sweep.list")
# the other read-only commands always take the full path, and why (tests/unit/test_lean.py: every read-only
# command of wfops.agent.states.RULES is in LEAN or here)
FULL_ONLY = {
    "task.wait": "it waits (for hours) and its verdict is the exit code",
    "task.logs": "it may follow a log",
    "sweep.wait": "it waits, polls, may manage pods (--recover)",
    "sweep.report": "it writes files on this machine",
    "run.logs": "it may follow a log",
}


def parse(argv: list[str]) -> tuple[str, dict[str, Any]] | None:
    """(command, the task's keyword arguments), or None where the full path must parse (and maybe refuse)."""
    if not argv or argv[0] not in (*LEAN, *LOCAL_WRITES):
        return None
    options = LEAN.get(argv[0]) or LOCAL_WRITES[argv[0]]
    by_flag = {o.flag: o for o in options}
    values: dict[str, Any] = {o.name: o.default for o in options}
    seen: set[str] = set()
    rest = iter(argv[1:])
    for arg in rest:
        if arg[:1] not in ("-", "") and POSITIONAL.get(argv[0]) not in (None, *seen):  # invoke: the positional first
            seen.add(POSITIONAL[argv[0]])
            values[POSITIONAL[argv[0]]] = arg
            continue
        flag, eq, value = arg.partition("=")
        if arg == "-c":
            flag = CONFIG.flag
        option = by_flag.get(flag)
        if option is None or option is WATCH or option.name in seen:
            return None
        seen.add(option.name)
        if option.kind is bool:
            if eq:
                return None
            values[option.name] = True
            continue
        if not eq:
            value = next(rest, "")
        if not value or value.startswith("-") or (option.kind is int and not _DIGITS.fullmatch(value)):
            return None
        values[option.name] = int(value) if option.kind is int else value
    return argv[0], values


def try_lean(argv: list[str]) -> None:
    """Run the command here and end the process, or return for the full path."""
    if os.environ.get(OFF_ENV) == "0":
        return
    parsed = parse(argv)
    if parsed is None or invoke_configured(os.environ):
        return
    try:
        code = _run(*parsed, argv=argv)
    except Fallback:
        return
    _end(code)


class _Terminated(KeyboardInterrupt):
    """SIGTERM during a lean run.fetch: raised like Ctrl-C, so that its staging folder is removed on the way out
    (as the task boundary does it)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def _run(command: str, values: dict[str, Any], argv: list[str] | None = None) -> int:
    from wfops.errors import WfopsError
    from wfops.interrupt import InTask
    from wfops.output import error_line

    try:
        stamp = _stamp(command, values, argv)  # before the settings are read: an edit meanwhile is a miss later
        settings, pods, fleet = _prepare(command, values)
        work: _Work | Fleet = Fleet(command, values, settings, pods) if fleet else _Work(
            command, values, settings, pods[0][1], argv, stamp)
        # SIGTERM until the process ends (its answer printed too): one line and 143, as the task boundary says it;
        # the handler before is put back only for the full path (Fallback)
        previous = signal.signal(signal.SIGTERM, _raise_terminated if command in LOCAL_WRITES else _terminated)
        try:
            with InTask():  # Ctrl-C: KeyboardInterrupt, worded below as the boundary words it
                data = work.ask()
        except Fallback:
            signal.signal(signal.SIGTERM, previous)
            raise
        work.show(data)
    except Fallback:
        raise
    except WfopsError as exc:
        print(error_line(exc.message), file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        return EXIT_BROKEN_PIPE
    except _Terminated:  # as the task boundary says it: one line, 143
        print("wfops: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("wfops: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _stamp(command: str, values: dict[str, Any], argv: list[str] | None) -> dict[str, Any] | None:
    """The cached fast path's key of this command (wfops.leancache), taken before anything is read; None: nothing
    is to be kept (no command line, a command never kept, the cache turned off)."""
    from wfops import leancache

    if argv is None or command not in leancache.KEPT or os.environ.get(leancache.CACHE_OFF_ENV) == "0":
        return None
    return leancache.key(argv, leancache.config_probes(values["config"], os.getcwd(), os.environ))


def _prepare(command: str, values: dict[str, Any]) -> tuple[Any, list[tuple[Any, Any]], bool]:
    """(settings, [(pod, target)], a fleet) as the task makes them: its one pod, or every pod of its fleet (the
    commands of FLEET); Fallback for anything the full path must say or decide (any error here: nothing was sent
    yet, and the full path has the words for it)."""
    from wfops.settings.load import find_config, load_settings
    from wfops.targets import resolve
    from wfops.targets.target import SSH

    try:
        if command == "task.status":
            from wfops.tracked import check_task_id

            check_task_id(values["id"])
        if command == "run.fetch":
            from wfops.artifacts.transfer import check_request

            check_request(values["run_id"] or "", values["all"], values["sweep"] or "")
        settings = load_settings(find_config(values["config"], Path.cwd(), os.environ, None))
        fleet = resolve.is_fleet(settings)
        if settings.warnings or (fleet and command not in FLEET):
            raise Fallback()
        if command in LOCAL_WRITES and os.environ.get(resolve.POD_ENV, "").strip():
            raise Fallback()  # a fleet's fetch shares its runs out by the ledger (wfops.tasks.run)
        # WF_POD=NAME: that pod of the fleet (a name not in it: the full path says so)
        members = resolve.pods(settings) if fleet else [resolve.one(settings)]
        if any(m.provider != SSH for m in members):
            raise Fallback()
        pods = [(m, resolve.target(settings, m)) for m in members]
    except Exception:
        raise Fallback() from None
    if any(target.notes for _, target in pods):
        raise Fallback()
    return settings, pods, fleet


class _Work:
    """One lean command: its agent request through the warm keeper (or a connection of its own: cold), and the text
    of its answer."""

    def __init__(self, command: str, values: dict[str, Any], settings: Any, target: Any,
                 argv: list[str] | None = None, stamp: dict[str, Any] | None = None) -> None:
        self.command, self.values, self.settings, self.target = command, values, settings, target
        self.argv = argv  # the command line: its entry in the cached fast path (wfops.leancache); None: none kept
        self.stamp = stamp  # that entry's key, as the inputs were before the settings were read

    def ask(self) -> dict[str, Any]:
        from wfops.transport.command import PodCommand

        s = self.settings
        cmd = PodCommand(self.command, s, target=self.target)
        cmd.session = session(self.target, cmd.redact, float(s.wf_persist_secs), cmd.log)
        try:
            if self.command == "run.fetch":  # it writes here: never kept (wfops.leancache is read-only commands')
                return self.fetch(cmd)
            agent_command, data = self._request()
            out = cmd.call_text(agent_command, data)
            if self.stamp is not None and s.wf_persist_secs:  # cold: no keeper, nothing to keep for one
                self._keep(out.text, out.serve, cmd.redact.secrets)
            return cmd.send_text(out)
        finally:
            cmd.session.close()

    def fetch(self, cmd: Any) -> dict[str, Any]:
        """run.fetch from the one pod as the task fetches (wfops.tasks.run.fetch_from, no fleet): the summary on
        stderr, the local folders as its answer."""
        from wfops.artifacts.transfer import fetch_runs, tell

        v = self.values
        fetched = fetch_runs(self.settings, v["run_id"] or "", v["all"], v["sweep"] or "", v["hash"],
                             merge_replaced=v["merge_replaced"], command=cmd)
        if self.stamp is not None and self.settings.wf_persist_secs:  # warm: a repeated fetch may take the cache
            from wfops import leanfetch

            # one that copied something (a sweep still writing) is likely to copy next time too, and --hash reads
            # every file on both sides for the plan (asked twice when it falls back): kept without the plan request,
            # so that the next one is the lean path's at once (wfops.leanfetch)
            copied = bool(fetched.files or fetched.aside or v["hash"] or fetched.unreadable or fetched.missed)
            self._keep("", None, cmd.redact.secrets, fetch=None if copied else leanfetch.entry(cmd))
        tell(fetched)
        return {"runs": fetched.runs}

    def _request(self) -> tuple[str, dict[str, object]]:
        return pod_request(self.command, self.values, self.settings)

    def _keep(self, script: str, serve: Any, secrets: list[str], **more: Any) -> None:
        """The cached fast path's entry for this command line: what a hit sends (`more`: run.fetch's plan request,
        wfops.leanfetch) and how it shows the answer."""
        from wfops import leancache
        from wfops.transport import frames, ssh, warm

        assert self.argv is not None and self.stamp is not None
        s = self.settings
        leancache.save(self.argv, self.stamp, {
            "sock": str(warm.socket_path(self.target)), "fp": warm.fingerprint(self.target),
            "persist": float(s.wf_persist_secs), "keepalive": ssh.keepalive_secs(), "script": script, "serve": serve,
            "start_secs": frames.start_secs(self.target.connect_timeout), "secrets": list(secrets), **self._view(),
            **more})

    def _view(self) -> dict[str, Any]:
        """What showing the answer takes (wfops.leancache.show), here and in a kept entry."""
        return {"command": self.command, "values": self.values, "metric_columns": list(self.settings.metric_columns),
                "artifacts_dir": self.settings.local_artifacts_dir}

    def show(self, data: dict[str, Any]) -> None:
        if self.command == "run.fetch":
            from wfops.output import emit

            emit(data, False, lambda: "\n".join(data["runs"]))
            return
        show(self._view(), data)
