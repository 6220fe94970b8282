"""Pure edge cases of issue 10: odd `gpus` cells, what the fingerprint counts, the failing worker's error
line for exceptions Python prints without a message or without a traceback header, and the start order
when runs never fit or a reserved head finally starts."""

from __future__ import annotations

import csv
import io

import pytest

from wfops.agent import outcome, slots
from wfops.errors import UsageError
from wfops.settings.load import parse_settings
from wfops.sweeps.args import Override
from wfops.sweeps.model import common_overrides, fingerprint, parse_csv, train_args

HEADER = "run_id,config,seed,overrides,notes,gpus\n"


def settings(**extra: str):
    values = {"TRAIN_SCRIPT": "train.py", **extra}
    return parse_settings("".join(f"{k}={v}\n" for k, v in values.items()), environ={})


def test_gpus_cells_are_trimmed_and_odd_values_refused_with_their_line():
    runs = parse_csv(HEADER + "a,c.py,1,,, 2 \nb,c.py,2,,,all\nc,c.py,3,,,\n")
    assert [r.gpus for r in runs] == ["2", "all", ""]
    with pytest.raises(UsageError) as err:
        parse_csv(HEADER + "a,c.py,1,,,0\nb,c.py,2,,,-1\nc,c.py,3,,,1.5\nd,c.py,4,,,two\ne,c.py,5,,,99999\n")
    text = str(err.value)
    assert "5 problem(s)" in text
    for line, value in ((2, "0"), (3, "-1"), (4, "1.5"), (5, "two"), (6, "99999")):
        assert f"line {line}: gpus {value!r} is not a whole number >= 1 or 'all'" in text


def test_the_fingerprint_ignores_notes_and_counts_common_overrides_unless_the_row_wins():
    s = settings()
    one, = parse_csv(HEADER + "r1,c.py,1,lr=2,first note,\n")
    two, = parse_csv(HEADER + 'r1,c.py,1,lr=2,"other, note",\n')
    assert fingerprint(s, one) == fingerprint(s, two)  # notes are not the command
    assert fingerprint(s, one, (Override("lr", ("1",)),)) == fingerprint(s, one)  # the row's lr wins: same command
    assert fingerprint(s, one, (Override("wd", ("1",)),)) != fingerprint(s, one)  # a common key the row lacks
    assert fingerprint(s, one, (Override("wd", ("1",)),)) != fingerprint(s, one, (Override("wd", ("2",)),))
    spaced, = parse_csv(HEADER + "r1,c.py,1,lr=2,,  all \n")
    assert fingerprint(s, spaced) == fingerprint(s, one)  # gpus " all " is RUN_GPUS's "all"


def _row(cell: str, style: str, nodes: str = ""):
    buf = io.StringIO()
    csv.writer(buf).writerow(["a", "c.py", "1", cell, nodes])
    return parse_csv("run_id,config,seed,overrides,nodes\n" + buf.getvalue(), injected=("seed",), style=style)[0]


@pytest.mark.parametrize("before,after", [
    ("--sizes 1 2", '--sizes="1 2"'),  # two values vs one value with a space: both read `sizes=1 2`
    ('--note "a b"', "--note a b"),    # one value with a space vs two words
    ("-s 1", "--s 1"),                 # a short option vs a long one
    ("--sizes 1", "--sizes 1 2"),      # one value vs two
])
def test_argparse_rows_whose_argv_differ_differ_in_fingerprint(before, after):
    s = settings(TRAIN_ARG_STYLE="argparse", TRAIN_INJECT="seed")
    a, b = _row(before, "argparse"), _row(after, "argparse")
    assert train_args(s, a, "g") != train_args(s, b, "g")  # two commands ...
    assert fingerprint(s, a) != fingerprint(s, b)  # ... so the ok run of one does not skip the other


@pytest.mark.parametrize("style,one,other", [  # (cell, SWEEP_COMMON_OVERRIDES) of two rows
    ("argparse", ("lr=1 --tied", ""), ("--lr=1 --tied", "")),        # both `--lr=1 --tied`
    ("argparse", ("--sizes 1 2", ""), ("", "--sizes 1 2")),           # the row's words or the common ones alike
    ("argparse", ("--sizes 1 2", ""), ("--sizes 1 2", "--sizes 3")),  # the row's key wins
    ("bare", ("lr=1", ""), ("--lr=1", "")),                           # both `lr=1`
    ("dashdash", ("lr=1", ""), ("--lr=1", "")),                       # both `--lr=1`
])
def test_rows_with_the_same_argv_share_the_fingerprint(style, one, other):
    commands, fps = set(), set()
    for cell, common in (one, other):
        s = settings(TRAIN_ARG_STYLE=style, TRAIN_INJECT="seed", SWEEP_COMMON_OVERRIDES=common)
        run = _row(cell, style)
        commands.add(tuple(train_args(s, run, "g", common_overrides(s))))
        fps.add(fingerprint(s, run, common_overrides(s)))
    assert len(commands) == 1 and len(fps) == 1, (commands, fps)


