"""How a run ended, in words a researcher can act on: the worker's real exit code (torchrun itself exits
1) and a failure class (timeout, cancelled, lost, oom, nccl, sync_failed, nonzero_exit), written to the
run's summary.json."""

from __future__ import annotations

import os
import re

from . import store
from .states import (
    ATTEMPTS_DIR,
    FAIL_DISK,
    FAIL_EXIT,
    FAIL_NCCL,
    FAIL_NO_FIT,
    FAIL_OOM,
    FAIL_STALLED,
    FAIL_SYNC,
    FAILED,
    FAILURE_OF_STATE,
    LOG_FILE,
    STATUS_FILE,
    SUCCESS,
    SUMMARY_FILE,
)
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, List, Optional, Pattern, Tuple, Union

    from .wire import Json, QueueEntry, RunRow

OOM_RE = re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|std::bad_alloc")
NCCL_RE = re.compile(r"NCCL error|nccl(?:Internal|System|UnhandledCuda|Remote|InvalidUsage)Error|NCCL WARN|"
                     r"Watchdog caught collective operation timeout|ProcessGroupNCCL.*[Tt]ime(?:d )?out")
# the same class (collective communication) on a CPU pod: gloo's transport failed in the failing rank itself (a peer
# gone: "Connection closed by peer", thrown as gloo::IoException or raised in Python). Only that rank's own error
# counts: the other ranks of a run whose rank 1 exits 3 say the same of it, and the run failed of rank 1's exit
GLOO_RE = re.compile(r"gloo::IoException|gloo/transport/tcp/\w+\.cc:\d+\] (?:Connection (?:closed|reset) by "
                     r"peer|Read error|Write error|writev)")
DISK_RE = re.compile(r"No space left on device|ENOSPC|\[Errno 28\]|Disk quota exceeded")
ROOT_CAUSE_RE = re.compile(r"Root Cause.*?(?:rank\s*:\s*(\d+).*?)?exitcode\s*:\s*(-?\d+)", re.S)
RANK_RE = re.compile(r"^(?:\[rank(\d+)\]:\s?)+")  # torchrun --tee's prefix (torch adds its own again)
COMPILE_RE = re.compile(r"^(?:SyntaxError|IndentationError|TabError): ")
# what a worker says when it ends without a traceback: argparse's `prog: error: ...` (exit 2), a `SystemExit: ...`
# line, the last `SomethingError: ...` / `Exception: ...` line (a logger's, a print's)
ARGPARSE_RE = re.compile(r"^[\w.\-/]+: error: \S")
SYSTEM_EXIT_RE = re.compile(r"^SystemExit: \S")
ERROR_LINE_RE = re.compile(r"^(?:[A-Za-z_][\w.]*)?(?:Error|Exception): \S")
# what a worker that aborts leaves: the C++ runtime's `terminate called after throwing an instance of 'T'` with
# the exception's `what():` on the next line (gloo's "Connection closed by peer", a c10::Error), or Python's own
# `Fatal Python error: ...` (a segfault or an abort under faulthandler)
TERMINATE_RE = re.compile(r"^terminate called (?:after throwing an instance of '([^']+)'|\S.*)")
WHAT_RE = re.compile(r"^\s*what\(\):\s*(\S.*)")
FATAL_RE = re.compile(r"^Fatal Python error: \S")
TORCHRUN_LINE_RE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|^=+$|^-+$")  # glog lines, its report's rules
CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
TORCHRUN_OWN = ("ChildFailedError", "torch.distributed.elastic")
STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+[+-]\d\d:\d\d ")  # the time stamps of stdout.log
SUMMARY_KEYS = ("run_id", "sweep_id", "config", "seed", "notes", "out_dir", "mode", "git_sha", "started_at",
                "ended_at", "duration_secs", "signal", "gpu_memory_held_by", "gpus", "launcher", "attempt",
                "max_attempts", "fingerprint", "last_output_at", "nodes", "node_rank", "resume", "pod",
                "price_per_hour", "slots_held", "slots_total")
ONLY_IF_SET = ("gpu_memory_held_by", "nodes", "node_rank", "resume", "pod", "price_per_hour", "slots_held",
               "slots_total")  # in summary.json only when the status has them
ATTEMPT_KEYS = ("attempt", "state", "failure_class", "failure_evidence", "exit_code", "started_at", "ended_at",
                "duration_secs", "gpus", "resume", "pod")


