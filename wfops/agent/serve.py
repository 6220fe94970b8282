"""The pod agent kept alive for read-only requests (issue 24): `python3 -I -S -c CALL AGENT_DIR --serve`.

The client's connection keeper (wfops.transport.served, wfops.transport.podserver) starts it over its SSH
connection with remote_templates/agent_serve.sh.j2 (the same glue as every command: the system python, umask,
no TMUX, the installed agent of this content hash) and it ends with that connection: its stdin closes.

It runs nothing itself. Each request is run by a child forked from it, which does what a freshly started agent
does with that request on its stdin (`__main__.main`): the same gate, config sync, handler, stdout, stderr and
exit status. The child's stdout and stderr go to two files of its own; when it has ended they go to the keeper
whole, so a request either answers completely or not at all (the keeper then runs it the usual way: read-only
requests may run again). What forking saves is the interpreter's start and the imports, ~40 ms a request.

Only the agent commands of wire.SERVED (reads, quick, no command lock) are taken; anything else is answered `F`
and runs the usual way. One request at a time: the keeper sends the next only after an answer. When the agent's
own directory is gone (removed on the pod), a request is answered `F` and the server ends: the script the keeper
then runs installs the agent again, as it does for a pod without it.

Frames both ways, as wfops.transport.frames: one type byte, a 4-byte big-endian length, the payload.
  keeper -> server: `q` one request line (what a fresh agent reads on stdin), `k` end the request that runs
  server -> keeper: `R` ready (once, after the imports); per request: `o` stdout, `e` stderr, `x` exit status
                    (text), or `F` why it was not run (nothing ran)
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import struct
import sys
import tempfile

from . import wire
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Callable, List, Optional, Tuple

HEADER = struct.Struct(">cI")
# a file of the agent as installed: once it is gone (the agent's directory removed), requests are refused `F` and
# this process ends, so the keeper runs the script, which installs the agent again (and imports from disk work)
OWN_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")


def send(kind: bytes, data: bytes = b"") -> None:
    """One frame to the keeper, on fd 1 (never through sys.stdout: a forked child inherits its buffer)."""
    view = memoryview(HEADER.pack(kind, len(data)) + data)
    while view:
        view = view[os.write(1, view):]


class Frames:
    """Frames as they come on fd 0, read when select says there is something."""

    def __init__(self) -> None:
        self.buffer = b""

    def read(self) -> Optional[List[Tuple[bytes, bytes]]]:
        """The whole frames read so far; None at the end of stdin (the keeper's connection is gone)."""
        chunk = os.read(0, 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        out = []
        while len(self.buffer) >= HEADER.size:
            kind, size = HEADER.unpack(self.buffer[:HEADER.size])
            if len(self.buffer) < HEADER.size + size:
                break
            out.append((kind, self.buffer[HEADER.size:HEADER.size + size]))
            self.buffer = self.buffer[HEADER.size + size:]
        return out


def servable(line: bytes) -> str:
    """Why this request is not served here ("" when it is): only wire.SERVED commands, with a readable request."""
    text = line.decode("utf-8", "replace")
    if text.startswith(wire.REQUEST_GUARD):
        text = text[len(wire.REQUEST_GUARD):]
    try:
        cmd = json.loads(text).get("cmd")
    except (ValueError, AttributeError):
        return "not a request"
    return "" if cmd in wire.SERVED else "not served: %r" % (cmd,)


class Child:
    """One request, run by a forked child with its stdout and stderr in files of its own."""

    def __init__(self, line: bytes, main: Callable[[List[str]], None]) -> None:
        # closed by answer(), once the child has ended (a context manager cannot span the two)
        self.out = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.err = tempfile.TemporaryFile()  # noqa: SIM115
        except OSError:
            self.out.close()
            raise
        try:
            self.pid = os.fork()
        except OSError:
            self.out.close()
            self.err.close()
            raise
        if self.pid == 0:
            self._run(line, main)

    def _run(self, line: bytes, main: Callable[[List[str]], None]) -> None:
        """In the child: what `python3 -I -S -c CALL` does with `line` on its stdin, then _exit with its status."""
        import io

        code = 1
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            os.dup2(self.out.fileno(), 1)
            os.dup2(self.err.fileno(), 2)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sys.stdin = io.TextIOWrapper(io.BytesIO(line))
            try:
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
            os._exit(code & 0xFF)

    def ended(self) -> Optional[int]:
        """The exit status once the child has ended (a signal: 128 + its number, as a shell says), else None."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return 1
        if pid == 0:
            return None
        return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)

    def answer(self, code: int) -> None:
        for kind, fh in ((b"o", self.out), (b"e", self.err)):
            fh.seek(0)
            send(kind, fh.read())
            fh.close()
        send(b"x", str(code).encode())

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass


def loop(main: Callable[[List[str]], None], load: Callable[[str], None]) -> None:
    """Serve requests until stdin ends. `main`: the agent's entry (__main__.main); `load`: how it imports the module
    of a command: every served command's is imported first, so that no child imports anything (or needs the
    agent's directory, should it go away while this runs)."""
    for name in wire.SERVED:
        load(name)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    frames = Frames()
    child: Optional[Child] = None
    send(b"R")
    while True:
        ready = select.select([0, wake_r], [], [])[0]
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
        if child is not None:
            code = child.ended()
            if code is not None:
                child.answer(code)
                child = None
        if 0 not in ready:
            continue
        got = frames.read()
        if got is None:  # the keeper's connection ended: so does whatever it asked for
            if child is not None:
                child.kill()
            return
        for kind, data in got:
            if kind == b"k" and child is not None:
                child.kill()
            elif kind == b"q":
                if not os.path.isfile(OWN_FILE):
                    send(b"F", b"the agent's directory is gone")
                    if child is not None:
                        child.kill()
                    return
                why = "busy" if child is not None else servable(data)
                if why:
                    send(b"F", why.encode())
                    continue
                try:
                    child = Child(data, main)
                except OSError as exc:  # no fork, no temporary file (a full /tmp): run the usual way
                    send(b"F", str(exc).encode())
