"""What a sweep costs (issue 20, part 3): the pure arithmetic of wfops.agent.cost, the billing blocks of
wfops.sweeps.billing, and the cost as sweep.status shows it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from wfops.agent import cost
from wfops.errors import UsageError
from wfops.settings.load import Settings, parse_settings
from wfops.sweeps import billing
from wfops.sweeps.status import status_text
from wfops.targets.target import Member

T0 = 1_800_000_000.0


def iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def attempt(secs: float, held: int, total: int, price: float | None = 4.0, **more: object) -> dict:
    return {"sweep_id": "s1", "state": "success", "started_at": iso(T0), "ended_at": iso(T0 + secs),
            "price_per_hour": price, "slots_held": held, "slots_total": total, **more}


def test_an_attempt_costs_its_share_of_the_pods_price_for_the_time_it_held_it():
    assert cost.attempt_cost(8.0, 3600, 2, 8) == 2.0  # 2 of 8 GPUs for an hour of an $8/h pod
    assert cost.attempt_cost(8.0, 1800, 8, 8) == 4.0
    assert cost.attempt_cost(3.0, 60, 1, 1) == pytest.approx(0.05)  # a CPU pod: one slot, the whole price
    assert cost.attempt_cost(None, 3600, 1, 1) is None  # unknown price: unknown, never 0
    assert cost.attempt_cost(2.0, -5, 1, 1) == 0.0
    assert cost.of_attempt(attempt(1800, 1, 2), T0 + 9999) == 1.0  # $4/h, half an hour, half the pod
    assert cost.of_attempt(attempt(1800, 1, 2, price=None), T0) is None


def test_a_running_attempt_costs_up_to_now_and_a_dead_one_up_to_its_last_output():
    running = attempt(0, 1, 1, state="running", ended_at=None)
    assert cost.of_attempt(running, T0 + 900) == 1.0  # $4/h for 15 minutes so far
    dead = attempt(0, 1, 1, state="lost", ended_at=None, last_output_at=iso(T0 + 450))
    assert cost.of_attempt(dead, T0 + 99999) == 0.5
    # "running" on record, but its runner is gone (sweep.status shows it lost): not to now
    assert cost.of_attempt(dict(running, last_output_at=iso(T0 + 450)), T0 + 99999, alive=False) == 0.5
    assert cost.of_attempt(attempt(1, 1, 1, duration_secs=900.0), T0) == 1.0  # the precise duration wins


def test_a_runs_cost_is_the_sum_of_its_attempts_in_this_sweep(tmp_path: Path):
    run = tmp_path / "r1"
    (run / "attempts" / "1").mkdir(parents=True)
    (run / "attempts" / "1" / "status.json").write_text(json.dumps(attempt(900, 1, 1, state="failed")))
    (run / "status.json").write_text(json.dumps(attempt(1800, 1, 1)))
    assert cost.of_run(str(run), "s1", T0) == (3.0, T0 + 1800)
    assert cost.of_run(str(run), "another-sweep", T0) == (None, None)
    rows = [{"run_id": "r1", "state": "success"}, {"run_id": "r2", "state": "pending"}]
    last = cost.add_costs(lambda rid: str(tmp_path / rid), rows, "s1", {"price_per_hour": 4.0}, T0)
    assert [r["cost_usd"] for r in rows] == [3.0, None] and last == T0 + 1800
    assert cost.add_costs(lambda rid: str(tmp_path / rid), [{"run_id": "r1"}], "s1", {}, T0) is None


def test_the_sweep_cost_is_its_pod_time_of_which_what_no_run_used_is_idle():
    sw = {"billing": {"pod": "p1", "price_per_hour": 4.0, "budget_usd": 10},
          "spans": [[T0, T0 + 1800], [T0 + 3600, None]]}
    rows = [{"cost_usd": 1.25}, {"cost_usd": None}, {"cost_usd": 0.75}]
    got = cost.sweep_cost(sw, rows, True, None, T0 + 5400)  # 30 + 30 minutes of queue (the open span runs to now)
    assert got == {"pod": "p1", "price_per_hour": 4.0, "budget_usd": 10, "pod_secs": 3600.0, "runs_usd": 2.0,
                   "pod_usd": 4.0, "idle_usd": 2.0, "earlier_usd": None, "earlier": []}
    gone = cost.sweep_cost(sw, rows, False, T0 + 4500, T0 + 99999)  # a queue that went away: to its last end
    assert gone["pod_secs"] == 2700.0
    unknown = cost.sweep_cost({"spans": [[T0, T0 + 60]]}, [], False, None, T0)
    assert unknown["pod_usd"] is None and unknown["idle_usd"] is None and unknown["pod_secs"] == 60.0


def test_the_budget_counts_pod_time_and_what_earlier_pods_spent():
    bill = {"price_per_hour": 3600.0, "budget_usd": 10}
    assert cost.spend(bill, [[T0, None]], T0 + 4) == 4.0
    assert cost.over_budget(bill, [[T0, None]], T0 + 9.5) == ""
    assert cost.over_budget(bill, [[T0, None]], T0 + 10) == (
        "budget reached: $10.00 spent of SWEEP_BUDGET_USD=10; no run or attempt starts after it")
    assert cost.over_budget(dict(bill, spent_before_usd=7), [[T0, None]], T0 + 3) != ""
    assert cost.over_budget({"price_per_hour": 1.0}, [[T0, None]], T0 + 1e9) == ""  # no budget
    assert cost.over_budget({"price_per_hour": None, "budget_usd": 1}, [[T0, None]], T0 + 1e9) == ""
    meter = cost.Meter({"price_per_hour": 3600.0, "budget_usd": 0})
    meter.open({"spans": [[T0, T0 + 5]]}, "/nonexistent/log")
    # the earlier span counts
    assert meter.over_budget().startswith("budget reached: $5.00 spent of SWEEP_BUDGET_USD=0") and meter.hit
    assert meter.close()[0] == [T0, T0 + 5] and meter.close()[1][1] is not None


def test_a_replacement_carries_what_the_lost_pod_spent_into_the_budget_and_the_total():
    """A managed sweep's replacement (same volume, same record): the lost pod's time, to its last heartbeat, at its
    price, becomes spent_before_usd; the new pod's price prices what comes after."""
    sw = {"billing": {"pod": "train", "price_per_hour": 3600.0, "budget_usd": 30},
          "spans": [[T0, T0 + 4], [T0 + 10, None]], "alive_at": T0 + 25}  # its queue died after its last beat
    assert cost.closed_spans(sw, False, T0 + 12) == [[T0, T0 + 4], [T0 + 10, T0 + 25]]  # not to the last end
    new = cost.handover(sw, {"price_per_hour": 7200.0}, T0 + 12, T0 + 99)
    assert new == {"pod": "train", "price_per_hour": 7200.0, "budget_usd": 30, "spent_before_usd": 19.0}
    assert sw["spans"] == [] and "alive_at" not in sw and sw["billing"] == new
    assert sw["earlier"] == [{"pod": "train", "price_per_hour": 3600.0, "pod_secs": 19.0, "usd": 19.0}]
    assert cost.over_budget(new, [[T0 + 200, None]], T0 + 205) == ""  # 19 + 2 x 5 = 29
    assert cost.over_budget(new, [[T0 + 200, None]], T0 + 206).startswith("budget reached: $31.00 spent of")
    sw["spans"] = [[T0 + 200, T0 + 201]]
    got = cost.sweep_cost(sw, [{"cost_usd": 5.0}], False, None, T0 + 300)
    assert (got["pod_usd"], got["earlier_usd"], got["idle_usd"]) == (21.0, 19.0, 16.0)
    assert billing.cost_line(got) == ("cost: $5.00 in runs + $16.00 idle = $21.00 of pod time at $7200.00/h, "
                                      "$19.00 of it on lost pods (budget $30.00)")
    again = cost.handover(sw, {"price_per_hour": None}, None, T0 + 300)  # lost twice; an unknown price: the old
    assert again["spent_before_usd"] == 21.0 and again["price_per_hour"] == 7200.0 and len(sw["earlier"]) == 2
    meter = cost.Meter({})
    assert meter.beat(T0) == T0 and meter.beat(T0 + 1) is None and meter.beat(T0 + cost.BEAT_SECS) is not None
    meter.open({"spans": [[T0, None]], "alive_at": T0 + 30}, "/nonexistent/log")
    assert meter.spans[0] == [T0, T0 + 30]  # a queue that died: its span ends at its last heartbeat


