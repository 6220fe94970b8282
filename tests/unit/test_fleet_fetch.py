"""Which copy of a run that ran on two pods run.fetch takes when there is no usable ledger (wfops.sweeps.fleet_fetch),
and which sweep.add runs whose answer was lost the pods resolve as never queued (wfops.sweeps.fleet_copies)."""

from __future__ import annotations

from wfops.sweeps.fleet_copies import not_queued, to_abandon
from wfops.sweeps.fleet_fetch import choose, pod_dir_name


def _row(rid: str, state: str) -> dict:
    return {"run_id": rid, "state": state, "duration_secs": 3.0}


def test_success_wins_then_an_ended_copy_then_the_first_pod_in_the_config():
    rows = {"a": [_row("r1", "failed"), _row("r2", "success"), _row("r3", "running"), _row("r5", "success")],
            "b": [_row("r1", "success"), _row("r2", "success"), _row("r3", "failed"), _row("r4", "pending")],
            "c": [_row("r5", "success")]}
    got = {pod: (share.mine, share.dups) for pod, share in choose(rows, ["a", "b", "c"]).items()}
    assert got == {"a": (["r2", "r5"], ["r1", "r3"]),
                   "b": (["r1", "r3"], ["r2"]),  # r4 never started there: nothing to fetch, no copy
                   "c": ([], ["r5"])}
    # the config's order decides a tie, not the order the pods answered in
    assert choose({"b": [_row("r", "success")], "a": [_row("r", "success")]}, ["a", "b"])["a"].mine == ["r"]


def test_a_pods_name_as_a_folder():
    assert pod_dir_name("root@127.0.0.2:2222") == "root_127.0.0.2_2222"
    assert pod_dir_name("../..") == "_"
    assert pod_dir_name("..") == "pod"


def test_a_sent_run_is_not_queued_only_when_its_pod_answers_without_it():
    sent = {"pod": "A", "at": "t", "why": "w", "closed": 100.0}
    ledger = {"runs": {"x": {"pods": ["A"], "sent": sent},
                       "y": {"pods": ["B"], "sent": dict(sent, pod="B")},
                       "z": {"pods": ["A"], "sent": sent},
                       "v": {"pods": ["A"], "sent": {"pod": "A", "at": "t", "why": "w"}},  # sweep.add still waits
                       "w": {"pods": ["A"]}}}
    rows = {"z": {"run_id": "z", "state": "pending"}}
    free = {"busy": False}
    assert not_queued(ledger, rows, {"A": free}, asked=101.0) == {"x": "A"}  # B did not answer: y may be there
    # an answer asked before sweep.add stopped waiting says nothing (its request may still be on the way)
    assert not_queued(ledger, rows, {"A": free, "B": free}, asked=99.0) == {}
    # a pod whose command lock is held (an add at work) settles no mark without a token
    assert not_queued(ledger, rows, {"A": {"busy": True}}, asked=101.0) == {}


def test_a_sent_run_with_a_token_is_not_queued_only_when_its_pod_proves_the_add_will_never_apply():
    """The pod's word on the request's token decides, not whether its command lock is free: an add whose agent
    had not yet taken the lock (stopped before it) is not at work, yet may still queue the run."""
    sent = {"pod": "A", "at": "t", "why": "w", "closed": 100.0, "token": "aa11bb22"}
    ledger = {"runs": {"x": {"pods": ["A"], "sent": sent}}}
    for state, gone in [("abandoned", True), ("failed", True), ("busy", False), ("applied", False), (None, False)]:
        answer = {"busy": False, "adds": {"aa11bb22": state} if state else {}}
        assert not_queued(ledger, {}, {"A": answer}, asked=101.0) == ({"x": "A"} if gone else {}), state
    assert to_abandon(ledger, asked=101.0) == {"A": ["aa11bb22"]}
    assert to_abandon(ledger, asked=99.0) == {}  # sweep.add still waited then: never abandoned under it
    open_mark = {"runs": {"x": {"pods": ["A"], "sent": {k: v for k, v in sent.items() if k != "closed"}}}}
    assert to_abandon(open_mark, asked=1e12) == {}


def _copy(folder, generation: str) -> None:
    folder.mkdir(parents=True)
    (folder / ".wfops-generation").write_text(generation + "\n")


def _layout(dest) -> dict[str, str]:
    """folder (relative) -> the generation it holds, for every copy of run r."""
    return {str(p.parent.relative_to(dest)): p.read_text().strip() for p in sorted(dest.rglob(".wfops-generation"))}


def test_when_the_winning_copy_changes_the_local_folders_swap_instead_of_piling_up(tmp_path):
    from wfops.sweeps.fleet_fetch import Share, settle_copies

    _copy(tmp_path / "r", "A1")
    _copy(tmp_path / "_duplicates" / "B" / "r", "B1")
    assert settle_copies(tmp_path, {"A": Share(mine=["r"]), "B": Share(dups=["r"])}) == []  # as laid out: recorded
    said = settle_copies(tmp_path, {"A": Share(dups=["r"]), "B": Share(mine=["r"])})  # B's copy ended success
    assert _layout(tmp_path) == {"r": "B1", "_duplicates/A/r": "A1"}, _layout(tmp_path)  # one folder per pod
    assert len(said) == 1 and said[0].startswith("wfops: r: the copy from B is the one run.fetch takes now"), said
    assert f"from {tmp_path / 'r'} to {tmp_path / '_duplicates/A/r'}" in said[0], said
    assert f"from {tmp_path / '_duplicates/B/r'} to {tmp_path / 'r'}" in said[0], said
    assert settle_copies(tmp_path, {"A": Share(dups=["r"]), "B": Share(mine=["r"])}) == []  # again: nothing moves
    assert _layout(tmp_path) == {"r": "B1", "_duplicates/A/r": "A1"}


def test_a_layout_an_older_wfops_left_is_recognised_and_a_winner_never_fetched_leaves_room(tmp_path):
    from wfops.sweeps.fleet_fetch import Share, settle_copies

    _copy(tmp_path / "r", "A1")  # no record of where RUN/ came from: the one pod with no folder apart
    _copy(tmp_path / "_duplicates" / "B" / "r", "B1")
    assert settle_copies(tmp_path, {"A": Share(dups=["r"]), "B": Share(mine=["r"]), "C": Share()})
    assert _layout(tmp_path) == {"r": "B1", "_duplicates/A/r": "A1"}
    assert settle_copies(tmp_path, {"A": Share(dups=["r"]), "B": Share(dups=["r"]), "C": Share(mine=["r"])})
    assert _layout(tmp_path) == {"_duplicates/A/r": "A1", "_duplicates/B/r": "B1"}  # C's is fetched into r/
