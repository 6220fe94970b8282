"""The command registry: each pod command is a function whose signature declares its arguments.

    @command("task-show")
    def task_show(pod: Layout, id: str, tail: int = 0) -> dict: ...

The client sends one JSON document on stdin: {"cmd": NAME, "pod": {...layout...}, "prelude": {...},
"data": {...arguments...}}. Arguments are checked against the handler's parameters (names, required,
JSON types) before it runs; a handler returns the JSON result (or text) for the client, or raises Refusal.
"""

from __future__ import annotations

import inspect

from .states import EXIT_USAGE

COMMANDS = {}
_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,), "dict": (dict,)}


class Refusal(Exception):
    """A refusal or failure the user sees as one line and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


def bind(name: str, data: dict) -> tuple:
    """(handler, keyword arguments) for a command, or Refusal(EXIT_USAGE) naming what is wrong."""
    fn = COMMANDS.get(name)
    if fn is None:
        raise Refusal(EXIT_USAGE, "the pod agent has no command %r" % name)
    params = list(inspect.signature(fn).parameters.values())[1:]  # the first is the pod layout
    known = {p.name for p in params}
    unknown = sorted(set(data) - known)
    if unknown:
        raise Refusal(EXIT_USAGE, "%s: unknown argument(s) %s" % (name, ", ".join(unknown)))
    kwargs = {}
    for p in params:
        if p.name not in data:
            if p.default is inspect.Parameter.empty:
                raise Refusal(EXIT_USAGE, "%s: missing argument %s" % (name, p.name))
            continue
        value = data[p.name]
        types = _TYPES.get(str(p.annotation).replace("Optional[", "").rstrip("]"))
        if types and value is not None and not isinstance(value, types):
            raise Refusal(EXIT_USAGE, "%s: argument %s must be %s, not %r" % (name, p.name, p.annotation, value))
        kwargs[p.name] = value
    return fn, kwargs
