"""The cached fast path of the lean entry (issue 24): a warm read-only command whose every input is as it was.

wfops.lean makes a command's settings, target and request (the rendered script + the agent request) and sends
them through the keeper; all of that is the same as long as its inputs are. So after a lean command made them,
`save` keeps them (`$XDG_CACHE_HOME/wfops/lean/`, 0600 in a 0700 folder: the request carries the config's
pod env, as the config file itself does), keyed by everything that determines them: the command line, the
working directory, the whole environment, the config file find_config chose (which files it looked at, where it
points, its bytes, size and mtime), the interpreter and the wfops code (every file of the package: path, size,
mtime). `try_cached` compares that key with the one of this process; a hit sends the kept bytes through the
keeper and shows the answer with the functions the lean path uses (wfops.views, wfops.sweeps.status,
wfops.output), importing neither the settings table nor the transport (stdlib json/socket/struct/select, and
wfops.output). Any difference is a miss: the lean path runs as before and refreshes the entry.

Before the script left (no keeper, a keeper that refuses, is stale, or says nothing for as long as the full path
waits: then it is ended): return, and the lean path runs the command (and deals with the keeper in its own words).
The keeper's error before the start (the pod not reached) is the command's, as on the full path. After it left: the
command's answer, or its error as the task boundary words it, as on the lean path
(tests/integration/test_lean_cache.py and test_lean_unreached.py compare them).
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # built in: signal.py would import enum
import json
import os
import sys

from wfops.agent.wire import TYPE_CHECKING
from wfops.interrupt import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_TERMINATED, InTask
from wfops.transport import keeperdir
from wfops.transport.leanwire import Before, Exchange, Failed

if TYPE_CHECKING:  # typing is not imported at run time: the lean fast path (wfops.leancache) stays light
    from typing import Any

OFF_ENV = "WFOPS_LEAN"  # "0": always the full invoke path (wfops.lean)
CACHE_OFF_ENV = "WFOPS_LEAN_CACHE"  # "0": no cached fast path (the lean path makes everything afresh)
VERBOSE_ENV = "WFOPS_VERBOSE"  # set: the lean path (its exec line counts the bytes it sent and received)
COMMANDS = ("fsm.status", "task.status", "task.list", "sweep.status", "sweep.list")  # wfops.lean.LEAN's names
FETCH = "run.fetch"  # kept too: a repeated fetch asks the pod for its plan alone (wfops.leanfetch)
KEPT = (*COMMANDS, FETCH)
INVOKE_FILES = ("/etc/invoke", "~/.invoke")
INVOKE_SUFFIXES = (".yaml", ".yml", ".json", ".py")
CONFIG_ENV_VAR = "WORKFLOW_CONFIG"  # wfops.settings.load's (tests/unit/test_lean_cache.py checks both agree)
DEFAULT_LOCATIONS = ("workflow.env", "infra_scripts/workflow.env")
VERSION = 5  # 3: entries carry the read the pod's kept agent may answer ("serve"); 4: with its key; 5: start_secs
KEEP = 64  # entries kept at most
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def invoke_configured(environ: os._Environ[str] | dict[str, str]) -> bool:
    """An invoke config file or INVOKE_* variable: it may set `wfops.config` (wfops.tasks._base.settings_for)."""
    if any(name.startswith("INVOKE_") for name in environ):
        return True
    return any(os.path.exists(os.path.expanduser(base + suffix)) for base in INVOKE_FILES for suffix in INVOKE_SUFFIXES)


def config_probes(explicit: str | None, cwd: str, environ: os._Environ[str] | dict[str, str]) -> list[list[Any]]:
    """The files wfops.settings.load.find_config looks at, in its order, each [real path, is a file], up to the
    one it takes (the last); a cached entry is used only where every probe still finds the same."""
    probes: list[list[Any]] = []
    for candidate in (explicit, environ.get(CONFIG_ENV_VAR)):
        if candidate:
            path = os.path.realpath(os.path.join(cwd, os.path.expanduser(candidate)))
            return [[path, os.path.isfile(path)]]
    for rel in DEFAULT_LOCATIONS:
        path = os.path.join(cwd, rel)
        probes.append([os.path.realpath(path), os.path.isfile(path)])
        if probes[-1][1]:
            break
    return probes


def _code_stamp() -> list[Any]:
    """The interpreter, and every file of the wfops package and of a checkout's remote_templates: its path, size
    and mtime (an edit, an upgrade)."""
    files: list[Any] = [sys.version, sys.executable]
    folders = [_PACKAGE]
    checkout_templates = os.path.join(os.path.dirname(_PACKAGE), "remote_templates")  # an editable install's
    if os.path.isdir(checkout_templates):  # (wfops.transport.render.templates_dir looks there too)
        folders.append(checkout_templates)
    while folders:
        with os.scandir(folders.pop()) as it:
            for e in sorted(it, key=lambda e: e.name):
                if e.is_dir(follow_symlinks=False):
                    if e.name != "__pycache__":
                        folders.append(e.path)
                    continue
                st = e.stat()
                files += [e.path, st.st_size, st.st_mtime_ns]
    return files


def _config_stamp(probes: list[list[Any]]) -> list[Any] | None:
    return _file_stamp(probes[-1][0]) if probes and probes[-1][1] else None


def _file_stamp(path: str) -> list[Any] | None:
    """[size, mtime, bytes] of a file; None: none there (or unreadable)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, data.decode("utf-8", "surrogateescape")]


