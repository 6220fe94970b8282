"""The one place wfops runs the `lium` CLI (PyPI `lium.io`, an optional extra), and pure helpers for
what it prints when it fails.

`LiumCLI` runs `lium` as a subprocess with an argv list (never a shell), in JSON mode and without
prompts, under a timeout. Failures become `LiumError` (exit 11) carrying lium's message and hint on
one line; `LiumMissing` (lium not on PATH) and `LiumUnreachable` (the API did not answer, answered
5xx or 429, or took too long) are the two failures a target may fall back from. `LIUM_API_KEY` from
the config reaches lium in its environment (`lium_environ`), never in argv. A `lium up` stopped by
Ctrl-C raises `UpInterrupted` with the pod lium said it had created. What `lium ps` rows mean (the pod a
name selects, `ssh_cmd`, pins, keys, `lium up`'s arguments) is wfops.targets.lium_rows. Facts behind the
choices: shared/notes/lium.md and the installed package (`lium/sdk/client.py`, `lium/cli/utils.py`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from wfops.agent.states import EXIT_LIUM
from wfops.errors import LiumError

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
        return _mapping(self.run(["rm", pod_id, "-y", "--name-only", "--format", "json"]))

    def exec(self, pod_id: str, command: str) -> dict[str, Any]:
        return _mapping(self.run(["exec", pod_id, "--json", command]))

    def up(self, argv: Sequence[str], timeout: float) -> dict[str, Any]:
        """`lium up ARGV`; Ctrl-C stops lium and raises UpInterrupted naming what it had rented."""
        return _mapping(self.run(["up", *argv], timeout=timeout, narrate=True))


def _mapping(answer: Any) -> dict[str, Any]:
    """lium's JSON answer as a dict (anything else: an empty one, which callers read as "nothing said")."""
    return answer if isinstance(answer, dict) else {}


def _communicate_narrating(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
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


def _stop(proc: subprocess.Popen[str]) -> None:
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
    data: dict[str, Any] = envelope["data"] if envelope and isinstance(envelope.get("data"), dict) else {}
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
