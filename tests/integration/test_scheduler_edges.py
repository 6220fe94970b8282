"""Edge cases of the sweep scheduler (issue 10) that a hostile or unlucky researcher meets: odd ids given to
sweep.retry, sweep.add at awkward moments, damaged inbox files, retries waiting while the sweep is stopped,
stall detection that must not fire, honest skips, and the queue killed under parallel runs. Real tmux,
torchrun and the stand-in echo_train.py, local target; runs are cheap (WF_FAKE_GPUS, TRAIN_LAUNCHER=python)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Pod, wait_until
from tests.integration.test_sweeps import (
    local_swept,  # noqa: F401 - fixture
    states,
    status,
    venv_procs,
    wait_sweep,
)
from tests.slowness import scaled

HEADER = "run_id,config,seed,overrides,notes,gpus\n"
CFG = "config/train_tiny.py"

# a training script for the stall cases: `mode=files` writes a file in out_dir every 0.5 s and prints nothing,
# `mode=chatty` prints a line every 0.5 s and writes nothing, `mode=silent` does neither; each for `secs`
PACER = '''\
import os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)
out, mode, secs = args["out_dir"], args.get("mode", "silent"), float(args.get("secs", "6"))
os.makedirs(out, exist_ok=True)
end, i = time.time() + secs, 0
while time.time() < end:
    if mode == "files":
        with open(os.path.join(out, "step%d.txt" % i), "w") as fh:
            fh.write(str(i))
    elif mode == "chatty":
        print("step", i, flush=True)
    i += 1
    time.sleep(0.5)
'''


def csv_file(pod: Pod, rows: str, name: str = "sweep.csv") -> Path:
    path = pod.root.parent / name
    path.write_text(HEADER + rows)
    return path


def queue_log(pod: Pod) -> str:
    sid = status(pod)["sweep"]["sweep_id"]
    return (pod.outputs / "_manifests" / f"{sid}.log").read_text()


def summary(pod: Pod, run_id: str) -> dict:
    return json.loads((pod.outputs / run_id / "summary.json").read_text())


def rows_by_id(data: dict) -> dict[str, dict]:
    return {r["run_id"]: r for r in data["runs"]}


def next_second() -> None:
    """Sleep into the next wall-clock second: two sweeps started within one second share an id (see
    test_two_sweeps_started_within_one_second_get_distinct_ids), which the other tests must not trip on."""
    time.sleep(1.05 - time.time() % 1)


def ended(pod: Pod) -> dict:
    return wait_sweep(pod, timeout=60)


# ------------------------------------------------------------------ sweep.retry and sweep.add, hostile


def test_retry_with_a_repeated_id_runs_the_run_once(local_swept: Pod):  # noqa: F811 - the fixture
    # BUG: `sweep.retry r1,r1` queues r1 twice; with free slots both copies start at once in the same run dir
    pod = local_swept
    pod.configure(WF_FAKE_GPUS="2", TRAIN_NPROC="", TRAIN_LAUNCHER="python")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"r1,{CFG},1,sleep=2,,1\n")))
    assert states(wait_sweep(pod)) == {"r1": "success"}
    res = pod.wf("sweep.retry", "r1, r1")
    assert res.rc in (0, 2), res.err
    data = wait_sweep(pod)
    assert states(data) == {"r1": "success"}
    starts = re.findall(r"start r1 \(attempt", queue_log(pod))
    assert len(starts) == (2 if res.rc == 0 else 1), queue_log(pod)  # the first sweep's start plus one retry
    wait_until(lambda: not venv_procs(pod), timeout=15, what="no process left")


def test_retry_and_add_refuse_bad_input_and_change_nothing(local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    pod.configure(WF_FAKE_GPUS="2", TRAIN_NPROC="", TRAIN_LAUNCHER="python")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"a1,{CFG},1,,,1\nb1,{CFG},2,,,1\n")), "--match", "a")
    data = wait_sweep(pod)
    sid = data["sweep"]["sweep_id"]
    assert states(data) == {"a1": "success"}
    manifest = pod.outputs / "_manifests" / f"{sid}.json"
    before = manifest.read_bytes()
    for bad in ("..", "a1 b1", "../a1", "a1,-x"):
        res = pod.wf("sweep.retry", bad)
        assert res.rc == 2 and "is not valid" in res.last_err, (bad, res.err)
    res = pod.wf("sweep.retry", "b1")  # a row the filters left out is not a run of the sweep
    assert res.rc == 5 and res.last_err == f"wfops: not a queued run of {sid}: b1"
    res = pod.wf("sweep.retry", "a1", "--failed")
    assert res.rc == 2
    res = pod.wf("sweep.add", "--csv", str(csv_file(pod, "c1,config/nope.py,1,,,1\n", "missing.csv")))
    assert res.rc == 2 and "line 2: config config/nope.py does not exist" in res.last_err, res.err
    res = pod.wf("sweep.add", "--csv", str(csv_file(pod, f"c1,{CFG},1,,,3\n", "big.csv")))
    assert res.rc == 2 and "line 2: c1 asks for 3 GPU(s)" in res.last_err, res.err
    res = pod.wf("sweep.add", "--csv", str(csv_file(pod, f"c1,{CFG},1,,,0\n", "zero.csv")))
    assert res.rc == 2 and "gpus '0'" in res.err
    assert manifest.read_bytes() == before
    assert not (pod.outputs / "c1").exists()
    assert status(pod)["sweep"]["state"] == "completed"


def test_a_row_the_filters_left_out_can_be_added_later(local_swept: Pod):  # noqa: F811 - the fixture
    # BUG: a row left out by --match is refused by sweep.add as "already in" the sweep, yet sweep.retry calls
    # it "not a queued run" and sweep.status does not show it: no way to run it in this sweep
    pod = local_swept
    pod.configure(TRAIN_LAUNCHER="python")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"a1,{CFG},1,,,\nb1,{CFG},2,,,\n")), "--match", "a")
    assert states(wait_sweep(pod)) == {"a1": "success"}
    res = pod.wf("sweep.add", "--csv", str(csv_file(pod, f"b1,{CFG},2,,,\n", "more.csv")))
    assert res.rc == 0, res.err
    assert states(wait_sweep(pod)) == {"a1": "success", "b1": "success"}


def test_add_while_a_fail_fast_sweep_winds_down_is_not_silently_dropped(local_swept: Pod):  # noqa: F811
    # BUG: sweep.add says "the running queue takes them next" while fail-fast is stopping the queue; the run
    # is taken from the inbox and never started (cancelled)
    pod = local_swept
    pod.configure(WF_FAKE_GPUS="2", TRAIN_NPROC="", TRAIN_LAUNCHER="python")
    rows = f"long,{CFG},1,sleep=8,,1\nbad,{CFG},2,exit=3,,1\n"
    pod.ok("sweep.start", "--fail-fast", "--csv", str(csv_file(pod, rows)))
    wait_until(lambda: (pod.outputs / "bad" / "summary.json").exists(), timeout=60, what="the failure")
    assert status(pod)["sweep"]["state"] == "running"  # positive control: the long run keeps the queue alive
    res = pod.wf("sweep.add", "--csv", str(csv_file(pod, f"late,{CFG},3,,,1\n", "late.csv")))
    data = wait_sweep(pod)
    assert states(data)["bad"] == "failed" and states(data)["long"] == "success"
    if res.rc == 0:  # accepted: then it must run, as the answer said
        if states(data)["late"] != "success":  # a resumed queue may still be running it
            data = wait_sweep(pod)
        assert states(data)["late"] == "success", (res.out, rows_by_id(data)["late"])
    else:
        assert res.rc in (3, 10) and "fail" in res.last_err


def test_add_after_the_launcher_changed_keeps_skips_honest(local_swept: Pod):  # noqa: F811 - the fixture
    # BUG: sweep.add builds rows (args, fingerprint) from the client's current settings, while the pod runs them
    # with the sweep's manifest (launcher, script, style): the run's fingerprint claims a command it never ran,
    # and a later sweep with that command skips it as "already ok with the same command"
    pod = local_swept
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"slow,{CFG},1,sleep=6,,\n")))
    wait_until(lambda: (pod.outputs / "slow" / "args.json").exists(), timeout=60, what="the first run")
    pod.configure(TRAIN_LAUNCHER="python")
    res = pod.wf("sweep.add", "--csv", str(csv_file(pod, f"extra,{CFG},2,,,\n", "more.csv")))
    if res.rc != 0:  # refusing the runs of another command is correct too: then nothing is added
        assert res.rc == 10 and "launcher" in res.last_err, res.err
        assert states(wait_sweep(pod)) == {"slow": "success"}
        return
    assert states(wait_sweep(pod)) == {"slow": "success", "extra": "success"}
    ran = (pod.outputs / "extra" / "command.sh").read_text()
    assert "torch.distributed.run" in ran  # positive control: it ran under torchrun, the sweep's launcher
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"extra,{CFG},2,,,\n", "again.csv")))
    data = wait_sweep(pod)
    assert states(data) == {"extra": "success"}, rows_by_id(data)["extra"]  # never ran with python: must run
    assert "torch.distributed.run" not in (pod.outputs / "extra" / "command.sh").read_text()


def test_add_racing_the_end_of_the_queue_always_runs(local_swept: Pod):  # noqa: F811 - the fixture
    """sweep.add around the moment the queue finds its inbox empty and ends: each added run runs, whether
    the running queue took it or the queue started again."""
    pod = local_swept
    pod.configure(TRAIN_LAUNCHER="python")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"first,{CFG},1,sleep=1,,\n")))
    wait_until(lambda: (pod.outputs / "first" / "args.json").exists(), timeout=60, what="the first run")
    added = []
    for i in range(4):
        name = f"late{i}"
        pod.ok("sweep.add", "--csv", str(csv_file(pod, f"{name},{CFG},{i},,,\n", f"{name}.csv")))
        added.append(name)
        time.sleep(0.3 * i)
    data = wait_sweep(pod)
    if set(states(data).values()) != {"success"}:  # a queue started again by the last add may still be starting
        data = wait_until(lambda: (lambda s: s if set(states(s).values()) == {"success"}
                                   and s["sweep"]["state"] != "running" else None)(status(pod)),
                          timeout=60, interval=0.5, what="every added run to end")
    assert states(data) == dict({"first": "success"}, **{n: "success" for n in added}), data["runs"]
    assert not (pod.outputs / "_manifests" / f"{data['sweep']['sweep_id']}.inbox").exists()


# ------------------------------------------------------------------ the inbox, damaged


def _inbox_of_a_running_sweep(pod: Pod) -> Path:
    """The inbox of a sweep whose one run (`slow`, 5 s) is running."""
    pod.configure(TRAIN_LAUNCHER="python")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"slow,{CFG},1,sleep=5,,\n")))
    wait_until(lambda: (pod.outputs / "slow" / "args.json").exists(), timeout=60, what="the first run")
    inbox = pod.outputs / "_manifests" / f"{status(pod)['sweep']['sweep_id']}.inbox"
    inbox.mkdir(exist_ok=True)
    return inbox


def test_a_damaged_inbox_file_is_reported_and_the_queue_goes_on(local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    inbox = _inbox_of_a_running_sweep(pod)
    (inbox / "0000-torn.json").write_text('{"entries": [{"run_id": "x", "conf')
    pod.ok("sweep.add", "--csv", str(csv_file(pod, f"extra,{CFG},2,,,\n", "more.csv")))
    data = wait_sweep(pod)
    assert data["sweep"]["state"] == "completed" and states(data) == {"slow": "success", "extra": "success"}
    assert "inbox: " in queue_log(pod) and "0000-torn.json is damaged" in queue_log(pod)


def test_an_inbox_entry_without_a_config_does_not_kill_the_queue(local_swept: Pod):  # noqa: F811 - the fixture
    # BUG: an inbox file that parses but whose entry lacks keys (run_id/config) crashes the scheduler: the sweep
    # is lost and its running run with it
    pod = local_swept
    inbox = _inbox_of_a_running_sweep(pod)
    (inbox / "0000-odd.json").write_text('{"entries": [{"run_id": "ghost"}]}')
    data = wait_sweep(pod)
    assert data["sweep"]["state"] == "completed", data["sweep"]
    assert states(data) == {"slow": "success"}
    assert "0000-odd.json: entries[0].config is missing; that entry was dropped" in queue_log(pod)  # wire.QUEUE_ENTRY


def _one_failed_run(pod: Pod) -> tuple[str, Path]:
    """A sweep of one run, r1, that failed and ended: its id and its manifest on the pod."""
    pod.configure(TRAIN_LAUNCHER="python")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"r1,{CFG},1,exit=2,,\n")))
    sid = wait_sweep(pod)["sweep"]["sweep_id"]
    return sid, pod.outputs / "_manifests" / f"{sid}.json"


def test_damaged_manifest_and_sweep_record_are_reported_and_change_nothing(local_swept: Pod):  # noqa: F811
    pod = local_swept
    sid, manifest = _one_failed_run(pod)
    manifest.write_text('{"sweep_id": "' + sid + '", "runs": [')
    more = csv_file(pod, f"extra,{CFG},2,,,\n", "more.csv")
    for args in (("sweep.add", "--csv", str(more)), ("sweep.retry", "r1"), ("sweep.retry", "--failed")):
        res = pod.wf(*args)
        assert res.rc == 6 and f"{sid}.json is damaged" in res.last_err, (args, res.err)
    assert not (pod.outputs / "extra").exists() and not (pod.outputs / "_previous").exists()
    assert status(pod)["sweep"]["state"] == "completed"  # sweep-latest.json is intact: the table still prints
    older = pod.ok("sweep.status", "--sweep", sid, "--json").json()
    assert any("is damaged" in p for p in older["problems"]), older
    assert [s["sweep_id"] for s in pod.ok("sweep.list", "--json").json()["sweeps"]] == [sid]
    # BUG: a damaged _control/sweep.json makes sweep.add / sweep.retry exit 2 ("bad config, argument or CSV")
    # where every other damaged file on the pod is exit 6 (sweepedit._current uses EXIT_USAGE)
    (pod.outputs / "_control" / "sweep.json").write_text("{")
    res = pod.wf("sweep.add", "--csv", str(more))
    assert "sweep.json is damaged" in res.last_err, res.err  # positive control: the damaged file is named
    assert res.rc == 6, res.err


def test_a_requeued_run_ok_in_an_earlier_sweep_is_shown_waiting_and_retried_once(local_swept: Pod):  # noqa: F811
    """x is ok from an earlier sweep (shown `skipped`); sweep.retry x behind a long run: it is shown waiting, a
    second sweep.retry x is refused (exit 10, nothing changed), and x starts once."""
    pod = local_swept
    pod.configure(TRAIN_LAUNCHER="python")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"x,{CFG},1,,,\n")))
    wait_sweep(pod)
    next_second()
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"long,{CFG},2,sleep=8,,\nx,{CFG},1,,,\n", name="b.csv")))
    wait_until(lambda: (pod.outputs / "long" / "args.json").exists(), timeout=60, what="the long run to start")
    assert states(status(pod))["x"] == "skipped"  # ok in the earlier sweep: it waits in the order to be skipped
    pod.ok("sweep.retry", "x")
    row = rows_by_id(status(pod))["x"]
    assert row["state"] == "pending" and row["note"].startswith("requeued by sweep.retry"), row
    before = (pod.outputs / "x" / "status.json").read_bytes()
    second = pod.wf("sweep.retry", "x")
    assert second.rc == 10 and second.err.strip().splitlines() == [second.last_err], second.err
    assert "x (pending)" in second.last_err and (pod.outputs / "x" / "status.json").read_bytes() == before
    data = wait_sweep(pod)
    assert states(data) == {"long": "success", "x": "success"}
    assert len(re.findall(r"start x \(attempt", queue_log(pod))) == 1, queue_log(pod)


def test_two_retries_of_a_waiting_run_on_two_slots_start_it_once_and_lose_no_slot(local_swept: Pod):  # noqa: F811
    """Two slots, x ok from an earlier sweep waits behind a 2-GPU run: sweep.retry x twice (the second refused), then
    a 2-GPU run added: x starts once, every slot comes back, and the added run runs (before: x started twice at once,
    one slot was never given back, and the added run waited for ever)."""
    pod = local_swept
    pod.configure(WF_FAKE_GPUS="2", TRAIN_NPROC="", TRAIN_LAUNCHER="python")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"x,{CFG},1,,,1\n")))
    wait_sweep(pod)
    next_second()
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"long,{CFG},2,sleep=6,,2\nx,{CFG},1,,,1\n", name="b.csv")))
    wait_until(lambda: (pod.outputs / "long" / "args.json").exists(), timeout=60, what="the long run to start")
    pod.ok("sweep.retry", "x")
    assert pod.wf("sweep.retry", "x").rc == 10
    pod.ok("sweep.add", "--csv", str(csv_file(pod, f"big,{CFG},3,,,2\n", name="c.csv")))
    assert states(wait_sweep(pod)) == {"long": "success", "x": "success", "big": "success"}
    assert len(re.findall(r"start x \(attempt", queue_log(pod))) == 1, queue_log(pod)


def test_a_live_run_whose_status_file_is_damaged_is_not_retried_beside_itself(local_swept: Pod):  # noqa: F811
    """Two slots; garbage in a running run's status.json makes its row `unknown`: sweep.retry refuses it (the
    queue's log shows it started with no end), nothing moves, and only one copy runs. Once it has ended (its end
    in the log), the same retry is accepted. (rows.may_be_live's cases: tests/unit/test_scheduling_edges.py)"""
    pod = local_swept
    pod.configure(WF_FAKE_GPUS="2", TRAIN_NPROC="", TRAIN_LAUNCHER="python")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"live,{CFG},1,sleep=8,,1\n")))
    status_file = pod.outputs / "live" / "status.json"
    # its one line of output recorded (last_output_at): its supervisor writes status.json again only at its end
    wait_until(lambda: status_file.exists() and "last_output_at" in status_file.read_text(), timeout=60,
               what="the run to start and print")
    status_file.write_text("garbage{")
    assert states(status(pod)) == {"live": "unknown"}
    res = pod.wf("sweep.retry", "live")
    assert res.rc == 10 and res.err.strip().splitlines() == [res.last_err], res.err
    assert "live (unknown: its status.json is damaged and the queue's log shows it started, with no end)" in (
        res.last_err), res.last_err
    assert not (pod.outputs / "_previous").exists()
    data = wait_sweep(pod)
    assert states(data) == {"live": "success"}, data["runs"]
    assert len(re.findall(r"start live \(attempt", queue_log(pod))) == 1, queue_log(pod)
    (pod.outputs / "live" / "status.json").write_text("garbage{")  # ended: nothing of it is live
    pod.ok("sweep.retry", "live")
    assert states(wait_sweep(pod)) == {"live": "success"}


