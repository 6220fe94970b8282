"""Failure evidence of runs that end without a traceback (issue 21, part 6): argparse's `prog: error: ...` (exit 2),
`SystemExit: ...`, the last `...Error: ...` line, and the last words of `sys.exit("message")` (exit 1), under the
python launcher and under torchrun (rank prefixes, its own report after the worker's lines). Logs as the
supervisor writes them: each line with its time stamp."""

from __future__ import annotations

from wfops.agent import outcome

STAMP = "2026-12-01T10:00:00.000+00:00 "
TORCHRUN_REPORT = [
    "E1201 10:00:01.000000 4242 torch/distributed/elastic/multiprocessing/api.py:882] failed (exitcode: {code}) "
    "local_rank: 0 (pid: 4243) of binary: /usr/bin/python3",
    "Traceback (most recent call last):",
    '  File "/usr/bin/torchrun", line 8, in <module>',
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
    "============================================================",
    "main.py FAILED",
    "------------------------------------------------------------",
    "Root Cause (first observed failure):",
    "[0]:",
    "  rank      : 0 (local_rank: 0)",
    "  exitcode  : {code} (pid: 4243)",
    "  error_file: <N/A>",
    "  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html",
    "============================================================",
]
USAGE = "usage: main.py [-h] [--lr LR] [--epochs N] [--log-interval N] [--tied] [--save PATH]"
ARGPARSE = "main.py: error: unrecognized arguments: --learnig-rate=0.1"


def log(lines: list[str], code: int | None = None) -> str:
    report = [ln.format(code=code) for ln in TORCHRUN_REPORT] if code is not None else []
    return "".join(STAMP + ln + "\n" for ln in [*lines, *report])


def evidence(text: str, code: int, state: str = "failed") -> tuple:
    got = outcome.classify(text, code, state)
    return got["evidence"], got["failure_class"], got["exit_code"]


def test_argparse_error_line_is_the_evidence_not_just_nonzero_exit():
    assert evidence(log([USAGE, ARGPARSE]), 2) == (ARGPARSE, "nonzero_exit", 2)
    # under torchrun with rank prefixes: the worker's line, not torchrun's `exitcode : 2`
    ranked = log([f"[rank0]:{USAGE}", f"[rank0]:{ARGPARSE}"], code=2)
    assert evidence(ranked, 1) == (ARGPARSE, "nonzero_exit", 2)
    # without rank prefixes (one process): the line before torchrun's report
    assert evidence(log([USAGE, ARGPARSE], code=2), 1) == (ARGPARSE, "nonzero_exit", 2)
    # another prog name, a path, a hyphenated script
    line = "train-lm.py: error: argument --epochs: invalid int value: 'x'"
    assert evidence(log(["usage: train-lm.py [-h]", line]), 2)[0] == line


def test_argparse_near_misses_are_not_its_error_line():
    for prose in ("no error: all good", "Epoch 1: error: 0.25", "  main.py: error: indented is not argparse"):
        assert outcome.message_error(log([prose])) == ""


def test_a_traceback_still_wins_and_the_failing_ranks_line_is_taken():
    tb = ["Traceback (most recent call last):", '  File "main.py", line 9, in <module>',
          "KeyError: 'lr'"]
    assert evidence(log(["main.py: error: something earlier", *tb]), 1)[0] == "KeyError: 'lr'"
    two = log(["[rank0]:main.py: error: rank zero's", "[rank1]:main.py: error: rank one's"], code=2)
    assert evidence(two.replace("rank      : 0", "rank      : 1"), 1)[0] == "main.py: error: rank one's"


def test_system_exit_and_error_lines():
    assert evidence(log(["loading", "SystemExit: bad config: lr must be > 0", "bye"]), 3)[0] == (
        "SystemExit: bad config: lr must be > 0")
    errors = ["Error: could not open data/train.bin", "step 1", "RuntimeError: the last one", "cleaning up"]
    assert evidence(log(errors), 4)[0] == "RuntimeError: the last one"
    assert evidence(log(["mylib.DataException: shard 3 is short", "exiting"]), 5)[0] == (
        "mylib.DataException: shard 3 is short")
    # torchrun's own ChildFailedError and report lines are never the worker's Error line
    assert outcome.message_error(log(["training"], code=7)) == ""


def test_sys_exit_with_a_message_leaves_its_last_words_with_exit_code_1():
    said = "train.py: no fineweb_train_*.bin shards in data_dir=data/fineweb10B"
    assert evidence(log(["starting", said]), 1) == (said, "nonzero_exit", 1)
    assert evidence(log(["starting", said], code=1), 1)[0] == said  # before torchrun's report
    ranked = log(["[rank0]:starting", f"[rank0]:{said}"], code=1)
    assert evidence(ranked, 1)[0] == said
    # another exit code: the last line is no evidence (the process may have been ended mid-line)
    assert evidence(log(["iter 10: loss 2.3"]), 3)[0] is None
    assert evidence(log(["iter 10: loss 2.3"], code=3), 1)[0] == "exitcode  : 3 (pid: 4243)"
    # a run that succeeded, or ended by wfops, keeps its own evidence rules
    assert evidence(log([ARGPARSE]), 0, "success")[0] is None
    assert evidence(log(["iter 1", "Killed"]), 143, "timed_out")[1] == "timeout"
