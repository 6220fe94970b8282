"""Tables and JSON for the user. Pure.

Text that came from the pod (log tails, notes, reasons, error lines) can hold terminal control sequences;
`visible` is the one function that makes them visible instead of letting the terminal execute them, and every
human output goes through it: `table` and `pairs` per cell, `emit` on the whole text, the error boundary on its
one line (`error_line`), and the remote layer on the pod's stderr lines. JSON output is exact JSON
(json.dumps escapes control characters itself).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence

# C0 controls but tab and newline, DEL, and C1 controls (a lone 0x9b is a CSI on some terminals)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_LINE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def visible(text: object, one_line: bool = False) -> str:
    """`text` safe for a terminal: control characters are shown as `\\xNN` (ESC as `\\x1b`, BEL as `\\x07`), never
    sent raw. Tab and newline stay, unless `one_line` (a table cell), where a newline shows as `\\x0a` too."""
    pattern = _CONTROL_OR_LINE if one_line else _CONTROL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _shown(value: object) -> str:
    """A cell's text before escaping: None and "" show as '-'."""
    return "-" if value is None or value == "" else str(value)


def _cell(value: object) -> str:
    return visible(_shown(value), one_line=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; None shows as '-'; control characters are made visible."""
    cells = [[_shown(v) for v in row] for row in rows]
    if _CONTROL_OR_LINE.search(" ".join(" ".join(row) for row in cells)):  # else each cell is as _cell shows it
        cells = [[visible(v, one_line=True) for v in row] for row in cells]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            if len(v) > widths[i]:
                widths[i] = len(v)
    lines = ["  ".join([h.ljust(w) for h, w in zip(headers, widths, strict=True)]).rstrip()]
    lines += ["  ".join([v.ljust(w) for v, w in zip(row, widths, strict=False)]).rstrip() for row in cells]
    return "\n".join(lines)


def pairs(items: Sequence[tuple[str, object]]) -> str:
    """`key  value` lines with the keys aligned; control characters in values are made visible."""
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in items)


def duration(secs: object) -> str:
    if secs is None or secs == "":
        return "-"
    s = float(secs)  # type: ignore[arg-type]
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


QUIET_SHOWN_AFTER = 10.0  # seconds of silence before "quiet for" is worth a word


def quiet_note(secs: object) -> str:
    """`quiet for 12m` for a running run or task whose last output is that old; "" when recent or unknown."""
    if secs is None or secs == "" or float(secs) < QUIET_SHOWN_AFTER:  # type: ignore[arg-type]
        return ""
    s = int(float(secs))  # type: ignore[arg-type]
    if s < 60:
        return f"quiet for {s}s"
    if s < 3600:
        return f"quiet for {s // 60}m"
    return f"quiet for {s // 3600}h{s % 3600 // 60:02d}m"


def to_json(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def emit(data: object, as_json: bool, human: Callable[[], str]) -> None:
    """Print JSON exactly, or the human text with control characters made visible (see `visible`)."""
    print(to_json(data) if as_json else visible(human()))


ERROR_LINE = re.compile(r"^@wfops-error (\d+) (.*)$")  # a pod's stderr line that is the command's error
META_LINE = re.compile(r"^@wfops-([a-z]+) (.*)$")  # a pod's machine-readable side information (`@wfops-size N`)


class Redactor:
    """Replaces secret values with asterisks in text shown to the user."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        self.secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "********")
            escaped = json.dumps(secret)[1:-1]  # the same secret inside a JSON string
            if escaped != secret:
                text = text.replace(escaped, "********")
        return text


def error_line(message: str) -> str:
    """The one line an error ends a command with (the task boundary, wfops.tasks._base.wftask, and wfops.lean)."""
    return f"wfops: {visible(message)}"
