"""Tracked tasks against the loopback sshd and the `local` target: real tmux, real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid

import pytest

from tests.conftest import WFOPS, Pod, kill_tmux_server, wait_until
from tests.procview import waits_on_pidfd_of

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 ")


def task_dir(pod: Pod, tid: str):
    return pod.outputs / "_tasks" / tid


def status(pod: Pod, tid: str) -> dict:
    return json.loads((task_dir(pod, tid) / "status.json").read_text())


def procs_matching(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "pgrep" not in ln]


def _waits_for_lock(lock) -> bool:
    """A `flock -w 10 9` waits on this very lock file (its fd 9): tests running beside this one (pytest -n) have
    their own pods and command locks."""
    for line in procs_matching("flock -w 10 9"):
        try:
            if os.readlink(f"/proc/{line.split()[0]}/fd/9") == str(lock):
                return True
        except OSError:
            continue
    return False


def test_success_logs_status_and_command_file(pod: Pod):
    res = pod.ok("task.run", "--id", "hello", "--cmd", "echo hi; echo there >&2")
    assert "started task hello" in res.out
    waited = pod.ok("task.wait", "--id", "hello", "--json").json()
    assert waited["state"] == "success" and waited["exit_code"] == 0
    st = status(pod, "hello")
    for key in ("created_at", "started_at", "ended_at"):
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", st[key]), st[key]
    assert st["pid"] > 0 and st["boot_id"]
    log = (task_dir(pod, "hello") / "stdout.log").read_text().splitlines()
    assert [STAMP.sub("", ln) for ln in log] == ["hi", "there"]
    assert all(STAMP.match(ln) for ln in log)
    cmd = (task_dir(pod, "hello") / "command.sh").read_text()
    assert cmd.splitlines()[-1] == "echo hi; echo there >&2"
    assert f". {pod.env_path}" in cmd
    shown = pod.ok("task.status", "--id", "hello").out
    assert "state      success" in shown and "exit code  0" in shown and "there" in shown


def test_failure_reports_the_exit_code(pod: Pod):
    pod.ok("task.run", "--id", "boom", "--cmd", "echo about to fail; exit 3")
    res = pod.wf("task.wait", "--id", "boom")
    assert res.rc == 1
    assert res.last_err == "wfops: task boom ended failed (exit 3)"
    st = status(pod, "boom")
    assert st["state"] == "failed" and st["exit_code"] == 3


def test_timeout_ends_the_whole_process_tree(pod: Pod):
    marker = f"wfops-tt-{uuid.uuid4().hex[:8]}"
    cmd = f"(exec -a {marker}-child sleep 300) & (exec -a {marker}-grandchild bash -c 'sleep 300; :') & " \
          f"exec -a {marker}-main sleep 300"
    pod.ok("task.run", "--id", "slow", "--cmd", cmd, "--timeout-secs", "3")
    wait_until(lambda: len(procs_matching(marker)) >= 3, what="the matcher to see the task's 3 processes (control)")
    res = pod.wf("task.wait", "--id", "slow", "--json")
    assert res.rc == 7, res.err
    data = res.json()
    assert data["state"] == "timed_out" and "exceeded 3s" in data["reason"]
    wait_until(lambda: not procs_matching(marker), timeout=5, what="no process of the task left")


def test_killed_runner_is_reported_lost_not_running(pod: Pod):
    marker = f"wfops-lost-{uuid.uuid4().hex[:8]}"
    pod.ok("task.run", "--id", "victim", "--cmd", f"exec -a {marker} sleep 300")
    def running() -> dict | None:  # the runner records the command's pid just after it says running
        st = status(pod, "victim")
        return st if st["state"] == "running" and "child_pid" in st else None

    st = wait_until(running, what="task running, its command's pid recorded")
    os.kill(st["pid"], signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{st['pid']}"), what="runner gone")
    shown = pod.ok("task.status", "--id", "victim", "--json").json()
    assert shown["state"] == "lost" and shown["recorded_state"] == "running"
    assert "runner" in shown["reason"]
    res = pod.wf("task.wait", "--id", "victim")
    assert res.rc == 8 and res.last_err == "wfops: task victim ended lost"
    listed = {t["id"]: t["state"] for t in pod.ok("task.list", "--json").json()["tasks"]}
    assert listed["victim"] == "lost"
    os.killpg(st["child_pid"], signal.SIGKILL)  # the orphaned command itself; the test cleans it up


def test_killed_tmux_server_is_reported_lost(pod: Pod, tmp_path):
    own_socket = f"wfops-kill-{uuid.uuid4().hex[:8]}"
    pod.configure(WF_TMUX_SOCKET=own_socket)
    marker = f"wfops-hup-{uuid.uuid4().hex[:8]}"
    pod.ok("task.run", "--id", "hup", "--cmd", f"exec -a {marker} sleep 300")
    wait_until(lambda: status(pod, "hup")["state"] == "running", what="task running")
    wait_until(lambda: procs_matching(marker), what="the matcher to see the task (positive control)")
    subprocess.run(["tmux", "-L", own_socket, "kill-server"], check=True)
    res = pod.wf("task.wait", "--id", "hup", "--json")
    kill_tmux_server(own_socket)
    assert res.rc == 8, res.err
    assert res.json()["state"] == "lost"
    wait_until(lambda: not procs_matching(marker), timeout=5, what="task processes stopped")


def test_wait_gives_up_with_its_own_exit_code_and_then_succeeds(pod: Pod):
    flag = pod.root / "go"
    pod.ok("task.run", "--id", "gated", "--cmd", f"while [ ! -e {flag} ]; do sleep 0.05; done; echo done")
    res = pod.wf("task.wait", "--id", "gated", "--timeout-secs", "1")
    assert res.rc == 9 and res.last_err == "wfops: task gated is still running after 1s"
    waiter = subprocess.Popen([str(WFOPS), "task.wait", "--id", "gated", "--json"], env=pod.env(),
                              cwd=pod.root.parent, stdout=subprocess.PIPE, text=True)
    agent = str(pod.outputs / "_control" / "agent")  # the waiting agent: an agent process that is not a runner
    runner = int(status(pod, "gated")["pid"])
    # proven from outside, not from the agent's own report: the waiter sleeps in a select() on a pidfd of the
    # task's runner (a polling wait holds no pidfd and sleeps in nanosleep, not select)
    waiting = wait_until(lambda: [pid for pid in (ln.split()[0] for ln in procs_matching(agent)
                                                  if "supervise" not in ln) if waits_on_pidfd_of(pid, runner)],
                         what="the waiter on the pod to block in select() on a pidfd of the runner")
    assert len(waiting) == 1, waiting
    flag.touch()
    out, _ = waiter.communicate(timeout=60)
    data = json.loads(out)
    assert data["state"] == "success"
    assert data["waited_by"].get("pidfd", 0) >= 1 and "poll" not in data["waited_by"]  # and the agent agrees


def test_duplicate_id_refused_unless_force_which_keeps_a_backup(pod: Pod):
    pod.ok("task.run", "--id", "dup", "--cmd", "echo first")
    pod.ok("task.wait", "--id", "dup")
    before = status(pod, "dup")
    res = pod.wf("task.run", "--id", "dup", "--cmd", "echo second")
    assert res.rc == 10
    assert res.last_err.startswith("wfops: task dup already exists (success); pick another --id or pass --force")
    assert status(pod, "dup") == before
    pod.ok("task.run", "--id", "dup", "--cmd", "echo second", "--force")
    pod.ok("task.wait", "--id", "dup")
    assert "second" in (task_dir(pod, "dup") / "stdout.log").read_text()
    backups = list((pod.outputs / "_tasks" / "_backups").iterdir())
    assert len(backups) == 1 and backups[0].name.startswith("dup.")
    assert "first" in (backups[0] / "stdout.log").read_text()


def test_force_does_not_replace_a_running_task(pod: Pod):
    flag = pod.root / "stop"
    pod.ok("task.run", "--id", "busy", "--cmd", f"while [ ! -e {flag} ]; do sleep 0.05; done")
    res = pod.wf("task.run", "--id", "busy", "--cmd", "echo x", "--force")
    assert res.rc == 10 and "still running" in res.last_err
    flag.touch()
    pod.ok("task.wait", "--id", "busy")


def test_list_newest_first_with_states(pod: Pod):
    # made in the order m, z, a: newest first is a, z, m, which neither sorting by id (a, m, z) nor its reverse
    # (z, m, a) gives, so the list must follow the order they were made in
    for tid, cmd in (("m", "true"), ("z", "false"), ("a", "true")):
        pod.ok("task.run", "--id", tid, "--cmd", cmd)
        pod.wf("task.wait", "--id", tid)
    data = pod.ok("task.list", "--json").json()
    # made within the same second or not, the order is the order they were made in (newest first)
    assert [(t["id"], t["state"]) for t in data["tasks"]] == [("a", "success"), ("z", "failed"), ("m", "success")]
    table = pod.ok("task.list").out
    lines = table.splitlines()
    assert lines[0].split() == ["id", "state", "exit", "started", "duration", "note"]
    assert [ln.split()[:2] for ln in lines[1:4]] == [["a", "success"], ["z", "failed"], ["m", "success"]], table
    limited = pod.ok("task.list", "--limit", "1", "--json").json()
    assert [t["id"] for t in limited["tasks"]] == ["a"] and limited["total"] == 3


def test_workdir_option_and_missing_workdir(pod: Pod):
    wd = pod.root / "wd"
    wd.mkdir()
    pod.ok("task.run", "--id", "inwd", "--cmd", "pwd", "--workdir", str(wd))
    pod.ok("task.wait", "--id", "inwd")
    assert STAMP.sub("", (task_dir(pod, "inwd") / "stdout.log").read_text().strip()) == str(wd)
    pod.ok("task.run", "--id", "nowd", "--cmd", "pwd", "--workdir", str(pod.root / "missing"))
    res = pod.wf("task.wait", "--id", "nowd")
    assert res.rc == 1
    assert "does not exist" in (task_dir(pod, "nowd") / "stdout.log").read_text()


def test_unknown_task_is_not_found(pod: Pod):
    for args in (("task.status", "--id", "nope"), ("task.wait", "--id", "nope")):
        res = pod.wf(*args)
        assert res.rc == 5 and res.last_err == "wfops: no task nope on the pod (see task.list)"
        assert "Traceback" not in res.err


@pytest.mark.parametrize("bad_id", ["../x", "a b", "$(touch PWNED)", "", ".hidden", "x/y", "a..b", "-rf",
                                    "x" * 129, "ok\nnewline"])
def test_hostile_task_ids_are_refused_before_connecting(ssh_pod: Pod, bad_id: str):
    pwned = ssh_pod.root / "PWNED"
    bad = bad_id.replace("PWNED", str(pwned))
    res, conns, _ = ssh_pod.count("task.run", "--id", bad, "--cmd", "echo hi")
    assert res.rc == 2, res.err
    assert len([ln for ln in res.err.splitlines() if ln.strip()]) == 1
    assert res.last_err.startswith(("wfops: invalid task id", "wfops: usage: "))  # "": the usage line
    assert conns == 0
    assert not pwned.exists() and not ssh_pod.outputs.exists()


def test_hostile_commands_run_verbatim(pod: Pod):
    a, b = pod.root / "A-pwned", pod.root / "B-pwned"
    cmd = (
        "printf '%s\\n' \"it's\" '$(touch " + str(a) + ")' '`touch " + str(b) + "`' 'semi; colon' \"dq \\\"x\\\"\"\n"
        "echo 'second line'"
    )
    pod.ok("task.run", "--id", "hostile", "--cmd", cmd)
    pod.ok("task.wait", "--id", "hostile")
    lines = [STAMP.sub("", ln) for ln in (task_dir(pod, "hostile") / "stdout.log").read_text().splitlines()]
    assert lines == ["it's", f"$(touch {a})", f"`touch {b}`", "semi; colon", 'dq "x"', "second line"]
    assert not a.exists() and not b.exists()
    assert (task_dir(pod, "hostile") / "command.sh").read_text().endswith(cmd + "\n")


def test_config_values_with_spaces_and_dollars_reach_the_task(pod: Pod):
    value = "two  spaces $HOME ${NOT} `tick` \"dq\" it's"
    pod.configure(EXTRA_ENV_KEYS="MY_VALUE", MY_VALUE=value, WANDB_API_KEY="hush-hush-42")
    out = pod.root / "value.txt"
    pod.ok("task.run", "--id", "envcheck", "--cmd", f"printf '%s' \"$MY_VALUE\" > {out}; echo \"$WANDB_API_KEY\"")
    pod.ok("task.wait", "--id", "envcheck")
    assert out.read_text() == value
    assert oct(pod.env_path.stat().st_mode & 0o777) == "0o600"
    shown = pod.ok("task.status", "--id", "envcheck")
    assert "hush-hush-42" not in shown.out + shown.err and "********" in shown.out


def test_config_sync_is_skipped_when_unchanged(pod: Pod):
    first = pod.ok("fsm.status")
    assert "config written to" in first.err
    stat1 = pod.env_path.stat()
    second = pod.ok("fsm.status")
    assert "config written to" not in second.err
    stat2 = pod.env_path.stat()
    assert (stat1.st_ino, stat1.st_mtime_ns) == (stat2.st_ino, stat2.st_mtime_ns)
    pod.configure(SWEEP_MATCH="changed")
    assert "config written to" in pod.ok("fsm.status").err
    assert "SWEEP_MATCH=changed" in pod.env_path.read_text()


def test_the_command_lock_makes_a_second_mutating_command_wait_and_then_refuse(ssh_pod: Pod):
    """Two mutating commands never interleave: while another holds the pod's command lock, task.run waits
    (nothing of it happens on the pod), goes on when the lock is free, and gives up with exit 10 after 10 s."""
    import fcntl

    pod = ssh_pod
    pod.ok("fsm.reset", "POD_READY")
    with (pod.outputs / "_control" / "command.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiter = subprocess.Popen([str(WFOPS), "task.run", "--id", "queued", "--cmd", "true"], env=pod.env(),
                                  cwd=pod.root.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: _waits_for_lock(pod.outputs / "_control" / "command.lock"),
                   what="the second command to wait for the lock")
        assert not task_dir(pod, "queued").exists()  # it did nothing while the lock was held
        fcntl.flock(lock, fcntl.LOCK_UN)
        _, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, err
        assert pod.ok("task.wait", "--id", "queued", "--json").json()["state"] == "success"
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = pod.wf("task.run", "--id", "refused", "--cmd", "true")
    assert res.rc == 10 and res.last_err.startswith("wfops: another wfops command is still working on this pod")
    assert not task_dir(pod, "refused").exists()
