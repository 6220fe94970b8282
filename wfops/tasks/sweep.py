"""Sweeps: a CSV of training runs, queued in tmux on the pod, one torchrun after another."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from invoke import Collection

from wfops import __version__, hints
from wfops import watch as watching
from wfops.agent import wire
from wfops.agent.states import RUNNING
from wfops.errors import ConflictError, ConnectError, UsageError, WfopsError
from wfops.fanout import Log, to_stderr
from wfops.settings.load import Settings
from wfops.sweeps import billing, fleet_moves, fleet_pods, fleet_start, fleet_status, history, launch_script
from wfops.sweeps.ledger import load_ledger
from wfops.sweeps.model import check_run_id, exec_block, plan_runs, queue_entries, select_runs
from wfops.sweeps.plan import shares
from wfops.sweeps.status import status_text
from wfops.targets import resolve
from wfops.targets.resolve import Member
from wfops.tasks import results as _results  # report, wait and attach live there
from wfops.tasks._base import JSON_HELP, PodWork, emit, on_pods, settings_for, wftask
from wfops.tasks.sweep_csv import CSV_HELP, csv_path, read_runs, template, validate
from wfops.transport.command import PodCommand, call_once
from wfops.views import sweep_list_text as _list_text

if TYPE_CHECKING:
    from wfops.agent.wire import Filters, Manifest
    from wfops.sweeps.model import RunSpec

START_HELP = {"csv": CSV_HELP, "json": JSON_HELP,
              "match": "only rows whose run_id contains this (wins over SWEEP_MATCH)",
              "start_at": "skip rows before this run_id (wins over SWEEP_START_AT)",
              "limit": "run at most this many rows (wins over SWEEP_LIMIT)",
              "force": "rerun runs whose summary.json says ok (SWEEP_FORCE=1)",
              "fail_fast": "stop starting runs at the first failure (SWEEP_FAIL_FAST=1)"}


def _filters(settings: Settings, match: str | None, start_at: str | None, limit: int | None) -> Filters:
    return {"match": settings.sweep_match if match is None else match,
            "start_at": settings.sweep_start_at if start_at is None else start_at,
            "limit": settings.sweep_limit if limit is None else limit}


@wftask(help=START_HELP, int_options=["limit"], interrupted="the sweep may have started: run sweep.status")
def start(c: Any, csv: str | None = None, match: str | None = None, start_at: str | None = None,
          limit: int | None = None, force: bool = False, fail_fast: bool = False, json: bool = False,
          config: str | None = None) -> None:
    """Validate the CSV, upload it and start the sweep's queue.

    Validate the CSV, upload it with provenance, and start the queue in tmux on the pod (a fleet: the runs are
    spread over the pods by free GPU slots, each pod runs its share)."""
    settings = settings_for(c, config)
    path = csv_path(settings, csv, "sweep.start")
    text, runs = read_runs(settings, path)
    filters = _filters(settings, match, start_at, limit)
    selected = select_runs(runs, filters["match"], filters["start_at"], filters["limit"])
    plan = _manifest(settings, path.name, text, runs, selected, filters, bool(force or settings.sweep_force),
                     bool(fail_fast or settings.sweep_fail_fast))
    session = settings.sweep_tmux_session
    left = f" ({len(runs) - len(selected)} left out by the filters)" if len(runs) > len(selected) else ""
    _check_nodes(settings, selected, "started")
    if resolve.is_fleet(settings):
        _start_fleet(settings, plan, text, session, json, left)
        return
    plan["billing"] = billing.billing(settings, resolve.one(settings))  # the pod's price, SWEEP_BUDGET_USD
    with PodCommand("sweep.start", settings) as cmd:
        data = cmd.call(wire.SWEEP_START, manifest=plan, csv_text=text, session=session)
    emit(data, json, lambda: (
        f"started {data['sweep_id']}: {len(selected)} run(s) queued{left}\n"
        f"  watch:    {hints.command('sweep.status', settings=settings)}\n"
        f"  wait:     {hints.command('sweep.wait', settings=settings)}\n"
        f"  manifest: {data.get('manifest')}"
    ))


def _check_nodes(settings: Settings, runs: list[RunSpec], done: str) -> None:
    """Multi-node runs need torchrun and a fleet: one check for sweep.start and sweep.add (`done`: not done)."""
    wide = [f"{r.run_id} (nodes {r.nodes})" for r in runs if r.nodes > 1]
    if wide and settings.train_launcher == "python":  # auto picks torchrun for them
        raise UsageError(f"multi-node runs need TRAIN_LAUNCHER=torchrun: {', '.join(wide[:5])}; nothing was {done}")
    if wide and not resolve.is_fleet(settings):
        raise UsageError(f"multi-node runs need a fleet (LIUM_TARGETS or OPS_HOSTS with several pods): "
                         f"{', '.join(wide[:5])}; nothing was {done}")


def _manifest(settings: Settings, csv_name: str, text: str, runs: list[RunSpec], selected: list[RunSpec],
              filters: Filters, force: bool, fail_fast: bool) -> Manifest:
    """What sweep.start sends (wfops.agent.wire.Manifest): the CSV's provenance, every row, the queue, the exec
    block; the sweep id is the UTC second (the pod makes it unique)."""
    now = datetime.now(timezone.utc)
    sweep_id = "sweep-" + now.strftime("%Y%m%dT%H%M%SZ")
    group = settings.wandb_group or sweep_id
    return {
        "sweep_id": sweep_id, "created_at": now.isoformat(timespec="seconds"), "wfops_version": __version__,
        "csv": {"name": csv_name, "sha256": hashlib.sha256(text.encode()).hexdigest()}, "filters": filters,
        "force": force, "fail_fast": fail_fast, "wandb_group": group,
        "runs": plan_runs(settings, runs, {r.run_id for r in selected}),
        "queue": queue_entries(settings, selected, group, launch_script.scripts(settings, selected)),
        "exec": exec_block(settings),
    }


def _start_fleet(settings: Settings, plan: Manifest, text: str, session: str, json: bool, left: str) -> None:
    data = fleet_start.start(settings, plan, text, session)
    share = {n: shares(data["placed"]).get(n, []) for n in data["pods"]}

    def human() -> str:
        lines = [f"started {data['sweep_id']} on {len(data['pods'])} pod(s): {len(data['placed'])} run(s){left}"]
        for name, ids in share.items():
            fail = data["errors"].get(name)
            lines.append(f"  {name}: {len(ids)} run(s)" + (f" NOT STARTED: {fail}" if fail else ""))
        lines.append(f"  watch:    {hints.command('sweep.status', settings=settings)}")
        lines.append(f"  wait:     {hints.command('sweep.wait', settings=settings)}")
        lines.append(f"  move:     {hints.command('sweep.rebalance', settings=settings)}   # runs still waiting, "
                     "off a pod gone or full")
        return "\n".join(lines)

    emit(data, json, human)
    if data["errors"]:
        raise WfopsError(f"{len(data['errors'])} pod(s) did not start their share; sweep.rebalance queues those "
                         "runs on the others", data["worst"])


@wftask(help={"csv": "CSV of the runs to add (same columns and checks as sweep.start's)", "json": JSON_HELP},
        interrupted="the runs may have been added: run sweep.status", required=["csv"], usage="sweep.add --csv FILE")
def add(c: Any, csv: str | None = None, json: bool = False, config: str | None = None) -> None:
    """Append the runs of another CSV to the current sweep.

    Append the runs of another CSV to the current sweep (a run_id it has already is refused); a finished
    sweep's queue starts again with them."""
    settings = settings_for(c, config)
    if not csv:
        raise UsageError("sweep.add needs --csv FILE with the runs to add")
    _, runs = read_runs(settings, csv_path(settings, csv, "sweep.add"))
    _check_nodes(settings, runs, "added")
    session = settings.sweep_tmux_session
    if resolve.is_fleet(settings):
        ledger = load_ledger(settings)
        group = settings.wandb_group or ledger.get("wandb_group") or ledger["sweep_id"]
        entries = queue_entries(settings, runs, group, launch_script.scripts(settings, runs))
        data = fleet_moves.add(settings, runs, entries,
                               plan_runs(settings, runs, {r.run_id for r in runs}))
        emit(data, json, lambda: f"{data['sweep_id']}: {len(data['placed'])} run(s) queued: " + ", ".join(
            f"{rid} on {w[0]}" for rid, w in data["placed"].items()) + fleet_moves.failures_text(data))
        fleet_moves.fleet_exit(data)
        return
    scripts = launch_script.scripts(settings, runs)  # a template error is one line before the pod is asked
    with PodCommand("sweep.add", settings) as cmd:
        current = cmd.call(wire.SWEEP_CURRENT)
        group = settings.wandb_group or current.get("wandb_group") or current["sweep_id"]
        data = cmd.call(wire.SWEEP_ADD, runs=plan_runs(settings, runs, {r.run_id for r in runs}),
                        entries=queue_entries(settings, runs, group, scripts), session=session,
                        exec_block=exec_block(settings))
    emit(data, json, lambda: _queued_text(settings, data))


