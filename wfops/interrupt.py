"""Ctrl-C at any moment of a wfops command: one line and exit 130, never a traceback.

Inside a task, the boundary (wfops.tasks._base.wftask) turns Ctrl-C into its line: what the interrupted command
may have left on the pod. Outside it (Python importing invoke and the task tree, the command line being parsed,
invoke finishing after the task) a KeyboardInterrupt would be a traceback (`wfops`) or a silent exit 1 (`inv`).
`guard()`, called first thing by `wfops` (wfops.cli) and by the task tree's import (`inv`), installs a SIGINT
handler for those moments: one line, exit 130 at once. Before a task's boundary nothing has been sent to the pod.

Only a wfops or invoke program gets the handler: a Python program that imports wfops.tasks keeps its own Ctrl-C.
Standard library only; cheap to import: os, sys and the interpreter's built-in `_signal` alone (`signal` itself
imports enum: ~5 ms in which a Ctrl-C was a traceback), so that the moments before the guard are Python's own
start-up (tests/unit/test_interrupt_import.py). The wheel's wfops_quiet_pipe.pth calls guard() while Python
starts (site), before the console script's own imports; wfops.cli calls it again (a no-op then).
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # built in: signal.py would import enum
import os
import sys

TYPE_CHECKING = False  # not typing's: the guard is installed before wfops imports anything slow (mypy knows it)
if TYPE_CHECKING:
    from typing import Any

EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as a shell reports it
EXIT_TERMINATED = 143  # SIGTERM, likewise
EXIT_BROKEN_PIPE = 141  # SIGPIPE: a writer whose reader went away (wfops.quietpipe)
PROGRAMS = ("wfops", "inv", "invoke")
BEFORE = "wfops: interrupted before anything was sent to the pod; nothing was changed\n"
AFTER = "wfops: interrupted\n"
_state = {"guarded": False, "tasks_ran": False}


def program_name() -> str:
    """The running program's name: the script's (`wfops`, `inv`), or the module's for `python [-X opt] -m NAME`
    (while Python starts, sys.argv is only ['-m']: sys.orig_argv has the name)."""
    argv = sys.orig_argv  # Python >= 3.10 (the client's floor)
    if "-m" in argv[1:-1]:
        at = argv.index("-m")
        options = " ".join(argv[1:at]).replace("-X ", "-X").replace("-W ", "-W").split()
        if all(o.startswith("-") for o in options):  # not `python script.py -m x` nor `python -c code -m x`
            return argv[at + 1]
    name = os.path.basename(sys.argv[0] if sys.argv else "")
    if name == "__main__.py":  # python path/to/wfops/__main__.py
        name = os.path.basename(os.path.dirname(sys.argv[0]))
    return name


def _program() -> bool:
    return program_name() in PROGRAMS


def _outside_a_task(signum: int, frame: Any) -> None:
    os.write(2, (AFTER if _state["tasks_ran"] else BEFORE).encode())
    os._exit(EXIT_INTERRUPTED)


def guard() -> None:
    """Install the handler (once; only in a wfops/invoke program's main thread, over Python's default)."""
    if _state["guarded"] or not _program():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        try:
            signal.signal(signal.SIGINT, _outside_a_task)
        except ValueError:  # not the main thread (Python's rule): not ours to change
            return
        _state["guarded"] = True


class InTask:
    """`with InTask():` around a task body: Ctrl-C raises KeyboardInterrupt there (the boundary words it);
    outside again, the guard's handler is back (and says "interrupted", no more "before anything was sent")."""

    def __enter__(self) -> None:
        import threading  # loaded by now (invoke, the task tree); not at the guard's import

        self.ours = _state["guarded"] and threading.current_thread() is threading.main_thread()
        if self.ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        if self.ours:
            _state["tasks_ran"] = True
            signal.signal(signal.SIGINT, _outside_a_task)
