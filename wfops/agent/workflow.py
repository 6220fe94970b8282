"""The workflow state machine on the pod: the gate every command passes, and the transitions, applied from
the one rule table in states.py. Also the config sync that follows the gate.

Read-only commands never write the state file: a SWEEP_RUNNING whose queue is gone is shown as such, and
recorded (as SWEEP_COMPLETED) by the next command that mutates.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone

from . import procs, store
from .registry import Refusal
from .states import (
    ANY,
    EXIT_REMOTE,
    EXIT_STATE,
    HISTORY_LIMIT,
    INIT,
    POD_READY,
    QUEUE_RUNNING,
    RULES,
    STATES,
    SWEEP_COMPLETED,
    SWEEP_RUNNING,
)
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Optional, Tuple

    from .states import Layout, Rule
    from .wire import Json, Prelude


CONFIG_WRITTEN = "wfops: config written to "  # the line of a config sync that wrote (wfops.leanfetch keeps it)


def read_state(path: str) -> Json:
    """The state document; INIT with `exists: False` when there is no file. Raises store.Damaged."""
    data: Optional[Json] = store.load(path, required=("state",))
    if data is None:
        return {"state": INIT, "history": [], "exists": False}
    if data["state"] not in STATES:
        raise store.Damaged(path, "unknown state %r" % (data["state"],))
    if not isinstance(data.get("history", []), list):
        raise store.Damaged(path, "history is not a list")
    data["exists"] = True
    return data


def write_state(path: str, current: Json, to: str, command: str, reason: str) -> Json:
    entry = {"from": current.get("state", INIT), "to": to, "at": store.now_iso(), "command": command,
             "reason": reason}
    history = (current.get("history") or []) + [entry]
    data = {"state": to, "updated_at": entry["at"], "command": command, "reason": reason,
            "history": history[-HISTORY_LIMIT:]}
    store.write_json(path, data)
    return data


def damaged_message(exc: store.Damaged) -> str:
    return ("the workflow state file %s; nothing was changed. `fsm.status` shows it, `fsm.reset [STATE]` keeps "
            "it aside and starts again" % exc)


def queue_gone(pod: Layout) -> str:
    """Why the sweep queue is not running any more ("" when it is, or when there is no record to tell)."""
    sw, problem = store.load_or_note(pod.sweep_file)
    if problem or not sw:
        return ""
    state, reason = procs.queue_liveness(sw)
    return "" if state == QUEUE_RUNNING else "sweep %s%s" % (state, ": " + reason if reason else "")


def effective(pod: Layout, current: Json, promote: bool) -> Tuple[Any, ...]:
    """(state the command sees, why it differs from the recorded one or "")."""
    state = current["state"]
    if state == SWEEP_RUNNING:
        why = queue_gone(pod)
        if why:
            return SWEEP_COMPLETED, why
    if state == INIT and promote:
        return POD_READY, "pod reachable"
    return state, ""


def _check(rule: Rule, state: str, enforce: bool) -> None:
    if state in rule.allowed:
        return
    allowed = ", ".join(rule.allowed)
    if enforce:
        raise Refusal(EXIT_STATE, "%s is not allowed in state %s (allowed: %s); see `fsm.status`, or "
                      "`fsm.reset STATE` if the pod really is elsewhere" % (rule.command, state, allowed))
    sys.stderr.write("wfops: WF_FSM_ENFORCE=0: running %s in state %s (normally allowed: %s)\n"
                     % (rule.command, state, allowed))


def gate(pod: Layout, command: str, enforce: bool, dry_run: bool) -> None:
    """Refuse a command the workflow state does not allow (exit 3, nothing changed). A mutating command
    records what it found (promotion, a finished sweep); a read-only one writes nothing, not even a lock dir."""
    rule = RULES[command]
    if rule.allowed == ANY and (rule.readonly or not rule.promote):
        return  # nothing to check, nothing to record (fsm.status and fsm.reset work on a damaged file)
    try:
        if rule.readonly:
            current = read_state(pod.state_file)
            _check(rule, effective(pod, current, rule.promote)[0], enforce)
            return
        with store.locked(pod.state_file):
            current = read_state(pod.state_file)
            state, why = effective(pod, current, rule.promote)
            _check(rule, state, enforce)
            if state != current["state"] and not dry_run:
                verb = "promoted" if state == POD_READY else "recorded"
                write_state(pod.state_file, current, state, command, "%s (%s by %s)" % (why, verb, command))
    except store.Damaged as exc:
        raise Refusal(EXIT_REMOTE, damaged_message(exc)) from None


def succeed(pod: Layout, command: str, reason: str) -> str:
    """Apply the command's on_success transition from the rule table; returns the state now."""
    rule = RULES[command]
    with store.locked(pod.state_file):
        current = read_state(pod.state_file)
        if rule.on_success and (rule.only_from is None or current["state"] in rule.only_from):
            now: str = write_state(pod.state_file, current, rule.on_success, command, reason)["state"]
            return now
        recorded: str = current["state"]
        return recorded


def force(pod: Layout, to: str, command: str, reason: str) -> Json:
    """fsm.reset: set any state; a damaged file is kept aside (returned as `kept`) instead of read."""
    kept = None
    with store.locked(pod.state_file):
        try:
            current = read_state(pod.state_file)
        except store.Damaged:
            kept = "%s.damaged-%s" % (pod.state_file, datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f"))
            os.replace(pod.state_file, kept)
            current = {"state": INIT, "history": []}
        data = write_state(pod.state_file, current, to, command, reason)
    return dict(data, kept=kept)


def sync_env(path: str, sha: str, payload_b64: str, dry_run: bool, readonly: bool) -> None:
    """Write the config file (mode 600) only when its content changed. A read-only command that cannot
    write it (a full disk) warns and goes on."""
    import base64
    import hashlib

    try:
        with open(path, "rb") as fh:
            if hashlib.sha256(fh.read()).hexdigest() == sha:
                return
    except OSError:
        pass
    if dry_run:
        sys.stderr.write("wfops: dry run: the config on the pod (%s) differs and would be rewritten\n" % path)
        return
    try:
        store.write_bytes(path, base64.b64decode(payload_b64), mode=0o600)
    except OSError as exc:
        if not readonly:
            raise Refusal(EXIT_REMOTE, "cannot write the config to %s: %s" % (path, exc.strerror or exc)) from None
        sys.stderr.write("wfops: warning: could not update the config on the pod (%s: %s)\n"
                         % (path, exc.strerror or exc))
        return
    sys.stderr.write(CONFIG_WRITTEN + path + "\n")


def prelude(pod: Layout, pre: Prelude) -> None:
    """What every client command does first, in this order: the state gate, then the config sync."""
    command = pre.get("command")
    if command:
        gate(pod, command, bool(pre.get("enforce", True)), bool(pre.get("dry_run")))
    env = pre.get("env")
    if env and pod.env_path:
        readonly = bool(command) and RULES[command].readonly
        sync_env(pod.env_path, env["sha"], env["b64"], bool(pre.get("dry_run")), readonly)
