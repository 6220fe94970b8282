"""What a `wfops` process starts in, checked once before any of its paths (the cached fast path, the lean entry,
the task tree) reads or sends anything (wfops.cli): the one place where surroundings a command cannot work in
become one line and an exit code, not a traceback on each path.

- stdout closed (`wfops fsm.status >&-`): Python has no sys.stdout, and a file the command opened would take fd 1
  (a script's `bash -s` on a `local` target would write into it). One line, exit 2, nothing run. So too stdout
  open for reading only (`1</dev/null`), where the command ran and its first output failed (EBADF).
- a working directory deleted since the shell entered it: every path looks for workflow.env there (and the
  cached fast path keys its entries by it). One line, exit 2, nothing run.
- command-line arguments are taken as the UTF-8 text their bytes are, whatever the locale (a C locale without
  UTF-8 mode decoded `é` as two lone surrogates, which reached the pod so). One that is not UTF-8 stays as Python
  read it (lone surrogates for its other bytes, which travel to the pod and back as they are: a file name, a
  `task.run --cmd`, whose bytes the pod writes as given).
- stdin closed (`<&-`): empty input, as from /dev/null (`sweep.validate --csv -` reads an empty CSV).
- stdout and stderr whose encoding cannot show a character (PYTHONIOENCODING=ascii, or a C locale with
  PYTHONUTF8=0) write it as `\\xe9` instead of failing: the command runs and exits as it would have.

A reader of stdout gone (`| head`) is each path's own end (quiet, exit 141: wfops.leancache.end, wfops.cli).
Standard library only, cheap (it runs at every start; docs/speed.md).
"""

from __future__ import annotations

import fcntl
import os
import sys

from wfops.agent.states import EXIT_USAGE  # the cached fast path imports it anyway

PROGRAM_FLAGS = ("--version", "-V", "--help", "-h", "--list", "-l", "--complete")  # before the first task
TOLERANT = ("backslashreplace", "namereplace", "replace", "ignore", "xmlcharrefreplace")
STDOUT_CLOSED = ("standard output is closed (`>&-`): nothing was run; to discard the output, send it to /dev/null "
                 "(`>/dev/null`) instead")
STDOUT_READ_ONLY = ("standard output is open for reading only (`1</dev/null`): nothing was run; to discard the "
                    "output, send it to /dev/null (`>/dev/null`) instead")
CWD_GONE = ("the current directory no longer exists (it was removed after the shell entered it): nothing was run; "
            "cd to a directory that exists and run the command again")


_decoded: object = None  # sys.argv once its arguments are the UTF-8 text their bytes are


def check() -> None:
    """End the process (one line on stderr, exit 2) where no command can work; else make the streams tolerant."""
    if sys.stdout is None:
        refuse(STDOUT_CLOSED)
    if not writable(1):
        refuse(STDOUT_READ_ONLY)
    global _decoded
    if sys.argv is not _decoded:  # once a command line (wfops.cli checks it, then the task tree's import for `inv`)
        sys.argv[1:] = [utf8(arg) for arg in sys.argv[1:]]
        _decoded = sys.argv
    try:
        os.getcwd()
    except FileNotFoundError:
        if needs_cwd(sys.argv[1:]):
            refuse(CWD_GONE)
    if sys.stdin is None:  # `<&-`: empty input, as /dev/null is (`--csv -` is an empty CSV, pod.down asks no one)
        fd = os.open(os.devnull, os.O_RDONLY)  # the lowest free descriptor: 0, which no file opened later takes
        if fd != 0:
            os.dup2(fd, 0)
            os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's stdin, for its lifetime
    tolerant_streams()


def utf8(arg: str) -> str:
    """A command-line argument as the UTF-8 text its bytes are, whatever the locale decoded them as (an ASCII or
    Latin-1 locale makes `é` two other characters, or lone surrogates); one that is not UTF-8 stays as Python read
    it."""
    try:
        return os.fsencode(arg).decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return arg


def writable(fd: int) -> bool:
    """Whether `fd` was opened for writing (`1</dev/null` opens stdout for reading only: every write fails)."""
    try:
        return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
    except OSError:
        return False


def needs_cwd(argv: list[str]) -> bool:
    """Whether this command line looks for a config (workflow.env in the working directory, the cached fast path's
    key): not the program's own flags before the first task (--version, --help, --list, --complete), nor a task's
    --help, nor `disconnect --all` alone, which work wherever they are started."""
    for arg in argv:
        if not arg.startswith("-"):  # the first task: what follows is its own options (`-l` is task.list's)
            break
        if arg in PROGRAM_FLAGS:
            return False
    return "--help" not in argv and sorted(argv) != ["--all", "disconnect"]


def refuse(why: str) -> None:
    print(f"wfops: {why}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USAGE)


def tolerant_streams() -> None:
    """stdout and stderr write what their encoding cannot show as a backslash escape (`\\xe9`, `\\udcff`)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) not in TOLERANT:
            reconfigure(errors="backslashreplace")
