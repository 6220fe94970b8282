"""Data the repo prepares itself (issue 21, part 4): checkout runs DATA_PREPARE_CMD after the clone, the venv and the
install, in the checkout with the venv first on PATH and WF_DATA_DIR set, only while DATA_CHECK does not pass; its
output is kept on the pod, a failure is one line naming that log and leaves the workflow state where it was. A
tracked task runs with the checkout's venv first on PATH too."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from tests.conftest import Pod, TrainingRepo, checkout_config, wait_until

# the user's own shell command: where it runs, which python it finds, and the data it makes in WF_DATA_DIR
PREPARE = ('echo "prefix=$(python -c \'import sys; print(sys.prefix)\')"; echo "cwd=$PWD"; '
           'echo "token=$HF_TOKEN"; printf x > "$WF_DATA_DIR/train.bin" && printf y > "$WF_DATA_DIR/val.bin"')
TOKEN = "hf_prepare_secret_0123456789"


def _log(pod: Pod) -> Path:
    return pod.outputs / "_control" / "data-prepare.log"


def test_checkout_prepares_the_data_once_in_the_venv_and_task_run_sees_the_venv(ssh_pod: Pod,
                                                                                training_repo: TrainingRepo,
                                                                                pod_python: str):
    pod = ssh_pod
    data = pod.root / "data dir $(touch pwned)"  # a hostile DATA_DIR stays a path: it reaches the command as data
    checkout_config(pod, training_repo, pod_python, DATA_DIR=str(data), DATA_CHECK="train.bin val.bin",
                    DATA_LINK="none", DATA_PREPARE_CMD=PREPARE, HF_TOKEN=TOKEN)
    dry = pod.ok("checkout", "--dry-run")
    assert "do     data" in dry.out and "prepare: DATA_PREPARE_CMD" in dry.out and not data.exists()
    res = pod.ok("checkout", timeout=600)
    repo = pod.root / "repo"
    assert f"prefix={repo}/.venv" in res.err and f"cwd={repo}\n" in res.err
    assert (data / "train.bin").read_text() == "x" and (data / "val.bin").read_text() == "y"
    assert "data          prepared (DATA_PREPARE_CMD ran)" in res.out
    log = _log(pod)
    assert f"prefix={repo}/.venv" in log.read_text() and stat.S_IMODE(log.stat().st_mode) == 0o600
    assert TOKEN not in res.out + res.err and "token=" in res.err  # the secret the command printed is masked
    assert not (pod.root.parent / "pwned").exists() and not (pod.home / "pwned").exists()
    assert pod.state()["state"] == "CHECKED_OUT"
    # idempotent: the data is there, so the command does not run again, and checkout says so
    before = log.read_text()
    again = pod.ok("checkout")
    assert "DATA_PREPARE_CMD skipped" in again.out + again.err and "prefix=" not in again.err
    assert "prepared" not in again.out and log.read_text() == before
    # task.run: the checkout's venv comes first on PATH
    pod.ok("task.run", "--id", "which", "--cmd", "command -v python; python -c 'import sys; print(sys.prefix)'")
    ended = wait_until(lambda: (lambda t: t if t["state"] in ("success", "failed") else None)(
        pod.ok("task.status", "--id", "which", "--json").json()), timeout=60, what="the task to end")
    assert ended["state"] == "success", ended
    lines = pod.ok("task.logs", "--id", "which").out.splitlines()
    assert any(ln.endswith(f"{repo}/.venv/bin/python") for ln in lines), lines
    assert any(ln.endswith(f"{repo}/.venv") for ln in lines), lines


def test_a_failing_or_empty_preparation_is_one_line_and_the_state_stays(local_pod: Pod, training_repo: TrainingRepo,
                                                                       pod_python: str):
    pod = local_pod
    data = pod.root / "prepared"
    checkout_config(pod, training_repo, pod_python, DATA_DIR=str(data), DATA_CHECK="train.bin", DATA_LINK="none",
                    DATA_PREPARE_CMD="echo preparing the data; exit 3")
    failed = pod.wf("checkout", timeout=600)
    log = _log(pod)
    assert failed.rc == 6 and failed.last_err == (
        f"wfops: DATA_PREPARE_CMD failed (exit 3); its output is in {log} on the pod")
    assert log.read_text() == "preparing the data\n"
    assert pod.state()["state"] != "CHECKED_OUT"
    pod.configure(DATA_PREPARE_CMD="true")  # exits 0 but makes nothing
    made_nothing = pod.wf("checkout")
    assert made_nothing.rc == 6 and made_nothing.last_err == (
        f"wfops: DATA_PREPARE_CMD finished but nothing in DATA_DIR={data} matches train.bin (DATA_CHECK); its "
        f"output is in {log} on the pod")
    assert pod.state()["state"] != "CHECKED_OUT"
    # keys that cannot work together: one line, nothing run
    for keys, words in (({"DATA_CHECK": ""}, "DATA_PREPARE_CMD needs DATA_CHECK"),
                        ({"DOWNLOAD_FINEWEB": "1"}, "DATA_PREPARE_CMD and DOWNLOAD_FINEWEB=1")):
        pod.configure(DATA_PREPARE_CMD="touch " + str(pod.root / "ran"), **keys)
        refused = pod.wf("checkout")
        assert refused.rc == 2 and words in refused.last_err and not (pod.root / "ran").exists(), refused.err
        pod.configure(DATA_CHECK="train.bin", DOWNLOAD_FINEWEB="0")
    # data the clone brings (committed to the repo): the plan, made before the clone, says prepare; the pod sees the
    # check pass after the clone and skips the command
    pod.configure(DATA_DIR=str(pod.root / "repo" / "examples" / "nanogpt"), DATA_CHECK="train.py",
                  DATA_PREPARE_CMD="echo ran; exit 9")
    shutil.rmtree(pod.root / "repo")
    res = pod.ok("checkout")
    assert "[prepare] DATA_CHECK already passes" in res.err and "ran" not in log.read_text()
    assert pod.state()["state"] == "CHECKED_OUT"
