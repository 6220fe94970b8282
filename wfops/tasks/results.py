"""What a researcher looks at: `sweep.report` (results.csv + curves.png here), `sweep.wait`, `sweep.attach`,
`run.logs`, `task.logs` and `task.attach`. Registered in the sweep, run and task collections."""

from __future__ import annotations

import csv
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from wfops.agent.states import EXIT_LOST, EXIT_WAIT_TIMEOUT, LOST, QUEUE_NONE, SKIPPED, SUCCESS
from wfops.errors import EXIT_CONFLICT, EXIT_FAILED, ConnectError, NotFoundError, UsageError, WfopsError
from wfops.output import duration, table, visible
from wfops.settings.load import Settings
from wfops.sweeps import curves, fleet_status
from wfops.sweeps.billing import cost_line, usd
from wfops.sweeps.metrics import (
    REPORT_FIXED,
    choose_columns,
    fmt,
    report_columns,
    report_header,
    report_row,
    report_sort,
)
from wfops.sweeps.model import check_run_id
from wfops.sweeps.status import status_text
from wfops.targets import resolve
from wfops.tasks._base import JSON_HELP, emit, settings_for, wftask
from wfops.tracked import check_task_id
from wfops.transport.attach import attach
from wfops.transport.command import PodCommand

REPORT_EXTRA = "wfops[report]"


class LineSink:
    """Streamed log bytes -> whole lines on stdout, secrets masked, control characters made visible.

    The reader of stdout gone (`run.logs --follow | head -5`): in the main thread (through a keeper) the
    BrokenPipeError ends the command; in a session's reader thread (`local`, a cold SSH connection) it would end
    that thread alone, while the main thread waits for a log followed for ever: the main thread is sent SIGINT,
    and the exec ends as for Ctrl-C (the script hung up, its channel closed); `_stream` turns that back into the
    reader gone (the boundary's quiet 141)."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.buffer, self.reader_gone = settings, b"", False

    def __call__(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        if lines and not self.reader_gone:
            text = "".join(visible(self.settings.mask(ln.decode("utf-8", "replace"))) + "\n" for ln in lines)
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except BrokenPipeError:
                if threading.current_thread() is threading.main_thread():
                    raise
                self.reader_gone = True
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def close(self) -> None:
        if self.buffer:
            self.buffer += b"\n"
            self(b"")


def _stream(settings: Settings, command: str, agent_command: str, **data: object) -> None:
    sink = LineSink(settings)
    with PodCommand(command, settings) as cmd:
        request = cmd.request(agent_command, data)
        try:
            result = cmd.exec("agent.sh.j2", stdout_sink=sink, request=request, dry_run=False)
        except KeyboardInterrupt:
            if sink.reader_gone:  # not Ctrl-C: the sink's SIGINT (see LineSink)
                raise BrokenPipeError() from None
            raise
        sink.close()
        result.check(command)


# ------------------------------------------------------------------ logs

@wftask(positional=["run_id"], int_options=["tail", "rank"], required=["run_id"],
        usage="run.logs RUN_ID [--follow] [--tail N] [--rank R]", help={
    "run_id": "the run (a directory in OPS_REMOTE_OUTPUTS_DIR)",
    "follow": "keep printing new lines until the run ends (waits for a queued run to start)",
    "tail": "only the last N lines (default: the whole log)",
    "rank": "only the lines of this rank (lines without a rank prefix belong to rank 0)",
})
def logs(c: Any, run_id: str | None = None, follow: bool = False, tail: int | None = None, rank: int | None = None,
         config: str | None = None) -> None:
    """Print or follow a run's stdout.log.

    Print a run's stdout.log (each line time-stamped), or follow it live until the run ends."""
    bad = check_run_id(run_id or "")
    if bad:
        raise UsageError(bad)
    settings = settings_for(c, config)
    _stream(settings, "run.logs", "run-logs", run_id=run_id, follow=bool(follow), tail=tail or 0,
            rank=-1 if rank is None else rank)


@wftask(name="logs", positional=["id"], int_options=["tail"], required=["id"],
        usage="task.logs ID [--follow] [--tail N]", help={
    "id": "task id (also --id ID)", "follow": "keep printing new lines until the task ends",
    "tail": "only the last N lines (default: the whole log)",
})
def task_logs(c: Any, id: str | None = None, follow: bool = False, tail: int | None = None,
              config: str | None = None) -> None:
    """Print or follow a tracked task's stdout.log.

    Print a tracked task's stdout.log, or follow it live until the task ends."""
    task_id = check_task_id(id)
    settings = settings_for(c, config)
    _stream(settings, "task.logs", "task-logs", id=task_id, follow=bool(follow), tail=tail or 0)


