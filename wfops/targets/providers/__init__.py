"""Providers: how a named pod (a Member) becomes a Target, routed by the provider's name, as pyinfra routes
connectors and SkyPilot provisioners (`sky/provision/__init__.py` imports the module named by the provider).

Every provider module has `PROVIDER` (wfops.targets.providers.base.Provider): `resolve(settings, member, *,
use_cache, require_ready) -> Resolved` (a connectable Target, or, with require_ready=False, why there is none yet)
and `describe(member) -> str`. Lium also rents and removes pods (wfops.targets.providers.lium: `rent`, `remove`,
`remove_pod`). A provider's module is imported when a pod of it is named: an SSH config never loads lium's.
"""

from __future__ import annotations

import importlib

from wfops.targets.providers.base import Provider, Resolved
from wfops.targets.target import LIUM, LOCAL, SSH

NAMES = (LIUM, SSH, LOCAL)

__all__ = ["NAMES", "Provider", "Resolved", "get"]


def get(name: str) -> Provider:
    """The provider called `name` (lium | ssh | local)."""
    if name not in NAMES:
        raise ValueError(f"no provider {name!r} (known: {', '.join(NAMES)})")
    provider: Provider = importlib.import_module(f"wfops.targets.providers.{name}").PROVIDER
    return provider
