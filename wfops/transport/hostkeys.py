"""Host keys of SSH hosts: the first key seen is pinned (trust on first use), a changed key is refused.

Lium pods are pinned by lium (its per-pod file: wfops.targets.lium_pods). Every other SSH host is pinned by wfops
in its own file, `$XDG_STATE_HOME/wfops/known_hosts` (default `~/.local/state/wfops/known_hosts`, OpenSSH's
format): the user's `~/.ssh/known_hosts` is read, never written. A host with no entry in either is pinned at
its first connection (by a cold command or a keeper alike: both connect through wfops.transport.ssh.connect);
SSH_STRICT_HOST_KEYS=1 refuses it instead. A key that differs from the one on record is refused with both
fingerprints and the command that forgets the old one (`ssh-keygen -R NAME -f FILE`), before anything runs.
paramiko is imported only when a connection is made.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any

PIN_FILE = "known_hosts"


def pin_file(environ: Any = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "wfops" / PIN_FILE


def fingerprint(key: Any) -> str:
    """OpenSSH's form: SHA256:<base64 of the key's sha256, unpadded>."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def load_pins(client: Any, path: Path) -> None:
    """Add the pins to the client's host keys (not as its save file: paramiko would rewrite it whole)."""
    if path.is_file():
        client.get_host_keys().load(str(path))


def pin_policy(path: Path) -> Any:
    """A paramiko policy for a host with no key on record: append its key to `path` (under a lock: a fleet
    connects to several new hosts at once) and go on."""
    import paramiko

    class PinFirst(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(path, "a", encoding="ascii") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            client.get_host_keys().add(hostname, key.get_name(), key)

    return PinFirst()


def changed_key_message(exc: Any, where: str, name: str, pins: Path, lium_pin: str | None) -> str:
    """One line for paramiko's BadHostKeyException: both fingerprints, where the old key is, how to accept."""
    now, was = fingerprint(exc.key), fingerprint(exc.expected_key)
    if lium_pin:
        return (f"the host key of {where} changed: it is {now}, lium pinned {was} in {lium_pin}; refused, nothing "
                "ran. Remove that file only if you trust the pod's new key")
    record = pins if _holds(pins, name) else Path.home() / ".ssh" / "known_hosts"
    return (f"the host key of {where} changed: it is {now}, pinned {was} in {record}; refused, nothing ran. If "
            f"the pod was re-created and you trust the new key: ssh-keygen -R '{name}' -f {record}")


def _holds(path: Path, name: str) -> bool:
    try:
        return any(line.split(" ", 1)[0] == name for line in path.read_text(encoding="ascii").splitlines())
    except (OSError, UnicodeDecodeError):
        return False
