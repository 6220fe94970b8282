"""The sweep scheduler with real parts: tmux, torchrun (gloo on CPU), the stand-in echo_train.py. GPU packing
with WF_FAKE_GPUS pretend slots, retries, stall detection, fingerprint skips, live edits (sweep.add,
sweep.retry), sweep.list, pruning of _previous/, and the failing worker's own error as evidence.

The scheduler runs on the pod, so most tests use the local target; the ones that edit a running sweep go
over sshd too."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from tests.conftest import Pod, wait_until
from tests.integration.test_sweeps import (
    args_of,
    local_swept,  # noqa: F401 - fixture
    ssh_swept,  # noqa: F401 - fixture
    states,
    status,
    venv_procs,
    wait_sweep,
)

HEADER = "run_id,config,seed,overrides,notes,gpus\n"


def csv_file(pod: Pod, rows: str, name: str = "sweep.csv") -> Path:
    path = pod.root.parent / name
    path.write_text(HEADER + rows)
    return path


def summary(pod: Pod, run_id: str) -> dict:
    return json.loads((pod.outputs / run_id / "summary.json").read_text())


def span(pod: Pod, run_id: str) -> tuple[float, float, set[str]]:
    """(start, end, devices) of a run as the run itself recorded them."""
    args = json.loads((pod.outputs / run_id / "args.json").read_text())
    ended = json.loads((pod.outputs / run_id / "ended.json").read_text())["ended"]
    return args["started"], ended, set(args["cuda_visible_devices"].split(","))


def test_packing_on_four_pretend_gpus_overlaps_runs_on_disjoint_devices(local_swept: Pod):  # noqa: F811 - the fixture
    """1-, 2- and 4-GPU runs on 4 slots: runs overlap as the slot table allows, never share a device, each
    sees its own CUDA_VISIBLE_DEVICES and world size; two 2-process torchruns run at once and both succeed;
    sweep.status shows the GPUs a running run holds."""
    pod = local_swept
    pod.configure(WF_FAKE_GPUS="4", TRAIN_NPROC="")
    rows = ("two-a,config/train_tiny.py,1,sleep=6,,2\n"
            "two-b,config/train_tiny.py,2,sleep=6,,2\n"
            "all-4,config/train_tiny.py,3,sleep=1,,all\n"
            "one-a,config/train_tiny.py,4,sleep=4,,1\n"
            "one-b,config/train_tiny.py,5,sleep=4,,1\n")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, rows)))
    seen = wait_until(lambda: [r for r in status(pod)["runs"] if r["state"] == "running" and r.get("gpus")],
                      timeout=90, interval=0.3, what="a running run with its GPUs")
    assert all(re.fullmatch(r"[0-3](,[0-3])*", r["gpus"]) for r in seen)
    text = pod.ok("sweep.status").out
    assert re.search(r"^two-a\s+running\s+1\s+[0-3],[0-3]\s", text, re.M), text  # attempt 1, its GPUs
    data = wait_sweep(pod, timeout=180)
    assert set(states(data).values()) == {"success"}, data["runs"]
    spans = {rid: span(pod, rid) for rid in states(data)}
    want = {"two-a": 2, "two-b": 2, "all-4": 4, "one-a": 1, "one-b": 1}
    for rid, (_, _, devices) in spans.items():
        assert len(devices) == want[rid] and devices <= {"0", "1", "2", "3"}, (rid, devices)
        assert json.loads((pod.outputs / rid / "args.json").read_text())["world_size"] == want[rid]
        assert summary(pod, rid)["gpus"] == ",".join(sorted(devices))
    overlapping = [(a, b) for a, b in itertools.combinations(spans, 2)
                   if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]]
    for a, b in overlapping:
        assert not spans[a][2] & spans[b][2], f"{a} and {b} ran at once on {spans[a][2] & spans[b][2]}"
    assert ("two-a", "two-b") in overlapping  # two 2-process torchruns at once, both ok
    assert not [p for p in overlapping if "all-4" in p]  # the 4-GPU run had the pod to itself
    assert {"one-a", "one-b"} <= {x for p in overlapping for x in p}
    ports = {json.loads((pod.outputs / r / "status.json").read_text())["port"] for r in ("two-a", "two-b")}
    assert len(ports) == 2  # each torchrun its own rendezvous port
    log = (pod.outputs / "_manifests" / f"{data['sweep']['sweep_id']}.log").read_text()
    assert "5 run(s) queued on 4 GPU slot(s)" in log


def test_a_run_asking_more_gpus_than_the_pod_has_is_refused_before_anything_starts(local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    pod.configure(WF_FAKE_GPUS="2", TRAIN_NPROC="")
    rows = "ok,config/train_tiny.py,1,,,1\nbig,config/train_tiny.py,2,,,4\n"
    res = pod.wf("sweep.start", "--csv", str(csv_file(pod, rows)))
    assert res.rc == 2 and res.last_err == ("wfops: the pod has 2 GPU slot(s) (WF_FAKE_GPUS=2); nothing was started: "
                                            "line 3: big asks for 4 GPU(s)")
    assert not (pod.outputs / "_manifests").exists() and pod.state()["state"] == "CHECKED_OUT"
    res = pod.wf("sweep.start", "--csv", str(csv_file(pod, "zero,config/train_tiny.py,1,,,0\n")))
    assert res.rc == 2 and "line 2: gpus '0' is not a whole number >= 1 or 'all'" in res.err


def test_a_transient_failure_is_retried_and_a_real_one_is_not(local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    flag = pod.root / "failed-once"
    pod.configure(RUN_RETRIES="2", RETRY_BACKOFF_SECS="1")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"flaky,config/train_tiny.py,1,fail_once={flag},,\n"
                                                     "broken,config/train_tiny.py,2,exit=3,,\n")))
    data = wait_sweep(pod, timeout=180)
    assert states(data) == {"flaky": "success", "broken": "failed"}
    flaky = summary(pod, "flaky")
    assert [(a["attempt"], a["state"], a["failure_class"]) for a in flaky["attempts"]] == [
        (1, "failed", "nccl"), (2, "success", None)]
    assert flaky["attempts"][0]["dir"] == "attempts/1" and (flaky["attempt"], flaky["max_attempts"]) == (2, 3)
    first = pod.outputs / "flaky" / "attempts" / "1"
    assert "NCCL error: unhandled system error" in (first / "stdout.log").read_text()
    assert json.loads((first / "status.json").read_text())["state"] == "failed"
    assert "NCCL error" not in (pod.outputs / "flaky" / "stdout.log").read_text()  # each attempt its own log
    broken = summary(pod, "broken")
    assert len(broken["attempts"]) == 1 and broken["failure_class"] == "nonzero_exit"
    assert not (pod.outputs / "broken" / "attempts").exists()
    text = pod.ok("sweep.status").out
    assert re.search(r"^flaky\s+success\s+2/3\s", text, re.M) and re.search(r"^broken\s+failed\s+1/3\s", text, re.M)


def test_a_silent_run_is_ended_as_stalled_with_nothing_left(local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    # 8 s: torchrun and the worker must start and print before the run is silent for that long (on a machine busy
    # with other tests, startup alone took over 3 s)
    pod.configure(RUN_STALL_SECS="8")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, "quiet,config/train_tiny.py,1,sleep=120,,\n")))
    wait_until(lambda: venv_procs(pod), timeout=60, what="the run's processes")  # positive control for the matcher
    data = wait_sweep(pod, timeout=90)
    assert states(data) == {"quiet": "failed"}
    summ = summary(pod, "quiet")
    assert summ["failure_class"] == "stalled" and "RUN_STALL_SECS" in summ["failure_evidence"]
    assert data["runs"][0]["note"].startswith("stalled: no log output and no change in its output dir for 8s")
    assert summ["last_output_at"]  # the last output it did make is on record
    wait_until(lambda: not venv_procs(pod), timeout=10, what="no process of the run left")


def test_quiet_for_while_silent_and_stop_cancels_every_running_run(local_swept: Pod):  # noqa: F811 - the fixture
    """Two runs side by side on 2 pretend GPUs and a tracked task, all silent: sweep.status and task.status
    say `quiet for`; sweep.stop then cancels both runs and leaves no process."""
    pod = local_swept
    pod.configure(WF_FAKE_GPUS="2", TRAIN_NPROC="")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, "hush,config/train_tiny.py,1,sleep=60,,1\n"
                                                     "mute,config/train_tiny.py,2,sleep=60,,1\n")))
    pod.ok("task.run", "--id", "t1", "--cmd", "echo started; sleep 60", "--timeout-secs", "90")
    rows = wait_until(lambda: (lambda rs: rs if len(rs) == 2 else None)(
        [r for r in status(pod)["runs"] if (r.get("quiet_secs") or 0) >= 11]), timeout=90, interval=0.5,
        what="11 s of silence in both runs")
    assert {r["state"] for r in rows} == {"running"} and {r["gpus"] for r in rows} == {"0", "1"}
    text = pod.ok("sweep.status").out
    assert re.search(r"^hush\s+running\s.*quiet for 1\ds", text, re.M), text
    assert re.search(r"^output\s+quiet for \d+s$", pod.ok("task.status", "--id", "t1").out, re.M)
    assert pod.ok("task.status", "--id", "t1", "--json").json()["last_output_at"]
    assert venv_procs(pod)  # positive control: the matcher sees the runs' processes
    pod.ok("sweep.stop")
    assert states(status(pod)) == {"hush": "cancelled", "mute": "cancelled"}
    wait_until(lambda: not venv_procs(pod), timeout=10, what="no process of either run left")


def test_only_a_run_with_the_same_fingerprint_is_skipped(local_swept: Pod):  # noqa: F811 - the fixture
    """Same row: skipped, and the table says why; changed overrides: rerun, the old run dir kept in _previous/
    (pruned to KEEP_PREVIOUS); the status says why it reran."""
    pod = local_swept
    pod.configure(KEEP_PREVIOUS="1")
    csv = csv_file(pod, "r1,config/train_tiny.py,1,lr=1,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    first = wait_sweep(pod)["sweep"]["sweep_id"]
    pod.ok("sweep.start", "--csv", str(csv))
    data = wait_sweep(pod)
    assert states(data) == {"r1": "skipped"}
    assert data["runs"][0]["note"] == f"already ok in {first} with the same command"
    assert not (pod.outputs / "_previous").exists()
    for lr in ("2", "3"):
        csv = csv_file(pod, f"r1,config/train_tiny.py,1,lr={lr},,\n")
        pod.ok("sweep.start", "--csv", str(csv))
        data = wait_sweep(pod)
        assert states(data) == {"r1": "success"} and data["runs"][0]["note"].startswith("rerun: its row changed")
        assert f"lr={lr}" in args_of(pod, "r1")
    kept = [p.name for p in (pod.outputs / "_previous").iterdir()]
    assert len(kept) == 1 and kept[0].startswith("r1.")  # KEEP_PREVIOUS=1: only the newest replaced one
    assert "lr=2" in json.loads((pod.outputs / "_previous" / kept[0] / "args.json").read_text())["argv"]
    log = (pod.outputs / "_manifests" / f"{data['sweep']['sweep_id']}.log").read_text()
    assert "removed r1." in log and "(KEEP_PREVIOUS=1)" in log


def test_an_argparse_row_whose_words_change_reruns_though_its_text_reads_the_same(local_swept: Pod):  # noqa: F811
    """TRAIN_ARG_STYLE=argparse: `--sizes 1 2` (a flag, two values) and `--sizes="1 2"` (one word) both read
    `sizes=1 2`; the second is another command, so the ok run of the first must not skip it."""
    pod = local_swept
    pod.configure(TRAIN_ARG_STYLE="argparse")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, "ap,config/train_tiny.py,1,--sizes 1 2,,\n")))
    first = wait_sweep(pod)["sweep"]["sweep_id"]
    assert args_of(pod, "ap")[-3:] == ["--sizes", "1", "2"]
    changed = csv_file(pod, 'ap,config/train_tiny.py,1,"--sizes=""1 2""",,\n')
    pod.ok("sweep.start", "--csv", str(changed))
    data = wait_sweep(pod)
    assert states(data) == {"ap": "success"}, data["runs"]
    assert data["runs"][0]["note"] == f"rerun: its row changed since the ok run of {first}"
    assert args_of(pod, "ap")[-1] == "--sizes=1 2"
    second = data["sweep"]["sweep_id"]
    pod.ok("sweep.start", "--csv", str(changed))  # the same words again: the same fingerprint
    data = wait_sweep(pod)
    assert states(data) == {"ap": "skipped"}
    assert data["runs"][0]["note"] == f"already ok in {second} with the same command"