def test_the_queue_records_its_heartbeat_when_it_asks_for_its_budget(tmp_path: Path):
    record = tmp_path / "sweep.json"
    record.write_text(json.dumps({"sweep_id": "s1", "state": "running"}))
    meter = cost.Meter({"price_per_hour": 1.0})  # no budget: the heartbeat all the same
    meter.open({}, "/nonexistent/log", str(record))
    assert meter.over_budget() == ""
    beat = json.loads(record.read_text())["alive_at"]
    assert abs(beat - time.time()) < 60 and json.loads(record.read_text())["sweep_id"] == "s1"
    meter.over_budget()
    assert json.loads(record.read_text())["alive_at"] == beat  # not due yet: no write every round


def settings_with(**keys: str) -> Settings:
    return parse_settings("", environ={}).override(keys)


def test_billing_blocks_and_the_refusal_of_a_budget_with_an_unknown_price():
    host = Member("gpu1", "ssh")
    assert billing.billing(settings_with(POD_PRICE_PER_HOUR="2.5"), host) == {
        "pod": "gpu1", "price_per_hour": 2.5, "budget_usd": None}
    assert billing.billing(settings_with(), host)["price_per_hour"] is None  # unknown is fine without a budget
    with pytest.raises(UsageError) as exc:
        billing.billing(settings_with(SWEEP_BUDGET_USD="20"), host)
    assert str(exc.value.message).startswith("SWEEP_BUDGET_USD=20 needs each pod's price, and the price of gpu1 is "
                                             "unknown") and "\n" not in exc.value.message
    fleet = billing.fleet_billing(settings_with(POD_PRICE_PER_HOUR="2", SWEEP_BUDGET_USD="30"),
                                  [Member("a", "ssh"), Member("b", "ssh"), Member("c", "local")])
    assert {n: b["budget_usd"] for n, b in fleet.items()} == {"a": 10.0, "b": 10.0, "c": 10.0}
    free = billing.fleet_billing(settings_with(POD_PRICE_PER_HOUR="0", SWEEP_BUDGET_USD="3"), [Member("a", "ssh")])
    assert free["a"]["budget_usd"] == 3.0


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf", "1e999", "1e308", "2e9"])  # 1e308: $inf for 2 s
def test_price_and_budget_keys_refuse_what_is_no_amount(value: str):
    from wfops.errors import ConfigError

    for key in ("POD_PRICE_PER_HOUR", "SWEEP_BUDGET_USD"):
        with pytest.raises(ConfigError, match=f"^config: {key}=.* is not valid: expected empty, or a number"):
            settings_with(**{key: value})


