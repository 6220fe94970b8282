"""Where an SSH target's connection goes: the user's ssh_config applied to it, as Fabric applied it.

wfops connected through Fabric's `Connection` until Fabric's import (it imports invoke) was found to cost a cold
command ~100 ms; `route` keeps what Fabric made of a target, read with paramiko's own `SSHConfig`:
~/.ssh/config and /etc/ssh/ssh_config (when the target uses ssh_config), looked up for the target's host; the
file's HostName replaces the host; the target's own user and port win over the file's (then the local user,
port 22); the keys are the target's key, then the file's IdentityFile(s); a ProxyCommand is run as paramiko runs
it. ConnectTimeout is not read: wfops always gives its own (SSH_CONNECT_TIMEOUT), as it gave Fabric.
"""

from __future__ import annotations

import getpass
import io
import os
import re
import sys
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from wfops.errors import ConnectError
from wfops.targets.target import Target

FILES = ("~/.ssh/config", "/etc/ssh/ssh_config")  # the order Fabric reads them in: the first value of a key wins
_IMPORTING = threading.Lock()
_MATCH_EXEC = re.compile(r"^\s*match\b.*\bexec\b", re.I | re.M)


@dataclass(frozen=True)
class Route:
    host: str
    port: int
    user: str
    keys: tuple[str, ...] = ()
    proxy_command: str | None = None
    jump: str | None = None  # a ProxyJump: wfops.transport.ssh opens it through Fabric's gateway chain


def paramiko() -> ModuleType:
    """paramiko, imported without invoke where nothing in this process imported invoke yet (a lean command, the
    keeper): paramiko.config imports invoke (~60 ms, as much as the rest of paramiko) only to run ssh_config's
    `Match exec` lines, and `lookup` gives it invoke when a file has such a line."""
    with _IMPORTING:  # the keeper process connects its targets from several threads at once
        if "paramiko" not in sys.modules and "invoke" not in sys.modules:
            sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` raises ImportError meanwhile
            try:
                import paramiko
            finally:
                if sys.modules.get("invoke", 0) is None:
                    del sys.modules["invoke"]
    import paramiko

    return paramiko


def lookup(host: str) -> dict[str, Any]:
    """ssh_config's options for `host` (paramiko's SSHConfig over FILES: tokens expanded as paramiko does)."""
    import paramiko

    config = paramiko.SSHConfig()
    for name in FILES:
        path = os.path.expanduser(name)
        if os.path.isfile(path):
            try:
                with open(path, errors="replace") as fh:
                    text = fh.read()
                if _MATCH_EXEC.search(text):
                    _give_invoke(paramiko)
                config.parse(io.StringIO(text))
            except (OSError, paramiko.ssh_exception.ConfigParseError) as exc:
                raise ConnectError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return dict(config.lookup(host))
    except paramiko.ssh_exception.ConfigParseError as exc:
        raise ConnectError(f"ssh_config for {host!r}: {exc}") from None


def _give_invoke(paramiko: ModuleType) -> None:
    """A `Match exec` line: paramiko runs it through invoke, which `paramiko()` may have hidden from it (a keeper
    process lives for hours; the line may be written after it started): the line runs, as it always did."""
    reader: Any = paramiko.config  # its `invoke` is not in paramiko's stubs
    if reader.invoke is None:
        import invoke

        reader.invoke = invoke


def route(target: Target) -> Route:
    options: dict[str, Any] = lookup(target.host) if target.use_ssh_config else {}
    keys = ([target.key_filename] if target.key_filename else []) + [str(k) for k in options.get("identityfile", [])]
    proxy = options.get("proxycommand")
    port = target.port or options.get("port") or 22
    if not str(port).isdigit() or not 0 < int(port) < 65536:
        raise ConnectError(f"ssh_config gives {target.host!r} the port {port!r}, which is not a port number")
    return Route(host=str(options.get("hostname") or target.host), port=int(port),
                 user=str(target.user or options.get("user") or getpass.getuser()),
                 keys=tuple(keys), proxy_command=str(proxy) if proxy else None,
                 jump=str(options["proxyjump"]) if options.get("proxyjump") else None)
