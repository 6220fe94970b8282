"""Warm connections: the keeper holds one SSH connection for WF_PERSIST_SECS; sshd's own log counts the logins.

Each test has its own keeper directory (tests/conftest.py sets WFOPS_KEEPER_DIR per pod and stops what is left
there at teardown); tests that restart sshd use an sshd of their own.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WFOPS, Pod, make_pod, stop_keepers, wait_until
from tests.procview import keeper_pids, tcp_connections_to
from tests.realparts import SSHD, free_port, start_sshd, stop_sshd
from tests.slowness import scaled

READ_ONLY = (("fsm.status",), ("task.list",), ("fsm.status", "--json"), ("task.list", "--json"))


def keepers(pod: Pod) -> list[int]:
    """Pids of the keepers serving this pod's keeper directory (found by their command line)."""
    return keeper_pids([pod.keeper_dir], inside=False)


def sent_bytes(res) -> list[int]:
    return [int(n) for n in re.findall(r"^wfops: exec [^:]+: sent (\d+) bytes", res.err, re.M)]


def warm_pod(pod: Pod, secs: str = "120") -> Pod:
    pod.configure(WF_PERSIST_SECS=secs)
    return pod


def test_one_login_for_many_commands_and_the_agent_sent_once(ssh_pod: Pod):
    """One login for every command; one exec for each read that the pod's kept agent did not answer (the first
    always runs a script: tests/integration/test_kept_agent.py tests the kept agent itself)."""
    warm_pod(ssh_pod)
    mark = ssh_pod.sshd.mark()
    verbose = {"WFOPS_VERBOSE": "1"}
    first = ssh_pod.ok("fsm.status", env=verbose)
    runs = [ssh_pod.ok(*args, env=verbose) for args in READ_ONLY]
    second = ssh_pod.ok("fsm.status", env=verbose)
    scripts = sum("answered by the pod's kept agent" not in r.err for r in [first, *runs, second])
    assert "answered by the pod's kept agent" not in first.err
    assert ssh_pod.sshd.counts(mark) == (1, scripts)
    assert first.out == second.out
    agent_sent, small = sent_bytes(first), sent_bytes(second)
    assert agent_sent[0] > 20_000 and small[0] < 8_000, (agent_sent, small)  # the agent travelled once
    assert "via the keeper" in second.err
    assert len(keepers(ssh_pod)) == 1


def test_commands_started_together_share_one_new_keeper(ssh_pod: Pod):
    warm_pod(ssh_pod)
    ssh_pod.write_config()
    mark = ssh_pod.sshd.mark()
    procs = [subprocess.Popen([str(WFOPS), "task.list"], env=ssh_pod.env(), cwd=ssh_pod.root.parent,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    assert [rc for _, _, rc in results] == [0, 0, 0, 0], results
    assert all("no tracked tasks" in out for out, _, _ in results)
    assert ssh_pod.sshd.counts(mark) == (1, 4) and len(keepers(ssh_pod)) == 1


def test_the_agent_is_sent_once_without_a_keeper_too(ssh_pod: Pod):
    ssh_pod.configure(WF_PERSIST_SECS="0")
    mark = ssh_pod.sshd.mark()
    first = ssh_pod.ok("task.list", env={"WFOPS_VERBOSE": "1"})
    second = ssh_pod.ok("task.list", env={"WFOPS_VERBOSE": "1"})
    assert ssh_pod.sshd.counts(mark) == (2, 2)  # WF_PERSIST_SECS=0: a connection per command, one exec each
    assert sent_bytes(first)[0] > 20_000 and sent_bytes(second)[0] < 8_000
    assert keepers(ssh_pod) == [] and not list(ssh_pod.keeper_dir.glob("*.sock"))


def test_local_only_commands_start_no_keeper(ssh_pod: Pod):
    warm_pod(ssh_pod)
    mark = ssh_pod.sshd.mark()
    for args in (("config.show",), ("sweep.template",), ("task.list", "--help"), ("--list",)):
        ssh_pod.ok(*args)
    assert ssh_pod.sshd.counts(mark) == (0, 0) and keepers(ssh_pod) == []


def test_persist_zero_means_a_connection_per_command(ssh_pod: Pod):
    ssh_pod.configure(WF_PERSIST_SECS="0")
    mark = ssh_pod.sshd.mark()
    for args in READ_ONLY:
        ssh_pod.ok(*args)
    assert ssh_pod.sshd.counts(mark) == (len(READ_ONLY), len(READ_ONLY))
    assert keepers(ssh_pod) == []


def test_idle_keeper_exits_and_closes_its_connection(ssh_pod: Pod):
    warm_pod(ssh_pod, "1")
    mark = ssh_pod.sshd.mark()
    ssh_pod.ok("task.list")
    [pid] = keepers(ssh_pod)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=20, what="the idle keeper to exit")
    assert not list(ssh_pod.keeper_dir.glob("*.sock"))
    wait_until(lambda: re.search(r"^(Connection closed by|Disconnected from user) ", ssh_pod.sshd.since(mark), re.M),
               what="sshd to see the connection end")
    mark = ssh_pod.sshd.mark()
    ssh_pod.ok("task.list")
    assert ssh_pod.sshd.counts(mark) == (1, 1)


def test_a_killed_keeper_is_replaced_within_the_command(ssh_pod: Pod):
    warm_pod(ssh_pod)
    ssh_pod.ok("task.list")
    [pid] = keepers(ssh_pod)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: pid not in keepers(ssh_pod), what="the keeper to die")
    assert list(ssh_pod.keeper_dir.glob("*.sock"))  # it left its socket behind
    mark = ssh_pod.sshd.mark()
    res = ssh_pod.ok("task.list")
    assert "no tracked tasks" in res.out and ssh_pod.sshd.counts(mark) == (1, 1)
    assert len(keepers(ssh_pod)) == 1


