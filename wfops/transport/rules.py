"""The workflow state machine (SPEC §2), client side. Pure.

The states and the rule of every command are defined once, in the pod agent (wfops/agent/states.py); the
pod applies them under a lock. This module looks up a command's rule, parses user input, and re-exports the
two names tasks/fsm.py shows (`X as X`: an explicit re-export).
"""

from __future__ import annotations

from wfops.agent.states import INIT as INIT
from wfops.agent.states import RULES, Rule
from wfops.agent.states import STATES as STATES
from wfops.errors import UsageError


def rule(command: str) -> Rule:
    found: Rule = RULES[command]
    return found


def parse_state(value: str) -> str:
    state = value.strip().upper()
    if state not in STATES:
        raise UsageError(f"unknown state {value!r}: expected one of {', '.join(STATES)}")
    return state
