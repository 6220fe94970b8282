"""What a researcher sees of a sweep, through the real queue (tmux, torchrun with 2 gloo processes): metrics read
on the pod (metrics.jsonl, or log lines through METRIC_PATTERNS), sweep.report's files and order, run.logs and
task.logs (whole, tail, rank, follow until the end), sweep.wait's exit codes, and attach in a real pty."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import WFOPS, Pod, TrainingRepo, checkout_config, copy_checked_out, wait_until
from tests.realparts import free_port
from tests.slowness import scaled

# a stand-in trainer: metrics as told, a log line per step from every rank (torchrun prefixes them with the rank)
METRIC_TRAIN = '''
import json, os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)
rank = int(os.environ.get("RANK", "0"))
out = args["out_dir"]
os.makedirs(out, exist_ok=True)
lr = float(args.get("lr", "1"))
for step in range(1, int(args.get("steps", "3")) + 1):
    loss = round(lr * 10 / step, 4)
    print("iter %d: loss %.4f from rank %d" % (step, loss, rank), flush=True)
    if rank == 0 and args.get("jsonl") == "1":
        with open(os.path.join(out, "metrics.jsonl"), "a") as fh:
            fh.write(json.dumps({"step": step, "val_loss": loss + 1, "acc": step / 10.0, "tag": "x"}) + "\\n")
    time.sleep(float(args.get("sleep", "0")))
if args.get("wait_for"):
    while not os.path.exists(args["wait_for"]):
        time.sleep(0.1)
    print("done waiting", flush=True)
sys.exit(int(args.get("exit", "0")))
'''
HEADER = "run_id,config,seed,overrides,notes\n"


def _ready(pod: Pod, training_repo: TrainingRepo, pod_python: str, template: Path) -> Pod:
    copy_checked_out(template, pod)
    (pod.root / "repo" / "examples" / "nanogpt" / "metric_train.py").write_text(METRIC_TRAIN)
    checkout_config(pod, training_repo, pod_python, TRAIN_SCRIPT="metric_train.py", TRAIN_INJECT="out_dir",
                    KILL_GRACE_SECS="2", RDZV_BASE_PORT=str(free_port()))  # not 29500: other torchruns may use it
    return pod


@pytest.fixture
def ready(pod: Pod, training_repo: TrainingRepo, pod_python: str, checked_out: Path) -> Pod:
    return _ready(pod, training_repo, pod_python, checked_out)


@pytest.fixture
def local_ready(local_pod: Pod, training_repo: TrainingRepo, pod_python: str, checked_out: Path) -> Pod:
    return _ready(local_pod, training_repo, pod_python, checked_out)


def sweep(pod: Pod, rows: str) -> Path:
    path = pod.root.parent / "sweep.csv"
    path.write_text(HEADER + rows)
    pod.ok("sweep.start", "--csv", str(path))
    return path


def wait_end(pod: Pod) -> dict:
    return wait_until(lambda: (lambda s: s if s["sweep"]["state"] != "running" else None)(
        pod.ok("sweep.status", "--json").json()), timeout=120, interval=0.5, what="the sweep to end")


def test_report_from_jsonl_and_patterns_with_files_and_order(ready: Pod):
    pod = ready
    sweep(pod, "a,config/train_tiny.py,1,lr=2 steps=4 jsonl=1,jsonl run\n"
               "b,config/train_tiny.py,2,lr=1 steps=3,pattern run\n"
               "c,config/train_tiny.py,3,lr=3 steps=2 exit=3,fails\n")
    ended = wait_end(pod)
    assert {r["run_id"]: r["state"] for r in ended["runs"]} == {"a": "success", "b": "success", "c": "failed"}, ended
    res = pod.ok("sweep.report")
    rows = list(csv.DictReader((pod.root.parent / "artifacts" / "_reports").glob("*/results.csv").__next__().open()))
    by_id = {r["run_id"]: r for r in rows}
    # a: metrics.jsonl wins (val_loss, acc; the string "tag" is no metric); b and c: "iter N: loss X" lines
    assert by_id["a"]["val_loss_final"] == str(2 * 10 / 4 + 1) and by_id["a"]["acc_best"] == "0.4"
    assert by_id["b"]["loss_final"] == str(round(10 / 3, 4)) and by_id["b"]["loss_best"] == str(round(10 / 3, 4))
    assert by_id["c"]["state"] == "failed" and by_id["c"]["loss_best"] == "15.0" and by_id["a"]["loss_final"] == ""
    assert list(rows[0])[:9] == ["run_id", "state", "attempts", "duration_secs", "cost_usd", "config", "seed", "lr",
                                 "steps"]
    assert by_id["a"]["cost_usd"] == ""  # no price known (POD_PRICE_PER_HOUR empty): no cost, and none made up
    assert {"jsonl", "exit", "val_loss_final", "val_loss_best", "acc_final", "loss_final"} <= set(rows[0])
    assert by_id["a"]["attempts"] == "1" and by_id["a"]["seed"] == "1" and by_id["b"]["lr"] == "1"
    png = next((pod.root.parent / "artifacts" / "_reports").glob("*/curves.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert f"curves:  {png.resolve()}" in res.out
    # the table: sorted by the best of the first metric (val_loss, lower is better; runs without it last)
    order = [ln.split()[0] for ln in res.out.splitlines()[3:6]]
    assert order == ["a", "b", "c"]
    by_loss = pod.ok("sweep.report", "--sort", "loss", "--out", str(pod.root.parent / "r2")).out
    assert [ln.split()[0] for ln in by_loss.splitlines()[3:6]] == ["b", "c", "a"]
    in_csv = list(csv.DictReader((pod.root.parent / "r2" / "results.csv").open()))
    assert [r["run_id"] for r in in_csv] == ["b", "c", "a"]  # the CSV in the same order
    by_acc = pod.ok("sweep.report", "--sort", "acc", "--out", str(pod.root.parent / "r3")).out
    assert by_acc.splitlines()[3].startswith("a ")  # accuracy: higher is better
    if pod.kind == "ssh":  # the metrics of every run in one exec (no fetch)
        counted, conns, execs = pod.count("sweep.report", "--out", str(pod.root.parent / "r4"))
        assert counted.rc == 0 and (conns, execs) == (1, 1)


def test_a_pattern_that_matches_nothing_is_an_empty_column(local_ready: Pod):
    pod = local_ready
    pod.configure(METRIC_PATTERNS=r"never (?P<nothing>\d+)", METRIC_COLUMNS="nothing", METRIC_PRESETS="none")
    sweep(pod, "only,config/train_tiny.py,1,steps=2,\n")
    wait_end(pod)
    res = pod.ok("sweep.report", "--out", str(pod.root.parent / "rep"))
    rows = list(csv.DictReader((pod.root.parent / "rep" / "results.csv").open()))
    assert rows == [dict(rows[0], nothing_final="", nothing_best="")] and rows[0]["state"] == "success"
    assert "curves.png not written: no run reported a metric" in res.err
    assert not (pod.root.parent / "rep" / "curves.png").exists()
    unwritable = pod.wf("sweep.report", "--out", "/proc/wfops-report")
    assert unwritable.rc == 2 and unwritable.last_err.startswith("wfops: cannot write the report in /proc/wfops-report")
    pod.configure(METRIC_PATTERNS="no named (group)")
    res = pod.wf("sweep.report")
    assert res.rc == 2 and "METRIC_PATTERNS" in res.last_err and "named group" in res.last_err


def test_run_logs_whole_tail_rank_and_follow_until_the_run_ends(ready: Pod):
    pod = ready
    # the lines must arrive while the run runs: torchrun --tee's copy of them would sit in a block buffer (its
    # stdout is a pipe) but for the PYTHONUNBUFFERED=1 every run's command.sh exports
    flag = pod.root / "go"
    sweep(pod, f"r,config/train_tiny.py,1,steps=2 wait_for={flag},\n")
    follower = subprocess.Popen([str(WFOPS), "run.logs", "r", "--follow", "--rank", "1"], env=pod.env(),
                                cwd=pod.root.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    guard = threading.Timer(scaled(120), follower.kill)  # a follower that hangs fails the test instead of blocking it
    guard.start()
    live = [follower.stdout.readline(), follower.stdout.readline()]  # arrives while the run still runs
    assert [ln.split(" ", 1)[1] for ln in live] == ["[rank1]:iter 1: loss 10.0000 from rank 1\n",
                                                    "[rank1]:iter 2: loss 5.0000 from rank 1\n"]
    time.sleep(1)
    assert follower.poll() is None  # still following: the run waits for the flag
    flag.touch()
    out, err = follower.communicate(timeout=60)
    guard.cancel()
    assert follower.returncode == 0, err
    assert [ln.split(" ", 1)[1] for ln in out.splitlines()] == ["[rank1]:done waiting"]
    wait_end(pod)
    whole = pod.ok("run.logs", "r").out
    assert "[rank0]:iter 1" in whole and "[rank1]:iter 1" in whole
    assert all(ln[:4].isdigit() and "T" in ln.split(" ")[0] for ln in whole.splitlines())  # time-stamped
    rank0 = pod.ok("run.logs", "r", "--rank", "0").out.splitlines()
    assert "[rank1]:" not in "\n".join(rank0) and any("[rank0]:done waiting" in ln for ln in rank0)
    tail = pod.ok("run.logs", "r", "--rank", "1", "--tail", "2").out.splitlines()
    assert [ln.split(" ", 1)[1] for ln in tail] == ["[rank1]:iter 2: loss 5.0000 from rank 1", "[rank1]:done waiting"]
    missing = pod.wf("run.logs", "nope")
    assert missing.rc == 5 and "run nope" in missing.last_err
    bad = pod.wf("run.logs", "../x")
    assert bad.rc == 2 and "run_id" in bad.last_err
    neg = pod.wf("run.logs", "r", "--tail", "-3")
    assert neg.rc == 2 and "--tail" in neg.last_err


def test_task_logs_follow_ends_with_the_task(local_pod: Pod):
    pod = local_pod
    pod.ok("task.run", "--id", "t1", "--cmd", "for i in 1 2 3; do echo line $i; sleep 0.5; done")
    res = pod.ok("task.logs", "t1", "--follow", timeout=60)
    assert [ln.split(" ", 1)[1] for ln in res.out.splitlines()] == ["line 1", "line 2", "line 3"]
    assert pod.ok("task.status", "--id", "t1", "--json").json()["state"] == "success"
    assert [ln.split(" ", 1)[1] for ln in pod.ok("task.logs", "t1", "--tail", "1").out.splitlines()] == ["line 3"]
    assert pod.wf("task.logs", "nope").rc == 5


def test_sweep_wait_exit_codes(ready: Pod):
    pod = ready
    none = pod.wf("sweep.wait")
    assert none.rc == 5 and "no sweep" in none.last_err
    flag = pod.root / "go"
    sweep(pod, f"slow,config/train_tiny.py,1,steps=1 wait_for={flag},\n")
    gave_up = pod.wf("sweep.wait", "--timeout-secs", "1")
    assert gave_up.rc == 9 and "still running" in gave_up.last_err
    flag.touch()
    done = pod.wf("sweep.wait")
    assert done.rc == 0 and "1 ok" in done.out
    sweep(pod, "good,config/train_tiny.py,1,steps=1,\nbad,config/train_tiny.py,2,steps=1 exit=4,\n")
    failed = pod.wf("sweep.wait")
    assert failed.rc == 1 and "1 of 2 run(s) did not succeed: bad" in failed.last_err


def _pty_run(pod: Pod, args: list[str], until: bytes, keys: bytes, timeout: float = 30) -> tuple[int, bytes]:
    """Run wfops in a real pseudo-terminal (80x24); once `until` shows up on the screen, type `keys` (every 2 s
    until the program ends: a terminal switched to raw mode may drop what was typed before)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: wfops with the terminal as stdin/stdout/stderr
        os.chdir(pod.root.parent)
        os.execve(str(WFOPS), [str(WFOPS), *args], {**pod.env(), "TERM": "xterm"})
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    seen, typed, deadline = b"", 0.0, time.time() + scaled(timeout)
    while time.time() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if keys and until in seen and time.time() - typed > 2:  # again if the client was not listening yet
            os.write(fd, keys)
            typed = time.time()
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen


