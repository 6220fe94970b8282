"""What wfops makes of a script nobody wrote for it (issue 21, parts 6 and 7), through the real queue over the
loopback sshd: an argparse script in the shape of PyTorch's examples, swept with no METRIC_PATTERNS. A row with a
typo exits 2 with argparse's error, which is the why column; the others' `| end of epoch ... |` lines are metrics
by the default presets, in sweep.status and sweep.report, and a run with one epoch is a visible point in curves."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import Pod, TrainingRepo, checkout_config, copy_checked_out, wait_until
from tests.realparts import free_port

ARGPARSE_TRAIN = '''
import argparse, math, os
p = argparse.ArgumentParser(description="a word-language-model shaped trainer")
p.add_argument("config", nargs="?")
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--lr", type=float, default=1.0)
p.add_argument("--out_dir", default=".")
args = p.parse_args()
rank = int(os.environ.get("RANK", "0"))
for epoch in range(1, args.epochs + 1):
    loss = 6.0 / (epoch * args.lr) + rank
    print("| epoch %3d |   200/ 2983 batches | lr %.2f | ms/batch 45.12 | loss %5.2f | ppl %8.2f"
          % (epoch, args.lr, loss + 1, math.exp(loss + 1)), flush=True)
    print("-" * 89)
    print("| end of epoch %3d | time:  1.00s | valid loss %5.2f | valid ppl %8.2f" % (epoch, loss, math.exp(loss)),
          flush=True)
    print("-" * 89)
'''


@pytest.fixture
def argparse_pod(ssh_pod: Pod, training_repo: TrainingRepo, pod_python: str, checked_out: Path) -> Pod:
    copy_checked_out(checked_out, ssh_pod)
    (ssh_pod.root / "repo" / "examples" / "nanogpt" / "argparse_train.py").write_text(ARGPARSE_TRAIN)
    checkout_config(ssh_pod, training_repo, pod_python, TRAIN_SCRIPT="argparse_train.py", TRAIN_INJECT="out_dir",
                    TRAIN_ARG_STYLE="dashdash", KILL_GRACE_SECS="2", RDZV_BASE_PORT=str(free_port()))
    return ssh_pod


def test_argparse_error_is_the_why_and_epoch_lines_are_metrics(argparse_pod: Pod):
    pod = argparse_pod
    rows = ("run_id,config,seed,overrides,notes\n"
            "two,config/train_tiny.py,1,--epochs=2 --lr=1,\n"
            "one,config/train_tiny.py,2,--epochs=1 --lr=2,a single epoch: one point\n"
            "typo,config/train_tiny.py,3,--learnig_rate=0.1,\n")
    sweep_csv = pod.root.parent / "sweep.csv"
    sweep_csv.write_text(rows)
    pod.ok("sweep.start", "--csv", str(sweep_csv))
    data = wait_until(lambda: (lambda s: s if s["sweep"]["state"] != "running" else None)(
        pod.ok("sweep.status", "--json").json()), timeout=180, interval=0.5, what="the sweep to end")
    by_id = {r["run_id"]: r for r in data["runs"]}
    assert {k: r["state"] for k, r in by_id.items()} == {"two": "success", "one": "success", "typo": "failed"}
    typo = by_id["typo"]
    assert typo["note"] == "nonzero_exit: argparse_train.py: error: unrecognized arguments: --learnig_rate=0.1", typo
    assert typo["exit_code"] == 2, typo
    text = pod.ok("sweep.status").out
    assert "argparse_train.py: error: unrecognized arguments" in text
    # metrics by the default presets: the first metric found is the column; rank 0's lines only
    assert by_id["two"]["metrics"]["valid_loss"] == 3.0 and by_id["one"]["metrics"]["valid_ppl"] == pytest.approx(
        20.09, abs=0.01)
    out = pod.root.parent / "report"
    pod.ok("sweep.report", "--out", str(out), "--sort", "valid_loss")
    got = {r["run_id"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert got["two"]["valid_loss_final"] == "3.0" and got["two"]["valid_loss_best"] == "3.0"
    assert got["one"]["valid_loss_final"] == "3.0" and got["two"]["loss_best"] == "4.0"
    assert got["typo"]["valid_loss_final"] == "" and (out / "curves.png").stat().st_size > 5000
