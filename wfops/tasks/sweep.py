"""Sweeps: a CSV of training runs, queued in tmux on the pod, one torchrun after another."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

from invoke import Collection

from .. import __version__
from ..agent.states import CANCELLED, FAILED, LOST, PENDING, RUNNING, SKIPPED, SUCCESS, TIMED_OUT
from ..command import PodCommand, call_once
from ..errors import ConflictError, NotFoundError, UsageError
from ..output import duration, table
from ..sweep_model import TEMPLATE_CSV, parse_csv, select_runs, train_args
from ._base import JSON_HELP, emit, settings_for, tmux_attach, wftask

CSV_HELP = "sweep CSV on this machine (default: SWEEP_CSV)"
TOTALS_ORDER = (SUCCESS, FAILED, TIMED_OUT, RUNNING, PENDING, LOST, SKIPPED, CANCELLED)
ALWAYS_SHOWN = (SUCCESS, FAILED, RUNNING, PENDING, LOST)


def _csv_path(settings, csv: str | None) -> Path:
    path = Path(csv or settings.values["SWEEP_CSV"]).expanduser()
    if not path.is_file():
        raise NotFoundError(f"sweep CSV not found: {path} (write a starter with sweep.template)")
    return path


def _read_runs(settings, path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    return text, parse_csv(text, settings["TRAIN_INJECT"])


@wftask(help={"csv": CSV_HELP})
def template(c, csv=None, config=None):
    """Write a starter sweep CSV at SWEEP_CSV (never overwrites)."""
    settings = settings_for(c, config)
    path = Path(csv or settings.values["SWEEP_CSV"]).expanduser()
    if path.exists():
        raise ConflictError(f"{path} exists; not overwritten (remove it or pass --csv with another path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE_CSV)
    print(f"wrote {path}: edit it, check it with sweep.validate, start it with sweep.start")


@wftask(help={"csv": CSV_HELP, "workdir": "a local copy of the training workdir: also check that every config exists",
              "json": JSON_HELP})
def validate(c, csv=None, workdir=None, json=False, config=None):
    """Check a sweep CSV here, without the pod: every bad row is reported with its line number."""
    settings = settings_for(c, config)
    path = _csv_path(settings, csv)
    _, runs = _read_runs(settings, path)
    if workdir:
        missing = [f"line {r.line}: config {r.config} does not exist in {workdir}" for r in runs
                   if not (Path(workdir) / r.config).is_file()]
        if missing:
            raise UsageError(f"{len(missing)} missing config(s)\n  " + "\n  ".join(missing))
    selected = {r.run_id for r in select_runs(runs, settings.values["SWEEP_MATCH"], settings.values["SWEEP_START_AT"],
                                             settings["SWEEP_LIMIT"])}
    data = {"csv": str(path), "runs": [dict(r.as_dict(), selected=r.run_id in selected) for r in runs]}
    emit(data, json, lambda: table(
        ("line", "run_id", "config", "seed", "overrides", "queued"),
        [(r.line, r.run_id, r.config, r.seed, " ".join(f"{k}={v}" for k, v in r.overrides),
          "yes" if r.run_id in selected else "no (filters)") for r in runs],
    ) + f"\n{len(runs)} run(s) valid; {len(selected)} would be queued with the current filters")


@wftask(help={"csv": CSV_HELP, "json": JSON_HELP}, interrupted="the sweep may have started: run sweep.status")
def start(c, csv=None, json=False, config=None):
    """Validate the CSV, upload it with provenance, and start the queue in tmux on the pod."""
    settings = settings_for(c, config)
    path = _csv_path(settings, csv)
    text, runs = _read_runs(settings, path)
    v = settings.values
    selected = select_runs(runs, v["SWEEP_MATCH"], v["SWEEP_START_AT"], settings["SWEEP_LIMIT"])
    now = datetime.now(timezone.utc)
    sweep_id = "sweep-" + now.strftime("%Y%m%dT%H%M%SZ")
    group = v["WANDB_GROUP"] or sweep_id
    chosen = {r.run_id for r in selected}
    plan = {
        "sweep_id": sweep_id, "created_at": now.isoformat(timespec="seconds"), "wfops_version": __version__,
        "csv": {"name": path.name, "sha256": hashlib.sha256(text.encode()).hexdigest()},
        "filters": {"match": v["SWEEP_MATCH"], "start_at": v["SWEEP_START_AT"], "limit": settings["SWEEP_LIMIT"]},
        "force": settings["SWEEP_FORCE"], "fail_fast": settings["SWEEP_FAIL_FAST"], "wandb_group": group,
        "runs": [dict(r.as_dict(), selected=r.run_id in chosen) for r in runs],
    }
    queue = [{"run_id": r.run_id, "config": r.config, "seed": r.seed, "notes": r.notes,
              "args": train_args(settings, r, group)} for r in selected]
    inject = set(settings["TRAIN_INJECT"])
    plan["queue"] = queue
    plan["exec"] = {  # everything the pod's scheduler needs; the manifest is its only input
        "repo": v["OPS_REMOTE_REPO"], "workdir": f"{v['OPS_REMOTE_REPO'].rstrip('/')}/{v['TRAIN_WORKDIR']}",
        "train_script": v["TRAIN_SCRIPT"], "data_dir": v["DATA_DIR"], "local_root": v["RUN_OUT_LOCAL_ROOT"],
        "cpu_only": bool(settings["CPU_ONLY"]), "nproc": settings["TRAIN_NPROC"], "arg_style": v["TRAIN_ARG_STYLE"],
        "mode": v["RUN_OUT_MODE"], "sync_secs": settings["SYNC_INTERVAL_SECS"],
        "timeout_secs": settings["RUN_TIMEOUT_SECS"], "grace_secs": settings["KILL_GRACE_SECS"],
        "inject_out_dir": "out_dir" in inject, "inject_data_dir": "data_dir" in inject,
    }
    session = v["SWEEP_TMUX_SESSION"]
    with PodCommand("sweep.start", settings) as cmd:
        data = cmd.call("sweep-start", manifest=plan, csv_text=text, session=session)
    skipped = len(runs) - len(queue)
    emit(data, json, lambda: (
        f"started {sweep_id}: {len(queue)} run(s) queued" + (f" ({skipped} left out by the filters)" if skipped else "")
        + f"\n  watch:  inv sweep.status   |   {tmux_attach(settings, session)}\n  manifest: {data.get('manifest')}"
    ))


def _status_text(data: dict) -> str:
    sw = data.get("sweep") or {}
    runs = data.get("runs") or []
    if sw.get("state") == "none":
        return "no sweep has been started on this pod (sweep.start)"
    head = f"{sw.get('sweep_id')}: {sw.get('state')}" + (f" ({sw['reason']})" if sw.get("reason") else "")
    note = (data.get("workflow") or {}).get("note")
    if note:
        head += f"\nworkflow state: {note}"
    for problem in data.get("problems") or []:
        head += f"\nwarning: {problem}"
    rows = [(r["run_id"], r["state"], r.get("exit_code"), duration(r.get("duration_secs")),
             " ".join(str(r.get("notes") or "").split())[:40], r.get("note")) for r in runs]
    totals = data.get("totals") or {}
    line = " / ".join(f"{totals.get(k, 0)} {'ok' if k == SUCCESS else k}" for k in TOTALS_ORDER
                      if totals.get(k) or k in ALWAYS_SHOWN)
    return f"{head}\n\n" + table(("run_id", "state", "exit", "duration", "notes", "why"), rows) + f"\n\n{line}"


@wftask(help={"json": JSON_HELP})
def status(c, json=False, config=None):
    """One row per run of the latest sweep (state, exit code, duration, notes) and the totals."""
    settings = settings_for(c, config)
    data = call_once("sweep.status", settings, "sweep-status")
    emit(data, json, lambda: _status_text(data))


@wftask(help={"timeout_secs": "how long to wait for the queue to stop (default KILL_GRACE_SECS + 60)",
              "json": JSON_HELP}, int_options=["timeout_secs"],
        interrupted="the sweep may be stopping or stopped: run sweep.status")
def stop(c, timeout_secs=None, json=False, config=None):
    """Stop the running sweep: the current run is cancelled (final sync included), the rest never start."""
    settings = settings_for(c, config)
    wait = timeout_secs if timeout_secs is not None else int(settings["KILL_GRACE_SECS"]) + 60
    data = call_once("sweep.stop", settings, "sweep-stop", timeout=wait, session=settings.values["SWEEP_TMUX_SESSION"])
    if not data.get("was_running"):
        raise ConflictError(f"no sweep is running (latest: {data.get('sweep_id')}, {data.get('state')})")
    emit(data, json, lambda: f"{data.get('sweep_id')}: {data.get('state')} ({data.get('reason')})")


ns = Collection("sweep", template, validate, start, status, stop)

from . import results as _results  # noqa: E402 - report, wait and attach live there (it imports this module late)

ns.add_task(_results.report)
ns.add_task(_results.wait)
ns.add_task(_results.sweep_attach, name="attach")
