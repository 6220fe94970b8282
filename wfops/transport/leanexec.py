"""The session of the lean entry (wfops.lean): one script through the target's keeper, or Fallback.

KeeperSession (wfops.transport.connect) with one try (its exec_once) instead of three. A keeper
that does not answer yet is started as the full path starts it (wfops.prewarm's launch.prestart, then
launch.connect); nothing is retried here: a keeper gone, stale (the target now resolves elsewhere) or frozen
before it opened a channel, and nothing reached the pod: it raises wfops.errors.Fallback, and the full path
runs the command (and starts another keeper, in its own words). Once the channel is open it is KeeperExec's
frames, errors and exit code, as for any warm command.
"""

from __future__ import annotations

from wfops.errors import Fallback
from wfops.targets.target import Target
from wfops.transport import launch, warm
from wfops.transport.connect import KeeperSession, Retry
from wfops.transport.session import ExecResult, LineSink, MetaSink, Redactor, ServeOrder, StdoutSink, stderr_line


class LeanKeeperSession(KeeperSession):
    """One script through the keeper at `sock` (already dialled), or Fallback before anything ran: no retry here."""

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None, serve: ServeOrder | None = None) -> ExecResult:
        assert self._sock is not None, "one script per lean session"
        sock, self._sock = self._sock, None
        try:
            return self.exec_once(sock, script.encode(), stdout_sink, meta, serve)
        except Retry:  # gone, stale or frozen (then ended) before it opened a channel: the full path runs it
            raise Fallback() from None


def keeper_session(target: Target, redact: Redactor, persist: float, show: LineSink = stderr_line) -> LeanKeeperSession:
    """The session through the keeper of `target`. When none answers, it is started exactly as the full path
    starts it (wfops.prewarm: launch.prestart, then launch.connect waits for it): the first command pays the keeper's
    start, not invoke's imports too. A keeper that could not connect is the command's error (the WfopsError
    launch.connect raises, as on the full path); a keeper directory we must refuse, or a keeper of another user, is
    Fallback: the full path says so in its own words."""
    from wfops.errors import WfopsError

    try:
        path = warm.socket_path(target)
        sock = warm.dial(path)
    except WfopsError:
        raise Fallback() from None
    if sock is None:
        launch.prestart(target, persist)
        sock = launch.connect(target, persist)
    return LeanKeeperSession(target, redact, persist, show, sock=sock)