def _queued_text(settings: Settings, data: dict) -> str:
    how = "its queue started again" if data.get("resumed") else "the running queue takes them next"
    if data.get("not_started"):  # a lost queue: the runs it had not started run again too
        how += f", with the {len(data['not_started'])} run(s) it had not started: " + ", ".join(data["not_started"])
    return (f"{data.get('sweep_id')}: {data.get('queued')} run(s) queued; {how}\n"
            f"  watch: {hints.command('sweep.status', settings=settings)}")


RETRY_HELP = dict(ids="run ids to requeue, comma-separated", json=JSON_HELP,
                  failed="requeue every run that ended failed, timed_out, lost or cancelled")


@wftask(positional=["ids"], help=RETRY_HELP, interrupted="the runs may have been requeued: run sweep.status")
def retry(c: Any, ids: str | None = None, failed: bool = False, json: bool = False, config: str | None = None) -> None:
    """Requeue finished runs of the current sweep.

    One that did not end ok goes on as its next attempt in its run dir (resuming when RESUME_WHEN matches); an ok
    one starts again at attempt 1, the old run dir going to _previous/."""
    settings = settings_for(c, config)
    names = list(dict.fromkeys(n.strip() for n in (ids or "").split(",") if n.strip()))
    if bool(names) == bool(failed):
        raise UsageError("sweep.retry needs run ids (r1,r2) or --failed, not both")
    for name in names:
        bad = check_run_id(name.strip())
        if bad:
            raise UsageError(bad)
    if resolve.is_fleet(settings):
        data = fleet_moves.retry(settings, [n.strip() for n in names], bool(failed))
        emit(data, json, lambda: f"{data['sweep_id']}: {data['queued']} run(s) requeued"
             + fleet_moves.failures_text(data))
        fleet_moves.fleet_exit(data)
        return
    data = call_once("sweep.retry", settings, wire.SWEEP_RETRY, run_ids=[n.strip() for n in names],
                     failed=bool(failed), session=settings.sweep_tmux_session)
    emit(data, json, lambda: _queued_text(settings, data))


