"""A reader of stdout gone away (`wfops --list | head -2`, `inv --help | head -2`): the shell's quiet 141, never a
traceback nor "Exception ignored" at exit.

`wfops` catches BrokenPipeError itself (wfops.cli), and so does every task's boundary (wfops.tasks._base). Invoke's
`inv` program does not, and `inv --help` prints before any tasks.py is imported: so this module's `install()` sets
a sys.excepthook that turns an uncaught BrokenPipeError into exit 141 (exit functions still run) and hands every
other exception to the hook that was there. It is installed by the task tree's import (wfops.tasks), and, for
`inv --help`, at interpreter start by the wheel's `wfops_quiet_pipe.pth` (one line: it imports this module only
in a program named `inv` or `invoke`; any other Python process of the venv imports nothing). Invoke itself is not
touched, and a tasks.py of your own that imports wfops's tasks keeps its own hook for every other exception.

Standard library only (and wfops.interrupt, likewise: the exit code), cheap to import (it runs at every `inv`
start).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import Any

from wfops.interrupt import EXIT_BROKEN_PIPE


def exit_quietly_on_broken_pipe() -> None:
    """The reader of stdout went away (`... | head`): the rest goes nowhere, and no "Exception ignored" at exit."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    if issubclass(kind, BrokenPipeError):
        exit_quietly_on_broken_pipe()
        atexit._run_exitfuncs()
        os._exit(EXIT_BROKEN_PIPE)
    _previous["hook"](kind, value, tb)


_previous: dict[str, Any] = {"hook": sys.excepthook}


def install() -> None:
    """Install the hook once, over whatever hook is there (which keeps every exception but BrokenPipeError)."""
    if not getattr(sys.excepthook, "wfops_patch", False):
        _previous["hook"] = sys.excepthook
        _excepthook.wfops_patch = True  # type: ignore[attr-defined]
        sys.excepthook = _excepthook