@contextlib.contextmanager
def frozen_keeper(pod: Pod) -> Iterator[int]:
    """The pod's one keeper stopped (SIGSTOP) for the block, which must see it ended and replaced by one other;
    killed afterwards if it was not."""
    [pid] = keepers(pod)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the frozen keeper to be ended")
        assert len(keepers(pod)) == 1
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def test_a_frozen_keeper_is_ended_and_replaced(ssh_pod: Pod):
    ssh_pod.configure(WF_PERSIST_SECS="120", SSH_CONNECT_TIMEOUT="1")  # a keeper silent for 10 + 2 s is frozen
    ssh_pod.ok("task.list")
    with frozen_keeper(ssh_pod):
        mark = ssh_pod.sshd.mark()
        res = ssh_pod.ok("task.list")
        assert "no tracked tasks" in res.out and ssh_pod.sshd.counts(mark) == (1, 1)


def test_disconnect_closes_the_warm_connection(ssh_pod: Pod):
    warm_pod(ssh_pod)
    ssh_pod.ok("task.list")
    [pid] = keepers(ssh_pod)
    res = ssh_pod.ok("disconnect")
    assert res.out.strip() == f"closed the warm connection to {ssh_pod.sshd.address}"
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the keeper to exit")
    assert ssh_pod.ok("disconnect").out.strip() == f"no warm connection to {ssh_pod.sshd.address}"
    mark = ssh_pod.sshd.mark()
    ssh_pod.ok("task.list")
    assert ssh_pod.sshd.counts(mark) == (1, 1)
    assert ssh_pod.ok("disconnect", "--all").out.strip() == "closed 1 warm connection(s)"


def test_a_changed_resolution_replaces_the_keeper(ssh_pod: Pod):
    warm_pod(ssh_pod)
    ssh_pod.ok("task.list")
    ssh_pod.configure(SSH_CONNECT_TIMEOUT="11")  # the same target name, made from other parameters
    mark = ssh_pod.sshd.mark()
    ssh_pod.ok("task.list")
    assert ssh_pod.sshd.counts(mark) == (1, 1)
    # the stale connection is closed (the keeper process itself lives on: it holds the new one). Seen in the keeper
    # process's own sockets: how sshd logs the end depends on what was in flight (closed, reset, a read error)
    [pid] = keepers(ssh_pod)
    wait_until(lambda: tcp_connections_to(pid, ssh_pod.sshd.port) == 1, what="the stale connection to be closed")
    assert len(list(ssh_pod.keeper_dir.glob("*.sock"))) == 1
    (ssh_pod.home / ".ssh").mkdir()
    (ssh_pod.home / ".ssh" / "config").write_text("Host unrelated\n  Port 2222\n")  # ssh_config is part of it too
    mark = ssh_pod.sshd.mark()
    ssh_pod.ok("task.list")
    assert ssh_pod.sshd.counts(mark) == (1, 1)


def test_connection_errors_through_the_keeper_are_the_same_one_line(ssh_pod: Pod):
    warm_pod(ssh_pod)
    port = free_port()
    ssh_pod.configure(OPS_DEFAULT_HOST=f"root@127.0.0.1:{port}", SSH_CONNECT_TIMEOUT="3")
    res = ssh_pod.wf("task.list")
    assert (res.rc, res.err.strip()) == (4, f"wfops: cannot connect to root@127.0.0.1:{port}: connection refused")
    wait_until(lambda: keepers(ssh_pod) == [], what="the keeper that could not connect to exit")
    assert not list(ssh_pod.keeper_dir.glob("*.sock"))


