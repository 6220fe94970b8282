"""Which machine a command talks to: LIUM_TARGET, else OPS_DEFAULT_HOST, else an error. Pure.

A Target is a value that carries connection parameters only; wfops.transport.connect turns it into a session and
PodCommand accepts one explicitly, so a command over several pods (a sweep fanned out, a multi-node
torchrun) is a loop over Targets, not a new abstraction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wfops.errors import ConfigError

if TYPE_CHECKING:  # the keeper process needs Target alone, not the config machinery (dotenv) behind Settings
    from wfops.settings.load import Settings

LOCAL = "local"
_HOSTPORT_RE = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\s]+)(?::(?P<port>\d{1,5}))?$")


@dataclass(frozen=True)
class Target:
    kind: str  # "local" | "ssh" | "lium"
    label: str  # what the user sees: "local", "user@host:port", "lium pod NAME (uuid)"
    host: str = ""
    user: str | None = None
    port: int | None = None
    key_filename: str | None = None
    known_hosts: str | None = None  # a pinned host-key file (lium); None: ~/.ssh/known_hosts
    strict_host_keys: bool = False
    connect_timeout: int = 15
    use_ssh_config: bool = True  # resolve aliases through ~/.ssh/config
    notes: tuple[str, ...] = field(default=())  # one-line messages for the user (fallbacks)
    pod_id: str | None = None

    @property
    def is_local(self) -> bool:
        return self.kind == LOCAL


def parse_host(value: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` -> (user, host, port); an ssh_config alias is a host without the others."""
    m = _HOSTPORT_RE.match(value)
    if not m or value.startswith("-"):
        raise ConfigError(f"config: OPS_DEFAULT_HOST={value!r} is not `local`, an alias or user@host[:port]")
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"config: OPS_DEFAULT_HOST={value!r}: port {port} is out of range")
    return m.group("user"), m.group("host").strip("[]"), port


def ssh_target(settings: Settings, notes: tuple[str, ...] = ()) -> Target:
    value = settings.ops_default_host
    if value == LOCAL:
        return Target(kind=LOCAL, label=LOCAL, notes=notes)
    user, host, port = parse_host(value)
    key = settings.ssh_key_path
    return Target(
        kind="ssh",
        label=value,
        host=host,
        user=user,
        port=port,
        key_filename=str(Path(key).expanduser()) if key else None,
        strict_host_keys=settings.ssh_strict_host_keys,
        connect_timeout=settings.ssh_connect_timeout,
        notes=notes,
    )


def resolve_target(settings: Settings) -> Target:
    if settings.lium_targets or settings.ops_hosts:
        from wfops.targets.fleet import one_pod_only

        raise one_pod_only(settings)
    if settings.lium_target:
        from wfops.targets.lium_pods import (
            resolve_lium_target,  # the lium path needs the CLI; keep it out of pure imports
        )

        return resolve_lium_target(settings)
    if settings.ops_default_host:
        return ssh_target(settings)
    raise ConfigError(
        "config: no target: set LIUM_TARGET (a Lium pod) or OPS_DEFAULT_HOST "
        "(an ssh alias, user@host[:port], or `local`)"
    )

