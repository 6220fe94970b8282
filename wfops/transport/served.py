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

from wfops.errors import EXIT_CONNECT, ConnectError, WfopsError
from wfops.targets.target import Target
from wfops.transport import frames, ssh, warm
from wfops.transport.podserver import COMMANDS, Servers
from wfops.transport.session import ServeOrder

if TYPE_CHECKING:
    from paramiko import Channel

ACCEPT_POLL_SECS = 0.5
REFUSED_RETRY_SECS = 2.0  # a session refused after the kept agent gave its own back is asked again this long


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
        frames.send_frame(client, b"E", json.dumps({"code": EXIT_CONNECT, "message": "refused: another user"}).encode())
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
        self.servers = Servers()  # the agent kept alive on the pod for reads (wfops.transport.podserver)
        self.inode: int | None = None

    # -- the connection
    def _link(self, failed: ssh.SSHLink | None = None) -> ssh.SSHLink:
        """The connection, made when there is none or it died; `failed`: the one a command just found dead, replaced
        unless another command replaced it meanwhile (then that new one is taken: replacing it would cut the other
        command's channel)."""
        with self.link_lock:
            if self.link is not None and (self.link is failed or not self.link.active):
                self.link.close()
                self.link = None
            if self.link is None:
                self.link = ssh.SSHLink(self.target)
            return self.link

    def open_exec(self) -> tuple[ssh.SSHLink, Channel]:
        """(link, channel); a dead connection is replaced once (nothing had been sent on it). A connection that is
        alive but refused one more session (sshd's MaxSessions) is not: its other commands go on; the kept agent
        gives its session back for this command, else the refusal is the command's error."""
        link = None
        try:
            link = self._link()
            return link, link.open_exec()
        except ssh.SessionRefused:
            if link is None or not self.servers.give_back(REFUSED_RETRY_SECS):  # (a refusal comes from a link)
                raise
            return link, self._after_refusal(link)
        except ConnectError:
            link = self._link(failed=link)
            return link, link.open_exec()

    def _after_refusal(self, link: ssh.SSHLink) -> Channel:
        """A channel once the kept agent's session is given back: sshd frees it when it has seen the close, so a
        refusal is tried again for up to REFUSED_RETRY_SECS."""
        deadline = time.monotonic() + REFUSED_RETRY_SECS
        while True:
            try:
                return link.open_exec()
            except ssh.SessionRefused:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

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
            with COMMANDS:
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
            stale = {"stale": True, "code": EXIT_CONNECT, "message": "stale"}
            frames.send_frame(client, b"E", json.dumps(stale).encode())
            return
        self.persist = float(header.get("persist") or self.persist)
        if header.get("op") == "ping":
            frames.send_frame(client, b"x", b"0")
            return
        direct = None
        if header.get("direct"):  # the client's pipe for stdout (run.fetch's extractor), passed with the request
            _, fds, _, _ = socket.recv_fds(client, 1, 1)
            direct = _Direct(fds[0]) if fds else None
        serve: ServeOrder | None = header.get("serve") if direct is None else None
        inbox = _Inbox(client)
        try:
            try:
                if serve is not None and self._served(client, serve, inbox):
                    return
                link, chan = self.open_exec()
            except WfopsError as exc:
                error: dict[str, Any] = {"code": exc.code, "message": exc.message}
                if inbox.started:  # a served read that was lost: nothing of it was shown, the pod is not reached
                    error["unreached"] = True
                frames.send_frame(client, b"E", json.dumps(error).encode())
                return
            code = self._relay(client, link, chan, inbox, direct)
            if serve is not None and code == 0:  # the agent of this hash is on the pod now: keep one alive
                self.servers.start(link, serve["key"], serve["start"])
        finally:
            if direct is not None:
                direct.close()

    def _served(self, client: socket.socket, serve: ServeOrder, inbox: _Inbox) -> bool:
        """The request answered by the agent kept alive on the pod (wfops.transport.podserver); False when there is
        none ready or it lost the answer: the caller runs the script (the client's stdin, kept, goes to it; a read
        may run again), on a new connection when this one died under it, as for any script."""
        server = self.servers.take(serve["key"])
        if server is None:
            return False
        ticket = object()
        try:
            inbox.begin(on_gone=lambda: server.cancel(ticket))
            line = inbox.line_after(int(serve["skip"]))
            answer = None if line is None else server.ask(line, ticket)
        finally:
            server.busy.release()
        if line is None:  # the client went away before its request was whole: nothing to answer
            return True
        if answer is None:  # lost (a connection that died under it too: open_exec replaces that one, once)
            return False
        out, err, code = answer
        inbox.send(b"K")  # the pod's kept agent answered (WFOPS_VERBOSE says so)
        if err:
            inbox.send(b"e", err)
        if out:
            inbox.send(b"o", out)
        inbox.send(b"x", str(code).encode())
        return True

    def _relay(self, client: socket.socket, link: ssh.SSHLink, chan: Channel, inbox: _Inbox,
               direct: _Direct | None = None) -> int | None:
        """The script's run on `chan`, relayed; its exit status (None when the connection broke)."""
        try:
            inbox.begin()  # the channel is open
        except OSError:  # the client went away while the channel was being opened: nothing was sent on it
            chan.close()  # (left open, its `bash -s` waited on the pod, holding one of sshd's sessions)
            raise
        inbox.attach(chan)
        if direct is not None:
            direct.report = lambda data: inbox.send(b"n", data)
        try:
            code = ssh.relay(link, chan, direct or (lambda data: inbox.send(b"o", data)),
                             lambda data: inbox.send(b"e", data))
        except ConnectError as exc:
            inbox.send(b"E", json.dumps({"code": exc.code, "message": exc.message}).encode())
            return None
        if direct is not None:  # the end of the stream for its reader, before the client hears the exit code
            direct.close()
        inbox.send(b"x", str(code).encode())
        return code


