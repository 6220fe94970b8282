"""The keeper exchange of the lean entry's cached fast path (wfops.leancache): one kept script through the target's
keeper with the frames of wfops.transport.connect.KeeperExec (stdlib socket/struct/select only), its stderr shown as
wfops.transport.session.StderrLines shows it, its stdout's last line the answer (as ExecResult.json)."""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import struct
import sys
import time

from wfops.agent.states import EXIT_CONNECT, EXIT_REMOTE
from wfops.agent.wire import TYPE_CHECKING
from wfops.transport.frames import MAX_FRAME, keeper_silent, keeper_stalled, recv_frame, send_frame

if TYPE_CHECKING:  # typing is not imported at run time: the lean fast path (wfops.leancache) stays light
    from typing import Any

KEEPALIVE_MISSED = 3  # wfops.transport.ssh.KEEPALIVE_MISSED (the interval is the entry's: ssh.keepalive_secs())


class Before(Exception):
    """Nothing reached the pod: the lean path runs the command."""


class Failed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class Exchange:
    """One script through the keeper (the frames of wfops.transport.connect.KeeperExec), its stderr shown as
    wfops.transport.session.StderrLines shows it, its stdout's last line the answer (ExecResult.json)."""

    def __init__(self, entry: dict[str, Any], redact: Any) -> None:
        self.entry, self.redact = entry, redact
        self.error: Failed | None = None
        self.buffer = b""

    def answer(self, what: str) -> dict[str, Any]:
        out, code = self._exec()
        if self.buffer:
            self._line(self.buffer.decode("utf-8", "replace"))
        if self.error is not None:
            raise self.error
        if code != 0:
            raise Failed(f"{what} failed on the pod (exit {code}); see the output above", EXIT_REMOTE)
        lines = [ln for ln in self.redact(out.decode("utf-8", "replace")).splitlines() if ln.strip()]
        if not lines:
            return {}
        try:
            answer: dict[str, Any] = json.loads(lines[-1])
        except ValueError:
            raise Failed(f"{what}: the pod answered something that is not JSON: {lines[-1][:200]!r}",
                          EXIT_REMOTE) from None
        return answer

    def _exec(self) -> tuple[bytes, int]:
        e = self.entry
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            frame = self._start(sock)
            sock.settimeout(None)
            _send_data(sock, e["script"].encode("utf-8", "surrogateescape"), float(e["keepalive"]))
            return self._frames(sock, pinged=frame[1] == b"p")
        finally:
            sock.close()

    def _start(self, sock: socket.socket) -> tuple[bytes, bytes]:
        """The keeper's start frame, waited for as the full path waits (frames.start_secs of the target's connect
        timeout: the keeper may be reconnecting to the pod). Before when nothing ran and the lean path decides (no
        keeper, another user's, stale, gone; frozen: ended first, as KeeperSession ends it, so that no one waits for
        it again); its error before the start (the pod not reached) is the command's, as on the full path."""
        e = self.entry
        sock.settimeout(float(e["start_secs"]))
        try:
            _connect(sock, e["sock"])
            if struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1] != os.getuid():
                raise Before()  # a keeper of another user: the lean path refuses it in its words
            header = json.dumps({"op": "exec", "fp": e["fp"], "persist": e["persist"], "direct": False,
                                 "serve": e.get("serve")})
            send_frame(sock, b"h", header.encode())
        except OSError:  # none there, refused: nothing ran
            raise Before() from None
        try:
            frame = recv_frame(sock)
        except TimeoutError:
            _end_frozen(sock, e["sock"])
            raise Before() from None
        except OSError:
            raise Before() from None
        if frame is not None and frame[0] == b"E":
            raise _error(frame[1], started=False)
        if frame is None or frame[0] != b"s":
            raise Before()  # gone before it answered: the lean path decides
        return frame

    def _frames(self, sock: socket.socket, pinged: bool) -> tuple[bytes, int]:
        out: list[bytes] = []
        while True:
            frame = _next(sock, float(self.entry["keepalive"])) if pinged else _recv_or_none(sock)
            if frame is None:
                raise Failed("the connection keeper went away before the command ended; "
                              "the command may or may not have run", EXIT_CONNECT)
            kind, data = frame
            if kind == b"o":
                out.append(data)
            elif kind == b"e":
                self._feed(sock, data)
            elif kind == b"x":
                return b"".join(out), int(data)
            elif kind == b"E":
                raise _error(data, started=True)

    def _feed(self, sock: socket.socket, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self._line(line.decode("utf-8", "replace"), sock)

    def _line(self, line: str, sock: socket.socket | None = None) -> None:
        from wfops.output import ERROR_LINE, META_LINE, visible

        m = ERROR_LINE.match(line)
        if m:
            self.error = Failed(self.redact(m.group(2)), int(m.group(1)))
            return
        m = META_LINE.match(line)
        if m:
            if m.group(1) == "need" and sock is not None:  # render.NEED_AGENT: this pod lacks the agent
                from wfops.transport.render import agent

                _send_data(sock, agent().line(), float(self.entry["keepalive"]))
            return
        sys.stderr.write(visible(self.redact(line)) + "\n")
        sys.stderr.flush()


def _error(data: bytes, started: bool) -> Exception:
    """The keeper's error frame, as KeeperExec takes it: Before where nothing reached the pod and the lean path is
    to ask again (a stale keeper; `unreached`: a read the pod's kept agent lost, nothing shown, then no pod); else
    the command's error, in the keeper's words and exit code (a pod it could not reach: the full path's line)."""
    err = json.loads(data)
    if err.get("stale") or err.get("unreached") or (err.get("retry") and not started):
        return Before()
    return Failed(str(err.get("message")), int(err.get("code") or EXIT_CONNECT))


def _end_frozen(sock: socket.socket, path: str) -> None:
    """A keeper silent for the whole start timeout is frozen (stopped, hung): ended as the full path ends it
    (warm.end_frozen), so that the lean path starts another instead of waiting for this one again."""
    from pathlib import Path

    from wfops.transport import warm

    try:
        warm.end_frozen(sock, Path(path))
    except OSError:
        pass


def _connect(sock: socket.socket, path: str) -> None:
    """As wfops.transport.warm.dial: a path too long for sockaddr_un is reached through /proc/self/fd; the keeper
    directory must be ours and mode 700 (warm.private_dir), else Before: the lean path refuses it in its words."""
    st = os.lstat(os.path.dirname(path))
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) != 0o700:
        raise Before()
    if len(os.fsencode(path)) < 100:  # warm._SUN_PATH_MAX
        sock.connect(path)
        return
    fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{fd}/{os.path.basename(path)}")
    finally:
        os.close(fd)


