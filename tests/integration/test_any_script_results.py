"""What wfops makes of a script nobody wrote for it (issue 21, parts 6 and 7), through the real queue over the
loopback sshd: an argparse script in the shape of PyTorch's examples, swept with no METRIC_PATTERNS. A row with a
typo exits 2 with argparse's error, which is the why column; the others' `| end of epoch ... |` lines are metrics
by the default presets, in sweep.status and sweep.report, and a run with one epoch is a visible point in curves.
run.fetch of a run replaced on the pod (part 8) starts a fresh local folder and moves the old one aside."""

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
if rank == 0:
    with open(os.path.join(args.out_dir, "model-%d.pt" % args.epochs), "w") as fh:  # --save, in the run's dir
        fh.write("weights")
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


def sweep_once(pod: Pod, rows: str) -> dict:
    sweep_csv = pod.root.parent / "sweep.csv"
    sweep_csv.write_text("run_id,config,seed,overrides,notes\n" + rows)
    pod.ok("sweep.start", "--csv", str(sweep_csv))
    return wait_until(lambda: (lambda s: s if s["sweep"]["state"] != "running" else None)(
        pod.ok("sweep.status", "--json").json()), timeout=180, interval=0.5, what="the sweep to end")


def test_a_fetch_after_the_run_was_replaced_never_mixes_the_two(argparse_pod: Pod):
    pod = argparse_pod
    local = pod.root.parent / "artifacts" / "r1"
    assert sweep_once(pod, "r1,config/train_tiny.py,1,--epochs=1,\n")["runs"][0]["state"] == "success"
    pod.ok("run.fetch", "r1")
    assert (local / "model-1.pt").exists() and (local / ".wfops-generation").exists()
    first_gen = (local / ".wfops-generation").read_text()
    # a changed row reruns r1: the old run dir goes to _previous/ on the pod, a new one (another generation) is made
    assert sweep_once(pod, "r1,config/train_tiny.py,1,--epochs=2,\n")["runs"][0]["state"] == "success"
    assert [p.name.split(".")[0] for p in (pod.outputs / "_previous").iterdir()] == ["r1"]
    res = pod.ok("run.fetch", "r1")
    assert not (local / "model-1.pt").exists() and (local / "model-2.pt").exists()  # only the new run's files
    [aside] = [p for p in local.parent.iterdir() if p.name.startswith("r1.replaced-")]
    assert (aside / "model-1.pt").exists() and (aside / ".wfops-generation").read_text() == first_gen
    assert f"r1 was replaced on the pod since it was fetched (a rerun): fetched into a fresh r1/, the old local " \
           f"copy is now {aside}" in res.err
    assert "no longer on the pod" not in res.err  # the old copy's files are not reported as deleted on the pod
    again = pod.ok("run.fetch", "r1")  # the same generation now: nothing moves, nothing more is set aside
    assert "replaced" not in again.err and [p.name for p in local.parent.iterdir()].count(aside.name) == 1
    # --merge-replaced: the user asks to fetch a newer run into the same folder
    sweep_once(pod, "r1,config/train_tiny.py,1,--epochs=3,\n")
    merged = pod.ok("run.fetch", "r1", "--merge-replaced")
    assert (local / "model-2.pt").exists() and (local / "model-3.pt").exists() and "replaced" not in merged.err
    assert len([p for p in local.parent.iterdir() if p.name.startswith("r1.replaced-")]) == 1