@pytest.mark.parametrize("cells", [("--lr 20", "--lr=20", "lr=20"), ("--save model.pt", "--save=model.pt")])
def test_argparse_spellings_of_one_option_share_the_fingerprint(cells):
    """`--lr 20` and `--lr=20` differ in argv but not for argparse (nor click, absl): one command, one fingerprint,
    the one it always had (no rerun of such ok runs after an upgrade)."""
    s = settings(TRAIN_ARG_STYLE="argparse", TRAIN_INJECT="seed")
    assert len({fingerprint(s, _row(cell, "argparse")) for cell in cells}) == 1


@pytest.mark.parametrize("style,common,cell,nodes,fp", [  # computed by wfops before flags counted by their words
    ("bare", "", "lr=1e-3 batch_size=8", "", "d5f6057d9bf7f393"),
    ("bare", "dropout=0.1", "lr=1e-3", "", "e8c4ff806c9fb072"),
    ("dashdash", "", "--lr=1e-3 batch_size=8", "", "f56130952d35e88a"),
    ("argparse", "", "--lr=20 log-interval=5 --tied", "", "789ae7f6d7982559"),
    ("argparse", "--save={out_dir}/model.pt --log-interval=5", '-v --note="a b"', "", "41e12aa6ef282aea"),
    ("argparse", "", "", "2", "a7d9a39b22b7e847"),
    ("argparse", "", '--sizes="1 2"', "", "6603005115b3940b"),
    ("argparse", "", "--lr 20 --tied", "", "c0d93d80c2a7b553"),  # a long flag with one word: as `--lr=20`
    ("argparse", "", "--save model.pt", "", "195e3f0f105df8de"),
    ("argparse", "--lr 20", "", "", "b44e973c767f6574"),
])
def test_fingerprints_of_pairs_and_lone_flags_stay_what_they_were(style, common, cell, nodes, fp):
    """Runs recorded ok by an older wfops stay skipped after an upgrade: only a short flag with values (`-s 1`), a
    flag with several values (`--sizes 1 2`) or a value with a space (`--note "a b"`) counts differently now (by
    its words), so only such rows rerun once."""
    s = settings(TRAIN_ARG_STYLE=style, TRAIN_INJECT="seed", SWEEP_COMMON_OVERRIDES=common)
    assert fingerprint(s, _row(cell, style, nodes), common_overrides(s)) == fp


@pytest.mark.parametrize("last", ["Boom", "StopIteration", "mylib.errors.Oops"])
def test_an_exception_without_a_message_is_the_evidence(last):
    # BUG: outcome.EXC_RE only knows names ending in Error/Exception/... or `name: message`; a bare
    # `raise Boom` / `raise StopIteration` leaves no evidence (torchrun's exitcode line is shown instead)
    log = f'Traceback (most recent call last):\n  File "train.py", line 3, in <module>\n    raise X\n{last}\n'
    assert outcome.worker_error(log) == last


def test_a_syntax_error_in_the_training_script_is_the_evidence():
    # BUG: Python prints a syntax error of the main script with no "Traceback (most recent call last)" header,
    # so worker_error finds nothing: a typo in train.py is reported as torchrun's `exitcode : 1`
    log = ('[rank1]:  File "/pod/repo/train.py", line 3\n[rank1]:    x = (\n[rank1]:        ^\n'
           "[rank1]:SyntaxError: '(' was never closed\n")
    assert outcome.worker_error(log, 1) == "SyntaxError: '(' was never closed"


def test_the_failing_ranks_error_wins_over_a_handled_traceback_of_another_rank():
    log = ('[rank0]:Traceback (most recent call last):\n[rank0]:  File "x"\n[rank0]:RuntimeError: handled, goes on\n'
           '[rank1]:Traceback (most recent call last):\n[rank1]:  File "x"\n[rank1]:ValueError: the real one\n'
           "[rank1]:more of its message\n")
    assert outcome.worker_error(log, 1) == "ValueError: the real one"
    assert outcome.worker_error(log, 0) == "RuntimeError: handled, goes on"  # positive control: rank filter


def test_a_run_that_never_fits_leaves_the_order_and_the_next_ones_still_start():
    order = slots.Order(2, overtake_limit=2)
    for i, need in enumerate([3, 2, 1]):
        order.push(i, need, f"r{i}")
    assert order.pop_too_big() == ["r0"]
    assert order.pop_fitting(2) == "r1"  # the head now: it starts without counting as overtaken
    assert order.pop_fitting(0) is None and order.pop_fitting(1) == "r2" and len(order) == 0


def test_a_reserved_head_starts_and_backfill_resumes_behind_the_next_one():
    order = slots.Order(4, overtake_limit=1)
    for i, need in enumerate([4, 1, 1, 4, 1]):
        order.push(i, need, f"r{i}")
    assert order.pop_fitting(3) == "r1"  # backfill: r0 overtaken once
    assert order.pop_fitting(2) is None  # r0 is reserved now: nothing else starts
    assert order.pop_fitting(4) == "r0"
    assert order.pop_fitting(1) == "r2"  # r2 is next in order: not a backfill
    assert order.pop_fitting(1) == "r4" and order.pop_fitting(1) is None  # r3 overtaken once, then reserved
    assert order.pop_fitting(4) == "r3"