def key(argv: list[str], probes: list[list[Any]]) -> dict[str, Any]:
    """Everything the lean path's request and view depend on, besides the pod."""
    ssh_config = os.path.join(os.path.expanduser("~"), ".ssh", "config")  # in the keeper's fingerprint
    # the environment by its digest: every variable counts, none is written down (a token in the shell's env)
    env = _digest(json.dumps(sorted(os.environ.items())).encode("utf-8", "surrogateescape"))
    return {"version": VERSION, "argv": argv, "cwd": os.getcwd(), "env": env, "probes": probes,
            "config": _config_stamp(probes), "ssh_config": _file_stamp(ssh_config), "code": _code_stamp(),
            "keepers": keeperdir.keeper_dir()}  # XDG_RUNTIME_DIR made or removed since: another keeper dir


def _digest(data: bytes) -> str:
    try:  # the builtin module hashlib wraps: hashlib itself costs this path ~2-20 ms to import
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - an interpreter without it
        from hashlib import blake2b
    return blake2b(data, digest_size=32).hexdigest()


def _entry_path(argv: list[str]) -> str:
    import zlib

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    # one entry per command line, directory and environment: commands that alternate configs (WORKFLOW_CONFIG)
    # keep one each
    name = f"{zlib.crc32(json.dumps([argv, os.getcwd(), sorted(os.environ.items())]).encode()):08x}.json"
    return os.path.join(base, "wfops", "lean", name)


def save(argv: list[str], stamp: dict[str, Any], entry: dict[str, Any]) -> None:
    """Keep `entry` (sock, fp, persist, script, secrets, view) under `stamp`, the key of this command's inputs as
    they were before it read them (an edit meanwhile is a miss next time, not a stale answer for ever); a cache
    that cannot be written, or a folder that is not ours alone, only costs the next command the lean path."""
    path = _entry_path(argv)
    tmp = f"{path}.{os.getpid()}.{os.urandom(6).hex()}"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        if not _private(os.path.dirname(path)):
            return
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            json.dump({"key": stamp, "entry": entry}, fh)
        os.replace(tmp, path)
        _prune(os.path.dirname(path))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _prune(folder: str) -> None:
    """At most KEEP entries (~15 KB each): the least recently kept go (one per command line and directory)."""
    entries = [e for e in os.scandir(folder) if e.name.endswith(".json")]
    if len(entries) > KEEP:
        for old in sorted(entries, key=lambda e: e.stat().st_mtime_ns)[:len(entries) - KEEP]:
            os.unlink(old.path)


