"""`wfops ARGS` for the tests, as a process forked from one that has wfops imported already (a "zygote").

Most of a test's time in its `wfops` commands was the interpreter starting and importing invoke, the task tree,
paramiko (0.25-0.35 s of CPU a command, ~2,400 commands a run). Here each pytest worker keeps one zygote: a
Python process that imported wfops' modules once, listens on a unix socket, and forks a child per command. The
child is a process of its own, as `subprocess.run([wfops, ...])` makes it: its own stdin/stdout/stderr (the
caller's pipes, passed over the socket), environment, working directory, sys.argv, signal dispositions and exit
status; it runs the console script's own entry (wfops.cli.main) and ends as the interpreter would (non-daemon
threads joined, exit functions run, streams flushed). What differs is only what happened before main(): the
imports were done before the fork. So a command that must be started for real (a test of what the start-up
does: the lean entry's imports under PYTHONPROFILEIMPORTTIME, Ctrl-C while Python starts) runs through
subprocess as before: `run` does that whenever the environment sets a Python start-up variable (PYTHON*, the
locale) other than the zygote's, and tests that send signals to a command or read its /proc entry start it
themselves. `WFOPS_TEST_FORK=0` runs every command through subprocess (what a user's shell does), for a
comparison.

`run` returns a subprocess.CompletedProcess and raises subprocess.TimeoutExpired (the command killed) as
subprocess.run(capture_output=True, text=True, timeout=...) does.
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
WFOPS = BIN / "wfops"
OFF_ENV = "WFOPS_TEST_FORK"
_ZYGOTE_ENV = {"PYTHONUNBUFFERED": "1"}  # as every test command has it (tests/conftest.py Pod.env)
_DRAIN_AFTER_KILL = 5.0

# The zygote: imports what a command imports, then forks one child per request. Standard library + wfops only.
_ZYGOTE = r'''
import json, os, selectors, signal, socket, sys
BINDIR, SOCK = sys.argv[1], sys.argv[2]
sys.path[0] = BINDIR  # as for the console script (.venv/bin/wfops): its folder, not the working directory
del sys.argv[1:]
import wfops.cli, wfops.lean, wfops.leancache, wfops.prewarm, wfops.program  # noqa: the imports every child shares
import wfops.transport.ssh, wfops.transport.leanexec, wfops.transport.warm  # noqa


def child(request, fds, closing):
    for obj in closing:
        obj.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = list(request["argv"])
    sys.orig_argv = [sys.executable, *request["argv"]]
    code = 0
    try:
        from wfops.cli import main
        sys.exit(main())
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:  # as Python ends on an uncaught Ctrl-C: the traceback, then killed by SIGINT
        import traceback
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    import atexit, threading
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = code or 120
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


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
                    return
            elif key.data == "accept":
                conn, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                request = json.loads(message)
                pid = os.fork()
                if pid == 0:
                    closing = [sel, listener, conn] + [c for _, c in waiting.values()]
                    for pidfd in waiting:
                        os.close(pidfd)
                    child(request, fds, closing)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                waiting[pidfd] = (pid, conn)
                sel.register(pidfd, selectors.EVENT_READ, "child")
                conn.send(b"%d" % pid)
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


serve()
'''


class _Zygote:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="wfops-zygote-")
        self.path = os.path.join(self.dir, "sock")
        env = {**os.environ, **_ZYGOTE_ENV}
        self.log = open(os.path.join(self.dir, "log"), "wb")  # noqa: SIM115 (closed with the zygote)
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE, str(BIN), self.path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env, cwd="/")
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line != b"ready\n":
            self.proc.kill()
            raise RuntimeError(f"the tests' wfops zygote did not start: {Path(self.dir, 'log').read_text()[-2000:]}")
        self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # EOF: it returns
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


def _zygote() -> _Zygote:
    z = _state["zygote"]
    if z is None or z.proc.poll() is not None:
        if z is not None:
            raise RuntimeError(f"the tests' wfops zygote died (exit {z.proc.returncode}); its log: "
                               f"{Path(z.dir, 'log').read_text()[-2000:]}")
        z = _state["zygote"] = _Zygote()
    return z


def stop() -> None:
    """Stop this process's zygote (the session's end; also at exit)."""
    z, _state["zygote"] = _state["zygote"], None
    if z is not None:
        z.stop()


atexit.register(stop)


def _starting(env: dict[str, str]) -> dict[str, str]:
    """The variables Python reads as it starts (PYTHONPROFILEIMPORTTIME, PYTHONPATH, ...; the locale: stdio's
    encoding)."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON") or k in ("LANG", "LC_ALL", "LC_CTYPE")}


def _forkable(argv: list[str], env: dict[str, str]) -> bool:
    if os.environ.get(OFF_ENV) == "0" or argv[:1] != [str(WFOPS)]:
        return False
    return _starting(env) == _starting({**os.environ, **_ZYGOTE_ENV})


def _text(data: bytes) -> str:
    """As subprocess.run(text=True) decodes: the locale's encoding, universal newlines."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def run(argv: list[str], env: dict[str, str], cwd: str | os.PathLike[str], timeout: float
        ) -> subprocess.CompletedProcess[str]:
    if not _forkable(argv, env):
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    z = _zygote()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(z.path)
        request = json.dumps({"argv": argv, "env": env, "cwd": os.fspath(cwd)}).encode()
        socket.send_fds(sock, [request], [0, out_w, err_w])
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        sock.close()
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    with sock, selectors.DefaultSelector() as sel:
        pid = int(sock.recv(64))
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
        for fd in chunks:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(sock, selectors.EVENT_READ)
        code: int | None = None
        deadline = time.monotonic() + timeout
        killed = False
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                if killed:
                    break
                killed = True
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + _DRAIN_AFTER_KILL
                continue
            for key, _ in sel.select(left):
                if key.fileobj is sock:
                    message = sock.recv(64)
                    sel.unregister(sock)
                    if not message:
                        raise RuntimeError(f"the tests' wfops zygote went away while running {argv[1:]}")
                    code = int(message)
                    continue
                data = os.read(key.fd, 1 << 16)
                if data:
                    chunks[key.fd].append(data)
                else:
                    sel.unregister(key.fd)
                    os.close(key.fd)
        for fd in chunks:
            if fd in sel.get_map():
                sel.unregister(fd)
                os.close(fd)
    out, err = _text(b"".join(chunks[out_r])), _text(b"".join(chunks[err_r]))
    if killed:
        raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err)
    assert code is not None
    return subprocess.CompletedProcess(argv, code, out, err)
