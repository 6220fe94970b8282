"""The one place a connection is made, and how a rendered script runs: `bash -s` in ONE exec.

`open_session(target)` is the factory: an SSH session over one Fabric connection (TCP_NODELAY on,
a keepalive that wants an answer, host keys as documented in the README), or a local session that runs the
same script with `bash -s` on this machine. A session runs scripts with `exec_script`: the script goes
to stdin; stdout is the result (JSON, or a byte stream for run.fetch); stderr lines are progress,
shown to the user with secrets redacted and control characters made visible, except
`@wfops-error CODE message`, which becomes a WfopsError.

A peer that stops answering (a frozen pod, a dead network path: TCP itself may stay up for many minutes) is
found by the keepalive: every KEEPALIVE_SECS the client asks the server for a reply, like OpenSSH's
ServerAliveInterval; after KEEPALIVE_MISSED intervals without one the connection is closed and the command
ends with a ConnectError (exit 4). `WFOPS_SSH_KEEPALIVE_SECS` overrides the interval (the tests shorten it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from wfops.errors import ConfigError, ConnectError, RemoteError, WfopsError
from wfops.output import visible
from wfops.targets.target import Target
from wfops.transport import warm

KEEPALIVE_SECS = 15  # a keepalive that wants a reply, every 15 s ...
KEEPALIVE_MISSED = 3  # ... and a peer silent for 3 of them is dead (found 45-55 s after it froze)
KEEPALIVE_ENV = "WFOPS_SSH_KEEPALIVE_SECS"
VERBOSE_ENV = "WFOPS_VERBOSE"
KEEPER_START_SECS = 10  # + twice the connect timeout: how long a keeper may take to open a channel (reconnecting)
# paramiko's defaults (2 MiB window, 32 KiB packets) cost Python time per packet: a wider window and bigger
# packets mean less of it per byte for bulk output (run.fetch)
CHANNEL_WINDOW = 32 * 1024 * 1024
CHANNEL_MAX_PACKET = 256 * 1024
READ_SIZE = 1024 * 1024
_ERROR_RE = re.compile(r"^@wfops-error (\d+) (.*)$")
_META_RE = re.compile(r"^@wfops-([a-z]+) (.*)$")

StdoutSink = Callable[[bytes], None]
MetaSink = Callable[[str, str], None]

_requests_sent = 0


def requests_sent() -> int:
    """How many scripts this process has started sending to a pod (or to local bash): the error boundary compares
    it before and after an interruption to tell whether a mutating command's request may have arrived."""
    return _requests_sent


def _count_request() -> None:
    global _requests_sent
    _requests_sent += 1


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
        stream.write(visible(self.redact(line)) + "\n")
        stream.flush()


class Session(Protocol):
    target: Target

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None) -> ExecResult: ...

    def send(self, data: bytes) -> None: ...

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


def _verbose(how: str, sent: int, received: int) -> None:
    """WFOPS_VERBOSE=1: one line per exec with the bytes it moved (how big the script was, what came back)."""
    if os.environ.get(VERBOSE_ENV, "").strip() in ("1", "true", "yes", "on"):
        print(f"wfops: exec {how}: sent {sent} bytes, received {received} bytes", file=sys.stderr, flush=True)


