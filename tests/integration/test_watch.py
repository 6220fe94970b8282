"""`--watch`: task.status and sweep.status refresh over one connection and end by themselves."""

from __future__ import annotations

import json
import select
import subprocess
from pathlib import Path

import pytest

from tests.conftest import WFOPS, Pod, Result, TrainingRepo, wait_until
from tests.integration.test_sweeps import _swept, write_csv


def _watch(pod: Pod, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(WFOPS), *args], env=pod.env(), cwd=pod.root.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("persist", ["0", "300"])
def test_task_status_watch_ends_with_the_task_over_one_connection(ssh_pod: Pod, persist: str):
    """Cold, the watch makes one connection of its own; warm (the default), it makes none: the keeper's is open.
    One request per refresh (WFOPS_VERBOSE's line for each): a script each (an exec), or warm, once the pod's kept
    agent runs, its answers (no exec)."""
    pod = ssh_pod
    assert pod.sshd is not None
    pod.configure(WF_PERSIST_SECS=persist)
    flag = pod.root / "go"  # the task ends when the test says so, not after a sleep a loaded machine may outlast
    pod.ok("task.run", "--id", "w", "--cmd", f"echo first; while [ ! -e {flag} ]; do sleep 0.05; done; echo last")
    mark = pod.sshd.mark()
    log = pod.root / "watch.err"
    with log.open("w") as err_file:
        watch = subprocess.Popen([str(WFOPS), "task.status", "--id", "w", "--watch", "0.2"],
                                 env={**pod.env(), "WFOPS_VERBOSE": "1"}, cwd=pod.root.parent, stdout=subprocess.PIPE,
                                 stderr=err_file, text=True)
        wait_until(lambda: len(_requests(log.read_text())) >= 4, timeout=60, what="the watch to refresh 4 times")
        flag.touch()
        out, _ = watch.communicate(timeout=120)
    err = log.read_text()
    res = Result(watch.returncode, out, err)
    conns, execs = pod.sshd.counts(mark)
    requests = _requests(err)
    assert res.rc == 0, res.err
    assert conns == (1 if persist == "0" else 0) and len(requests) >= 4
    assert execs == sum("kept agent" not in line for line in requests)  # one exec per refresh the pod's agent
    if persist == "0":  # did not answer; cold, none does
        assert execs == len(requests)
    shown = [ln for ln in res.out.splitlines() if ln.startswith("state ")]  # a view is printed when it changed
    assert shown[0] == "state      running" and shown[-1] == "state      success"
    assert len(shown) < len(requests) and res.out.rstrip().endswith("last")


def _requests(err: str) -> list[str]:
    """The watch's requests to the pod, one WFOPS_VERBOSE line each."""
    return [line for line in err.splitlines() if line.startswith("wfops: exec ")]


def test_task_status_watch_json_is_one_document_per_change(local_pod: Pod):
    flag = local_pod.root / "go"
    local_pod.ok("task.run", "--id", "j", "--cmd", f"while [ ! -e {flag} ]; do sleep 0.05; done")
    watch = _watch(local_pod, "task.status", "--id", "j", "--watch", "0.3", "--json")
    assert watch.stdout is not None
    assert select.select([watch.stdout], [], [], 60)[0], "the watch printed no first document within 60 s"
    first = watch.stdout.readline()
    flag.touch()  # the task ends once the watch has shown it unfinished
    rest, err = watch.communicate(timeout=120)
    assert watch.returncode == 0, err
    docs = [json.loads(line) for line in (first + rest).splitlines() if line.strip()]
    assert docs[0]["state"] in ("pending", "running") and docs[-1]["state"] == "success"


def test_a_bad_watch_interval_is_one_line_and_no_connection(ssh_pod: Pod):
    for value in ("abc", "0", "-1", "99999"):
        res, conns, _ = ssh_pod.count("task.status", "--id", "w", "--watch", value)
        assert res.rc == 2 and conns == 0
        assert res.err.strip() == (f"wfops: --watch={value!r} is not valid: expected seconds between refreshes, "
                                   "> 0 and <= 3600")


def test_sweep_status_watch_ends_when_the_sweep_ends(ssh_pod: Pod, training_repo: TrainingRepo, pod_python: str,
                                                     checked_out: Path):
    pod = _swept(ssh_pod, training_repo, pod_python, checked_out)
    csv = write_csv(pod, "a,config/train_tiny.py,1,sleep=1,\nb,config/train_tiny.py,2,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    res, conns, execs = pod.count("sweep.status", "--watch", "0.3")
    assert res.rc == 0, res.err
    assert conns == 1 and execs >= 2
    heads = [ln for ln in res.out.splitlines() if ln.startswith("sweep-")]
    assert heads[0].endswith(": running") and heads[-1].startswith(heads[0].split(":")[0] + ": completed")
    assert res.out.rstrip().splitlines()[-1].startswith("2 ok")
