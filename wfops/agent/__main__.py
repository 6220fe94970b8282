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

from . import wire, workflow
from .registry import COMMANDS, Refusal, bind, command, parameters
from .states import EXIT_REMOTE, EXIT_USAGE, Layout
from .store import Damaged

# which module registers each command: only that one is imported (the agent starts in a few ms more than python)
MODULES = {
    "noop": None, "fsm-show": None, "fsm-reset": None,
    "supervise": "supervisor", "sweep-run": "scheduler",
    "sweep-start": "sweeps", "sweep-status": "sweeps", "sweep-stop": "sweeps", "sweep-list": "sweeps",
    "sweep-add": "sweepedit", "sweep-retry": "sweepedit", "sweep-current": "sweepedit", "fetch-plan": "fetching",
    "task-start": "tasks", "task-show": "tasks", "task-wait": "tasks", "task-list": "tasks",
    "checkout-facts": "facts", "pod-facts": "facts", "pod-down": "facts",
    "bootstrap": "prepare", "checkout-apply": "prepare",
    "fleet-facts": "fleet", "sweep-withdraw": "fleet", "net-listen": "netcheck", "net-probe": "netcheck",
    "sweep-metrics": "results", "sweep-wait": "results", "run-logs": "logs", "task-logs": "logs",
}


def load(name: str) -> None:
    """Import the module that registers command `name` (an unknown name is refused by `bind`)."""
    if MODULES.get(name):
        importlib.import_module("." + MODULES[name], __package__)


@command("noop")
def noop(pod) -> None:
    """Only the prelude (gate and config sync)."""


@command("fsm-show")
def fsm_show(pod) -> dict:
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


@command("fsm-reset")
def fsm_reset(pod, to: str, reason: str = "manual reset") -> dict:
    data = workflow.force(pod, to, "fsm.reset", reason)
    data["file"] = pod.state_file
    return data


def _internal(argv: list):
    name = argv[0]
    load(name)
    fn = COMMANDS.get(name)
    if fn is None:
        raise Refusal(EXIT_USAGE, "the pod agent has no command %r" % name)
    return fn(None, **dict(zip([p[0] for p in parameters(fn)], argv[1:])))


def _from_client(stream) -> object:
    try:  # one line: the client keeps stdin open (it may send more: the agent itself, see render.BOOT) ...
        payload = json.loads(stream.readline())
    except ValueError as exc:
        raise Refusal(EXIT_USAGE, "the pod agent got no valid request on stdin: %s" % exc) from None
    fault = wire.problem(payload, wire.REQUEST)
    if fault:
        raise Refusal(EXIT_USAGE, "request: " + fault)
    null = os.open(os.devnull, os.O_RDONLY)  # ... so no child of a command may wait on it
    os.dup2(null, 0)
    os.close(null)
    pod = Layout.from_dict(payload["pod"])
    load(payload["cmd"])
    fn, kwargs = bind(payload["cmd"], payload.get("data") or {})
    workflow.prelude(pod, payload.get("prelude") or {})
    return fn(pod, **kwargs)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
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
    if isinstance(result, str):
        sys.stdout.write(result)
    elif result is not None:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
