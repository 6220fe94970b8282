"""What wfops changes in invoke's command line, for `wfops` and `inv` alike (installed once, on import of the
task tree; each keeps invoke's own method underneath): optional positional arguments, an option word never taken
for a wfops task's positional, an option given twice refused by name (never its second value taken for the
positional), words after `--` refused for a wfops task (never dropped), "did you mean" for an unknown task or
option (and what a group's name is), and a quiet exit when the reader of stdout goes away (`inv --list | head`,
wfops.quietpipe).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from invoke import Exit, Program
from invoke.parser.argument import Argument
from invoke.parser.context import ParserContext
from invoke.parser.parser import ParseMachine, is_flag

from wfops import hints, quietpipe
from wfops.errors import EXIT_USAGE

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
        elif any(name.startswith(word + ".") for name in self.contexts):  # `wfops sweep`: a group, not a task
            msg += f" ({word} is a group of tasks: {hints.program()} --list {word} lists them)"
        elif not is_flag(word):
            msg += did_you_mean(word, self.contexts)
    _error(self, msg)


if not getattr(ParseMachine.error, "wfops_patch", False):
    _error_with_suggestion.wfops_patch = True  # type: ignore[attr-defined]
    ParseMachine.error = _error_with_suggestion  # type: ignore[method-assign]


# A word that looks like an option is never a wfops task's positional argument (no state, run id or task id starts
# with "-"): invoke would eat it as one when the positional is still missing, so `fsm.reset -R INIT` set STATE to
# "-R" and failed on INIT, and `run.logs --help` asked for a run named "--help". In a wfops task's context, a core
# option there is the core option (as it is after the positional: `--help` shows the task's help; `wfops` refuses
# -R and kin by name, `inv -R` refuses to run), and any other option word is an unknown option ("did you mean").
# Other tasks (a tasks.py of your own) parse as invoke parses.
_handle = ParseMachine.handle


def _handle_options_before_positionals(self: ParseMachine, token: str) -> None:
    ctx: ParserContext | None = self.context  # None before the first task name
    _refuse_repeated(self, token)
    if (str(self.current_state) == "unknown" or ctx is None or not is_flag(token) or token in ctx.flags
            or token in ctx.inverse_flags or self.waiting_for_flag_value
            or not any(getattr(a, "wfops_optional", False) for a in ctx.missing_positional_args)):
        _handle(self, token)
    elif token in self.initial.flags:
        core = self.initial.flags[token]
        if core.name == "help":  # as invoke does for `TASK --help`: the task's own help
            core.value = ctx.name
        else:
            self.switch_to_flag(token)
    else:
        self.error(f"No idea what {token!r} is!")


# An option that takes one value, given twice (`fsm.reset --reason a --reason POD_READY`, `-c a.env -c b.env`):
# invoke keeps the first value and takes the second for the positional argument when one is missing (the state
# became POD_READY) or says "No idea what 'b.env' is!". Refused by name instead, before anything runs, for the
# options of a wfops task and the `wfops` program's own (marked `wfops_once`); other tasks parse as invoke parses.


def _refuse_repeated(self: ParseMachine, token: str) -> None:
    ctx: ParserContext | None = self.context
    if str(self.current_state) == "unknown" or ctx is None or not is_flag(token):
        return
    for flags in (ctx.flags, getattr(self.initial, "flags", {})):  # a bare Parser() has no initial context
        if token in flags:  # by [], not .get(): a short name is an alias there
            _refuse_if_given(self, flags[token])
            return


def _refuse_if_given(self: ParseMachine, arg: Argument) -> None:
    if (getattr(arg, "wfops_once", False) and arg.takes_value and arg.kind is not list
            and arg.raw_value is not None):
        flags = "/".join(("-" if len(n) == 1 else "--") + n.replace("_", "-") for n in sorted(arg.names, key=len))
        same = f" ({str(arg.name).upper()} and {flags} are one argument)" if arg.positional else ""
        self.error(f"{flags} was given more than once{same}: give it once; nothing was run")


if not getattr(ParseMachine.handle, "wfops_patch", False):
    _handle_options_before_positionals.wfops_patch = True  # type: ignore[attr-defined]
    ParseMachine.handle = _handle_options_before_positionals  # type: ignore[method-assign]


# Words after `--` are invoke's "remainder", which invoke hands to no task: `fsm.reset -- SWEEP_COMPLETED` dropped the
# state and reset to INIT. No wfops task reads them, so a command line that names one and has words after `--` is
# refused (one line, exit 2) before any task runs, under `inv` as under `wfops` (`--complete -- ...` is completion's).
_parse_tasks = Program.parse_tasks


def _parse_tasks_refusing_remainder(self: Program) -> None:
    _parse_tasks(self)
    remainder = getattr(self.core, "remainder", "")
    completing = self.args.get("complete")  # `wfops --complete -- wfops fsm.` completes that line: not refused
    if not remainder or (completing is not None and completing.value):
        return
    for context in self.tasks:
        if any(getattr(arg, "wfops_once", False) for arg in context.args.values()):
            raise Exit(f"wfops: {context.name} takes no words after '--' (got {remainder!r}): give them without "
                       "the '--'; nothing was run", EXIT_USAGE)


if not getattr(Program.parse_tasks, "wfops_patch", False):
    _parse_tasks_refusing_remainder.wfops_patch = True  # type: ignore[attr-defined]
    Program.parse_tasks = _parse_tasks_refusing_remainder  # type: ignore[method-assign]


# ------------------------------------------------------------------ closed pipes
# `inv --list | head`: a quiet 141 (wfops.quietpipe; `inv --help` gets it from the wheel's .pth file).

quietpipe.install()
