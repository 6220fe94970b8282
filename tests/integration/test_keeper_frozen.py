"""A keeper that stops answering in the middle of a command (issue 23, part 4) is found like a frozen sshd: the
client pings it while the command is quiet and wants an answer; silent for 3 keepalive intervals, the command
ends with one line and exit 4 instead of hanging. A keeper that answers is never taken for frozen."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import WFOPS, Pod, wait_until
from tests.integration.test_keeper import keepers, warm_pod

FAST = {"WFOPS_SSH_KEEPALIVE_SECS": "1"}


def _agent_waiting(pod: Pod) -> bool:
    """A pod agent started for a client request (its boot program reads the request from stdin) runs on `pod`."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
            if b"sys.stdin.buffer.readline" in argv and str(pod.outputs).encode() in argv:
                return True
        except OSError:
            continue
    return False


def test_a_keeper_frozen_mid_command_ends_the_command_with_one_line(ssh_pod: Pod):
    pod = warm_pod(ssh_pod)
    pod.ok("task.run", "--id", "long", "--cmd", "sleep 300", env=FAST)  # starts the keeper
    # 3 keepalive intervals (1 s here), with room for a loaded machine
    proc, err, took = _keeper_frozen_while(pod, "task.wait", "--id", "long")
    assert proc.returncode == 4, err
    assert err.strip().splitlines() == [
        "wfops: the connection keeper stopped answering (no reply to a keepalive for 3s: it is stopped or hung); "
        "wfops closed it, the command may or may not have run (`wfops disconnect` ends the keeper)"]
    assert took < 30
    pod.ok("disconnect")  # a resumed keeper ends on request; the next command makes its own
    assert pod.ok("task.status", "--id", "long", "--json").json()["state"] == "running"


def test_a_quiet_command_through_an_answering_keeper_is_not_taken_for_frozen(ssh_pod: Pod):
    pod = warm_pod(ssh_pod)
    pod.ok("task.run", "--id", "quiet", "--cmd", "sleep 6")  # silent for 6 intervals: twice the limit
    assert pod.ok("task.wait", "--id", "quiet", "--json", env=FAST).json()["state"] == "success"
    assert len(keepers(pod)) == 1


def _keeper_frozen_while(pod: Pod, *args: str) -> tuple[subprocess.Popen, str, float]:
    """`wfops ARGS`, its keeper stopped once the command's agent is at work on the pod (for a request that carries
    the config's 8 MB of values, while the client still sends it): (process, stderr, seconds it took to end)."""
    proc = subprocess.Popen([str(WFOPS), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**pod.env(), **FAST}, cwd=pod.root.parent)
    keeper = None
    try:
        wait_until(lambda: _agent_waiting(pod), timeout=60, interval=0.01, what="the request reaching the pod")
        (keeper,) = keepers(pod)
        os.kill(keeper, signal.SIGSTOP)
        stopped = time.monotonic()
        _, err = proc.communicate(timeout=60)
        return proc, err, time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if keeper is not None:
            os.kill(keeper, signal.SIGCONT)


def test_a_keeper_frozen_mid_upload_ends_the_command_with_one_line(ssh_pod: Pod):
    """Issue 23, part 4: a keeper stopped while the client still sends it a large request (here the config sync
    of 8 MB of values; sweep.start's CSV travels the same way) must end the command within the keepalive deadline:
    one line, exit 4. A quiet keeper mid-upload is not an answering one."""
    pod = warm_pod(ssh_pod)
    big = {f"BIG_{i}": "x" * 100_000 for i in range(80)}  # each under the OS limit of one variable
    pod.configure(EXTRA_ENV_KEYS=" ".join(big), **big)
    pod.ok("fsm.status", env=FAST)  # starts the keeper (and the agent is on the pod)
    # a read the pod's kept agent does not answer (task.wait waits): its script and request go to the pod
    proc, err, took = _keeper_frozen_while(pod, "task.wait", "--id", "none")
    assert proc.returncode == 4, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("wfops: the connection keeper stopped"), err
    assert took < 30