def test_attach_opens_tmux_interactively_and_detaches(pod: Pod):
    pod.ok("task.run", "--id", "done", "--cmd", "true")
    pod.ok("task.wait", "--id", "done")
    code, screen = _pty_run(pod, ["task.attach", "--id", "done"], b"\n", b"")  # no task runs: no tmux session
    assert code == 5 and b"no tmux session" in screen and b"task done is not running there" in screen, screen
    pod.ok("task.run", "--id", "watch-me", "--cmd", "echo attach-marker-$((6*7)); sleep 60")
    wait_until(lambda: "attach-marker-42" in pod.ok("task.logs", "watch-me").out, what="the task output")
    # tmux draws its status line with the task's window selected (`:watch-me*`); Ctrl-b d detaches
    code, screen = _pty_run(pod, ["task.attach", "--id", "watch-me"], b":watch-me*", b"\x02d")
    assert code == 0, screen[-2000:]
    assert b"[detached" in screen
    assert pod.ok("task.status", "--id", "watch-me", "--json").json()["state"] == "running"  # it goes on
    code, screen = _pty_run(pod, ["sweep.attach"], b"\n", b"")
    assert code == 5 and b"no tmux session" in screen and b"the sweep is not running there" in screen
    code, screen = _pty_run(pod, ["task.attach", "--id", "done"], b"\n", b"")  # the session runs another task
    assert code == 5 and b"task done has no tmux window in session" in screen, screen
    piped = pod.wf("task.attach", "--id", "watch-me")
    assert piped.rc == 2 and "needs a terminal" in piped.last_err



