"""How a run ended, in words a researcher can act on: the worker's real exit code (torchrun itself exits
1) and a failure class (timeout, cancelled, lost, oom, nccl, sync_failed, nonzero_exit), written to the
run's summary.json."""

from __future__ import annotations

import os
import re

from . import store
from .states import (
    FAIL_DISK,
    FAIL_EXIT,
    FAIL_NCCL,
    FAIL_OOM,
    FAIL_SYNC,
    FAILED,
    FAILURE_OF_STATE,
    LOG_FILE,
    STATUS_FILE,
    SUCCESS,
    SUMMARY_FILE,
)

OOM_RE = re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|std::bad_alloc")
NCCL_RE = re.compile(r"NCCL error|nccl(?:Internal|System|UnhandledCuda|Remote|InvalidUsage)Error|NCCL WARN|"
                     r"Watchdog caught collective operation timeout|ProcessGroupNCCL.*[Tt]ime(?:d )?out")
DISK_RE = re.compile(r"No space left on device|ENOSPC|\[Errno 28\]|Disk quota exceeded")
ROOT_CAUSE_RE = re.compile(r"Root Cause.*?exitcode\s*:\s*(-?\d+)", re.S)
STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+[+-]\d\d:\d\d ")  # the time stamps of stdout.log
SUMMARY_KEYS = ("run_id", "sweep_id", "config", "seed", "notes", "out_dir", "mode", "git_sha", "started_at",
                "ended_at", "duration_secs", "signal", "gpu_memory_held_by")


def log_line(text: str, start: int, end: int) -> str:
    """The whole log line around [start, end), without its time stamp."""
    first = text.rfind("\n", 0, start) + 1
    last = text.find("\n", end)
    return STAMP_RE.sub("", text[first:last if last >= 0 else None]).strip()[:300]


def classify(log_text: str, exit_code, state: str) -> dict:
    """The worker's real exit code and a failure class where one can be told."""
    out = {"exit_code": exit_code, "failure_class": None, "evidence": None}
    m = ROOT_CAUSE_RE.search(log_text)
    if m:
        code = int(m.group(1))
        out["exit_code"] = 128 - code if code < 0 else code
        out["evidence"] = log_line(log_text, m.start(1), m.end(1))
    if state == SUCCESS:
        return out
    if state in FAILURE_OF_STATE:
        out["failure_class"] = FAILURE_OF_STATE[state]
        return out
    for name, rx in ((FAIL_DISK, DISK_RE), (FAIL_OOM, OOM_RE), (FAIL_NCCL, NCCL_RE)):
        hit = rx.search(log_text)
        if hit:
            out.update(failure_class=name, evidence=log_line(log_text, hit.start(), hit.end()))
            return out
    out["failure_class"] = FAIL_EXIT
    return out


def write_summary(run_dir: str, st: dict, output_tail: str = "") -> dict:
    """summary.json of an ended run. A run whose training succeeded but whose final sync failed is a failed
    run (class sync_failed): its durable copy is incomplete. Returns the status record as recorded."""
    state = st["state"]
    sync_rc = st.get("sync_rc")
    if state == SUCCESS and sync_rc not in (None, 0):
        st = store.update_json(os.path.join(run_dir, STATUS_FILE), {
            "state": FAILED, "reason": "the final sync to the run dir failed (rsync exit %s; see sync.log)" % sync_rc},
            keep_terminal=False)
        state = FAILED
    info = classify(store.read_tail(os.path.join(run_dir, LOG_FILE)) + "\n" + output_tail, st.get("exit_code"), state)
    if st.get("failure_class") == FAIL_DISK:  # the supervisor saw the disk fill up
        info.update(failure_class=FAIL_DISK, evidence=info["evidence"] or st.get("reason"))
    if state == FAILED and sync_rc not in (None, 0) and st.get("exit_code") == 0:
        info.update(failure_class=FAIL_SYNC, evidence="final sync: rsync exit %s" % sync_rc)
    summary = {k: st.get(k) for k in SUMMARY_KEYS if k in st or k != "gpu_memory_held_by"}
    summary.update(ok=state == SUCCESS, state=state, exit_code=info["exit_code"],
                   torchrun_exit_code=st.get("exit_code"), failure_class=info["failure_class"],
                   failure_evidence=info["evidence"], reason=st.get("reason"))
    if sync_rc is not None:
        summary["final_sync"] = "ok" if sync_rc == 0 else "failed (rsync exit %s)" % sync_rc
    store.write_json(os.path.join(run_dir, SUMMARY_FILE), summary)
    return st
