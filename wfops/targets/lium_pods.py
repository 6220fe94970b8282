"""Lium pods as targets: a pod's name (LIUM_TARGET, an entry of LIUM_TARGETS) -> one `lium ps` -> the parameters
of a direct SSH connection. The lium provider (wfops.targets.providers.lium) calls it; nothing else does.

The pod is looked up with ONE `lium ps --format json` (row numbers are resolved here, never through
lium's per-shell snapshot); wfops then connects with Fabric straight to the host, port and user of
the pod's `ssh_cmd`, with lium's key and lium's per-pod host-key pin file (`~/.lium/known_hosts/<id>`,
refused on mismatch). A pod lium never connected to has no pin yet: wfops asks lium to connect once
(`lium exec <uuid> true`), which pins the key by lium's own trust-on-first-use rule.

A resolution is cached for CACHE_TTL_SECS (60 s) in `$XDG_CACHE_HOME/wfops/lium-targets.json`
(default `~/.cache/wfops/`), keyed by the pod's name as configured, LIUM_BASE_URL and the API key's
fingerprint, so a burst of commands does not call lium each time. A command whose cached address
does not answer looks the pod up once more (`resolve_again`: pods can move after a reboot).

When lium is not on PATH or the Lium API does not serve the lookup (unreachable, 5xx, 429, or no
answer within LIUM_LOOKUP_TIMEOUT_SECS) and the member has a fallback host (OPS_DEFAULT_HOST beside
LIUM_TARGET), the target falls back to it with a one-line note; otherwise the error says what to install or
set. A failed lookup is remembered for DOWN_TTL_SECS (30 s) in the same cache file, keyed by the API's URL and the
key's fingerprint, so an outage costs one lookup, not one per command.

lium runs with the config's LIUM_API_KEY in its environment when the config sets one (`lium_environ`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wfops.errors import ConfigError, ConnectError
from wfops.settings.load import Settings
from wfops.targets.lium_cli import INSTALL_HINT, LiumCLI, LiumFailure, LiumMissing, LiumUnreachable, lium_environ
from wfops.targets.lium_rows import (
    find_ssh_key,
    known_hosts_name,
    not_ready_reason,
    parse_ssh_cmd,
    pin_path,
    pod_words,
    select_pod,
    ssh_insecure,
)
from wfops.targets.providers.ssh import ssh_target
from wfops.targets.target import LIUM, Target

CACHE_TTL_SECS = 60
DOWN_TTL_SECS = 30  # a failed lookup (API down) is remembered this long: an outage costs once
CACHE_FILE = "lium-targets.json"
_CACHE_VERSION = 1
_TARGET_FIELDS = ("label", "host", "user", "port", "key_filename", "known_hosts", "strict_host_keys", "pod_id")

# Targets this process took from the cache: only those are worth a second lookup when they fail.
_FROM_CACHE: set[Target] = set()


@dataclass(frozen=True)
class Resolution:
    """What LIUM_TARGET resolved to: the target (None while the pod is not ready) and its `lium ps` row."""

    target: Target | None
    row: Mapping[str, Any] | None = None  # None: fell back to OPS_DEFAULT_HOST
    problem: str | None = None  # why `target` is None
    from_cache: bool = False


# ------------------------------------------------------------------ the cache

def cache_path(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or str((home or Path.home()) / ".cache")
    return Path(base) / "wfops" / CACHE_FILE


def cache_key(value: str, environ: Mapping[str, str]) -> str:
    """LIUM_TARGET + the API it was resolved against + which key (a fingerprint, never the key)."""
    return json.dumps([value, environ.get("LIUM_BASE_URL") or "", _key_fingerprint(environ),
                       environ.get("LIUM_WORKSPACE") or ""])


def _key_fingerprint(environ: Mapping[str, str]) -> str:
    api_key = environ.get("LIUM_API_API_KEY") or environ.get("LIUM_API_KEY") or ""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12] if api_key else ""


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    entries: dict[str, Any] = data["entries"]
    return entries


def _write_cache(path: Path, entries: dict[str, Any], now: float) -> None:
    """Whole or not at all (temp file + rename), readable by the user only; expired entries dropped."""
    live = {k: v for k, v in entries.items() if 0 <= now - float(v.get("resolved_at", 0)) < CACHE_TTL_SECS}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": _CACHE_VERSION, "entries": live}, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs a `lium ps` next time


def _store(value: str, environ: Mapping[str, str], target: Target, row: Mapping[str, Any]) -> None:
    path = cache_path(environ)
    now = time.time()
    entries = _read_cache(path)
    entries[cache_key(value, environ)] = {
        "resolved_at": now,
        "row": dict(row),
        "target": {f: getattr(target, f) for f in _TARGET_FIELDS},
    }
    _write_cache(path, entries, now)


def _down_key(environ: Mapping[str, str]) -> str:
    """Per API and key: a 429 may limit one key only."""
    return json.dumps(["lium-api-down", environ.get("LIUM_BASE_URL") or "", _key_fingerprint(environ)])


def _remember_down(environ: Mapping[str, str], exc: LiumUnreachable) -> None:
    """A lookup the API did not serve: remembered for DOWN_TTL_SECS, so the next commands skip it."""
    path = cache_path(environ)
    now = time.time()
    entries = _read_cache(path)
    entries[_down_key(environ)] = {"resolved_at": now, "down": exc.message}
    _write_cache(path, entries, now)


def _forget_down(environ: Mapping[str, str]) -> None:
    path = cache_path(environ)
    entries = _read_cache(path)
    if entries.pop(_down_key(environ), None) is not None:
        _write_cache(path, entries, time.time())


def _known_down(environ: Mapping[str, str]) -> LiumUnreachable | None:
    """The remembered failure of a lookup less than DOWN_TTL_SECS ago, as the error to fall back from."""
    entry = _read_cache(cache_path(environ)).get(_down_key(environ))
    if not entry or not entry.get("down"):
        return None
    age = time.time() - float(entry.get("resolved_at", 0))
    if not 0 <= age < DOWN_TTL_SECS:
        return None
    return LiumUnreachable(f"{entry['down']}, {age:.0f}s ago (wfops asks again in {DOWN_TTL_SECS - age:.0f}s)")


def _cached(value: str, environ: Mapping[str, str], settings: Settings) -> Resolution | None:
    entry = _read_cache(cache_path(environ)).get(cache_key(value, environ))
    if not entry or not 0 <= time.time() - float(entry.get("resolved_at", 0)) < CACHE_TTL_SECS:
        return None
    try:
        fields = {f: entry["target"][f] for f in _TARGET_FIELDS}
    except (KeyError, TypeError):
        return None
    target = Target(kind=LIUM, connect_timeout=settings.ssh_connect_timeout, use_ssh_config=False, name=value,
                    **fields)
    if target.known_hosts and not is_pinned(Path(target.known_hosts), target.host, target.port or 22):
        return None  # the pin went away (pod removed, or the user deleted it): look again
    _FROM_CACHE.add(target)
    return Resolution(target, entry.get("row") or {}, from_cache=True)


def forget(value: str | None = None, pod_id: str | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Drop cache entries: the one for LIUM_TARGET `value`, and every entry for pod `pod_id`."""
    environ = os.environ if environ is None else environ
    path = cache_path(environ)
    entries = _read_cache(path)
    key = cache_key(value, environ) if value is not None else None
    kept = {k: v for k, v in entries.items()
            if k != key and not (pod_id and (v.get("target") or {}).get("pod_id") == pod_id)}
    if kept != entries:
        _write_cache(path, kept, time.time())


