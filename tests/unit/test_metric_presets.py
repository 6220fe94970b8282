"""Named metric presets (issue 21, part 6): each preset with real-looking lines of the scripts it is named after and
near-misses that must give nothing; the order a line's metrics are taken in (METRIC_PATTERNS, then the presets as
named); METRIC_PRESETS as a key; the default keeps what the default METRIC_PATTERNS found."""

from __future__ import annotations

import os
import threading

import pytest

from wfops.agent import metrics
from wfops.agent.presets import Extractor
from wfops.errors import ConfigError
from wfops.settings.load import parse_settings

STAMP = "2026-12-01T10:00:00.000+00:00 "


def points(presets: str | list[str], line: str) -> list:
    names = [presets] if isinstance(presets, str) else presets
    return Extractor([f"@{n}" for n in names]).points(STAMP + line)


@pytest.mark.parametrize("line,expected", [
    ("iter 10: loss 4.2345, time 123.45ms, mfu 12.34%", [("loss", 10.0, 4.2345)]),
    ("iter 0: loss 10.9", [("loss", 0.0, 10.9)]),
    ("step 250: train loss 1.9213, val loss 2.0144", [("train_loss", 250.0, 1.9213), ("val_loss", 250.0, 2.0144)]),
    ("[rank0]:iter 3: loss 2.5e-1", [("loss", 3.0, 0.25)]),
])
def test_nanogpt(line, expected):
    assert points("nanogpt", line) == expected


@pytest.mark.parametrize("line", [
    "iteration 10: loss 4.2",  # another word
    "iter 10: loss nan",  # no number
    "step 250: train loss 1.92",  # val loss missing
    "Overriding: max_iters = 20",
    "tokens per iteration will be: 16,384",
])
def test_nanogpt_near_misses(line):
    assert points("nanogpt", line) == []


@pytest.mark.parametrize("line,expected", [
    ("| end of epoch   1 | time: 140.51s | valid loss  5.66 | valid ppl   287.65",
     [("valid_loss", 1.0, 5.66), ("valid_ppl", 1.0, 287.65)]),
    ("| epoch   1 |   200/ 2983 batches | lr 20.00 | ms/batch 45.12 | loss  7.63 | ppl  2065.46",
     [("loss", None, 7.63), ("ppl", None, 2065.46)]),
    ("| End of training | test loss  5.55 | test ppl   256.64",
     [("test_loss", None, 5.55), ("test_ppl", None, 256.64)]),
    ("Train Epoch: 1 [640/60000 (1%)]\tLoss: 2.305134", [("loss", None, 2.305134)]),
    ("Test set: Average loss: 0.0504, Accuracy: 9834/10000 (98%)", [("test_loss", None, 0.0504),
                                                                    ("test_accuracy", None, 98.0)]),
])
def test_pytorch_examples(line, expected):
    assert points("pytorch-examples", line) == expected


@pytest.mark.parametrize("line", [
    "| end of epoch   1 | time: 140.51s | valid loss  5.66 |",  # no ppl
    "end of epoch 1 valid loss 5.66 valid ppl 287.65",  # not the table
    "| epoch   1 | lr 20.00 | loss  7.63 | ppl  2065.46",  # no batch counter
    "Test set: Average loss: 0.05",
    "=" * 89,
])
def test_pytorch_examples_near_misses(line):
    assert points("pytorch-examples", line) == []


@pytest.mark.parametrize("line,expected", [
    ('{"step": 5, "loss": 1.5, "lr": 0.001, "tag": "x", "ok": true}', [("loss", 5.0, 1.5), ("lr", 5.0, 0.001)]),
    ("{'loss': 0.6931, 'grad_norm': 1.25, 'learning_rate': 5e-05, 'epoch': 0.5}",
     [("loss", 0.5, 0.6931), ("grad_norm", 0.5, 1.25), ("learning_rate", 0.5, 5e-05)]),
    ('[rank0]:{"iter": 2, "val_loss": 3.0}', [("val_loss", 2.0, 3.0)]),
    ('{"acc": 0.9}', [("acc", None, 0.9)]),
])
def test_json_lines(line, expected):
    assert points("json", line) == expected


@pytest.mark.parametrize("line", [
    '{"name": "run-1"}',  # no number
    '{"loss": 1.5',  # cut short
    "{__import__('os').system('touch /tmp/wfops-pwned')}",  # never evaluated
    '[{"loss": 1}]',
    "config: {'lr': 0.1}",  # not the whole line
])
def test_json_near_misses(line):
    assert points("json", line) == []


@pytest.mark.parametrize("line,expected", [
    ("step=10 loss=2.31 lr=3e-4", [("loss", 10.0, 2.31), ("lr", 10.0, 0.0003)]),
    ("epoch: 3  acc: 0.91  loss: 0.25", [("acc", 3.0, 0.91), ("loss", 3.0, 0.25)]),
    ("train/loss=1.5 train/acc=0.5", [("train/loss", None, 1.5), ("train/acc", None, 0.5)]),
    ("acc: 98.5% loss: 0.05", [("acc", None, 98.5), ("loss", None, 0.05)]),
])
def test_kv_pairs(line, expected):
    assert points("kv", line) == expected


