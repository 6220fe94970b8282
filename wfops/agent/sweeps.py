"""Sweeps on the pod: start (checks, manifests, the queue in tmux), the status table, stop, and the list of
run dirs to fetch. The queue itself is scheduler.py."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from . import launch, procs, store, workflow
from .registry import Refusal, command
from .states import (
    CANCELLED,
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_REMOTE,
    EXIT_USAGE,
    LATEST_CSV,
    MANIFESTS_DIR,
    PENDING,
    QUEUE_ENDED,
    QUEUE_LOST,
    QUEUE_RUNNING,
    QUEUE_STOPPED,
    RUNNING,
    SKIPPED,
    STATUS_FILE,
    SUMMARY_FILE,
    SWEEP_RUNNING,
    UNKNOWN,
    pod_path,
)


def _guard(pod) -> None:
    sw, problem = store.load_or_note(pod.sweep_file)
    if problem:
        raise Refusal(EXIT_REMOTE, problem + "; if no sweep runs, remove it and start again")
    if procs.queue_liveness(sw)[0] == QUEUE_RUNNING:
        raise Refusal(EXIT_CONFLICT, "sweep {} is still running (queue pid {}, since {}); watch it with sweep.status "
                      "or end it with sweep.stop".format(sw.get("sweep_id"), sw.get("pid"), sw.get("started_at")))


def _check_workdir(ex: dict, runs: list) -> None:
    if not os.access(os.path.join(ex["repo"], ".venv", "bin", "python"), os.X_OK):
        raise Refusal(EXIT_REMOTE, "no venv at %s/.venv; run checkout first" % ex["repo"])
    if not os.path.isfile(os.path.join(ex["workdir"], ex["train_script"])):
        raise Refusal(EXIT_NOT_FOUND, "the training script %s is not in %s; check TRAIN_WORKDIR / TRAIN_SCRIPT and "
                      "run checkout" % (ex["train_script"], ex["workdir"]))
    present = {}
    missing = []
    for run in runs:
        config = run["config"]
        if config not in present:
            present[config] = os.path.isfile(os.path.join(ex["workdir"], config))
        if not present[config]:
            missing.append("line %s: config %s does not exist in %s" % (run.get("line"), config, ex["workdir"]))
    if missing:
        raise Refusal(EXIT_USAGE, "the sweep CSV names %d missing config(s); nothing was uploaded or started: %s"
                      % (len(missing), "; ".join(missing)))


def _git_sha(repo: str) -> str:
    from .facts import run_out  # imported here: sweep-status, a hot read-only command, does not need it

    code, out = run_out(["git", "-C", repo, "rev-parse", "HEAD"])
    return out if code == 0 and out else "unknown"


def _write_manifests(pod, manifest: dict, csv_text: str) -> str:
    sid = manifest["sweep_id"]
    m = pod.manifests
    store.write_bytes(os.path.join(m, sid + ".csv"), csv_text.encode())
    store.write_bytes(os.path.join(m, LATEST_CSV), csv_text.encode())
    if pod.env_path and os.path.isfile(pod.env_path):
        with open(pod.env_path, "rb") as fh:
            store.write_bytes(os.path.join(m, "workflow-%s.env" % sid[len("sweep-"):]), fh.read(), mode=0o600)
    path = os.path.join(m, sid + ".json")
    data = store.json_bytes(manifest)  # serialized once: a 150,000-run manifest is tens of MB
    store.write_bytes(path, data)
    store.write_bytes(pod.latest_manifest, data)
    return path


@command("sweep-start")
def sweep_start(pod, manifest: dict, csv_text: str, session: str) -> dict:
    """Check, write the manifests, record the sweep, and start the scheduler in tmux (window `sweep`)."""
    _guard(pod)
    ex = manifest["exec"]
    for key in ("repo", "workdir", "data_dir", "local_root"):
        ex[key] = pod_path(ex[key])
    _check_workdir(ex, manifest["runs"])
    sid, queued = manifest["sweep_id"], len(manifest["queue"])
    manifest.update(git_sha=_git_sha(ex["repo"]), pod=pod.as_dict())
    path = _write_manifests(pod, manifest, csv_text)
    store.write_json(pod.sweep_file, {
        "sweep_id": sid, "state": RUNNING, "started_at": store.now_iso(), "boot_id": procs.boot_id(),
        "session": session, "runs": queued, "plan": "%s/%s.json" % (MANIFESTS_DIR, sid),
        "runner_log": "%s/%s.log" % (MANIFESTS_DIR, sid)})
    before = workflow.read_state(pod.state_file)["state"]
    workflow.succeed(pod, "sweep.start", "%s: %d run(s)" % (sid, queued))
    launch.tmux_kill_session(pod, session)
    shell = "exec " + launch.shell_words(launch.agent_argv("sweep-run", path))
    try:
        pid, _ = launch.tmux_window(pod, session, "sweep", shell, new_session=True)
    except Refusal as exc:
        store.update_json(pod.sweep_file, {"state": "completed", "reason": "tmux could not start the queue: "
                                           + exc.message}, keep_terminal=False)
        workflow.force(pod, before, "sweep.start", "tmux failed to start")
        raise Refusal(EXIT_REMOTE, "tmux could not start the sweep: %s" % exc.message) from None
    launch.record_runner(pod.sweep_file, pid, belongs=lambda sw: sw.get("sweep_id") == sid)
    return {"sweep_id": sid, "session": session, "queued": queued, "pid": pid,
            "manifest": os.path.join(pod.manifests, sid + ".csv")}


def _current_row(row: dict, st: dict, summ, sweep_id: str, cb: str) -> None:
    state, reason = procs.liveness(st, cb)
    src = summ if (summ and summ.get("sweep_id") == sweep_id) else st
    row.update(state=state, exit_code=src.get("exit_code"), duration_secs=src.get("duration_secs"),
               note=(summ or {}).get("failure_class") or reason or "")
    if state == RUNNING and st.get("started_at"):
        started = store.parse_iso(st["started_at"])
        row["duration_secs"] = round(time.time() - started, 1) if started else None


def run_row(pod, run: dict, sweep_id: str, queue_state: str, force: bool, cb: str) -> dict:
    """One run's row: its honest state, exit code, duration and why; `unknown` for a damaged file."""
    d = pod.run_dir(run["run_id"])
    row = {"run_id": run["run_id"], "notes": run.get("notes", ""), "exit_code": None, "duration_secs": None,
           "note": ""}
    st, bad_st = store.load_or_note(os.path.join(d, STATUS_FILE))
    summ, bad_summ = store.load_or_note(os.path.join(d, SUMMARY_FILE))
    if bad_st or bad_summ:
        row.update(state=UNKNOWN, note=bad_st or bad_summ)
    elif st and st.get("sweep_id") == sweep_id:
        _current_row(row, st, summ, sweep_id, cb)
    elif summ and summ.get("ok") is True and not force:
        row.update(state=SKIPPED, exit_code=summ.get("exit_code"), duration_secs=summ.get("duration_secs"),
                   note="already ok (sweep {})".format(summ.get("sweep_id")))
    elif queue_state in QUEUE_ENDED:
        row.update(state=CANCELLED, note="not started: the sweep %s first" % (
            "was stopped" if queue_state == QUEUE_STOPPED else "ended"))
    elif queue_state == QUEUE_LOST:
        row.update(state=PENDING, note="not started; the queue runner is gone (sweep.start resumes)")
    else:
        row["state"] = PENDING
        if summ:
            row["note"] = "previous attempt {}".format(summ.get("state"))
    return row


