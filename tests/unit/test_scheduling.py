"""Pure parts of the scheduler: the slot table and start order, pruning of _previous/, the failing worker's
error line, skip reasons, "quiet for", and the sweep CSV's gpus / seed / common overrides / fingerprint."""

from __future__ import annotations

import pytest

from wfops.agent import outcome, runs, slots
from wfops.errors import UsageError
from wfops.output import quiet_note
from wfops.settings.load import parse_settings
from wfops.sweeps.model import fingerprint, parse_csv, train_args


def drain(order: slots.Order, table: slots.Slots, durations: dict[str, int]) -> list[tuple[int, str]]:
    """Simulate the queue: (start time, run) for each run, runs ending after their duration."""
    running, started, now = [], [], 0
    while len(order) or running:
        while True:
            run = order.pop_fitting(len(table.free))
            if run is None:
                break
            ids = table.take(run["need"])
            running.append((now + durations[run["id"]], run["id"], ids))
            started.append((now, run["id"]))
        running.sort()
        end, _, ids = running.pop(0)
        now = end
        table.give(ids)
    return started


def queue(needs: list[int], total: int = 4) -> tuple[slots.Order, slots.Slots]:
    order = slots.Order(total, overtake_limit=total)
    for i, need in enumerate(needs):
        order.push(i, need, {"id": f"r{i}", "need": need})
    return order, slots.Slots(list(range(total)))


def test_runs_start_in_order_and_small_ones_backfill():
    order, table = queue([2, 2, 1, 1])
    started = drain(order, table, {"r0": 5, "r1": 5, "r2": 1, "r3": 1})
    assert started == [(0, "r0"), (0, "r1"), (5, "r2"), (5, "r3")]
    order, table = queue([3, 2, 1])  # r1 does not fit beside r0; r2 does and starts in front of it
    assert drain(order, table, {"r0": 4, "r1": 1, "r2": 1}) == [(0, "r0"), (0, "r2"), (4, "r1")]


def test_a_big_run_is_overtaken_at_most_slot_count_times():
    """Without the limit, a stream of 1-GPU runs would keep a 4-GPU run waiting forever; with it, the big run
    starts after at most 4 later runs went in front of it."""
    needs = [1, 4] + [1] * 20
    order, table = queue(needs)
    started = drain(order, table, {f"r{i}": 3 if i % 2 else 2 for i in range(len(needs))})
    position = [rid for _, rid in started].index("r1")
    assert 1 <= position <= 1 + 4, started
    overtakers = [rid for _, rid in started][1:position]
    assert len(overtakers) == 4  # the 4 backfills allowed, then the reservation


def test_a_run_asking_more_than_the_pod_has_is_taken_out():
    order, _ = queue([1, 8, 2])
    assert [r["id"] for r in order.pop_too_big()] == ["r1"] and len(order) == 2


def test_slots_hand_out_the_lowest_free_ids_and_take_them_back():
    table = slots.Slots(["2", "3", "5", "7"])
    a, b = table.take(2), table.take(1)
    assert (a, b, table.free) == (["2", "3"], ["5"], ["7"])
    table.give(a)
    assert table.free == ["2", "3", "7"]


def test_ports_skip_our_own_and_busy_ones():
    assert slots.pick_port(29500, {29500, 29501}, is_free=lambda p: p != 29502, start=0) == 29503
    assert slots.pick_port(29500, {29510}, is_free=lambda p: p != 29511, start=10) == 29512
    assert slots.pick_port(65000, set(), is_free=lambda p: p < 65200, start=300) == 65000  # wraps to the base
    assert 29500 <= slots.pick_port(29500, set(), is_free=lambda p: True) < 29500 + slots.PORT_SPREAD
    assert slots.need_of("all", 4) == 4 and slots.need_of("2", 4) == 2 and slots.need_of("", 3) == 3


