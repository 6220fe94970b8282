"""The sweep CSV corpus: quoting, comments, BOM, CRLF, bad ids, hostile overrides; filters; arguments."""

from __future__ import annotations

import pytest

from wfops.errors import UsageError
from wfops.settings.load import parse_settings
from wfops.sweeps.model import TEMPLATE_CSV, parse_csv, select_runs, train_args

HEADER = "run_id,config,seed,overrides,notes\n"


def pairs(overrides) -> list[tuple[str, str]]:
    return [(o.key, o.value()) for o in overrides]


def problems(text: str) -> list[str]:
    with pytest.raises(UsageError) as err:
        parse_csv(text)
    return [line.strip() for line in err.value.message.splitlines()[1:]]


def test_quoted_commas_comments_blank_lines():
    runs = parse_csv(HEADER + "# a comment\n\n  # indented comment\n"
                     'r1,cfg/a.py,1,"lr=1e-3 wd=0.1","notes, with a comma"\n'
                     "r2,cfg/b.py,2,,\n")
    assert [(r.line, r.run_id, pairs(r.overrides), r.notes) for r in runs] == [
        (5, "r1", [("lr", "1e-3"), ("wd", "0.1")], "notes, with a comma"),
        (6, "r2", [], ""),
    ]


def test_bom_and_crlf():
    runs = parse_csv("\ufeff" + HEADER.replace("\n", "\r\n") + "r1,cfg/a.py,1,lr=2,x\r\nr2,cfg/a.py,3,,y\r\n")
    assert [(r.run_id, r.seed, r.notes) for r in runs] == [("r1", 1, "x"), ("r2", 3, "y")]


def test_columns_in_another_order_and_optional_trailing_columns():
    runs = parse_csv("seed,run_id,config\n7,r1,cfg/a.py\n")
    assert (runs[0].run_id, runs[0].seed, runs[0].overrides, runs[0].notes) == ("r1", 7, (), "")


def test_every_bad_row_is_reported_with_its_line():
    text = HEADER + (
        "ok,cfg/a.py,1,,\n"
        "ok,cfg/a.py,2,,\n"              # duplicate
        "a/b,cfg/a.py,1,,\n"             # slash
        "..,cfg/a.py,1,,\n"              # dots
        "x..y,cfg/a.py,1,,\n"
        "_hidden,cfg/a.py,1,,\n"
        "s1,cfg/a.py,one,,\n"            # seed
        "s2,cfg/a.py,-1,,\n"
        "c1,cfg/a.py,1,--tied,\n"        # a flag: TRAIN_ARG_STYLE=argparse only
        "c2,/etc/passwd,1,,\n"
        "c3,../x.py,1,,\n"
        "o1,cfg/a.py,1,notkv,\n"
        "o2,cfg/a.py,1,out_dir=/tmp,\n"  # injected by wfops
        "o3,cfg/a.py,1,seed=3,\n"
        "w1,cfg/a.py,1,,notes,extra\n"   # unquoted comma
    )
    got = problems(text)
    assert got == [
        "line 3: run_id ok repeats line 2",
        "line 4: run_id 'a/b' is not valid: use letters, digits, '.', '_' or '-', starting with a letter or digit, "
        "no '..' (it names a directory on the pod)",
        "line 5: run_id '..' is not valid: use letters, digits, '.', '_' or '-', starting with a letter or digit, "
        "no '..' (it names a directory on the pod)",
        "line 6: run_id 'x..y' is not valid: use letters, digits, '.', '_' or '-', starting with a letter or digit, "
        "no '..' (it names a directory on the pod)",
        "line 7: run_id '_hidden' is not valid: use letters, digits, '.', '_' or '-', starting with a letter or "
        "digit, no '..' (it names a directory on the pod)",
        "line 8: seed 'one' is not a whole number",
        "line 9: seed '-1' is not a whole number",
        "line 10: override '--tied' is a flag: TRAIN_ARG_STYLE=argparse passes flags and `--key value` pairs as "
        "written (TRAIN_ARG_STYLE=bare writes key=value pairs only)",
        "line 11: config '/etc/passwd' must be a path inside the training workdir (relative, no '..')",
        "line 12: config '../x.py' must be a path inside the training workdir (relative, no '..')",
        "line 13: override 'notkv' is not key=value",
        "line 14: override out_dir is set by wfops (TRAIN_INJECT); remove it from overrides",
        "line 15: override seed is set by the seed column; remove it from overrides",
        "line 16: 6 fields for 5 columns; quote any field that holds a comma",
    ]