class _Counted:
    """Counts the bytes handed to a stdout sink (for WFOPS_VERBOSE)."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink, self.n = sink, 0

    def __call__(self, data: bytes) -> None:
        self.n += len(data)
        self.sink(data)


class LocalSession:
    """The `local` target: the same scripts, run by bash on this machine."""

    def __init__(self, target: Target, redact: Redactor) -> None:
        self.target = target
        self.redact = redact
        self._stdin = None
        self._lock = threading.Lock()
        self.sent = 0  # bytes sent to the current script's stdin

    def send(self, data: bytes) -> None:
        with self._lock:
            assert self._stdin is not None, "send() only while a script runs"
            self._stdin.write(data)
            self._stdin.flush()
            self.sent += len(data)

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None) -> ExecResult:
        proc = subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdin and proc.stdout and proc.stderr
        buf: list[bytes] = []
        errs = _StderrLines(self.redact, meta)
        out = _Counted(_collect(stdout_sink, buf))
        threads = [_pump(proc.stdout.read1, out), _pump(proc.stderr.read1, errs.feed)]
        _count_request()
        self._stdin, self.sent = proc.stdin, 0
        data = script.encode()
        try:
            self.send(data)
        except BrokenPipeError:
            pass
        code = proc.wait()
        for t in threads:
            t.join()
        with self._lock:
            self._stdin = None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        errs.close()
        _verbose("local", self.sent, out.n)
        return ExecResult(code, b"".join(buf), errs.error)

    def close(self) -> None:
        pass


class SSHLink:
    """One Fabric connection and its liveness watch: opens `bash -s` channels on it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.conn = _connect(target)
        self.liveness = _Liveness(self.conn.transport, keepalive_secs())

    @property
    def active(self) -> bool:
        return bool(self.conn.transport and self.conn.transport.is_active())

    def open_exec(self):
        """A channel running `bash -s` (stdin not yet sent: nothing has run on the pod if this raises)."""
        try:
            chan = self.conn.transport.open_session(window_size=CHANNEL_WINDOW, max_packet_size=CHANNEL_MAX_PACKET,
                                                    timeout=self.target.connect_timeout)
            chan.exec_command("bash -s")
        except Exception as exc:  # paramiko raises several kinds here; all mean the same to the user
            raise self.lost(f"lost the connection to {self.target.label}: {exc}") from None
        return chan

    def lost(self, message: str) -> ConnectError:
        if self.liveness.dead:  # we closed it: say why
            message = (f"the connection to {self.target.label} stopped answering (no reply to a keepalive for "
                       f"{self.liveness.limit:g}s: the pod or the network is frozen); wfops closed it")
        return ConnectError(message)

    def close(self) -> None:
        self.liveness.stop()
        self.conn.close()


def relay(link: SSHLink, chan, stdout: Callable[[bytes], None], stderr: Callable[[bytes], None]) -> int:
    """Pump a running channel's stdout and stderr until it ends; its exit status (ConnectError if it broke)."""
    threads = [_pump(chan.recv, stdout), _pump(chan.recv_stderr, stderr)]
    try:
        code = chan.recv_exit_status()
        for t in threads:
            t.join()
    except Exception as exc:  # the socket closed under a send: the same as a close before the end
        raise link.lost(f"lost the connection to {link.target.label}: {exc}") from None
    finally:
        chan.close()
    if code == -1:
        raise link.lost(f"the connection to {link.target.label} closed before the command ended")
    return code


class SSHSession:
    """One Fabric connection in this process; every script of the command runs over it."""

    def __init__(self, target: Target, redact: Redactor) -> None:
        self.target = target
        self.redact = redact
        self.link = SSHLink(target)
        self._chan = None
        self._lock = threading.Lock()
        self.sent = 0

    def send(self, data: bytes) -> None:
        with self._lock:
            assert self._chan is not None, "send() only while a script runs"
            self._chan.sendall(data)
            self.sent += len(data)

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None) -> ExecResult:
        chan = self.link.open_exec()
        buf: list[bytes] = []
        errs = _StderrLines(self.redact, meta)
        out = _Counted(_collect(stdout_sink, buf))
        _count_request()
        self._chan, self.sent = chan, 0
        data = script.encode()
        sender = threading.Thread(target=self._send_quietly, args=(data,), daemon=True)
        sender.start()
        try:
            code = relay(self.link, chan, out, errs.feed)
        finally:
            with self._lock:
                self._chan = None
        errs.close()
        _verbose("ssh", self.sent, out.n)
        return ExecResult(code, b"".join(buf), errs.error)

    def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(Exception):  # a broken channel is reported by relay()
            self.send(data)

    def close(self) -> None:
        self.link.close()


