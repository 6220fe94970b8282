"""The checks a key's value goes through: text in, the key's typed value out, or `Invalid("expected ...")`.

Each key of the KEYS table (keys.py) names its check; the shared kinds live here as small functions, and
the few keys with rules of their own get theirs from a factory here (`words_among`, `words_matching`...).
A check's return annotation is the type of the key's `Settings` attribute (a unit test holds them equal).
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from wfops.agent.states import ALL_GPUS

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
PATTERN_SEPARATOR = ";;"

_HOST_RE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")


class Invalid(ValueError):
    """A value the key refuses; `expected` completes "config: KEY='v' is not valid: expected ..."."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def is_gpus_request(text: str) -> bool:
    """A run's GPU request (RUN_GPUS, a CSV `gpus` cell): `all` or a whole number from 1 to 9999."""
    return text == ALL_GPUS or bool(re.fullmatch(r"[1-9]\d{0,3}", text))


# ---------------------------------------------------------------- text

def line(value: str) -> str:
    if "\n" in value:
        raise Invalid("a single line")
    return value


def leaves(path: str) -> bool:
    """Whether a path meant to be relative leads out of the folder it is relative to: absolute, or a `..` part
    (TRAIN_WORKDIR in OPS_REMOTE_REPO, DATA_LINK_DIR in TRAIN_WORKDIR)."""
    return path.startswith("/") or ".." in path.split("/")


def inside_repo(value: str) -> str:
    """TRAIN_WORKDIR: a folder of the checkout, which checkout writes in (the data link) and runs start in."""
    if "\n" in value or leaves(value):
        raise Invalid("a path inside the checkout, relative to OPS_REMOTE_REPO (no leading '/', no '..' part), on "
                      "one line")
    return value


def command_prefix(value: str) -> str:
    """A command prefix split into argv words like a shell line, never run by a shell (TRAIN_SCRIPT)."""
    from wfops.agent.argv import script_words

    try:
        script_words(value)
    except ValueError as exc:
        raise Invalid(f"a script and its fixed arguments as shell words ({exc})") from None
    if "\n" in value:  # a path of the pod's own: relative to TRAIN_WORKDIR, or absolute (a script outside it)
        raise Invalid("a script relative to TRAIN_WORKDIR or absolute (or -m module), with its fixed arguments, "
                      "on one line")
    return value


def text(value: str) -> str:
    """Any text, newlines too (a shell command run on the pod)."""
    return value


def boolean(value: str) -> bool:
    low = value.strip().lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise Invalid("a boolean: 1/true/yes/on or 0/false/no/off")


def _whole(value: str, optional: bool) -> int | None:
    v = value.strip()
    if v == "" and optional:
        return None
    if re.fullmatch(r"\d{1,12}", v):
        return int(v)
    raise Invalid("a whole number >= 0" + (" (or empty)" if optional else ""))


def whole(value: str) -> int:
    got = _whole(value, optional=False)
    assert got is not None
    return got


def seconds_at_least_one(value: str) -> int:
    """A wait that reaches a socket timeout (SSH_CONNECT_TIMEOUT): 0 there is no wait at all (a non-blocking
    socket: every connect fails 'Operation now in progress'), not 'no limit' as elsewhere."""
    v = value.strip()
    if re.fullmatch(r"\d{1,12}", v) and int(v) >= 1:
        return int(v)
    raise Invalid("a whole number of seconds >= 1")


def optional_whole(value: str) -> int | None:
    return _whole(value, optional=True)


def port(value: str) -> int:
    number = whole(value)
    if not 1024 <= number <= 65000:
        raise Invalid("a port from 1024 to 65000 (each running torchrun takes the next free one)")
    return number


def gpus(value: str) -> str:
    v = value.strip()
    if is_gpus_request(v):
        return v
    raise Invalid("all, or a whole number >= 1")