# ------------------------------------------------------------------ retries waiting, stop, status


def test_a_pending_retry_is_shown_refused_by_retry_and_dropped_by_stop(local_swept: Pod):  # noqa: F811
    pod = local_swept
    flag = pod.root / "failed-once"
    pod.configure(TRAIN_LAUNCHER="python", RUN_RETRIES="1", RETRY_BACKOFF_SECS="300")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"flaky,{CFG},1,fail_once={flag},,\n")))
    row = wait_until(lambda: (lambda r: r if r["note"].startswith("retry") else None)(status(pod)["runs"][0]),
                     timeout=60, interval=0.3, what="the retry to be pending")
    assert row["state"] == "pending" and re.match(r"retry 2/2 .*at \S+ \(nccl: ", row["note"]), row
    text = pod.ok("sweep.status").out
    assert re.search(r"^flaky\s+pending\s+1/2\s.*retry 2/2 .*at ", text, re.M), text
    res = pod.wf("sweep.retry", "flaky")
    assert res.rc == 10 and "flaky (pending)" in res.last_err
    assert pod.wf("sweep.retry", "--failed").rc == 5
    pod.ok("sweep.stop")
    data = status(pod)
    assert data["sweep"]["state"] == "stopped"
    flaky = rows_by_id(data)["flaky"]
    assert flaky["state"] == "failed" and re.search(r"retry 2/2 .*never started \(the sweep stopped first\)",
                                                     flaky["note"]), flaky
    assert not (pod.outputs / "flaky" / "attempts").exists()
    pod.ok("sweep.retry", "flaky")  # now it is a finished run: requeued, and it succeeds
    data = wait_sweep(pod)
    assert states(data) == {"flaky": "success"}


