"""The commands wfops prints as next steps ("watch: wfops sweep.status"), written so that they work when pasted
in the same shell, from the same directory: the program as the user ran it (`wfops` or `inv` when PATH finds
that very program, else its full path; `python -m wfops` as such), and `-c FILE` when the config in use is not
the one wfops finds by itself in this directory (./workflow.env, ./infra_scripts/workflow.env): a hint printed
under `--config pod.env` or WORKFLOW_CONFIG (which a script may have set, and the user's shell lacks) keeps
talking to the same pod.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from wfops.errors import WfopsError
from wfops.settings.load import Settings, find_config

_PROGRAMS = ("wfops", "inv", "invoke")


def program() -> str:
    """The program the user ran, as a word to paste (quoted where it needs it)."""
    argv0 = sys.argv[0] if sys.argv else ""
    name = os.path.basename(argv0)
    if name == "__main__.py" and os.path.basename(os.path.dirname(argv0)) == "wfops":
        return f"{shlex.quote(sys.executable)} -m wfops"
    if name not in _PROGRAMS:  # wfops called from Python (a test, a consumer's code): the venv's console script
        name = "wfops"
        argv0 = str(Path(sys.executable).parent / name)
    import shutil  # here: shutil imports bz2 and lzma, which the lean entry (wfops.lean) need not pay for

    found = shutil.which(name)
    if found and os.path.exists(argv0) and os.path.realpath(found) == os.path.realpath(argv0):
        return name
    if not os.path.exists(argv0):
        return name
    return shlex.quote(os.path.abspath(argv0))


def command(task: str, *args: str, settings: Settings | None = None, config: Path | None = None) -> str:
    """`PROGRAM TASK ARGS... [-c CONFIG]`: a task's command line as a user pastes it (args quoted); `-c` when the
    config file in use (`settings.path`, or `config`) is not the one wfops finds here by itself."""
    path = settings.path if settings is not None else config
    words = [program(), task, *(shlex.quote(a) for a in args)]
    nothing: Mapping[str, str] = {}
    if path is not None and not all(path.resolve() == _found_here(env) for env in (nothing, os.environ)):
        words += ["-c", shlex.quote(str(path))]
    return " ".join(words)


def _found_here(environ: Mapping[str, str]) -> Path | None:
    """The config a command run here finds by itself: with no WORKFLOW_CONFIG (the user's shell may lack the one
    a script set) and with this process's (the user's shell may have it: `wfops config.init` under a
    WORKFLOW_CONFIG naming another file must not print a bare `config.show`, which would show that other file)."""
    try:
        return find_config(None, Path.cwd(), environ)
    except WfopsError:
        return None
