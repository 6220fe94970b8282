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


GLOO_ABORT = ["terminate called after throwing an instance of 'gloo::IoException'",
              "  what():  [../third_party/gloo/gloo/transport/tcp/pair.cc:598] Connection closed by peer "
              "[127.0.0.1]:41234"]
GLOO_WHY = ("terminate called after throwing gloo::IoException: [../third_party/gloo/gloo/transport/tcp/pair.cc:598] "
            "Connection closed by peer [127.0.0.1]:41234")


def test_a_worker_that_aborts_says_what_the_cxx_runtime_said_not_just_exitcode_minus_6():
    # rank 1 of two aborts in gloo (SIGABRT: torchrun reports exitcode -6, the run's exit is 134)
    lines = ["[rank0]:step 20: train loss 2.6, val loss 2.6", *("[rank1]:" + ln for ln in GLOO_ABORT)]
    text = log(lines, code=-6).replace("rank      : 0", "rank      : 1")
    assert evidence(text, 1) == (GLOO_WHY, "nccl", 134)  # collective communication: retried by RETRY_ON's default
    # an Error: line the worker printed earlier is not why it died
    earlier = log(["RuntimeError: retrying the download", *GLOO_ABORT], code=-6)
    assert evidence(earlier, 1)[0] == GLOO_WHY
    # the other rank's abort is not the failing rank's evidence
    other = log(["[rank0]:" + ln for ln in GLOO_ABORT] + ["[rank1]:RuntimeError: rank one's"], code=-6)
    assert evidence(other.replace("rank      : 0", "rank      : 1"), 1)[0] == "RuntimeError: rank one's"
    # without its what() line, and an exception that is not one
    assert outcome.message_error(log([GLOO_ABORT[0], "Aborted (core dumped)"])) == (
        "terminate called after throwing gloo::IoException")
    assert outcome.message_error(log(["terminate called without an active exception"])) == (
        "terminate called without an active exception")


def test_gloo_transport_errors_raised_in_python_are_the_communication_class_and_other_gloo_words_are_not():
    raised = ("RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
              "[127.0.0.1]:5000")
    tb = ["Traceback (most recent call last):", '  File "train.py", line 80, in <module>', raised]
    assert evidence(log(tb, code=1), 1) == (raised, "nccl", 1)
    for text in ("RuntimeError: gloo backend not built", "closed by peer: the data loader's socket"):
        assert evidence(log([text], code=1), 1)[1] == "nonzero_exit", text
    # rank 1 exits 3 on purpose; rank 0, in a collective, then fails on gloo's closed connection: the run failed of
    # rank 1's exit, not of the communication
    ranks = log(["[rank1]:rank 1: failing on purpose", *("[rank0]:" + ln for ln in tb)], code=3)
    got = evidence(ranks.replace("rank      : 0", "rank      : 1"), 1)
    assert got == ("exitcode  : 3 (pid: 4243)", "nonzero_exit", 3), got


def test_fatal_python_errors_are_the_evidence_and_a_terminate_line_stays_first():
    assert evidence(log(["step 3", "Fatal Python error: Segmentation fault", "", "Current thread 0x7f (most recent "
                                                                                   "call first):"], code=-11), 1) == (
        "Fatal Python error: Segmentation fault", "nonzero_exit", 139)
    assert outcome.message_error(log([*GLOO_ABORT, "Fatal Python error: Aborted"])) == GLOO_WHY
    for prose in ("the terminate called hook ran", "  terminate called after throwing an instance of 'x'",
                  "what(): not after a terminate line"):
        assert outcome.message_error(log([prose])) == ""
