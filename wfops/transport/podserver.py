"""The pod agent a keeper keeps alive on its target for read-only requests (issue 24): the keeper's side.

A warm command whose agent call is a read (wire.SERVED, a command that is not mutating, not a dry run) says so in
its order (`serve`: wfops.transport.session.ServeOrder: the script that starts the server, its key, and where the
request line starts on the command's stdin). Its keeper hands the request to the
agent it keeps running on the pod (wfops/agent/serve.py: a child forked there per request, no interpreter start,
no new channel), and relays the answer as if a script had run: `o`, `e`, `x`. When there is none yet, or it is
busy with another command's request, or it died (its answer is lost, never half shown: it answers whole), the
keeper runs the command's script the usual way, as before; a read may run again.

A server is started only after a read ran on the pod the usual way and ended with 0 (so the agent of its content
hash is installed), one per key (the agent's content hash: ServeOrder's `key`; not the pod layout, which each request
carries), and it ends with the keeper's connection. One that would not start is not
tried again for RETRY_SECS.
"""

from __future__ import annotations

import queue
import threading
import time

from wfops.agent.serve import take_frames
from wfops.transport import frames, ssh

MARK_ENV = "WFOPS_KEPT_AGENT"  # asked for on its channel: sshd's log tells its start from a command's exec
START_SECS = 60.0  # a kept agent not ready this long after its start is ended
RETRY_SECS = 30.0  # a server that would not start (or died) is not started again this soon
IDLE_WAIT_SECS = 2.0  # a kept agent waits this long at most for the keeper process's commands to end ...
QUIET_SECS = 0.2  # ... and then for none to have started for this long
KEEP = 1  # servers kept at most per target: each holds one of sshd's sessions of the connection (MaxSessions)

Answer = tuple[bytes, bytes, int]  # stdout, stderr, exit status


