"""THE vocabulary of wfops, defined once: run/task states, failure classes, workflow states and the rule
of every command, exit codes, and the pod layout. The pod agent uses it on the pod; the client imports it
(`wfops.agent.states`) and hands the values to templates through the render context.

Standard library only, Python >= 3.8 (this file travels to the pod with the rest of the agent).
"""

from __future__ import annotations

import os
from collections import namedtuple

from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Iterable, List, Optional, Tuple

    from .wire import PodLayout

# ------------------------------------------------------------------ runs and tracked tasks
PENDING, RUNNING = "pending", "running"
SUCCESS, FAILED, TIMED_OUT, CANCELLED, LOST, SKIPPED = "success", "failed", "timed_out", "cancelled", "lost", "skipped"
UNKNOWN, MISSING = "unknown", "missing"  # a damaged status file; no status file at all
TERMINAL = (SUCCESS, FAILED, TIMED_OUT, CANCELLED, LOST, SKIPPED)
ACTIVE = (PENDING, RUNNING)

# failure classes (summary.json `failure_class`), Slurm-style: why a run did not succeed
FAIL_TIMEOUT, FAIL_CANCELLED, FAIL_LOST = "timeout", "cancelled", "lost"
FAIL_OOM, FAIL_NCCL, FAIL_EXIT, FAIL_SYNC = "oom", "nccl", "nonzero_exit", "sync_failed"
FAIL_DISK, FAIL_STALLED, FAIL_NO_FIT = "disk_full", "stalled", "no_fit"
# the failure classes RETRY_ON may name (and its default: the transient ones)
FAILURE_CLASSES = (FAIL_TIMEOUT, FAIL_CANCELLED, FAIL_LOST, FAIL_OOM, FAIL_NCCL, FAIL_EXIT, FAIL_SYNC, FAIL_DISK,
                   FAIL_STALLED)
TRANSIENT = (FAIL_LOST, FAIL_NCCL, FAIL_STALLED)
FAILURE_OF_STATE = {TIMED_OUT: FAIL_TIMEOUT, CANCELLED: FAIL_CANCELLED, LOST: FAIL_LOST}

ALL_GPUS = "all"  # a run's `gpus` request for every GPU slot of the pod (CSV column, RUN_GPUS)

# a supervisor's exit status tells its caller (the scheduler) the run's final state with no extra read
STATE_CODES = {SUCCESS: 0, FAILED: 1, TIMED_OUT: 2, CANCELLED: 3, LOST: 4}
CODE_STATES = {v: k for k, v in STATE_CODES.items()}

# ------------------------------------------------------------------ sweeps (the queue as a whole)
QUEUE_NONE, QUEUE_RUNNING, QUEUE_COMPLETED, QUEUE_STOPPED, QUEUE_LOST = "none", RUNNING, "completed", "stopped", LOST
QUEUE_ENDED = (QUEUE_COMPLETED, QUEUE_STOPPED)

# ------------------------------------------------------------------ the workflow state machine (SPEC §2)
INIT = "INIT"
POD_READY = "POD_READY"
BOOTSTRAPPED = "BOOTSTRAPPED"
CHECKED_OUT = "CHECKED_OUT"
SWEEP_RUNNING = "SWEEP_RUNNING"
SWEEP_COMPLETED = "SWEEP_COMPLETED"
STATES = (INIT, POD_READY, BOOTSTRAPPED, CHECKED_OUT, SWEEP_RUNNING, SWEEP_COMPLETED)
ANY = STATES
PREPARED = (POD_READY, BOOTSTRAPPED, CHECKED_OUT, SWEEP_COMPLETED)
HISTORY_LIMIT = 50

# command: the client command name; allowed: states it may run in; on_success: the state the agent writes
# when it succeeds (only when the current state is in only_from, if given); promote: INIT -> POD_READY when
# the pod answers; mutating: holds the pod's command lock; readonly: never writes the workflow state.
Rule = namedtuple("Rule", "command allowed on_success only_from promote mutating readonly")


def _rule(command: str, allowed: Iterable[str], on_success: Optional[str] = None,
          only_from: Optional[Tuple[str, ...]] = None, promote: bool = True, mutating: bool = False,
          readonly: bool = False) -> Rule:
    return Rule(command, tuple(allowed), on_success, only_from, promote, mutating, readonly)


