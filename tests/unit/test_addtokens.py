"""A fleet sweep.add's token on the pod (wfops.agent.addtokens): an add is applied once, or declared abandoned by
a reader first and then refused; an add at work makes a reader answer `busy`, never `abandoned`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wfops.agent import addtokens
from wfops.agent.registry import Refusal
from wfops.agent.states import Layout

SID = "sweep-20260101T000000Z"


def _pod(tmp_path: Path) -> Layout:
    return Layout(str(tmp_path / "out"))


def test_an_add_applied_is_reported_applied_and_its_token_is_used_once(tmp_path: Path):
    pod = _pod(tmp_path)
    with addtokens.Claim(pod, SID, "ab12cd34"):
        pass
    assert addtokens.abandon(pod, SID, ["ab12cd34"]) == {"ab12cd34": "applied"}
    with pytest.raises(Refusal, match="handled already"), addtokens.Claim(pod, SID, "ab12cd34"):
        pass


def test_an_add_that_arrives_after_its_token_was_abandoned_is_refused_and_recorded_late(tmp_path: Path):
    pod = _pod(tmp_path)
    assert addtokens.abandon(pod, SID, ["ab12cd34", "ab12cd34"]) == {"ab12cd34": "abandoned"}
    ran = []
    with pytest.raises(Refusal, match="given up waiting"), addtokens.Claim(pod, SID, "ab12cd34"):
        ran.append(1)
    assert ran == []
    doc = json.loads((tmp_path / "out" / "_manifests" / f"{SID}.adds" / "ab12cd34").read_text())
    assert doc["state"] == "abandoned" and doc["arrived_late_at"]
    assert addtokens.abandon(pod, SID, ["ab12cd34"]) == {"ab12cd34": "abandoned"}


def test_a_reader_meanwhile_an_add_at_work_answers_busy_and_a_failed_add_is_final(tmp_path: Path):
    pod = _pod(tmp_path)
    with pytest.raises(Refusal), addtokens.Claim(pod, SID, "ab12cd34"):
        assert addtokens.abandon(pod, SID, ["ab12cd34"]) == {"ab12cd34": "busy"}  # its flock is held
        raise Refusal(10, "a duplicate run id")
    assert addtokens.abandon(pod, SID, ["ab12cd34"]) == {"ab12cd34": "failed"}


def test_a_claim_whose_agent_died_is_abandoned_by_the_next_reader(tmp_path: Path):
    pod = _pod(tmp_path)
    path = tmp_path / "out" / "_manifests" / f"{SID}.adds" / "ab12cd34"
    path.parent.mkdir(parents=True)
    path.write_text('{"state": "claimed", "pid": "1"}')  # its lock is free: the agent that wrote it is gone
    assert addtokens.abandon(pod, SID, ["ab12cd34"]) == {"ab12cd34": "abandoned"}
    path.write_text('{"sta')  # torn by a crash mid-write
    assert addtokens.abandon(pod, SID, ["ab12cd34"]) == {"ab12cd34": "abandoned"}


@pytest.mark.parametrize("tokens", [["../../x"], ["AB12CD34"], ["ab"], "ab12cd34", [1]])
def test_hostile_tokens_are_refused_and_write_nothing(tmp_path: Path, tokens: object):
    with pytest.raises(Refusal, match="abandon must be"):
        addtokens.answer(_pod(tmp_path), SID, tokens)
    with pytest.raises(Refusal):
        addtokens.Claim(_pod(tmp_path), "../" + SID, "ab12cd34")
    assert not (tmp_path / "out").exists()
    assert addtokens.answer(_pod(tmp_path), None, ["ab12cd34"]) == {"ab12cd34": "failed"}  # no sweep: none applies


def test_a_token_that_cannot_be_written_is_busy_never_abandoned(tmp_path: Path):
    pod = _pod(tmp_path)
    adds = tmp_path / "out" / "_manifests" / f"{SID}.adds"
    adds.parent.mkdir(parents=True)
    adds.write_text("")  # not a folder: no token file can be made there (as on a full or read-only disk)
    assert addtokens.abandon(pod, SID, ["ab12cd34"]) == {"ab12cd34": "busy"}