def test_prune_previous_keeps_the_newest_of_that_run_only(tmp_path):
    names = ["r1.20261201T100000Z", "r1.20261201T110000Z", "r1.20261201T110000Z.1", "r1.20261201T090000Z",
             "r1.x.20261201T080000Z", "r10.20261201T070000Z"]
    for name in names:
        (tmp_path / name).mkdir()
    gone = runs.prune_previous(str(tmp_path), "r1", 2)
    assert sorted(gone) == ["r1.20261201T090000Z", "r1.20261201T100000Z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["r1.20261201T110000Z", "r1.20261201T110000Z.1", "r1.x.20261201T080000Z", "r10.20261201T070000Z"])


STAMP = "2026-12-01T10:00:00.000+00:00 "


def test_the_failing_ranks_own_exception_line_is_found():
    log = "".join(STAMP + line + "\n" for line in [
        "[rank0]:[rank0]: Traceback (most recent call last):",
        "[rank0]:[rank0]:   File \"t.py\", line 3, in <module>",
        "[rank0]:[rank0]: RuntimeError: Connection closed by peer",
        "[rank1]:[rank1]: Traceback (most recent call last):",
        "[rank1]:[rank1]:   File \"t.py\", line 2, in <module>",
        "[rank1]:[rank1]: ValueError: Unknown config key: data_dir",
        "Traceback (most recent call last):",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "Root Cause (first observed failure):",
        "  rank      : 1 (local_rank: 1)",
        "  exitcode  : 1 (pid: 42)",
    ])
    info = outcome.classify(log, 1, "failed")
    assert info["evidence"] == "ValueError: Unknown config key: data_dir" and info["failure_class"] == "nonzero_exit"
    single = STAMP + "Traceback (most recent call last):\n" + STAMP + "  x\n" + STAMP + "KeyError: 'lr'\n"
    assert outcome.worker_error(single) == "KeyError: 'lr'"
    assert outcome.worker_error(STAMP + "exiting with 3\n") == ""


def test_skip_reasons_compare_fingerprints():
    ok = {"ok": True, "sweep_id": "sweep-a", "fingerprint": "f1"}
    assert outcome.skip_reason({"fp": "f1"}, ok, False) == (True, "already ok in sweep-a with the same command")
    assert outcome.skip_reason({"fp": "f2"}, ok, False) == (False, "its row changed since the ok run of sweep-a")
    assert outcome.skip_reason({"fp": "f1"}, ok, True)[0] is False
    assert outcome.skip_reason({"fp": "f1", "force": True}, ok, False)[0] is False
    assert outcome.skip_reason({"fp": "f1"}, {"ok": True, "sweep_id": "old"}, False) == (
        False, "the ok run of old has no fingerprint to compare (older wfops)")
    assert outcome.skip_reason({"fp": "f1"}, dict(ok, ok=False), False) == (False, "")


def test_quiet_note_words():
    assert [quiet_note(s) for s in (None, 3, 12, 125, 3725)] == ["", "", "quiet for 12s", "quiet for 2m",
                                                                 "quiet for 1h02m"]


def settings(**values: str):
    return parse_settings("".join(f"{k}={v}\n" for k, v in values.items()), environ={})


def test_gpus_column_optional_seed_and_common_overrides():
    runs_ = parse_csv("run_id,config,seed,gpus\na,c.py,1,2\nb,c.py,2,all\nc,c.py,3,\n")
    assert [r.gpus for r in runs_] == ["2", "all", ""]
    with pytest.raises(UsageError, match="line 2: gpus 'x' is not a whole number >= 1 or 'all'"):
        parse_csv("run_id,config,seed,gpus\na,c.py,1,x\n")
    with pytest.raises(UsageError, match="missing column\\(s\\) seed"):
        parse_csv("run_id,config\na,c.py\n")
    assert parse_csv("run_id,config\na,c.py\n", injected=("out_dir",))[0].seed is None
    s = settings(SWEEP_COMMON_OVERRIDES="lr=1 batch=2", TRAIN_INJECT="seed")
    run = parse_csv("run_id,config,seed,overrides\na,c.py,7,batch=8\n")[0]
    from wfops.sweeps.model import common_overrides

    assert train_args(s, run, "g", common_overrides(s)) == ["seed=7", "lr=1", "batch=8"]


def test_the_fingerprint_follows_the_command_not_the_bookkeeping():
    s = settings()
    a = parse_csv("run_id,config,seed,overrides\na,c.py,1,lr=1\n")[0]
    same = parse_csv("run_id,config,seed,overrides,notes\na,c.py,1,lr=1,other notes\n")[0]
    changed = parse_csv("run_id,config,seed,overrides\na,c.py,1,lr=2\n")[0]
    reseeded = parse_csv("run_id,config,seed,overrides\na,c.py,2,lr=1\n")[0]
    assert fingerprint(s, a) == fingerprint(s, same) == fingerprint(settings(WANDB_GROUP="g2"), a)
    assert len({fingerprint(s, a), fingerprint(s, changed), fingerprint(s, reseeded),
                fingerprint(settings(TRAIN_LAUNCHER="python"), a), fingerprint(settings(RUN_GPUS="2"), a),
                fingerprint(settings(TRAIN_ARG_STYLE="dashdash"), a)}) == 6
