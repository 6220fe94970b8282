"""The one small interface every provider module has (`PROVIDER`), and what resolving a pod gives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from wfops.settings.load import Settings
from wfops.targets.target import Member, Target


@dataclass(frozen=True)
class Resolved:
    """A member resolved: its Target (None: not connectable yet, `problem` says why) and the provider's record of
    the pod (Lium: its `lium ps` row)."""

    target: Target | None
    row: Mapping[str, Any] | None = None
    problem: str | None = None


class Provider(Protocol):
    def resolve(self, settings: Settings, member: Member, *, use_cache: bool = True,
                require_ready: bool = True) -> Resolved: ...

    def describe(self, member: Member) -> str: ...

    def again(self, settings: Settings, failed: Target, fallback: str | None) -> Target | None:
        """A cached address that did not answer, looked up once more; None: nothing to look up again."""
        ...