def test_no_secret_in_the_keepers_command_line_or_the_script_cache(ssh_pod: Pod):
    secret = "wandb-secret-0123456789abcdef"
    warm_pod(ssh_pod)
    ssh_pod.configure(WANDB_API_KEY=secret)
    ssh_pod.ok("task.list")
    ssh_pod.ok("task.list")
    [pid] = keepers(ssh_pod)
    assert b"wfops.transport.keeper" in Path(f"/proc/{pid}/cmdline").read_bytes()  # the scan reads the right process
    assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    cached = [p for p in (ssh_pod.home / ".cache" / "wfops" / "scripts").iterdir() if p.is_file()]
    assert cached and not [p for p in cached if secret in p.read_text()]
    assert secret in ssh_pod.env_path.read_text()  # it did reach the pod, through the request


# ------------------------------------------------------------------ the socket's privacy

def test_socket_is_private_and_a_foreign_uid_is_refused(ssh_pod: Pod):
    warm_pod(ssh_pod)
    ssh_pod.ok("task.list")
    directory = ssh_pod.keeper_dir
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700 and directory.stat().st_uid == os.getuid()
    [sock] = directory.glob("*.sock")
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    # a process of another user (nobody) that still gets through the directory (fsuid 0 keeps root's file access,
    # so only the peer-uid check stands between it and the connection) is refused by the keeper
    code = ("import ctypes, os, socket, sys\n"
            "os.setresuid(0, 65534, 0)\n"
            "ctypes.CDLL(None).setfsuid(0)\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.connect(sys.argv[1])\n"
            "data = b''\n"
            "while True:\n"
            "    chunk = s.recv(4096)\n"
            "    if not chunk:\n"
            "        break\n"
            "    data += chunk\n"
            "print(data[5:].decode())\n")
    out = subprocess.run([sys.executable, "-c", code, str(sock)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert '"refused: another user"' in out.stdout
    # the plain user nobody cannot even reach the socket
    plain = subprocess.run([sys.executable, "-c", "import os, socket, sys; os.setuid(65534); "
                            "socket.socket(socket.AF_UNIX).connect(sys.argv[1])", str(sock)],
                           capture_output=True, text=True, timeout=30)
    assert plain.returncode != 0 and "PermissionError" in plain.stderr
    mark = ssh_pod.sshd.mark()
    res = ssh_pod.ok("task.list", env={"WFOPS_VERBOSE": "1"})  # the keeper still serves its own user
    assert "no tracked tasks" in res.out
    assert ssh_pod.sshd.counts(mark) == (0, 0 if "answered by the pod's kept agent" in res.err else 1)


def test_a_keeper_directory_others_can_enter_is_refused(ssh_pod: Pod):
    warm_pod(ssh_pod)
    ssh_pod.keeper_dir.mkdir(mode=0o755)
    ssh_pod.keeper_dir.chmod(0o755)
    mark = ssh_pod.sshd.mark()
    res = ssh_pod.wf("task.list")
    assert res.rc == 2 and len(res.err.strip().splitlines()) == 1
    assert res.err.startswith(f"wfops: the keeper directory {ssh_pod.keeper_dir} must be a directory of yours "
                              "with mode 700 (it is mode 755")
    assert ssh_pod.sshd.counts(mark) == (0, 0) and not ssh_pod.outputs.exists()


# ------------------------------------------------------------------ sshd restarted under a warm keeper

def restart_sshd(server: SSHD) -> SSHD:
    """Stop an sshd and every connection it serves (what a pod reboot does), then start it again on its port."""
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == server.proc.pid]
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    server.proc.terminate()
    server.proc.wait(timeout=10)
    cfg = server.log.parent / "sshd_config"
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-E", str(server.log), "-f", str(cfg)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + scaled(10)
    while time.time() < deadline:
        try:
            with socket.create_connection((server.host, server.port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    break
        except OSError:
            time.sleep(0.05)
    server.proc = proc
    return server


def _ppid(proc_dir: Path) -> int:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


@pytest.fixture
def own_sshd(tmp_path):
    server = start_sshd(tmp_path / "own-sshd")
    yield server
    stop_sshd(server)


def test_sshd_restarted_under_a_warm_keeper(tmp_path, own_sshd: SSHD, tmux_socket: str):
    (tmp_path / "p").mkdir()
    pod = make_pod("ssh", tmp_path / "p", own_sshd, tmux_socket)
    try:
        warm_pod(pod)
        pod.ok("task.list")
        [pid] = keepers(pod)
        restart_sshd(own_sshd)
        mark = own_sshd.mark()
        res = pod.ok("task.list")
        assert "no tracked tasks" in res.out
        assert own_sshd.counts(mark) == (1, 1)  # one new login, made by the same keeper
        assert keepers(pod) == [pid]
    finally:
        stop_keepers(pod.keeper_dir)
