"""THE one way from settings to the pod(s) a command talks to. Every command asks here; no task reads a target key.

    pods(settings)   the pods a command runs on: the fleet (LIUM_TARGETS / OPS_HOSTS), narrowed by WF_POD=NAME,
                     or the one target of LIUM_TARGET / OPS_DEFAULT_HOST
    is_fleet(...)    True when a command would run on more than one pod (a fleet without WF_POD)
    one(settings)    a one-pod command's pod: a fleet without WF_POD is refused, naming the pods

A Member is named (the `pod` column, WF_POD) and knows its provider; PodCommand(command, settings, member=m)
opens a connection to it. Resolving a Member to an address (Lium: `lium ps`) happens when it is connected to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from wfops.settings.load import Settings
from wfops.targets import fleet
from wfops.targets.fleet import POD_ENV, Member

__all__ = ["POD_ENV", "Member", "is_fleet", "one", "pods"]


def _chosen(environ: Mapping[str, str] | None) -> str:
    return (os.environ if environ is None else environ).get(POD_ENV, "").strip()


def _single(settings: Settings) -> Member:
    if settings.lium_target.strip():
        return Member(settings.lium_target.strip(), fleet.LIUM, settings)
    return Member(settings.ops_default_host.strip(), fleet.SSH, settings)


def pods(settings: Settings, environ: Mapping[str, str] | None = None) -> list[Member]:
    """The pods a command runs on, in config order (Lium pods first)."""
    name = _chosen(environ)
    if fleet.is_fleet(settings):
        return [fleet.pick(settings, name)] if name else fleet.members(settings)
    if name:
        fleet.pick(settings, name)  # a config of one target has no pod of that name: the error says so
    return [_single(settings)]


def is_fleet(settings: Settings, environ: Mapping[str, str] | None = None) -> bool:
    return fleet.is_fleet(settings) and not _chosen(environ)


def one(settings: Settings, environ: Mapping[str, str] | None = None) -> Member:
    """A one-pod command's pod; on a fleet without WF_POD: a ConfigError naming the pods."""
    if is_fleet(settings, environ):
        raise fleet.one_pod_only(settings)
    return pods(settings, environ)[0]