def _private(path: str, mode: int = 0o700) -> bool:
    """`path` is ours and nobody else's (its mode is `mode`): a folder or entry others could write is not used."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and (st.st_mode & 0o777) == mode


def lookup(argv: list[str]) -> dict[str, Any] | None:
    """The entry kept for exactly this command line, directory, environment, config and code; None: a miss."""
    path = _entry_path(argv)
    if not (_private(os.path.dirname(path)) and _private(path, 0o600)):
        return None
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            doc = json.load(fh)
        probes = doc["key"]["probes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if config_probes(_explicit(argv), os.getcwd(), os.environ) != probes or doc["key"] != key(argv, probes):
        return None
    entry: dict[str, Any] = doc["entry"]
    return entry


def _explicit(argv: list[str]) -> str | None:
    """The --config / -c value of a command line wfops.lean.parse took (it refuses a repeated one)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.partition("=")[2]
        if arg in ("--config", "-c") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def try_cached(argv: list[str]) -> None:
    """Run a command whose inputs are all as when its entry was kept, and end the process; else return."""
    if not argv or argv[0] not in KEPT or os.environ.get(OFF_ENV) == "0" \
            or os.environ.get(CACHE_OFF_ENV) == "0" or os.environ.get(VERBOSE_ENV, "").strip() \
            or invoke_configured(os.environ):
        return
    try:
        entry = lookup(argv)
    except FileNotFoundError:  # the working directory is gone (a task's --help: wfops.startup let it through)
        return
    if entry is None:
        return
    try:
        code = _run(entry)
    except Before:
        return
    end(code)


def _run(entry: dict[str, Any]) -> int:
    """The kept command: its answer (or its error) and exit code; Before: nothing was sent, the lean path runs it."""
    from wfops.output import error_line

    previous = signal.signal(signal.SIGTERM, terminated)  # until the process ends (the answer printed too)
    try:
        return _fetch(entry) if entry["command"] == FETCH else _read(entry)
    except Before:  # the lean path runs the command, with the handler as it was
        signal.signal(signal.SIGTERM, previous)
        raise
    except Failed as exc:
        print(error_line(exc.message), file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("wfops: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _read(entry: dict[str, Any]) -> int:
    from wfops.output import Redactor

    with InTask():
        data = Exchange(entry, Redactor(entry["secrets"])).answer(entry["command"])
    show(entry, data)
    return 0


def _fetch(entry: dict[str, Any]) -> int:
    """A repeated run.fetch (wfops.leanfetch); nothing is staged on this path, so SIGTERM ends it as it ends a read."""
    if not entry["fetch"]:  # the last fetch copied something: this one is likely to as well (the lean path's)
        raise Before()
    from wfops import leanfetch

    with InTask():
        return leanfetch.run(entry)


def terminated(signum: int, frame: Any) -> None:
    """SIGTERM during a lean command: the boundary's line and exit code, at once."""
    os.write(2, b"wfops: terminated (SIGTERM)\n")
    os._exit(EXIT_TERMINATED)


def end(code: int) -> None:
    """Flush and exit without the interpreter's teardown (the lean paths' end); a reader gone (`| head`) is the
    shell's quiet 141."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        from wfops.quietpipe import exit_quietly_on_broken_pipe

        exit_quietly_on_broken_pipe()
        code = EXIT_BROKEN_PIPE
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


def show(view: dict[str, Any], data: dict[str, Any]) -> None:
    """A read-only command's answer as its task shows it; `view`: the command, its options, METRIC_COLUMNS and
    LOCAL_ARTIFACTS_DIR (what a kept entry holds; wfops.lean passes the same from its settings)."""
    from wfops.output import emit

    command, values = view["command"], view["values"]
    as_json = bool(values["json"])
    if command == "sweep.status":
        from wfops.sweeps.history import add_history
        from wfops.sweeps.status import status_text

        add_history(data, view["artifacts_dir"])
        emit(data, as_json, lambda: status_text(data, view["metric_columns"], values["sort"]))
        return
    from wfops import views

    emit(data, as_json, lambda: views.TEXT[command](data))
