"""The one place wfops runs the `lium` CLI (PyPI `lium.io`, an optional extra), and pure helpers for
what it prints.

`LiumCLI` runs `lium` as a subprocess with an argv list (never a shell), in JSON mode and without
prompts, under a timeout. Failures become `LiumError` (exit 11) carrying lium's message and hint on
one line; `LiumMissing` (lium not on PATH) and `LiumUnreachable` (the API did not answer, answered
5xx or 429, or took too long) are the two failures a target may fall back from. `LIUM_API_KEY` from
the config reaches lium in its environment (`lium_environ`), never in argv. A `lium up` stopped by
Ctrl-C raises `UpInterrupted` with the pod lium said it had created. Everything below the CLI class
is pure: `lium ps` rows -> the pod a LIUM_TARGET names, `ssh_cmd` -> user/host/port, where lium
keeps its key and its per-pod host-key pins, and the `lium up` argument list from the config. Facts
behind the choices: shared/notes/lium.md and the installed package (`lium/sdk/client.py`, `lium/cli/utils.py`).
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wfops.errors import EXIT_LIUM, LiumError, NotFoundError, UsageError

# The environment every lium call gets on top of ours: JSON in and out, no prompts, no lingering
# ControlMaster, no self-update check.
LIUM_ENV = {
    "LIUM_NONINTERACTIVE": "1",
    "LIUM_OUTPUT": "json",
    "LIUM_SSH_PERSIST": "0",
    "LIUM_SELF_UPDATE_DISABLE": "1",
    "COLUMNS": "160",  # lium narrates through Rich, which wraps a pipe at 80 columns
}
DEFAULT_BASE_URL = "https://lium.io/api"
CALL_TIMEOUT_SECS = 60  # ps/rm/exec; lium retries a dead API for a few seconds before it gives up
INSTALL_HINT = 'pip install "wfops[lium]"'
READY_STATUS = "RUNNING"
# Statuses a pod never leaves for RUNNING (lium.sdk.Lium.TERMINAL_POD_STATUSES and notes/lium.md).
TERMINAL_STATUSES = frozenset({
    "FAILED", "STOPPED", "ERROR", "TERMINATED", "DELETED", "REMOVED", "CANCELLED", "CREATION_FAILED",
    "BROKEN", "REBOOT_FAILED", "DELETING",
})
DEFAULT_KEY_NAMES = ("id_ed25519", "id_rsa", "id_ecdsa")  # lium.sdk.config.DEFAULT_SSH_KEY_NAMES

_UNREACHABLE_RE = re.compile(
    r"Max retries exceeded|Failed to establish a new connection|NameResolutionError|Connection refused|"
    r"ConnectTimeout|ConnectionError|Read timed out|Temporary failure in name resolution|Network is unreachable",
    re.IGNORECASE,
)
# An API that answers but does not serve: a gateway/server error or rate limiting, after lium's own
# retries (lium.sdk.client._raise_for_status words them so; the API's own code may replace lium's).
_UNAVAILABLE_CODES = frozenset({"server_error", "rate_limited"})
_UNAVAILABLE_RE = re.compile(r"^(Server error: 5\d\d|Rate limit exceeded)\b")
# `lium up` progress lines (lium/cli/up/command.py): the node it rents, then the pod it created.
_RENTING_RE = re.compile(r"^renting (\S+?)(?:…|\.\.\.)")
_CREATED_RE = re.compile(r"\bpod (.+?) \(id: ([A-Za-z0-9._-]+)\) created\b")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STOP_GRACE_SECS = 3.0  # how long an interrupted lium gets to end on its own, then after SIGINT
_SSH_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}")
_SSH_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_POD_ID_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]")
_TTL_RE = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$", re.IGNORECASE)
_VOLUME_RE = re.compile(r"^(id:[A-Za-z0-9][A-Za-z0-9._-]*|new:name=[^,\s][^,]*(,desc=.*)?)$")


class LiumFailure(LiumError):
    """A failed lium call: one line for the user, plus what lium said in its JSON error envelope."""

    def __init__(self, message: str, *, lium_code: str | None = None, lium_exit: int | None = None,
                 data: Mapping[str, Any] | None = None, lium_message: str | None = None) -> None:
        super().__init__(message, EXIT_LIUM)
        self.lium_code = lium_code
        self.lium_exit = lium_exit
        self.data: dict[str, Any] = dict(data or {})
        self.lium_message = lium_message or message  # lium's own words, without what wfops added


class LiumMissing(LiumFailure):
    """The lium CLI is not installed (not on PATH)."""


class LiumUnreachable(LiumFailure):
    """The Lium API did not serve the call: unreachable, 5xx, 429 (after lium's retries), or too slow."""


class UpInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) while `lium up` ran; lium has been stopped. What its progress lines said it had done."""

    def __init__(self, pod_id: str | None, pod_name: str | None, renting: str | None,
                 cause: BaseException | None = None) -> None:
        super().__init__()
        self.pod_id = pod_id  # the pod lium said it created (None: it had not said so)
        self.pod_name = pod_name
        self.renting = renting  # the node lium started renting (None: it had not started)
        self.cause = cause  # the KeyboardInterrupt (or its SIGTERM subclass) that stopped wfops


# ------------------------------------------------------------------ the environment of lium

def lium_environ(api_key: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment lium runs in: ours, plus the config's LIUM_API_KEY (`api_key`) when it sets one.

    lium reads LIUM_API_API_KEY before LIUM_API_KEY (lium.sdk.config.Config.load), so a key from the
    config drops an inherited LIUM_API_API_KEY: the key the config names is the key lium sends.
    """
    env = dict(os.environ if environ is None else environ)
    key = api_key.strip()
    if key:
        env.pop("LIUM_API_API_KEY", None)
        env["LIUM_API_KEY"] = key
    return env


