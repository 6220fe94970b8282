"""SSH: the one place wfops opens an SSH connection (`connect`), its liveness watch, and the SSH session.

`connect(target)` makes one paramiko connection: TCP_NODELAY on, AES-GCM proposed first, host keys as documented
in docs/connections.md. `SSHLink` is that connection with its keepalive; `SSHSession` runs every script of a command
over it, each in ONE `bash -s` exec (the keeper, wfops.transport.keeper, holds an SSHLink open for warm
commands and relays with `relay`).

A peer that stops answering (a frozen pod, a dead network path: TCP itself may stay up for many minutes) is
found by the keepalive: every KEEPALIVE_SECS the client asks the server for a reply, like OpenSSH's
ServerAliveInterval; after KEEPALIVE_MISSED intervals without one the connection is closed and the command
ends with a ConnectError (exit 4). `WFOPS_SSH_KEEPALIVE_SECS` overrides the interval (the tests shorten it).

paramiko is imported only when a connection is made (Fabric only for a ProxyJump alias): a warm command
(wfops.transport.warm) pays for neither.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wfops.errors import ConnectError, env_seconds
from wfops.targets.target import Target
from wfops.transport import hostkeys
from wfops.transport.session import (
    Counted,
    ExecResult,
    LineSink,
    MetaSink,
    Redactor,
    ServeOrder,
    StderrLines,
    StdoutSink,
    collect,
    count_request,
    pump,
    stderr_line,
    verbose,
)

if TYPE_CHECKING:
    from paramiko import Channel, Transport

KEEPALIVE_SECS = 15  # a keepalive that wants a reply, every 15 s ...
KEEPALIVE_MISSED = 3  # ... and a peer silent for 3 of them is dead (found 45-55 s after it froze)
KEEPALIVE_ENV = "WFOPS_SSH_KEEPALIVE_SECS"
# paramiko's defaults (2 MiB window, 32 KiB packets) cost Python time per packet: a wider window and bigger
# packets mean less of it per byte for bulk output (run.fetch)
CHANNEL_WINDOW = 32 * 1024 * 1024
CHANNEL_MAX_PACKET = 256 * 1024


class SessionRefused(ConnectError):
    """The pod's sshd refused one more session (channel) on a connection that is alive (MaxSessions)."""


class SSHLink:
    """One connection and its liveness watch: opens `bash -s` channels on it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.conn = connect(target)
        self.liveness = _Liveness(self.conn.transport, keepalive_secs())
        # one channel opened at a time: paramiko keeps why an open failed in one slot of the transport, so two
        # refused at once give one of them a bare "Unable to open channel", which reads as a dead connection
        self.opening = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self.conn.transport.is_active())

    def open_exec(self, env: dict[str, str] | None = None) -> Channel:
        """A channel running `bash -s` (stdin not yet sent: nothing has run on the pod if this raises). `env`: asked
        for first (sshd applies only what its AcceptEnv allows; its log shows the request either way)."""
        from paramiko import ChannelException

        try:
            with self.opening:
                chan: Channel = self.conn.transport.open_session(
                    window_size=CHANNEL_WINDOW, max_packet_size=CHANNEL_MAX_PACKET, timeout=self.target.connect_timeout)
            if env:
                chan.update_environment(env)
            chan.exec_command("bash -s")
        except ChannelException as exc:  # the server said no to one more session: the connection itself is fine
            if not self.active:
                raise self.lost(f"lost the connection to {self.target.label}: {exc}") from None
            raise SessionRefused(f"{self.target.label} refused one more session on the connection ({exc}; sshd's "
                                 "MaxSessions is reached: too many wfops commands at once on this pod?)") from None
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


def relay(link: SSHLink, chan: Channel, stdout: Callable[[bytes], None], stderr: Callable[[bytes], None]) -> int:
    """Pump a running channel's stdout and stderr until it ends; its exit status (ConnectError if it broke)."""
    threads = [pump(chan.recv, stdout), pump(chan.recv_stderr, stderr)]
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
    """One connection in this process; every script of the command runs over it."""

    def __init__(self, target: Target, redact: Redactor, show: LineSink = stderr_line) -> None:
        self.target = target
        self.redact = redact
        self.show = show
        self.link = SSHLink(target)
        self._chan: Channel | None = None
        self._lock = threading.Lock()
        self.sent = 0

    def send(self, data: bytes) -> None:
        with self._lock:
            assert self._chan is not None, "send() only while a script runs"
            self._chan.sendall(data)
            self.sent += len(data)

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None, serve: ServeOrder | None = None) -> ExecResult:
        chan = self.link.open_exec()
        buf: list[bytes] = []
        errs = StderrLines(self.redact, meta, self.show)
        out = Counted(collect(stdout_sink, buf))
        count_request()
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
        verbose("ssh", self.sent, out.n)
        return ExecResult(code, b"".join(buf), errs.error)

    def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(Exception):  # a broken channel is reported by relay()
            self.send(data)

    def close(self) -> None:
        self.link.close()


