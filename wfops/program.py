"""The `wfops` program (an invoke Program): the same task tree as `inv`, without needing a tasks.py.

Two differences from `inv`, both about the command line only (fabric's `Fab(Program)` adds its core options
the same way):
- `--config FILE` / `-c FILE` is wfops's dotenv file, before the task name as well as after it
  (`wfops -c pod.env sweep.status` = `wfops sweep.status -c pod.env`); invoke's own `--config`/`-f` (an invoke
  YAML/JSON/Python config file) is not offered: wfops has one config, the dotenv file. `INVOKE_RUNTIME_CONFIG`
  still works.
- A command line invoke cannot parse (an unknown option, an option without its value) is one line and exit 2,
  like every other bad argument.
"""

from __future__ import annotations

import re

from invoke import Argument, Exit, ParseError, Program

from wfops import __version__
from wfops.errors import EXIT_USAGE
from wfops.tasks import ns
from wfops.tasks._base import CONFIG_HELP, CONFIG_SHORT

_ARG_REPR = re.compile(r"<\w+: (\w+)[^>]*>")  # invoke names an option by its Argument's repr


def usage_error(exc: ParseError) -> Exit:
    text = _ARG_REPR.sub(lambda m: "--" + m.group(1).replace("_", "-"), str(exc))
    return Exit(f"wfops: {text}", EXIT_USAGE)


class WfopsProgram(Program):
    def core_args(self) -> list[Argument]:
        args = [arg for arg in super().core_args() if arg.name != "config"]
        return [*args, Argument(names=("config", CONFIG_SHORT), help=CONFIG_HELP + "; also after the task name")]

    def parse_core(self, argv: list[str] | None) -> None:
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise usage_error(exc) from None

    def parse_tasks(self) -> None:
        """Parse, then hand a `--config` given before the task name to every task that was not given its own."""
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise usage_error(exc) from None
        path = self.args.config.value
        for context in self.tasks if path else ():
            arg = context.args.get("config")
            if arg is not None and arg.value is None:
                arg.value = path

    def update_config(self, merge: bool = True) -> None:
        """Invoke would load `--config` as its own runtime config file: it is ours, so hide it from invoke."""
        ours = self.args.config.value
        self.args.config.set_value(None, cast=False)
        try:
            super().update_config(merge)
        finally:
            self.args.config.set_value(ours, cast=False)


program = WfopsProgram(namespace=ns, version=__version__, name="wfops", binary="wfops")

