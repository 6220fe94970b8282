"""A fleet: several pods named by LIUM_TARGETS / OPS_HOSTS, and running one command on all of them at once.

A fleet member is the config with its singular target key set to one entry (LIUM_TARGET=pod-a, or
OPS_DEFAULT_HOST=user@host:port), so every single-pod code path works on a member unchanged: a fleet command is
the single-pod command run once per member, each in its own thread with its own connection.

`run_each` is the fan-out: each member's output is captured (stdout) or prefixed with `[pod] ` (stderr, as it
arrives), and a failing member never hides the others' results. Which commands fan out, and how their output is
joined, is the task layer's business (wfops.tasks._base `fleet=`).
"""

from __future__ import annotations

import contextvars
import io
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from wfops.errors import ConfigError, WfopsError
from wfops.output import visible
from wfops.settings.load import Settings

POD_ENV = "WF_POD"  # pick one member for a command: WF_POD=NAME inv run.logs r1
LIUM = "lium"
SSH = "ssh"


@dataclass(frozen=True)
class Member:
    name: str  # the entry as written in LIUM_TARGETS / OPS_HOSTS: the `pod` column
    kind: str  # lium | ssh
    settings: Settings


def is_fleet(settings: Settings) -> bool:
    return bool(settings.lium_targets or settings.ops_hosts)


def _member(settings: Settings, name: str, kind: str) -> Member:
    single = {"LIUM_TARGETS": "", "OPS_HOSTS": "", "LIUM_TARGET": name if kind == LIUM else "",
              "OPS_DEFAULT_HOST": name if kind == SSH else ""}
    return Member(name, kind, settings.override(single))


def members(settings: Settings) -> list[Member]:
    """The fleet's pods in config order (Lium pods first); [] when the config names one target."""
    out = [_member(settings, n, LIUM) for n in settings.lium_targets]
    out += [_member(settings, n, SSH) for n in settings.ops_hosts]
    both = sorted({m.name for m in out if [o.name for o in out].count(m.name) > 1})
    if both:  # one name, two pods: they would share a ledger entry, a `pod` column and WF_POD
        raise ConfigError(f"{both[0]!r} is in both LIUM_TARGETS and OPS_HOSTS: name each pod once")
    return out


def names(settings: Settings) -> list[str]:
    return [m.name for m in members(settings)]


def pick(settings: Settings, name: str) -> Member:
    """The member called `name` (WF_POD); a name the fleet lacks is a ConfigError that lists the fleet."""
    for m in members(settings):
        if m.name == name:
            return m
    known = ", ".join(names(settings)) or "none: the config names one target (LIUM_TARGET / OPS_DEFAULT_HOST)"
    raise ConfigError(f"{POD_ENV}={name!r} is not a pod of the fleet (fleet: {known})")


def one_pod_only(settings: Settings) -> ConfigError:
    """What a one-pod command says when the config names a fleet."""
    return ConfigError(f"the config names a fleet of {len(members(settings))} pods ({', '.join(names(settings))}) "
                       f"and this command works on one: choose it with {POD_ENV}=NAME (e.g. "
                       f"{POD_ENV}={names(settings)[0]} inv ...)")


def chosen_member(settings: Settings, environ=os.environ) -> Settings:
    """$WF_POD picks one member of a fleet; without it the settings stay as they are."""
    name = environ.get(POD_ENV, "").strip()
    if not name:
        return settings
    return pick(settings, name).settings


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
            return self.real.write(text)
        if self.capture:
            return _where.out.write(text)
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
                sys.stdout, sys.stderr = sys.stdout.real, sys.stderr.real  # type: ignore[attr-defined]


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