def test_retries_with_the_python_launcher(local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    flag = pod.root / "failed-once"
    pod.configure(TRAIN_LAUNCHER="python", RUN_RETRIES="2", RETRY_BACKOFF_SECS="1")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"flaky,{CFG},1,fail_once={flag},,\n")))
    data = wait_sweep(pod)
    assert states(data) == {"flaky": "success"}
    summ = summary(pod, "flaky")
    assert [(a["attempt"], a["state"], a["failure_class"]) for a in summ["attempts"]] == [
        (1, "failed", "nccl"), (2, "success", None)]
    first = (pod.outputs / "flaky" / "attempts" / "1" / "command.sh").read_text()
    assert "torch.distributed.run" not in first and "attempt 1 of 3" in first
    assert "attempt 2 of 3" in (pod.outputs / "flaky" / "command.sh").read_text()


# ------------------------------------------------------------------ stalls that are not


def test_progress_in_files_or_in_the_log_alone_is_not_a_stall(local_swept: Pod):  # noqa: F811 - the fixture
    """RUN_STALL_SECS=3: a run that only writes files and one that only prints run their 6 s to success; a
    silent one beside them (the positive control) is ended as stalled."""
    pod = local_swept
    (pod.root / "repo" / "examples" / "nanogpt" / "pacer.py").write_text(PACER)
    pod.configure(WF_FAKE_GPUS="3", TRAIN_NPROC="", TRAIN_LAUNCHER="python", TRAIN_SCRIPT="pacer.py",
                  RUN_STALL_SECS="3", RUN_OUT_MODE="local_sync", RUN_OUT_LOCAL_ROOT=str(pod.root / "fast"),
                  SYNC_INTERVAL_SECS="60")
    rows = (f"files,{CFG},1,mode=files secs=7,,1\n"
            f"chatty,{CFG},2,mode=chatty secs=7,,1\n"
            f"silent,{CFG},3,mode=silent secs=30,,1\n")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, rows)))
    data = wait_sweep(pod, timeout=90)
    assert states(data) == {"files": "success", "chatty": "success", "silent": "failed"}, data["runs"]
    assert summary(pod, "silent")["failure_class"] == "stalled"
    assert "step 10" in (pod.outputs / "chatty" / "stdout.log").read_text()
    assert (pod.outputs / "files" / "step10.txt").is_file()