RULES = {r.command: r for r in (
    _rule("pod.up", ANY),
    _rule("pod.status", ANY),
    _rule("pod.wait", ANY),
    _rule("pod.down", ANY, on_success=INIT, promote=False, mutating=True),
    _rule("bootstrap", PREPARED, on_success=BOOTSTRAPPED, mutating=True),
    _rule("checkout", PREPARED, on_success=CHECKED_OUT, mutating=True),
    _rule("fsm.status", ANY, promote=False, readonly=True),
    _rule("fsm.reset", ANY, promote=False, mutating=True),
    _rule("task.run", [s for s in STATES if s != INIT], mutating=True),
    _rule("task.status", ANY, readonly=True),
    _rule("task.wait", ANY, readonly=True),
    _rule("task.list", ANY, readonly=True),
    _rule("sweep.start", (CHECKED_OUT, SWEEP_COMPLETED), on_success=SWEEP_RUNNING, mutating=True),
    _rule("sweep.status", (CHECKED_OUT, SWEEP_RUNNING, SWEEP_COMPLETED), readonly=True),
    _rule("sweep.stop", (SWEEP_RUNNING, SWEEP_COMPLETED), on_success=SWEEP_COMPLETED, only_from=(SWEEP_RUNNING,),
          mutating=True),
    _rule("sweep.add", (SWEEP_RUNNING, SWEEP_COMPLETED), on_success=SWEEP_RUNNING, mutating=True),
    _rule("sweep.retry", (SWEEP_RUNNING, SWEEP_COMPLETED), on_success=SWEEP_RUNNING, mutating=True),
    # a managed sweep (sweep.wait --recover) starts a lost pod's runs again on it or on its replacement (which
    # its checkout has just made CHECKED_OUT)
    _rule("sweep.recover", (CHECKED_OUT, SWEEP_RUNNING, SWEEP_COMPLETED), on_success=SWEEP_RUNNING, mutating=True),
    # a fleet moves runs that have not started between its pods (sweep-withdraw here, sweep-add there)
    _rule("sweep.rebalance", (SWEEP_RUNNING, SWEEP_COMPLETED), on_success=SWEEP_RUNNING, mutating=True),
    _rule("sweep.list", ANY, readonly=True),
    _rule("sweep.wait", (CHECKED_OUT, SWEEP_RUNNING, SWEEP_COMPLETED), readonly=True),
    _rule("sweep.report", (CHECKED_OUT, SWEEP_RUNNING, SWEEP_COMPLETED), readonly=True),
    _rule("run.logs", (CHECKED_OUT, SWEEP_RUNNING, SWEEP_COMPLETED), readonly=True),
    _rule("task.logs", ANY, readonly=True),
    _rule("run.fetch", (CHECKED_OUT, SWEEP_RUNNING, SWEEP_COMPLETED)),
    # the pod's own step: the sweep queue records the end of its sweep
    _rule("sweep.queue", ANY, on_success=SWEEP_COMPLETED, only_from=(SWEEP_RUNNING,), promote=False),
)}

# ------------------------------------------------------------------ exit codes (README "Exit codes", docs/commands.md)
EXIT_OK = 0
EXIT_FAILED = 1  # a task or run ended `failed`; also unexpected internal errors
EXIT_USAGE = 2  # bad config, bad argument, bad CSV: nothing was changed
EXIT_STATE = 3  # the workflow FSM does not allow this command now
EXIT_CONNECT = 4  # host unreachable, authentication or host-key failure
EXIT_NOT_FOUND = 5  # no such task, run, pod or file
EXIT_REMOTE = 6  # a step on the pod failed (clone, venv, torch check, ...); also a damaged file on the pod
EXIT_TIMED_OUT = 7  # a task or run ended `timed_out`
EXIT_LOST = 8  # a task or run was `lost` (its runner died)
EXIT_WAIT_TIMEOUT = 9  # task.wait gave up while the task was still running
EXIT_CONFLICT = 10  # already exists / already running / the pod is busy with another command
EXIT_LIUM = 11  # the lium CLI or its API failed

# how a task's final state becomes the exit code of `task.wait`
STATE_EXIT = {SUCCESS: EXIT_OK, FAILED: EXIT_FAILED, CANCELLED: EXIT_FAILED, TIMED_OUT: EXIT_TIMED_OUT,
              LOST: EXIT_LOST}