def test_fleet_cost_sums_what_is_known_and_names_the_rest():
    a = {"price_per_hour": 2.0, "runs_usd": 1.0, "idle_usd": 0.5, "pod_usd": 1.5, "budget_usd": 5}
    b = {"price_per_hour": 4.0, "runs_usd": 2.0, "idle_usd": 0.0, "pod_usd": 2.0, "budget_usd": 5}
    got = billing.fleet_cost({"a": a, "b": b, "c": {"price_per_hour": None}, "d": None})
    assert (got["runs_usd"], got["idle_usd"], got["pod_usd"], got["budget_usd"], got["unknown"]) == (
        3.0, 0.5, 3.5, 10.0, ["c", "d"])
    assert billing.cost_line(got) == ("cost: $3.00 in runs + $0.50 idle = $3.50 of pod time (budget $10.00); "
                                      "price unknown for c, d")
    assert billing.cost_line(billing.fleet_cost({"c": None})) == ""
    assert billing.usd(0.004) == "$0.0040" and billing.usd(None) == "" and billing.usd(12.345) == "$12.35"


def test_sweep_status_shows_a_cost_column_and_the_cost_line_only_with_a_known_price():
    data = {"sweep": {"sweep_id": "s1", "state": "completed"}, "totals": {"success": 1},
            "runs": [{"run_id": "r1", "state": "success", "duration_secs": 60, "cost_usd": 0.25}],
            "cost": {"price_per_hour": 15.0, "runs_usd": 0.25, "idle_usd": 0.05, "pod_usd": 0.3, "pod_secs": 72}}
    text = status_text(data)
    assert "cost" in text.splitlines()[2].split() and "$0.25" in text.splitlines()[3]
    assert text.endswith("cost: $0.25 in runs + $0.05 idle = $0.30 of pod time at $15.00/h")
    data["runs"][0]["cost_usd"], data["cost"] = None, {"price_per_hour": None, "pod_usd": None}
    text = status_text(data)
    assert "cost" not in text.splitlines()[2].split() and "cost:" not in text
