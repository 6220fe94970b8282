"""One target of the keeper process (wfops.transport.keeper, wfops.transport.hub): its connection, its socket,
its clients and its idle clock. Every accepted client whose uid is ours gets one `bash -s` channel for one script,
relayed frame by frame (wfops.transport.warm says how they look).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wfops.errors import ConnectError, WfopsError
from wfops.targets.target import Target
from wfops.transport import frames, ssh, warm

if TYPE_CHECKING:
    from paramiko import Channel

ACCEPT_POLL_SECS = 0.5


def unlink_if_ours(path: Path, inode: int | None) -> None:
    """Remove the socket at `path` if it is still the one this process bound (same inode), not a successor's."""
    try:
        if inode is not None and path.stat().st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


def take_order(client: socket.socket) -> dict[str, Any] | None:
    """The header of a command's order on `client`; None (another user refused, or no order) when there is none."""
    if warm.peer_uid(client) != os.getuid():
        frames.send_frame(client, b"E", json.dumps({"code": 4, "message": "refused: another user"}).encode())
        return None
    frame = frames.recv_frame(client)
    if frame is None or frame[0] != b"h":
        return None
    header: dict[str, Any] = json.loads(frame[1])
    return header


class Keeper:
    """One target of the process: its connection, its socket, its clients, its idle clock."""

    def __init__(self, target: Target, fp: str, persist: float, path: Path,
                 on_exit: Callable[[Keeper], None] = lambda keeper: None) -> None:
        self.target, self.fp, self.persist, self.path = target, fp, persist, path
        self.on_exit = on_exit
        self.link: ssh.SSHLink | None = None
        self.link_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.active = 0
        self.last_used = time.monotonic()
        self.stopping = threading.Event()
        self.inode: int | None = None

    # -- the connection
    def _link(self, fresh: bool) -> ssh.SSHLink:
        with self.link_lock:
            if self.link is not None and (fresh or not self.link.active):
                self.link.close()
                self.link = None
            if self.link is None:
                self.link = ssh.SSHLink(self.target)
            return self.link

    def open_exec(self) -> tuple[ssh.SSHLink, Channel]:
        """(link, channel); a dead connection is replaced once (nothing had been sent on it)."""
        try:
            link = self._link(fresh=False)
            return link, link.open_exec()
        except ConnectError:
            link = self._link(fresh=True)
            return link, link.open_exec()

    # -- serving
    def serve(self, server: socket.socket) -> None:
        try:
            server.settimeout(ACCEPT_POLL_SECS)
            while not self.stopping.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    if self._idle():
                        break
                    continue
                with self.state_lock:
                    self.active += 1
                threading.Thread(target=self._handle, args=(client,), daemon=True).start()
            server.close()
            self._unlink()
            with self.link_lock:
                if self.link is not None:
                    self.link.close()
        finally:
            self.on_exit(self)

    def _idle(self) -> bool:
        with self.state_lock:
            return self.active == 0 and time.monotonic() - self.last_used > self.persist

    def stop(self) -> None:
        self._unlink()  # from now on, new commands start a new keeper instead of reaching this one
        self.stopping.set()

    def _unlink(self) -> None:
        unlink_if_ours(self.path, self.inode)

    def _handle(self, client: socket.socket) -> None:
        try:
            self._request(client)
        except OSError:  # the client went away; its channel was closed with it
            pass
        finally:
            client.close()
            with self.state_lock:
                self.active -= 1
                self.last_used = time.monotonic()

    def _request(self, client: socket.socket) -> None:
        header = take_order(client)
        if header is None:
            return
        if header.get("op") == "stop":
            self.stop()
            frames.send_frame(client, b"x", b"0")
            return
        if header.get("fp") != self.fp:
            self.stop()
            frames.send_frame(client, b"E", json.dumps({"stale": True, "code": 4, "message": "stale"}).encode())
            return
        self.persist = float(header.get("persist") or self.persist)
        if header.get("op") == "ping":
            frames.send_frame(client, b"x", b"0")
            return
        direct = None
        if header.get("direct"):  # the client's pipe for stdout (run.fetch's extractor), passed with the request
            _, fds, _, _ = socket.recv_fds(client, 1, 1)
            direct = _Direct(fds[0]) if fds else None
        try:
            try:
                link, chan = self.open_exec()
            except WfopsError as exc:
                frames.send_frame(client, b"E", json.dumps({"code": exc.code, "message": exc.message}).encode())
                return
            self._relay(client, link, chan, direct)
        finally:
            if direct is not None:
                direct.close()

    def _relay(self, client: socket.socket, link: ssh.SSHLink, chan: Channel, direct: _Direct | None = None) -> None:
        write_lock = threading.Lock()

        def to_client(kind: bytes) -> Callable[[bytes], None]:
            def send(data: bytes) -> None:
                with write_lock:
                    frames.send_frame(client, kind, data)
            return send

        def from_client() -> None:
            try:
                while True:
                    frame = frames.recv_frame(client)
                    if frame is None:
                        break
                    if frame[0] == b"i":
                        chan.sendall(frame[1])
                    elif frame[0] == b"p":  # the client's keepalive: it wants an answer (a frozen keeper gives none)
                        to_client(b"P")(b"")
            except Exception:
                pass
            chan.close()  # the client is gone (or the command ended): the channel goes with it

        to_client(b"s")(b"p")  # the channel is open, and this keeper answers pings
        threading.Thread(target=from_client, daemon=True).start()
        if direct is not None:
            direct.report = to_client(b"n")
        try:
            code = ssh.relay(link, chan, direct or to_client(b"o"), to_client(b"e"))
        except ConnectError as exc:
            to_client(b"E")(json.dumps({"code": exc.code, "message": exc.message}).encode())
            return
        if direct is not None:  # the end of the stream for its reader, before the client hears the exit code
            direct.close()
        to_client(b"x")(str(code).encode())


class _Direct:
    """stdout written straight into the client's pipe; the client hears how much (`n` frames). A reader that went
    away (EPIPE) is not waited for: the rest is drained, so the pod's side can end."""

    def __init__(self, fd: int) -> None:
        self.fd, self.gone = fd, False
        self.report: Callable[[bytes], None] = lambda data: None

    def __call__(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.gone:
            try:
                view = view[os.write(self.fd, view):]
            except OSError:
                self.gone = True
        self.report(str(len(data)).encode())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd, self.gone = -1, True
