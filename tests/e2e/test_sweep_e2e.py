"""The main job, for real: bootstrap, checkout (default install command), a 3-row sweep of the example's
train.py with torchrun on CPU (2 processes, gloo) over the loopback sshd; one run fails on purpose and one
times out; the status, the summaries, the workflow state and the fetched artifacts are checked."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import Pod, TrainingRepo, checkout_config, wait_until, write_shards
from tests.slowness import scaled

pytestmark = pytest.mark.e2e


def test_sweep_end_to_end_over_ssh(ssh_pod: Pod, training_repo: TrainingRepo, pod_python: str):
    pod = ssh_pod
    # the runs go one after another and `slow` lasts RUN_TIMEOUT_SECS: long enough for `ok` (6 iterations, ~10 s on
    # the quiet machine; 17.5 s under a load of ~8 on 2 cores), scaled with the machine's load (tests/slowness.py),
    # and never more than the 45 s it was before
    checkout_config(pod, training_repo, pod_python, RUN_TIMEOUT_SECS=f"{min(scaled(25), 45):.0f}", KILL_GRACE_SECS="3",
                    REPO_INSTALL_CMD='pip install -q -e "$OPS_REMOTE_REPO[examples]"')
    write_shards(pod.root / "data")
    assert "BOOTSTRAPPED" in pod.ok("bootstrap").out
    pod.ok("checkout", timeout=600)
    csv = pod.root.parent / "sweep.csv"
    csv.write_text(
        "run_id,config,seed,overrides,notes\n"
        "ok,config/train_tiny.py,1,max_iters=6,trains\n"
        'fails,config/train_tiny.py,2,"fail_at_iter=2 fail_rank=1 fail_exit_code=3",rank 1 exits 3\n'
        'slow,config/train_tiny.py,3,"sleep_per_iter=30 max_iters=100",times out\n'
    )
    started = pod.ok("sweep.start", "--csv", str(csv))
    assert "3 run(s) queued" in started.out
    assert pod.state()["state"] == "SWEEP_RUNNING"
    data = wait_until(lambda: (lambda s: s if s["sweep"]["state"] == "completed" else None)(
        pod.ok("sweep.status", "--json").json()), timeout=300, interval=1, what="the sweep to complete")

    rows = {r["run_id"]: r for r in data["runs"]}
    assert {k: r["state"] for k, r in rows.items()} == {"ok": "success", "fails": "failed", "slow": "timed_out"}
    assert data["totals"] == {"success": 1, "failed": 1, "timed_out": 1}
    summaries = {rid: json.loads((pod.outputs / rid / "summary.json").read_text()) for rid in rows}
    assert summaries["ok"]["ok"] is True and summaries["ok"]["exit_code"] == 0
    assert (summaries["fails"]["exit_code"], summaries["fails"]["torchrun_exit_code"]) == (3, 1)
    assert summaries["fails"]["failure_class"] == "nonzero_exit"
    assert summaries["slow"]["failure_class"] == "timeout" and summaries["slow"]["ok"] is False
    for s in summaries.values():
        assert s["git_sha"] == training_repo.main_sha and s["started_at"] and s["ended_at"]
    metrics = [json.loads(line) for line in (pod.outputs / "ok" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["iter"] == 6
    assert (pod.outputs / "ok" / "ckpt.pt").stat().st_size > 100_000
    assert pod.state()["state"] == "SWEEP_COMPLETED"
    leftovers = subprocess.run(["pgrep", "-af", str(pod.root / "repo" / ".venv")], capture_output=True, text=True)
    assert [ln for ln in leftovers.stdout.splitlines() if "pgrep" not in ln] == []

    table = pod.ok("sweep.status").out
    assert "1 ok / 1 failed / 1 timed_out / 0 running / 0 pending / 0 lost" in table

    fetched = pod.ok("run.fetch", "ok")
    local = pod.root.parent / "artifacts" / "ok"
    assert fetched.out.strip() == str(local)
    assert (local / "ckpt.pt").read_bytes() == (pod.outputs / "ok" / "ckpt.pt").read_bytes()
    assert json.loads((local / "summary.json").read_text())["ok"] is True