def test_ticks_into_the_run_dir_without_a_word_under_torchrun_are_not_a_stall(local_swept: Pod):  # noqa: F811
    pod = local_swept
    # torchrun, 2 processes, the output in the run dir itself. The limit is scaled: under load torchrun's start
    # (importing torch) is silent for longer than 3 s; the ticks last longer than the limit, so that only the
    # run dir's changes keep the run from being a stall.
    stall = max(3, round(scaled(3)))
    pod.configure(RUN_STALL_SECS=str(stall))
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"ticking,{CFG},1,ticks={stall + 4},,\n")))
    data = wait_sweep(pod, timeout=90)
    assert states(data) == {"ticking": "success"}, data["runs"]
    assert (pod.outputs / "ticking" / f"tick{stall + 3}.txt").is_file()


# ------------------------------------------------------------------ honest skips


def test_notes_do_not_rerun_common_overrides_do_and_keep_previous_zero(local_swept: Pod):  # noqa: F811
    pod = local_swept
    pod.configure(TRAIN_LAUNCHER="python", KEEP_PREVIOUS="0", SWEEP_COMMON_OVERRIDES="lr=1")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"r1,{CFG},1,,first note,\n")))
    assert states(wait_sweep(pod)) == {"r1": "success"}
    next_second()
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"r1,{CFG},1,,\"another, longer note\",\n")))
    data = wait_sweep(pod)
    assert states(data) == {"r1": "skipped"}, data["runs"]
    next_second()
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"r1,{CFG},1,lr=1,,\n")))  # the row sets what common set
    assert states(wait_sweep(pod)) == {"r1": "skipped"}  # the same command
    pod.configure(SWEEP_COMMON_OVERRIDES="lr=2")
    next_second()
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"r1,{CFG},1,,,\n")))
    data = wait_sweep(pod)
    assert states(data) == {"r1": "success"} and data["runs"][0]["note"].startswith("rerun: its row changed")
    assert "lr=2" in json.loads((pod.outputs / "r1" / "args.json").read_text())["argv"]
    assert not [p for p in (pod.outputs / "_previous").iterdir() if p.name.startswith("r1.")]  # KEEP_PREVIOUS=0
    assert "(KEEP_PREVIOUS=0)" in queue_log(pod)  # positive control: a copy was made, then pruned