def list_sweeps(settings: Settings, member: Member, log: Log = to_stderr) -> dict:
    """Every sweep on one pod, newest first (what `sweep.list --json` prints)."""
    return call_once("sweep.list", settings, wire.SWEEP_LIST, member=member, log=log)


@wftask(help={"json": JSON_HELP})
def list_(c: Any, json: bool = False, config: str | None = None) -> None:
    """List every sweep on the pod, newest first.

    Every sweep on the pod, newest first: id, started, state, totals."""
    on_pods(settings_for(c, config), json, PodWork(list_sweeps, _list_text))


@wftask(help={"sweep": "an older sweep's id (sweep.list shows them; default: the latest)", "json": JSON_HELP,
              "sort": "order the runs by this metric's last value, best first (METRIC_COLUMNS shows it too)",
              "watch": "redraw every SECS (default 2) over one connection until the sweep ends"}, optional=["watch"])
def status(c: Any, sweep: str = "", sort: str | None = None, json: bool = False, watch: str | None = None,
           config: str | None = None) -> None:
    """Show one row per run of a sweep, and the totals.

    One row per run of a sweep (state, attempt, GPUs, exit code, duration, notes, why) and the totals (a fleet:
    every pod's rows in one table with a pod column)."""
    secs = watching.interval(watch)
    settings = settings_for(c, config)
    args: dict[str, Any] = {"sweep": sweep or "", "metric_patterns": settings.metric_sources}
    if resolve.is_fleet(settings):
        _fleet_status(settings, sweep or "", sort, json, secs)
        return
    if secs is not None:  # the loop is wfops/watch.py: one exec per refresh on one session
        with PodCommand("sweep.status", settings) as cmd:
            watching.watch(lambda: cmd.call(wire.SWEEP_STATUS, **args),
                           lambda d: status_text(d, settings.metric_columns, sort),
                           lambda d: (d.get("sweep") or {}).get("state") != RUNNING, secs, json)
        return
    data = call_once("sweep.status", settings, wire.SWEEP_STATUS, **args)
    history.add_history(data, settings.local_artifacts_dir)  # a managed sweep's: which pod ran which attempt
    emit(data, json, lambda: status_text(data, settings.metric_columns, sort))


