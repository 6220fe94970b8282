"""Sweeps through the real queue: tmux, real torchrun (2 processes, gloo), real rsync, with a stand-in
training script (echo_train.py) that records exactly the argv it got. tests/e2e trains the real model."""

from __future__ import annotations

import csv as csv_module
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Pod, TrainingRepo, checkout_config, copy_checked_out, wait_until
from tests.slowness import factor, scaled
from wfops.settings.load import load_settings
from wfops.sweeps.model import fingerprint, parse_csv

HEADER = "run_id,config,seed,overrides,notes\n"


def _swept(pod: Pod, training_repo: TrainingRepo, pod_python: str, template: Path) -> Pod:
    """A checked-out pod (a copy of the session's real checkout) whose sweeps run echo_train.py."""
    copy_checked_out(template, pod)
    checkout_config(pod, training_repo, pod_python, TRAIN_SCRIPT="echo_train.py", KILL_GRACE_SECS="2")
    assert pod.ok("fsm.status", "--json").json()["state"] == "CHECKED_OUT"
    return pod


@pytest.fixture
def swept(pod: Pod, training_repo: TrainingRepo, pod_python: str, checked_out: Path) -> Pod:
    return _swept(pod, training_repo, pod_python, checked_out)


@pytest.fixture
def ssh_swept(ssh_pod: Pod, training_repo: TrainingRepo, pod_python: str, checked_out: Path) -> Pod:
    return _swept(ssh_pod, training_repo, pod_python, checked_out)


@pytest.fixture
def local_swept(local_pod: Pod, training_repo: TrainingRepo, pod_python: str, checked_out: Path) -> Pod:
    return _swept(local_pod, training_repo, pod_python, checked_out)


def write_csv(pod: Pod, rows: str | list[list[str]], name: str = "sweep.csv") -> Path:
    path = pod.root.parent / name
    if isinstance(rows, str):
        path.write_text(HEADER + rows)
    else:
        with path.open("w", newline="") as fh:
            writer = csv_module.writer(fh)
            writer.writerow(HEADER.strip().split(","))
            writer.writerows(rows)
    return path


def status(pod: Pod) -> dict:
    return pod.ok("sweep.status", "--json").json()


def wait_sweep(pod: Pod, timeout: float = 120) -> dict:
    """The sweep's status once it is no longer running. `sweep.wait` blocks until the queue runner exits (one
    command, woken by the exit, as a user waits); the status is then read until it says so, in case the two see
    the end at different moments (polling every 0.5 s is what this did alone before: a new command a poll, each
    an interpreter and a connection, on the 2 cores the runs themselves need). Both together keep to `timeout`:
    the reading gets what the wait left of it, and at least 10 s."""
    started = time.monotonic()
    pod.wf("sweep.wait", "--timeout-secs", str(round(scaled(timeout))), timeout=timeout + 30)
    left = timeout - (time.monotonic() - started) / factor()
    return wait_until(lambda: (lambda s: s if s["sweep"]["state"] != "running" else None)(status(pod)),
                      timeout=max(left, 10), interval=0.5, what="the sweep to end")


def states(data: dict) -> dict[str, str]:
    return {r["run_id"]: r["state"] for r in data["runs"]}


def args_of(pod: Pod, run_id: str) -> list[str]:
    return json.loads((pod.outputs / run_id / "args.json").read_text())["argv"]


def venv_procs(pod: Pod) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(pod.root / "repo" / ".venv")], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "pgrep" not in ln]


