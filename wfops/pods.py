"""Lium pods: LIUM_TARGET resolution (not yet available in this version)."""

from __future__ import annotations

from .config import Settings
from .errors import ConfigError
from .target import Target


def resolve_lium_target(settings: Settings) -> Target:
    raise ConfigError(
        f"config: LIUM_TARGET={settings.values['LIUM_TARGET']!r} is set, but this wfops cannot resolve Lium "
        "pods yet; clear LIUM_TARGET and set OPS_DEFAULT_HOST to the pod's user@host:port"
    )