def test_hostile_overrides_are_words_never_shell_code():
    overrides = "a='$(touch /tmp/pwned)' b=`id` c='x; rm -rf /' d=\"\"q\"\" e=$HOME"
    runs = parse_csv(HEADER + f'r1,cfg/a.py,1,"{overrides}",n\n')
    assert pairs(runs[0].overrides) == [("a", "$(touch /tmp/pwned)"), ("b", "`id`"), ("c", "x; rm -rf /"), ("d", "q"),
                                        ("e", "$HOME")]


def test_header_problems():
    assert problems("run_id,config\nr,c\n") == ["line 1: header must name the columns "
                                                "run_id,config,seed,overrides,notes,gpus,nodes: missing column(s) seed"]
    assert "unknown column(s) extra" in problems("run_id,config,seed,extra\n")[0]
    assert problems("") == ["line 1: the CSV is empty: it needs the header "
                            "run_id,config,seed,overrides,notes,gpus,nodes"]
    with pytest.raises(UsageError, match="has a header but no runs"):
        parse_csv(HEADER + "# only a comment\n")


def test_injected_keys_follow_train_inject():
    runs = parse_csv(HEADER + "r1,cfg/a.py,1,out_dir=/x seed=2,\n", injected=())
    assert pairs(runs[0].overrides) == [("out_dir", "/x"), ("seed", "2")]


def test_filters():
    runs = parse_csv(HEADER + "".join(f"{n},c.py,1,,\n" for n in ("a1", "a2", "b1", "b2", "a3")))
    ids = lambda rs: [r.run_id for r in rs]  # noqa: E731
    assert ids(select_runs(runs, match="a")) == ["a1", "a2", "a3"]
    assert ids(select_runs(runs, start_at="b1")) == ["b1", "b2", "a3"]
    assert ids(select_runs(runs, match="a", start_at="a2", limit=1)) == ["a2"]
    with pytest.raises(UsageError, match="--start-at / SWEEP_START_AT 'zz' is not a run_id"):
        select_runs(runs, start_at="zz")
    with pytest.raises(UsageError, match="leave no run"):
        select_runs(runs, match="zzz")


def test_train_args_follow_the_seed_and_the_style():
    run = parse_csv(HEADER + "r1,c.py,4,lr=1 --wd=2,\n")[0]
    s = parse_settings("", environ={})
    assert train_args(s, run, "g1") == ["seed=4", "wandb_log=False", "wandb_group=g1", "wandb_run_name=r1", "lr=1",
                                        "wd=2"]
    s = parse_settings("SWEEP_WANDB=1\nWANDB_PROJECT=proj\nTRAIN_ARG_STYLE=dashdash\n", environ={})
    assert train_args(s, run, "g1") == ["--seed=4", "--wandb_log=True", "--wandb_group=g1", "--wandb_run_name=r1",
                                        "--wandb_project=proj", "--lr=1", "--wd=2"]
    s = parse_settings("TRAIN_INJECT=out_dir\n", environ={})
    assert train_args(s, run, "g1") == ["lr=1", "wd=2"]


def test_the_starter_template_is_valid():
    assert [r.run_id for r in parse_csv(TEMPLATE_CSV)] == ["baseline-s1", "lr1e-3-s1", "bigbatch-s2"]
