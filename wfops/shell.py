"""Shell quoting for values that enter rendered scripts. Pure.

Every value that reaches a shell goes through `q` (or `qpath` for pod paths, which keeps a leading
`~/` meaning the pod user's home). Nothing else builds command lines from strings.
"""

from __future__ import annotations

import shlex


def q(value: object) -> str:
    """Quote one value as a single shell word."""
    return shlex.quote(str(value))


def qpath(value: object) -> str:
    """Quote a pod path; a leading `~` or `~/` becomes "$HOME" so it expands on the pod, not here."""
    text = str(value)
    if text == "~":
        return '"$HOME"'
    if text.startswith("~/"):
        rest = text[2:]
        return '"$HOME"/' + shlex.quote(rest) if rest else '"$HOME"/'
    return shlex.quote(text)