def test_sweep_wait_says_when_the_queue_runner_died(local_ready: Pod):
    pod = local_ready
    flag = pod.root / "go"
    sweep(pod, f"held,config/train_tiny.py,1,steps=1 wait_for={flag},\nnext,config/train_tiny.py,2,steps=1,\n")
    record = pod.outputs / "_control" / "sweep.json"
    pid = wait_until(lambda: json.loads(record.read_text()).get("pid") if record.exists() else None,
                     what="the queue runner's pid")
    wait_until(lambda: (pod.outputs / "held" / "stdout.log").exists(), timeout=60, what="the first run to start")
    os.kill(int(pid), signal.SIGKILL)
    try:
        lost = pod.wf("sweep.wait")
        assert lost.rc == 8 and "the queue was lost" in lost.last_err, lost.err
    finally:
        flag.touch()


def test_shell_completion_works_from_any_directory(tmp_path):
    script = subprocess.run([str(WFOPS), "--print-completion-script", "bash"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert script.returncode == 0 and "wfops --complete" in script.stdout
    words = subprocess.run([str(WFOPS), "--complete", "--", "wfops", "run.logs", "-"], capture_output=True,
                           text=True, cwd=tmp_path).stdout.split()
    assert {"--follow", "--tail", "--rank"} <= set(words)
    tasks = subprocess.run([str(WFOPS), "--complete", "--", "wfops"], capture_output=True, text=True,
                           cwd=tmp_path).stdout.split()
    assert {"sweep.report", "sweep.wait", "sweep.attach", "run.logs", "task.logs", "task.attach"} <= set(tasks)


def test_run_logs_follow_goes_on_through_a_retry(local_ready: Pod):
    pod = local_ready
    pod.configure(RUN_RETRIES="1", RETRY_ON="nonzero_exit", RETRY_BACKOFF_SECS="1")
    marker = pod.root / "failed-once"
    script = pod.root / "repo" / "examples" / "nanogpt" / "metric_train.py"
    script.write_text(script.read_text().replace(  # the first attempt fails (exit 3), the retry succeeds
        'if args.get("wait_for"):',
        'if args.get("wait_for") and not os.path.exists(args["wait_for"]):\n'
        '    time.sleep(6)\n    print("first attempt fails", flush=True)\n'
        '    open(args["wait_for"] + ".%d" % rank, "w").close()\n    sys.exit(3)\n'
        'if args.get("wait_for"):'))
    sweep(pod, f"flaky,config/train_tiny.py,1,steps=1 wait_for={marker},\n")
    follower = subprocess.Popen([str(WFOPS), "run.logs", "flaky", "--follow", "--rank", "0"], env=pod.env(),
                                cwd=pod.root.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: (pod.root / "failed-once.0").exists(), timeout=60, what="the first attempt to fail")
    marker.touch()
    out, err = follower.communicate(timeout=180)
    assert follower.returncode == 0, err
    assert "first attempt fails" in out and "[rank0]:done waiting" in out, out
    assert out.index("first attempt fails") < out.index("[rank0]:done waiting")
    assert pod.ok("sweep.status", "--json").json()["runs"][0]["state"] == "success"


def test_sweep_status_shows_the_last_metric_values_and_sorts_by_one(ready: Pod):
    pod = ready
    sweep(pod, "a,config/train_tiny.py,1,lr=2 steps=4 jsonl=1,\n"
               "b,config/train_tiny.py,2,lr=1 steps=3,\n"
               "c,config/train_tiny.py,3,lr=3 steps=2,\n")
    wait_end(pod)
    lines = pod.ok("sweep.status").out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("run_id"))
    assert lines[head].split()[:7] == ["run_id", "state", "attempt", "gpus", "exit", "duration", "val_loss"]
    cells = {ln.split()[0]: ln.split()[6] for ln in lines[head + 1:head + 4]}
    assert cells == {"a": "6", "b": "-", "c": "-"}  # the first metric found: a's val_loss (last 10/4+1)
    by_loss = pod.ok("sweep.status", "--sort", "loss").out.splitlines()
    head = next(i for i, ln in enumerate(by_loss) if ln.startswith("run_id"))
    assert "loss" in by_loss[head].split() and [ln.split()[0] for ln in by_loss[head + 1:head + 4]] == ["b", "c", "a"]
    pod.configure(METRIC_COLUMNS="acc loss")
    data = pod.ok("sweep.status", "--json").json()
    assert {r["run_id"]: r["metrics"] for r in data["runs"]} == {  # --json: every metric's last value
        "a": {"val_loss": 6.0, "acc": 0.4}, "b": {"loss": round(10 / 3, 4)}, "c": {"loss": 15.0}}
    cols = pod.ok("sweep.status").out.splitlines()
    assert [w for w in cols[next(i for i, ln in enumerate(cols) if ln.startswith("run_id"))].split()][6:8] == [
        "acc", "loss"]


def test_a_lost_sweep_keeps_its_own_rows_and_totals_once_a_new_sweep_starts(local_ready: Pod):
    """The queue runner killed: sweep.list counts the lost sweep's rows (its queue wrote no totals), and the next
    sweep.start keeps them as they were, so `sweep.status --sweep OLD` does not read the new sweep's runs as its
    own (a run it never started is cancelled, not `skipped: already ok` with the new run's exit and duration)."""
    pod = local_ready
    pod.configure(POD_PRICE_PER_HOUR="36")  # $0.01 a second: what it cost is kept too
    flag = pod.root / "go"
    csv = sweep(pod, f"done1,config/train_tiny.py,3,steps=1,\nheld,config/train_tiny.py,1,steps=1 wait_for={flag},\n"
                     "next,config/train_tiny.py,2,steps=1,\n")
    old = pod.ok("sweep.status", "--json").json()["sweep"]["sweep_id"]
    record = pod.outputs / "_control" / "sweep.json"
    pid = wait_until(lambda: json.loads(record.read_text()).get("pid") if record.exists() else None,
                     what="the queue runner's pid")
    wait_until(lambda: (pod.outputs / "held" / "stdout.log").exists(), timeout=60, what="the first run to start")
    os.kill(int(pid), signal.SIGKILL)
    flag.touch()
    wait_until(lambda: pod.ok("sweep.status", "--json").json()["runs"][1]["state"] == "lost", timeout=60,
               what="the held run to show lost (its supervisor went with the queue)")
    before = pod.ok("sweep.status", "--json").json()
    assert before["cost"]["runs_usd"] > 0 and before["cost"]["pod_secs"] > 0, before["cost"]
    listed = pod.ok("sweep.list", "--json").json()["sweeps"][0]
    assert (listed["sweep_id"], listed["state"], listed["totals"]) == (
        old, "lost", {"success": 1, "lost": 1, "pending": 1})
    pod.ok("sweep.start", "--csv", str(csv))  # done1 is ok already; the two others run in the new sweep
    new = wait_end(pod)
    assert new["sweep"]["sweep_id"] != old and {r["run_id"]: r["state"] for r in new["runs"]} == {
        "done1": "skipped", "held": "success", "next": "success"}
    kept = pod.ok("sweep.status", "--sweep", old, "--json").json()
    assert kept["sweep"]["state"] == "lost" and kept["totals"] == {"success": 1, "lost": 1, "cancelled": 1}
    # what it cost, as before the new sweep: its runs' cost_usd and its pod time (the queue's open span closed)
    assert (kept["cost"]["runs_usd"], kept["cost"]["pod_secs"]) == (before["cost"]["runs_usd"],
                                                                    before["cost"]["pod_secs"]), kept["cost"]
    nxt = next(r for r in kept["runs"] if r["run_id"] == "next")
    assert nxt["state"] == "cancelled" and nxt["exit_code"] is None and "its queue runner was lost" in nxt["note"]
    by_id = {s["sweep_id"]: s["totals"] for s in pod.ok("sweep.list", "--json").json()["sweeps"]}
    assert by_id[old] == {"success": 1, "lost": 1, "cancelled": 1}
