"""Shell quoting for values that enter rendered scripts. Pure.

Every value that reaches a shell goes through `q` (or `qpath` for pod paths, which keeps a leading
`~/` meaning the pod user's home). Nothing else builds command lines from strings.
"""

from __future__ import annotations

import re
import shlex

_POD_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_pod_name(value: str) -> bool:
    """A name that is safe as one directory on the pod (task ids, run ids): letters, digits, '.', '_', '-',
    starting with a letter or digit, up to 128, and no '..'."""
    return bool(_POD_NAME_RE.match(value)) and ".." not in value


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
