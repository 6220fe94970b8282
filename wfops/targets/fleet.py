"""A fleet: several pods named by LIUM_TARGETS / OPS_HOSTS, and running one command on all of them at once.

The members are wfops.targets.resolve's (a named Member: provider and name, no copied settings); a fleet command is
the single-pod command run once per member, each in its own thread (where resolve.picked(member) makes it the
command's pod) with its own connection.

`run_each` is the fan-out: each member's output is captured (stdout) or prefixed with `[pod] ` (stderr, as it
arrives), and a failing member never hides the others' results. Which commands fan out, and how their output is
joined, is the task layer's business (wfops.tasks._base `fleet=`).
"""

from __future__ import annotations

import contextvars
import io
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from wfops.errors import WfopsError
from wfops.output import visible
from wfops.targets.resolve import POD_ENV, Member, is_fleet, members, names, pick

# The member model lives in wfops.targets.resolve (named here for the fan-out's callers).
__all__ = ["POD_ENV", "Member", "Outcome", "failures_line", "is_fleet", "members", "names", "pick", "run_each",
           "worst"]


# ------------------------------------------------------------------ output of parallel members

_where: threading.local = threading.local()  # .out (a StringIO) and .prefix, in a member's thread


class _Routed(io.TextIOBase):
    """sys.stdout or sys.stderr while members run: a member thread's writes go to its buffer (stdout) or out
    at once, line by line, with its `[pod] ` prefix (stderr); other threads write through."""

    def __init__(self, real: Any, capture: bool) -> None:
        self.real, self.capture = real, capture
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        prefix = getattr(_where, "prefix", None)
        if prefix is None:
            return int(self.real.write(text))
        if self.capture:
            return int(_where.out.write(text))
        pending = getattr(_where, "err", "") + text
        *lines, _where.err = pending.split("\n")
        if lines:
            with self.lock:
                self.real.write("".join(visible(f"{prefix}{line}") + "\n" for line in lines))
                self.real.flush()
        return len(text)

    def flush(self) -> None:
        self.real.flush()

    def isatty(self) -> bool:
        return False  # no progress bars redrawn in place from several threads

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.real, "encoding", "utf-8")


_routing_lock = threading.Lock()
_routing_depth = 0


@contextmanager
def _routed() -> Iterator[None]:
    global _routing_depth
    with _routing_lock:
        _routing_depth += 1
        if _routing_depth == 1:
            sys.stdout, sys.stderr = _Routed(sys.stdout, True), _Routed(sys.stderr, False)
    try:
        yield
    finally:
        with _routing_lock:
            _routing_depth -= 1
            if _routing_depth == 0:
                sys.stdout, sys.stderr = sys.stdout.real, sys.stderr.real  # type: ignore[union-attr]


@dataclass
class Outcome:
    member: Member
    value: Any = None
    error: WfopsError | None = None
    out: str = ""

    @property
    def code(self) -> int:
        return self.error.code if self.error is not None else 0


def run_each(pods: Sequence[Member], work: Callable[[Member], Any], prefix: bool = True) -> list[Outcome]:
    """`work(member)` for every member at once, each in its own thread; outcomes in the members' order.
    A WfopsError ends that member only; anything else is re-raised here once all have ended."""
    outcomes = [Outcome(m) for m in pods]
    crashed: list[BaseException] = []

    def one(o: Outcome) -> None:
        _where.out, _where.err = io.StringIO(), ""
        _where.prefix = f"[{o.member.name}] " if prefix else ""
        try:
            o.value = work(o.member)
        except WfopsError as exc:
            o.error = exc
        except BaseException as exc:  # a bug: surfaces in the main thread
            crashed.append(exc)
        finally:
            o.out = _where.out.getvalue()
            if _where.err:
                sys.stderr.write("\n")
            _where.prefix = None

    with _routed():
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(one, o), daemon=True)
                   for o in outcomes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if crashed:
        raise crashed[0]
    return outcomes


def worst(outcomes: Sequence[Outcome]) -> int:
    """The fleet command's exit code: the highest of its pods' (0 when every pod succeeded)."""
    return max((o.code for o in outcomes), default=0)


def failures_line(outcomes: Sequence[Outcome]) -> str:
    bad = [o for o in outcomes if o.error is not None]
    return (f"{len(bad)} of {len(outcomes)} pod(s) failed: "
            + "; ".join(f"{o.member.name}: {o.error.message}" for o in bad if o.error is not None))
