"""`--watch [SECS]` of task.status and sweep.status: refresh over one connection until the thing watched ends.

Every refresh is one exec on the command's one session (the warm keeper's connection, or the command's own).
On a terminal the view is redrawn in place; otherwise (a pipe, a log file) a view is printed only when it
changed, so a watched sweep does not flood a log. `--json` prints one JSON document per refresh (JSON lines).
Ctrl-C stops watching (exit 130, as for any command).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from wfops.errors import UsageError
from wfops.output import visible

DEFAULT_SECS = 2.0
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen


def interval(value: object) -> float | None:
    """The --watch option: None (not watching), True (the default interval), or seconds > 0 as text."""
    if value is None or value is False or value == "":
        return None
    if value is True:
        return DEFAULT_SECS
    text = str(value).strip()
    try:
        secs = float(text)
    except ValueError:
        secs = 0.0
    if not 0 < secs <= 3600:
        raise UsageError(f"--watch={visible(text, one_line=True)!r} is not valid: expected seconds between "
                         "refreshes, > 0 and <= 3600")
    return secs


def watch(fetch: Callable[[], dict[str, Any]], render: Callable[[dict[str, Any]], str],
          done: Callable[[dict[str, Any]], bool], secs: float, as_json: bool = False,
          out: TextIO | None = None) -> dict[str, Any]:
    """Fetch and show until `done(data)`; returns the last data."""
    out = out or sys.stdout
    tty = out.isatty() and not as_json
    shown = None
    while True:
        data = fetch()
        text = json.dumps(data, sort_keys=True) if as_json else visible(render(data))
        finished = done(data)
        if tty:
            footer = "ended" if finished else f"refreshing every {secs:g}s; Ctrl-C stops watching"
            out.write(f"{CLEAR}{text}\n\n({time.strftime('%H:%M:%S')}: {footer})\n")
        elif text != shown:
            out.write(text + ("\n" if as_json else "\n\n"))
        out.flush()
        shown = text
        if finished:
            return data
        time.sleep(secs)
