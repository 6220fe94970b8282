"""Ctrl-C at any moment of `sweep.start`, under `wfops` and `inv`, with warm connections on (the default): one
line, exit 130 (or the command had finished: exit 0), never a traceback; and the pod is consistent: the sweep
started fully (its files, its record, SWEEP_RUNNING, its queue alive) or not at all (the pod's files and state as
they were). The signal goes to the command's whole process group, as a terminal's Ctrl-C does, so on the `local`
target the pod's side gets it too."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, WFOPS, Pod, wait_until
from tests.integration.test_sweeps import status, swept, write_csv  # noqa: F401 - fixture
from tests.procview import is_flocked

OFFSETS = (0.15, 0.35, 0.6, 0.9, 1.3, 2.0)  # seconds after `wfops` starts: imports, connection, request, pod
EVENTS = ("keeper", "request", "manifest")  # both programs, cold: connecting, the request on the pod, mid-commit


def _manifests(pod: Pod) -> set[str]:
    d = pod.outputs / "_manifests"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def _wait_for_the_pod(pod: Pod) -> None:
    """Until no command holds the pod's command lock: a request that reached the pod has been carried out."""
    lock = pod.outputs / "_control" / "command.lock"
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks while a command runs on the pod
    finally:
        os.close(fd)


def _keeper_of(pid: int) -> bool:
    for entry in os.listdir("/proc"):
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"wfops.transport.keeper" in Path(f"/proc/{entry}/cmdline").read_bytes():
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def _event(pod: Pod, proc: subprocess.Popen, event: str, before: set[str]) -> bool:
    if proc.poll() is not None:
        return True
    if event == "keeper":
        return _keeper_of(proc.pid)
    if event == "request":
        return is_flocked(pod.outputs / "_control" / "command.lock", create=True)
    return any(n.endswith(".csv") and n.startswith("sweep-2") for n in _manifests(pod) - before)


def _interrupt(pod: Pod, argv: list[str], at: float | str) -> subprocess.CompletedProcess:
    before = _manifests(pod)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=pod.env(),
                            cwd=pod.root.parent, start_new_session=True)
    try:
        if isinstance(at, str):
            wait_until(lambda: _event(pod, proc, at, before), timeout=90, interval=0.002, what=at)
        else:
            time.sleep(at)  # the moment is the point of the test: a fixed offset, not a wait for an event
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _check_consistent(pod: Pod, before: set[str], state_before: str) -> bool:
    """The sweep started fully (True) or not at all (False)."""
    _wait_for_the_pod(pod)
    new = sorted(n for n in _manifests(pod) - before if n.endswith(".json") and n.count(".") == 1)
    leftovers = [n for n in _manifests(pod) if ".before-" in n or ".tmp." in n]
    assert not leftovers, leftovers
    if not new:
        assert _manifests(pod) == before and pod.state()["state"] == state_before
        return False
    sid = new[0][:-len(".json")]
    assert {f"{sid}.csv", f"{sid}.json", f"{sid}.sweep.json"} <= _manifests(pod), _manifests(pod)
    data = wait_until(lambda: (lambda s: s if s["runs"] and s["runs"][0]["state"] == "running" else None)(status(pod)),
                      timeout=90, what="the started sweep's run to be running")
    assert data["sweep"]["sweep_id"] == sid and data["sweep"]["state"] == "running"
    assert pod.state()["state"] == "SWEEP_RUNNING"
    pod.ok("sweep.stop")
    return True


@pytest.mark.parametrize("program", ["wfops", "inv"])
def test_ctrl_c_at_any_moment_of_sweep_start_is_one_line_and_all_or_nothing(swept: Pod, program: str):  # noqa: F811
    pod = swept
    pod.configure(WF_PERSIST_SECS="300")  # the default: warm connections (a keeper) on
    csv = write_csv(pod, "long,config/train_tiny.py,1,sleep=300,\n")
    if program == "inv":
        (pod.root.parent / "tasks.py").write_text("from wfops.tasks import ns  # noqa: F401\n")
        argv = [str(BIN / "inv"), "sweep.start", "--csv", str(csv)]
    else:
        argv = [str(WFOPS), "sweep.start", "--csv", str(csv)]
    codes = []
    for at in (*(OFFSETS if program == "wfops" else ()), *EVENTS):
        before, state_before = _manifests(pod), pod.state()["state"]
        pod.ok("disconnect", "--all")  # cold: the command starts its keeper
        res = _interrupt(pod, argv, at)
        codes.append(res.returncode)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert "Traceback" not in res.stderr, (at, res.stderr)
        if res.returncode in (0, -signal.SIGINT):  # done; or, on its way out, Python's own default handler back
            assert "started sweep-" in res.stdout and not lines, (at, res.returncode, res.stderr)
        else:
            assert res.returncode == 130 and len(lines) == 1 and lines[0].startswith("wfops: interrupted"), \
                (at, res.returncode, res.stderr)
            if "before anything was sent" in lines[0]:
                assert not _check_consistent(pod, before, state_before), (at, lines[0])
                continue
        _check_consistent(pod, before, state_before)
    assert 130 in codes, codes  # at least one moment fell inside the command
