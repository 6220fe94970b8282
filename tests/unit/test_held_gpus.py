"""GPUs held by a process outside the sweep: slots.Held (pure) and procs.gpus_in_use against the stand-in
nvidia-smi of tests/fixtures/gpu (the formats of the real one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wfops.agent import procs, slots

SHIM = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"


def test_held_gpus_are_the_free_ones_a_process_holds_asked_at_most_every_two_seconds():
    now, asked, said = [0.0], [], []
    busy = [{"1", "GPU-b"}]

    def query():
        asked.append(now[0])
        return busy[0]

    held = slots.Held(query, said.append, lambda: now[0])
    assert held.held(["0", "1", "2"]) == [] and asked == []  # inactive (WF_FAKE_GPUS, CPU_ONLY): never asks
    held.active = True
    assert held.held(["0", "1", "2"], waiting=0) == [] and asked == []  # no run waits: nothing to ask
    assert held.held(["0", "1", "2"]) == ["1"] and len(said) == 1 and "GPU(s) 1 held" in said[0]
    busy[0] = set()
    now[0] = 1.0
    assert held.held(["0", "1", "2"]) == ["1"] and asked == [0.0]  # within 2 s: the last answer
    assert held.held(["0", "2"]) == [] and len(said) == 2  # GPU 1 was taken meanwhile: nothing held is shown
    now[0] = 2.5
    assert held.held(["0", "1", "2"]) == [] and asked == [0.0, 2.5]
    assert said[-1] == "no free GPU is held by a process outside this sweep any more"


def test_slots_without_takes_the_held_out_for_a_while_and_gives_them_back():
    table = slots.Slots(["0", "1", "2", "3"])
    with table.without(["1"]):
        assert table.free == ["0", "2", "3"] and table.take(2) == ["0", "2"]
    assert table.free == ["1", "3"]


def test_gpus_in_use_names_each_busy_gpu_by_index_and_uuid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state = tmp_path / "gpus.json"
    gpus = [{"name": "NVIDIA H100 80GB HBM3", "uuid": f"GPU-{i}aaa"} for i in range(3)]
    state.write_text(json.dumps({"gpus": gpus, "apps": [{"gpu": 2, "pid": 7, "used_mib": 10}]}))
    monkeypatch.setenv("PATH", f"{SHIM}:/usr/bin:/bin")
    monkeypatch.setenv("WF_TEST_GPU_STATE", str(state))
    assert procs.gpus_in_use() == {"2", "GPU-2aaa"}
    state.write_text(json.dumps({"gpus": gpus, "apps": []}))
    assert procs.gpus_in_use() == set()
    state.write_text(json.dumps({"gpus": gpus, "fail": "NVIDIA-SMI has failed because it couldn't communicate"}))
    assert procs.gpus_in_use() == set()  # a failing nvidia-smi holds nothing back
    monkeypatch.setenv("PATH", str(tmp_path))
    assert procs.gpus_in_use() == set()  # no nvidia-smi