def _fleet_status(settings: Settings, sweep: str, sort: str | None, json: bool, secs: float | None) -> None:
    patterns = settings.metric_sources
    text = lambda d: status_text(d, settings.metric_columns, sort)  # noqa: E731
    if secs is not None:
        ledger = load_ledger(settings, sweep)
        with fleet_pods.Pods(settings, "sweep.status", only=list(ledger["pods"])) as pods:
            watching.watch(lambda: fleet_status.status(settings, ledger["sweep_id"], patterns, pods), text,
                           lambda d: d["sweep"]["state"] != RUNNING, secs, json)
        return
    data = fleet_status.status(settings, sweep, patterns)
    history.add_history(data, settings.local_artifacts_dir)  # a managed sweep's: which pod ran which attempt
    emit(data, json, lambda: text(data))
    if data["problems"]:
        raise ConnectError(f"{len(data['problems'])} pod(s) of the fleet did not answer; their runs show as unknown")


@wftask(help={"sweep": "the fleet sweep (default: the latest)", "json": JSON_HELP},
        interrupted="runs may have moved: run sweep.status")
def rebalance(c: Any, sweep: str = "", json: bool = False, config: str | None = None) -> None:
    """Fleets: move runs not yet started to pods with room.

    Fleet sweeps: move runs that have not started off unreachable pods and from busy pods to pods with free
    slots (runs an unreachable pod was running become lost; retried elsewhere when RETRY_ON has lost)."""
    settings = settings_for(c, config)
    if not resolve.is_fleet(settings):
        raise UsageError("sweep.rebalance moves runs between the pods of a fleet; the config names one target "
                         "(set LIUM_TARGETS or OPS_HOSTS)")
    data = fleet_moves.rebalance_fleet(settings, sweep or "")

    def human() -> str:
        lines = [f"{data['sweep_id']}: {sum(m['moved'] for m in data['moves'])} run(s) moved"]
        lines += [f"  {m['run_id']}: {m['from']} -> {m['to']} ({m['why']})" + ("" if m["moved"] else
                  f" NOT MOVED: {m['error'] or 'it started meanwhile'}") for m in data["moves"]]
        lines += [f"  {rid}: lost (its pod stopped answering while it ran)" for rid in data["lost_runs"]]
        lines += [f"  {rid}: taken back out of a returned pod's queue" for rid in data["reclaimed"]]
        lines += [f"  pod {n} does not answer: {why}" for n, why in data["down"].items()]
        return "\n".join(lines)

    emit(data, json, human)


@wftask(help={"timeout_secs": "how long to wait for the queue to stop (default KILL_GRACE_SECS + 60)",
              "json": JSON_HELP}, int_options=["timeout_secs"],
        interrupted="the sweep may be stopping or stopped: run sweep.status")
def stop(c: Any, timeout_secs: int | None = None, json: bool = False, config: str | None = None) -> None:
    """Stop the running sweep: cancel the current run.

    Stop the running sweep: the current run is cancelled (final sync included), the rest never start."""
    on_pods(settings_for(c, config), json, PodWork(lambda s, m, log: stop_sweep(s, m, timeout_secs, log), _stopped_text,
                                                  alone=_refuse_idle))


def stop_sweep(settings: Settings, member: Member, timeout_secs: int | None = None, log: Log = to_stderr) -> dict:
    """Stop the sweep running on one pod (waiting up to `timeout_secs`, default KILL_GRACE_SECS + 60): what
    `sweep.stop --json` prints; `was_running` false: nothing ran there, nothing changed."""
    wait = timeout_secs if timeout_secs is not None else int(settings.kill_grace_secs) + 60
    return call_once("sweep.stop", settings, wire.SWEEP_STOP, member=member, log=log, timeout=wait,
                     session=settings.sweep_tmux_session)


def _stopped_text(data: dict) -> str:
    if not data.get("was_running"):  # one pod of a fleet whose share has ended: nothing to stop there is no failure
        return f"nothing to stop here (latest: {data.get('sweep_id')}, {data.get('state')})"
    return f"{data.get('sweep_id')}: {data.get('state')} ({data.get('reason')})"


def _refuse_idle(data: dict) -> None:
    """One pod alone: nothing running is a conflict (exit 10)."""
    if not data.get("was_running"):
        raise ConflictError(f"no sweep is running (latest: {data.get('sweep_id')}, {data.get('state')})")


ns = Collection("sweep", template, validate, start, add, retry, status, stop, rebalance)
ns.add_task(list_, name="list")

ns.add_task(_results.report)
ns.add_task(_results.wait)
ns.add_task(_results.sweep_attach, name="attach")
