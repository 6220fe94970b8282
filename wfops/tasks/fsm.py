"""`fsm.status` and `fsm.reset`: the workflow state persisted on the pod."""

from __future__ import annotations

from invoke import Collection

from wfops.output import pairs, table
from wfops.tasks._base import JSON_HELP, emit, settings_for, wftask
from wfops.transport import rules as fsm
from wfops.transport.command import call_once


def _human(data: dict) -> str:
    if data.get("damaged"):
        return pairs([("state", "unknown: the state file is damaged"), ("problem", data["damaged"]),
                      ("file", data.get("file"))])
    effective = data.get("effective") or {}
    head = pairs([
        ("state", data.get("state") + (f" (commands see {effective['state']}: {effective['why']})"
                                       if effective else "")),
        ("since", data.get("updated_at") or "never set (no state file yet)"),
        ("by", data.get("command")),
        ("reason", data.get("reason")),
        ("file", data.get("file")),
    ])
    history = data.get("history") or []
    if not history:
        return head
    rows = [(h.get("at"), h.get("from"), h.get("to"), h.get("command"), h.get("reason")) for h in history[-10:]]
    return head + "\n\nrecent transitions (oldest first)\n" + table(("at", "from", "to", "command", "reason"), rows)


@wftask(help={"json": JSON_HELP}, fleet=True)
def status(c, json=False, config=None):
    """Show the workflow state on the pod, when and why it was set, and recent history."""
    settings = settings_for(c, config)
    data = call_once("fsm.status", settings, "fsm-show")
    emit(data, json, lambda: _human(data))


@wftask(positional=["state"], help={
    "state": "state to force: " + ", ".join(fsm.STATES) + " (default INIT)",
    "reason": "why, recorded in the history",
    "json": JSON_HELP,
}, fleet=True, interrupted="the workflow state may have changed: run fsm.status")
def reset(c, state=None, reason="", json=False, config=None):
    """Force the workflow state (default INIT), recording the reason."""
    to_state = fsm.parse_state(state or fsm.INIT)
    settings = settings_for(c, config)
    data = call_once("fsm.reset", settings, "fsm-reset", to=to_state, reason=reason or "manual reset")
    emit(data, json, lambda: f"workflow state is now {data.get('state')}")


ns = Collection("fsm", status, reset)
