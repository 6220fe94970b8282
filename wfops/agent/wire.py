"""THE wire between the client and the pod agent, defined once: the agent's command names, and the shape of
what travels (the request on stdin, the sweep manifest with its runs, queue entries and exec block, the fleet
answers).

Two forms of one schema, kept equal by tests/unit/test_wire.py:
  - TypedDicts for the type checker (the client builds through them, the agent reads through them). They exist
    only under TYPE_CHECKING: importing `typing` would cost the agent ~10 ms on every call.
  - a plain table (field -> accepted types, required, nested schema) that `problem()` checks at the agent's
    door: a missing, unknown or wrongly typed field is one line naming it, never a KeyError mid-sweep.

Standard library only, Python >= 3.8 (this file travels to the pod with the rest of the agent).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the pod never imports typing (mypy reads this name as True)

# ------------------------------------------------------------------ the agent's command names
NOOP, FSM_SHOW, FSM_RESET = "noop", "fsm-show", "fsm-reset"
SUPERVISE, SWEEP_RUN = "supervise", "sweep-run"  # the pod's own (runner.sh, the queue's tmux window)
SWEEP_START, SWEEP_STATUS, SWEEP_STOP, SWEEP_LIST = "sweep-start", "sweep-status", "sweep-stop", "sweep-list"
SWEEP_ADD, SWEEP_RETRY, SWEEP_CURRENT, FETCH_PLAN = "sweep-add", "sweep-retry", "sweep-current", "fetch-plan"
TASK_START, TASK_SHOW, TASK_WAIT, TASK_LIST = "task-start", "task-show", "task-wait", "task-list"
CHECKOUT_FACTS, POD_FACTS, POD_DOWN = "checkout-facts", "pod-facts", "pod-down"
BOOTSTRAP, CHECKOUT_APPLY, SERVE_FLAG = "bootstrap", "checkout-apply", "--serve"  # SERVE_FLAG: agent/serve.py
FLEET_FACTS, SWEEP_WITHDRAW, NET_LISTEN, NET_PROBE = "fleet-facts", "sweep-withdraw", "net-listen", "net-probe"
SWEEP_METRICS, SWEEP_WAIT, RUN_LOGS, TASK_LOGS = "sweep-metrics", "sweep-wait", "run-logs", "task-logs"
SWEEP_RECOVER = "sweep-recover"  # a managed sweep restarts its runs on a pod that came back (agent/recover.py)
SERVED = (FSM_SHOW, TASK_SHOW, TASK_LIST, SWEEP_STATUS, SWEEP_LIST, SWEEP_METRICS, FLEET_FACTS, FETCH_PLAN)

if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple, TypedDict, Union

    Json = Dict[str, Any]  # a JSON object the wire does not type (results, status files)
    Types = Tuple[type, ...]
    Schema = Dict[str, Tuple[Types, bool, Any]]  # field: (accepted types, required, nested)

    class _PodLayoutReq(TypedDict):  # the required fields (3.8's TypedDict has no Required[])
        out: str

    class PodLayout(_PodLayoutReq, total=False):
        state_file: str
        env_path: str
        tmux_socket: str

    class PodEnv(TypedDict):
        sha: str
        b64: str

    class Prelude(TypedDict, total=False):
        command: str
        enforce: bool
        dry_run: bool
        env: PodEnv

    class _RequestReq(TypedDict):
        cmd: str
        pod: PodLayout

    class Request(_RequestReq, total=False):
        prelude: Prelude
        data: Json

    class NodePeer(TypedDict):
        rank: int
        pod: str
        addr: str

    class _NodeInfoReq(TypedDict):
        rank: int
        nnodes: int
        endpoint: str
        rdzv_id: str
        local_addr: str
        nodes: List[NodePeer]

    class NodeInfo(_NodeInfoReq, total=False):  # a queue entry's "node": one node of a multi-node run
        join_timeout: Union[int, float]  # RDZV_JOIN_SECS

    class LaunchScript(TypedDict):  # a queue entry's "script": its command.sh as the client rendered it (runscript.py)
        text: str
        mark: str  # the 16-hex-digit mark of its run-time markers
        source: str  # the template it came from

    class _QueueEntryReq(TypedDict):
        run_id: str
        config: str

    class QueueEntry(_QueueEntryReq, total=False):
        seed: Optional[int]
        notes: str
        line: int
        args: List[str]
        expand: bool  # args hold placeholders ({out_dir}, `{{`) the pod fills in (wfops.agent.argv)
        gpus: str
        fp: str
        nodes: int
        node: NodeInfo
        script: LaunchScript  # absent: runscript.DEFAULT (an entry queued by an older wfops)
        attempt: int  # sweep.retry's entries (1); the queue counts on
        force: bool  # sweep.retry's entries: run even if an ok summary matches
        rerun_why: str  # the queue's own (in memory)
        _index: int  # the queue's own (in memory): CSV order
        _again: str  # the queue's own (in memory): starting again after its port was taken (runs.port_taken)
        _port_tries: int  # the queue's own (in memory): how often

    class _RunRowReq(TypedDict):
        run_id: str
        config: str

    class RunRow(_RunRowReq, total=False):
        line: int
        seed: Optional[int]
        overrides: List[str]
        notes: str
        gpus: str
        nodes: int
        selected: bool
        fp: str

    class _ExecBlockReq(TypedDict):
        repo: str
        workdir: str
        train_script: str
        data_dir: str
        local_root: str

    class ExecBlock(_ExecBlockReq, total=False):
        cpu_only: bool
        nproc: Optional[int]
        arg_style: str
        mode: str
        sync_secs: int
        timeout_secs: int
        grace_secs: int
        inject_out_dir: bool
        inject_data_dir: bool
        launcher: str
        fake_gpus: Optional[int]
        rdzv_base_port: int
        retries: int
        retry_on: List[str]
        retry_backoff_secs: Union[int, float]
        stall_secs: int
        keep_previous: int
        resume_args: List[str]  # RESUME_ARGS as words of the run's command (resume.py)
        resume_when: str  # RESUME_WHEN: a glob relative to the run's output dir

    class CsvInfo(TypedDict, total=False):
        name: str
        sha256: str

    class Filters(TypedDict, total=False):
        match: str
        start_at: str
        limit: Optional[int]

    class Billing(TypedDict, total=False):  # a manifest's "billing": what the pod costs (agent/cost.py)
        pod: str  # the pod's name as the client knows it (the `pod` column, WF_POD)
        price_per_hour: Optional[Union[int, float]]  # None: unknown
        budget_usd: Optional[Union[int, float]]  # SWEEP_BUDGET_USD (a fleet pod: its share); None: no budget
        spent_before_usd: Union[int, float]  # what earlier pods of this sweep spent (a managed sweep's replaced pods)

    class _ManifestReq(TypedDict):
        sweep_id: str
        runs: List[RunRow]
        queue: List[QueueEntry]
        exec: ExecBlock

    class Manifest(_ManifestReq, total=False):
        created_at: str
        wfops_version: str
        csv: CsvInfo
        filters: Filters
        force: bool
        fail_fast: bool
        wandb_group: str
        git_sha: str  # the agent's: written by sweep-start
        pod: PodLayout  # the agent's: written by sweep-start
        start: List[QueueEntry]  # the agent's: the runs a resumed queue starts with
        billing: Billing

    class Inbox(TypedDict):  # _manifests/<sweep>.inbox/*.json: runs for the running queue
        entries: List[QueueEntry]

    # ---------------------------------------------------------------- answers (the client reads them)
    class SweepStarted(TypedDict):
        sweep_id: str
        session: str
        queued: int
        pid: int
        manifest: str

    class _SweepQueuedReq(TypedDict):
        sweep_id: str
        queued: int
        resumed: bool

    class SweepQueued(_SweepQueuedReq, total=False):  # sweep-add, sweep-retry
        pid: int
        not_started: List[str]  # a lost queue started again: the runs it had not started, started with them

    class FleetFacts(TypedDict):
        slots: int
        sweep_id: Optional[str]
        queue_state: str
        busy: int
        pending: int
        pending_runs: List[str]

    class Withdrawn(TypedDict):  # sweep-withdraw
        sweep_id: str
        withdrawn: List[str]
        kept: Dict[str, str]

    class WithdrawAnswer(TypedDict):  # the queue's answer to a withdraw request (in the inbox)
        withdrawn: List[str]
        running: List[str]
        problem: str

# ------------------------------------------------------------------ the same schema, checked at run time
# field: (accepted types, required, nested); nested: schema of a dict value or of each dict item, or item types
_S, _I, _B, _L, _D = (str,), (int,), (bool,), (list,), (dict,)
_NONE = type(None)
_F = (int, float)

POD_LAYOUT: Schema = {"out": (_S, True, None), "state_file": (_S, False, None), "env_path": (_S, False, None),
              "tmux_socket": (_S, False, None)}
POD_ENV: Schema = {"sha": (_S, True, None), "b64": (_S, True, None)}
PRELUDE: Schema = {"command": (_S, False, None), "enforce": (_B, False, None), "dry_run": (_B, False, None),
           "env": (_D, False, POD_ENV)}
# The request line starts with this guard (the agent reads past it): a shell that reads the line as commands (bash
# -s given the request without its script) says one line and exits at once, instead of running the request's words
# and then waiting on an open stdin for ever. For bash, all after the `#` is a comment.
REQUEST_GUARD = ("echo '@wfops-error 6 the shell on the pod read the wfops request as commands (its script did not "
                 "arrive whole); nothing ran, try again' >&2; exit 6 #")


REQUEST: Schema = {"cmd": (_S, True, None), "pod": (_D, True, POD_LAYOUT), "prelude": (_D, False, PRELUDE),
           "data": (_D, False, None)}
NODE_PEER: Schema = {"rank": (_I, True, None), "pod": (_S, True, None), "addr": (_S, True, None)}
NODE_INFO: Schema = {"rank": (_I, True, None), "nnodes": (_I, True, None), "endpoint": (_S, True, None),
             "rdzv_id": (_S, True, None), "local_addr": (_S, True, None), "nodes": (_L, True, NODE_PEER),
             "join_timeout": (_F, False, None)}
LAUNCH_SCRIPT: Schema = {"text": (_S, True, None), "mark": (_S, True, None), "source": (_S, True, None)}
QUEUE_ENTRY: Schema = {
    "run_id": (_S, True, None), "config": (_S, True, None), "seed": ((int, _NONE), False, None),
    "notes": (_S, False, None), "line": (_I, False, None), "args": (_L, False, _S), "expand": (_B, False, None),
    "gpus": (_S, False, None),
    "fp": (_S, False, None), "nodes": (_I, False, None), "node": (_D, False, NODE_INFO),
    "script": (_D, False, LAUNCH_SCRIPT),
    "attempt": (_I, False, None), "force": (_B, False, None), "rerun_why": (_S, False, None),
    "_index": (_I, False, None), "_again": (_S, False, None), "_port_tries": (_I, False, None),
}
RUN_ROW: Schema = {
    "run_id": (_S, True, None), "config": (_S, True, None), "line": (_I, False, None),
    "seed": ((int, _NONE), False, None), "overrides": (_L, False, _S), "notes": (_S, False, None),
    "gpus": (_S, False, None), "nodes": (_I, False, None), "selected": (_B, False, None), "fp": (_S, False, None),
}
EXEC_BLOCK: Schema = {
    "repo": (_S, True, None), "workdir": (_S, True, None), "train_script": (_S, True, None),
    "data_dir": (_S, True, None), "local_root": (_S, True, None), "cpu_only": (_B, False, None),
    "nproc": ((int, _NONE), False, None), "arg_style": (_S, False, None), "mode": (_S, False, None),
    "sync_secs": (_I, False, None), "timeout_secs": (_I, False, None), "grace_secs": (_I, False, None),
    "inject_out_dir": (_B, False, None), "inject_data_dir": (_B, False, None), "launcher": (_S, False, None),
    "fake_gpus": ((int, _NONE), False, None), "rdzv_base_port": (_I, False, None), "retries": (_I, False, None),
    "retry_on": (_L, False, _S), "retry_backoff_secs": (_F, False, None), "stall_secs": (_I, False, None),
    "keep_previous": (_I, False, None), "resume_args": (_L, False, _S), "resume_when": (_S, False, None),
}
BILLING: Schema = {"pod": (_S, False, None), "price_per_hour": ((int, float, _NONE), False, None),
                   "budget_usd": ((int, float, _NONE), False, None), "spent_before_usd": (_F, False, None)}
CSV_INFO: Schema = {"name": (_S, False, None), "sha256": (_S, False, None)}
FILTERS: Schema = {"match": (_S, False, None), "start_at": (_S, False, None), "limit": ((int, _NONE), False, None)}
MANIFEST: Schema = {
    "sweep_id": (_S, True, None), "runs": (_L, True, RUN_ROW), "queue": (_L, True, QUEUE_ENTRY),
    "exec": (_D, True, EXEC_BLOCK), "created_at": (_S, False, None), "wfops_version": (_S, False, None),
    "csv": (_D, False, CSV_INFO), "filters": (_D, False, FILTERS), "force": (_B, False, None),
    "fail_fast": (_B, False, None), "wandb_group": (_S, False, None), "git_sha": (_S, False, None),
    "pod": (_D, False, POD_LAYOUT), "start": (_L, False, QUEUE_ENTRY), "billing": (_D, False, BILLING),
}
INBOX: Schema = {"entries": (_L, True, QUEUE_ENTRY)}

# a handler argument annotated with one of these (registry.bind) is checked against it at the door
ARGUMENTS: Dict[str, Tuple[Types, Any]] = {
    "Manifest": (_D, MANIFEST), "ExecBlock": (_D, EXEC_BLOCK), "List[QueueEntry]": (_L, QUEUE_ENTRY),
    "List[RunRow]": (_L, RUN_ROW), "List[str]": (_L, _S), "Billing": (_D, BILLING),
}

_NAMES = {str: "str", int: "int", float: "float", bool: "bool", list: "list", dict: "dict", _NONE: "null"}


_INF = float("inf")


def _odd_float(value: object) -> bool:
    """NaN or an infinity (Python's json reads NaN, Infinity and 1e400): no count, port or number of seconds."""
    return value.__class__ is float and (value != value or value in (_INF, -_INF))


def _fits(value: object, types: Types) -> bool:
    """isinstance, except that a bool is not an int (JSON's true is no count) and a number is finite."""
    return isinstance(value, types) and (bool in types or not isinstance(value, bool)) and not _odd_float(value)


def _wrong(where: str, types: Types, value: object) -> str:
    if _odd_float(value):
        return "%s must be a finite number, not %r" % (where, value)
    shown = repr(value)
    return "%s must be %s, not %s" % (where, " or ".join(_NAMES.get(t, t.__name__) for t in types),
                                      shown if len(shown) <= 60 else shown[:57] + "...")


def problem(value: object, schema: Schema, where: str = "") -> str:
    """The first fault of `value` against `schema` as one line naming the field ("queue[3].run_id is missing",
    "prelude.enforce must be bool, not 'yes'", "exec.repoo is not a known field"); "" when there is none."""
    if _ok(value, schema):  # the common case, without building a path per field (a manifest may hold 150,000 runs)
        return ""
    if not isinstance(value, dict):
        return _wrong(where or "it", _D, value)
    for key, item in value.items():
        spec = schema.get(key)
        at = "%s.%s" % (where, key) if where else str(key)
        if spec is None:
            return "%s is not a known field" % at
        if not _fits(item, spec[0]):
            return _wrong(at, spec[0], item)
        nested = spec[2]
        if nested is not None and item is not None:
            fault = problem(item, nested, at) if isinstance(item, dict) else items_problem(item, nested, at)
            if fault:
                return fault
    for key, spec in schema.items():
        if spec[1] and key not in value:
            return "%s.%s is missing" % (where, key) if where else "%s is missing" % key
    return ""


def items_problem(values: List[Any], nested: Any, where: str) -> str:
    """The first fault of a list's items: each a `nested` schema (a dict) or one of `nested`'s types."""
    if _items_ok(values, nested):
        return ""
    for i, item in enumerate(values):
        at = "%s[%d]" % (where, i)
        if isinstance(nested, dict):
            fault = problem(item, nested, at)
        else:
            fault = "" if _fits(item, nested) else _wrong(at, nested, item)
        if fault:
            return fault
    return ""


def _ok(value: object, schema: Schema) -> bool:
    """problem(value, schema) == "", faster: no message, no path."""
    if not isinstance(value, dict):
        return False
    for key, item in value.items():
        spec = schema.get(key)
        if spec is None:
            return False
        types, _, nested = spec
        if not isinstance(item, types) or (item.__class__ is bool and bool not in types) or _odd_float(item):
            return False
        if nested is not None and item is not None and not _nested_ok(item, nested):
            return False
    required = _REQUIRED.get(id(schema))
    if required is None:
        required = _REQUIRED[id(schema)] = tuple(k for k, spec in schema.items() if spec[1])
    return all(k in value for k in required)


def _nested_ok(item: Any, nested: Any) -> bool:
    return _ok(item, nested) if isinstance(item, dict) else _items_ok(item, nested)


def _items_ok(values: List[Any], nested: Any) -> bool:
    if isinstance(nested, dict):
        return all(_ok(item, nested) for item in values)
    return all(isinstance(item, nested) and (item.__class__ is not bool or bool in nested) and not _odd_float(item)
               for item in values)


_REQUIRED: Dict[int, Tuple[str, ...]] = {}  # id(schema) -> its required fields (schemas live as long as the module)


def plain_problem(types: Types, value: Any, where: str) -> Optional[str]:
    """The fault of a plain argument (registry.bind: str, int, float, bool, list, dict; None passes), or None."""
    return None if value is None or _fits(value, types) else _wrong(where, types, value)


def argument_problem(annotation: str, value: Any, where: str) -> Optional[str]:
    """The first fault of a handler argument annotated with a wire type (ARGUMENTS); None when the annotation
    is not one (registry.bind checks the plain ones)."""
    spec = ARGUMENTS.get(annotation)
    if spec is None:
        return None
    kind, nested = spec
    if not _fits(value, kind):
        return _wrong(where, kind, value)
    return problem(value, nested, where) if kind is _D else items_problem(value, nested, where)
