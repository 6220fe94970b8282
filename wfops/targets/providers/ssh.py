"""The ssh provider: a host as OPS_DEFAULT_HOST / OPS_HOSTS name it (an ssh_config alias or user@host[:port])."""

from __future__ import annotations

from pathlib import Path

from wfops.settings.load import Settings
from wfops.targets.providers.base import Resolved
from wfops.targets.target import LOCAL, SSH, Member, Target, parse_host


def ssh_target(settings: Settings, value: str, notes: tuple[str, ...] = (), name: str = "") -> Target:
    """The Target of a host named `value` (`local` included: this machine)."""
    if value == LOCAL:
        return Target(kind=LOCAL, label=LOCAL, notes=notes, name=name or value)
    user, host, port = parse_host(value)
    key = settings.ssh_key_path
    return Target(
        kind=SSH,
        label=value,
        host=host,
        user=user,
        port=port,
        key_filename=str(Path(key).expanduser()) if key else None,
        strict_host_keys=settings.ssh_strict_host_keys,
        connect_timeout=settings.ssh_connect_timeout,
        notes=notes,
        name=name or value,
    )


def is_alias(value: str) -> bool:
    """A bare ssh_config alias or host name: `ssh` reaches it as it is."""
    user, _host, port = parse_host(value)
    return user is None and port is None


class SSHProvider:
    def resolve(self, settings: Settings, member: Member, *, use_cache: bool = True,
                require_ready: bool = True) -> Resolved:
        return Resolved(ssh_target(settings, member.name))

    def describe(self, member: Member) -> str:
        return f"{member.name} over SSH"


    def again(self, settings: Settings, failed: Target, fallback: str | None) -> Target | None:
        return None  # an address from the config: looking again finds the same one


PROVIDER = SSHProvider()