def _workflow_note(pod, queue_state: str) -> dict:
    try:
        recorded = workflow.read_state(pod.state_file)["state"]
    except store.Damaged as exc:
        return {"state": UNKNOWN, "note": workflow.damaged_message(exc)}
    if recorded == SWEEP_RUNNING and queue_state != QUEUE_RUNNING:
        return {"state": recorded, "note": "still SWEEP_RUNNING on record: the next command that changes the pod "
                "records SWEEP_COMPLETED"}
    return {"state": recorded, "note": ""}


@command("sweep-status")
def sweep_status(pod) -> dict:
    """The latest sweep: queue state, one row per selected run, totals. Reads only."""
    sw, bad_sw = store.load_or_note(pod.sweep_file)
    plan, bad_plan = store.load_or_note(pod.latest_manifest)
    state, reason = (UNKNOWN, bad_sw) if bad_sw else procs.queue_liveness(sw)
    rows = []
    if plan and (sw or bad_sw):
        cb, force = procs.boot_id(), bool(plan.get("force"))
        runs = plan.get("runs") if isinstance(plan.get("runs"), list) else []
        rows = [run_row(pod, run, plan.get("sweep_id"), state, force, cb) for run in runs
                if isinstance(run, dict) and run.get("selected", True) and isinstance(run.get("run_id"), str)]
    totals = {}
    for row in rows:
        totals[row["state"]] = totals.get(row["state"], 0) + 1
    return {"sweep": dict(sw or {}, state=state, reason=reason), "problems": [p for p in (bad_plan,) if p],
            "plan": {k: (plan or {}).get(k) for k in ("sweep_id", "created_at", "git_sha", "filters", "csv")},
            "runs": rows, "totals": totals, "workflow": _workflow_note(pod, state)}


@command("sweep-stop")
def sweep_stop(pod, session: str, timeout: float = 60) -> dict:
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