def keepalive_secs() -> float:
    """The keepalive interval: KEEPALIVE_SECS, or $WFOPS_SSH_KEEPALIVE_SECS (seconds, > 0)."""
    return env_seconds(KEEPALIVE_ENV, KEEPALIVE_SECS)


class _Liveness:
    """Asks the server for an answer every `interval` seconds (a global request it must reply to, as OpenSSH's
    ServerAliveInterval does: TCP keepalives and paramiko's own keepalive never wait for one, so a frozen peer
    looked alive forever). After KEEPALIVE_MISSED intervals without any answer the peer is taken for dead and
    the connection closed, which ends every wait on it (recv, recv_exit_status) at once."""

    def __init__(self, transport: Transport, interval: float) -> None:
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
        while not self.stopped.wait(self.interval) and transport.is_active():
            try:  # any answer counts, a refusal included (OpenSSH refuses requests it does not know: an answer)
                transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:  # not sent (e.g. a key exchange that timed out): no answer this time
                continue
            self.answered = time.monotonic()

    def _watch(self) -> None:
        transport = self.transport
        while not self.stopped.wait(self.interval / 2) and transport.is_active():
            if time.monotonic() - self.answered > self.limit:
                self.dead = True
                transport.close()
                return

    def stop(self) -> None:
        self.stopped.set()


def _gcm_first(*args: Any, **kwargs: Any) -> Transport:
    """A paramiko Transport that proposes AES-GCM first (any server since OpenSSH 6.2 accepts it; the others
    stay in the list): one authenticated cipher costs paramiko far less Python per packet than CTR + HMAC, which
    is what bulk output (run.fetch) is bound by — 40-60 % more throughput measured on the loopback sshd.
    paramiko's SSHClient calls it with the arguments of Transport(), passed through as they come."""
    import paramiko

    transport = paramiko.Transport(*args, **kwargs)
    options = transport.get_security_options()
    options.ciphers = sorted(options.ciphers, key=lambda name: "-gcm@" not in name)
    return transport


