"""The pod agent kept alive for read-only requests (issue 24): `python3 -I -S -c CALL AGENT_DIR --serve`.

The client's connection keeper (wfops.transport.served, wfops.transport.podserver) starts it over its SSH
connection with remote_templates/agent_serve.sh.j2 (the same glue as every command: the system python, umask,
no TMUX, the installed agent of this content hash) and it ends with that connection: its stdin closes.

It runs nothing itself. Each request is run by a child forked from it, which does what a freshly started agent
does with that request on its stdin (`__main__.main`): the same gate, config sync, handler, stdout, stderr and
exit status, with no file descriptor of this process but its own stdin (/dev/null), stdout and stderr (pipes to
this process: nothing goes through a disk, which may be full). When the child has ended, its stdout and stderr go
to the keeper whole, so a request either answers completely or not at all (the keeper then runs it the usual way:
read-only requests may run again). What forking saves is the interpreter's start, the imports of the served
commands' modules (done once, here) and the exec on the pod: ~40 ms of the pod's CPU a request.

Only the agent commands of wire.SERVED (reads, quick, no command lock; past the prelude every request runs, the
gate and the config sync) are taken; anything else is answered `F` and runs the usual way. One request at a
time: the keeper sends the next only after an answer. When the agent's
own directory is gone (removed on the pod), a request is answered `F` and the server ends: the script the keeper
then runs installs the agent again, as it does for a pod without it.

A request's child is interrupted (SIGINT, as a Ctrl-C: the agent's own clean-up runs, e.g. of a half-written config
file) when the keeper says its command went away (`k`), when the keeper's connection ends, and when this process
dies (the kernel's parent-death signal, where ctypes can ask for it).

Frames both ways, as wfops.transport.frames: one type byte, a 4-byte big-endian length, the payload.
  keeper -> server: `q` one request line (what a fresh agent reads on stdin), `k` interrupt the request that runs
  server -> keeper: `R` ready (once, after the imports); `h` every HEARTBEAT_SECS while a request runs (this
                    process is not frozen); per request: `o` stdout, `e` stderr, `x` exit status (text), or `F`
                    why it was not run (nothing ran)
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import struct
import sys
import time

from . import filecache, presets, wire
from .states import AGENT_DIR, CONTROL_DIR, pod_path
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

HEADER = struct.Struct(">cI")
HEARTBEAT_SECS = 1.0
# a file of the agent as installed: once it is gone (the agent's directory removed), requests are refused `F` and
# this process ends, so the keeper runs the script, which installs the agent again (and imports from disk work)
OWN_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")
AGENT_HOME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # _control/agent/<content hash>
PR_SET_PDEATHSIG = 1


def frame(kind: bytes, data: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(data)) + data


def send(*frames: bytes) -> None:
    """Frames to the keeper in one write, on fd 1 (never through sys.stdout: a forked child inherits its buffer). One
    write: sshd does not set TCP_NODELAY for a session without a terminal, and a second small packet would wait for
    the ACK of the first (Nagle), ~40 ms of the keeper's delayed ACK."""
    _write_all(1, b"".join(frames))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def take_frames(buffer: bytearray) -> List[Tuple[bytes, bytes]]:
    """The whole frames at the start of `buffer`, taken out of it (a partial one stays for the next bytes). The
    keeper's side reads this server's stdout with it too (wfops.transport.podserver)."""
    out = []
    while len(buffer) >= HEADER.size:
        kind, size = HEADER.unpack(bytes(buffer[:HEADER.size]))
        end = HEADER.size + size
        if len(buffer) < end:
            break
        out.append((kind, bytes(buffer[HEADER.size:end])))
        del buffer[:end]
    return out


