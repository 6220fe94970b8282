"""The `wfops` console script. Light on purpose: a read-only command through its pod's keeper runs in wfops.lean
and never imports the task tree; otherwise, before the task tree is imported (invoke and every task module,
most of a command's start-up), `prewarm` may start the target's keeper so that its SSH connection is made while
this process imports (wfops.transport.launch.prestart). The program itself is wfops.program.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.stderr is None:  # started with stderr closed (`2>&-`): what it says goes where print(file=None) sends it,
        sys.stderr = sys.stdout  # on every path (the lean ones flushed and wrote to None, and exited 1)
    from wfops.interrupt import guard

    guard()  # Ctrl-C from here on is one line and exit 130 (wfops.interrupt)
    from wfops.startup import check

    check()  # stdout closed, the working directory gone: one line, exit 2; streams that cannot show a character
    from wfops.leancache import try_cached

    try_cached(sys.argv[1:])  # the same read-only command with the same inputs as before: its kept request
    from wfops.lean import try_lean

    try_lean(sys.argv[1:])  # a read-only command through its keeper ends here, without invoke (wfops.lean)
    from wfops.prewarm import prewarm

    prewarm(sys.argv[1:])
    from wfops.program import program

    try:
        try:
            program.run()
        finally:
            sys.stdout.flush()  # inside the try: a reader gone (`wfops --list | head`) shows here at the latest
    except BrokenPipeError:  # `wfops --list | head`: no traceback, no "Exception ignored" at exit, the shell's 141
        from wfops.interrupt import EXIT_BROKEN_PIPE
        from wfops.quietpipe import exit_quietly_on_broken_pipe

        exit_quietly_on_broken_pipe()
        sys.exit(EXIT_BROKEN_PIPE)


def __getattr__(name: str) -> object:  # `from wfops.cli import program` (as before the split) still works
    if name in ("program", "WfopsProgram", "usage_error"):
        from wfops import program as module

        return getattr(module, name)
    raise AttributeError(name)
