"""How the agent starts itself again (a task's runner, the sweep scheduler, a run's supervisor) and how it
opens tmux windows."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from .registry import Refusal
from .states import EXIT_REMOTE
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, List, Tuple

    from .states import Layout
    from .wire import Json

PACKAGE = __package__ or "wfops_agent"
# the directory to put on sys.path so that `import PACKAGE` finds this copy of the agent
HOME = os.path.dirname(os.path.abspath(__file__))
for _ in PACKAGE.split("."):
    HOME = os.path.dirname(HOME)


def call_for(package: str) -> str:
    """The `python3 -I -S -c` program that runs the agent installed as `package` in the directory argv[1]."""
    return "import sys; sys.path.insert(0, sys.argv.pop(1)); from %s.__main__ import main; main()" % package


CALL = call_for(PACKAGE)


def agent_argv(*args: str) -> List[Any]:
    """argv that runs this agent's command `args[0]` with the system python, isolated (-I -S)."""
    return [sys.executable, "-I", "-S", "-c", CALL, HOME] + list(args)


def shell_words(argv: List[Any]) -> str:
    """argv as one shell command line, each word quoted."""
    return " ".join(shlex.quote(w) for w in argv)


def write_argv_script(path: str, comment: str, argv: List[Any]) -> None:
    """A bash script that execs argv exactly."""
    from .store import write_bytes

    write_bytes(path, ("#!/usr/bin/env bash\n# %s\nexec %s\n" % (comment, shell_words(argv))).encode(), mode=0o755)


def tmux_window(pod: Layout, session: str, window: str, shell_command: str,
                new_session: bool = False) -> Tuple[int, str]:
    """Open a detached tmux window running `shell_command` (in `session`, made if missing); returns
    (pane pid, window id). A fresh session replaces an old one when new_session is set."""
    fmt = "#{pane_pid} #{window_id}"
    tries = [["new-session", "-d", "-P", "-F", fmt, "-s", session, "-n", window, shell_command]]
    if not new_session:
        window_cmd = ["new-window", "-d", "-P", "-F", fmt, "-t", "=%s:" % session, "-n", window, shell_command]
        tries = [window_cmd, tries[0], window_cmd]  # a racing command may create the session in between
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    err = ""
    for args in tries:
        try:
            p = subprocess.run(pod.tmux(*args), capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            raise Refusal(EXIT_REMOTE, "tmux cannot run: %s (is tmux installed? see bootstrap)" % exc) from None
        if p.returncode == 0 and p.stdout.split():
            pid, wid = p.stdout.split()[:2]
            return int(pid), wid
        err = (p.stderr or p.stdout).strip()
    raise Refusal(EXIT_REMOTE, "tmux could not open a window: %s" % err)


def tmux_kill_session(pod: Layout, session: str) -> None:
    subprocess.run(pod.tmux("kill-session", "-t", "=" + session), capture_output=True, stdin=subprocess.DEVNULL)


def tmux_has_session(pod: Layout, session: str) -> bool:
    try:
        return subprocess.run(pod.tmux("has-session", "-t", "=" + session), capture_output=True,
                              stdin=subprocess.DEVNULL).returncode == 0
    except OSError:
        return False


def record_runner(path: str, pid: int, belongs: Callable[[Json], bool] = lambda record: True,
                  **fields: Any) -> None:
    """After tmux started a runner: record its pane pid (and start time) in the JSON record at `path`, unless
    the runner recorded itself first; `fields` are recorded either way. Nothing when `belongs(record)` is
    false (the record is another's by now)."""
    from . import procs, store

    with store.locked(path):
        record = store.load(path) or {}
        if not belongs(record):
            return
        if not record.get("pid"):
            record.update(pid=pid, pid_start=procs.proc_start(pid))
        record.update(fields)
        store.write_json(path, record)


def env_value(env_path: str, key: str) -> str:
    """A variable as the pod env file sets it (the file is bash; bash reads it)."""
    if not env_path or not os.path.isfile(env_path):
        return os.environ.get(key, "")
    p = subprocess.run(["bash", "-c", 'set -a; . "$1" >/dev/null 2>&1; printf %%s "${%s-}"' % key, "wfops", env_path],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return p.stdout