def test_the_seed_command_and_hostile_overrides_arrive_verbatim(swept: Pod):
    pod = swept
    x, y, z = (pod.root / n for n in ("X-pwned", "Y-pwned", "Z-pwned"))
    overrides = f"note='$(touch {x})' tick='`touch {y}`' semi='a;b' q=\"it's\" spaced='two words'"
    csv = write_csv(pod, [["hostile", "config/train_tiny.py", "5", overrides, f"notes $(touch {z})"]])
    started = pod.ok("sweep.start", "--csv", str(csv)).out
    sweep_id = started.split()[1].rstrip(":")
    data = wait_sweep(pod)
    assert states(data) == {"hostile": "success"}
    argv = args_of(pod, "hostile")
    assert argv[1:] == ["config/train_tiny.py", f"out_dir={pod.outputs / 'hostile'}", f"data_dir={pod.root / 'data'}",
                        "seed=5", "wandb_log=False", f"wandb_group={sweep_id}", "wandb_run_name=hostile",
                        f"note=$(touch {x})", f"tick=`touch {y}`", "semi=a;b", "q=it's", "spaced=two words"]
    assert not x.exists() and not y.exists() and not z.exists()
    command = (pod.outputs / "hostile" / "command.sh").read_text()
    assert re.search(r"-m torch\.distributed\.run --nnodes=1 --nproc-per-node=2 --rdzv-backend=c10d "
                     r"--rdzv-endpoint=localhost:\d+ --rdzv-id=hostile-1 --rdzv-conf=is_host=1 --tee=3 "
                     r"--log-dir=\S+/hostile/ranks "
                     r"echo_train\.py config/train_tiny\.py", command), command
    assert json.loads((pod.outputs / "hostile" / "args.json").read_text())["world_size"] == 2
    assert pod.state()["state"] == "SWEEP_COMPLETED"
    manifests = sorted(p.name for p in (pod.outputs / "_manifests").iterdir())
    assert "sweep-latest.csv" in manifests and f"{sweep_id}.csv" in manifests
    assert any(n.startswith("workflow-") and n.endswith(".env") for n in manifests)
    assert (pod.outputs / "_manifests" / "sweep-latest.csv").read_text() == csv.read_text()
    plan = json.loads((pod.outputs / "_manifests" / f"{sweep_id}.json").read_text())
    assert plan["git_sha"] == subprocess.run(["git", "-C", str(pod.root / "repo"), "rev-parse", "HEAD"],
                                             capture_output=True, text=True).stdout.strip()
    assert plan["wfops_version"]
    assert not (pod.root / "repo" / "sweep-latest.csv").exists()