def test_add_during_a_run_retry_failed_list_and_an_older_sweep(ssh_swept: Pod):  # noqa: F811 - the fixture
    pod = ssh_swept
    flag = pod.root / "retry-flag"
    pod.ok("sweep.start", "--csv", str(csv_file(pod, "slow,config/train_tiny.py,1,sleep=8,,\n"
                                                     f"flaky,config/train_tiny.py,2,fail_once={flag},,\n")))
    wait_until(lambda: (pod.outputs / "slow" / "args.json").exists(), timeout=60, what="the first run to start")
    before = (pod.outputs / "_manifests" / "sweep-latest.json").read_bytes()
    res = pod.wf("sweep.add", "--csv", str(csv_file(pod, "slow,config/train_tiny.py,9,,,\n", "dupe.csv")))
    assert res.rc == 10 and res.last_err == ("wfops: 1 duplicate run id(s); nothing was added: line 2: run_id slow is "
                                             f"already in {status(pod)['sweep']['sweep_id']}")
    assert (pod.outputs / "_manifests" / "sweep-latest.json").read_bytes() == before
    res, conns, _ = pod.count("sweep.add", "--csv", str(csv_file(pod, "extra,config/train_tiny.py,3,,,\n", "more.csv")))
    assert res.rc == 0 and conns == 1 and "1 run(s) queued; the running queue takes them next" in res.out
    data = wait_sweep(pod, timeout=120)
    sweep_id = data["sweep"]["sweep_id"]
    assert states(data) == {"slow": "success", "flaky": "failed", "extra": "success"}
    assert data["totals"] == {"success": 2, "failed": 1}
    res = pod.ok("sweep.retry", "--failed")
    assert "1 run(s) queued; its queue started again" in res.out
    data = wait_sweep(pod, timeout=120)
    assert data["sweep"]["sweep_id"] == sweep_id and states(data)["flaky"] == "success"
    # a run that did not end ok goes on as its next attempt in its own run dir (its checkpoints stay: issue 20)
    assert not (pod.outputs / "_previous").exists() and (pod.outputs / "flaky" / "attempts" / "1").is_dir()
    assert [(a["attempt"], a["state"]) for a in summary(pod, "flaky")["attempts"]] == [(1, "failed"), (2, "success")]
    res = pod.wf("sweep.retry", "--failed")
    assert res.rc == 5 and res.last_err == f"wfops: no run of {sweep_id} ended failed, timed_out, lost or cancelled"
    res = pod.wf("sweep.retry", "nope")
    assert res.rc == 5 and res.last_err == f"wfops: not a queued run of {sweep_id}: nope"
    pod.ok("sweep.start", "--csv", str(csv_file(pod, "later,config/train_tiny.py,1,,,\n", "later.csv")))
    newest = wait_sweep(pod)["sweep"]["sweep_id"]
    listed = pod.ok("sweep.list", "--json").json()["sweeps"]
    assert [(s["sweep_id"], s["state"], s["totals"]) for s in listed] == [
        (newest, "completed", {"success": 1}), (sweep_id, "completed", {"success": 3})]
    older = pod.ok("sweep.status", "--sweep", sweep_id, "--json").json()
    assert states(older) == {"slow": "success", "flaky": "success", "extra": "success"}
    res = pod.wf("sweep.status", "--sweep", "sweep-20200101T000000Z")
    assert res.rc == 5 and res.last_err == ("wfops: no sweep sweep-20200101T000000Z on this pod (sweep.list shows "
                                            "the sweeps)")
    for bad in ("../x", "sweep-latest"):
        res = pod.wf("sweep.status", "--sweep", bad)
        assert res.rc == 2 and res.last_err == f"wfops: invalid sweep id {bad!r} (sweep.list shows the ids)"