# `wfops ARGS` with the client's clock frozen at SAME_SECOND for the sweep id (wfops.tasks.sweep's datetime): every
# sweep.start through it starts in the same second, whatever the machine's speed
SAME_SECOND = "sweep-20260102T030405Z"
FROZEN_CLOCK = """\
import sys
from datetime import datetime, timezone

import wfops.tasks.sweep as sweep


class Frozen(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


sweep.datetime = Frozen
sys.argv = ["wfops", *sys.argv[1:]]
from wfops.cli import main

main()
"""


def test_two_sweeps_started_within_one_second_get_distinct_ids(local_swept: Pod):  # noqa: F811 - the fixture
    # BUG: sweep ids are the UTC second (sweep-YYYYmmddTHHMMSSZ): a sweep.start in the same second as the one
    # before (a sweep whose runs are all skipped ends at once) reuses its id and overwrites its manifest, CSV
    # and record; sweep.list loses a sweep and sweep.status shows the old run as this sweep's own.
    # The client's clock is frozen (FROZEN_CLOCK), so the three starts below are in one second for sure.
    pod = local_swept
    pod.configure(TRAIN_LAUNCHER="python")
    csv = csv_file(pod, f"r1,{CFG},1,,,\n")
    frozen = pod.root.parent / "frozen_clock.py"
    frozen.write_text(FROZEN_CLOCK)
    ids, runs = [], []
    for _ in range(3):
        started = subprocess.run([sys.executable, str(frozen), "sweep.start", "--csv", str(csv)], text=True,
                                 capture_output=True, env=pod.env(), cwd=pod.root.parent, timeout=120)
        assert started.returncode == 0, started.stderr
        ids.append(started.stdout.split()[1].rstrip(":"))
        data = ended(pod)
        assert data["sweep"]["sweep_id"] == ids[-1]
        runs.append(states(data))
    assert ids == [SAME_SECOND, f"{SAME_SECOND}-2", f"{SAME_SECOND}-3"], ids  # the first: the clock was frozen
    assert runs == [{"r1": "success"}, {"r1": "skipped"}, {"r1": "skipped"}], runs
    listed = [s["sweep_id"] for s in pod.ok("sweep.list", "--json").json()["sweeps"]]
    assert sorted(listed) == sorted(ids), listed
    for sid in ids:  # each kept its own manifest: the first one's was not overwritten by the later ones
        assert json.loads((pod.outputs / "_manifests" / f"{sid}.json").read_text())["sweep_id"] == sid
    older = pod.ok("sweep.status", "--sweep", SAME_SECOND, "--json").json()
    assert states(older) == {"r1": "success"}, older["runs"]


