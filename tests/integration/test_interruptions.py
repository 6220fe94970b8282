"""Interrupted and stalled commands, against the real sshd and local bash: a fetch stopped by SIGTERM or SIGKILL
leaves no staging behind (the next fetch removes what a killed one left, never a running one's); a frozen pod
is found by the keepalive and reported as exit 4; an interrupted mutating command says what to check.

The transfer is held mid-stream deterministically: the test stops the fetch's extractor (SIGSTOP) as soon as it
exists, so the pipe and the SSH window fill and the pod's tar blocks; it then waits for that tar (an event, not a
time) before it signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import WFOPS, Pod, wait_until
from tests.procview import is_flocked

BLOB_MB = 96  # well over what the pipe, the SSH window and the socket buffers hold (~40 MB): the tar must block


# ------------------------------------------------------------------ processes, from /proc

def _procs() -> dict[int, tuple[int, str, list[str]]]:
    """pid -> (parent pid, state, argv) of every process now."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        found[int(entry)] = (int(fields[1]), fields[0], [a.decode(errors="replace") for a in argv if a])
    return found


def _child(parent: int, word: str) -> int | None:
    return next((pid for pid, (ppid, _, argv) in _procs().items() if ppid == parent and word in " ".join(argv)), None)


def _gone(pid: int) -> bool:
    info = _procs().get(pid)
    return info is None or info[1] == "Z"


def _pod_tar(pod: Pod) -> int | None:
    """The pod's `tar -C OUTPUTS -cf - ...` of a fetch (local bash and the sshd session run on this machine)."""
    return next((pid for pid, (_, _, argv) in _procs().items()
                 if argv and Path(argv[0]).name == "tar" and str(pod.outputs) in argv), None)


