"""A run's supervisor forked from the sweep queue (scheduler.py) rather than started as a new Python (`agent
supervise SPEC`, which tracked tasks keep): the same supervisor (supervisor.run_spec) without an interpreter start
and its imports a run. Linux, standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from . import store
from .supervisor import Signals, run_spec
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Dict, Optional, Set


class Forked:
    """A run's supervisor forked from the queue: the part of subprocess.Popen the queue uses (pid, poll,
    returncode, send_signal), with Popen's answers (a child reaped elsewhere reads as 0, as Popen has it)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0
            else:
                if pid:
                    self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


ENDING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def fork_run(spec: str, env: Dict[str, str]) -> Forked:
    """Start a run's supervisor as a fork of the calling queue (~40-100 ms a run less than a new Python). TERM,
    INT and HUP are held back across the fork: the child installs the supervisor's own handlers before it lets
    them in (the queue's handler must never run in it). `env`: the run's environment."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, ENDING)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no branch - the child never returns
            _child(spec, env, held)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return Forked(pid)


def _child(spec: str, env: Dict[str, str], held: Set[int]) -> None:
    """The forked supervisor: nothing of the queue's (its files, its reserve, its handlers) carries over."""
    code = 1
    try:
        signals = Signals()  # its handlers, then the signals held back come in
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        # its own stdout/stderr objects: what the queue had buffered but not written is the queue's, never the child's
        # to write again (the queue's objects stay referenced by sys.__stdout__/__stderr__, and are never flushed)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the child
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the child
        for name in os.listdir("/proc/self/fd"):  # the queue's log, its pidfds, any lock it holds
            if int(name) > 2:
                with contextlib.suppress(OSError):
                    os.close(int(name))
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        del store._reserves[:]  # the queue's reserve is the queue's to free
        store._written.clear()
        os.environ.clear()
        os.environ.update(env)
        code = run_spec(spec, signals)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # as an uncaught error of `agent supervise` would be: shown, exit 1
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