def test_an_older_sweeps_status_agrees_with_its_record_after_a_rerun(local_swept: Pod):  # noqa: F811
    # BUG: once a later sweep reran r1 (changed row), `sweep.status --sweep OLDER` shows OLDER's r1 as
    # "cancelled: not started: the sweep ended first", while sweep.list (its record) says it succeeded
    pod = local_swept
    pod.configure(TRAIN_LAUNCHER="python")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"r1,{CFG},1,lr=1,,\n")))
    older = wait_sweep(pod)["sweep"]["sweep_id"]
    next_second()
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"r1,{CFG},1,lr=2,,\n")))
    assert states(wait_sweep(pod)) == {"r1": "success"}
    listed = {s["sweep_id"]: s for s in pod.ok("sweep.list", "--json").json()["sweeps"]}
    assert listed[older]["totals"] == {"success": 1}  # the record of what happened in the older sweep
    data = pod.ok("sweep.status", "--sweep", older, "--json").json()
    row = rows_by_id(data)["r1"]
    assert row["state"] != "cancelled" and "not started" not in row["note"], row
    assert data["totals"] == listed[older]["totals"], (data["totals"], row)


def test_a_run_that_stalls_on_every_attempt_is_retried_then_failed(local_swept: Pod):  # noqa: F811
    pod = local_swept
    pod.configure(TRAIN_LAUNCHER="python", RUN_STALL_SECS="2", RUN_RETRIES="1", RETRY_BACKOFF_SECS="1")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"hung,{CFG},1,sleep=60,,\n")))
    data = wait_sweep(pod, timeout=90)
    assert states(data) == {"hung": "failed"}
    summ = summary(pod, "hung")
    assert [(a["attempt"], a["state"], a["failure_class"]) for a in summ["attempts"]] == [
        (1, "failed", "stalled"), (2, "failed", "stalled")]
    assert (pod.outputs / "hung" / "attempts" / "1" / "stdout.log").is_file()
    assert rows_by_id(data)["hung"]["attempt"] == 2
    wait_until(lambda: not venv_procs(pod), timeout=15, what="no process left")


def test_a_syntax_error_in_the_training_script_is_the_evidence(local_swept: Pod):  # noqa: F811 - the fixture
    # BUG: Python reports a syntax error of the main script without a "Traceback" header; worker_error misses
    # it and the why column shows torchrun's `exitcode : 1 (pid N)` for the commonest mistake there is
    pod = local_swept
    (pod.root / "repo" / "examples" / "nanogpt" / "typo.py").write_text("import sys\nx = (\nprint(x)\n")
    pod.configure(TRAIN_SCRIPT="typo.py")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"typo,{CFG},1,,,\n")))
    data = wait_sweep(pod)
    assert states(data) == {"typo": "failed"}
    assert "SyntaxError" in (pod.outputs / "typo" / "stdout.log").read_text()  # positive control
    assert summary(pod, "typo")["failure_evidence"].startswith("SyntaxError: "), summary(pod, "typo")


