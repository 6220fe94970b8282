"""One sweep over a fleet, the sessions: one open PodCommand per pod (opened in parallel), an agent command on
each at once (wfops.fanout), and the pods that did not answer. One connection per pod per command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from wfops import fanout
from wfops.agent import wire
from wfops.errors import ConnectError, NotFoundError, WfopsError
from wfops.settings.load import Settings
from wfops.targets import resolve
from wfops.transport.command import PodCommand

if TYPE_CHECKING:  # the wire's TypedDicts exist for the type checker only (the pod agent never imports typing)
    from wfops.agent.wire import FleetFacts


Answer = fanout.Outcome[resolve.Member, Any]  # one pod's answer to an agent command


def known(settings: Settings, names: Iterable[str]) -> None:
    """NotFoundError (one line) when the ledger names a pod the config does not (removed from it since)."""
    missing = sorted(set(names) - {m.name for m in resolve.members(settings)})
    if missing:
        raise NotFoundError(f"the ledger names pod(s) the config does not: {', '.join(missing)} (put them back "
                            "in LIUM_TARGETS / OPS_HOSTS)")


class Pods:
    """One open PodCommand per pod (opened in parallel); pods that did not answer are in `down`."""

    def __init__(self, settings: Settings, command: str, only: list[str] | None = None) -> None:
        self.settings = settings
        self.members = [m for m in resolve.members(settings) if only is None or m.name in only]
        known(settings, only or ())
        self.command = command
        self.cmds: dict[str, PodCommand] = {}
        self.down: dict[str, str] = {}

    def __enter__(self) -> Pods:
        self._open(self.members)
        return self

    def _open(self, members: list[resolve.Member]) -> list[str]:
        def open_one(m: resolve.Member, log: fanout.Log) -> PodCommand:
            return PodCommand(self.command, self.settings, member=m).__enter__()

        opened = []
        for o in fanout.run_each(members, open_one):
            if o.error is not None:
                self.down[o.member.name] = o.error.message
            elif o.value is not None:
                self.cmds[o.member.name] = o.value
                self.down.pop(o.member.name, None)
                opened.append(o.member.name)
        return opened

    def reopen(self) -> list[str]:
        """Try the pods in `down` again (a silent pod may answer again: sweep.wait); the names that opened."""
        return self._open([m for m in self.members if m.name in self.down])

    def __exit__(self, *exc: object) -> None:
        for cmd in self.cmds.values():
            cmd.__exit__(None, None, None)

    def call(self, agent_command: str, args: Callable[[str], dict[str, Any]] | dict[str, Any],
             names: list[str] | None = None) -> dict[str, Answer]:
        """The agent command on each open pod (or on `names`) at once; a pod whose connection breaks moves to
        `down`."""
        live = [m for m in self.members if m.name in self.cmds and (names is None or m.name in names)]

        def one(m: resolve.Member, log: fanout.Log) -> dict[str, Any]:
            return self.cmds[m.name].call(agent_command, **(args(m.name) if callable(args) else args))

        out = {o.member.name: o for o in fanout.run_each(live, one)}
        for name, o in out.items():
            if isinstance(o.error, ConnectError):
                self.down[name] = o.error.message
                self.cmds.pop(name).__exit__(None, None, None)
        return out

    def reconnect(self, name: str) -> bool:
        """One pod connected to afresh (its replacement, or a host that answers again): True when it answers."""
        old = self.cmds.pop(name, None)
        if old is not None:
            old.__exit__(None, None, None)
        return bool(self._open([m for m in self.members if m.name == name]))


def check_all(outcomes: Mapping[str, Answer], what: str) -> dict[str, FleetFacts]:
    bad = [o for o in outcomes.values() if o.error is not None]
    if bad:
        first = bad[0]
        raise WfopsError(f"{what}: {first.member.name}: {first.error.message}", first.code)  # type: ignore[union-attr]
    return {name: o.value for name, o in outcomes.items() if o.value is not None}


def facts_of(pods: Pods, settings: Settings, sweep_id: str = "") -> dict[str, Answer]:
    args: dict[str, object] = {"fake_gpus": settings.wf_fake_gpus, "cpu_only": settings.cpu_only}
    if sweep_id:
        args["sweep_id"] = sweep_id
    return pods.call(wire.FLEET_FACTS, {k: v for k, v in args.items() if v is not None})
