"""The queue's forked supervisor (wfops.agent.forkrun.fork_run): the same records as `agent supervise SPEC`,
and nothing of the queue carries into it (its signal handlers, its reserve file, its environment). Each case runs
in a process of its own that plays the queue: it forks, as the scheduler does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

QUEUE = """
import json, os, signal, sys, time
from wfops.agent import forkrun, store
d, what = sys.argv[1], sys.argv[2]
heard = []
signal.signal(signal.SIGTERM, lambda *a: heard.append("queue's handler"))  # the queue's handler: never in the child
os.makedirs(d + "/control")
store.hold_reserve(d + "/control")  # the queue's reserve: the child must not free it
argv = {"exit3": ["bash", "-c", "echo out; exit 3"], "sleep": ["sleep", "30"],
        "env": ["bash", "-c", 'echo "[$RUN_ONLY] [${QUEUE_ONLY-unset}]"']}[what]
spec = {"argv": argv, "status": d + "/status.json", "log": d + "/stdout.log", "grace": 1, "summary": True}
store.write_json(d + "/spec.json", spec)
os.environ["QUEUE_ONLY"] = "1"
sys.stdout.write("queue-buffered ")  # in the queue's buffer (stdout is a pipe): the child must not write it again
proc = forkrun.fork_run(d + "/spec.json", {"RUN_ONLY": "yes", "PATH": os.environ["PATH"]})
if what == "sleep":
    deadline = time.time() + 30
    while (store.load(d + "/status.json") or {}).get("child_pid") is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
while proc.poll() is None:
    time.sleep(0.02)
kept = os.path.exists(d + "/control/" + store.RESERVE_NAME)
print(json.dumps({"rc": proc.returncode, "heard": heard, "reserve": kept}))
"""


def _queue(tmp_path: Path, what: str) -> tuple[dict, dict, dict]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the queue's stdout is buffered
    out = subprocess.run([sys.executable, "-c", QUEUE, str(tmp_path), what], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("queue-buffered") == 1, out.stdout  # written once, by the queue
    status = json.loads((tmp_path / "status.json").read_text())
    summary = json.loads((tmp_path / "summary.json").read_text())
    return json.loads(out.stdout.replace("queue-buffered ", "", 1)), status, summary


def test_a_forked_supervisor_records_the_end_and_exits_with_the_state_code(tmp_path):
    queue, status, summary = _queue(tmp_path, "exit3")
    assert queue == {"rc": 1, "heard": [], "reserve": True}  # failed = 1 (states.STATE_CODES); the reserve kept
    assert status["state"] == "failed" and status["exit_code"] == 3 and status["pid"] != status["child_pid"]
    assert summary["state"] == "failed" and summary["exit_code"] == 3
    assert "out" in (tmp_path / "stdout.log").read_text()


def test_term_to_a_forked_supervisor_cancels_its_run_not_the_queue_handler(tmp_path):
    queue, status, _ = _queue(tmp_path, "sleep")
    assert queue == {"rc": 3, "heard": [], "reserve": True}  # cancelled = 3: the supervisor's own handler
    assert status["state"] == "cancelled"


def test_a_forked_supervisor_runs_with_the_run_environment_only(tmp_path):
    queue, status, _ = _queue(tmp_path, "env")
    assert queue["rc"] == 0 and status["state"] == "success"
    assert "[yes] [unset]" in (tmp_path / "stdout.log").read_text()