# ------------------------------------------------------------------ packing edges


def test_no_fit_on_a_pod_whose_gpus_are_known_only_there(local_swept: Pod):  # noqa: F811 - the fixture
    """Without WF_FAKE_GPUS or CPU_ONLY the pod's CUDA_VISIBLE_DEVICES is the slot table: a run asking more is
    recorded failed (no_fit) without starting; the others run on the named devices."""
    # BUG: scheduler._env_value's format string has two %s for one argument (`printf %s "${%s-}"' % key`):
    # TypeError, so on every GPU pod without WF_FAKE_GPUS / CPU_ONLY the queue dies before its first run
    pod = local_swept
    pod.configure(CPU_ONLY="0", TRAIN_NPROC="", TRAIN_LAUNCHER="python", CUDA_VISIBLE_DEVICES="4,6",
                  EXTRA_ENV_KEYS="CUDA_VISIBLE_DEVICES")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"big,{CFG},1,,,3\nsmall,{CFG},2,,,1\nall,{CFG},3,,,all\n")))
    data = wait_sweep(pod)
    assert states(data) == {"big": "failed", "small": "success", "all": "success"}, data["runs"]
    assert rows_by_id(data)["big"]["note"] == "no_fit: asks for 3 GPU(s); the pod has 2 slot(s)"
    assert summary(pod, "big")["failure_class"] == "no_fit" and not (pod.outputs / "big" / "stdout.log").exists()
    seen = {r: json.loads((pod.outputs / r / "args.json").read_text())["cuda_visible_devices"]
            for r in ("small", "all")}
    assert seen == {"small": "4", "all": "4,6"}


def test_one_process_has_no_rank_prefix_and_two_finish_together(local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    pod.configure(WF_FAKE_GPUS="2", TRAIN_NPROC="1")
    rows = f"one-a,{CFG},1,sleep=2,,1\none-b,{CFG},2,sleep=2,,1\nboth,{CFG},3,,,2\n"
    pod.ok("sweep.start", "--csv", str(csv_file(pod, rows)))
    data = wait_sweep(pod, timeout=120)
    assert set(states(data).values()) == {"success"}, data["runs"]
    log = (pod.outputs / "one-a" / "stdout.log").read_text()
    assert "rank 0: echo_train got" in log and "[rank" not in log
    assert "--tee" not in (pod.outputs / "one-a" / "command.sh").read_text()
    both = json.loads((pod.outputs / "both" / "args.json").read_text())
    assert (both["cuda_visible_devices"], both["world_size"]) == ("0,1", 1)  # TRAIN_NPROC wins
    pod.configure(TRAIN_NPROC="", SWEEP_FORCE="1")  # positive control: two processes do carry the prefix
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"both,{CFG},3,,,2\n")))
    assert states(wait_sweep(pod)) == {"both": "success"}
    assert re.search(r"\[rank1\]:rank 1: echo_train got", (pod.outputs / "both" / "stdout.log").read_text())


def test_a_rendezvous_port_out_of_range_does_not_kill_the_queue(local_swept: Pod):  # noqa: F811 - the fixture
    # BUG: RDZV_BASE_PORT=70000 is accepted by the config; pick_port raises in Scheduler.place, outside the
    # launch's error handling, and the queue dies (sweep lost) instead of refusing or recording the run
    pod = local_swept
    pod.configure(RDZV_BASE_PORT="70000")
    res = pod.wf("sweep.start", "--csv", str(csv_file(pod, f"r1,{CFG},1,,,\n")))
    if res.rc == 0:
        data = wait_sweep(pod)
        assert data["sweep"]["state"] == "completed", data["sweep"]
        assert states(data) == {"r1": "failed"}
    else:
        assert res.rc == 2 and "RDZV_BASE_PORT" in res.last_err


# ------------------------------------------------------------------ the queue killed, list on an empty pod


def test_the_queue_killed_under_two_parallel_runs_ends_both(local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    # torchrun asked for: under TRAIN_LAUNCHER=auto a one-slot run on this CPU_ONLY pod would be one plain python
    pod.configure(WF_FAKE_GPUS="2", TRAIN_NPROC="", TRAIN_LAUNCHER="torchrun")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"p1,{CFG},1,sleep=300,,1\np2,{CFG},2,sleep=300,,1\n"
                                                     f"p3,{CFG},3,,,1\n")))
    wait_until(lambda: all((pod.outputs / r / "args.json").exists() for r in ("p1", "p2")), timeout=90,
               what="both runs to start")
    assert len(venv_procs(pod)) >= 4  # positive control: two torchruns and their workers
    runner = json.loads((pod.outputs / "_control" / "sweep.json").read_text())["pid"]
    os.kill(runner, signal.SIGKILL)
    data = wait_until(lambda: (lambda s: s if states(s)["p1"] == "lost" and states(s)["p2"] == "lost" else None)(
        status(pod)), timeout=60, interval=0.5, what="both runs recorded lost")
    assert data["sweep"]["state"] == "lost" and states(data)["p3"] == "pending"
    for rid in ("p1", "p2"):
        assert summary(pod, rid)["failure_class"] == "lost"
    wait_until(lambda: not venv_procs(pod), timeout=20, what="no process of either run left")


