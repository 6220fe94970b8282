"""The lean entry's parser (wfops.lean) agrees with the tasks' own options: every read-only command is lean or
full-path only, a lean command's options are its task's (names, kinds, defaults), a command line the lean parser
takes gives the same values as invoke's parser (and the task boundary's checks), and anything else falls back."""

from __future__ import annotations

import pytest
from invoke.parser import Parser

from wfops import lean
from wfops.agent.states import RULES
from wfops.tasks import ns
from wfops.tasks._base import int_option


def test_every_read_only_command_is_lean_or_says_why_not():
    read_only = {name for name, rule in RULES.items() if rule.readonly}
    assert set(lean.LEAN) | set(lean.FULL_ONLY) == read_only
    assert not set(lean.LEAN) & set(lean.FULL_ONLY)
    assert all(not RULES[name].mutating for name in lean.LEAN)


@pytest.mark.parametrize("name", sorted(lean.LEAN))
def test_the_lean_options_are_the_tasks_options(name: str):
    task = ns[name]
    declared = {a.attr_name or a.name: (a.kind, a.default, a.positional) for a in task.get_arguments()}
    ours = {o.name: (o.kind, o.default, False) for o in lean.LEAN[name]}
    assert ours == declared
    flags = {n for a in task.get_arguments() for n in a.names if len(n) > 1}
    assert {o.flag[2:] for o in lean.LEAN[name]} == flags


def invoke_values(argv: list[str]) -> dict[str, object]:
    """What the task gets from invoke's parser (the wfops task tree's contexts), its whole numbers checked by the
    task boundary (int_option) as the task would see them."""
    result = Parser(contexts=ns.to_contexts()).parse_argv(argv)
    assert len(result) == 1 and result[0].name == argv[0], result
    task = ns[argv[0]]
    values: dict[str, object] = {}
    for arg in result[0].args.values():
        name = arg.attr_name or arg.name
        values[name] = int_option(name, arg.value) if name in task.int_options else arg.value
    return values


TAKEN = [
    ["fsm.status"], ["fsm.status", "--json"], ["fsm.status", "-c", "pod.env"], ["fsm.status", "--config=pod.env"],
    ["fsm.status", "--config", "pod.env", "--json"],
    ["task.list"], ["task.list", "--limit", "0"], ["task.list", "--limit=5", "--json"], ["task.list", "--limit", "007"],
    ["task.status", "--id", "train-1"], ["task.status", "--id=a.b_c", "--tail-lines", "3", "--json"],
    ["task.status", "--tail-lines=0", "--id", "x"],
    ["sweep.status"], ["sweep.status", "--sweep", "sweep-20261201T000000Z"], ["sweep.status", "--sort", "val_loss"],
    ["sweep.status", "--json", "--sort=loss", "--sweep=s1", "-c", "x.env"],
    ["sweep.list"], ["sweep.list", "--json"],
]


@pytest.mark.parametrize("argv", TAKEN, ids=" ".join)
def test_what_the_lean_parser_takes_invoke_reads_the_same(argv: list[str]):
    parsed = lean.parse(argv)
    assert parsed is not None
    assert parsed == (argv[0], invoke_values(argv))


FALLS_BACK = [
    [], ["fsm.reset"], ["task.run", "--id", "x", "--cmd", "true"], ["task.wait", "--id", "x"], ["sweep.wait"],
    ["-c", "pod.env", "fsm.status"], ["--help"], ["fsm.status", "--help"], ["fsm.status", "-h"],
    ["fsm.status", "-j"], ["fsm.status", "--json=yes"], ["fsm.status", "--json", "--json"], ["fsm.status", "extra"],
    ["fsm.status", "task.list"], ["fsm.status", "--nosuch"], ["fsm.status", "-c"], ["fsm.status", "--config"],
    ["fsm.status", "--config="], ["fsm.status", "-c=pod.env"], ["fsm.status", "-cpod.env"], ["fsm.status", "-d"],
    ["task.list", "--limit", "abc"], ["task.list", "--limit=-1"], ["task.list", "--limit", "+3"],
    ["task.list", "--limit", " 3"], ["task.list", "--limit", "²"], ["task.list", "--limit"], ["task.list", "-l", "3"],
    ["task.list", "--limit", "1", "--limit", "2"],
    ["task.status", "--id", "x", "--watch"], ["task.status", "--id", "x", "--watch", "5"],
    ["task.status", "--id", "x", "--watch=5"], ["task.status", "--id", "--json"],
    ["sweep.status", "--watch"], ["sweep.status", "--sweep", "-x"], ["sweep.status", "--sort"],
    ["sweep.status", "--no-json"], ["sweep.list", "--sweep", "s1"], ["fsm.status", "--", "x"],
]


@pytest.mark.parametrize("argv", FALLS_BACK, ids=lambda a: " ".join(a) or "nothing")
def test_anything_else_takes_the_full_path(argv: list[str]):
    assert lean.parse(argv) is None


def test_an_invoke_config_may_name_the_wfops_config_so_the_full_path_reads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not lean.invoke_configured({"PATH": "/bin"})
    assert lean.invoke_configured({"INVOKE_WFOPS_CONFIG": "x.env"})
    (tmp_path / ".invoke.yaml").write_text("wfops:\n  config: other.env\n")
    assert lean.invoke_configured({"PATH": "/bin"})


def test_run_fetch_lean_options_are_the_tasks_options():
    task = ns["run.fetch"]
    declared = {a.attr_name or a.name: (a.kind, a.default, a.positional) for a in task.get_arguments()}
    ours = {o.name: (o.kind, o.default, lean.POSITIONAL.get("run.fetch") == o.name)
            for o in lean.LOCAL_WRITES["run.fetch"]}
    assert ours == declared
    assert not set(lean.LOCAL_WRITES) & (set(lean.LEAN) | set(lean.FULL_ONLY))


FETCH_TAKEN = [
    ["run.fetch", "--all"], ["run.fetch", "r1"], ["run.fetch", "--hash", "r1"], ["run.fetch", "r1", "--merge-replaced"],
    ["run.fetch", "--sweep", "sweep-1", "--all", "-c", "x.env"], ["run.fetch", "--run-id", "r1"],
    ["run.fetch", "--run-id=r.1"], ["run.fetch", "fsm.status"],  # invoke: the positional first, a task name or not
]


@pytest.mark.parametrize("argv", FETCH_TAKEN, ids=" ".join)
def test_what_the_lean_parser_takes_of_run_fetch_invoke_reads_the_same(argv: list[str]):
    expected = invoke_values(argv)
    expected["run_id"] = expected["run_id"] or None  # invoke's '' for a positional not given: the same request
    assert lean.parse(argv) == (argv[0], expected)


@pytest.mark.parametrize("argv", [
    ["run.fetch", "r1", "r2"], ["run.fetch", "r1", "--run-id", "r2"], ["run.fetch", "--all=yes"],
    ["run.fetch", "--sweep"], ["run.fetch", "-a"], ["run.fetch", "--all", "--all"], ["run.fetch", "--watch"],
], ids=" ".join)
def test_run_fetch_lines_the_lean_parser_does_not_take(argv: list[str]):
    assert lean.parse(argv) is None