@contextmanager
def interrupts_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM do nothing inside (cleanup that must finish); children started inside ignore them too."""
    try:
        old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------ running the CLI

@dataclass(frozen=True)
class LiumCLI:
    binary: str
    environ: Mapping[str, str]
    timeout: float = CALL_TIMEOUT_SECS

    @classmethod
    def find(cls, environ: Mapping[str, str] | None = None) -> LiumCLI:
        """The `lium` on PATH, or LiumMissing naming what to install."""
        environ = os.environ if environ is None else environ
        binary = shutil.which("lium", path=environ.get("PATH", os.defpath))
        if not binary:
            raise LiumMissing(f"the lium CLI is not installed (not on PATH): {INSTALL_HINT}")
        return cls(binary, dict(environ))

    @property
    def base_url(self) -> str:
        return self.environ.get("LIUM_BASE_URL") or DEFAULT_BASE_URL

    def env(self) -> dict[str, str]:
        return {**self.environ, **LIUM_ENV}

    def run(self, args: Sequence[str], timeout: float | None = None, narrate: bool = False) -> Any:
        """Run `lium ARGS`; return its JSON stdout. `narrate`: show lium's progress lines on our stderr."""
        what = "lium " + " ".join(args[:1])
        limit = self.timeout if timeout is None else timeout
        try:
            proc = subprocess.Popen([self.binary, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=self.env(), text=True)
        except OSError as exc:
            raise LiumMissing(f"cannot run {self.binary}: {exc.strerror or exc}; {INSTALL_HINT}") from None
        try:
            if narrate:
                stdout, stderr = _communicate_narrating(proc, limit)
            else:
                stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise LiumUnreachable(f"{what} did not finish within {limit:.0f}s (Lium API at {self.base_url})") from None
        if proc.returncode != 0:
            raise error_from(what, proc.returncode, stderr, self.base_url, stdout=stdout)
        try:
            return json.loads(stdout)
        except ValueError:
            raise LiumFailure(f"{what} printed something that is not JSON: {stdout.strip()[:200]!r}") from None

    def ps(self, timeout: float | None = None) -> list[dict[str, Any]]:
        rows = self.run(["ps", "--format", "json"], timeout=timeout)
        if not isinstance(rows, list):
            raise LiumFailure(f"lium ps printed a {type(rows).__name__}, not a list of pods")
        return [r for r in rows if isinstance(r, dict)]

    def rm(self, pod_id: str) -> dict[str, Any]:
        """Remove one pod by UUID (never a row number: --name-only)."""
        return self.run(["rm", pod_id, "-y", "--name-only", "--format", "json"])

    def exec(self, pod_id: str, command: str) -> dict[str, Any]:
        return self.run(["exec", pod_id, "--json", command])

    def up(self, argv: Sequence[str], timeout: float) -> dict[str, Any]:
        """`lium up ARGV`; Ctrl-C stops lium and raises UpInterrupted naming what it had rented."""
        return self.run(["up", *argv], timeout=timeout, narrate=True)


def _communicate_narrating(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """Like communicate(), but lium's progress lines reach our stderr as they come (`lium up` takes a while).

    Ctrl-C: lium is stopped (it got the terminal's SIGINT too, or gets one now), its last lines are read,
    and UpInterrupted says which pod it had created, from those lines.
    """
    assert proc.stdout is not None and proc.stderr is not None
    out: list[str] = []
    err: list[str] = []

    def pump_out() -> None:
        out.append(proc.stdout.read())  # type: ignore[union-attr]

    def pump_err() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            err.append(line)
            if not line.lstrip().startswith("{"):
                sys.stderr.write("lium: " + line if line.strip() else line)
                sys.stderr.flush()

    threads = [threading.Thread(target=pump_out, daemon=True), threading.Thread(target=pump_err, daemon=True)]
    for t in threads:
        t.start()
    try:
        proc.wait(timeout=timeout)
    except KeyboardInterrupt as exc:
        with interrupts_ignored():
            _stop(proc)
            for t in threads:
                t.join(timeout=5)
        stop = up_interrupted("".join(err))
        stop.cause = exc
        raise stop from None
    for t in threads:
        t.join(timeout=5)
    return "".join(out), "".join(err)


def _stop(proc: subprocess.Popen) -> None:
    """End an interrupted lium: a moment to end on its own, then SIGINT (Ctrl-C), then SIGKILL."""
    for sig in (None, signal.SIGINT, signal.SIGKILL):
        if sig is not None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_GRACE_SECS)
            return
        except subprocess.TimeoutExpired:
            continue


def up_interrupted(stderr: str) -> UpInterrupted:
    """What an interrupted `lium up` had done, from its progress lines (and an error envelope, if any)."""
    pod_id = pod_name = renting = None
    for line in stderr.splitlines():
        line = _ANSI_RE.sub("", line).strip()
        if m := _RENTING_RE.match(line):
            renting = m.group(1)
        if m := _CREATED_RE.search(line):
            pod_name, pod_id = m.group(1), m.group(2)
    envelope = parse_envelope(stderr)
    data = envelope.get("data") if envelope and isinstance(envelope.get("data"), dict) else {}
    if not pod_id and data.get("pod_id"):
        pod_id, pod_name = str(data["pod_id"]), data.get("pod_name")
    return UpInterrupted(pod_id, pod_name, renting)


# ------------------------------------------------------------------ errors (pure)

def parse_envelope(stderr: str) -> dict[str, Any] | None:
    """lium's JSON error envelope: the last stderr line that is `{"ok": false, "error": {...}}`."""
    for line in reversed(stderr.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("ok") is False and isinstance(data.get("error"), dict):
            return data
    return None


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_from(what: str, rc: int, stderr: str, base_url: str = DEFAULT_BASE_URL, stdout: str = "") -> LiumFailure:
    """A failed lium call -> LiumFailure with lium's message and hint on one line (unreachable: LiumUnreachable)."""
    envelope = parse_envelope(stderr)
    if envelope is None:
        tail = [ln for ln in stderr.splitlines() if ln.strip()]
        reason = one_line(tail[-1])[:300] if tail else _not_removed(stdout)
        return LiumFailure(f"{what} failed (exit {rc})" + (f": {reason}" if reason else ""), lium_exit=rc)
    error = envelope["error"]
    code = str(error.get("code") or "")
    message = one_line(error.get("message") or "")
    hint = one_line(error.get("hint") or "")
    data = envelope.get("data") if isinstance(envelope.get("data"), dict) else {}
    if code in ("unexpected_error", "api_timeout", "server_error") and _UNREACHABLE_RE.search(message):
        return LiumUnreachable(f"{what}: the Lium API at {base_url} is unreachable ({_short_network_reason(message)})",
                               lium_code=code, lium_exit=rc, data=data)
    if code in _UNAVAILABLE_CODES or _UNAVAILABLE_RE.match(message):
        return LiumUnreachable(f"{what}: the Lium API at {base_url} is unavailable ({message[:120]})",
                               lium_code=code, lium_exit=rc, data=data, lium_message=message)
    text = f"{what}: {message}"
    if hint and hint.lower() not in message.lower():
        text += f" (hint: {hint})"
    return LiumFailure(text, lium_code=code, lium_exit=rc, data=data, lium_message=message)


def _not_removed(stdout: str) -> str:
    """`lium rm --format json` that failed says only which pods it could not remove, on stdout."""
    try:
        data = json.loads(stdout)
    except ValueError:
        return ""
    failed = data.get("failed") if isinstance(data, dict) else None
    return f"lium could not remove {', '.join(map(str, failed))}" if isinstance(failed, list) and failed else ""


def _short_network_reason(message: str) -> str:
    m = re.search(r"\[Errno [^\]]*\] ([^\"')]+)", message)
    if m:
        return m.group(1).strip()
    m = _UNREACHABLE_RE.search(message)
    return m.group(0) if m else message[:120]


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
