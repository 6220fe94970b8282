"""The `local` target's session: the same scripts, run by `bash -s` on this machine (wfops.transport.session
says what a session is; wfops.transport.connect.open_session picks this one for the `local` target)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import threading
from typing import IO

from wfops.targets.target import Target
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


class LocalSession:
    """The `local` target: the same scripts, run by bash on this machine."""

    def __init__(self, target: Target, redact: Redactor, show: LineSink = stderr_line) -> None:
        self.target = target
        self.redact = redact
        self.show = show
        self._stdin: IO[bytes] | None = None
        self._lock = threading.Lock()
        self.sent = 0  # bytes sent to the current script's stdin

    def send(self, data: bytes) -> None:
        with self._lock:
            assert self._stdin is not None, "send() only while a script runs"
            self._stdin.write(data)
            self._stdin.flush()
            self.sent += len(data)

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None, serve: ServeOrder | None = None) -> ExecResult:
        # its own session, as a script over SSH is: a Ctrl-C at the terminal reaches wfops (which says what it
        # means), not the pod's agent in the middle of its start (a Python traceback on the user's terminal)
        proc = subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
        # pipes in binary mode with the default buffering: buffered readers, whose read1 returns what is there
        assert stdin and isinstance(stdout, io.BufferedReader) and isinstance(stderr, io.BufferedReader)
        buf: list[bytes] = []
        errs = StderrLines(self.redact, meta, self.show)
        out = Counted(collect(stdout_sink, buf))
        threads = [pump(stdout.read1, out), pump(stderr.read1, errs.feed)]
        count_request()
        self._stdin, self.sent = stdin, 0
        data = script.encode()
        try:
            self.send(data)
        except BrokenPipeError:
            pass
        try:
            code = proc.wait()
        except BaseException:  # wfops interrupted: what sshd does when the channel closes, a hangup of the script
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGHUP)
            raise
        for t in threads:
            t.join()
        with self._lock:
            self._stdin = None
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        errs.close()
        verbose("local", self.sent, out.n)
        return ExecResult(code, b"".join(buf), errs.error)

    def close(self) -> None:
        pass
