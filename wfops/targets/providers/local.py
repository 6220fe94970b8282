"""The local provider: `local` (OPS_DEFAULT_HOST=local, or an OPS_HOSTS entry): this machine, no SSH."""

from __future__ import annotations

from wfops.settings.load import Settings
from wfops.targets.providers.base import Resolved
from wfops.targets.target import LOCAL, Member, Target


class LocalProvider:
    def resolve(self, settings: Settings, member: Member, *, use_cache: bool = True,
                require_ready: bool = True) -> Resolved:
        return Resolved(Target(kind=LOCAL, label=LOCAL, name=member.name))

    def describe(self, member: Member) -> str:
        return "this machine"


    def again(self, settings: Settings, failed: Target, fallback: str | None) -> Target | None:
        return None  # an address from the config: looking again finds the same one


PROVIDER = LocalProvider()
