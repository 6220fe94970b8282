"""Run one piece of work on several pods at once: `run_each(pods, work)` -> a GroupResult, one Outcome per pod.

    from wfops.targets import resolve
    result = run_each(resolve.pods(settings), lambda pod, log: read(settings, pod, log))
    for o in result:              # in the pods' order, whatever order they ended in
        o.member.name, o.value, o.error, o.code
    result.worst                  # the exit code of the whole: the worst pod's (0: every pod succeeded)
    result.failures_line()        # "1 of 3 pod(s) failed: b: connection refused"

Like fabric's `ThreadingGroup` -> `GroupResult`: each pod's work runs in its own thread and ends with a value
or a WfopsError (that pod failed; the others go on); any other exception is a bug and is raised here once every
pod has ended. Nothing global is swapped: no `sys.stdout` / `sys.stderr` replacement, no context variable. A
pod's work gets its settings and its pod as arguments, and a `log` (a PodLog) for progress: each line goes to
stderr at once as `[pod] line`, control characters made visible. Whatever else prints while the work runs
(a library, a warning) goes where it always goes. How the values are shown is the caller's business
(wfops.tasks._base: one section per pod, or one JSON document).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TextIO, TypeVar

from wfops.errors import WfopsError
from wfops.output import to_json, visible

Log = Callable[[str], None]
"""Where a pod's work sends a progress line (text without its newline; several lines are fine)."""


class Named(Protocol):
    """A pod as the fan-out needs it: a name for the sections and the `[pod] ` prefix."""

    @property
    def name(self) -> str: ...


P = TypeVar("P", bound=Named)
T = TypeVar("T")


def to_stderr(text: str) -> None:
    """A one-pod command's progress: the line on stderr as it is, at once."""
    print(text, file=sys.stderr, flush=True)


class PodLog:
    """A fleet pod's progress: every line as `[pod] line` on stderr (or `stream`) at once, control characters
    made visible; lines of different pods never mix within a line."""

    _lock = threading.Lock()  # one for every pod: a line is written whole

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name = name
        self.stream = stream

    def __call__(self, text: str) -> None:
        lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
        out = self.stream if self.stream is not None else sys.stderr  # looked up now: a test may replace it
        with self._lock:
            out.write("".join(visible(f"[{self.name}] {line}") + "\n" for line in lines))
            out.flush()


@dataclass
class Outcome(Generic[P, T]):
    """One pod's end: its value, or the WfopsError that ended it (a caller may set both: data and a verdict)."""

    member: P
    value: T | None = None
    error: WfopsError | None = None

    @property
    def code(self) -> int:
        return self.error.code if self.error is not None else 0


def worst(outcomes: Sequence[Outcome[P, T]]) -> int:
    """The exit code of the whole: the highest of its pods' (0 when every pod succeeded)."""
    return max((o.code for o in outcomes), default=0)


def failures_line(outcomes: Sequence[Outcome[P, T]]) -> str:
    """`2 of 3 pod(s) failed: a: why; c: why`."""
    bad = [(o.member.name, o.error.message) for o in outcomes if o.error is not None]
    return f"{len(bad)} of {len(outcomes)} pod(s) failed: " + "; ".join(f"{n}: {why}" for n, why in bad)


class GroupResult(list[Outcome[P, T]]):
    """The outcomes of one fan-out, in the pods' order."""

    @property
    def worst(self) -> int:
        return worst(self)

    @property
    def failed(self) -> list[Outcome[P, T]]:
        return [o for o in self if o.error is not None]

    def failures_line(self) -> str:
        return failures_line(self)


def run_each(pods: Sequence[P], work: Callable[[P, Log], T], stream: TextIO | None = None) -> GroupResult[P, T]:
    """`work(pod, log)` for every pod at once, each in its own thread; the outcomes in the pods' order.
    A WfopsError ends that pod only; anything else is re-raised here once every pod has ended.
    `log` writes the pod's progress lines to `stream` (default: stderr) with its `[pod] ` prefix."""
    outcomes: GroupResult[P, T] = GroupResult(Outcome(p) for p in pods)
    crashed: list[BaseException] = []

    def one(o: Outcome[P, T]) -> None:
        try:
            o.value = work(o.member, PodLog(o.member.name, stream))
        except WfopsError as exc:
            o.error = exc
        except BaseException as exc:  # a bug: it surfaces in the calling thread
            crashed.append(exc)

    threads = [threading.Thread(target=one, args=(o,), daemon=True) for o in outcomes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if crashed:
        raise crashed[0]
    return outcomes


def show(outcomes: GroupResult[P, T], as_json: bool, text: Callable[[T], str], view: Callable[[T], Any]) -> None:
    """A fleet command's outcomes as it prints them (the task's and the lean entry's): one JSON document, or one
    section per pod (its text, then its failure); then the worst pod's exit, as a WfopsError naming the failures."""
    if as_json:
        print(to_json({"pods": [_pod_json(o, view) for o in outcomes]}))
    else:
        for o in outcomes:
            print(visible(f"== pod {o.member.name} =="))
            shown = text(o.value) if o.value is not None else ""
            if shown.strip():
                print(visible(shown.rstrip("\n")))
            if o.error is not None:
                print(visible(f"failed (exit {o.code}): {o.error.message}"))
    if outcomes.worst:
        raise WfopsError(outcomes.failures_line(), outcomes.worst)


def _pod_json(o: Outcome[P, T], view: Callable[[T], Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"pod": o.member.name, "ok": o.error is None, "exit_code": o.code}
    if o.value is not None:
        doc["data"] = view(o.value)
    if o.error is not None:
        doc["error"] = o.error.message
    return doc
