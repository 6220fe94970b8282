"""The `wfops` program (an invoke Program): the same task tree as `inv`, without needing a tasks.py.

Two differences from `inv`, both about the command line only (fabric's `Fab(Program)` adds its core options
the same way):
- `--config FILE` / `-c FILE` is wfops's dotenv file, before the task name as well as after it
  (`wfops -c pod.env sweep.status` = `wfops sweep.status -c pod.env`); invoke's own `--config`/`-f` (an invoke
  YAML/JSON/Python config file) is not offered: wfops has one config, the dotenv file. `INVOKE_RUNTIME_CONFIG`
  still works.
- A command line invoke cannot parse (an unknown option, an option without its value) is one line and exit 2,
  like every other bad argument.
- Only options that work are offered. Invoke's core options about its own `c.run()` (`-R/--dry`, `-e/--echo`,
  `--hide`, `-p/--pty`, `-T/--command-timeout`, `-w/--warn-only`, `--prompt-for-sudo-password`) and
  `--write-pyc` mean nothing for wfops tasks (they run no local shell commands through invoke): they are not
  listed, and given, they are refused with one line (exit 2) before anything runs. A "dry" run that runs
  would be the worst surprise of all.
- `--print-completion-script SHELL` prints a script that calls this very `wfops` by its full path, so TAB works
  in a shell whose PATH does not have the venv's bin (invoke's own script calls a bare `wfops`).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from collections.abc import Iterable

from invoke import Argument, Exit, ParseError, Program
from invoke.completion.complete import print_completion_script

from wfops import __version__
from wfops.errors import EXIT_USAGE
from wfops.tasks import ns
from wfops.tasks._base import CONFIG_HELP, CONFIG_SHORT
from wfops.tasks._parsing import did_you_mean

_ARG_REPR = re.compile(r"<\w+: (\w+)[^>]*>")  # invoke names an option by its Argument's repr
ABOUT = "wfops runs ML training sweeps on rented GPU pods, configured by one dotenv file."
# invoke's core options that mean nothing for wfops tasks: not listed, refused when given
LIST_FORMATS = ("flat", "nested", "json")  # invoke's --list-format values (another one was a traceback)
NOT_OFFERED = ("command-timeout", "dry", "echo", "hide", "prompt-for-sudo-password", "pty", "warn-only", "write-pyc")


def usage_error(exc: ParseError, tasks: Iterable[str] = ()) -> Exit:
    text = _ARG_REPR.sub(lambda m: "--" + m.group(1).replace("_", "-"), str(exc))
    unknown = re.fullmatch(r"No idea what '(.+)' is!", text)  # `--help NOSUCH` (the parser's own say it already)
    if unknown:
        text += did_you_mean(unknown.group(1), tasks)
    # never "did you mean" an option that is refused (`wfops --dry-run sweep.start`: not "did you mean --dry?")
    text = re.sub(r" \(did you mean --([\w-]+)\?\)", lambda m: "" if m.group(1) in NOT_OFFERED else m.group(0), text)
    if re.match(r"No idea what '--dry[^']*' is!", text):  # `wfops sweep.start --dry-run`: only checkout has one
        text += " (wfops has no dry run; preview with sweep.validate or checkout --dry-run instead)"
    return Exit(f"wfops: {text}", EXIT_USAGE)


class WfopsProgram(Program):
    def core_args(self) -> list[Argument]:
        args = [arg for arg in super().core_args() if arg.name != "config"]
        args.append(Argument(names=("config", CONFIG_SHORT), help=CONFIG_HELP + "; also after the task name"))
        for arg in args:  # `wfops -c a.env -c b.env ...`: refused by name (wfops.tasks._parsing)
            arg.wfops_once = True  # type: ignore[attr-defined]
        return args

    def parse_core_args(self) -> None:
        super().parse_core_args()
        shell = self.core[0].args["print-completion-script"].value
        if shell:
            print(completion_script(shell))
            raise Exit
        self._refuse_not_offered()

    def _refuse_not_offered(self) -> None:
        """One line, exit 2, before anything runs, for an option of NOT_OFFERED wherever it stands: before the task
        name (parsed as a core option), after it (invoke takes core options there too: `wfops fsm.reset INIT -e`),
        or before the task's positional argument (`wfops fsm.reset -R INIT`, see wfops.tasks._parsing)."""
        given = [a for a in self.core[0].args.values() if a.name in NOT_OFFERED and a.got_value]
        if given:
            raise Exit(refusal(given[0].names), EXIT_USAGE)
        form = self.core[0].args["list-format"].value
        if form not in LIST_FORMATS:
            raise Exit(f"wfops: --list-format={form!r} is not valid: expected one of {', '.join(LIST_FORMATS)}"
                       + did_you_mean(str(form), LIST_FORMATS), EXIT_USAGE)

    def _refusal_in(self, argv: Iterable[str]) -> Exit | None:
        """After a ParseError: the refusal of a NOT_OFFERED option among `argv`'s words, if one is there."""
        words = {w.split("=")[0] for w in argv}
        for arg in self.initial_context.args.values():
            if arg.name in NOT_OFFERED and {("-" if len(n) == 1 else "--") + n for n in arg.names} & words:
                return Exit(refusal(arg.names), EXIT_USAGE)
        return None

    def print_help(self) -> None:
        print(ABOUT)
        print(f"Usage: {self.binary} [--core-opts] <subcommand> [--subcommand-opts] ...\n\nCore options:\n")
        self.print_columns([t for t in self.initial_context.help_tuples() if not _not_offered(t[0])])
        self._about_said = True
        self.list_tasks()

    def print_task_help(self, name: str) -> None:
        """invoke's help for one task, its Usage line naming the task's arguments (`run.logs RUN_ID`, and
        `fsm.reset [STATE]` for one that may be left out): invoke's shows none."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            super().print_task_help(name)
        usage, _, rest = out.getvalue().partition("\n")
        required = getattr(self.collection[name], "required", ())
        words = [a.name.upper() if a.name in required else f"[{a.name.upper()}]"
                 for a in self.parser.contexts[name].positional_args]
        print(usage.replace(f" {name} ", f" {' '.join([name, *words])} ", 1) + "\n" + rest, end="")

    def list_tasks(self) -> None:
        if not getattr(self, "_about_said", False) and self.list_format != "json":
            print(ABOUT + "\n")
        super().list_tasks()

    def parse_core(self, argv: list[str] | None) -> None:
        try:
            super().parse_core(argv)
        except ParseError as exc:  # `wfops --hide`: the refusal, not "needed value"
            raise self._refusal_in(argv or sys.argv[1:]) or usage_error(exc) from None
        except ValueError as exc:  # `-D abc`: invoke converts a core option's value while parsing
            raise _bad_value(exc, list(self.argv or [])) from None

    def parse_tasks(self) -> None:
        """Parse, then hand a `--config` given before the task name to every task that was not given its own."""
        try:
            super().parse_tasks()
        except ParseError as exc:  # `wfops fsm.reset --dry=1 INIT`: the refused option is the line, not what followed
            raise self._refusal_in(self.core.unparsed) or usage_error(exc) from None
        except ValueError as exc:  # a core option after the task name: `wfops sweep.status -D abc`
            raise _bad_value(exc, list(self.argv or [])) from None
        self._refuse_not_offered()
        path = self.args.config.value
        for context in self.tasks if path else ():
            arg = context.args.get("config")
            if arg is not None and arg.value is None:
                arg.value = path

    def parse_cleanup(self) -> None:
        """`--help NOSUCH` and `--list NOSUCH` are one line with "did you mean", exit 2; `--complete` offers only
        the options offered."""
        root = self.args.list.value
        if isinstance(root, str) and root not in self.collection.collections:  # invoke: exit 1, no "wfops:"
            raise Exit(f"wfops: no group of tasks named {root!r} to list (groups: "
                       f"{', '.join(sorted(self.collection.collections))})"
                       + did_you_mean(root, self.collection.collections), EXIT_USAGE)
        completing = bool(self.args.complete.value)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out) if completing else contextlib.nullcontext():
                super().parse_cleanup()
        except ParseError as exc:
            raise usage_error(exc, self.parser.contexts) from None
        finally:
            if completing:
                refused = {("-" if len(n) == 1 else "--") + n for a in self.initial_context.args.values()
                           if a.name in NOT_OFFERED for n in a.names}  # -R as well as --dry
                print("".join(ln for ln in out.getvalue().splitlines(keepends=True)
                              if not _not_offered(ln) and ln.strip() not in refused), end="")

    def update_config(self, merge: bool = True) -> None:
        """Invoke would load `--config` as its own runtime config file: it is ours, so hide it from invoke."""
        ours = self.args.config.value
        self.args.config.set_value(None, cast=False)
        try:
            super().update_config(merge)
        finally:
            self.args.config.set_value(ours, cast=False)


def completion_script(shell: str) -> str:
    """invoke's completion script for `shell`, calling wfops by the full path of the program that prints it."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            print_completion_script(shell=shell, names=["wfops"])
        except ParseError as exc:
            raise usage_error(exc) from None
    argv0 = sys.argv[0] if sys.argv else ""
    me = shlex.quote(os.path.abspath(argv0)) if os.path.basename(argv0) == "wfops" and os.path.isfile(argv0) else ""
    if not me:
        return text.getvalue().rstrip("\n")
    return re.sub(r"(?<=[`(\s])wfops(?= (--complete|\$\{=collection_arg\}))", me.replace("\\", "\\\\"),
                  text.getvalue()).rstrip("\n")


