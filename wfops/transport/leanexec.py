"""The session of the lean entry (wfops.lean): one script through the target's keeper, or Fallback.

Beside KeeperSession (wfops.transport.connect), using its KeeperExec and warm.py's frames as they are. A keeper
that does not answer yet is started as the full path starts it (wfops.prewarm's warm.prestart, then
warm.connect); nothing is retried here: a keeper gone, stale (the target now resolves elsewhere) or frozen
before it opened a channel, and nothing reached the pod: it raises wfops.errors.Fallback, and the full path
runs the command (and starts another keeper, in its own words). Once the channel is open it is KeeperExec's
frames, errors and exit code, as for any warm command.
"""

from __future__ import annotations

import socket

from wfops.errors import Fallback
from wfops.targets.target import Target
from wfops.transport import warm
from wfops.transport.connect import KEEPER_START_SECS, Frozen, KeeperExec, Retry
from wfops.transport.session import (
    Counted,
    ExecResult,
    MetaSink,
    Redactor,
    StderrLines,
    StdoutSink,
    collect,
    count_request,
    stderr_line,
    verbose,
)


class LeanKeeperSession:
    """One script through the keeper at `sock` (already dialled), or Fallback before anything ran."""

    def __init__(self, target: Target, redact: Redactor, persist: float, sock: socket.socket) -> None:
        self.target, self.redact, self.persist = target, redact, persist
        self.sock: socket.socket | None = sock
        self._exec: KeeperExec | None = None
        self.sent = 0  # bytes of the script and what followed it (the agent, for a pod without it): WFOPS_VERBOSE

    def send(self, data: bytes) -> None:
        assert self._exec is not None, "send() only while a script runs"
        self._exec.send(data)
        self.sent += len(data)

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None) -> ExecResult:
        assert self.sock is not None, "one script per lean session"
        sock, self.sock = self.sock, None
        data = script.encode()
        self.sent = len(data)
        buf: list[bytes] = []
        errs = StderrLines(self.redact, meta, stderr_line)
        out = Counted(collect(stdout_sink, buf))
        self._exec = KeeperExec(sock, on_start=count_request)
        header = {"op": "exec", "fp": warm.fingerprint(self.target), "persist": self.persist}
        try:
            code = self._exec.run(header, data, out, errs.feed,
                                  start_timeout=KEEPER_START_SECS + 2 * self.target.connect_timeout)
        except Frozen:  # it accepted and said nothing: end it (as KeeperSession does); the full path starts another
            warm.end_frozen(sock, warm.socket_path(self.target))
            raise Fallback() from None
        except Retry:
            raise Fallback() from None
        finally:
            self._exec = None
            sock.close()
        errs.close()
        verbose("via the keeper", self.sent, out.n)
        return ExecResult(code, b"".join(buf), errs.error)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def keeper_session(target: Target, redact: Redactor, persist: float) -> LeanKeeperSession:
    """The session through the keeper of `target`. When none answers, it is started exactly as the full path
    starts it (wfops.prewarm: warm.prestart, then warm.connect waits for it): the first command pays the keeper's
    start, not invoke's imports too. A keeper that could not connect is the command's error (the WfopsError
    warm.connect raises, as on the full path); a keeper directory we must refuse, or a keeper of another user, is
    Fallback: the full path says so in its own words."""
    from wfops.errors import WfopsError

    try:
        path = warm.socket_path(target)
        sock = warm.dial(path)
    except WfopsError:
        raise Fallback() from None
    if sock is None:
        warm.prestart(target, persist)
        sock = warm.connect(target, persist)
    return LeanKeeperSession(target, redact, persist, sock)