# ------------------------------------------------------------------ host-key pins

def is_pinned(pin: Path, host: str, port: int) -> bool:
    """Whether lium's pin file holds a key for host:port (hashed OpenSSH entries included)."""
    if not pin.is_file():
        return False
    import paramiko

    try:
        keys = paramiko.HostKeys(str(pin))
    except (OSError, paramiko.SSHException, ValueError):
        return False
    return keys.lookup(known_hosts_name(host, port)) is not None


def _pin_through_lium(cli: LiumCLI, row: Mapping[str, Any], pin: Path, host: str, port: int) -> str:
    """First connection to a pod: let lium connect once, which pins its host key (trust on first use)."""
    try:
        cli.exec(str(row["id"]), "true")
    except LiumUnreachable:
        raise
    except LiumFailure as exc:
        raise ConnectError(f"cannot reach Lium pod {pod_words(row)} at {host}:{port} to pin its host key "
                           f"through lium ({exc.lium_message})") from None
    if not is_pinned(pin, host, port):
        raise ConnectError(f"lium connected to pod {pod_words(row)} but recorded no host key for "
                           f"{known_hosts_name(host, port)} in {pin}; connect once with `lium ssh {row['id']}`")
    return f"first connection to pod {pod_words(row)}: lium pinned its host key in {pin}"


# ------------------------------------------------------------------ resolution

def target_for_row(settings: Settings, row: Mapping[str, Any], cli: LiumCLI,
                   environ: Mapping[str, str] | None = None, home: Path | None = None, name: str = "") -> Target:
    """Connection parameters for a ready pod: ssh_cmd's user@host:port, lium's key and lium's pin."""
    environ = os.environ if environ is None else environ
    home = home or Path.home()
    reason = not_ready_reason(row)
    if reason:
        raise ConnectError(f"Lium pod {pod_words(row)} {reason}")
    user, host, port = parse_ssh_cmd(str(row["ssh_cmd"]))
    key, _source = find_ssh_key(environ, home)
    if key is None:
        raise ConfigError("no SSH key for Lium pods: set LIUM_SSH_KEY_PATH, or run `lium init` (it records "
                          "[ssh] key_path in ~/.lium/config.ini)")
    notes: tuple[str, ...] = ()
    pin = pin_path(home, str(row["id"]))
    insecure = ssh_insecure(environ)
    if insecure:
        notes = (f"LIUM_SSH_INSECURE=1: the host key of pod {pod_words(row)} is not checked",)
    elif not is_pinned(pin, host, port):
        notes = (_pin_through_lium(cli, row, pin, host, port),)
    shown = row.get("name") or row.get("huid")
    return Target(
        kind=LIUM,
        label=f"lium pod {shown} ({row['id']})",
        host=host,
        user=user,
        port=port,
        key_filename=str(key),
        known_hosts=None if insecure else str(pin),
        strict_host_keys=not insecure,
        connect_timeout=settings.ssh_connect_timeout,
        use_ssh_config=False,  # the pod's address comes from Lium, not from an ssh_config alias
        notes=notes,
        pod_id=str(row["id"]),
        name=name or str(row["id"]),
    )