def log_line(text: str, start: int, end: int) -> str:
    """The whole log line around [start, end), without its time stamp."""
    first = text.rfind("\n", 0, start) + 1
    last = text.find("\n", end)
    return STAMP_RE.sub("", text[first:last if last >= 0 else None]).strip()[:300]


def _exception_line(body: str, in_tb: bool) -> bool:
    """Whether a worker line (prefix and stamp removed) is the line that names an exception: the first
    unindented line after a traceback's frames (`KeyError: 'lr'`, a bare `StopIteration`), or a compile error
    Python reports without a traceback (`SyntaxError: ...` of the main script)."""
    if not body or body[0].isspace():
        return False
    if body.startswith(CHAINED):
        return False
    return in_tb or bool(COMPILE_RE.match(body))


def worker_error(log_text: str, rank: Optional[int] = None) -> str:
    """The failing worker's own error: the exception line that ends the last Python traceback of `rank`
    (lines prefixed `[rankN]:`; with no prefixes, any traceback that is not torchrun's own). "" if none."""
    found, in_tb = "", False
    for raw in log_text.splitlines():
        line = STAMP_RE.sub("", raw)
        m = RANK_RE.match(line)
        if rank is not None and m and int(m.group(1)) != rank:
            continue
        body = line[m.end():] if m else line
        if rank is not None and not m and found:
            continue  # torchrun's own lines after the worker's
        if body.startswith("Traceback (most recent call last)"):
            in_tb = True
        elif _exception_line(body, in_tb):
            in_tb = False
            if not any(own in body for own in TORCHRUN_OWN):
                found = body.strip()[:300]
    return found


def _worker_lines(log_text: str, rank: Optional[int]) -> List[str]:
    """The lines a worker printed (time stamps and rank prefixes removed): those of `rank` when the log has rank
    prefixes (the others are torchrun's own), else every line up to torchrun's failure report."""
    prefixed = any(RANK_RE.match(STAMP_RE.sub("", raw)) for raw in log_text.splitlines())
    out = []
    for raw in log_text.splitlines():
        line = STAMP_RE.sub("", raw)
        m = RANK_RE.match(line)
        if prefixed and (not m or (rank is not None and int(m.group(1)) != rank)):
            continue
        body = (line[m.end():] if m else line).rstrip()
        if not prefixed and (body.startswith("Traceback (most recent call last)")
                             or ("exitcode" in body and TORCHRUN_LINE_RE.match(body))):
            break  # torchrun's report of the failure: nothing of the worker's after it
        if body.strip() and not TORCHRUN_LINE_RE.match(body) and not any(own in body for own in TORCHRUN_OWN):
            out.append(body)
    return out


def abort_error(lines: List[str]) -> str:
    """What a worker that aborted said last: the C++ runtime's terminate line with the exception's `what():`
    (`terminate called after throwing gloo::IoException: [...] Connection closed by peer ...`), else a
    `Fatal Python error: ...` line. "" if none."""
    found = ""
    for i, line in enumerate(lines):
        m = TERMINATE_RE.match(line)
        if m and m.group(1):
            what = WHAT_RE.match(lines[i + 1]) if i + 1 < len(lines) else None
            found = "terminate called after throwing %s%s" % (m.group(1), ": " + what.group(1) if what else "")
        elif m or (FATAL_RE.match(line) and not found.startswith("terminate")):
            found = line.strip()
    return found[:300]


def message_error(log_text: str, rank: Optional[int] = None) -> str:
    """Evidence of a worker that ended without a traceback: argparse's `prog: error: ...` line, else a
    `SystemExit: ...` line, else what an abort left (abort_error), else the last `...Error: ...` /
    `...Exception: ...` line. "" if none."""
    lines = _worker_lines(log_text, rank)
    return (_last_match(lines, ARGPARSE_RE) or _last_match(lines, SYSTEM_EXIT_RE) or abort_error(lines)
            or _last_match(lines, ERROR_LINE_RE))


def _last_match(lines: List[str], rx: Pattern[str]) -> str:
    found = [ln for ln in lines if rx.match(ln)]
    return found[-1][:300] if found else ""


def last_words(log_text: str, rank: Optional[int] = None) -> str:
    """The last line the worker printed ("" if none): what `sys.exit("message")` leaves, with exit code 1."""
    lines = _worker_lines(log_text, rank)
    return lines[-1].strip()[:300] if lines else ""