def _send_data(sock: socket.socket, data: bytes, interval: float) -> None:
    """The script (or the agent) to the keeper; a keeper that takes none of it for KEEPALIVE_MISSED intervals is
    stopped or hung (as KeeperExec finds it while it sends): the command ends with its one line."""
    sock.settimeout(interval * KEEPALIVE_MISSED)
    try:
        for i in range(0, len(data), MAX_FRAME):
            send_frame(sock, b"i", data[i:i + (MAX_FRAME)])
    except TimeoutError:
        raise _stopped(interval) from None
    finally:
        sock.settimeout(None)


def _stopped(interval: float) -> Failed:
    return Failed(keeper_silent(interval * KEEPALIVE_MISSED), EXIT_CONNECT)


def _recv_or_none(sock: socket.socket) -> tuple[bytes, bytes] | None:
    try:
        return recv_frame(sock)
    except OSError:
        return None


def _next(sock: socket.socket, interval: float) -> tuple[bytes, bytes] | None:
    """The keeper's next frame; while it is silent a ping every keepalive interval, as KeeperExec does."""
    heard = time.monotonic()
    while True:
        if select.select([sock], [], [], interval)[0]:
            sock.settimeout(interval * KEEPALIVE_MISSED)
            try:
                frame = recv_frame(sock)
            except TimeoutError:
                raise Failed(keeper_stalled(interval * KEEPALIVE_MISSED), EXIT_CONNECT) from None
            except OSError:
                return None
            finally:
                sock.settimeout(None)
            if frame is None or frame[0] != b"P":
                return frame
            heard = time.monotonic()
            continue
        if time.monotonic() - heard > interval * KEEPALIVE_MISSED:
            raise _stopped(interval)
        send_frame(sock, b"p")
