"""`fsm.status` and `fsm.reset`: the workflow state persisted on the pod."""

from __future__ import annotations

from typing import Any

from invoke import Collection

from wfops.agent import wire
from wfops.fanout import Log, to_stderr
from wfops.settings.load import Settings
from wfops.targets.resolve import Member
from wfops.tasks._base import JSON_HELP, PodWork, on_pods, settings_for, wftask
from wfops.transport import rules as fsm
from wfops.transport.command import call_once
from wfops.views import fsm_text as _human


def read_state(settings: Settings, member: Member, log: Log = to_stderr) -> dict:
    """The workflow state on one pod (what `fsm.status --json` prints for it)."""
    return call_once("fsm.status", settings, wire.FSM_SHOW, member=member, log=log)


def reset_state(settings: Settings, member: Member, to_state: str, reason: str, log: Log = to_stderr) -> dict:
    """Force one pod's workflow state (a state of fsm.STATES), recording the reason."""
    return call_once("fsm.reset", settings, wire.FSM_RESET, member=member, log=log, to=to_state, reason=reason)


@wftask(help={"json": JSON_HELP})
def status(c: Any, json: bool = False, config: str | None = None) -> None:
    """Show the workflow state on the pod and its history.

    Show the workflow state on the pod, when and why it was set, and recent history."""
    settings = settings_for(c, config)
    on_pods(settings, json, PodWork(read_state, _human))


@wftask(positional=["state"], help={
    "state": "state to force: " + ", ".join(fsm.STATES) + " (default INIT)",
    "reason": "why, recorded in the history",
    "json": JSON_HELP,
}, interrupted="the workflow state may have changed: run fsm.status")
def reset(c: Any, state: str | None = None, reason: str = "", json: bool = False, config: str | None = None) -> None:
    """Force the workflow state (default INIT), with a reason.

    Force the workflow state (default INIT), recording the reason."""
    to_state = fsm.parse_state(state or fsm.INIT)
    settings = settings_for(c, config)
    on_pods(settings, json, PodWork(lambda s, m, log: reset_state(s, m, to_state, reason or "manual reset", log),
                                     lambda data: f"workflow state is now {data.get('state')}"))


ns = Collection("fsm", status, reset)
