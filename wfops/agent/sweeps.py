"""Sweeps on the pod: start (checks, manifests, the queue in tmux), the status table, stop, and the list of
run dirs to fetch. The queue itself is scheduler.py; the table's rows and their totals are rows.py."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time

from . import addtokens, cost, launch, procs, runscript, store, wire, workflow
from . import argv as argv_words
from .registry import Refusal, command
from .rows import count, keep_rows, status_rows
from .states import (
    ALL_GPUS,
    CANCELLED,
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_REMOTE,
    EXIT_USAGE,
    LATEST_CSV,
    MANIFESTS_DIR,
    PENDING,
    QUEUE_COMPLETED,
    QUEUE_RUNNING,
    QUEUE_STOPPED,
    RUNNING,
    RUNS_RECORD,
    STATUS_FILE,
    SWEEP_RECORD,
    SWEEP_RUNNING,
    UNKNOWN,
    pod_path,
)
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

    from .states import Layout
    from .wire import ExecBlock, Json, Manifest, QueueEntry, RunRow, SweepStarted

SWEEP_ID = re.compile(r"sweep-\d{8}T\d{6}Z(?:-[0-9A-Za-z]{1,20})?")  # sweep.start names them by UTC time


def _guard(pod: Layout) -> None:
    sw, problem = store.load_or_note(pod.sweep_file)
    if problem:
        raise Refusal(EXIT_REMOTE, problem + "; if no sweep runs, remove it and start again")
    state = procs.queue_liveness(sw)[0]
    if state == QUEUE_RUNNING:
        raise Refusal(EXIT_CONFLICT, "sweep {} is still running (queue pid {}, since {}); watch it with sweep.status "
                      "or end it with sweep.stop".format(sw.get("sweep_id"), sw.get("pid"), sw.get("started_at")))
    sid = str((sw or {}).get("sweep_id"))
    if sw and "totals" not in sw and SWEEP_ID.fullmatch(sid):  # its queue died: are its runs' supervisors gone too?
        plan = store.load_plan_or_note(os.path.join(pod.manifests, "%s.json" % sid))[0]
        if plan:
            refuse_ending(pod, sid, status_rows(pod, plan, state), "sweep.start", "started")


def refuse_ending(pod: Layout, sid: str, rows: List[Json], command_name: str, what: str) -> None:
    """Refusal (exit 10) while a run of sweep `sid`, whose queue runner is gone, still has its supervisor: it is
    ending its processes (SIGHUP, up to KILL_GRACE_SECS) and records the run `lost` when they are gone. A queue
    started now would start that run again in the same run dir beside the old one, or hand out its GPUs twice."""
    ending = [r["run_id"] for r in rows if r["state"] == RUNNING]
    if not ending:
        return
    pids = [str((store.load_or_note(os.path.join(pod.run_dir(rid), STATUS_FILE))[0] or {}).get("pid"))
            for rid in ending[:5]]
    raise Refusal(EXIT_CONFLICT, "the queue runner of %s is gone, but %d run(s) of it are still ending: %s; their "
                  "supervisors end their processes (within KILL_GRACE_SECS) and record them lost; nothing was %s: "
                  "wait until sweep.status shows them ended, then run %s again" % (
                      sid, len(ending), ", ".join("%s (supervisor pid %s)" % x for x in zip(ending, pids))
                      + (", ..." if len(ending) > 5 else ""), what, command_name))


def _check_workdir(ex: ExecBlock, runs: List[RunRow]) -> None:
    if not os.access(os.path.join(ex["repo"], ".venv", "bin", "python"), os.X_OK):
        raise Refusal(EXIT_REMOTE, "no venv at %s/.venv; run checkout first" % ex["repo"])
    missing = argv_words.missing_script(ex["train_script"], ex["workdir"])
    if missing:
        raise Refusal(EXIT_NOT_FOUND, missing)
    gone = argv_words.missing_configs([(run.get("line"), run["config"]) for run in runs], ex["workdir"])
    if gone:
        raise Refusal(EXIT_USAGE, "the sweep CSV names %d missing config(s); nothing was uploaded or started: %s"
                      % (len(gone), "; ".join(gone)))


def _write_manifests(pod: Layout, manifest: Manifest, csv_text: Optional[str]) -> str:
    sid = manifest["sweep_id"]
    m = pod.manifests
    if csv_text is not None:  # sweep.add / sweep.retry keep the sweep's own CSV and env copy
        _write_first_files(pod, sid, csv_text)
    path = os.path.join(m, sid + ".json")
    data = store.json_bytes(manifest)  # serialized once: a 150,000-run manifest is tens of MB
    store.write_bytes(path, data)
    store.write_bytes(pod.latest_manifest, data)
    return path


def load_manifest(path: str) -> Manifest:
    """The queue's manifest, checked like sweep-start checked it (and with the pod layout sweep-start added);
    Refusal(EXIT_USAGE) naming the first bad field: the queue never starts on a manifest it cannot run."""
    m = store.load(path, required=("pod",))
    if m is None:
        raise Refusal(EXIT_USAGE, "no manifest at %s; the queue did not start" % path)
    fault = runscript.manifest_problem(m)
    if fault:
        raise Refusal(EXIT_USAGE, "manifest %s: %s; the queue did not start" % (path, fault))
    return m  # type: ignore[no-any-return]


def _write_first_files(pod: Layout, sid: str, csv_text: str) -> None:
    m = pod.manifests
    store.write_bytes(os.path.join(m, sid + ".csv"), csv_text.encode())
    store.write_bytes(os.path.join(m, LATEST_CSV), csv_text.encode())
    if pod.env_path and os.path.isfile(pod.env_path):
        with open(pod.env_path, "rb") as fh:
            store.write_bytes(os.path.join(m, "workflow-%s.env" % sid[len("sweep-"):]), fh.read(), mode=0o600)


def _check_fit(ex: ExecBlock, runs: List[QueueEntry]) -> None:
    """Where the slot count is known before the queue starts (WF_FAKE_GPUS, or one slot on a CPU target),
    a row that asks for more GPUs than that is refused now rather than failed later."""
    known = int(ex.get("fake_gpus") or 0) or (1 if ex.get("cpu_only") else 0)
    if not known:
        return
    bad = ["line %s: %s asks for %s GPU(s)" % (r.get("line"), r["run_id"], r["gpus"]) for r in runs
           if str(r.get("gpus") or ALL_GPUS).isdigit() and int(r["gpus"]) > known]
    if bad:
        where = ("WF_FAKE_GPUS=%s" % ex["fake_gpus"] if ex.get("fake_gpus")
                 else "CPU_ONLY=1 (set WF_FAKE_GPUS to pretend more)")
        raise Refusal(EXIT_USAGE, "the pod has %d GPU slot(s) (%s); nothing was started: %s"
                      % (known, where, "; ".join(bad)))


def _check_nodes(ex: ExecBlock, entries: List[QueueEntry]) -> None:
    """A node of a multi-node run (a queue entry's "node") needs torchrun: its rendezvous joins the nodes."""
    bad = [e["run_id"] for e in entries if e.get("node")]
    if bad and ex.get("launcher") == "python":
        raise Refusal(EXIT_USAGE, "multi-node needs torchrun (TRAIN_LAUNCHER=torchrun), not launcher python: %s; "
                      "nothing was started" % ", ".join(bad))


def _check_scripts(entries: List[QueueEntry]) -> None:
    """Each entry's launch script (runscript.py) is one the queue can fill in, or nothing starts."""
    bad = ["%s: %s" % (e.get("run_id"), runscript.problem(e.get("script"))) for e in entries
           if runscript.problem(e.get("script"))]
    if bad:
        raise Refusal(EXIT_USAGE, "%s; nothing was started" % "; ".join(bad[:5]))


def launch_queue(pod: Layout, sid: str, path: str, session: str, before: str) -> int:
    """Start the scheduler of sweep `sid` on manifest `path` in a fresh tmux session; on failure put the
    workflow state back to `before`. Returns the pane pid."""
    launch.tmux_kill_session(pod, session)
    shell = "exec " + launch.shell_words(launch.agent_argv(wire.SWEEP_RUN, path))
    try:
        pid, _ = launch.tmux_window(pod, session, "sweep", shell, new_session=True)
    except Refusal as exc:
        store.update_json(pod.sweep_file, {"state": QUEUE_COMPLETED, "reason": "tmux could not start the queue: "
                                           + exc.message}, keep_terminal=False)
        workflow.force(pod, before, "sweep.start", "tmux failed to start")
        raise Refusal(EXIT_REMOTE, "tmux could not start the sweep: %s" % exc.message) from None
    launch.record_runner(pod.sweep_file, pid, belongs=lambda sw: sw.get("sweep_id") == sid)
    return pid


def record_sweep(pod: Layout, record: Json) -> None:
    """sweep.json, and its copy kept with the manifests (what sweep.list reads once the sweep is over)."""
    store.write_json(pod.sweep_file, record)
    store.write_json(os.path.join(pod.manifests, record["sweep_id"] + SWEEP_RECORD), record)


def settle_lost(pod: Layout, new_sid: str) -> None:
    """The sweep before `new_sid` whose queue never ended (no totals: killed, a reboot): its rows as they are before
    the new runs rewrite their dirs, kept as an ended queue keeps them (sweep.status --sweep, sweep.list)."""
    prev, problem = store.load_or_note(pod.sweep_file)
    if problem or not prev or "totals" in prev:  # no sweep before it, a damaged record, or its queue's end counted it
        return
    sid = str(prev.get("sweep_id"))
    if sid == new_sid or not SWEEP_ID.fullmatch(sid):  # the new sweep itself, or no sweep's id
        return
    plan = store.load_plan_or_note(os.path.join(pod.manifests, "%s.json" % sid))[0]
    if not plan:  # its manifest is gone or damaged
        return
    state, reason = procs.queue_liveness(prev)
    rows = status_rows(pod, plan, state)
    for row in rows:  # a run it never started is cancelled; one still running when the new sweep started says so
        if row["state"] == PENDING:
            row.update(state=CANCELLED, note="not started: its queue runner was lost; %s started after it" % new_sid)
        elif row["state"] == RUNNING:
            row["note"] = "; ".join(filter(None, [row["note"], "still running when %s started" % new_sid]))
    last_end = keep_rows(pod, sid, rows, prev.get("billing") or {})  # as the queue's end keeps them
    store.write_json(os.path.join(pod.manifests, sid + SWEEP_RECORD), dict(  # its open span ends where it left it
        prev, state=state, reason=reason, totals=count(rows), spans=cost.closed_spans(prev, False, last_end)))


def _unique_id(pod: Layout, manifest: Manifest) -> None:
    """Sweep ids are the UTC second sweep.start ran in: a second sweep within that second (one whose runs
    are all skipped ends at once) gets `-2`, `-3`, ... instead of overwriting the first one's files. The W&B
    group that defaulted to the id follows it."""
    sid = base = manifest["sweep_id"]
    n = 1
    while os.path.exists(os.path.join(pod.manifests, sid + ".json")):
        n += 1
        sid = "%s-%d" % (base, n)
    if sid == base:
        return
    manifest["sweep_id"] = sid
    if manifest.get("wandb_group") == base:
        manifest["wandb_group"] = sid
        for run in manifest["queue"]:
            run["args"] = [a.replace("wandb_group=" + base, "wandb_group=" + sid)
                           if a.endswith("wandb_group=" + base) else a for a in run.get("args") or []]


@command(wire.SWEEP_START)
def sweep_start(pod: Layout, manifest: Manifest, csv_text: str, session: str) -> SweepStarted:
    """Check, write the manifests, record the sweep, and start the scheduler in tmux (window `sweep`)."""
    _guard(pod)
    ex = manifest["exec"]
    for key in ("repo", "workdir", "data_dir", "local_root"):
        ex[key] = pod_path(ex[key])
    _check_workdir(ex, manifest["runs"])
    _check_fit(ex, manifest["queue"])
    _check_nodes(ex, manifest["queue"])
    _check_scripts(manifest["queue"])
    _unique_id(pod, manifest)
    sid, queued = manifest["sweep_id"], len(manifest["queue"])
    from .facts import git_sha  # imported here: sweep-status, a hot read-only command, does not need it

    manifest["git_sha"], manifest["pod"] = git_sha(ex["repo"]), pod.as_dict()
    before = workflow.read_state(pod.state_file)["state"]
    with procs.signals_deferred():  # started fully or not at all: a Ctrl-C (local target) waits for the end
        try:
            settle_lost(pod, sid)
            with store.all_or_none(written := pod.sweep_files(sid)):  # each put back as it was on a failure
                path = _write_manifests(pod, manifest, csv_text)
                record_sweep(pod, {
                    "sweep_id": sid, "state": RUNNING, "started_at": store.now_iso(), "boot_id": procs.boot_id(),
                    "session": session, "runs": queued, "plan": "%s/%s.json" % (MANIFESTS_DIR, sid),
                    "runner_log": "%s/%s.log" % (MANIFESTS_DIR, sid)})
                workflow.succeed(pod, "sweep.start", "%s: %d run(s)" % (sid, queued))
        except OSError as e:
            raise Refusal(EXIT_REMOTE, "%scannot write the files of %s (%s); it was not started" % (
                "the disk is full: " if store.is_disk_full(e) else "", sid, e.strerror or e)) from None
        pid = launch_queue(pod, sid, path, session, before)
    return {"sweep_id": sid, "session": session, "queued": queued, "pid": pid, "manifest": written[0]}


def _workflow_note(pod: Layout, queue_state: str) -> Json:
    try:
        recorded = workflow.read_state(pod.state_file)["state"]
    except store.Damaged as exc:
        return {"state": UNKNOWN, "note": workflow.damaged_message(exc)}
    if recorded == SWEEP_RUNNING and queue_state != QUEUE_RUNNING:
        return {"state": recorded, "note": "still SWEEP_RUNNING on record: the next command that changes the pod "
                "records SWEEP_COMPLETED"}
    return {"state": recorded, "note": ""}


def sweep_files(pod: Layout, sweep: str) -> Tuple[str, str]:
    """(record path, manifest path) of sweep `sweep` ("" = the latest); Refusal when there is no such sweep."""
    if not sweep:
        return pod.sweep_file, pod.latest_manifest
    if not SWEEP_ID.fullmatch(sweep):
        raise Refusal(EXIT_USAGE, "invalid sweep id %r (sweep.list shows the ids)" % sweep)
    plan = os.path.join(pod.manifests, sweep + ".json")
    if not os.path.isfile(plan):
        raise Refusal(EXIT_NOT_FOUND, "no sweep %s on this pod (sweep.list shows the sweeps)" % sweep)
    current = (store.load_or_note(pod.sweep_file)[0] or {}).get("sweep_id")
    record = pod.sweep_file if current == sweep else os.path.join(pod.manifests, sweep + SWEEP_RECORD)
    return record, plan


@command(wire.SWEEP_STATUS)
def sweep_status(pod: Layout, sweep: str = "", metric_patterns: Optional[List[str]] = None,
                 abandon: Optional[List[str]] = None) -> Json:
    """A sweep (the latest, or `sweep`): queue state, one row per selected run, totals. Reads only, but for
    `abandon` (a fleet's sweep.add tokens the client gave up on: addtokens.py), settled before the rows are read."""
    record, manifest = sweep_files(pod, sweep)
    sw, bad_sw = store.load_or_note(record)
    adds = addtokens.answer(pod, sweep or (sw or {}).get("sweep_id"), abandon)
    plan, bad_plan = store.load_plan_or_note(manifest)
    state, reason = (UNKNOWN, bad_sw) if bad_sw else procs.queue_liveness(sw)
    if sweep and not sw and not bad_sw:
        state, reason = UNKNOWN, "no record of how this sweep ended (started by an older wfops)"
    frozen = store.load_or_note(os.path.join(pod.manifests, sweep + RUNS_RECORD))[0] if (
        sweep and record != pod.sweep_file) else None
    out_dirs: Dict[str, Tuple[str, str, bool]] = {}  # run_row's; an older sweep: its rows as its queue left them
    rows = frozen["runs"] if frozen and isinstance(frozen.get("runs"), list) else status_rows(
        pod, plan, state, out_dirs) if plan and (sw or bad_sw or sweep) else []
    if metric_patterns is not None:  # each run's last metric values (wfops/agent/metrics.py)
        from .metrics import add_last_values
        add_last_values(pod, rows, metric_patterns, out_dirs)
    return {"sweep": dict(sw or {}, state=state, reason=reason), "problems": [p for p in (bad_plan,) if p],
            "plan": {k: (plan or {}).get(k) for k in ("sweep_id", "created_at", "git_sha", "filters", "csv")},
            "runs": rows, "totals": count(rows), "workflow": _workflow_note(pod, state),
            "busy": store.command_running(pod.control), "adds": adds,  # a mutating command is at work; tokens
            "cost": cost.status_cost(pod.run_dir, sw or {}, rows, state == QUEUE_RUNNING,
                                     live=rows is not (frozen or {}).get("runs"))}


@command(wire.SWEEP_STOP)
def sweep_stop(pod: Layout, session: str, timeout: float = 60) -> Json:
    """TERM the queue (it cancels the current run, final sync included); KILL it after `timeout`."""
    sw, problem = store.load_or_note(pod.sweep_file)
    state, reason = (UNKNOWN, problem) if problem else procs.queue_liveness(sw)
    if state != QUEUE_RUNNING:
        return {"sweep_id": (sw or {}).get("sweep_id"), "state": state, "reason": reason, "was_running": False}
    pid = int(sw["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while procs.pid_alive(pid, sw.get("pid_start")) and time.monotonic() < deadline:
        procs.wait_for_exit(pid, min(1.0, max(0.0, deadline - time.monotonic())))
    if procs.pid_alive(pid, sw.get("pid_start")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        procs.wait_for_exit(pid, 5)
        store.update_json(pod.sweep_file, {"state": QUEUE_STOPPED, "reason": "killed by sweep.stop after %ss" % timeout,
                                           "ended_at": store.now_iso()}, keep_terminal=False)
    launch.tmux_kill_session(pod, session)
    sw = store.load(pod.sweep_file) or {}
    workflow.succeed(pod, "sweep.stop", "%s: %s" % (sw.get("sweep_id"), sw.get("reason") or "stopped"))
    return {"sweep_id": sw.get("sweep_id"), "state": sw.get("state"), "reason": sw.get("reason", ""),
            "was_running": True}