@pytest.mark.parametrize("line", [
    "loss=2.31",  # one pair is not a metrics line
    "Namespace(lr=0.1, epochs=3, seed=1)",  # argparse's print(args)
    "started at 12:30:45 on 2026-12-01",
    "number of parameters: 10.65M, tokens per iteration will be: 16,384M",
    "Overriding: max_iters = 20, eval_interval = 10",
    "version=2.3.0 build=abc",
])
def test_kv_near_misses(line):
    assert points("kv", line) == []


def test_own_patterns_first_then_the_first_preset_that_matches(tmp_path):
    both = Extractor([r"loss (?P<mine>[\d.]+)", "@nanogpt", "@kv"])
    assert both.points(STAMP + "iter 1: loss 2.0") == [("mine", None, 2.0)]  # the user's pattern takes the line
    assert both.points(STAMP + "step=1 acc=0.5") == [("acc", 1.0, 0.5)]
    assert Extractor(["@nanogpt", "@kv"]).points(STAMP + "iter 1: loss 2.0 step=1 x=3") == [("loss", 1.0, 2.0)]
    assert not Extractor([]) and not Extractor(["@nothing-of-that-name"]) and Extractor(["@json"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "stdout.log").write_text("".join(STAMP + ln + "\n" for ln in [
        "| epoch   1 |   200/ 2983 batches | lr 20.00 | ms/batch 45.12 | loss  7.63 | ppl  2065.46",
        "| end of epoch   1 | time: 140.51s | valid loss  5.66 | valid ppl   287.65",
        "| end of epoch   2 | time: 139.00s | valid loss  5.10 | valid ppl   164.02",
        "[rank1]:| end of epoch   2 | time: 1s | valid loss  9.99 | valid ppl   9.99"]))
    default = metrics.compile_patterns(parse_settings("", environ={}).metric_sources)
    series = metrics.run_series(str(run), default)[1].data
    assert series["valid_loss"] == [[1.0, 5.66], [2.0, 5.1]] and series["loss"] == [[0, 7.63]]
    assert metrics.last_values(str(run), default)["valid_ppl"] == 164.02


def test_the_key_and_the_default():
    assert parse_settings("", environ={}).metric_sources == ["@nanogpt", "@pytorch-examples", "@json", "@kv"]
    s = parse_settings("METRIC_PRESETS=nanogpt,pytorch-examples\nMETRIC_PATTERNS=x (?P<x>\\d)\n", environ={})
    assert s.metric_sources == ["x (?P<x>\\d)", "@nanogpt", "@pytorch-examples"]
    assert parse_settings("METRIC_PRESETS=none\n", environ={}).metric_sources == []
    assert parse_settings("METRIC_PRESETS=kv default\n", environ={}).metric_presets == (
        "kv", "nanogpt", "pytorch-examples", "json")
    with pytest.raises(ConfigError) as exc:
        parse_settings("METRIC_PRESETS=nanogpt,fairseq\n", environ={})
    assert "METRIC_PRESETS" in str(exc.value) and "'fairseq'" in str(exc.value)
    # what the old default METRIC_PATTERNS found, the default still finds, and nothing more on those lines
    default = Extractor(parse_settings("", environ={}).metric_sources)
    assert default.points(STAMP + "iter 7: loss 3.25 from rank 0") == [("loss", 7.0, 3.25)]


def _read_text_by_file_object(path, tail=0):
    """metrics.read_text as it was before issue 24 (a file object)."""
    try:
        with open(path, "rb") as fh:
            if tail:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - tail))
            data = fh.read()
    except OSError:
        return ""
    if tail and len(data) >= tail:
        data = data[data.find(b"\n") + 1:]
    return data.decode("utf-8", "replace")


@pytest.mark.parametrize("data", [b"", b"one line", b"a\nb\nc\n", b"x" * 100, b"line\n" * 40, b"\xff\xfe\n\xc3",
                                  b"\n" * 64, bytes(range(256)) * 3])
@pytest.mark.parametrize("tail", [0, 1, 16, 64, 200, 1 << 16])
def test_read_text_reads_what_a_file_object_read(tmp_path, data, tail):
    """metrics.read_text (os calls since issue 24: no file object for the many runs without a log) gives the text the
    file object gave: the whole file or its last `tail` bytes from a line start; "" for a missing file or a dir."""
    path = tmp_path / "train.log"
    path.write_bytes(data)
    assert metrics.read_text(str(path), tail) == _read_text_by_file_object(str(path), tail)
    for other in (tmp_path / "missing.log", tmp_path):
        assert metrics.read_text(str(other), tail) == _read_text_by_file_object(str(other), tail) == ""


def test_the_tail_of_a_pipe_with_a_live_writer_is_empty_at_once(tmp_path):
    """A train.log that is a FIFO some process holds open (sweep.status reads a log's tail): "" at once, as the file
    object's failing seek gave, not a read that waits for the writer to close."""
    path = tmp_path / "train.log"
    os.mkfifo(path)
    writer = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # a live writer end (O_RDWR: the open does not wait)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(metrics.read_text(str(path), metrics.TAIL_BYTES)),
                              daemon=True)
    try:
        os.write(writer, b"loss=1\n")
        reader.start()
        reader.join(timeout=10)
        assert not reader.is_alive(), "read_text waited for the pipe's writer"
        assert got == [_read_text_by_file_object(str(path), metrics.TAIL_BYTES)] == [""]
    finally:
        os.close(writer)  # a blocked reader (the bug) sees the end of the pipe and ends
        reader.join(timeout=10)
