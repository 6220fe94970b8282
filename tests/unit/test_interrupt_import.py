"""Issue 23 #5: Ctrl-C in the first moments of `wfops` printed a KeyboardInterrupt traceback when it landed while
wfops.interrupt imported typing and threading (~5 ms on a quiet machine, before its guard was installed; found
from outside by a SIGINT every 5 ms after the start). The guard's import chain is now the console script's own
modules plus os, sys and signal: nothing else is imported before the handler is in place."""

from __future__ import annotations

import subprocess
import sys


def test_nothing_slow_is_imported_before_the_ctrl_c_guard():
    probe = ("import re, sys\n"  # what the console script imports before `from wfops.cli import main`
             "before = set(sys.modules)\n"
             "import wfops.cli, wfops.interrupt\n"
             "print(' '.join(sorted(set(sys.modules) - before)))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert set(out) <= {"wfops", "wfops.cli", "wfops.interrupt", "signal", "__future__"}, out
