"""A Lium pod's price reaches the sweep (issue 20, part 3): the real lium CLI reads it from the fake API's `ps`
row, sweep.start sends it to the pod, and the runs' cost and the sweep's total are priced with it. A budget needs
no POD_PRICE_PER_HOUR there."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TrainingRepo, checkout_config, copy_checked_out
from tests.integration.test_sweeps import states, wait_sweep
from tests.lium.conftest import LiumPod
from tests.lium.fake_lium import FakeLium


def test_a_lium_pods_price_from_lium_ps_prices_the_sweep(lpod: LiumPod, fake: FakeLium, training_repo: TrainingRepo,
                                                        pod_python: str, checked_out: Path):
    pod = fake.add_pod("train", price=7.5)
    lpod.pin(pod)
    copy_checked_out(checked_out, lpod)
    checkout_config(lpod, training_repo, pod_python, TRAIN_SCRIPT="echo_train.py", TRAIN_LAUNCHER="python",
                    LIUM_TARGET="train", SWEEP_BUDGET_USD="100")
    csv = lpod.root.parent / "sweep.csv"
    csv.write_text("run_id,config,seed,overrides,notes\nr1,config/train_tiny.py,1,sleep=1,\n")
    lpod.ok("sweep.start", "--csv", str(csv))
    data = wait_sweep(lpod)
    assert states(data) == {"r1": "success"}
    assert (data["cost"]["price_per_hour"], data["cost"]["budget_usd"], data["cost"]["pod"]) == (7.5, 100, "train")
    assert 0 < data["runs"][0]["cost_usd"] <= data["cost"]["pod_usd"]
    assert "at $7.50/h (budget $100.00)" in lpod.ok("sweep.status").out
