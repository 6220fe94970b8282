"""THE one way from settings to the pod(s) a command talks to. Every command asks here; no task reads a target key.

    pods(settings)    the pods a command runs on: the fleet (LIUM_TARGETS / OPS_HOSTS), narrowed by WF_POD=NAME,
                      or the one target of LIUM_TARGET / OPS_DEFAULT_HOST
    is_fleet(...)     True when a command would run on more than one pod (a fleet without WF_POD)
    one(settings)     a one-pod command's pod: a fleet without WF_POD is refused, naming the pods
    resolve(s, m)     a Member -> its provider's Resolved (Target, `lium ps` row); target(s, m): the Target alone
    again(s, failed)  a cached Lium address that did not answer, looked up once more (None: nothing to retry)

A config names one target or a fleet, never both: wfops.settings.load refuses LIUM_TARGET / OPS_DEFAULT_HOST
beside LIUM_TARGETS / OPS_HOSTS, so there is no precedence to remember. A Member is named (the `pod` column,
WF_POD) and knows its provider (wfops.targets.providers); PodCommand(command, settings, member=m) opens a
connection to it. Resolving a Member to an address (Lium: `lium ps`) happens when it is connected to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from wfops import hints
from wfops.errors import ConfigError
from wfops.settings.load import Settings
from wfops.targets import providers
from wfops.targets.providers.base import Resolved
from wfops.targets.target import LIUM, LOCAL, SSH, Member, Target

__all__ = ["POD_ENV", "Member", "again", "is_fleet", "members", "names", "one", "one_pod_only",
           "pick", "pods", "resolve", "target"]

POD_ENV = "WF_POD"  # pick one member for a command: WF_POD=NAME inv run.logs r1


def _chosen(environ: Mapping[str, str] | None) -> str:
    return (os.environ if environ is None else environ).get(POD_ENV, "").strip()


def _ssh_kind(name: str) -> str:
    return LOCAL if name == LOCAL else SSH


def members(settings: Settings) -> list[Member]:
    """The fleet's pods in config order (Lium pods first); [] when the config names one target."""
    out = [Member(n, LIUM, "LIUM_TARGETS") for n in settings.lium_targets]
    out += [Member(n, _ssh_kind(n), "OPS_HOSTS") for n in settings.ops_hosts]
    seen = [m.name for m in out]
    both = sorted({n for n in seen if seen.count(n) > 1})
    if both:  # one name, two pods: they would share a ledger entry, a `pod` column and WF_POD
        raise ConfigError(f"{both[0]!r} is in both LIUM_TARGETS and OPS_HOSTS: name each pod once")
    return out


def names(settings: Settings) -> list[str]:
    return [m.name for m in members(settings)]


def _is_fleet_config(settings: Settings) -> bool:
    return bool(settings.lium_targets or settings.ops_hosts)


def _single(settings: Settings) -> Member:
    lium = settings.lium_target.strip()
    host = settings.ops_default_host.strip()
    if lium:
        return Member(lium, LIUM, "LIUM_TARGET", fallback=host)
    if host:
        return Member(host, _ssh_kind(host), "OPS_DEFAULT_HOST")
    raise ConfigError("config: no target: set LIUM_TARGET (a Lium pod) or OPS_DEFAULT_HOST "
                      "(an ssh alias, user@host[:port], or `local`)")


def lium_pod(pod_id: str) -> Member:
    """A Lium pod named by its id, as LIUM_TARGET would name it (pod.up's new pod, before any config names it)."""
    return Member(pod_id, LIUM, "LIUM_TARGET")


def pick(settings: Settings, name: str) -> Member:
    """The member called `name` (WF_POD); a name the fleet lacks is a ConfigError that lists the fleet."""
    for m in members(settings):
        if m.name == name:
            return m
    known = ", ".join(names(settings)) or "none: the config names one target (LIUM_TARGET / OPS_DEFAULT_HOST)"
    raise ConfigError(f"{POD_ENV}={name!r} is not a pod of the fleet (fleet: {known})")


def one_pod_only(settings: Settings, command: str = "this command") -> ConfigError:
    """What a one-pod command says when the config names a fleet and WF_POD picks none."""
    listed = names(settings)
    return ConfigError(f"the config names a fleet of {len(listed)} pods ({', '.join(listed)}) and {command} works "
                       f"on one: choose it with {POD_ENV}=NAME (e.g. {POD_ENV}={listed[0]} {hints.program()} ...)")


def pods(settings: Settings, environ: Mapping[str, str] | None = None) -> list[Member]:
    """The pods a command runs on, in config order (Lium pods first)."""
    name = _chosen(environ)
    if _is_fleet_config(settings):
        return [pick(settings, name)] if name else members(settings)
    if name:
        pick(settings, name)  # a config of one target has no pod of that name: the error says so
    return [_single(settings)]


def is_fleet(settings: Settings, environ: Mapping[str, str] | None = None) -> bool:
    return _is_fleet_config(settings) and not _chosen(environ)


def one(settings: Settings, environ: Mapping[str, str] | None = None) -> Member:
    """A one-pod command's pod; on a fleet without WF_POD: a ConfigError naming the pods."""
    if is_fleet(settings, environ):
        raise one_pod_only(settings)
    return pods(settings, environ)[0]


def resolve(settings: Settings, member: Member | None = None, *, use_cache: bool = True,
            require_ready: bool = True) -> Resolved:
    """`member` (default: one(settings)) through its provider: the Target and the provider's record of the pod."""
    m = member if member is not None else one(settings)
    return providers.get(m.provider).resolve(settings, m, use_cache=use_cache, require_ready=require_ready)


def target(settings: Settings, member: Member | None = None) -> Target:
    """The connectable Target of `member` (default: one(settings))."""
    found = resolve(settings, member).target
    assert found is not None  # require_ready: a pod that is not ready raised
    return found


def again(settings: Settings, failed: Target, member: Member | None = None) -> Target | None:
    """A cached Lium address that did not answer: looked up once more (None: it was not from the cache)."""
    return providers.get(failed.kind).again(settings, failed, member.fallback if member is not None else None)


def describe(settings: Settings) -> dict[str, object]:
    """What config.show says about the target: the fleet's pods, or the one target resolved (with its notes)."""
    if is_fleet(settings):
        fleet = members(settings)
        listed = [m.name for m in fleet]
        keys = [k for k, v in (("LIUM_TARGETS", settings.lium_targets), ("OPS_HOSTS", settings.ops_hosts)) if v]
        return {"kind": "fleet", "label": f"a fleet of {len(listed)} pods: {', '.join(listed)}",
                "from": " / ".join(keys), "pods": listed,
                "members": [{"pod": m.name, "provider": m.provider, "what": providers.get(m.provider).describe(m)}
                            for m in fleet],
                "notes": []}
    m = one(settings)
    found = target(settings, m)
    return {"kind": found.kind, "label": found.label, "from": m.source, "notes": list(found.notes)}


def gone_hint(settings: Settings, member: Member) -> str:
    """After pod.down removed `member`: what to change in the config."""
    if member.in_fleet:
        rest = [m.name for m in members(settings) if m.source == member.source and m.name != member.name]
        return (f"{member.name} is still in {member.source} and names no pod now: take it out "
                f"({member.source}={','.join(rest)})")
    return f"{member.source}={member.name} names no pod now: point it at the next one (pod.up prints the line)"
