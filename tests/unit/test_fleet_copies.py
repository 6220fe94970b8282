"""A run on two pods (issue 23 #1), pure parts: each run's row comes from the pod the ledger has it on, a copy
that ran elsewhere is a duplicate shown once, a copy still waiting is a stray to withdraw; sweep.wait's exit code
and the status table say so."""

from __future__ import annotations

from wfops import fanout
from wfops.settings.load import parse_settings
from wfops.sweeps import fleet_status
from wfops.sweeps.status import status_text
from wfops.targets import resolve
from wfops.tasks.results import wait_code


def _ledger(where: str = "b") -> dict:
    """r0 on a; r1 moved from a to `where`."""
    return {"sweep_id": "s", "created_at": "", "order": ["r0", "r1"],
            "pods": {n: {"slots": 1, "sweep_id": "s"} for n in "ab"},
            "runs": {"r0": {"pods": ["a"], "entry": {"gpus": "1"}, "moves": [], "row": None},
                     "r1": {"pods": [where], "entry": {"gpus": "1"}, "moves": [], "row": None}}}


def _answers(rows: dict[str, list[dict]]) -> dict:
    pods = resolve.members(parse_settings("OPS_HOSTS=a,b\n", environ={}))
    return {m.name: fanout.Outcome(m, {"runs": rows.get(m.name, [])}) for m in pods}


def test_a_moved_run_that_also_ran_where_it_was_is_one_row_from_its_ledger_pod_and_a_duplicate():
    for order in ("ab", "ba"):  # whichever pod answers last, the row is the ledger's pod's
        rows = {"a": [{"run_id": "r0", "state": "success"}, {"run_id": "r1", "state": "success",
                                                               "duration_secs": 42}],
                "b": [{"run_id": "r1", "state": "running"}]}
        data = fleet_status.joined(_ledger(), _answers({k: rows[k] for k in order}), {})
        r1 = next(r for r in data["runs"] if r["run_id"] == "r1")
        assert (r1["pod"], r1["state"], r1["duplicate"]) == ("b", "running", ["a", "b"]), r1
        assert "r1 ran on a and b" in r1["note"] and "42s of GPU time wasted" in r1["note"], r1["note"]
        assert data["totals"] == {"success": 1, "running": 1}  # counted once
        assert list(data["duplicates"]) == ["r1"] and data["duplicates"]["r1"]["fetched_from"] == "b"
        assert data["strays"] == {}


def test_a_moved_run_still_waiting_where_it_was_is_a_stray_not_a_duplicate():
    rows = {"a": [{"run_id": "r0", "state": "success"}, {"run_id": "r1", "state": "pending"}],
            "b": [{"run_id": "r1", "state": "success"}]}
    data = fleet_status.joined(_ledger(), _answers(rows), {})
    assert data["duplicates"] == {} and data["strays"] == {"a": ["r1"]}
    assert [r["state"] for r in data["runs"]] == ["success", "success"]
    assert "duplicate" not in data["runs"][1]


def test_a_recorded_duplicate_stays_when_its_pod_is_silent_again():
    ledger = _ledger()
    ledger["runs"]["r1"]["copies"] = {"a": {"state": "success", "secs": 5.0, "at": "t"}}
    data = fleet_status.joined(ledger, _answers({"b": [{"run_id": "r1", "state": "success"}]}), {"a": "gone"})
    assert data["duplicates"]["r1"]["pods"] == ["a", "b"]


def test_sweep_wait_exits_10_on_a_duplicate_and_1_when_a_run_failed_too_and_the_table_says_it():
    rows = {"a": [{"run_id": "r0", "state": "success"}, {"run_id": "r1", "state": "success"}],
            "b": [{"run_id": "r1", "state": "success"}]}
    data = fleet_status.joined(_ledger(), _answers(rows), {})
    code, why = wait_code(data)
    assert code == 10 and "r1 ran on a and b" in why, why
    text = status_text(data)
    assert "warning: r1 ran on a and b" in text and text.rstrip().endswith(" / 1 ran twice"), text
    assert text.splitlines()[-1].startswith("2 ok / 0 failed"), text  # counted once
    rows["a"][0]["state"] = "failed"
    assert wait_code(fleet_status.joined(_ledger(), _answers(rows), {}))[0] == 1
    once = {"a": [{"run_id": "r0", "state": "success"}], "b": rows["b"]}  # r1 ran on b only
    assert wait_code(fleet_status.joined(_ledger(), _answers(once), {}))[0] == 0


def test_the_stuck_check_skips_a_row_of_a_run_its_ledger_no_longer_has():
    """sweep.wait's check for runs stuck next to free slots: a row of a run that sweep.add wrote as its intent
    and took back (its pod refused) is skipped, not a KeyError; the ledger's own runs still count."""
    rows = {"a": [{"run_id": "r0", "state": "running"}, {"run_id": "r1", "state": "pending"}]}
    ledger = _ledger("a")
    data = fleet_status.joined(ledger, _answers(rows), {})
    del ledger["runs"]["r1"]
    assert fleet_status._stuck_next_to_free(ledger, data) is False
    assert fleet_status._stuck_next_to_free(_ledger("a"), data) is True  # r1 waits behind r0, b is free
