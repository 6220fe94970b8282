"""The lean entry's work on pods (wfops.lean): the agent request a read-only command sends, the session it goes
through, and a fleet's reads on every pod at once (Fleet). Imported by wfops.lean only, on its path."""

from __future__ import annotations

import threading
from typing import Any

from wfops.errors import Fallback


def session(target: Any, redact: Any, persist: float, show: Any) -> Any:
    """The command's session: through the target's warm keeper (started if none answers), or (WF_PERSIST_SECS=0,
    cold) a connection of this process, as the full path makes it (its errors are the command's)."""
    if persist:
        from wfops.transport.leanexec import keeper_session

        return keeper_session(target, redact, persist, show)
    from wfops.transport.ssh import SSHSession

    return SSHSession(target, redact, show)


def pod_request(command: str, v: dict[str, Any], s: Any) -> tuple[str, dict[str, object]]:
    """The agent command and its data, as the task asks them."""
    from wfops.agent import wire

    if command == "fsm.status":
        return wire.FSM_SHOW, {}
    if command == "task.status":
        return wire.TASK_SHOW, {"id": v["id"], "tail": v["tail_lines"]}
    if command == "task.list":
        return wire.TASK_LIST, {"limit": v["limit"]}
    if command == "sweep.list":
        return wire.SWEEP_LIST, {}
    return wire.SWEEP_STATUS, {"sweep": v["sweep"], "metric_patterns": s.metric_sources}


class Fleet:
    """One lean command on every pod of a fleet at once (wfops.fanout, as the task's on_pods), each through its
    warm keeper, shown as the task shows it (wfops.fanout.show): one section per pod, or one JSON document, then the
    worst pod's exit. Nothing is kept for the cached fast path (an entry holds one pod's request).

    Every pod's keeper session is opened before any request leaves: a keeper the full path must deal with in its
    own words (a keeper directory refused) is Fallback for the whole command while nothing reached any pod. A
    pod's keeper found stale, gone or frozen once its request is sent (nothing reached that pod) is asked again
    through the full path's own session (wfops.transport.connect.open_session: it starts another keeper), that pod
    alone: each pod is asked once, as on the full path."""

    def __init__(self, command: str, values: dict[str, Any], settings: Any, pods: list[tuple[Any, Any]]) -> None:
        self.command, self.values, self.settings = command, values, settings
        self.targets = {m.name: target for m, target in pods}
        self.members = [m for m, _ in pods]

    def ask(self) -> Any:
        from wfops import fanout

        opened = _Opened(len(self.members))
        return fanout.run_each(self.members, lambda m, log: self._one(m, log, opened))  # a Fallback: raised here

    def _one(self, member: Any, log: Any, opened: _Opened) -> dict[str, Any] | None:
        from wfops.transport.command import PodCommand

        s, persist = self.settings, float(self.settings.wf_persist_secs)
        target = self.targets[member.name]
        cmd = PodCommand(self.command, s, target=target, member=member, log=log)
        try:
            cmd.session = session(target, cmd.redact, persist, log)
        except Fallback:
            opened.fallback = True
            raise
        finally:
            opened.arrive()
        try:
            if not opened.wait():  # another pod's keeper sends the whole command to the full path
                return None
            out = cmd.call_text(*pod_request(self.command, self.values, s))
            try:
                return cmd.send_text(out)
            except Fallback:  # nothing reached this pod: its session as the full path opens it
                from wfops.transport.connect import open_session

                cmd.session.close()
                cmd.session = open_session(target, cmd.redact, persist, log)
                return cmd.send_text(out)
        finally:
            cmd.session.close()

    def show(self, outcomes: Any) -> None:
        from wfops import fanout, views

        fanout.show(outcomes, bool(self.values["json"]), views.TEXT[self.command], lambda data: data)


class _Opened:
    """Every pod's session opened (or failed) before any request leaves: `arrive` once a pod, `wait` for all of
    them; False when one of them fell back."""

    def __init__(self, pods: int) -> None:
        self.left, self.fallback = pods, False
        self._done = threading.Condition()

    def arrive(self) -> None:
        with self._done:
            self.left -= 1
            self._done.notify_all()

    def wait(self) -> bool:
        with self._done:
            self._done.wait_for(lambda: self.left <= 0)
            return not self.fallback
