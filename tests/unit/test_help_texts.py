"""Every task's first help line is a whole sentence that fits one line of `wfops --list` (invoke wraps, it does
not cut: a first line that goes on in the next line reads as cut mid-sentence), and the list says what wfops is."""

from __future__ import annotations

import pytest

from wfops.program import ABOUT, program
from wfops.tasks import ns


def _listing(capsys: pytest.CaptureFixture[str]) -> list[str]:
    program.run(["wfops", "--list"], exit=False)  # not a terminal: invoke's width is 80 columns
    return capsys.readouterr().out.splitlines()


def test_every_first_help_line_is_a_sentence_that_fits_the_list(capsys):
    lines = _listing(capsys)
    assert lines[0] == ABOUT
    rows = lines[lines.index("Subcommands:") + 2:]
    assert not [r for r in rows if r.startswith("   ")], "a first help line wraps in --list (80 columns)"
    for name in ns.task_names:
        first = (ns[name].__doc__ or "").strip().splitlines()[0]
        assert first.endswith(".") and first[0].isupper(), name
        assert any(r.split()[0] == name and r.endswith(first) for r in rows if r.strip()), name
