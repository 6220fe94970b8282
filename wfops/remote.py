"""The one place a connection is made, and how a rendered script runs: `bash -s` in ONE exec.

`open_session(target)` is the factory: an SSH session over one Fabric connection (TCP_NODELAY on,
keepalive every 30 s, host keys as documented in the README), or a local session that runs the same
script with `bash -s` on this machine. A session runs scripts with `exec_script`: the script goes
to stdin; stdout is the result (JSON, or a byte stream for run.fetch); stderr lines are progress,
shown to the user with secrets redacted, except `@wfops-error CODE message`, which becomes a
WfopsError.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .errors import ConnectError, RemoteError, WfopsError
from .target import Target

KEEPALIVE_SECS = 30
# paramiko's defaults (2 MiB window, 32 KiB packets) cost Python time per packet: a wider window and bigger
# packets mean less of it per byte for bulk output (run.fetch)
CHANNEL_WINDOW = 32 * 1024 * 1024
CHANNEL_MAX_PACKET = 256 * 1024
READ_SIZE = 1024 * 1024
_ERROR_RE = re.compile(r"^@wfops-error (\d+) (.*)$")
_META_RE = re.compile(r"^@wfops-([a-z]+) (.*)$")

StdoutSink = Callable[[bytes], None]
MetaSink = Callable[[str, str], None]


class Redactor:
    """Replaces secret values with asterisks in text shown to the user."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        self.secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "********")
            escaped = json.dumps(secret)[1:-1]  # the same secret inside a JSON string
            if escaped != secret:
                text = text.replace(escaped, "********")
        return text


@dataclass
class ExecResult:
    code: int
    stdout: bytes = b""
    error: WfopsError | None = None

    def check(self, what: str) -> ExecResult:
        if self.error is not None:
            raise self.error
        if self.code != 0:
            raise RemoteError(f"{what} failed on the pod (exit {self.code}); see the output above")
        return self

    def json(self, what: str, redact: Redactor | None = None) -> dict:
        self.check(what)
        text = self.stdout.decode("utf-8", "replace")
        lines = [ln for ln in (redact(text) if redact else text).splitlines() if ln.strip()]
        if not lines:
            return {}
        try:
            return json.loads(lines[-1])
        except ValueError:
            raise RemoteError(f"{what}: the pod answered something that is not JSON: {lines[-1][:200]!r}") from None


@dataclass
class _StderrLines:
    """Turns stderr bytes into lines: errors are kept, the rest is shown (redacted) as it arrives."""

    redact: Redactor
    meta: MetaSink | None = None
    error: WfopsError | None = None
    buffer: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def feed(self, data: bytes) -> None:
        with self.lock:
            self.buffer += data
            *lines, self.buffer = self.buffer.split(b"\n")
            for line in lines:
                self._line(line.decode("utf-8", "replace"))

    def close(self) -> None:
        if self.buffer:
            self._line(self.buffer.decode("utf-8", "replace"))
            self.buffer = b""

    def _line(self, line: str) -> None:
        m = _ERROR_RE.match(line)
        if m:
            self.error = WfopsError(self.redact(m.group(2)), int(m.group(1)))
            return
        m = _META_RE.match(line)
        if m:  # machine-readable side information (e.g. `@wfops-size N` before a fetch)
            if self.meta is not None:
                self.meta(m.group(1), m.group(2))
            return
        stream = sys.stderr
        stream.write(self.redact(line) + "\n")
        stream.flush()


class Session(Protocol):
    target: Target

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None) -> ExecResult: ...

    def close(self) -> None: ...


def _pump(read: Callable[[int], bytes], handle: Callable[[bytes], None]) -> threading.Thread:
    def run() -> None:
        while True:
            chunk = read(READ_SIZE)
            if not chunk:
                break
            handle(chunk)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _collect(sink: StdoutSink | None, buf: list[bytes]) -> Callable[[bytes], None]:
    return sink if sink is not None else buf.append


