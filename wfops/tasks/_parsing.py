"""What wfops changes in invoke's command line, for `wfops` and `inv` alike (installed once, on import of the
task tree; each keeps invoke's own method underneath): optional positional arguments, "did you mean" for an
unknown task or option, and a quiet exit when the reader of stdout goes away (`inv --list | head`).
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from invoke.parser.parser import ParseMachine, is_flag

# Invoke makes every positional argument required and offers no hook for an optional one: the check and the
# decision to take the next word as the positional read the same `value is None`. A Program subclass would
# cover `wfops` but not `inv`, and options instead of positionals would break `fsm.reset STATE` and
# `run.fetch RUN_ID`. So this one patch stays; it changes nothing for arguments other than those marked by
# WfTask (`wfops_optional`), is installed once, and keeps invoke's own method underneath.
_complete_context = ParseMachine.complete_context


def _complete_context_allowing_optional(self: ParseMachine) -> None:
    if self.context is not None:
        for arg in self.context.positional_args:
            if arg.value is None and getattr(arg, "wfops_optional", False):
                arg.value = ""
    _complete_context(self)


if not getattr(ParseMachine.complete_context, "wfops_patch", False):
    _complete_context_allowing_optional.wfops_patch = True  # type: ignore[attr-defined]
    ParseMachine.complete_context = _complete_context_allowing_optional  # type: ignore[method-assign]


# "No idea what 'sweep.stauts' is!" gets the closest task name (or, for an option, the task's closest option),
# under `inv` as under `wfops`: the parser is the one place that knows both the token and the names it knows.
_error = ParseMachine.error
_UNKNOWN = re.compile(r"No idea what '(.+)' is!$")


def did_you_mean(word: str, names: Iterable[str]) -> str:
    """` (did you mean X?)` for the closest of `names`, or ""."""
    close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _error_with_suggestion(self: ParseMachine, msg: str) -> None:
    m = _UNKNOWN.match(msg)
    if m:
        word = m.group(1)
        if is_flag(word) and self.context is not None:
            msg += did_you_mean(word.split("=")[0], self.context.flags)
        elif not is_flag(word):
            msg += did_you_mean(word, self.contexts)
    _error(self, msg)


if not getattr(ParseMachine.error, "wfops_patch", False):
    _error_with_suggestion.wfops_patch = True  # type: ignore[attr-defined]
    ParseMachine.error = _error_with_suggestion  # type: ignore[method-assign]


# ------------------------------------------------------------------ closed pipes

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away


def exit_quietly_on_broken_pipe() -> None:
    """The reader of stdout went away (`... | head`): the rest goes nowhere, and no "Exception ignored" at exit."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """`inv --list | head`: invoke's program does not catch BrokenPipeError; its traceback becomes the shell's
    quiet 141 (the exit functions still run). Any other exception goes to the hook that was there."""
    if issubclass(kind, BrokenPipeError):
        exit_quietly_on_broken_pipe()
        atexit._run_exitfuncs()
        os._exit(EXIT_BROKEN_PIPE)
    _previous_hook(kind, value, tb)


_previous_hook = sys.excepthook
if not getattr(sys.excepthook, "wfops_patch", False):
    _excepthook.wfops_patch = True  # type: ignore[attr-defined]
    sys.excepthook = _excepthook