class Frames:
    """Frames as they come on fd 0, read when select says there is something."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def read(self) -> Optional[List[Tuple[bytes, bytes]]]:
        """The whole frames read so far; None at the end of stdin (the keeper's connection is gone)."""
        chunk = os.read(0, 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        return take_frames(self.buffer)


def servable(line: bytes) -> str:
    """Why this request is not served here ("" when it is): only wire.SERVED commands, with a readable request,
    for an outputs dir where this agent is installed. The script's glue checks that dir first (it creates
    `_control/agent` there, or fails `cannot create`); a request for another config's outputs dir on the same
    target takes the script, which says what the glue says, instead of an answer read from a dir it never made."""
    text = line.decode("utf-8", "replace")
    if text.startswith(wire.REQUEST_GUARD):
        text = text[len(wire.REQUEST_GUARD):]
    try:
        request = json.loads(text)
        cmd, out = request.get("cmd"), request["pod"]["out"]
    except (ValueError, AttributeError, KeyError, TypeError):
        return "not a request"
    if cmd not in wire.SERVED:
        return "not served: %r" % (cmd,)
    if not isinstance(out, str) or not os.path.isfile(os.path.join(
            pod_path(out), CONTROL_DIR, AGENT_DIR, os.path.basename(AGENT_HOME), ".complete")):
        return "this agent is not installed in the request's outputs dir"
    return ""


def _death_signal() -> Any:
    """A function that asks the kernel to send the calling process SIGINT when its parent dies (None: no ctypes)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
    except Exception:
        return None


class Child:
    """One request, run by a forked child; its stdout and stderr read from pipes as they come."""

    def __init__(self, line: bytes, main: Callable[[List[str]], None], on_start: Any) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        kept_r, kept_w = os.pipe()
        # SIGINT blocked across the fork: a `k` that reaches the child before it has its own handler stays pending
        # until it has (Python clears a signal its inherited handler caught in a child just forked: it was lost,
        # and the request ran on)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            for fd in (out_r, out_w, err_r, err_w, kept_r, kept_w):
                os.close(fd)
            raise
        if self.pid == 0:
            self._run(line, main, (out_w, err_w, kept_w), on_start)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        for fd in (out_w, err_w, kept_w):
            os.close(fd)
        self.out: List[bytes] = []
        self.err: List[bytes] = []
        self.kept: List[bytes] = []  # what the child parsed and this process keeps for the next (filecache.py)
        self.pipes: Dict[int, List[bytes]] = {out_r: self.out, err_r: self.err, kept_r: self.kept}  # still open
        self.status: Optional[int] = None

    def _run(self, line: bytes, main: Callable[[List[str]], None], pipes: Tuple[int, int, int], on_start: Any) -> None:
        """In the child: what `python3 -I -S -c CALL` does with `line` on its stdin, then _exit with its status;
        what it parsed and may be kept goes to the third pipe (filecache.given), once the answer is written."""
        import io

        code = 1
        out_w, err_w, kept_w = pipes
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, _interrupted)
            if on_start is not None:
                on_start()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.dup2(kept_w, 3)
            os.closerange(4, _fd_limit())  # nothing of the server's: its pipes, the keeper's channel
            os.set_inheritable(3, False)  # a process the request starts never holds it
            filecache.start()
            sys.stdin = io.TextIOWrapper(io.BytesIO(line))
            sys.argv = sys.argv[:1]  # as a fresh agent's: ['-c']
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a `k` sent meanwhile: exit 130 here
                main([])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, int) and exc.code is not None:
                    sys.stderr.write("%s\n" % (exc.code,))
        except BaseException:  # as an interpreter would: the traceback on stderr, status 1
            import traceback

            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            if code == 0:
                try:
                    _write_all(3, filecache.given())
                except OSError:  # the server is gone: nothing to keep
                    pass
            os._exit(code & 0xFF)

    @property
    def fds(self) -> List[int]:
        return list(self.pipes)

    def read(self, fd: int) -> None:
        chunk = os.read(fd, 1 << 16)
        if chunk:
            self.pipes[fd].append(chunk)
            return
        os.close(fd)
        del self.pipes[fd]

    def reap(self) -> None:
        """Note the exit status once the child has ended (a signal: 128 + its number, as a shell says)."""
        if self.status is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.status = 1
            return
        if pid:
            self.status = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)

    @property
    def finished(self) -> bool:
        return self.status is not None and not self.pipes

    def answer(self) -> None:
        """The answer to the keeper; then what the child parsed is kept (it ended well: it gave it whole)."""
        send(frame(b"o", b"".join(self.out)), frame(b"e", b"".join(self.err)), frame(b"x", str(self.status).encode()))
        if self.status == 0:
            filecache.take(b"".join(self.kept))

    def interrupt(self) -> None:
        try:
            os.kill(self.pid, signal.SIGINT)
        except OSError:
            pass


def _interrupted(*_: object) -> None:
    """SIGINT in a request's child: exit 130 quietly, as the boot program's handler does; a second SIGINT (the
    parent-death signal after a `k`) does not cut the clean-up the first one started."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(130)


def _fd_limit() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 1 << 16)
    except (ValueError, OSError):
        return 1024


def _prepare(load: Callable[[str], None]) -> None:
    """What every request's child would otherwise do again: import the served commands' modules, compile the metric
    presets' patterns."""
    for name in wire.SERVED:
        load(name)
    for preset in presets.REGEX_PRESETS:
        presets.regexes(preset)


def loop(main: Callable[[List[str]], None], load: Callable[[str], None]) -> None:
    """Serve requests until stdin ends. `main`: the agent's entry (__main__.main); `load`: how it imports the module
    of a command: every served command's is imported here, once (a handler's own later imports come from disk)."""
    _prepare(load)
    on_start = _death_signal()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    frames = Frames()
    child: Optional[Child] = None
    beat = 0.0
    send(frame(b"R"))
    while True:
        watched = [0, wake_r] + (child.fds if child is not None else [])
        ready = select.select(watched, [], [], HEARTBEAT_SECS if child is not None else None)[0]
        if child is not None and time.monotonic() - beat >= HEARTBEAT_SECS:  # also while it writes
            send(frame(b"h"))
            beat = time.monotonic()
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
        if child is not None:
            for fd in child.fds:
                if fd in ready:
                    child.read(fd)
            child.reap()
            if child.finished:
                child.answer()
                child = None
        if 0 not in ready:
            continue
        got = frames.read()
        if got is None:  # the keeper's connection ended: so does whatever it asked for
            if child is not None:
                child.interrupt()
            return
        for kind, data in got:
            if kind == b"k" and child is not None:
                child.interrupt()
            elif kind == b"q":
                if not os.path.isfile(OWN_FILE):
                    send(frame(b"F", b"the agent's directory is gone"))
                    if child is not None:
                        child.interrupt()
                    return
                why = "busy" if child is not None else servable(data)
                if why:
                    send(frame(b"F", why.encode()))
                    continue
                try:
                    child = Child(data, main, on_start)
                    beat = time.monotonic()
                except OSError as exc:  # no fork, no pipe: run the usual way
                    send(frame(b"F", str(exc).encode()))
