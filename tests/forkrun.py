"""`wfops ARGS` for the tests, as a process forked from one that has wfops imported already (a "zygote").

Most of a test's time in its `wfops` commands was the interpreter starting and importing invoke, the task tree,
paramiko (~0.35 s of CPU a command, ~2,600 commands a run). Here each pytest worker keeps one zygote: a Python
process, on the console script's own interpreter, that imported wfops' modules once, listens on a unix socket,
and forks a child per command. The child is a process of its own, as `subprocess.run([wfops, ...])` makes it:
the caller's stdin and two pipes of its own as stdout/stderr (passed over the socket; the std streams made
afresh on them, unbuffered as PYTHONUNBUFFERED makes them), the test's environment and working directory,
sys.argv and sys.orig_argv as the console script has them, Python's default SIGINT handler, its own exit status
(the zygote waits for it through a pidfd). It runs the console script itself (runpy), so SystemExit, an
uncaught exception, Ctrl-C, threads, exit functions, flushing and teardown are the interpreter's own.

What differs is what happened before the script: the imports (and what they set up: the quiet-pipe excepthook
of the task tree, one hash seed for every child), and the process's /proc view (its cmdline and environ are the
zygote's; its parent is the zygote). So a command whose start-up is under test runs through subprocess as
before: `run` does that whenever the environment sets a variable Python reads as it starts (PYTHON*, the
locale, TZ) other than the zygote's, and tests that signal a command, time Ctrl-C in Python's start-up, or read
its /proc entry start it themselves. `WFOPS_TEST_FORK=0` starts every command (what a user's shell does), for a
comparison.

`run` returns a subprocess.CompletedProcess and raises subprocess.TimeoutExpired (the command killed and waited
for) or FileNotFoundError (no such working directory) as subprocess.run(capture_output=True, text=True,
timeout=...) does; the command is killed if the caller is interrupted.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
WFOPS = BIN / "wfops"
OFF_ENV = "WFOPS_TEST_FORK"
_ZYGOTE_ENV = {"PYTHONUNBUFFERED": "1"}  # as every test command has it (tests/conftest.py Pod.env)

# The zygote: imports what a command imports, then forks one child per request; `serve` returns only in a child,
# which then runs the console script as Python runs a script (its SystemExit, uncaught exceptions, Ctrl-C, threads,
# exit functions, flushing and teardown are the interpreter's own). Standard library + wfops only.
_ZYGOTE = r"""
import io, json, os, selectors, signal, socket, sys
BINDIR, SOCK, SCRIPT = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path[0] = BINDIR  # as for the console script (.venv/bin/wfops): its folder, not the working directory
del sys.argv[1:]
import wfops.cli, wfops.lean, wfops.leancache, wfops.prewarm, wfops.program  # noqa: what every child shares
import wfops.transport.ssh, wfops.transport.leanexec, wfops.transport.warm  # noqa


def stdio():
    # the streams as Python makes them at start (PYTHONUNBUFFERED: stdout/stderr unbuffered, write-through) on
    # the caller's fds, so that nothing the zygote's own streams cached (seekable, isatty) is kept
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.open(0, "rb", closefd=False), encoding=old[0].encoding,
                                                 errors=old[0].errors)
    made = []
    for fd, stream in ((1, old[1]), (2, old[2])):
        made.append(io.TextIOWrapper(io.open(fd, "wb", buffering=0, closefd=False), encoding=stream.encoding,
                                     errors=stream.errors, write_through=True))
    sys.stdout, sys.stderr = made
    sys.__stdout__, sys.__stderr__ = made


def become(request, fds, closing, pidfds):
    for obj in closing:
        obj.close()
    for fd in pidfds:
        os.close(fd)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    stdio()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = [SCRIPT, *request["args"]]
    sys.orig_argv = [sys.executable, SCRIPT, *request["args"]]


def serve():
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(SOCK)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(0, selectors.EVENT_READ, "parent")  # the pytest worker's pipe: EOF when it is gone
    os.write(1, b"ready\n")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    waiting = {}  # pidfd: (pid, connection)
    while True:
        for key, _ in sel.select():
            if key.data == "parent":
                if not os.read(0, 4096):
                    os._exit(0)
            elif key.data == "accept":
                conn, fds = listener.accept()[0], []
                try:
                    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                    request = json.loads(message)
                    pid = os.fork()
                except Exception as exc:  # a caller that went away, a bad request: that request fails, not the zygote
                    print(f"zygote: request refused: {exc!r}", file=sys.stderr, flush=True)
                    for fd in fds:
                        os.close(fd)
                    conn.close()
                    continue
                if pid == 0:
                    try:
                        become(request, fds, [sel, listener, conn, *(c for _, c in waiting.values())], list(waiting))
                    except BaseException as exc:
                        os.write(2, f"wfops test harness: could not set up the command: {exc!r}\n".encode())
                        os._exit(1)
                    return
                for fd in fds:
                    os.close(fd)
                try:
                    conn.send(b"%d" % pid)
                except OSError:  # the caller is gone: the command runs on, as a started one would
                    pass
                pidfd = os.pidfd_open(pid)
                waiting[pidfd] = (pid, conn)
                sel.register(pidfd, selectors.EVENT_READ, "child")
            else:
                pid, conn = waiting.pop(key.fd)
                sel.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                try:
                    conn.send(b"%d" % os.waitstatus_to_exitcode(status))
                except OSError:
                    pass
                conn.close()