def _fallback(settings: Settings, value: str, host: str, exc: LiumFailure) -> Resolution:
    if not host:
        if isinstance(exc, LiumMissing):
            raise LiumMissing(f"LIUM_TARGET={value} needs the lium CLI, which is not on PATH: {INSTALL_HINT} "
                              "(or put the environment it is installed in on PATH), or set OPS_DEFAULT_HOST to "
                              "reach the pod over plain SSH") from None
        raise LiumUnreachable(f"{exc.message}; set OPS_DEFAULT_HOST to reach the pod without the Lium API") from None
    why = "lium is not on PATH" if isinstance(exc, LiumMissing) else exc.message
    note = f"{why}; using OPS_DEFAULT_HOST={host} instead of LIUM_TARGET={value}"
    return Resolution(ssh_target(settings, host, notes=(note,), name=value))


def lookup_timeout(settings: Settings) -> int:
    secs = settings.lium_lookup_timeout_secs
    if secs < 1:
        raise ConfigError(f"config: LIUM_LOOKUP_TIMEOUT_SECS={secs} is not valid: expected at least 1 second")
    return secs


def _list_pods(settings: Settings, environ: Mapping[str, str],
               use_cache: bool) -> tuple[LiumCLI, list[dict[str, Any]]]:
    """One `lium ps` within LIUM_LOOKUP_TIMEOUT_SECS; a failure the API caused is remembered (DOWN_TTL_SECS)
    and, with `use_cache`, a remembered one is raised again without asking."""
    timeout = lookup_timeout(settings)
    cli = LiumCLI.find(environ)
    down = _known_down(environ) if use_cache else None
    if down is not None:
        raise down
    try:
        rows = cli.ps(timeout=timeout)
    except LiumUnreachable as exc:
        _remember_down(environ, exc)
        raise
    _forget_down(environ)
    return cli, rows


def resolve(settings: Settings, value: str, *, use_cache: bool = True, require_ready: bool = True,
            fallback: str | None = None, environ: Mapping[str, str] | None = None) -> Resolution:
    """The pod named `value` -> Resolution, with at most one `lium ps` (none when the cache is warm).

    `require_ready=False` returns a pod that is not RUNNING yet, or that lium could not reach to pin its
    host key, with `target=None` and the reason;
    `fallback`: the host (OPS_DEFAULT_HOST) used when lium is missing or its API is down ("": none is set, and
    the error says to set it); None (pod.down, a fleet member): never another host;
    `use_cache=False` (pod.status, pod.wait, pod.down) asks lium even after a lookup failed just now.
    """
    environ = lium_environ(settings.lium_api_key, environ)
    value = value.strip()
    if use_cache:
        cached = _cached(value, environ, settings)
        if cached is not None:
            return cached
    try:
        cli, rows = _list_pods(settings, environ, use_cache)
    except (LiumMissing, LiumUnreachable) as exc:
        if fallback is None:
            raise
        return _fallback(settings, value, fallback, exc)
    row = select_pod(rows, value)
    reason = not_ready_reason(row)
    if reason:
        if require_ready:
            raise ConnectError(f"Lium pod {pod_words(row)} {reason}")
        return Resolution(None, row, problem=f"Lium pod {pod_words(row)} {reason}")
    try:
        target = target_for_row(settings, row, cli, environ, name=value)
    except ConnectError as exc:  # running, but lium could not reach it to pin its host key
        if require_ready:
            raise
        return Resolution(None, row, problem=exc.message)
    _store(value, environ, target, row)
    return Resolution(target, row)


def resolve_again(settings: Settings, failed: Target, fallback: str | None = None) -> Target | None:
    """A cached address that did not answer: forget it and look the pod up once more (None: not cached)."""
    if failed.kind != LIUM or failed not in _FROM_CACHE:
        return None
    _FROM_CACHE.discard(failed)
    forget(failed.name, environ=lium_environ(settings.lium_api_key))
    fresh = resolve(settings, failed.name, use_cache=False, fallback=fallback).target
    assert fresh is not None
    note = f"the cached address of {failed.label} ({failed.host}:{failed.port}) did not answer; looked it up again"
    return replace(fresh, notes=(note, *fresh.notes))