def refusal(names: Iterable[str]) -> str:
    """The one line for an option of NOT_OFFERED (its names: `("dry", "R")`): which option, why it means nothing
    here, what to do instead."""
    name = max(names, key=len)
    flags = "/".join(("-" if len(n) == 1 else "--") + n for n in sorted(names, key=len))
    if name == "dry":
        return (f"wfops: {flags} is not a wfops option: wfops has no dry run; preview with sweep.validate or "
                "checkout --dry-run instead; nothing was run")
    why = ("it is about invoke compiling a tasks.py" if name == "write-pyc"
           else "it is about invoke's own shell commands, and wfops tasks run none")
    return f"wfops: {flags} is not a wfops option ({why}): leave it out; nothing was run"


def _bad_value(exc: ValueError, argv: list[str]) -> Exit:
    """A core option whose value invoke could not convert (`-D abc`; `-T abc` is refused as not offered): one
    line, exit 2 (was a traceback)."""
    if any(w.startswith(("-T", "--command-timeout")) for w in argv):
        return Exit(refusal(("command-timeout", "T")), EXIT_USAGE)
    said = re.search(r"'(.*)'$", str(exc))
    value = said.group(1) if said else str(exc)
    return Exit(f"wfops: {value!r} is not a whole number, which -D/--list-depth takes", EXIT_USAGE)


def _not_offered(spec: str) -> bool:
    """Whether a help line's flag spec (`-R, --dry`) is one of NOT_OFFERED."""
    return any(w.lstrip("-").split("=")[0] in NOT_OFFERED for w in spec.replace(",", " ").split())


program = WfopsProgram(namespace=ns, version=__version__, name="wfops", binary="wfops")