# ------------------------------------------------------------------ attach

@wftask(name="attach")
def sweep_attach(c: Any, config: str | None = None) -> None:
    """Open the sweep's tmux session here (detach: Ctrl-b d).

    Open the sweep's tmux session on the pod in this terminal (detach with Ctrl-b d; the sweep goes on)."""
    settings = settings_for(c, config)
    attach(settings, settings.sweep_tmux_session, what="the sweep")


@wftask(name="attach", positional=["id"], required=["id"], usage="task.attach ID",
        help={"id": "task id (also --id ID)"})
def task_attach(c: Any, id: str | None = None, config: str | None = None) -> None:
    """Open a task's tmux window here (detach: Ctrl-b d).

    Open a tracked task's tmux window on the pod in this terminal (detach with Ctrl-b d; the task goes on)."""
    task_id = check_task_id(id)
    settings = settings_for(c, config)
    attach(settings, settings.wf_tmux_session, window=task_id, what=f"task {task_id}")


# ------------------------------------------------------------------ wait

def wait_code(data: dict) -> tuple[int, str]:
    """(exit code, why) of sweep.wait: 0 when every run succeeded (or was already ok), 8 when the queue runner
    died, 9 when waiting gave up, 10 when every run succeeded but some ran twice (a fleet), else 1."""
    runs = data.get("runs") or []
    sweep = data.get("sweep") or {}
    if data.get("wait_timed_out"):
        return EXIT_WAIT_TIMEOUT, f"{sweep.get('sweep_id')} is still running"
    if sweep.get("state") == LOST:
        return EXIT_LOST, f"{sweep.get('sweep_id')}: the queue was lost ({sweep.get('reason')})"
    bad = [r["run_id"] for r in runs if r.get("state") not in (SUCCESS, SKIPPED)]
    if bad:
        return EXIT_FAILED, f"{len(bad)} of {len(runs)} run(s) did not succeed: {', '.join(bad[:10])}"
    twice = data.get("duplicates") or {}
    if twice:  # a fleet: a run moved off a cut-off pod ran there too (wfops.sweeps.fleet_copies)
        return EXIT_CONFLICT, (f"{len(twice)} run(s) ran on two pods (GPU time wasted; each counted once): "
                               + "; ".join(d["note"] for d in list(twice.values())[:3]))
    return 0, ""


@wftask(int_options=["timeout_secs"], help={
    "timeout_secs": "give up after this many seconds (exit 9; default: wait until the queue ends)",
    "recover": "a managed sweep: replace a lost Lium pod (wait for a lost SSH host) and restart its runs "
               "(RECOVER_AFTER_SECS, RECOVER_MAX; docs/recovery.md)",
    "down_when_done": "with --recover: once the sweep has ended, fetch every run, then remove the pods it rented",
    "json": JSON_HELP,
})
def wait(c: Any, timeout_secs: int | None = None, recover: bool = False, down_when_done: bool = False,
         json: bool = False, config: str | None = None) -> None:
    """Wait until the sweep ends; exit 0 if every run succeeded.

    Wait until the sweep ends and print its status; exit 0 only if every run succeeded.

    Exit codes: 0 every run succeeded (or was already ok); 1 some run did not; 8 the queue runner died (with
    --recover: RECOVER_MAX recoveries spent); 9 gave up waiting (--timeout-secs); 5 no sweep was started; 10 (a
    fleet) every run succeeded but some ran on two pods (a partition: docs/fleets.md). On a fleet it waits on every
    pod's queue at once and runs sweep.rebalance when a pod stops answering or runs wait next to free slots.
    --recover replaces lost pods and restarts their runs (docs/recovery.md).
    """
    settings = settings_for(c, config)
    if down_when_done and not recover:
        raise UsageError("--down-when-done works with --recover (a managed sweep knows which pods it rented)")
    book = None
    if recover:
        from wfops.tasks import managed  # its bodies import run.fetch, which imports this module

        book, data = managed.managed(settings, timeout_secs, settings.metric_sources)
    elif resolve.is_fleet(settings):  # polls the pods' joined status; rebalances on the way (fleet_status.wait)
        data = fleet_status.wait(settings, timeout_secs, settings.metric_sources)
    else:
        with PodCommand("sweep.wait", settings) as cmd:
            data = cmd.call("sweep-wait", timeout=timeout_secs or 0, patterns=settings.metric_sources)
    if (data.get("sweep") or {}).get("state") == QUEUE_NONE:
        raise NotFoundError("no sweep has been started on this pod (sweep.start)")
    emit(data, json, lambda: status_text(data, settings.metric_columns))
    if book is not None and down_when_done and not data.get("wait_timed_out"):
        from wfops.tasks import managed_down

        managed_down.down_when_done(settings, book)
    code, why = wait_code(data)
    if code:
        raise WfopsError(why, code)