def test_a_run_left_pending_by_a_dead_queue_can_be_requeued(local_swept: Pod):  # noqa: F811 - the fixture
    # BUG: after the queue runner died, sweep.retry refuses its never-started run as "still running or waiting
    # to run" although nothing will ever run it (sweep.retry would start the queue again anyway)
    pod = local_swept
    pod.configure(TRAIN_LAUNCHER="python")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"victim,{CFG},1,sleep=300,,\nnext,{CFG},2,,,\n")))
    wait_until(lambda: (pod.outputs / "victim" / "args.json").exists(), timeout=60, what="the run to start")
    os.kill(json.loads((pod.outputs / "_control" / "sweep.json").read_text())["pid"], signal.SIGKILL)
    data = wait_until(lambda: (lambda s: s if states(s)["victim"] == "lost" else None)(status(pod)), timeout=60,
                      interval=0.5, what="the run recorded lost")
    assert data["sweep"]["state"] == "lost" and states(data)["next"] == "pending"
    res = pod.wf("sweep.retry", "next")
    assert res.rc == 0, res.err
    assert states(wait_sweep(pod)) == {"victim": "lost", "next": "success"}
    wait_until(lambda: not venv_procs(pod), timeout=15, what="no process left")


def test_list_and_status_on_a_pod_with_no_sweep(local_swept: Pod):  # noqa: F811 - the fixture
    pod = local_swept
    assert pod.ok("sweep.list", "--json").json() == {"sweeps": []}
    assert pod.ok("sweep.list").out.strip() == "no sweep on this pod"
    for bad in ("sweep-20200101T000000Z/..", "sweep-20200101T000000Z.json", " sweep-20200101T000000Z", "*"):
        res = pod.wf("sweep.status", "--sweep", bad)
        assert res.rc == 2 and "invalid sweep id" in res.last_err, (bad, res.err)
    res = pod.wf("sweep.status", "--sweep", "sweep-20200101T000000Z")
    assert res.rc == 5


def test_an_inbox_file_of_the_wrong_shape_or_script_does_not_kill_the_queue(local_swept: Pod):  # noqa: F811
    # BUG (review of the typed wire): an inbox file whose "entries" is not a list (5, true) crashed the queue with
    # a TypeError, and an entry whose launch script names an unknown run-time value passed the door check and
    # crashed it with a KeyError when its run started: the sweep was lost with its running run
    pod = local_swept
    inbox = _inbox_of_a_running_sweep(pod)
    (inbox / "0000-five.json").write_text('{"entries": 5}')
    (inbox / "0001-true.json").write_text('{"entries": true}')
    bad = {"run_id": "odd", "config": CFG, "script": {"text": "@wfops-%s:nosuch@\n" % ("a" * 16),
                                                      "mark": "a" * 16, "source": "x"}}
    (inbox / "0002-script.json").write_text(json.dumps({"entries": [bad]}))
    data = wait_sweep(pod)
    assert data["sweep"]["state"] == "completed", data["sweep"]
    assert states(data) == {"slow": "success"}
    log = queue_log(pod)
    assert "0000-five.json: entries must be list, not 5; that file was dropped" in log, log
    assert "0001-true.json: entries must be list, not True; that file was dropped" in log, log
    assert ("0002-script.json: entries[0]: its launch script names unknown run-time value(s): nosuch; "
            "that entry was dropped") in log, log


def test_a_manifest_edited_on_the_pod_is_refused_by_add_and_retry_and_never_starts_a_queue(local_swept: Pod):  # noqa: F811
    # BUG (review of the typed wire): a manifest edited on the pod after sweep.start (a field of the wrong type, or a
    # launch script the queue cannot fill) was taken by sweep.retry / sweep.add, which started the queue again on
    # it: sweep-run refused it in its tmux window (the sweep ended 'lost', no word why) or, for the script, the queue
    # died of a KeyError when the run started
    pod = local_swept
    sid, manifest = _one_failed_run(pod)
    good = json.loads(manifest.read_text())
    typed = json.loads(json.dumps(good))
    typed["exec"]["retries"] = "3"
    script = json.loads(json.dumps(good))
    script["queue"][0]["script"] = {"text": "@wfops-%s:nosuch@\n" % ("a" * 16), "mark": "a" * 16, "source": "x"}
    more = csv_file(pod, f"extra,{CFG},2,,,\n", "more.csv")
    for edited, why in ((typed, "exec.retries must be int, not '3'"),
                        (script, "queue[0]: its launch script names unknown run-time value(s): nosuch")):
        manifest.write_text(json.dumps(edited))
        for args in (("sweep.retry", "r1"), ("sweep.add", "--csv", str(more))):
            res = pod.wf(*args)
            assert res.rc == 6, (args, res.err)
            assert res.last_err.endswith(f"{sid}.json is damaged ({why}); start a new sweep with sweep.start"), res.err
    assert not (pod.outputs / "extra").exists() and not (pod.outputs / "_previous").exists()
    assert status(pod)["sweep"]["state"] == "completed"
