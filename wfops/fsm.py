"""The workflow state machine (SPEC §2): states and the rule of every command. Pure.

The pod holds the state file; the decision is made on the pod under a lock by the helper
(remote_templates/wfops_pod.py), from the rule this module hands to the rendered script.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

INIT = "INIT"
POD_READY = "POD_READY"
BOOTSTRAPPED = "BOOTSTRAPPED"
CHECKED_OUT = "CHECKED_OUT"
SWEEP_RUNNING = "SWEEP_RUNNING"
SWEEP_COMPLETED = "SWEEP_COMPLETED"

STATES: tuple[str, ...] = (INIT, POD_READY, BOOTSTRAPPED, CHECKED_OUT, SWEEP_RUNNING, SWEEP_COMPLETED)
ANY: tuple[str, ...] = STATES

_PREPARED = (POD_READY, BOOTSTRAPPED, CHECKED_OUT, SWEEP_COMPLETED)


@dataclass(frozen=True)
class Rule:
    command: str
    allowed: tuple[str, ...]
    on_success: str | None = None  # state written when the command succeeds
    promote: bool = True  # INIT -> POD_READY when the pod answers
    mutating: bool = False  # holds the pod's command lock while it works
    readonly: bool = False  # one helper call does the gate, the config sync and the work


RULES: dict[str, Rule] = {
    r.command: r
    for r in (
        Rule("pod.up", ANY),
        Rule("pod.status", ANY),
        Rule("pod.wait", ANY),
        Rule("pod.down", ANY, on_success=INIT, promote=False, mutating=True),
        Rule("bootstrap", _PREPARED, on_success=BOOTSTRAPPED, mutating=True),
        Rule("checkout", _PREPARED, on_success=CHECKED_OUT, mutating=True),
        Rule("fsm.status", ANY, promote=False, readonly=True),
        Rule("fsm.reset", ANY, promote=False, mutating=True),
        Rule("task.run", tuple(s for s in STATES if s != INIT), mutating=True),
        Rule("task.status", ANY, readonly=True),
        Rule("task.wait", ANY, readonly=True),
        Rule("task.list", ANY, readonly=True),
        Rule("sweep.start", (CHECKED_OUT, SWEEP_COMPLETED), on_success=SWEEP_RUNNING, mutating=True),
        Rule("sweep.status", (CHECKED_OUT, SWEEP_RUNNING, SWEEP_COMPLETED), readonly=True),
        Rule("sweep.stop", (SWEEP_RUNNING, SWEEP_COMPLETED), mutating=True),
        Rule("run.fetch", (CHECKED_OUT, SWEEP_RUNNING, SWEEP_COMPLETED)),
    )
}


def rule(command: str) -> Rule:
    return RULES[command]


def parse_state(value: str) -> str:
    state = value.strip().upper()
    if state not in STATES:
        raise UsageError(f"unknown state {value!r}: expected one of {', '.join(STATES)}")
    return state