# ------------------------------------------------------------------ report

def _write_csv(path: Path, runs: list[dict], keys: list[str], metrics: list[str]) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(report_header(keys, metrics))
        for run in runs:
            out.writerow(["" if v is None else v for v in report_row(run, keys, metrics)])


def _plot(path: Path, runs: list[dict], metrics: list[str], configured: list[str]) -> str:
    """curves.png (wfops/sweeps/curves.py): a panel per metric, value against step, a labelled series per run.
    Returns a note."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"curves.png not written: matplotlib is not installed (pip install '{REPORT_EXTRA}')"
    shown = curves.panels(runs, metrics, configured)
    if not shown:
        return "curves.png not written: no run reported a metric"
    fig = curves.figure(shown)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return ""


def _report_table(runs: list[dict], metrics: list[str]) -> str:
    costs = ["cost"] if any(r.get("cost_usd") is not None for r in runs) else []  # a known price
    head = ["run_id", "state", "attempts", "duration", *costs]
    for m in metrics:
        head += [m, f"best {m}"]
    rows = []
    for run in runs:
        row = [run.get("run_id"), run.get("state"), run.get("attempts"), duration(run.get("duration_secs")),
               *(usd(run.get("cost_usd")) for _ in costs)]
        values = report_row(run, [], metrics)[len(REPORT_FIXED):]
        rows.append(row + [fmt(v) for v in values])
    return table(head, rows)


@wftask(help={"out": "folder for results.csv and curves.png (default: LOCAL_ARTIFACTS_DIR/_reports/SWEEP_ID)",
              "sort": "order the table by the best value of this metric (default: the first metric column)",
              "json": JSON_HELP})
def report(c: Any, out: str | None = None, sort: str | None = None, json: bool = False,
           config: str | None = None) -> None:
    """Write results.csv and curves.png, and rank the runs.

    Write results.csv and curves.png of the latest sweep here and print its runs sorted by a metric.

    The metrics are read on the pod (metrics.jsonl, else METRIC_PATTERNS on the log) in one exec, no fetch.
    """
    settings = settings_for(c, config)
    if resolve.is_fleet(settings):  # every pod's runs of the fleet sweep, in one report
        data = fleet_status.metrics(settings, settings.metric_sources)
        for name, why in data["down"].items():
            print(f"wfops: pod {name} does not answer ({why}): its runs are not in the report", file=sys.stderr)
    else:
        with PodCommand("sweep.report", settings) as cmd:
            data = cmd.call("sweep-metrics", patterns=settings.metric_sources)
    sweep_id = (data.get("sweep") or {}).get("sweep_id")
    if (data.get("sweep") or {}).get("state") == QUEUE_NONE or not sweep_id:
        raise NotFoundError("no sweep has been started on this pod (sweep.start)")
    runs = data.get("runs") or []
    keys, metrics = report_columns(runs, list(settings.metric_columns))
    shown = choose_columns(list(settings.metric_columns), metrics, sort)  # the table's; the files have all
    runs = report_sort(runs, sort or (shown[0] if shown else None))
    folder = Path(out) if out else Path(settings.local_artifacts_dir).expanduser() / "_reports" / sweep_id
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_csv(folder / "results.csv", runs, keys, metrics)
        note = _plot(folder / "curves.png", runs, metrics, list(settings.metric_columns))
    except OSError as exc:
        raise UsageError(f"cannot write the report in {folder}: {exc.strerror or exc}") from None
    if note:
        print(f"wfops: {note}", file=sys.stderr)
    files = {"csv": str((folder / "results.csv").resolve()),
             "png": None if note else str((folder / "curves.png").resolve())}
    emit({"sweep_id": sweep_id, "files": files, "runs": runs, "cost": data.get("cost")}, json, lambda: (
        f"{sweep_id}: {len(runs)} run(s)" + (f", sorted by best {sort or shown[0]}" if shown else "")
        + "\n\n" + _report_table(runs, shown) + (f"\n\n{cost_line(data.get('cost'))}" if cost_line(data.get("cost"))
                                                 else "") + f"\n\nresults: {files['csv']}"
        + (f"\ncurves:  {files['png']}" if files["png"] else "")))
    if data.get("down"):
        raise ConnectError(f"{len(data['down'])} pod(s) of the fleet did not answer; the report lacks their runs")
