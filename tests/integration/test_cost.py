"""What a sweep costs, with real runs (issue 20, part 3): the cost column of sweep.status and results.csv from each
attempt's share of the pod's price (POD_PRICE_PER_HOUR), the sweep's total with its idle part, sweep.report's line;
SWEEP_BUDGET_USD stops the queue on the pod by itself; a budget with an unknown price is refused."""

from __future__ import annotations

import csv
import json
import re

from tests.conftest import Pod
from tests.integration.test_sweeps import (
    local_swept,  # noqa: F401 - fixture
    states,
    wait_sweep,
)

HEADER = "run_id,config,seed,overrides,notes,gpus\n"
CFG = "config/train_tiny.py"


def csv_file(pod: Pod, rows: str) -> str:
    path = pod.root.parent / "sweep.csv"
    path.write_text(HEADER + rows)
    return str(path)


def held(pod: Pod, run_id: str) -> float:
    return float(json.loads((pod.outputs / run_id / "status.json").read_text())["duration_secs"])


def test_the_cost_column_is_each_runs_share_of_the_price_and_the_total_shows_idle(local_swept: Pod):  # noqa: F811
    pod = local_swept
    # $36/h = 1 cent a second; 2 pretend GPUs: a 1-GPU run pays half the pod, the 2-GPU run all of it
    pod.configure(TRAIN_LAUNCHER="python", WF_FAKE_GPUS="2", TRAIN_NPROC="", POD_PRICE_PER_HOUR="36")
    pod.ok("sweep.start", "--csv", csv_file(pod, f"half,{CFG},1,sleep=2,,1\nwhole,{CFG},2,sleep=1,,2\n"))
    data = wait_sweep(pod)
    assert states(data) == {"half": "success", "whole": "success"}
    rows = {r["run_id"]: r for r in data["runs"]}
    assert rows["half"]["cost_usd"] == round(36 * held(pod, "half") / 3600 / 2, 6)
    assert rows["whole"]["cost_usd"] == round(36 * held(pod, "whole") / 3600, 6)
    spent = data["cost"]
    assert spent["price_per_hour"] == 36 and spent["runs_usd"] == round(rows["half"]["cost_usd"]
                                                                       + rows["whole"]["cost_usd"], 6)
    assert spent["pod_usd"] >= spent["runs_usd"] > 0
    assert spent["idle_usd"] == round(spent["pod_usd"] - spent["runs_usd"], 6)
    summ = json.loads((pod.outputs / "half" / "summary.json").read_text())
    assert (summ["slots_held"], summ["slots_total"], summ["price_per_hour"]) == (1, 2, 36)
    text = pod.ok("sweep.status").out
    head = next(line for line in text.splitlines() if line.startswith("run_id"))
    assert "cost" in head.split()
    assert re.search(r"^half\s+success\s.*\$0\.0\d+", text, re.M), text
    assert re.search(r"^cost: \$\S+ in runs \+ \$\S+ idle = \$\S+ of pod time at \$36\.00/h$", text, re.M), text
    res = pod.ok("sweep.report")
    assert re.search(r"^cost: \$\S+ in runs \+ \$\S+ idle = \$\S+ of pod time at \$36\.00/h$", res.out, re.M)
    path = next((pod.root.parent / "artifacts" / "_reports").glob("*/results.csv"))
    by_id = {r["run_id"]: r for r in csv.DictReader(path.open())}
    assert float(by_id["half"]["cost_usd"]) == rows["half"]["cost_usd"]


def test_the_budget_stops_the_queue_on_the_pod_and_starts_nothing_more(local_swept: Pod):  # noqa: F811
    pod = local_swept
    # $1 a second, a $3 budget, one slot, four 2-second runs: the spend passes $3 while the second one runs
    pod.configure(TRAIN_LAUNCHER="python", POD_PRICE_PER_HOUR="3600", SWEEP_BUDGET_USD="3")
    pod.ok("sweep.start", "--csv", csv_file(pod, "".join(f"r{i},{CFG},{i},sleep=2,,\n" for i in range(1, 5))))
    data = wait_sweep(pod, timeout=120)
    assert data["sweep"]["state"] == "stopped", data["sweep"]
    assert re.fullmatch(r"budget reached: \$3\.\d\d spent of SWEEP_BUDGET_USD=3; no run or attempt starts after it",
                        data["sweep"]["reason"]), data["sweep"]["reason"]
    got = states(data)
    assert got["r4"] == "cancelled" and "success" in got.values(), got
    log = (pod.outputs / "_manifests" / f"{data['sweep']['sweep_id']}.log").read_text().splitlines()
    reached = next(i for i, ln in enumerate(log) if "budget reached" in ln)
    assert not [ln for ln in log[reached:] if " start r" in ln], log  # nothing started once it was reached
    started = {ln.split(" start ")[1].split()[0] for ln in log[:reached] if " start r" in ln}
    assert started == {rid for rid, state in got.items() if state != "cancelled"}, (started, got)
    assert all(not (pod.outputs / rid).exists() for rid in set(got) - started)
    assert f"sweep {data['sweep']['sweep_id']} stopped: budget reached" in log[-1]


def test_a_budget_with_an_unknown_price_is_refused_before_anything_starts(local_swept: Pod):  # noqa: F811
    pod = local_swept
    pod.configure(SWEEP_BUDGET_USD="5")
    res = pod.wf("sweep.start", "--csv", csv_file(pod, f"r1,{CFG},1,,,\n"))
    assert res.rc == 2 and res.last_err == (
        "wfops: SWEEP_BUDGET_USD=5 needs each pod's price, and the price of local is unknown: set POD_PRICE_PER_HOUR "
        "(an SSH host or local), or empty SWEEP_BUDGET_USD; nothing was started"), res.err
    assert not (pod.outputs / "_manifests").exists()
    assert pod.state()["state"] == "CHECKED_OUT"


def test_a_fleets_cost_sums_its_pods_and_each_pod_gets_its_share_of_the_budget(tmp_path, fleet_ready):
    fleet = fleet_ready
    cfg = fleet.config(tmp_path, TRAIN_SCRIPT="echo_train.py", TRAIN_WORKDIR="examples/nanogpt",
                       TRAIN_LAUNCHER="python", POD_PRICE_PER_HOUR="36", SWEEP_BUDGET_USD="30")
    rows = "".join(f"r{i},{CFG},{i},sleep=1,,1\n" for i in range(3))
    (tmp_path / "sweep.csv").write_text(HEADER + rows)
    res = fleet.wf(cfg, "sweep.start", "--csv", str(tmp_path / "sweep.csv"))
    assert res.returncode == 0, res.stderr
    done = fleet.wf(cfg, "sweep.wait", "--json", timeout=180)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr)
    data = json.loads(fleet.wf(cfg, "sweep.status", "--json").stdout)
    assert states(data) == {f"r{i}": "success" for i in range(3)}
    spent, pods = data["cost"], data["cost"]["pods"]
    assert sorted(pods) == sorted(p.address for p in fleet.pods) and spent["unknown"] == []
    assert all(c["budget_usd"] == 10 and c["price_per_hour"] == 36 for c in pods.values()), pods  # 30 split 3 ways
    assert spent["runs_usd"] == round(sum(r["cost_usd"] for r in data["runs"]), 6) > 0
    assert spent["pod_usd"] == round(sum(c["pod_usd"] for c in pods.values()), 6) >= spent["runs_usd"]
    text = fleet.wf(cfg, "sweep.status").stdout
    assert re.search(r"^cost: \$\S+ in runs \+ \$\S+ idle = \$\S+ of pod time \(budget \$30\.00\)$", text, re.M), text
