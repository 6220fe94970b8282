"""The workflow state machine (SPEC §2), client side. Pure.

The states and the rule of every command are defined once, in the pod agent (wfops/agent/states.py); the
pod applies them under a lock. This module re-exports them for the task modules and parses user input.
"""

from __future__ import annotations

from wfops.agent.states import (  # noqa: F401 - re-exported
    ANY,
    BOOTSTRAPPED,
    CHECKED_OUT,
    INIT,
    POD_READY,
    RULES,
    STATES,
    SWEEP_COMPLETED,
    SWEEP_RUNNING,
    Rule,
)
from wfops.errors import UsageError


def rule(command: str) -> Rule:
    return RULES[command]


def parse_state(value: str) -> str:
    state = value.strip().upper()
    if state not in STATES:
        raise UsageError(f"unknown state {value!r}: expected one of {', '.join(STATES)}")
    return state