def _start(pod: Pod, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    if not pod.config_path.exists():
        pod.write_config()
    return subprocess.Popen([str(WFOPS), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**pod.env(), **(env or {})}, cwd=pod.root.parent)


def _read_lines(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def _clean_up(proc: subprocess.Popen, stopped: int | None) -> None:
    """After a test: wfops ended (killed if still running) and the process the test stopped, resumed."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
    if stopped is not None:
        _resume(stopped)


def _resume(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------ run.fetch stopped mid-stream

@pytest.fixture
def big_run(pod: Pod) -> Pod:
    """A run dir with a large (sparse) file on the pod, and an older local copy of that run."""
    pod.ok("fsm.reset", "CHECKED_OUT")
    run = pod.outputs / "big"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    with (run / "blob.bin").open("wb") as fh:
        fh.truncate(BLOB_MB * 1024 * 1024)
    old = pod.root.parent / "artifacts" / "big"
    old.mkdir(parents=True)
    (old / "old.txt").write_text("the copy from an earlier fetch")
    return pod


def _artifacts(pod: Pod) -> Path:
    return pod.root.parent / "artifacts"


def _staging(pod: Pod) -> list[str]:
    return sorted(p.name for p in _artifacts(pod).iterdir() if p.name.startswith(".incoming-"))


@contextmanager
def _fetch_held_mid_stream(pod: Pod) -> Iterator[tuple[subprocess.Popen, int]]:
    """`run.fetch big` with its extractor stopped and the pod's tar blocked; yields (wfops, extractor pid)."""
    proc = _start(pod, "run.fetch", "big")
    extractor = None
    try:
        extractor = wait_until(lambda: _child(proc.pid, "wfops.artifacts.fetch"), timeout=60, interval=0.005,
                               what="the fetch's extractor")
        os.kill(extractor, signal.SIGSTOP)
        wait_until(lambda: _pod_tar(pod), timeout=60, what="the pod's tar to start streaming")
        yield proc, extractor
    finally:
        _clean_up(proc, extractor)


@pytest.mark.parametrize("persist", ["0", "60"], ids=["own-connection", "warm-keeper"])  # warm ssh: the lean entry
def test_sigterm_during_a_fetch_removes_its_staging_and_says_so(big_run: Pod, persist: str):
    pod = big_run
    pod.configure(WF_PERSIST_SECS=persist)
    with _fetch_held_mid_stream(pod) as (proc, _):
        assert len(_staging(pod)) == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    lines = [ln for ln in err.splitlines() if not ln.startswith("wfops: fetching ")]  # progress lines may come
    assert (proc.returncode, lines) == (143, ["wfops: terminated (SIGTERM)"])
    assert _staging(pod) == []
    assert sorted(p.name for p in (_artifacts(pod) / "big").iterdir()) == ["old.txt"]  # the old copy, untouched


def test_a_fetch_killed_with_sigkill_leaves_staging_that_the_next_fetch_removes(big_run: Pod):
    pod = big_run
    with _fetch_held_mid_stream(pod) as (proc, extractor):
        proc.kill()
        proc.communicate(timeout=60)
        left = _staging(pod)
        assert len(left) == 1  # what a killed fetch leaves: nothing could run on its way out
        _resume(extractor)  # it reads the end of its stream and exits: the staging has no owner any more
        wait_until(lambda: _gone(extractor), timeout=60, what="the killed fetch's extractor to exit")
    running = _artifacts(pod) / ".incoming-of-a-fetch-still-running"
    running.mkdir()
    holder = subprocess.Popen(["flock", str(running), "cat"], stdin=subprocess.PIPE)  # holds its lock, as a fetch
    try:
        wait_until(lambda: is_flocked(running), what="the other fetch's lock")
        res = pod.ok("run.fetch", "big")
        assert _staging(pod) == [running.name]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert res.out.strip() == str(_artifacts(pod) / "big")
    assert (_artifacts(pod) / "big" / "blob.bin").stat().st_size == BLOB_MB * 1024 * 1024
    assert (_artifacts(pod) / "big" / "old.txt").exists()  # not on the pod: a local file stays (see run.fetch)


# ------------------------------------------------------------------ a frozen pod

def _serving_session(listener: int, before: set[int]) -> int | None:
    """The sshd child serving a new connection (`sshd: USER@notty`), once it runs our command (`bash -s`)."""
    for pid, (ppid, _, argv) in _procs().items():
        if ppid == listener and pid not in before and "@notty" in " ".join(argv) and _child(pid, "bash"):
            return pid
    return None


def test_a_quiet_but_answering_pod_is_not_taken_for_dead(ssh_pod: Pod):
    pod = ssh_pod
    pod.ok("task.run", "--id", "quiet", "--cmd", "sleep 6")  # silent for 6 keepalive intervals: twice the limit
    pod.ok("task.wait", "--id", "quiet", env={"WFOPS_SSH_KEEPALIVE_SECS": "1"})


def test_a_frozen_pod_is_exit_4_with_one_line(ssh_pod: Pod):
    pod = ssh_pod
    pod.configure(WF_PERSIST_SECS="0")  # the command's own connection (a frozen keeper: test_keeper_frozen.py)
    pod.ok("task.run", "--id", "long", "--cmd", "sleep 300")
    listener = pod.sshd.proc.pid
    before = {pid for pid, (ppid, _, _) in _procs().items() if ppid == listener}
    proc = _start(pod, "task.wait", "--id", "long", env={"WFOPS_SSH_KEEPALIVE_SECS": "1"})
    session = None
    try:
        session = wait_until(lambda: _serving_session(listener, before), timeout=60,
                             what="the sshd session of task.wait")
        os.kill(session, signal.SIGSTOP)
        _, err = proc.communicate(timeout=120)  # generous: detection takes 3-4 keepalive intervals (1 s here)
    finally:
        _clean_up(proc, session)
    assert proc.returncode == 4, err
    assert err.strip().splitlines() == [
        f"wfops: the connection to {pod.sshd.address} stopped answering (no reply to a keepalive for 3s: the pod "
        "or the network is frozen); wfops closed it"]


# ------------------------------------------------------------------ interrupted mutating commands

@contextmanager
def _command_lock_held(pod: Pod) -> Iterator[Path]:
    """Hold the pod's command lock, so a mutating command's request arrives and then waits on the pod."""
    lock = pod.outputs / "_control" / "command.lock"
    holder = subprocess.Popen(["flock", str(lock), "cat"], stdin=subprocess.PIPE)
    try:
        wait_until(lambda: lock.exists() and is_flocked(lock), what="the command lock")
        yield lock
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def _waiting_for(lock: Path) -> int | None:
    """The pod-side `flock -w N 9` of a command, waiting for `lock`."""
    for pid, (_, _, argv) in _procs().items():
        if argv[:2] == ["flock", "-w"]:
            try:
                if os.readlink(f"/proc/{pid}/fd/9") == str(lock):
                    return pid
            except OSError:
                continue
    return None


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"),
                                           (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_an_interrupted_sweep_start_says_the_sweep_may_have_started(pod: Pod, sig, code, word):
    pod.ok("fsm.reset", "CHECKED_OUT")
    csv = pod.root.parent / "sweep.csv"
    csv.write_text("run_id,config,seed,overrides,notes\nr1,config/absent.py,1,,\n")  # refused, if it ever runs
    with _command_lock_held(pod) as lock:
        proc = _start(pod, "sweep.start", "--csv", str(csv))
        try:
            wait_until(lambda: _waiting_for(lock), timeout=60, what="sweep.start to wait for the command lock")
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == code
    assert err.strip().splitlines() == [
        f"wfops: {word} after the request was sent: the sweep may have started: run sweep.status"]


def test_interrupted_before_the_request_left_says_nothing_changed(ssh_pod: Pod):
    """A host that accepts TCP but never speaks SSH: the command is stuck connecting when Ctrl-C comes."""
    pod = ssh_pod
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted = threading.Event()
    kept: list[socket.socket] = []

    def accept() -> None:
        conn, _ = silent.accept()
        kept.append(conn)
        accepted.set()

    threading.Thread(target=accept, daemon=True).start()
    pod.configure(OPS_DEFAULT_HOST=f"root@127.0.0.1:{silent.getsockname()[1]}", SSH_CONNECT_TIMEOUT="60")
    csv = pod.root.parent / "sweep.csv"
    csv.write_text("run_id,config,seed,overrides,notes\nr1,config/a.py,1,,\n")
    proc = _start(pod, "sweep.start", "--csv", str(csv))
    try:
        assert accepted.wait(60), "wfops never connected"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for s in (*kept, silent):
            s.close()
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["wfops: interrupted before anything was sent to the pod; nothing was changed"]


def test_an_interrupted_read_only_command_is_one_line(ssh_pod: Pod):
    pod = ssh_pod
    pod.configure(WF_PERSIST_SECS="0")  # the command's own connection (a frozen keeper: test_keeper_frozen.py)
    pod.ok("task.run", "--id", "long", "--cmd", "sleep 300")
    listener = pod.sshd.proc.pid
    before = {pid for pid, (ppid, _, _) in _procs().items() if ppid == listener}
    proc = _start(pod, "task.wait", "--id", "long")
    try:
        wait_until(lambda: _serving_session(listener, before), timeout=60, what="the sshd session of task.wait")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, err.strip().splitlines()) == (130, ["wfops: interrupted"])


def test_the_fetch_progress_line_carries_the_pods_size(big_run: Pod):
    """End to end: the pod's `@wfops-size` message (the total, counted before the stream) reaches the client's
    progress line while the transfer is held, and the fetch completes once it goes on."""
    pod = big_run
    total = f"of {BLOB_MB * 1024 * 1024 / 1e6:.1f} MB"
    with _fetch_held_mid_stream(pod) as (proc, extractor):
        lines: list[str] = []
        reader = threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True)
        reader.start()
        # held until the progress thread has reported (every 2 s when not on a terminal): the line is the event
        wait_until(lambda: any(ln.startswith("wfops: fetching ") for ln in lines), timeout=60,
                   what="a progress line while the transfer is held")
        _resume(extractor)
        proc.wait(timeout=120)
        reader.join(timeout=60)
        err = "".join(lines)
    assert proc.returncode == 0, err
    progress = [ln for ln in err.splitlines() if ln.startswith("wfops: fetching ")]
    assert progress and all(total in ln and "MB/s" in ln for ln in progress), err
    assert re.search(r"\(\d+%\)", progress[0])
    assert (_artifacts(pod) / "big" / "blob.bin").stat().st_size == BLOB_MB * 1024 * 1024


def _session_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[3])


