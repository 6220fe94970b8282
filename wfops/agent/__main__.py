"""Entry point of the pod agent.

From the client (one call per command): no arguments; stdin carries one JSON document
    {"cmd": NAME, "pod": {layout}, "prelude": {"command", "enforce", "dry_run", "env"}, "data": {arguments}}
The prelude (workflow gate, then config sync) runs first; the command's result goes to stdout as JSON
(or text), a refusal to stderr as `@wfops-error CODE message` with CODE as the exit status.

From the pod itself (runner.sh of a task, the tmux window of a sweep): `CMD VALUE...`, the values
taken in the order of the handler's parameters (e.g. `supervise SPEC_FILE`, `sweep-run MANIFEST`).
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from . import store, wire, workflow
from .registry import COMMANDS, Refusal, bind, command, parameters
from .states import EXIT_REMOTE, EXIT_USAGE, STATES, Layout
from .store import Damaged
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, TextIO

    from .wire import Json, Request

# which module registers each command: only that one is imported (the agent starts in a few ms more than python)
MODULES: Dict[str, Optional[str]] = {
    wire.NOOP: None, wire.FSM_SHOW: None, wire.FSM_RESET: None,
    wire.SUPERVISE: "supervisor", wire.SWEEP_RUN: "scheduler",
    wire.SWEEP_START: "sweeps", wire.SWEEP_STATUS: "sweeps", wire.SWEEP_STOP: "sweeps", wire.SWEEP_LIST: "sweeplist",
    wire.SWEEP_ADD: "sweepedit", wire.SWEEP_RETRY: "sweepedit", wire.SWEEP_CURRENT: "sweepedit",
    wire.FETCH_PLAN: "fetching",
    wire.TASK_START: "tasks", wire.TASK_SHOW: "tasks", wire.TASK_WAIT: "tasks", wire.TASK_LIST: "tasks",
    wire.CHECKOUT_FACTS: "facts", wire.POD_FACTS: "facts", wire.POD_DOWN: "facts",
    wire.BOOTSTRAP: "prepare", wire.CHECKOUT_APPLY: "prepare",
    wire.FLEET_FACTS: "fleet", wire.SWEEP_WITHDRAW: "fleet", wire.NET_LISTEN: "netcheck", wire.NET_PROBE: "netcheck",
    wire.SWEEP_METRICS: "results", wire.SWEEP_WAIT: "results", wire.RUN_LOGS: "logs", wire.TASK_LOGS: "logs",
    wire.SWEEP_RECOVER: "recover",
}


def load(name: str) -> None:
    """Import the module that registers command `name` (an unknown name is refused by `bind`)."""
    module = MODULES.get(name)
    if module:
        importlib.import_module("." + module, __package__)


@command(wire.NOOP)
def noop(pod: Layout) -> None:
    """Only the prelude (gate and config sync)."""


@command(wire.FSM_SHOW)
def fsm_show(pod: Layout) -> Json:
    """The workflow state as recorded, what commands see now, and the history. Always works: a damaged file
    is shown as damaged."""
    try:
        data = workflow.read_state(pod.state_file)
    except Damaged as exc:
        return {"state": "unknown", "damaged": workflow.damaged_message(exc), "file": pod.state_file, "history": []}
    seen, why = workflow.effective(pod, data, promote=False)
    if seen != data["state"]:
        data["effective"] = {"state": seen, "why": why}
    data["file"] = pod.state_file
    return data


@command(wire.FSM_RESET)
def fsm_reset(pod: Layout, to: str, reason: str = "manual reset") -> Json:
    if to not in STATES:  # the client's fsm.reset checks it too: a hand-made request gets here
        raise Refusal(EXIT_USAGE, "fsm-reset: %s is not a workflow state (%s)" % (to, ", ".join(STATES)))
    data = workflow.force(pod, to, "fsm.reset", reason)
    data["file"] = pod.state_file
    return data


def _internal(argv: List[str]) -> Any:
    name = argv[0]
    load(name)
    fn = COMMANDS.get(name)
    if fn is None:
        raise Refusal(EXIT_USAGE, "the pod agent has no command %r" % name)
    return fn(None, **dict(zip([p[0] for p in parameters(fn)], argv[1:])))


def _from_client(stream: TextIO) -> Any:
    try:  # one line: the client keeps stdin open (it may send more: the agent itself, see render.BOOT) ...
        line = stream.readline()  # after its guard (a shell that reads the line as commands exits at once)
        payload = json.loads(line[len(wire.REQUEST_GUARD):] if line.startswith(wire.REQUEST_GUARD) else line)
    except ValueError as exc:
        raise Refusal(EXIT_USAGE, "the pod agent got no valid request on stdin: %s" % exc) from None
    fault = wire.problem(payload, wire.REQUEST)
    if fault:
        raise Refusal(EXIT_USAGE, "request: " + fault)
    null = os.open(os.devnull, os.O_RDONLY)  # ... so no child of a command may wait on it
    os.dup2(null, 0)
    os.close(null)
    request: Request = payload
    pod = Layout.from_dict(request["pod"])
    load(request["cmd"])
    fn, kwargs = bind(request["cmd"], request.get("data") or {})
    workflow.prelude(pod, request.get("prelude") or {})
    return fn(pod, **kwargs)


def unexpected(exc: Exception, argv: List[str]) -> str:
    """One line for a fault no handler expected (a disk that filled up, a file of an odd shape); the traceback
    goes to /tmp/wfops-agent-error-<pid>.txt (best effort: the pod's outputs disk may be the full one)."""
    import tempfile
    import traceback

    if store.is_disk_full(exc):
        what = "the disk is full (%s); free space on the pod and try again" % (getattr(exc, "filename", "") or exc)
    elif isinstance(exc, OSError):
        what = "%s (%s)" % (exc.strerror or exc, exc.filename or "")
    else:
        what = "%s: %s" % (type(exc).__name__, exc)
    where = os.path.join(tempfile.gettempdir(), "wfops-agent-error-%d.txt" % os.getpid())
    try:
        with open(where, "w") as fh:
            fh.write("argv: %r\n%s" % (argv, traceback.format_exc()))
    except OSError:
        where = ""
    return "the pod agent failed: %s%s" % (what, "; details in %s on the pod" % where if where else "")


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv == [wire.SERVE_FLAG]:  # kept alive by the client's keeper for read-only requests (serve.py)
        from . import serve

        serve.loop(main, load)
        return
    try:
        result = _internal(argv) if argv else _from_client(sys.stdin)
    except Refusal as exc:
        sys.stdout.flush()
        sys.stderr.write("@wfops-error %d %s\n" % (exc.code, exc.message.replace("\n", " ")))
        sys.stderr.flush()
        raise SystemExit(exc.code) from None
    except Damaged as exc:
        sys.stderr.write("@wfops-error %d %s\n" % (EXIT_REMOTE, str(exc).replace("\n", " ")))
        raise SystemExit(EXIT_REMOTE) from None
    except Exception as exc:  # never a traceback for the user: one line, the traceback kept in a file on the pod
        if argv:  # the pod's own commands (the queue, a supervisor): their traceback goes to their log
            raise
        sys.stdout.flush()
        sys.stderr.write("@wfops-error %d %s\n" % (EXIT_REMOTE, unexpected(exc, argv).replace("\n", " ")))
        sys.stderr.flush()
        raise SystemExit(EXIT_REMOTE) from None
    if isinstance(result, str):
        _write_out(result)
    elif result is not None:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def _write_out(text: str) -> None:
    """A command's text result, as bytes: a file name that is not UTF-8 (surrogate-escaped, as os.listdir gives it)
    goes out as the bytes it has on disk, whatever the locale (under a UTF-8 one, sys.stdout would refuse it)."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a stdout without bytes underneath (replaced by a caller): text it is
        sys.stdout.write(text)
        return
    sys.stdout.flush()
    out.write(text.encode("utf-8", "surrogateescape"))
    out.flush()


if __name__ == "__main__":
    main()