class KeeperSession:
    """Scripts run through the target's keeper (wfops/transport/keeper.py), started if none answers: no SSH handshake
    when
    it is warm, and no paramiko or fabric import in this process."""

    def __init__(self, target: Target, redact: Redactor, persist: float) -> None:
        self.target = target
        self.redact = redact
        self.persist = persist
        self._exec: warm.KeeperExec | None = None
        self.sent = 0
        self._sock: socket.socket | None = warm.connect(target, persist)  # connect errors surface here, at once

    def send(self, data: bytes) -> None:
        assert self._exec is not None, "send() only while a script runs"
        self._exec.send(data)
        self.sent += len(data)

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None) -> ExecResult:
        data = script.encode()
        header = {"op": "exec", "fp": warm.fingerprint(self.target), "persist": self.persist}
        for _attempt in range(3):
            buf: list[bytes] = []
            errs = _StderrLines(self.redact, meta)
            out = _Counted(_collect(stdout_sink, buf))
            self.sent = len(data)
            sock, self._sock = self._sock or warm.connect(self.target, self.persist), None
            self._exec = warm.KeeperExec(sock, on_start=_count_request)
            direct = getattr(stdout_sink, "direct", None)  # (fd, count): the keeper writes into fd itself
            try:
                code = self._exec.run(header, data, out, errs.feed, direct=direct() if direct else None,
                                      start_timeout=KEEPER_START_SECS + 2 * self.target.connect_timeout)
            except warm.Frozen:  # it accepted and said nothing: end it, then start another
                warm.end_frozen(sock, warm.socket_path(self.target))
                continue
            except warm.Retry:  # the keeper was gone (or stale) before anything ran: start another
                continue
            finally:
                self._exec = None
                sock.close()
            errs.close()
            _verbose("via the keeper", self.sent, out.n)
            return ExecResult(code, b"".join(buf), errs.error)
        raise ConnectError(f"the connection keeper for {self.target.label} kept going away; "
                           "try again, or set WF_PERSIST_SECS=0")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def keepalive_secs() -> float:
    """The keepalive interval: KEEPALIVE_SECS, or $WFOPS_SSH_KEEPALIVE_SECS (seconds, > 0)."""
    raw = os.environ.get(KEEPALIVE_ENV, "").strip()
    if not raw:
        return KEEPALIVE_SECS
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"{KEEPALIVE_ENV}={raw!r} is not valid: expected a number of seconds > 0")
    return value


class _Liveness:
    """Asks the server for an answer every `interval` seconds (a global request it must reply to, as OpenSSH's
    ServerAliveInterval does: TCP keepalives and paramiko's own keepalive never wait for one, so a frozen peer
    looked alive forever). After KEEPALIVE_MISSED intervals without any answer the peer is taken for dead and
    the connection closed, which ends every wait on it (recv, recv_exit_status) at once."""

    def __init__(self, transport: object, interval: float) -> None:
        self.transport = transport
        self.interval = interval
        self.limit = interval * KEEPALIVE_MISSED
        self.answered = time.monotonic()
        self.dead = False
        self.stopped = threading.Event()
        for loop in (self._ask, self._watch):
            threading.Thread(target=loop, daemon=True).start()

    def _ask(self) -> None:
        transport = self.transport
        while not self.stopped.wait(self.interval) and transport.is_active():  # type: ignore[attr-defined]
            try:  # any answer counts, a refusal included (OpenSSH refuses requests it does not know: an answer)
                transport.global_request("keepalive@openssh.com", wait=True)  # type: ignore[attr-defined]
            except Exception:  # not sent (e.g. a key exchange that timed out): no answer this time
                continue
            self.answered = time.monotonic()

    def _watch(self) -> None:
        transport = self.transport
        while not self.stopped.wait(self.interval / 2) and transport.is_active():  # type: ignore[attr-defined]
            if time.monotonic() - self.answered > self.limit:
                self.dead = True
                transport.close()  # type: ignore[attr-defined]
                return

    def stop(self) -> None:
        self.stopped.set()


def _gcm_first(*args: object, **kwargs: object):
    """A paramiko Transport that proposes AES-GCM first (any server since OpenSSH 6.2 accepts it; the others
    stay in the list): one authenticated cipher costs paramiko far less Python per packet than CTR + HMAC, which
    is what bulk output (run.fetch) is bound by — 40-60 % more throughput measured on the loopback sshd."""
    import paramiko

    transport = paramiko.Transport(*args, **kwargs)  # type: ignore[arg-type]
    options = transport.get_security_options()
    options.ciphers = sorted(options.ciphers, key=lambda name: "-gcm@" not in name)
    return transport


def _connect(target: Target):
    """THE connection factory: the only place wfops opens an SSH connection."""
    import paramiko
    from fabric import Config, Connection

    config = Config(overrides={"load_ssh_configs": target.use_ssh_config})
    connect_kwargs: dict[str, object] = {"transport_factory": _gcm_first}
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
    return conn


def open_session(target: Target, redact: Redactor | None = None, persist: float = 0) -> Session:
    """A local session, an SSH session through the target's keeper (persist > 0: WF_PERSIST_SECS), or an SSH
    connection of this process alone (persist 0)."""
    redact = redact or Redactor()
    if target.is_local:
        return LocalSession(target, redact)
    if persist > 0:
        return KeeperSession(target, redact, persist)
    return SSHSession(target, redact)