def test_ctrl_c_at_the_terminal_reaches_wfops_not_the_local_pods_agent(local_pod: Pod):
    """The `local` target runs its scripts in a session of their own, as a script over SSH runs in sshd's: a Ctrl-C
    at the terminal (SIGINT to the whole foreground group) is wfops' one line, never the agent's Python traceback
    from the middle of its start; wfops then hangs the script up (SIGHUP), as sshd does when the channel closes."""
    pod = local_pod
    pod.ok("task.run", "--id", "long", "--cmd", "sleep 300")
    if not pod.config_path.exists():
        pod.write_config()
    proc = subprocess.Popen([str(WFOPS), "task.wait", "--id", "long"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=pod.env(), cwd=pod.root.parent,
                            start_new_session=True)  # its own group, as a shell gives a foreground job
    try:
        waiter = wait_until(lambda: _child(proc.pid, "bash"), timeout=60, what="task.wait's local bash")
        agent = wait_until(lambda: _child(waiter, "wfops_agent"), timeout=60, what="the agent under it")
        assert _session_of(agent) != _session_of(proc.pid)  # the terminal's group does not hold the pod's side
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, err.strip().splitlines()) == (130, ["wfops: interrupted"])
    wait_until(lambda: _gone(agent), timeout=30, what="the agent, hung up")
