"""Option checks, the interruption messages, the optional-positional parser rule (and that it stays inside wfops's
tasks), and making control characters visible in human output."""

from __future__ import annotations

import pytest
from invoke import Collection, Context, Exit, ParseError, task
from invoke.parser import Parser

from wfops.errors import UsageError
from wfops.output import pairs, table, visible
from wfops.tasks import ns
from wfops.tasks._base import Terminated, int_option, interrupted_message, wftask


@pytest.mark.parametrize("value,expected", [(None, None), (0, 0), ("0", 0), ("20", 20), (" 7 ", 7), ("+3", 3)])
def test_int_option_accepts_whole_numbers(value, expected):
    assert int_option("tail_lines", value) == expected


@pytest.mark.parametrize("value", ["abc", "-5", -1, "1.5", "", "1e3", True, "٣"])
def test_int_option_refuses_everything_else_with_the_flag_name(value):
    with pytest.raises(UsageError, match=r"^--tail-lines=.* is not valid: expected a whole number >= 0$"):
        int_option("tail_lines", value)


def test_the_boundary_checks_int_options_and_keeps_defaults():
    seen = {}

    @wftask(int_options=["timeout"])
    def probe(c, limit=20, timeout=None, name="x", config=None):
        seen.update(limit=limit, timeout=timeout)

    probe(Context(), limit="5", timeout="0")
    assert seen == {"limit": 5, "timeout": 0}
    probe(Context())
    assert seen == {"limit": 20, "timeout": None}
    with pytest.raises(Exit) as exc:
        probe(Context(), limit="many")
    assert exc.value.code == 2
    assert exc.value.message == "wfops: --limit='many' is not valid: expected a whole number >= 0"


@pytest.mark.parametrize("exc,hint,sent,line", [
    (KeyboardInterrupt(), None, True, "wfops: interrupted"),
    (Terminated(), None, False, "wfops: terminated (SIGTERM)"),
    (KeyboardInterrupt(), "the sweep may have started: run sweep.status", False,
     "wfops: interrupted before anything was sent to the pod; nothing was changed"),
    (Terminated(), "the sweep may have started: run sweep.status", True,
     "wfops: terminated (SIGTERM) after the request was sent: the sweep may have started: run sweep.status"),
])
def test_interruption_messages(exc, hint, sent, line):
    assert interrupted_message(exc, hint, sent) == line


def test_the_hint_names_the_task_arguments():
    @wftask(interrupted="task {id} may have started: see task.status --id {id}")
    def starter(c, id=None, config=None):
        raise KeyboardInterrupt

    with pytest.raises(Exit) as exc:
        starter(Context(), id="t7")
    assert exc.value.code == 130  # nothing was sent: the hint is not needed
    assert exc.value.message == "wfops: interrupted before anything was sent to the pod; nothing was changed"


# ------------------------------------------------------------------ optional positionals, scoped to wfops

def _parse(collection: Collection, argv: list[str]):
    return Parser(contexts=collection.to_contexts()).parse_argv(argv)


def test_wfops_positionals_may_be_left_out():
    result = _parse(ns, ["fsm.reset", "--reason", "r"])
    assert result[0].as_kwargs["state"] == ""
    assert _parse(ns, ["fsm.reset", "POD_READY"])[0].as_kwargs["state"] == "POD_READY"
    assert _parse(ns, ["run.fetch", "--all"])[0].as_kwargs["run_id"] == ""


def test_other_peoples_positionals_stay_required():
    @task
    def deploy(c, where):
        pass

    with pytest.raises(ParseError, match="did not receive required positional arguments: 'where'"):
        _parse(Collection(deploy), ["deploy"])


# ------------------------------------------------------------------ control characters

def test_visible_escapes_controls_but_keeps_newline_and_tab():
    assert visible("a\x1b[2Jb\x07c\td\ne\x7f\x9b\x00") == "a\\x1b[2Jb\\x07c\td\ne\\x7f\\x9b\\x00"
    assert visible("one\ntwo\tx", one_line=True) == "one\\x0atwo\tx"
    assert visible("plain: ünïcode ✓") == "plain: ünïcode ✓"


def _table_cell_by_cell(headers, rows):
    """output.table as it was before issue 24's fast path: visible() on every cell."""
    cells = [["-" if v is None or v == "" else visible(v, one_line=True) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


@pytest.mark.parametrize("rows", [
    [], [("a", None, "", 0, 1.5, False)], [("a", "b", "c", "d", "e", "f"), ("x",)],
    [("r1", "ok", None, 3, "12.0s", "ünïcode ✓"), ("r2", "failed", 1, None, "", "line1\nline2")],
    [("r\x1b[31m", "-", "tab\there", "\x9b", "", None)], [("a", "b\x00", "", "", "", "")],
    [(f"s{i:04d}", "success", "", "", 0, "1.0s") for i in range(50)] + [("s", "lost", "", "", None, "\x07")]])
def test_the_table_is_the_one_made_cell_by_cell(rows):
    """output.table looks for control characters once over all cells and escapes cell by cell only when there is
    one (sweep.status of 1,000 runs, issue 24): the text is the one escaping every cell made."""
    headers = ("run_id", "state", "gpus", "exit", "duration", "why")
    assert table(headers, rows) == _table_cell_by_cell(headers, rows)


def test_tables_and_pairs_escape_cells_and_stay_aligned():
    text = table(("id", "note"), [("a\x1b[31m", "x"), ("b", "line1\nline2")])
    assert text.splitlines() == ["id         note", "a\\x1b[31m  x", "b          line1\\x0aline2"]
    assert pairs([("reason", "\x1b]0;title\x07"), ("k", None)]).splitlines() == [
        "reason  \\x1b]0;title\\x07", "k       -"]
