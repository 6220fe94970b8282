"""`open_session(target)`: the factory of sessions, and the session that goes through a warm keeper.

A local session (wfops.transport.local) for the `local` target; a session through the target's keeper
(`KeeperSession`, persist > 0: WF_PERSIST_SECS; no SSH handshake when it is warm, no paramiko or fabric import in
this process; one script = one `KeeperExec`: stdin frames out, stdout/stderr frames in, wfops.transport.warm
says how they look); else an SSH connection of this process alone (wfops.transport.ssh, where the one SSH
connection factory lives).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from wfops.errors import EXIT_CONNECT, ConnectError, Unreached, WfopsError
from wfops.targets.target import Target
from wfops.transport import frames, launch, ssh, warm
from wfops.transport.local import LocalSession
from wfops.transport.session import (
    Counted,
    ExecResult,
    LineSink,
    MetaSink,
    Redactor,
    ServeOrder,
    Session,
    StderrLines,
    StdoutSink,
    collect,
    count_request,
    stderr_line,
    verbose,
)
from wfops.transport.ssh import SSHSession

PINGS = b"p"  # the payload of a keeper's `s` frame when it answers `p` pings with `P` (older keepers: empty)


class Retry(Exception):
    """The keeper went away before it opened a channel: nothing reached the pod; start another and try again."""


class Frozen(Retry):
    """The keeper accepted but said nothing within the start timeout (stopped, hung): nothing reached the pod."""


class KeeperExec:
    """One script run through the keeper over an open socket: stdin frames out, stdout/stderr frames in."""

    def __init__(self, sock: socket.socket, on_start: Callable[[], None] = lambda: None) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.on_start = on_start
        self.sent_at = 0.0
        self.kept = False  # the pod's kept agent answered (no script ran)

    def send(self, data: bytes) -> None:
        with self.lock:
            for i in range(0, len(data), frames.MAX_FRAME):
                frames.send_frame(self.sock, b"i", data[i:i + frames.MAX_FRAME])
                self.sent_at = time.monotonic()  # the keeper takes what we send: it is not frozen

    def _send_quietly(self, data: bytes) -> None:
        try:
            self.send(data)
        except OSError:  # the keeper went away: run() reports it
            pass

    def run(self, header: dict[str, Any], script: bytes, stdout: Callable[[bytes], None],
            stderr: Callable[[bytes], None], direct: tuple[int, Callable[[int], None]] | None = None,
            start_timeout: float | None = None) -> int:
        """The exit code; raises Retry (nothing ran), or WfopsError/ConnectError. `direct`: (fd, count): the
        keeper writes stdout straight into fd (a pipe to run.fetch's extractor: one copy less) and reports how
        much it wrote in `n` frames."""
        try:
            frames.send_frame(self.sock, b"h", json.dumps(dict(header, direct=direct is not None)).encode())
            if direct is not None:
                socket.send_fds(self.sock, [b"F"], [direct[0]])
        except OSError:
            raise Retry() from None
        started = pinged = False
        self.sock.settimeout(start_timeout)  # until the channel is open: a keeper silent that long is frozen
        while True:
            try:
                frame = self._answer_or_ping() if pinged else frames.recv_frame(self.sock)
            except TimeoutError:
                raise Frozen() from None
            except OSError:
                frame = None
            if frame is None:
                if not started:
                    raise Retry()
                raise ConnectError("the connection keeper went away before the command ended; "
                                   "the command may or may not have run")
            kind, data = frame
            if kind == b"s":
                started, pinged = True, data == PINGS  # a keeper that answers pings says so
                self.sock.settimeout(None)
                self.on_start()
                threading.Thread(target=self._send_quietly, args=(script,), daemon=True).start()
            elif kind == b"o":
                stdout(data)
            elif kind == b"K":  # what follows is the pod's kept agent's answer (wfops.transport.podserver)
                self.kept = True
            elif kind == b"n" and direct is not None:
                direct[1](int(data))
            elif kind == b"e":
                stderr(data)
            elif kind == b"x":
                return int(data)
            elif kind == b"E":
                err = json.loads(data)
                if err.get("stale") or (err.get("retry") and not started):
                    raise Retry()
                code = int(err.get("code") or EXIT_CONNECT)
                # the keeper could not reach the pod (its connection died and a new one failed): the same
                # ConnectError a cold connect raises, so a fleet counts the pod as silent either way (Unreached
                # when the script never left: wfops.transport.command may look a cached address up again)
                # (`unreached` after the start: a read the pod's kept agent lost, nothing of it shown, then no pod)
                reached = started and not err.get("unreached")
                error = (ConnectError if reached else Unreached) if code == EXIT_CONNECT else WfopsError
                raise error(str(err.get("message")), code)


    def _answer_or_ping(self) -> tuple[bytes, bytes] | None:
        """The keeper's next frame; while it is silent, a ping every keepalive interval (`p`, answered `P`, even
        by a keeper whose command prints nothing for hours). Silent for KEEPALIVE_MISSED intervals (stopped,
        hung: a frozen peer, like a frozen sshd): a ConnectError, the socket closed (the keeper's channel ends)."""
        interval = ssh.keepalive_secs()
        heard = time.monotonic()
        while True:
            if select.select([self.sock], [], [], interval)[0]:
                frame = _recv_frame_within(self.sock, interval * ssh.KEEPALIVE_MISSED)
                if frame is None or frame[0] != b"P":
                    return frame
                heard = time.monotonic()
                continue
            if time.monotonic() - max(heard, self.sent_at) > interval * ssh.KEEPALIVE_MISSED:
                self.sock.close()
                raise ConnectError(frames.keeper_silent(interval * ssh.KEEPALIVE_MISSED))
            if self.lock.acquire(blocking=False):  # busy sending the script: that send tells us nothing; skip
                try:
                    frames.send_frame(self.sock, b"p")
                finally:
                    self.lock.release()


def _recv_frame_within(sock: socket.socket, limit: float) -> tuple[bytes, bytes] | None:
    """frames.recv_frame, where each part of the frame must come within `limit` seconds (a keeper frozen in the
    middle of a frame is frozen too)."""
    def exact(n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            if not select.select([sock], [], [], limit)[0]:
                raise ConnectError(frames.keeper_stalled(limit))
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    head = exact(frames.HEADER.size)
    if head is None:
        return None
    kind, size = frames.HEADER.unpack(head)
    data = exact(size) if size else b""
    return None if data is None else (kind, data)


class KeeperSession:
    """Scripts run through the target's keeper (wfops/transport/keeper.py), started if none answers: no SSH handshake
    when it is warm, and no paramiko or fabric import in this process."""

    def __init__(self, target: Target, redact: Redactor, persist: float, show: LineSink = stderr_line,
                 sock: socket.socket | None = None) -> None:
        """`sock`: a keeper already dialled (the lean entry's); else the target's keeper, started if none answers."""
        self.target = target
        self.redact = redact
        self.persist = persist
        self.show = show
        self._exec: KeeperExec | None = None
        self.sent = 0
        # connect errors surface here, at once
        self._sock: socket.socket | None = sock if sock is not None else launch.connect(target, persist)

    def send(self, data: bytes) -> None:
        assert self._exec is not None, "send() only while a script runs"
        self._exec.send(data)
        self.sent += len(data)

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None, serve: ServeOrder | None = None) -> ExecResult:
        data = script.encode()
        for _attempt in range(3):
            sock, self._sock = self._sock or launch.connect(self.target, self.persist), None
            try:
                return self.exec_once(sock, data, stdout_sink, meta, serve)
            except Retry:  # the keeper was gone, stale or frozen before anything ran: start another
                continue
        raise ConnectError(f"the connection keeper for {self.target.label} kept going away; "
                           "try again, or set WF_PERSIST_SECS=0")

    def exec_once(self, sock: socket.socket, data: bytes, stdout_sink: StdoutSink | None,
                  meta: MetaSink | None, serve: ServeOrder | None = None) -> ExecResult:
        """One try over `sock` (closed after it): the result, or Retry/Frozen when nothing reached the pod (a frozen
        keeper is ended first, so the next try starts another)."""
        header: dict[str, Any] = {"op": "exec", "fp": warm.fingerprint(self.target), "persist": self.persist}
        if serve is not None and stdout_sink is None:
            header["serve"] = serve
        buf: list[bytes] = []
        errs = StderrLines(self.redact, meta, self.show)
        out = Counted(collect(stdout_sink, buf))
        self.sent = len(data)
        self._exec = run = KeeperExec(sock, on_start=count_request)
        direct = getattr(stdout_sink, "direct", None)  # (fd, count): the keeper writes into fd itself
        try:
            code = run.run(header, data, out, errs.feed, direct=direct() if direct else None,
                           start_timeout=frames.start_secs(self.target.connect_timeout))
        except Frozen:  # it accepted and said nothing: end it
            warm.end_frozen(sock, warm.socket_path(self.target))
            raise
        finally:
            self._exec = None
            sock.close()
        errs.close()
        verbose("via the keeper, answered by the pod's kept agent" if run.kept else "via the keeper", self.sent, out.n)
        return ExecResult(code, b"".join(buf), errs.error)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def open_session(target: Target, redact: Redactor | None = None, persist: float = 0,
                 show: LineSink = stderr_line) -> Session:
    """A local session, an SSH session through the target's keeper (persist > 0: WF_PERSIST_SECS), or an SSH
    connection of this process alone (persist 0). The pod's progress lines (its stderr) go to `show`."""
    redact = redact or Redactor()
    if target.is_local:
        return LocalSession(target, redact, show)
    if persist > 0:
        return KeeperSession(target, redact, persist, show)
    return SSHSession(target, redact, show)
