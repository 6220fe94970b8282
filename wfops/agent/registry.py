"""The command registry: each pod command is a function whose signature declares its arguments.

    @command(wire.TASK_SHOW)
    def task_show(pod: Layout, id: str, tail: int = 0) -> Json: ...

The client sends one JSON document on stdin: {"cmd": NAME, "pod": {...layout...}, "prelude": {...},
"data": {...arguments...}}. Arguments are checked against the handler's parameters (names, required,
JSON types) before it runs; a handler returns the JSON result (or text) for the client, or raises Refusal.
"""

from __future__ import annotations

from .states import EXIT_USAGE
from .wire import TYPE_CHECKING, argument_problem, plain_problem

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Tuple, TypeVar

    from .wire import Json

    Handler = TypeVar("Handler", bound=Callable[..., Any])

COMMANDS: Dict[str, Callable[..., Any]] = {}
# a handler argument's annotation -> the JSON types it takes (wire types: wire.ARGUMENTS)
_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,), "dict": (dict,),
          "List[Any]": (list,), "Sequence[Any]": (list,), "Json": (dict,)}


class Refusal(Exception):
    """A refusal or failure the user sees as one line and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn
    return register


def parameters(fn: Callable[..., Any]) -> List[Tuple[str, bool, str]]:
    """[(name, required, annotation)] of a handler's arguments after the pod layout (read from its code
    object: `inspect` alone would cost the agent ~10 ms of imports on every call)."""
    code = fn.__code__
    names = code.co_varnames[1:code.co_argcount]
    first_optional = len(names) - len(fn.__defaults__ or ())
    return [(n, i < first_optional, str(fn.__annotations__.get(n, ""))) for i, n in enumerate(names)]


def bind(name: str, data: Json) -> Tuple[Callable[..., Any], Json]:
    """(handler, keyword arguments) for a command, or Refusal(EXIT_USAGE) naming what is wrong."""
    fn = COMMANDS.get(name)
    if fn is None:
        raise Refusal(EXIT_USAGE, "the pod agent has no command %r" % name)
    params = parameters(fn)
    unknown = sorted(set(data) - {p[0] for p in params})
    if unknown:
        raise Refusal(EXIT_USAGE, "%s: unknown argument(s) %s" % (name, ", ".join(unknown)))
    kwargs = {}
    for pname, required, annotation in params:
        if pname not in data:
            if required:
                raise Refusal(EXIT_USAGE, "%s: missing argument %s" % (name, pname))
            continue
        value = data[pname]
        fault = argument_problem(annotation, value, pname)  # a wire type (Manifest, List[QueueEntry], ...)
        if fault:
            raise Refusal(EXIT_USAGE, "%s: %s" % (name, fault))
        types = _TYPES.get(annotation)
        fault = plain_problem(types, value, "argument " + pname) if types else None  # true is no int, NaN no number
        if fault:
            raise Refusal(EXIT_USAGE, "%s: %s" % (name, fault))
        kwargs[pname] = value
    return fn, kwargs