class Activity:
    """How many commands the keeper process relays now, for every target: kept agents start when there are none, so
    that starting one (a channel, a `bash`, a Python start on the pod) does not compete with a command for the
    machine (on loopback pods, the client's own: it is still printing and ending), unless they go on for
    IDLE_WAIT_SECS."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.running = 0
        self.started = 0  # commands started so far

    def __enter__(self) -> None:
        with self.cond:
            self.running += 1
            self.started += 1
            self.cond.notify_all()

    def __exit__(self, *exc: object) -> None:
        with self.cond:
            self.running -= 1
            if not self.running:
                self.cond.notify_all()

    def wait_idle(self, limit: float = IDLE_WAIT_SECS, quiet: float = QUIET_SECS) -> None:
        """Until no command has run for `quiet` seconds (the client that asked has ended too), for `limit` seconds
        at most (a `sweep.wait` may run for hours)."""
        deadline = time.monotonic() + limit
        with self.cond:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return
                if self.running:
                    self.cond.wait(deadline - now)
                    continue
                seen = self.started
                self.cond.wait(min(quiet, deadline - now))  # a command that starts meanwhile wakes it
                if (self.started, self.running) == (seen, 0) and time.monotonic() - now >= quiet:
                    return


COMMANDS = Activity()  # the keeper process's (wfops.transport.served counts its commands in it)


class PodServer:
    """One agent kept alive on the pod: its channel, one request at a time."""

    def __init__(self, link: ssh.SSHLink, start: str) -> None:
        self.link = link
        self.busy = threading.Lock()
        self.state = threading.Lock()
        self.current: object | None = None
        self.ready = threading.Event()
        self.dead = threading.Event()
        self.settled = threading.Event()  # ready, or dead before it was
        self.answers: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue()
        self.chan = link.open_exec(env={MARK_ENV: "1"})
        self.chan.sendall(start.encode())
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _read(self) -> None:
        """Frames from the server's stdout: `R` once, then answers; the end of the channel is the server's."""
        buffer = bytearray()
        try:
            while True:
                chunk = self.chan.recv(1 << 20)
                if not chunk:
                    break
                buffer += chunk
                for kind, data in take_frames(buffer):
                    if kind == b"R":
                        self.ready.set()
                        self.settled.set()
                    else:
                        self.answers.put((kind, data))
        except Exception:  # the connection broke: the same as its end
            pass
        self.dead.set()
        self.settled.set()
        self.answers.put(None)

    def _drain_stderr(self) -> None:
        """The server writes nothing there but a failure to start (the glue's one line); read so nothing blocks."""
        try:
            while self.chan.recv_stderr(1 << 16):
                pass
        except Exception:
            pass

    @property
    def usable(self) -> bool:
        return self.ready.is_set() and not self.dead.is_set()

    def ask(self, line: bytes, ticket: object) -> Answer | None:
        """The request's stdout, stderr and exit status; None when it did not run or its answer was lost.
        `ticket`: what `cancel` names it by (a late cancel must not end the next command's request)."""
        with self.state:
            self.current = ticket
            try:
                self.chan.sendall(frames.HEADER.pack(b"q", len(line)) + line)
            except Exception:
                self.current = None
                return None
        try:
            return self._answer()
        finally:
            with self.state:
                self.current = None

    def _answer(self) -> Answer | None:
        """The answer's frames; a server silent for KEEPALIVE_MISSED keepalive intervals while its request runs (it
        sends `h` every second then: it is stopped or hung) is ended, and the request runs as a script."""
        limit = ssh.keepalive_secs() * ssh.KEEPALIVE_MISSED
        out = err = b""
        while True:
            try:
                item = self.answers.get(timeout=limit)
            except queue.Empty:
                self.dead.set()
                self.close()
                return None
            if item is None:
                return None
            kind, data = item
            if kind == b"h":
                continue
            if kind == b"o":
                out = data
            elif kind == b"e":
                err = data
            elif kind == b"x":
                return out, err, int(data)
            elif kind == b"F":  # not run (busy, not served, no fork)
                return None

    def cancel(self, ticket: object) -> None:
        """The command's client went away: end its request's child on the pod (the answer is then dropped)."""
        with self.state:
            if self.current is not ticket:
                return
            try:
                self.chan.sendall(frames.HEADER.pack(b"k", 0))
            except Exception:
                pass

    def close(self) -> None:
        self.chan.close()


class Servers:
    """The servers of one target's keeper, by key (ServeOrder's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, PodServer] = {}
        self.failed: dict[str, float] = {}

    def take(self, k: str) -> PodServer | None:
        """A ready server of this key that is not busy, its `busy` lock held; else None."""
        with self.lock:
            server = self.running.get(k)
        if server is None or not server.usable or not server.busy.acquire(blocking=False):
            return None
        if server.dead.is_set():
            server.busy.release()
            return None
        return server

    def start(self, link: ssh.SSHLink, k: str, start: str) -> None:
        """Start a server of key `k` with this start script in the background, unless one runs or one failed lately."""
        with self.lock:
            server = self.running.get(k)
            if server is not None and not server.dead.is_set():
                return
            if time.monotonic() - self.failed.get(k, -RETRY_SECS) < RETRY_SECS:
                return
            self.running.pop(k, None)
            self.failed[k] = time.monotonic()  # cleared once it is ready
        threading.Thread(target=self._start, args=(link, start, k), daemon=True).start()

    def _start(self, link: ssh.SSHLink, start: str, k: str) -> None:
        COMMANDS.wait_idle()  # not while commands of this process run (a fleet's first command: its other pods)
        if not link.active:
            return
        try:
            server = PodServer(link, start)
        except Exception:  # no channel: counted as failed (above)
            return
        with self.lock:
            self.running[k] = server
            while len(self.running) > KEEP:
                oldest = next(iter(self.running))
                self.running.pop(oldest).close()
        if not server.settled.wait(START_SECS):  # neither ready nor ended: it is not used, and goes
            server.close()
        if server.ready.is_set():
            with self.lock:
                self.failed.pop(k, None)

    def give_back(self, wait: float) -> bool:
        """End the server to give its session back to sshd (a command was refused one), once it is not answering
        a read (waiting up to `wait` seconds for that: a read it answers is not cut off); whether it was ended. It
        is not started again for RETRY_SECS: its session was wanted."""
        with self.lock:
            running = list(self.running.items())
        for k, server in running:
            if not server.busy.acquire(timeout=wait):
                return False
            try:
                with self.lock:
                    if self.running.get(k) is server:
                        del self.running[k]
                    self.failed[k] = time.monotonic()
                server.close()
            finally:
                server.busy.release()
        return bool(running)
