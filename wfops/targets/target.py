"""The target model, pure: a Target (where one command connects) and a Member (a named pod of the config).

A Member is what the config names: `LIUM_TARGET=train`, an entry of `LIUM_TARGETS` / `OPS_HOSTS`, or
`OPS_DEFAULT_HOST`; its provider (`lium`, `ssh`, `local`: wfops.targets.providers) resolves it to a Target, the
connection parameters wfops.transport.connect opens. wfops.targets.resolve is the one way from settings to them.

Target fields: `kind` is the provider (also `.provider`), `label` what the user sees, `name` the Member it was
resolved from; `host`/`user`/`port` the address (`.address`), `key_filename` the key (`.key`), `known_hosts` a
pinned host-key file (`.pin`, Lium), `pod_id` the provider's own id of the pod. The field names are the ones the
transport (session, keeper, warm) has always read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wfops.errors import ConfigError

LOCAL = "local"
SSH = "ssh"
LIUM = "lium"
_HOSTPORT_RE = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\s]+)(?::(?P<port>\d{1,5}))?$")


@dataclass(frozen=True)
class Member:
    """One pod the config names: `name` as written (the `pod` column, WF_POD), its provider, and the key it came
    from (LIUM_TARGET, LIUM_TARGETS, OPS_DEFAULT_HOST or OPS_HOSTS)."""

    name: str
    provider: str  # lium | ssh | local
    source: str = ""
    # A Lium pod's SSH host while lium or its API is down: OPS_DEFAULT_HOST beside LIUM_TARGET ("" when unset: the
    # error then says to set it); None: never another host (a fleet member, the pod pod.down removes).
    fallback: str | None = None

    @property
    def kind(self) -> str:  # the provider, by its older name
        return self.provider

    @property
    def in_fleet(self) -> bool:
        return self.source.endswith("S")


@dataclass(frozen=True)
class Target:
    kind: str  # the provider: "local" | "ssh" | "lium"
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
    name: str = ""  # the Member this target was resolved from ("" when made by hand)

    @property
    def provider(self) -> str:
        return self.kind

    @property
    def address(self) -> str:
        """`host:port` as connected to (`host` alone when the port is ssh_config's or 22's)."""
        return f"{self.host}:{self.port}" if self.port else self.host

    @property
    def key(self) -> str | None:
        return self.key_filename

    @property
    def pin(self) -> str | None:
        """The pinned host-key file (Lium: lium's per-pod pin); None: ~/.ssh/known_hosts."""
        return self.known_hosts

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