def test_argument_style_and_injection_are_configurable(swept: Pod):
    pod = swept
    pod.configure(TRAIN_ARG_STYLE="dashdash", TRAIN_INJECT="out_dir")
    csv = write_csv(pod, "dd,config/train_tiny.py,1,lr=3 --wd=1,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    wait_sweep(pod)
    assert args_of(pod, "dd")[1:] == ["config/train_tiny.py", f"--out_dir={pod.outputs / 'dd'}", "--lr=3", "--wd=1"]


def test_filters_skip_of_completed_runs_and_force(swept: Pod):
    pod = swept
    csv = write_csv(pod, "a1,config/train_tiny.py,1,,\na2,config/train_tiny.py,2,,\nb1,config/train_tiny.py,3,,\n"
                         "b2,config/train_tiny.py,4,,\n")
    pod.configure(SWEEP_MATCH="a")
    pod.ok("sweep.start", "--csv", str(csv))
    assert states(wait_sweep(pod)) == {"a1": "success", "a2": "success"}
    assert not (pod.outputs / "b1").exists()
    first_summary = (pod.outputs / "a2" / "summary.json").read_text()

    pod.configure(SWEEP_MATCH="", SWEEP_START_AT="a2", SWEEP_LIMIT="2")
    pod.ok("sweep.start", "--csv", str(csv))
    data = wait_sweep(pod)
    assert states(data) == {"a2": "skipped", "b1": "success"}
    assert (pod.outputs / "a2" / "summary.json").read_text() == first_summary
    assert not (pod.outputs / "b2").exists()
    assert data["totals"] == {"skipped": 1, "success": 1}

    pod.configure(SWEEP_START_AT="", SWEEP_LIMIT="", SWEEP_MATCH="a2", SWEEP_FORCE="1")
    pod.ok("sweep.start", "--csv", str(csv))
    assert states(wait_sweep(pod)) == {"a2": "success"}
    assert (pod.outputs / "a2" / "summary.json").read_text() != first_summary
    assert [p.name.split(".")[0] for p in (pod.outputs / "_previous").iterdir()] == ["a2"]


def test_continues_past_a_failure_by_default_and_fail_fast_stops(swept: Pod):
    pod = swept
    csv = write_csv(pod, "bad,config/train_tiny.py,1,exit=4 exit_rank=1,\ngood,config/train_tiny.py,2,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    data = wait_sweep(pod)
    assert states(data) == {"bad": "failed", "good": "success"}
    summary = json.loads((pod.outputs / "bad" / "summary.json").read_text())
    assert (summary["ok"], summary["exit_code"], summary["torchrun_exit_code"]) == (False, 4, 1)
    assert summary["failure_class"] == "nonzero_exit" and summary["failure_evidence"].startswith("exitcode")
    pod.configure(SWEEP_FAIL_FAST="1", SWEEP_FORCE="1")
    pod.ok("sweep.start", "--csv", str(csv))
    data = wait_sweep(pod)
    assert states(data) == {"bad": "failed", "good": "cancelled"}
    assert data["sweep"]["reason"] == "fail-fast: bad ended failed"


def test_local_sync_mirrors_and_always_syncs_at_the_end(swept: Pod):
    pod = swept
    fast = pod.root / "fast"
    pod.configure(RUN_OUT_MODE="local_sync", RUN_OUT_LOCAL_ROOT=str(fast), SYNC_INTERVAL_SECS="1")
    csv = write_csv(pod, "synced,config/train_tiny.py,1,ticks=3,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    wait_sweep(pod)
    run = pod.outputs / "synced"
    assert args_of(pod, "synced")[2] == f"out_dir={fast / 'synced'}"
    for name in ("tick0.txt", "tick1.txt", "tick2.txt", "rank0.txt", "rank1.txt", "args.json"):
        assert (run / name).is_file(), name
    log = (run / "sync.log").read_text()
    assert "periodic sync" in log and log.rstrip().splitlines()[-1].endswith("final sync")
    assert json.loads((run / "summary.json").read_text())["final_sync"] == "ok"


def test_a_failed_final_sync_is_a_failed_run_everywhere(swept: Pod):
    pod = swept
    pod.configure(RUN_OUT_MODE="local_sync", RUN_OUT_LOCAL_ROOT=str(pod.root / "fast"), SYNC_INTERVAL_SECS="60",
                  SWEEP_FAIL_FAST="1")
    pod.ok("sweep.start", "--csv", str(write_csv(pod, "gone,config/train_tiny.py,1,sleep=2 vanish=1,\n"
                                                       "next,config/train_tiny.py,2,,\n")))
    data = wait_sweep(pod)
    assert states(data) == {"gone": "failed", "next": "cancelled"}
    assert data["runs"][0]["note"] == "sync_failed: final sync: rsync exit 23"
    assert data["sweep"]["reason"] == "fail-fast: gone ended failed"  # fail-fast saw it
    st = json.loads((pod.outputs / "gone" / "status.json").read_text())
    summary = json.loads((pod.outputs / "gone" / "summary.json").read_text())
    assert st["state"] == "failed" and "final sync" in st["reason"] and st["exit_code"] == 0
    assert summary["ok"] is False and summary["failure_class"] == "sync_failed"
    assert summary["final_sync"].startswith("failed (rsync exit ")
    # the human table: gone's own row says failed and why (the totals line says "N failed" whatever the rows say)
    table = pod.ok("sweep.status").out
    row = next((ln.split() for ln in table.splitlines() if ln.split()[:1] == ["gone"]), None)
    assert row is not None and row[1] == "failed", table
    assert re.search(r"^gone\s+failed\s.*sync_failed: final sync: rsync exit 23\s*$", table, re.M), table
    assert re.search(r"^next\s+cancelled\s", table, re.M), table


def test_stop_cancels_the_running_run_and_the_queue(swept: Pod):
    pod = swept
    pod.configure(RUN_OUT_MODE="local_sync", RUN_OUT_LOCAL_ROOT=str(pod.root / "fast"), SYNC_INTERVAL_SECS="60")
    csv = write_csv(pod, "long,config/train_tiny.py,1,sleep=300,\nnext,config/train_tiny.py,2,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    wait_until(lambda: (pod.root / "fast" / "long" / "args.json").exists(), timeout=90, what="the run to start")
    assert not (pod.outputs / "long" / "args.json").exists()  # not synced yet: SYNC_INTERVAL_SECS=60
    assert len(venv_procs(pod)) >= 3  # positive control: the matcher sees torchrun and its two workers
    res = pod.ok("sweep.stop")
    assert "stopped (stopped by sweep.stop)" in res.out
    data = status(pod)
    assert states(data) == {"long": "cancelled", "next": "cancelled"}
    assert data["runs"][1]["note"] == "not started: the sweep was stopped first"
    assert pod.state()["state"] == "SWEEP_COMPLETED"
    assert (pod.outputs / "long" / "args.json").is_file()  # the final sync ran
    assert "final sync" in (pod.outputs / "long" / "sync.log").read_text()
    wait_until(lambda: not venv_procs(pod), timeout=10, what="no training process left")
    res = pod.wf("sweep.stop")
    assert res.rc == 10 and res.last_err.startswith("wfops: no sweep is running (latest: sweep-")


def test_killed_queue_runner_shows_lost(swept: Pod):
    pod = swept
    csv = write_csv(pod, "victim,config/train_tiny.py,1,sleep=300,\nafter,config/train_tiny.py,2,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    wait_until(lambda: (pod.outputs / "victim" / "args.json").exists(), timeout=90, what="the run to start")
    runner = json.loads((pod.outputs / "_control" / "sweep.json").read_text())["pid"]
    assert len(venv_procs(pod)) >= 3  # positive control: the matcher sees torchrun and its two workers
    os.kill(runner, signal.SIGKILL)
    data = wait_until(lambda: (lambda s: s if s["runs"][0]["state"] == "lost" else None)(status(pod)),
                      timeout=60, what="the run to be reported lost")
    assert data["sweep"]["state"] == "lost" and "queue runner" in data["sweep"]["reason"]
    assert states(data) == {"victim": "lost", "after": "pending"}
    assert "queue runner is gone" in data["runs"][1]["note"]
    wait_until(lambda: not venv_procs(pod), timeout=15, what="the orphaned run to be ended")
    # read-only: sweep.status shows what happened and leaves the state file as it was, bytes and mtime
    before = (pod.state_file.read_bytes(), pod.state_file.stat().st_mtime_ns)
    table = pod.ok("sweep.status").out
    assert "victim" in table and "lost" in table and "0 ok / 0 failed / 0 running / 1 pending / 1 lost" in table
    assert "still SWEEP_RUNNING on record: the next command that changes the pod records SWEEP_COMPLETED" in table
    assert (pod.state_file.read_bytes(), pod.state_file.stat().st_mtime_ns) == before
    assert pod.ok("fsm.status", "--json").json()["effective"]["state"] == "SWEEP_COMPLETED"
    assert (pod.state_file.read_bytes(), pod.state_file.stat().st_mtime_ns) == before
    pod.ok("task.run", "--id", "after-the-sweep", "--cmd", "true")  # a mutating command records the end
    assert pod.state()["state"] == "SWEEP_COMPLETED"
    assert "sweep lost: the queue runner" in pod.state()["reason"]


def test_killed_run_supervisor_is_recorded_lost_and_the_queue_goes_on(swept: Pod):
    pod = swept
    csv = write_csv(pod, "victim,config/train_tiny.py,1,sleep=300,\nafter,config/train_tiny.py,2,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    st = wait_until(lambda: (lambda p: json.loads(p.read_text()) if p.exists() and "pid" in p.read_text() else None)(
        pod.outputs / "victim" / "status.json"), timeout=90, what="the run's supervisor")
    os.kill(st["pid"], signal.SIGKILL)
    data = wait_sweep(pod)
    assert states(data) == {"victim": "lost", "after": "success"}
    assert json.loads((pod.outputs / "victim" / "summary.json").read_text())["failure_class"] == "lost"


def test_a_second_start_while_running_is_refused(swept: Pod):
    pod = swept
    csv = write_csv(pod, "long,config/train_tiny.py,1,sleep=300,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    res = pod.wf("sweep.start", "--csv", str(csv))
    assert res.rc == 3
    assert res.last_err.startswith("wfops: sweep.start is not allowed in state SWEEP_RUNNING (allowed: CHECKED_OUT, "
                                   "SWEEP_COMPLETED)")
    pod.configure(WF_FSM_ENFORCE="0")
    res = pod.wf("sweep.start", "--csv", str(csv))
    assert res.rc == 10 and "is still running" in res.last_err and "sweep.stop" in res.last_err
    pod.ok("sweep.stop")


def test_bad_csv_changes_nothing_on_the_pod(ssh_swept: Pod):
    pod = ssh_swept
    bad = write_csv(pod, "ok1,config/train_tiny.py,1,,\n../escape,config/train_tiny.py,x,,\n"
                         "ok1,/etc/passwd,2,\"unbalanced 'q\",\n")
    res, conns, _ = pod.count("sweep.start", "--csv", str(bad))
    assert res.rc == 2 and conns == 0
    assert res.err.splitlines() == [
        "wfops: the sweep CSV has 5 problem(s); nothing was uploaded or started",
        "  line 3: run_id '../escape' is not valid: use letters, digits, '.', '_' or '-', starting with a letter or "
        "digit, no '..' (it names a directory on the pod)",
        "  line 3: seed 'x' is not a whole number",
        "  line 4: config '/etc/passwd' must be a path inside the training workdir (relative, no '..')",
        "  line 4: overrides cannot be split into words (No closing quotation): \"unbalanced 'q\"",
        "  line 4: run_id ok1 repeats line 2",
    ]
    missing = write_csv(pod, "ok1,config/train_tiny.py,1,,\nok2,config/nope.py,1,,\n", name="missing.csv")
    res = pod.wf("sweep.start", "--csv", str(missing))
    assert res.rc == 2
    assert res.last_err.startswith("wfops: the sweep CSV names 1 missing config(s); nothing was uploaded or started: "
                                   "line 3: config config/nope.py does not exist in")
    assert not (pod.outputs / "_manifests").exists() and pod.state()["state"] == "CHECKED_OUT"


def test_status_is_one_exec_for_1000_runs_and_fetch_is_one_connection(ssh_swept: Pod):
    pod = ssh_swept
    csv = write_csv(pod, "real,config/train_tiny.py,1,ticks=1,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    wait_sweep(pod)
    plan_path = pod.outputs / "_manifests" / "sweep-latest.json"
    plan = json.loads(plan_path.read_text())
    for i in range(1000):
        rid = f"synthetic-{i:04d}"
        d = pod.outputs / rid
        d.mkdir()
        state = ("success", "failed", "timed_out")[i % 3]
        for name in ("status.json", "summary.json"):
            (d / name).write_text(json.dumps({"run_id": rid, "sweep_id": plan["sweep_id"], "state": state,
                                              "ok": state == "success", "exit_code": i % 3, "duration_secs": i}))
        plan["runs"].append({"run_id": rid, "selected": True, "notes": ""})
    plan_path.write_text(json.dumps(plan))
    res, conns, execs = pod.count("sweep.status", "--json")
    assert (res.rc, conns, execs) == (0, 1, 1)
    data = res.json()
    assert len(data["runs"]) == 1001
    assert data["totals"] == {"success": 335, "failed": 333, "timed_out": 333}

    res, conns, execs = pod.count("run.fetch", "real")
    assert (res.rc, conns, execs) == (0, 1, 1), res.err
    local = pod.root.parent / "artifacts" / "real"
    assert res.out.strip() == str(local)
    remote_files = sorted(p.relative_to(pod.outputs / "real") for p in (pod.outputs / "real").rglob("*") if p.is_file())
    local_files = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
    assert remote_files == local_files and len(local_files) >= 8
    for rel in local_files:
        assert (local / rel).read_bytes() == (pod.outputs / "real" / rel).read_bytes()
    leftovers = [p for p in [*pod.root.rglob("*.tar"), *local.parent.iterdir()] if p.name.endswith(".tar")
                 or p.name.startswith(".incoming")]
    assert leftovers == []


def test_fetch_errors_and_all(swept: Pod):
    pod = swept
    res = pod.wf("run.fetch", "nope")
    assert res.rc == 5
    assert res.last_err == f"wfops: run nope is not in OPS_REMOTE_OUTPUTS_DIR ({pod.outputs}); see sweep.status"
    res = pod.wf("run.fetch", "../etc")
    assert res.rc == 2 and "is not valid" in res.last_err
    res = pod.wf("run.fetch", "--all")
    assert res.rc == 5 and "no sweep manifest" in res.last_err
    csv = write_csv(pod, "f1,config/train_tiny.py,1,,\nf2,config/train_tiny.py,2,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    wait_sweep(pod)
    res = pod.ok("run.fetch", "--all")
    artifacts = pod.root.parent / "artifacts"
    assert sorted(p.name for p in artifacts.iterdir()) == ["f1", "f2"]
    assert (artifacts / "f2" / "args.json").is_file()
    (pod.outputs / "f1" / "extra.txt").write_text("new")
    pod.ok("run.fetch", "f1")  # a second fetch replaces the local copy
    assert (artifacts / "f1" / "extra.txt").read_text() == "new"


def test_template_never_overwrites_and_validate_checks_locally(local_pod: Pod):
    pod = local_pod
    target = pod.root.parent / "sweeps" / "sweep.csv"
    pod.configure(SWEEP_CSV=str(target))
    assert "wrote" in pod.ok("sweep.template").out
    original = target.read_text()
    res = pod.wf("sweep.template")
    assert res.rc == 10 and "exists; not overwritten" in res.last_err and target.read_text() == original
    res = pod.ok("sweep.validate")
    assert "3 run(s) valid; 3 would be queued" in res.out
    workdir = Path(__file__).resolve().parents[2] / "examples" / "nanogpt-repo" / "examples" / "nanogpt"
    pod.ok("sweep.validate", "--workdir", str(workdir))
    (pod.root / "wd").mkdir()
    res = pod.wf("sweep.validate", "--workdir", str(pod.root / "wd"))
    assert res.rc == 2 and "line 5: config config/train_tiny.py does not exist" in res.err
    assert not pod.outputs.exists()


def test_a_1000_run_sweep_starts_in_one_exec_and_the_queue_walks_its_manifest(ssh_swept: Pod):
    """sweep.start uploads the manifest (its only input) in one exec; the Python scheduler walks 1,000 runs
    with no per-run script rendered: here every run already has an ok summary, so each is skipped."""
    pod = ssh_swept
    rows = [[f"r{i:04d}", "config/train_tiny.py", str(i), "", ""] for i in range(1000)]
    csv = write_csv(pod, rows)
    settings = load_settings(pod.write_config())
    for run in parse_csv(csv.read_text()):  # an ok summary of the very same command: each run is skipped
        (pod.outputs / run.run_id).mkdir(parents=True)
        (pod.outputs / run.run_id / "summary.json").write_text(json.dumps({
            "ok": True, "sweep_id": "sweep-old", "state": "success", "exit_code": 0,
            "fingerprint": fingerprint(settings, run)}))
    res, conns, execs = pod.count("sweep.start", "--csv", str(csv))
    assert (res.rc, conns, execs) == (0, 1, 1), res.err
    data = wait_sweep(pod)
    assert data["sweep"]["state"] == "completed" and data["totals"] == {"skipped": 1000}
    sweep_id = data["sweep"]["sweep_id"]
    log = (pod.outputs / "_manifests" / f"{sweep_id}.log").read_text()
    assert log.count(": already ok in sweep-old with the same command") == 1000
    assert f"sweep {sweep_id} completed: queue finished" in log
    assert sorted(p.name for p in (pod.outputs / "_manifests").iterdir()) == sorted([
        f"{sweep_id}.csv", f"{sweep_id}.json", f"{sweep_id}.log", "sweep-latest.csv", "sweep-latest.json",
        f"workflow-{sweep_id[len('sweep-'):]}.env", f"{sweep_id}.sweep.json", f"{sweep_id}.runs.json"])
    assert pod.state()["state"] == "SWEEP_COMPLETED"


def test_read_only_commands_write_nothing(ssh_swept: Pod):
    """fsm.status, task.list, task.status and sweep.status leave the state file (bytes and mtime) and the
    control dir as they were."""
    pod = ssh_swept
    pod.ok("sweep.start", "--csv", str(write_csv(pod, "quick,config/train_tiny.py,1,,\n")))
    wait_sweep(pod)
    pod.ok("task.run", "--id", "t1", "--cmd", "true")
    pod.ok("task.wait", "--id", "t1")

    def snapshot() -> list:
        files = sorted(p for p in pod.outputs.rglob("*") if "__pycache__" not in p.parts)
        return [(str(p), p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"") for p in files]

    readonly = (("fsm.status",), ("task.list",), ("task.status", "--id", "t1"), ("task.wait", "--id", "t1"))
    before = snapshot()
    for args in (*readonly, ("sweep.status",)):
        pod.ok(*args)
    assert snapshot() == before
    pod.ok("fsm.reset")  # INIT: a command that promotes a reachable pod must still not write when read-only
    before = snapshot()
    for args in readonly:
        pod.ok(*args)
    assert pod.wf("sweep.status").rc == 3
    assert snapshot() == before and pod.state()["state"] == "INIT"
