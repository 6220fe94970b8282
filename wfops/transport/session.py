"""What every session shares: the Session interface, ExecResult, and how a script's output comes back.

A session runs scripts with `exec_script`: the script goes to stdin (`bash -s`, ONE exec); stdout is the result
(JSON, or a byte stream for run.fetch); stderr lines are progress, shown to the user with secrets redacted and
control characters made visible, except `@wfops-error CODE message`, which becomes a WfopsError, and
`@wfops-NAME value` side information for the caller (`meta`).

The sessions themselves: wfops.transport.local (bash on this machine), wfops.transport.ssh (one Fabric
connection of this process: the one place an SSH connection is made), and wfops.transport.connect (through the
target's warm keeper, and `open_session`, the factory that picks one of the three).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

from wfops.errors import RemoteError, WfopsError
from wfops.output import ERROR_LINE as _ERROR_RE
from wfops.output import META_LINE as _META_RE
from wfops.output import Redactor as Redactor  # here as before: the transport imports it from the session
from wfops.output import visible
from wfops.targets.target import Target

VERBOSE_ENV = "WFOPS_VERBOSE"
READ_SIZE = 1024 * 1024

StdoutSink = Callable[[bytes], None]
MetaSink = Callable[[str, str], None]
LineSink = Callable[[str], None]  # where a progress line goes (a fleet pod's: wfops.fanout.PodLog, `[pod] line`)

_requests_sent = 0


def requests_sent() -> int:
    """How many scripts this process has started sending to a pod (or to local bash): the error boundary compares
    it before and after an interruption to tell whether a mutating command's request may have arrived."""
    return _requests_sent


def count_request() -> None:
    """Every session calls this as a script starts going to the pod."""
    global _requests_sent
    _requests_sent += 1


@dataclass
class ExecResult:
    code: int
    stdout: bytes = b""
    error: WfopsError | None = None

    def check(self, what: str) -> ExecResult:
        if self.error is not None:
            raise self.error
        if self.code != 0:
            raise RemoteError(f"{what} failed on the pod (exit {self.code}); see the output above")
        return self

    def json(self, what: str, redact: Redactor | None = None) -> dict[str, Any]:
        self.check(what)
        text = self.stdout.decode("utf-8", "replace")
        lines = [ln for ln in (redact(text) if redact else text).splitlines() if ln.strip()]
        if not lines:
            return {}
        try:
            answer: dict[str, Any] = json.loads(lines[-1])  # the agent answers one JSON object
        except ValueError:
            raise RemoteError(f"{what}: the pod answered something that is not JSON: {lines[-1][:200]!r}") from None
        return answer


def stderr_line(text: str) -> None:
    """The default progress sink: the line on this process's stderr, at once."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


@dataclass
class StderrLines:
    """Turns stderr bytes into lines: errors are kept, the rest is shown (redacted) as it arrives, on `show`."""

    redact: Redactor
    meta: MetaSink | None = None
    show: LineSink = stderr_line
    error: WfopsError | None = None
    buffer: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def feed(self, data: bytes) -> None:
        with self.lock:
            self.buffer += data
            *lines, self.buffer = self.buffer.split(b"\n")
            for line in lines:
                self._line(line.decode("utf-8", "replace"))

    def close(self) -> None:
        if self.buffer:
            self._line(self.buffer.decode("utf-8", "replace"))
            self.buffer = b""

    def _line(self, line: str) -> None:
        m = _ERROR_RE.match(line)
        if m:
            self.error = WfopsError(self.redact(m.group(2)), int(m.group(1)))
            return
        m = _META_RE.match(line)
        if m:  # machine-readable side information (e.g. `@wfops-size N` before a fetch)
            if self.meta is not None:
                self.meta(m.group(1), m.group(2))
            return
        self.show(visible(self.redact(line)))


class ServeOrder(TypedDict):
    """The `serve` of a keeper's exec order (wfops.transport.podserver): a read the agent kept alive on the pod may
    answer. `start`: the script that starts that agent (remote_templates/agent_serve.sh.j2); `key`: what tells one
    kept agent from another: the agent's content hash (not the pod layout, which each request carries, nor
    REMOTE_PYTHON_BIN, which the glue takes only where the pod has no python3: configs share it); `skip`: the
    bytes of the command's script on its stdin, before the request line (what the kept agent is sent)."""
    start: str
    key: str
    skip: int


class Session(Protocol):
    target: Target

    def exec_script(self, script: str, stdout_sink: StdoutSink | None = None,
                    meta: MetaSink | None = None, serve: ServeOrder | None = None) -> ExecResult:
        """Run `script`; `serve`: the read it carries, which a warm keeper may have the agent it keeps on the pod
        answer instead (wfops.transport.podserver); other sessions run the script."""
        ...

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


def pump(read: Callable[[int], bytes], handle: Callable[[bytes], None]) -> threading.Thread:
    """A thread that hands what `read` returns to `handle` until `read` returns nothing."""

    def run() -> None:
        while True:
            chunk = read(READ_SIZE)
            if not chunk:
                break
            handle(chunk)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def collect(sink: StdoutSink | None, buf: list[bytes]) -> Callable[[bytes], None]:
    return sink if sink is not None else buf.append


def verbose(how: str, sent: int, received: int) -> None:
    """WFOPS_VERBOSE=1: one line per exec with the bytes it moved (how big the script was, what came back)."""
    if os.environ.get(VERBOSE_ENV, "").strip() in ("1", "true", "yes", "on"):
        print(f"wfops: exec {how}: sent {sent} bytes, received {received} bytes", file=sys.stderr, flush=True)


class Counted:
    """Counts the bytes handed to a stdout sink (for WFOPS_VERBOSE)."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink, self.n = sink, 0

    def __call__(self, data: bytes) -> None:
        self.n += len(data)
        self.sink(data)