def test_the_failing_workers_own_error_is_the_evidence(local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    pod.ok("sweep.start", "--csv", str(csv_file(pod, "bad,config/train_tiny.py,1,raise='Unknown config key: "
                                                     "data_dir' raise_rank=1,,\n")))
    data = wait_sweep(pod)
    summ = summary(pod, "bad")
    assert summ["failure_evidence"] == "ValueError: Unknown config key: data_dir"
    assert data["runs"][0]["note"] == "nonzero_exit: ValueError: Unknown config key: data_dir"
    log = (pod.outputs / "bad" / "stdout.log").read_text()
    assert re.search(r"\[rank0\]:rank 0: echo_train got", log) and re.search(r"\[rank1\]:rank 1: echo_train", log)
    assert list((pod.outputs / "bad" / "ranks").rglob("stderr.log"))  # each rank's own log kept


def test_python_launcher_cli_flags_optional_seed_and_common_overrides(local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    pod.configure(TRAIN_LAUNCHER="python", TRAIN_INJECT="out_dir data_dir", SWEEP_COMMON_OVERRIDES="lr=1 batch=2")
    csv = pod.root.parent / "noseed.csv"
    csv.write_text("run_id,config,overrides\na1,config/train_tiny.py,batch=8\na2,config/train_tiny.py,\n"
                   "b1,config/train_tiny.py,\n")
    pod.ok("sweep.start", "--csv", str(csv), "--match", "a", "--limit", "1", "--fail-fast", "--force")
    data = wait_sweep(pod)
    assert states(data) == {"a1": "success"}
    args = json.loads((pod.outputs / "a1" / "args.json").read_text())
    assert args["argv"][2:] == [f"out_dir={pod.outputs / 'a1'}", f"data_dir={pod.root / 'data'}", "lr=1", "batch=8"]
    assert (args["world_size"], args["rank_set"]) == (1, False)  # one plain process, no RANK/WORLD_SIZE
    command = (pod.outputs / "a1" / "command.sh").read_text()
    assert re.search(r"\nexec \S+/\.venv/bin/python echo_train\.py config/train_tiny\.py ", command)
    plan = json.loads((pod.outputs / "_manifests" / "sweep-latest.json").read_text())
    assert plan["filters"] == {"match": "a", "start_at": "", "limit": 1} and plan["force"] and plan["fail_fast"]
    res = pod.wf("sweep.start", "--csv", str(csv), "--limit", "x")
    assert res.rc == 2 and "limit" in res.last_err