def classify(log_text: str, exit_code: Optional[int], state: str) -> Json:
    """The worker's real exit code and a failure class where one can be told; the evidence is the failing
    worker's own error line when the log has one (its traceback's exception, else argparse's error, a SystemExit
    or Error: line: message_error), else torchrun's root-cause line."""
    out: Json = {"exit_code": exit_code, "failure_class": None, "evidence": None}
    m = ROOT_CAUSE_RE.search(log_text)
    if m:
        code = int(m.group(2))
        out["exit_code"] = 128 - code if code < 0 else code
        out["evidence"] = log_line(log_text, m.start(2), m.end(2))
    if state != SUCCESS:
        rank = int(m.group(1)) if m and m.group(1) else None
        own = worker_error(log_text, rank) or message_error(log_text, rank)
        out["evidence"] = own or out["evidence"]
    if state == SUCCESS:
        return out
    if state in FAILURE_OF_STATE:
        out["failure_class"] = FAILURE_OF_STATE[state]
        return out
    for name, rx in ((FAIL_DISK, DISK_RE), (FAIL_OOM, OOM_RE), (FAIL_NCCL, NCCL_RE)):
        hit = rx.search(log_text)
        if hit:
            out.update(failure_class=name, evidence=out["evidence"] or log_line(log_text, hit.start(), hit.end()))
            return out
    out["failure_class"] = FAIL_NCCL if own and GLOO_RE.search(own) else FAIL_EXIT
    if not own and out["exit_code"] == 1:
        out["evidence"] = last_words(log_text, rank) or out["evidence"]
    return out


def write_summary(run_dir: str, st: Json, output_tail: str = "") -> Json:
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
    if st.get("failure_class") in (FAIL_DISK, FAIL_STALLED, FAIL_NO_FIT):  # known before the log is read
        info.update(failure_class=st["failure_class"], evidence=st.get("reason") or info["evidence"])
    if state == FAILED and sync_rc not in (None, 0) and st.get("exit_code") == 0:
        info.update(failure_class=FAIL_SYNC, evidence="final sync: rsync exit %s" % sync_rc)
    summary = {k: st.get(k) for k in SUMMARY_KEYS if k in st or k not in ONLY_IF_SET}
    summary.update(ok=state == SUCCESS, state=state, exit_code=info["exit_code"],
                   torchrun_exit_code=st.get("exit_code"), failure_class=info["failure_class"],
                   failure_evidence=info["evidence"], reason=st.get("reason"))
    if sync_rc is not None:
        summary["final_sync"] = "ok" if sync_rc == 0 else "failed (rsync exit %s)" % sync_rc
    summary["attempts"] = earlier_attempts(run_dir) + [{k: summary.get(k) for k in ATTEMPT_KEYS}]
    store.write_json(os.path.join(run_dir, SUMMARY_FILE), summary)
    return st


def earlier_attempts(run_dir: str) -> List[Any]:
    """The recorded ends of the run's earlier attempts (attempts/<n>/summary.json), oldest first."""
    base = os.path.join(run_dir, ATTEMPTS_DIR)
    try:
        names = sorted((n for n in os.listdir(base) if n.isdigit()), key=int)
    except OSError:
        return []
    out = []
    for name in names:
        summ = store.load_or_note(os.path.join(base, name, SUMMARY_FILE))[0] or {}
        out.append(dict({k: summ.get(k) for k in ATTEMPT_KEYS}, attempt=int(name), dir="%s/%s" % (ATTEMPTS_DIR, name)))
    return out


def skip_reason(run: Union[QueueEntry, RunRow], summ: Optional[Json], force: bool) -> Tuple[bool, str]:
    """(skip?, why) for a run about to start, from the summary.json in its run dir."""
    if not summ or summ.get("ok") is not True:
        return False, ""
    if force or run.get("force"):
        return False, "forced rerun of the ok run of %s" % summ.get("sweep_id")
    if not summ.get("fingerprint"):
        return False, "the ok run of %s has no fingerprint to compare (older wfops)" % summ.get("sweep_id")
    if summ.get("fingerprint") != run.get("fp"):
        return False, "its row changed since the ok run of %s" % summ.get("sweep_id")
    return True, "already ok in %s with the same command" % summ.get("sweep_id")
