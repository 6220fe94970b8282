"""Typed errors and the exit-code table. Pure: no fabric, no invoke.

Every failure a user can cause is a WfopsError subclass carrying one line of text and an exit code.
The task layer (wfops.tasks._base) is the one place that turns them into `invoke.Exit`.
"""

from __future__ import annotations

# The documented exit-code table (README "Exit codes"), defined once in the pod agent's vocabulary.
from wfops.agent.states import (
    EXIT_CONFLICT,
    EXIT_CONNECT,
    EXIT_FAILED,
    EXIT_LIUM,
    EXIT_LOST,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REMOTE,
    EXIT_STATE,
    EXIT_TIMED_OUT,
    EXIT_USAGE,
    EXIT_WAIT_TIMEOUT,
)

__all__ = [  # the exit codes are re-exported from the agent's vocabulary: the client imports them from here
    "EXIT_CODES", "EXIT_CONFLICT", "EXIT_CONNECT", "EXIT_FAILED", "EXIT_LIUM", "EXIT_LOST", "EXIT_NOT_FOUND",
    "EXIT_OK", "EXIT_REMOTE", "EXIT_STATE", "EXIT_TIMED_OUT", "EXIT_USAGE", "EXIT_WAIT_TIMEOUT",
    "ConfigError", "ConflictError", "ConnectError", "LiumError", "NotFoundError", "RemoteError", "UsageError",
    "WfopsError",
]

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILED: "a task or run failed (or an unexpected internal error)",
    EXIT_USAGE: "bad config, argument or CSV, stdout closed or the directory removed; nothing was changed",
    EXIT_STATE: "the workflow state does not allow this command",
    EXIT_CONNECT: "cannot connect: unreachable host, authentication or host key",
    EXIT_NOT_FOUND: "no such task, run, pod or file",
    EXIT_REMOTE: "a step on the pod failed",
    EXIT_TIMED_OUT: "a task or run timed out",
    EXIT_LOST: "a task or run was lost (its runner died)",
    EXIT_WAIT_TIMEOUT: "gave up waiting; the task is still running",
    EXIT_CONFLICT: "conflict: exists already, already running, or the pod is busy",
    EXIT_LIUM: "the lium CLI or the Lium API failed",
}


class WfopsError(Exception):
    """An expected failure: one line for the user and an exit code."""

    code = EXIT_FAILED

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(WfopsError):
    code = EXIT_USAGE


class UsageError(WfopsError):
    code = EXIT_USAGE


class ConnectError(WfopsError):
    code = EXIT_CONNECT


class Unreached(ConnectError):
    """A warm keeper could not reach the pod for a command's script (its connection died, a new one failed):
    nothing reached the pod, as when a cold connect fails."""


class NotFoundError(WfopsError):
    code = EXIT_NOT_FOUND


class RemoteError(WfopsError):
    code = EXIT_REMOTE


class ConflictError(WfopsError):
    code = EXIT_CONFLICT


class LiumError(WfopsError):
    code = EXIT_LIUM


class Fallback(Exception):
    """Not an error a user sees: the lean entry (wfops.lean) stops before anything reached the pod, and the full
    invoke path runs the command (and says whatever there is to say)."""


def env_seconds(name: str, default: float) -> float:
    """A tuning knob of the environment in seconds (> 0): `default` when unset or blank; ConfigError otherwise."""
    import os

    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"{name}={raw!r} is not valid: expected a number of seconds > 0")
    return value