def choice(*options: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value in options:
            return value
        raise Invalid("one of " + ", ".join(options))

    check.__qualname__ = check.__name__ = "choice(" + ", ".join(options) + ")"
    return check


# ---------------------------------------------------------------- paths and names

def pod_path(value: str) -> str:
    """An absolute path on the pod, or ~/..."""
    if "\n" in value or not (value.startswith("/") or value == "~" or value.startswith("~/")):
        raise Invalid("an absolute path on the pod (or ~/...)")
    return value


def optional_pod_path(value: str) -> str:
    """A path on the pod, or empty: none (BOOTSTRAP_SCRIPT=) or a derived default (WF_STATE_FILE=)."""
    return value if value == "" else pod_path(value)


def local_path(value: str) -> str:
    if "\n" in value:
        raise Invalid("a path on this machine")
    return value


def _host_ok(value: str) -> bool:
    """`local`, an ssh_config alias or user@host[:port] with a port from 1 to 65535."""
    m = _HOST_RE.match(value)
    port_text = value.rpartition(":")[2] if m and not value.endswith("]") and ":" in value.split("]")[-1] else ""
    return value == "local" or (m is not None and (not port_text or 1 <= int(port_text) <= 65535))


def host(value: str) -> str:
    if value == "" or _host_ok(value):
        return value
    raise Invalid("`local`, an ssh_config alias, or user@host[:port] (a port from 1 to 65535)")


def session(value: str) -> str:
    if _SESSION_RE.match(value):
        return value
    raise Invalid("letters, digits, '_' or '-' (a tmux name)")


def optional_session(value: str) -> str:
    return value if value == "" else session(value)


def sha(value: str) -> str:
    if value == "" or _SHA_RE.match(value):
        return value.lower()
    raise Invalid("7 to 40 hex digits of a git commit")


def pr(value: str) -> str:
    if value == "" or re.fullmatch(r"[1-9]\d{0,8}", value):
        return value
    raise Invalid("a pull request number")


# ---------------------------------------------------------------- lists

def _entries(value: str) -> tuple[str, ...]:
    """Comma-separated entries, none twice (LIUM_TARGETS / OPS_HOSTS)."""
    entries = tuple(e.strip() for e in value.split(",") if e.strip())
    twice = sorted({e for e in entries if entries.count(e) > 1})
    if twice:
        raise Invalid(f"each pod once ({twice[0]} is listed twice)")
    return entries


def hosts(value: str) -> tuple[str, ...]:
    """OPS_HOSTS: comma-separated, each valid as OPS_DEFAULT_HOST is."""
    entries = tuple(e.strip() for e in value.split(",") if e.strip())
    bad = [e for e in entries if not _host_ok(e)]
    if bad:
        raise Invalid(f"comma-separated hosts, each `local`, an ssh_config alias or user@host[:port] with a port "
                      f"from 1 to 65535 ({bad[0]!r})")
    return _entries(value)


def lium_names(value: str) -> tuple[str, ...]:
    """LIUM_TARGETS: comma-separated, each a name, UUID or huid (nothing a shell would read)."""
    entries = tuple(e.strip() for e in value.split(",") if e.strip())
    if any(c.isspace() or c in "'\"$`;" for e in entries for c in e):
        raise Invalid("comma-separated Lium pod names, UUIDs or huids")
    return _entries(value)


def words(value: str) -> tuple[str, ...]:
    return tuple(value.split())


def words_among(allowed: Iterable[str], expected: str) -> Callable[[str], tuple[str, ...]]:
    """Space-separated words, each one of `allowed`; else "expected <expected> <allowed...>"."""
    allowed = tuple(allowed)

    def check(value: str) -> tuple[str, ...]:
        got = words(value)
        if any(w not in allowed for w in got):
            raise Invalid(f"{expected} " + " ".join(allowed))
        return got

    return check


def words_matching(test: Callable[[str], bool], expected: str) -> Callable[[str], tuple[str, ...]]:
    """Space-separated words, each passing `test`; else "expected <expected>"."""
    def check(value: str) -> tuple[str, ...]:
        got = words(value)
        if not all(test(w) for w in got):
            raise Invalid(expected)
        return got

    return check


def patterns(value: str) -> tuple[str, ...]:
    """METRIC_PATTERNS: regexes separated by ';;', each with a named group other than `step` (a metric)."""
    found = tuple(p.strip() for p in value.split(PATTERN_SEPARATOR) if p.strip())
    for pattern in found:
        try:
            groups = re.compile(pattern).groupindex
        except re.error as exc:
            raise Invalid(f"regular expressions separated by ' ;; ' ({pattern!r}: {exc})") from None
        if not set(groups) - {"step"}:
            raise Invalid(f"regexes with a named group per metric, e.g. (?P<loss>[\\d.]+) ({pattern!r} has none)")
    return found
