"""The agent's request as it travels after the script on the same stdin (light imports: the cached fast path of a
repeated run.fetch, wfops.leanfetch, builds its request with it too)."""

from __future__ import annotations

import json

from wfops.agent import wire


def json_line(value: object) -> str:
    """A value as one line of JSON."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def request_line(request: object) -> str:
    """The agent's request as it travels after the script on the same stdin: one line, the JSON behind a guard
    that makes a shell reading it as commands fail at once (wfops.agent.wire.REQUEST_GUARD)."""
    return wire.REQUEST_GUARD + json_line(request) + "\n"