# ------------------------------------------------------------------ the pod layout (under OPS_REMOTE_OUTPUTS_DIR)
CONTROL_DIR = "_control"  # workflow state, sweep.json, locks, the agent itself
TASKS_DIR = "_tasks"  # one dir per tracked task
MANIFESTS_DIR = "_manifests"  # one manifest (+ CSV, env copy, queue log) per sweep
PREVIOUS_DIR = "_previous"  # earlier runs of a run id (an older sweep's, or one replaced by a changed row)
ATTEMPTS_DIR = "attempts"  # under a run dir: attempts/<n>/ keeps each earlier attempt's log and status
RANKS_DIR = "ranks"  # under a run dir: torchrun's per-rank logs of a multi-process run
BACKUPS_DIR = "_backups"  # replaced tasks, under _tasks/
AGENT_DIR = "agent"  # under _control/: one directory per agent content hash
STATE_FILE = "workflow_state.json"
SWEEP_FILE = "sweep.json"
LOCK_FILE = "command.lock"
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
LOG_FILE = "stdout.log"
COMMAND_FILE = "command.sh"
RUNNER_FILE = "runner.sh"
SPEC_FILE = "spec.json"
SYNC_LOG = "sync.log"
SYNC_TMP_DIR = ".wfops-sync"  # in a run dir: local_sync's rsync writes each file here, then renames it into place
GENERATION_FILE = ".wfops-generation"  # in a run dir, made with it: which run of that id it holds (run.fetch)
VENV_DIR = ".venv"  # the checkout's venv, under OPS_REMOTE_REPO (not under the outputs dir)
DATA_PREPARE_LOG = "data-prepare.log"  # under _control/: the output of checkout's DATA_PREPARE_CMD
DATA_PREPARE_SCRIPT = "data-prepare.sh"  # ... and the command itself (mode 600: never in an argv)
LATEST_MANIFEST = "sweep-latest.json"
LATEST_CSV = "sweep-latest.csv"
SWEEP_RECORD = ".sweep.json"  # _manifests/<sweep_id>.sweep.json: a copy of sweep.json, kept after the sweep
RUNS_RECORD = ".runs.json"  # _manifests/<sweep_id>.runs.json: its rows as they were when its queue ended
INBOX = ".inbox"  # _manifests/<sweep_id>.inbox/: runs added or requeued while the queue runs
WITHDRAW_REQUEST = ".withdraw"  # in the inbox: sweep-withdraw asks the running queue to drop waiting runs ...
WITHDRAW_ANSWER = ".withdrawn"  # ... and the queue answers with the ones it dropped (same name, this suffix)
OWNER_ENV = "WFOPS_OWNER"  # set in every run's and task's environment: how leftovers are found


def pod_path(path: str) -> str:
    """A path from the client: `~` and `~/...` mean the pod user's home (like the shell's qpath)."""
    if path == "~" or path.startswith("~/"):
        return os.path.join(os.path.expanduser("~"), path[2:])
    return path


def child(directory: str, name: str) -> str:
    """os.path.join(directory, name) for a plain `name` (no slash at its start), without join's generality: sweep.status
    makes a few of these a run (issue 24)."""
    if not directory or name.startswith("/"):
        return os.path.join(directory, name)
    return directory + name if directory.endswith("/") else directory + "/" + name


def out_dir_of(run_dir: str, records: Iterable[Any]) -> str:
    """Where the run trains (local_sync: on local disk, fresher than the synced copy), from its status.json and
    summary.json as read (None: missing or damaged), in that order; else the run's directory."""
    for record in records:
        if isinstance(record, dict) and isinstance(record.get("out_dir"), str):
            out_dir: str = record["out_dir"]
            return out_dir
    return run_dir


class Layout:
    """Where things are on one pod."""

    def __init__(self, out: str, state_file: str = "", env_path: str = "", tmux_socket: str = "") -> None:
        self.out = pod_path(out)
        self.control = os.path.join(self.out, CONTROL_DIR)
        self.state_file = pod_path(state_file) if state_file else os.path.join(self.control, STATE_FILE)
        self.env_path = pod_path(env_path) if env_path else ""
        self.tmux_socket = tmux_socket
        self.tasks = os.path.join(self.out, TASKS_DIR)
        self.manifests = os.path.join(self.out, MANIFESTS_DIR)
        self.previous = os.path.join(self.out, PREVIOUS_DIR)
        self.sweep_file = os.path.join(self.control, SWEEP_FILE)
        self.latest_manifest = os.path.join(self.manifests, LATEST_MANIFEST)

    @classmethod
    def from_dict(cls, d: PodLayout) -> Layout:
        return cls(d["out"], d.get("state_file", ""), d.get("env_path", ""), d.get("tmux_socket", ""))

    def as_dict(self) -> PodLayout:
        return {"out": self.out, "state_file": self.state_file, "env_path": self.env_path,
                "tmux_socket": self.tmux_socket}

    def run_dir(self, run_id: str) -> str:
        return os.path.join(self.out, run_id)

    def task_dir(self, task_id: str) -> str:
        return os.path.join(self.tasks, task_id)

    def sweep_files(self, sid: str) -> List[str]:
        """Every file sweep-start writes for sweep `sid` before its queue starts (the CSV first)."""
        m = self.manifests
        return [os.path.join(m, sid + ".csv"), os.path.join(m, LATEST_CSV), os.path.join(m, sid + ".json"),
                os.path.join(m, "workflow-%s.env" % sid[len("sweep-"):]), self.latest_manifest, self.sweep_file,
                os.path.join(m, sid + SWEEP_RECORD), self.state_file]

    def tmux(self, *args: str) -> List[str]:
        return ["tmux"] + (["-L", self.tmux_socket] if self.tmux_socket else []) + list(args)