class LocalSession:
    """The `local` target: the same scripts, run by bash on this machine."""

    def __init__(self, target: Target, redact: Redactor) -> None:
        self.target = target
        self.redact = redact

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None) -> ExecResult:
        proc = subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdin and proc.stdout and proc.stderr
        buf: list[bytes] = []
        errs = _StderrLines(self.redact, meta)
        threads = [_pump(proc.stdout.read1, _collect(stdout_sink, buf)), _pump(proc.stderr.read1, errs.feed)]
        try:
            proc.stdin.write(script.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        code = proc.wait()
        for t in threads:
            t.join()
        errs.close()
        return ExecResult(code, b"".join(buf), errs.error)

    def close(self) -> None:
        pass


class SSHSession:
    """One Fabric connection; every script of the command runs over it."""

    def __init__(self, target: Target, redact: Redactor) -> None:
        self.target = target
        self.redact = redact
        self.conn = _connect(target)

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None) -> ExecResult:
        transport = self.conn.transport
        try:
            chan = transport.open_session(window_size=CHANNEL_WINDOW, max_packet_size=CHANNEL_MAX_PACKET,
                                          timeout=self.target.connect_timeout)
            chan.exec_command("bash -s")
        except Exception as exc:  # paramiko raises several kinds here; all mean the same to the user
            raise ConnectError(f"lost the connection to {self.target.label}: {exc}") from None
        buf: list[bytes] = []
        errs = _StderrLines(self.redact, meta)
        threads = [_pump(chan.recv, _collect(stdout_sink, buf)), _pump(chan.recv_stderr, errs.feed)]
        try:
            chan.sendall(script.encode())
            chan.shutdown_write()
            code = chan.recv_exit_status()
            for t in threads:
                t.join()
        finally:
            chan.close()
        errs.close()
        if code == -1:
            raise ConnectError(f"the connection to {self.target.label} closed before the command ended")
        return ExecResult(code, b"".join(buf), errs.error)

    def close(self) -> None:
        self.conn.close()


def _connect(target: Target):
    """THE connection factory: the only place wfops opens an SSH connection."""
    import paramiko
    from fabric import Config, Connection

    config = Config(overrides={"load_ssh_configs": target.use_ssh_config})
    connect_kwargs: dict[str, object] = {}
    if target.key_filename:
        if not Path(target.key_filename).is_file():
            raise ConnectError(f"SSH key not found: {target.key_filename}")
        # paramiko ignores IdentitiesOnly: without these, agent keys can exhaust the server's MaxAuthTries
        connect_kwargs.update(key_filename=target.key_filename, look_for_keys=False, allow_agent=False)
    conn = Connection(target.host, user=target.user, port=target.port, config=config,
                      connect_timeout=target.connect_timeout, connect_kwargs=connect_kwargs)
    client = conn.client
    if target.known_hosts:
        try:
            client.load_host_keys(target.known_hosts)
        except (OSError, paramiko.SSHException) as exc:
            raise ConnectError(f"cannot read the pinned host key of {target.label} ({target.known_hosts}): "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    else:
        try:
            client.load_system_host_keys()
        except (OSError, paramiko.SSHException):
            pass
        if target.strict_host_keys:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
    where = f"{conn.user}@{conn.host}:{conn.port}"
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        fix = (f"the pin is {target.known_hosts}; remove it only if you trust the pod's new key" if target.known_hosts
               else f"if the pod was re-rented, remove the old entry (ssh-keygen -R '[{conn.host}]:{conn.port}')")
        raise ConnectError(f"the host key of {where} does not match the one on record; refused. {fix}") from None
    except paramiko.PasswordRequiredException:
        raise ConnectError(f"the SSH key for {where} needs a passphrase; load it into ssh-agent") from None
    except paramiko.AuthenticationException:
        raise ConnectError(f"authentication failed for {where} (check SSH_KEY_PATH or your ssh_config)") from None
    except socket.gaierror:
        raise ConnectError(f"cannot resolve host {conn.host!r} (from {target.label})") from None
    except TimeoutError:
        raise ConnectError(f"timed out connecting to {where} after {target.connect_timeout}s") from None
    except paramiko.ssh_exception.NoValidConnectionsError:
        raise ConnectError(f"cannot connect to {where}: connection refused") from None
    except paramiko.SSHException as exc:
        raise ConnectError(f"SSH to {where} failed: {exc}") from None
    except OSError as exc:
        raise ConnectError(f"cannot connect to {where}: {exc.strerror or exc}") from None
    sock = conn.transport.sock
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.transport.set_keepalive(KEEPALIVE_SECS)
    return conn


def open_session(target: Target, redact: Redactor | None = None) -> Session:
    redact = redact or Redactor()
    if target.is_local:
        return LocalSession(target, redact)
    return SSHSession(target, redact)