class _Inbox:
    """A command's client after the start: its frames to the client (one writer at a time), and what it sends
    (`i` stdin, `p` pings, answered `P` at once: a frozen keeper answers none) taken by a thread of its own. Its
    stdin is kept until a channel takes it: a served read that was lost runs as a script after all."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.write_lock = threading.Lock()
        self.lock = threading.Condition()  # kept stdin, the channel, gone: changes are notified
        self.kept: list[bytes] = []
        self.chan: Channel | None = None
        self.gone = False
        self.started = False
        self.on_gone: Callable[[], None] = lambda: None

    def send(self, kind: bytes, data: bytes = b"") -> None:
        with self.write_lock:
            frames.send_frame(self.client, kind, data)

    def begin(self, on_gone: Callable[[], None] = lambda: None) -> None:
        """Tell the client the command started (once: `s`, its payload saying that pings are answered) and start
        taking what it sends. `on_gone`: what to do if the client goes away before a channel takes its stdin."""
        self.on_gone = on_gone
        if self.started:
            return
        self.started = True
        self.send(b"s", b"p")
        threading.Thread(target=self._take, daemon=True).start()

    def attach(self, chan: Channel) -> None:
        """From now on the client's stdin goes to `chan` (what came before first); a client gone closes it."""
        with self.lock:
            if self.gone:
                chan.close()
                return
            for data in self.kept:
                chan.sendall(data)
            self.kept.clear()
            self.chan = chan
            self.on_gone = lambda: None

    def line_after(self, skip: int) -> bytes | None:
        """The line that follows the first `skip` bytes of the client's stdin (the request after the script), once it
        is whole; None when the client went away first."""
        with self.lock:
            while True:
                data = b"".join(self.kept)
                end = data.find(b"\n", skip)
                if end >= 0:
                    return data[skip:end + 1]
                if self.gone:
                    return None
                self.lock.wait()

    def _take(self) -> None:
        try:
            while True:
                frame = frames.recv_frame(self.client)
                if frame is None:
                    break
                if frame[0] == b"i":
                    with self.lock:
                        if self.chan is not None:
                            self.chan.sendall(frame[1])
                        else:
                            self.kept.append(frame[1])
                            self.lock.notify_all()
                elif frame[0] == b"p":
                    self.send(b"P")
        except Exception:
            pass
        with self.lock:  # the client is gone (or the command ended): the channel goes with it
            self.gone = True
            chan, on_gone = self.chan, self.on_gone
            self.lock.notify_all()
        if chan is not None:
            chan.close()
        on_gone()


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