serve()  # returns in a child only
del serve, become, stdio
import runpy
runpy.run_path(SCRIPT, run_name="__main__")
"""


def _interpreter() -> str:
    """The console script's interpreter (its #! line), which a started `wfops` runs on: sys.executable there."""
    with open(WFOPS, "rb") as fh:
        first = fh.readline().decode().strip()
    return first[2:].strip() if first.startswith("#!") else sys.executable


class _Zygote:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="wfops-zygote-")
        self.path = os.path.join(self.dir, "sock")
        env = _zygote_env()
        self.starting = _starting(env)  # a command whose environment differs in these: a real start
        self.log = open(os.path.join(self.dir, "log"), "wb")  # noqa: SIM115 (closed with the zygote)
        self.proc = subprocess.Popen([_interpreter(), "-c", _ZYGOTE, str(BIN), self.path, str(WFOPS)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env, cwd="/")
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line != b"ready\n":
            self.proc.kill()
            raise RuntimeError(f"the tests' wfops zygote did not start: {self.log_tail()}")
        self.proc.stdout.close()

    def log_tail(self) -> str:
        return Path(self.dir, "log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # EOF: it exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        for name in ("sock", "log"):
            try:
                os.unlink(os.path.join(self.dir, name))
            except FileNotFoundError:
                pass
        os.rmdir(self.dir)


_state: dict[str, _Zygote | None] = {"zygote": None}
_lock = threading.Lock()


def _zygote() -> _Zygote:
    with _lock:
        z = _state["zygote"]
        if z is not None and z.proc.poll() is not None:
            raise RuntimeError(f"the tests' wfops zygote died (exit {z.proc.returncode}); its log: {z.log_tail()}")
        if z is None:
            z = _state["zygote"] = _Zygote()
        return z


def stop() -> None:
    """Stop this process's zygote (the session's end; also at exit)."""
    with _lock:
        z, _state["zygote"] = _state["zygote"], None
    if z is not None:
        z.stop()


atexit.register(stop)


def _zygote_env() -> dict[str, str]:
    return {**os.environ, **_ZYGOTE_ENV}


def _starting(env: dict[str, str]) -> dict[str, str]:
    """The variables Python reads as it starts (PYTHONPROFILEIMPORTTIME, PYTHONPATH, PYTHONHASHSEED, ...; the
    locale: stdio's encoding; TZ: time.tzname)."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON") or k in ("LANG", "LC_ALL", "LC_CTYPE", "TZ")}


def _forkable(argv: list[str], env: dict[str, str]) -> bool:
    if os.environ.get(OFF_ENV) == "0" or argv[:1] != [str(WFOPS)]:
        return False
    z = _state["zygote"]
    return _starting(env) == (z.starting if z is not None else _starting(_zygote_env()))


def _text(data: bytes) -> str:
    """As subprocess.run(text=True) decodes: the locale's encoding, universal newlines."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def run(argv: list[str], env: dict[str, str], cwd: str | os.PathLike[str], timeout: float
        ) -> subprocess.CompletedProcess[str]:
    if not _forkable(argv, env):
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if not os.path.isdir(cwd):  # as subprocess says it, before anything runs
        raise FileNotFoundError(2, "No such file or directory", os.fspath(cwd))
    z = _zygote()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid: int | None = None
    code: int | None = None
    try:
        try:
            sock.connect(z.path)
            request = {"args": argv[1:], "env": env, "cwd": os.fspath(cwd)}
            socket.send_fds(sock, [json.dumps(request).encode()], [0, out_w, err_w])
        finally:
            os.close(out_w)
            os.close(err_w)
        said = sock.recv(64)
        if not said:
            raise RuntimeError(f"the tests' wfops zygote did not run {argv[1:]}; its log: {z.log_tail()}")
        pid = int(said)
        code, ended = _collect(sock, chunks, time.monotonic() + timeout)
        if not ended:  # the timeout: killed and waited for, as subprocess.run does it (not drained)
            if code is None:  # still running (else it ended, and a process it left holds the pipes)
                os.kill(pid, signal.SIGKILL)
                code = _exit_code(sock, time.monotonic() + 10)
            raise subprocess.TimeoutExpired(argv, timeout, output=b"".join(chunks[out_r]) or None,
                                            stderr=b"".join(chunks[err_r]) or None)
    except BaseException:
        if pid is not None and code is None:  # Ctrl-C, an error here: the command does not outlive its caller
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise
    finally:
        sock.close()
        for fd in chunks:
            os.close(fd)
    return subprocess.CompletedProcess(argv, code, _text(b"".join(chunks[out_r])), _text(b"".join(chunks[err_r])))


def _collect(sock: socket.socket, chunks: dict[int, list[bytes]], deadline: float) -> tuple[int | None, bool]:
    """Read the command's stdout and stderr to their end and its exit code: (exit code or None, whether all of it
    came before `deadline`)."""
    code: int | None = None
    with selectors.DefaultSelector() as sel:
        for fd in chunks:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(sock, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return code, False
            for key, _ in sel.select(left):
                if key.fileobj is sock:
                    sel.unregister(sock)
                    code = _exit_code(sock, deadline)
                    continue
                data = os.read(key.fd, 1 << 16)
                if data:
                    chunks[key.fd].append(data)
                else:
                    sel.unregister(key.fd)
    return code, True


def _exit_code(sock: socket.socket, deadline: float) -> int:
    sock.settimeout(max(0.0, deadline - time.monotonic()))
    said = sock.recv(64)
    if not said:
        raise RuntimeError("the tests' wfops zygote went away before the command's exit code")
    return int(said)
