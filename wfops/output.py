"""Tables and JSON for the user. Pure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; None shows as '-'."""
    cells = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def pairs(items: Sequence[tuple[str, object]]) -> str:
    """`key  value` lines with the keys aligned."""
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k.ljust(width)}  {'-' if v is None or v == '' else v}" for k, v in items)


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


def to_json(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
