"""Resume from checkpoints (issue 20, part 2), over the loopback sshd pod: a training script of this test's own
checkpoints every N steps and resumes when asked (`init_from=resume`); RESUME_ARGS / RESUME_WHEN make a later
attempt resume when the checkpoint is there and start from scratch, saying so, when it is not."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from tests.conftest import Pod, wait_until
from tests.integration.test_sweeps import (
    local_swept,  # noqa: F401 - fixture
    ssh_swept,  # noqa: F401 - fixture
    states,
    status,
    wait_sweep,
)

HEADER = "run_id,config,seed,overrides,notes,gpus\n"
CFG = "config/train_tiny.py"

# steps=N every=K: a step every step_secs, metrics.jsonl per step, ckpt.json every K steps (temp + rename);
# fail_at=S fail_once=FLAG: the first time (FLAG absent) it dies at step S with an NCCL error (a transient class);
# init_from=resume: go on from ckpt.json's step. It ends by writing final.json {final_step, started_from}.
CKPT_TRAIN = '''\
import json, os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)
out = args["out_dir"]
steps, every = int(args.get("steps", "20")), int(args.get("every", "5"))
ckpt = os.path.join(out, "ckpt.json")
os.makedirs(out, exist_ok=True)
start = 0
if args.get("init_from") == "resume":
    with open(ckpt) as fh:
        start = json.load(fh)["step"]
    print("resumed from step %d (WFOPS_RESUME_FROM=%s)" % (start, os.environ.get("WFOPS_RESUME_FROM")), flush=True)
else:
    print("training from scratch", flush=True)
flag = args.get("fail_once")
for step in range(start + 1, steps + 1):
    time.sleep(float(args.get("step_secs", "0.02")))
    with open(os.path.join(out, "metrics.jsonl"), "a") as fh:
        fh.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\\n")
    if step % every == 0:
        with open(ckpt + ".tmp", "w") as fh:
            json.dump({"step": step}, fh)
        os.replace(ckpt + ".tmp", ckpt)
    if step == int(args.get("fail_at", "-1")) and flag and not os.path.exists(flag):
        open(flag, "w").close()
        print("NCCL error: unhandled system error (pretend)", flush=True)
        sys.exit(1)
with open(os.path.join(out, "final.json"), "w") as fh:
    json.dump({"final_step": steps, "started_from": start, "argv": sys.argv}, fh)
'''


def _setup(pod: Pod, **extra: str) -> None:
    (pod.root / "repo" / "examples" / "nanogpt" / "ckpt_train.py").write_text(CKPT_TRAIN)
    pod.configure(**{"TRAIN_SCRIPT": "ckpt_train.py", "TRAIN_LAUNCHER": "python", "RESUME_ARGS": "init_from=resume",
                     "RESUME_WHEN": "ckpt.json", "RETRY_BACKOFF_SECS": "1", **extra})


def csv_file(pod: Pod, rows: str, name: str = "sweep.csv") -> Path:
    path = pod.root.parent / name
    path.write_text(HEADER + rows)
    return path


def final(pod: Pod, run_id: str) -> dict:
    return json.loads((pod.outputs / run_id / "final.json").read_text())


def test_a_retry_after_a_failure_mid_run_resumes_and_one_with_no_checkpoint_starts_from_scratch(ssh_swept: Pod):  # noqa: F811
    pod = ssh_swept
    pwned = pod.root / "pwned"
    # a hostile word in RESUME_ARGS reaches the script as one argument and never a shell
    _setup(pod, RUN_RETRIES="1", RESUME_ARGS=f"init_from=resume note='$(touch {pwned})'")
    late, early = pod.root / "late-flag", pod.root / "early-flag"
    pod.ok("sweep.start", "--csv", str(csv_file(pod, (
        f"late,{CFG},1,steps=20 every=5 fail_at=13 fail_once={late},,\n"
        f"early,{CFG},2,steps=20 every=5 fail_at=3 fail_once={early},,\n"))))
    data = wait_sweep(pod, timeout=120)
    assert states(data) == {"late": "success", "early": "success"}, data["runs"]
    assert final(pod, "late")["started_from"] == 10 and final(pod, "late")["final_step"] == 20
    log = (pod.outputs / "late" / "stdout.log").read_text()
    assert f"resumed from step 10 (WFOPS_RESUME_FROM={pod.outputs / 'late' / 'ckpt.json'})" in log
    assert "init_from=resume" in (pod.outputs / "late" / "command.sh").read_text()
    assert "init_from" not in (pod.outputs / "late" / "attempts" / "1" / "command.sh").read_text()
    assert final(pod, "late")["argv"][-2:] == ["init_from=resume", f"note=$(touch {pwned})"]
    assert not pwned.exists()
    rows = {r["run_id"]: r for r in data["runs"]}
    assert rows["late"]["resume"] == "resumed from ckpt.json (last step in metrics: 13)", rows["late"]
    assert rows["late"]["note"].startswith("resumed from ckpt.json")
    # no checkpoint yet when it failed at step 3: the retry starts over, says so, and still reaches the target
    assert final(pod, "early")["started_from"] == 0 and final(pod, "early")["final_step"] == 20
    assert rows["early"]["resume"] == "no checkpoint: from scratch"
    assert "init_from" not in (pod.outputs / "early" / "command.sh").read_text()
    summ = json.loads((pod.outputs / "late" / "summary.json").read_text())
    assert [(a["attempt"], a["state"], a.get("resume")) for a in summ["attempts"]] == [
        (1, "failed", None), (2, "success", "resumed from ckpt.json (last step in metrics: 13)")]
    text = pod.ok("sweep.status").out
    assert re.search(r"^late\s+success\s+2/2\s.*resumed from ckpt\.json", text, re.M), text
    assert re.search(r"^early\s+success\s+2/2\s.*no checkpoint: from scratch", text, re.M), text
    queue = (pod.outputs / "_manifests" / f"{data['sweep']['sweep_id']}.log").read_text()
    assert "late: attempt 2: resumed from ckpt.json" in queue and "early: attempt 2: no checkpoint" in queue


def test_sweep_retry_of_a_failed_run_goes_on_from_its_checkpoint(local_swept: Pod):  # noqa: F811
    pod = local_swept
    _setup(pod, RUN_RETRIES="0")
    flag = pod.root / "flag"
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"r1,{CFG},1,steps=12 every=4 fail_at=9 fail_once={flag},,\n")))
    assert states(wait_sweep(pod)) == {"r1": "failed"}
    assert "from scratch" not in status(pod)["runs"][0]["note"]  # a first attempt decides nothing
    pod.ok("sweep.retry", "--failed")
    data = wait_sweep(pod)
    assert states(data) == {"r1": "success"}
    assert final(pod, "r1")["started_from"] == 8 and final(pod, "r1")["final_step"] == 12
    row = data["runs"][0]
    assert (row["attempt"], row["resume"]) == (2, "resumed from ckpt.json (last step in metrics: 9)"), row
    assert not (pod.outputs / "_previous").exists()  # the same run dir, the next attempt
    assert json.loads((pod.outputs / "r1" / "attempts" / "1" / "summary.json").read_text())["state"] == "failed"


def test_bad_resume_keys_are_one_line_and_start_nothing(local_swept: Pod):  # noqa: F811
    pod = local_swept
    csv = csv_file(pod, f"r1,{CFG},1,,,\n")
    for key, value, said in (
            ("RESUME_WHEN", "../elsewhere/ckpt.pt", "no leading '/', no '..'"),
            ("RESUME_WHEN", "/abs/ckpt.pt", "no leading '/', no '..'"),
            ("RESUME_ARGS", "resume", "RESUME_ARGS: override 'resume' is not key=value"),
            ("RESUME_ARGS", "out_dir=/tmp/x", "RESUME_ARGS: override out_dir is set by wfops (TRAIN_INJECT)")):
        pod.configure(**{key: value})
        res = pod.wf("sweep.start", "--csv", str(csv))
        assert res.rc == 2 and said in res.last_err and len(res.err.strip().splitlines()) == 1, (key, res.err)
        assert not (pod.outputs / "_manifests").exists()
        pod.configure(**{key: ""})


def test_a_lost_attempt_is_retried_from_its_checkpoint(local_swept: Pod):  # noqa: F811
    """The run's supervisor is killed mid-run (its runner gone: class lost, in RETRY_ON by default): the queue ends
    what is left of it, and the retry goes on from the checkpoint."""
    pod = local_swept
    _setup(pod, RUN_RETRIES="1")
    pod.ok("sweep.start", "--csv", str(csv_file(pod, f"r1,{CFG},1,steps=60 every=5 step_secs=0.1,,\n")))
    ckpt = pod.outputs / "r1" / "ckpt.json"
    wait_until(lambda: ckpt.exists() and json.loads(ckpt.read_text())["step"] >= 10, timeout=90, interval=0.2,
               what="a checkpoint at step 10 or later")
    os.kill(json.loads((pod.outputs / "r1" / "status.json").read_text())["pid"], signal.SIGKILL)
    data = wait_sweep(pod, timeout=120)
    assert states(data) == {"r1": "success"}, data["runs"]
    summ = json.loads((pod.outputs / "r1" / "summary.json").read_text())
    assert [(a["attempt"], a["state"]) for a in summ["attempts"]] == [(1, "lost"), (2, "success")]
    assert final(pod, "r1")["started_from"] >= 10 and final(pod, "r1")["final_step"] == 60
    assert data["runs"][0]["resume"].startswith("resumed from ckpt.json (last step in metrics: ")
