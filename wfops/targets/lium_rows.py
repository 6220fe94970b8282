"""What `lium ps` rows mean, pure: the pod a name (LIUM_TARGET, an entry of LIUM_TARGETS) selects, whether it is
ready, `ssh_cmd` -> user/host/port, where lium keeps its key and its per-pod host-key pins, the `lium up` argument
list from the config, and a row as pod.status shows it. Facts behind the choices: shared/notes/lium.md and the
installed package (`lium/sdk/client.py`, `lium/cli/utils.py`). The CLI itself runs in wfops.targets.lium_cli.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wfops.errors import NotFoundError, UsageError
from wfops.targets.lium_cli import LiumFailure

READY_STATUS = "RUNNING"
# Statuses a pod never leaves for RUNNING (lium.sdk.Lium.TERMINAL_POD_STATUSES and notes/lium.md).
TERMINAL_STATUSES = frozenset({
    "FAILED", "STOPPED", "ERROR", "TERMINATED", "DELETED", "REMOVED", "CANCELLED", "CREATION_FAILED",
    "BROKEN", "REBOOT_FAILED", "DELETING",
})
DEFAULT_KEY_NAMES = ("id_ed25519", "id_rsa", "id_ecdsa")  # lium.sdk.config.DEFAULT_SSH_KEY_NAMES

_SSH_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}")
_SSH_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_POD_ID_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]")
_TTL_RE = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$", re.IGNORECASE)
_VOLUME_RE = re.compile(r"^(id:[A-Za-z0-9][A-Za-z0-9._-]*|new:name=[^,\s][^,]*(,desc=.*)?)$")

# ------------------------------------------------------------------ pods (pure)

def pod_words(row: Mapping[str, Any]) -> str:
    """`train (golden-lion-36, id 4c1e…)`: how wfops names a pod in one line."""
    name = row.get("name") or row.get("huid") or "?"
    inner = [str(row.get("huid"))] if row.get("huid") and row.get("huid") != name else []
    inner.append(f"id {row.get('id')}")
    return f"{name} ({', '.join(inner)})"


def select_pod(rows: Sequence[Mapping[str, Any]], target: str) -> Mapping[str, Any]:
    """The one pod LIUM_TARGET names: a row number of `lium ps`, else an exact UUID, name or huid.

    A bare number is always a row number (as in lium), resolved here from the listing's `index` field,
    never through lium's per-shell snapshot. Several pods sharing a name are refused: only the UUID is
    unambiguous.
    """
    value = target.strip()
    if not value:
        raise UsageError("config: LIUM_TARGET is empty")
    if value.isdigit():
        wanted = int(value)
        for row in rows:
            if row.get("index") == wanted:
                return row
        if 1 <= wanted <= len(rows) and all(r.get("index") is None for r in rows):
            return rows[wanted - 1]
        listed = f"rows 1-{len(rows)}" if rows else "no pods"
        raise NotFoundError(f"LIUM_TARGET={value} is a `lium ps` row number, but lium ps lists {listed}")
    by_id = [r for r in rows if r.get("id") == value]
    if by_id:
        return by_id[0]
    matches = [r for r in rows if value in (r.get("name"), r.get("huid"))]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        listed = "; ".join(f"{pod_words(r)} {r.get('status')}" for r in matches)
        raise UsageError(f"LIUM_TARGET={value} is ambiguous: {len(matches)} pods share it: {listed}; "
                         "set LIUM_TARGET to one of their UUIDs")
    known = ", ".join(str(r.get("name") or r.get("huid")) for r in rows[:10]) or "none"
    raise NotFoundError(f"no Lium pod matches LIUM_TARGET={value} (by name, UUID, huid or row number); "
                        f"lium ps lists: {known}")


def not_ready_reason(row: Mapping[str, Any]) -> str | None:
    """Why a pod cannot be reached over SSH yet, or None when it is RUNNING with an ssh command."""
    status = str(row.get("status") or "UNKNOWN").upper()
    if status != READY_STATUS:
        if status in TERMINAL_STATUSES:
            return f"is {status} and will not become ready; remove it with pod.down"
        return f"is {status}, not {READY_STATUS}; pod.wait waits until it is ready"
    if not row.get("ssh_cmd"):
        return "is RUNNING but has no SSH command yet; pod.wait waits until it is ready"
    return None


def is_terminal(row: Mapping[str, Any]) -> bool:
    return str(row.get("status") or "").upper() in TERMINAL_STATUSES


def parse_ssh_cmd(ssh_cmd: str) -> tuple[str, str, int]:
    """`ssh USER@HOST` or `ssh USER@HOST -p PORT` -> (user, host, port); anything else is refused."""
    try:
        tokens = shlex.split(ssh_cmd)
    except ValueError:
        tokens = []
    bad = LiumFailure(f"the Lium API sent an ssh command wfops does not accept: {ssh_cmd!r} "
                    "(expected `ssh USER@HOST` or `ssh USER@HOST -p PORT`)")
    if len(tokens) not in (2, 4) or tokens[0] != "ssh":
        raise bad
    user, sep, host = tokens[1].partition("@")
    if not sep or not _SSH_USER_RE.fullmatch(user) or not _valid_host(host):
        raise bad
    port = 22
    if len(tokens) == 4:
        if tokens[2] != "-p" or not re.fullmatch(r"\d{1,5}", tokens[3]) or not 0 < int(tokens[3]) < 65536:
            raise bad
        port = int(tokens[3])
    return user, host, port


def _valid_host(host: str) -> bool:
    if _SSH_HOST_RE.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return "%" not in host


def pin_path(home: Path, pod_id: str) -> Path:
    """lium's per-pod host-key pin file: ~/.lium/known_hosts/<pod id> (lium.sdk.client.known_hosts_path)."""
    return home / ".lium" / "known_hosts" / _POD_ID_UNSAFE_RE.sub("_", pod_id or "unknown")


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH and paramiko name a host in known_hosts."""
    return host if port == 22 else f"[{host}]:{port}"


def find_ssh_key(environ: Mapping[str, str], home: Path) -> tuple[Path | None, str]:
    """The private key lium uses, and where that came from (lium.sdk.config.resolve_ssh_key_path's order).

    LIUM_SSH_KEY_PATH, else `[ssh] key_path` in ~/.lium/config.ini, else the first existing of
    ~/.ssh/id_ed25519, id_rsa, id_ecdsa. A configured path is returned even when it is missing, so the
    error names the key the user chose.
    """
    configured = environ.get("LIUM_SSH_KEY_PATH")
    if configured:
        return _expand(configured, home), "LIUM_SSH_KEY_PATH"
    config_file = home / ".lium" / "config.ini"
    if config_file.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(config_file)
            value = parser.get("ssh", "key_path", fallback=None)
        except configparser.Error:
            value = None
        if value:
            return _expand(value, home), f"{config_file} [ssh] key_path"
    for name in DEFAULT_KEY_NAMES:
        candidate = home / ".ssh" / name
        if candidate.exists():
            return candidate, str(candidate)
    return None, ""


def _expand(value: str, home: Path) -> Path:
    if value == "~" or value.startswith("~/"):
        return home / value[2:]
    return Path(value)


def ssh_insecure(environ: Mapping[str, str]) -> bool:
    """LIUM_SSH_INSECURE=1: lium's own switch that turns host-key pinning off."""
    return environ.get("LIUM_SSH_INSECURE", "").strip().lower() in ("1", "true", "yes")


# ------------------------------------------------------------------ pod.up (pure)

UP_KEYS = ("LIUM_EXECUTOR_ID", "LIUM_TTL", "LIUM_VOLUME", "LIUM_POD_NAME", "LIUM_GPU", "LIUM_COUNT", "LIUM_COUNTRY",
           "LIUM_PORTS")  # the config keys `up_argv` reads, as text


def up_argv(values: Mapping[str, str], ttl_default: str) -> tuple[list[str], str]:
    """The `lium up` arguments for the config's LIUM_* keys, and the TTL used. Bad values -> UsageError.

    Always the non-interactive JSON form (`-y --json`) and always a TTL: a pod bills until removed.
    """
    executor = values.get("LIUM_EXECUTOR_ID", "").strip()
    if executor.isdigit():
        raise UsageError(
            f"config: LIUM_EXECUTOR_ID={executor} looks like a row number of `lium ls`, which names another "
            "node in every shell; set the node's UUID or huid (lium ls --format json shows both)")
    if executor and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", executor):
        raise UsageError(f"config: LIUM_EXECUTOR_ID={executor!r} is not a node UUID or huid")
    ttl = values.get("LIUM_TTL", "").strip() or ttl_default
    m = _TTL_RE.match(ttl)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"config: LIUM_TTL={ttl!r} is not a duration like 90m, 6h or 2d (a pod bills until "
                         "it is removed, so pod.up always sets one)")
    volume = values.get("LIUM_VOLUME", "").strip()
    if volume and not _VOLUME_RE.match(volume):
        raise UsageError(f"config: LIUM_VOLUME={volume!r} is not id:<VOLUME_HUID> or new:name=<NAME>")
    argv = [executor] if executor else []
    argv += ["-y", "--json", "--ttl", ttl.lower()]
    for key, flag in (("LIUM_POD_NAME", "--name"), ("LIUM_GPU", "--gpu"), ("LIUM_COUNT", "--count"),
                      ("LIUM_COUNTRY", "--country"), ("LIUM_PORTS", "--ports")):
        value = values.get(key, "").strip()
        if value:
            argv += [flag, value]
    if volume:
        argv += ["--volume", volume]
    return argv, ttl.lower()