def _host_keys(client: Any, target: Target) -> None:
    """The host-key policy: the target's pin (Lium) and nothing else, or the user's known_hosts."""
    import paramiko

    if target.known_hosts:
        try:
            client.load_host_keys(target.known_hosts)
        except (OSError, paramiko.SSHException) as exc:
            raise ConnectError(f"cannot read the pinned host key of {target.label} ({target.known_hosts}): "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return
    try:
        client.load_system_host_keys()
    except (OSError, paramiko.SSHException):
        pass
    pins = hostkeys.pin_file()
    try:
        hostkeys.load_pins(client, pins)
    except (OSError, paramiko.SSHException) as exc:
        raise ConnectError(f"cannot read wfops' host-key pins ({pins}): {getattr(exc, 'strerror', None) or exc}; "
                           "fix or remove the file") from None
    strict = target.strict_host_keys
    client.set_missing_host_key_policy(paramiko.RejectPolicy() if strict else hostkeys.pin_policy(pins))


# what paramiko raises when the server took the TCP connection and never said hello: the banner read timed out (a
# stopped sshd, a frozen network), or it timed out first and the login then found no session; or the server closed
# or reset the connection first (then the exception's context is that EOFError or ConnectionError)
_NO_HELLO = ("Error reading SSH protocol banner", "No existing session")
_CLOSED = (EOFError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)  # the server closed or reset it


def _quiet_paramiko() -> None:
    """paramiko logs its transport thread's errors (a banner that never came: a traceback) through `logging`; with
    no handler, Python's last-resort handler printed them on the user's terminal after wfops' one line. wfops
    says what went wrong itself: paramiko's records go nowhere."""
    log = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
    log.propagate = False


def connect(target: Target) -> Connected:
    """THE connection factory: the only place wfops opens an SSH connection. paramiko alone (Fabric, which imports
    invoke, costs a cold command ~100 ms): the user's ssh_config applied as Fabric applies it (wfops.transport.
    sshconf); a ProxyJump alias still goes through Fabric's gateway chain."""
    from wfops.transport import sshconf

    if target.key_filename and not Path(target.key_filename).is_file():
        raise ConnectError(f"SSH key not found: {target.key_filename}")
    paramiko = sshconf.paramiko()
    _quiet_paramiko()
    route = sshconf.route(target)
    if route.jump:
        return _through_fabric(target)
    where = f"{route.user}@{route.host}:{route.port}"
    client = paramiko.SSHClient()
    kwargs: dict[str, Any] = {"hostname": route.host, "port": route.port, "username": route.user,
                              "timeout": target.connect_timeout, "transport_factory": _gcm_first,
                              # a stopped sshd (a partition) accepts the TCP connection and never says hello
                              "banner_timeout": target.connect_timeout}
    if target.key_filename:  # paramiko ignores IdentitiesOnly: without these, agent keys can exhaust MaxAuthTries
        kwargs.update(look_for_keys=False, allow_agent=False)
    if route.keys:
        kwargs["key_filename"] = list(route.keys)
    _host_keys(client, target)
    with _worded(target, where, route.host, route.port):
        if route.proxy_command:
            kwargs["sock"] = paramiko.ProxyCommand(route.proxy_command)
        client.connect(**kwargs)
    transport = client.get_transport()
    assert transport is not None
    _nodelay(transport)
    return Connected(client, transport)


class Connected:
    """An open connection: its paramiko client and transport (what Fabric's Connection held for wfops)."""

    def __init__(self, client: Any, transport: Transport) -> None:
        self.client = client
        self.transport = transport

    def close(self) -> None:
        self.client.close()


def _nodelay(transport: Transport) -> None:
    sock = transport.sock
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _through_fabric(target: Target) -> Connected:
    """A ProxyJump alias: Fabric's Connection, which opens the chain of gateways as ssh_config names them."""
    from fabric import Config, Connection

    config = Config(overrides={"load_ssh_configs": target.use_ssh_config})
    connect_kwargs: dict[str, object] = {"transport_factory": _gcm_first, "banner_timeout": target.connect_timeout}
    if target.key_filename:
        connect_kwargs.update(key_filename=target.key_filename, look_for_keys=False, allow_agent=False)
    conn = Connection(target.host, user=target.user, port=target.port, config=config,
                      connect_timeout=target.connect_timeout, connect_kwargs=connect_kwargs)
    _host_keys(conn.client, target)
    with _worded(target, f"{conn.user}@{conn.host}:{conn.port}", conn.host, conn.port):
        conn.open()
    _nodelay(conn.transport)
    return Connected(conn, conn.transport)


@contextlib.contextmanager
def _worded(target: Target, where: str, host: str, port: int) -> Iterator[None]:
    """paramiko's many exceptions of a connect as the one line each means to the user (ConnectError)."""
    import paramiko

    closed = (f"{where} took the connection and closed it (not an SSH server on that port, or sshd turned it away: "
              "its MaxStartups, a firewall)")
    try:
        yield
    except _CLOSED:  # before paramiko read anything: raised as they are
        raise ConnectError(closed) from None
    except paramiko.BadHostKeyException as exc:
        name = host if port == 22 else f"[{host}]:{port}"
        raise ConnectError(hostkeys.changed_key_message(exc, where, name, hostkeys.pin_file(),
                                                        target.known_hosts)) from None
    except paramiko.PasswordRequiredException:
        raise ConnectError(f"the SSH key for {where} needs a passphrase; load it into ssh-agent") from None
    except paramiko.AuthenticationException:
        raise ConnectError(f"authentication failed for {where} (check SSH_KEY_PATH or your ssh_config)") from None
    except socket.gaierror:
        raise ConnectError(f"cannot resolve host {host!r} (from {target.label})") from None
    except TimeoutError:
        raise ConnectError(f"timed out connecting to {where} after {target.connect_timeout}s") from None
    except paramiko.ssh_exception.NoValidConnectionsError:
        raise ConnectError(f"cannot connect to {where}: connection refused") from None
    except paramiko.SSHException as exc:
        if str(exc).startswith(_NO_HELLO) and isinstance(exc.__context__, _CLOSED):
            raise ConnectError(closed) from None  # the same words as a timeout: what it met (its context) differs
        if str(exc).startswith(_NO_HELLO):
            raise ConnectError(f"{where} took the connection but did not answer within {target.connect_timeout}s "
                               "(no SSH banner: the pod or the network is frozen)") from None
        raise ConnectError(f"SSH to {where} failed: {exc}") from None
    except OSError as exc:
        raise ConnectError(f"cannot connect to {where}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. an ssh_config ProxyCommand that shlex cannot split
        raise ConnectError(f"SSH to {where} failed: {exc}") from None
