"""Bring your own repo, the argparse shape: examples/argparse-repo is a typical argparse PyTorch script (flags,
some hyphenated, a boolean --tied, --save PATH, data read relative to the working dir and built by prepare.py,
no config file). It is checked out and swept over the loopback sshd, unchanged and with no wrapper, using only
the keys of docs/your-repo.md: no config column, TRAIN_ARG_STYLE=argparse, TRAIN_SCRIPT with a fixed flag,
`--save={out_dir}/model.pt` for every run, the data built by checkout (DATA_PREPARE_CMD), TRAIN_LAUNCHER's
default (auto: plain python on this CPU pod)."""

from __future__ import annotations

import csv
import shutil

import pytest

from tests.conftest import ROOT, Pod, git

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "argparse-repo"
PATTERNS = (r"\| end of epoch\s+(?P<step>\d+) \|.*\| valid loss\s+(?P<val_loss>[\d.]+) \| "
            r"valid ppl\s+(?P<val_ppl>[\d.]+)")


def argparse_origin(tmp_path) -> str:
    work = tmp_path / "argparse-src"
    shutil.copytree(EXAMPLE, work)
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "argparse example", cwd=work)
    bare = tmp_path / "argparse.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    return f"file://{bare}"


def test_an_argparse_script_swept_end_to_end_over_ssh_with_no_wrapper(ssh_pod: Pod, pod_python: str, tmp_path):
    pod = ssh_pod
    pod.configure(
        REPO_URL=argparse_origin(tmp_path), CHECKOUT_BRANCH="main", REMOTE_PYTHON_BIN=pod_python, CPU_ONLY="1",
        BOOTSTRAP_SCRIPT="", REPO_INSTALL_CMD="", TRAIN_WORKDIR=".", DATA_DIR=str(pod.root / "repo" / "data" / "tiny"),
        DATA_CHECK="train.txt valid.txt test.txt", DATA_LINK="none", DATA_PREPARE_CMD="python prepare.py",
        TRAIN_SCRIPT="main.py --epochs 2", TRAIN_ARG_STYLE="argparse", TRAIN_INJECT="seed",
        SWEEP_COMMON_OVERRIDES="--save={out_dir}/model.pt --log-interval=5",
        METRIC_PATTERNS=PATTERNS, METRIC_COLUMNS="val_loss", RUN_TIMEOUT_SECS="600",
    )
    pod.ok("bootstrap")
    pod.ok("checkout", timeout=600)  # the clone, the venv, then prepare.py builds data/tiny (DATA_PREPARE_CMD)
    repo = pod.root / "repo"
    assert (repo / "data" / "tiny" / "train.txt").stat().st_size > 1000
    sweep_csv = tmp_path / "lr.csv"
    sweep_csv.write_text((EXAMPLE / "sweeps" / "lr.csv").read_text()
                         + "typo,1,--learnig-rate 5,a flag the script does not have\n"
                         + "stray,2,--save stray.pt --dry-run,its model lands in the shared checkout\n")
    checked = pod.ok("sweep.validate", "--csv", str(sweep_csv)).out
    assert "lr=20 --tied" in checked and "4 run(s) valid" in checked
    pod.ok("sweep.start", "--csv", str(sweep_csv))
    waited = pod.wf("sweep.wait", timeout=900)
    assert waited.rc == 1 and "1 of 4 run(s) did not succeed: typo" in waited.last_err, waited.err
    assert "error: unrecognized arguments: --learnig-rate 5" in pod.ok("run.logs", "typo").out
    status = pod.ok("sweep.status", "--json").json()
    rows = {r["run_id"]: r for r in status["runs"]}
    assert {rid: r["state"] for rid, r in rows.items()} == {"lr20-tied": "success", "lr5": "success",
                                                            "typo": "failed", "stray": "success"}
    for rid in ("lr20-tied", "lr5"):  # each run's model in its own run dir, none in the checkout
        assert (pod.outputs / rid / "model.pt").stat().st_size > 1000
        command = (pod.outputs / rid / "command.sh").read_text()
        assert "torch.distributed.run" not in command and f"--save={pod.outputs / rid}/model.pt" in command
        assert rows[rid]["note"] == ""
    assert (repo / "stray.pt").is_file() and not (pod.outputs / "stray" / "model.pt").exists()
    assert rows["stray"]["note"] == "wrote into the shared checkout: stray.pt (give it a path in {out_dir})"
    table = pod.ok("sweep.status").out
    assert "wrote into the shared checkout: stray.pt" in table
    report = pod.ok("sweep.report", "--out", str(tmp_path / "report"))
    results = {r["run_id"]: r for r in csv.DictReader((tmp_path / "report" / "results.csv").open())}
    assert results["lr20-tied"]["lr"] == "20" and results["lr20-tied"]["tied"] == "true"
    assert results["lr5"]["nhid"] == "16" and results["lr5"]["tied"] == ""
    for rid in ("lr20-tied", "lr5"):
        assert 0 < float(results[rid]["val_loss_best"]) <= float(results[rid]["val_loss_final"]) + 1e-9 < 10
    assert report.out.splitlines()[0].endswith("4 run(s), sorted by best val_loss")
    added = tmp_path / "added.csv"  # sweep.add reads its rows by the same rule
    added.write_text("run_id,seed,overrides\nadded,3,--lr 10 --dry-run --log-interval 2\n")
    pod.ok("sweep.add", "--csv", str(added))
    assert pod.wf("sweep.wait", timeout=600).rc == 1  # typo still failed
    assert {r["run_id"]: r["state"] for r in pod.ok("sweep.status", "--json").json()["runs"]}["added"] == "success"
    assert (pod.outputs / "added" / "model.pt").is_file()
    assert "--log-interval 2" in (pod.outputs / "added" / "command.sh").read_text()