# ------------------------------------------------------------------ showing a ps row (pure)

def _parse_time(text: object) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def ttl_words(row: Mapping[str, Any], now: datetime | None = None) -> str:
    """`removal at 2026-01-02 03:04 UTC (in 5.9h)`, or that none is scheduled."""
    at = _parse_time(row.get("removal_scheduled_at"))
    if at is None:
        return "none scheduled: the pod runs (and bills) until removed"
    hours = (at - (now or datetime.now(timezone.utc))).total_seconds() / 3600
    return f"removal at {at:%Y-%m-%d %H:%M} UTC ({f'in {hours:.1f}h' if hours > 0 else 'due now'})"


def row_items(row: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The `lium ps` facts pod.status shows, as (label, value) pairs."""
    gpus = row.get("config") or (f"{row.get('gpu_count')}x{row.get('gpu_type')}" if row.get("gpu_type") else None)
    price = row.get("price_per_hour")
    spent = row.get("spent_usd")
    price_text = None
    if price is not None:
        price_text = f"${float(price):.2f}/h" + (f" (spent ≈${float(spent):.2f})" if spent is not None else "")
    return [
        ("pod", pod_words(row)),
        ("status", row.get("status")),
        ("gpus (billed)", gpus),
        ("price", price_text),
        ("uptime", row.get("uptime")),
        ("ttl", ttl_words(row)),
    ]
