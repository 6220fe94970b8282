"""The pod's resume decision (wfops.agent.resume) on real files: which checkpoint, which step, and never a file
outside the run's output dir."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from wfops.agent import resume
from wfops.errors import UsageError
from wfops.settings.checks import Invalid
from wfops.settings.keys import KEYS_BY_NAME
from wfops.settings.load import Settings, parse_settings
from wfops.sweeps.model import resume_args

EX = {"resume_when": "ckpt*.pt", "resume_args": ["init_from=resume"]}


def test_no_resume_when_means_nothing_to_decide(tmp_path: Path):
    (tmp_path / "ckpt.pt").write_text("x")
    assert resume.decide({"resume_args": ["init_from=resume"]}, str(tmp_path)) == {}


def test_no_match_starts_from_scratch_and_says_so(tmp_path: Path):
    assert resume.decide(EX, str(tmp_path)) == {"args": [], "file": None, "note": "no checkpoint: from scratch"}
    assert resume.decide(EX, str(tmp_path / "missing"))["note"] == "no checkpoint: from scratch"


def test_the_newest_match_is_the_checkpoint_and_the_metrics_give_the_step(tmp_path: Path):
    old, new = tmp_path / "ckpt1.pt", tmp_path / "ckpt2.pt"
    old.write_text("a")
    new.write_text("b")
    past = time.time() - 100
    os.utime(old, (past, past))
    (tmp_path / "metrics.jsonl").write_text('{"step": 3, "loss": 1}\n{"iter": 7, "loss": 0.5}\nnot json\n')
    got = resume.decide(EX, str(tmp_path))
    assert got == {"args": ["init_from=resume"], "file": str(new), "step": 7,
                   "note": "resumed from ckpt2.pt (last step in metrics: 7)"}
    os.utime(new, (past - 10, past - 10))
    assert resume.decide(EX, str(tmp_path))["file"] == str(old)


def test_no_metrics_no_step(tmp_path: Path):
    (tmp_path / "ckpt.pt").write_text("x")
    got = resume.decide(EX, str(tmp_path))
    assert got["note"] == "resumed from ckpt.pt" and got["step"] is None


def test_a_glob_into_a_subdir_names_the_file_relative_to_the_output_dir(tmp_path: Path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_text("x")
    got = resume.decide({"resume_when": "checkpoints/*.pt", "resume_args": []}, str(tmp_path))
    assert got["note"] == "resumed from checkpoints/last.pt"


def test_nothing_outside_the_output_dir_counts(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "ckpt.pt").write_text("outside")
    (out / "ckpt.pt").symlink_to(tmp_path / "ckpt.pt")  # a link out of the dir is no checkpoint
    assert resume.decide({"resume_when": "ckpt.pt"}, str(out))["note"] == "no checkpoint: from scratch"
    (out / "dir.pt").mkdir()  # nor is a directory
    assert resume.decide({"resume_when": "*.pt"}, str(out))["file"] is None
    for bad in ("../ckpt.pt", "/etc/passwd", "a/../../ckpt.pt"):
        got = resume.decide({"resume_when": bad, "resume_args": ["x=1"]}, str(out))
        assert got["args"] == [] and got["file"] is None and got["note"].endswith("no checkpoint: from scratch")
        assert "no leading '/', no '..'" in got["note"]


def test_an_output_dir_with_glob_characters_is_taken_literally(tmp_path: Path):
    out = tmp_path / "run[1]"
    out.mkdir()
    (out / "ckpt.pt").write_text("x")
    assert resume.decide({"resume_when": "ckpt.pt"}, str(out))["file"] == str(out / "ckpt.pt")


def settings_with(**keys: str) -> Settings:
    return parse_settings("", environ={}).override(keys)


@pytest.mark.parametrize("value", ["../x.pt", "/abs.pt", "a/../../b", "two\nlines"])
def test_the_resume_when_key_refuses_a_path_escape(value: str):
    with pytest.raises(Invalid):
        KEYS_BY_NAME["RESUME_WHEN"].typed(value)


def test_resume_args_are_checked_as_overrides_and_follow_the_argument_style():
    assert resume_args(settings_with(RESUME_ARGS="init_from=resume 'msg=two words'")) == [
        "init_from=resume", "msg=two words"]
    assert resume_args(settings_with(RESUME_ARGS="init_from=resume", TRAIN_ARG_STYLE="dashdash")) == [
        "--init_from=resume"]
    assert resume_args(settings_with()) == []
    with pytest.raises(UsageError, match=r"^RESUME_ARGS: override 'resume' is not key=value$"):
        resume_args(settings_with(RESUME_ARGS="resume"))
    with pytest.raises(UsageError, match=r"^RESUME_ARGS: override seed is set by the seed column"):
        resume_args(settings_with(RESUME_ARGS="seed=3"))
