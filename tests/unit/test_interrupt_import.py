"""Issue 23 #5: Ctrl-C in the first moments of `wfops` printed a KeyboardInterrupt traceback when it landed while
wfops.interrupt imported typing and threading (~5 ms on a quiet machine, before its guard was installed; found
from outside by a SIGINT every 5 ms after the start). The guard's import chain is now the console script's own
modules plus os and sys (and the built-in _signal: signal.py imports enum): nothing else is imported before the
handler is in place. And in a program named wfops / inv / invoke the wheel's .pth installs it while Python starts
(site), before the console script's own `import re`."""

from __future__ import annotations

import subprocess
import sys


def test_nothing_slow_is_imported_before_the_ctrl_c_guard():
    probe = ("import re, sys\n"  # what the console script imports before `from wfops.cli import main`
             "before = set(sys.modules)\n"
             "import wfops.cli, wfops.interrupt\n"
             "print(' '.join(sorted(set(sys.modules) - before)))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert set(out) <= {"wfops", "wfops.cli", "wfops.interrupt", "_signal", "__future__"}, out


def test_the_guard_is_in_place_before_the_console_script_runs(tmp_path):
    """The installed wfops_quiet_pipe.pth (tests/unit/test_packaging checks the wheel carries it) guards a program
    named wfops, inv or invoke at interpreter start; any other program keeps Python's own Ctrl-C."""
    seen = {}
    for name in ("wfops", "inv", "invoke", "train"):
        script = tmp_path / name
        script.write_text("import signal, sys\n"
                          "print(getattr(signal.getsignal(signal.SIGINT), '__name__', '?'), 'enum' in sys.modules)\n")
        seen[name] = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                    check=True).stdout.split()
    assert seen["wfops"][0] == seen["inv"][0] == seen["invoke"][0] == "_outside_a_task", seen
    assert seen["train"][0] == "default_int_handler", seen
    mods = tmp_path / "mods"  # `python -I -m invoke`: the program's name is the module's (sys.orig_argv)
    mods.mkdir()
    for name in ("invoke", "train"):
        (mods / f"{name}.py").write_text((tmp_path / name).read_text())
        res = subprocess.run([sys.executable, "-X", "utf8", "-m", name], capture_output=True, text=True, cwd=mods)
        assert (res.returncode, res.stderr) == (0, ""), res.stderr  # the .pth line ran without an error
        seen[f"-m {name}"] = res.stdout.split()
    assert (seen["-m invoke"][0], seen["-m train"][0]) == ("_outside_a_task", "default_int_handler"), seen
