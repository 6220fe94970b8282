"""The local fleet harness itself (tests/fleet.py, tests/realparts.py start_fleet): loopback sshd pods on
127.0.0.2, 127.0.0.3, ... each with its own HOME; one dies (kill) and comes back (revive) on the same port;
nothing of a stopped fleet is left running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from tests.conftest import wait_until
from tests.fleet import Fleet, FleetPod
from tests.realparts import pids_with_env, running
from tests.slowness import scaled
from wfops.settings.load import load_settings

PROBE = 'echo "$HOME"; cd ~ && pwd; python3 -c "import os; print(os.path.expanduser(\'~\'))"\n'


def ssh(fleet: Fleet, pod: FleetPod, command: str, stdin: str = "", timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-i", str(fleet.key), "-p", str(pod.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
         f"{pod.sshd.user}@{pod.host}", command],
        input=stdin, capture_output=True, text=True, timeout=timeout)


def refuses(pod: FleetPod) -> bool:
    try:
        with socket.create_connection((pod.host, pod.port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_three_pods_on_their_own_addresses_each_with_its_own_home(fresh_fleet3: Fleet):
    fleet = fresh_fleet3
    assert [p.host for p in fleet.pods] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert fleet.hosts_line() == ",".join(f"{fleet.user}@127.0.0.{i + 2}:{p.port}" for i, p in enumerate(fleet.pods))
    assert len({p.home for p in fleet.pods}) == 3
    for pod in fleet.pods:
        res = ssh(fleet, pod, "bash -s", PROBE)
        assert res.returncode == 0, res.stderr
        # $HOME, the shell's ~ and python's expanduser (what the agent's pod_path uses) are the pod's home
        assert res.stdout.splitlines() == [str(pod.home)] * 3
    res = ssh(fleet, fleet.pods[0], "bash -s", "mkdir -p ~/outputs && echo pod0 > ~/outputs/mark\n")
    assert res.returncode == 0, res.stderr
    assert (fleet.pods[0].home / "outputs" / "mark").read_text() == "pod0\n"
    for pod in fleet.pods[1:]:
        res = ssh(fleet, pod, "bash -s", "test -e ~/outputs/mark && echo seen || echo absent\n")
        assert res.stdout == "absent\n", res.stderr


def test_a_killed_pod_refuses_connections_and_its_processes_are_gone_until_it_is_revived(fresh_fleet3: Fleet):
    fleet = fresh_fleet3
    pod1 = fleet.pods[1]
    port = pod1.port
    # something running on pod 1, outside the connection that started it: a tmux server and a detached sleep
    res = ssh(fleet, pod1, "bash -s", "tmux -L fleet new-session -d -s s 'sleep 300'\n"
                                      "setsid sleep 301 >/dev/null 2>&1 < /dev/null &\necho started\n")
    assert res.stdout == "started\n", res.stderr
    found = pids_with_env("HOME", str(pod1.home))
    assert len(found) >= 3  # tmux server, its sleep, the detached sleep: the scan finds them while they run
    sshd_pid = pod1.sshd.proc.pid

    killed = fleet.kill(1)
    assert sshd_pid in killed and set(found) <= set(killed)
    assert not any(running(pid) for pid in killed)
    assert not pod1.alive and refuses(pod1)
    for pod in (fleet.pods[0], fleet.pods[2]):
        assert ssh(fleet, pod, "echo up").stdout == "up\n"
    assert ssh(fleet, pod1, "echo up").returncode == 255

    fleet.revive(1)
    assert pod1.alive and pod1.port == port and pod1.sshd.proc.pid != sshd_pid
    res = ssh(fleet, pod1, "bash -s", PROBE)
    assert res.stdout.splitlines() == [str(pod1.home)] * 3, res.stderr


def test_a_stopped_fleet_leaves_nothing_running(tmp_path: Path):
    # a short root: tmux's socket (HOME/.tmux/tmux-0/fleet) must fit a unix socket path (107 bytes) under
    # /tmp/pytest-of-root/pytest-NNNN/popen-gwN/<test>/: with "fleet" and a 4-digit run number it did not, tmux
    # failed unseen, and the count of processes came up short
    fleet = Fleet.start(tmp_path / "f", 2)
    try:
        for pod in fleet.pods:
            res = ssh(fleet, pod, "bash -s", "setsid sleep 302 >/dev/null 2>&1 < /dev/null &\n"
                                             "tmux -L fleet new-session -d 'sleep 303' && echo ok\n")
            assert res.stdout == "ok\n", res.stderr
        # a connection still open while the fleet stops
        hanging = subprocess.Popen(
            ["ssh", "-i", str(fleet.key), "-p", str(fleet.pods[0].port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
             f"{fleet.user}@{fleet.pods[0].host}", "sleep 304"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # every process started above, the hanging connection's `sleep 304` included (an event, not a clock)
        def all_up() -> list[int] | None:
            pids = fleet.pids()
            hangs = any(b"sleep\x00304" in _cmdline(p) for p in pids)
            return pids if hangs and len(pids) >= 2 + 2 * 3 + 1 else None

        try:
            before = wait_until(all_up, timeout=60, what="every fleet process")
        except AssertionError as exc:  # which ones: the command lines of what is there
            seen = [_cmdline(p).replace(b"\0", b" ").decode(errors="replace") for p in fleet.pids()]
            raise AssertionError(f"{exc}; there: {seen}") from None
        assert {p.sshd.proc.pid for p in fleet.pods} <= set(before)
    finally:
        fleet.stop()
    assert fleet.pids() == []
    assert not any(running(pid) for pid in before)
    assert all(refuses(p) for p in fleet.pods)
    assert hanging.wait(timeout=scaled(10)) == 255  # the client saw its connection end


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_the_fleet_config_names_every_pod_with_home_relative_paths(tmp_path: Path, fleet3: Fleet):
    path = fleet3.config(tmp_path, WF_FAKE_GPUS="4")
    text = path.read_text()
    assert f"OPS_HOSTS={fleet3.hosts_line()}\n" in text and "OPS_DEFAULT_HOST" not in text
    settings = load_settings(path, environ={})
    assert settings.ops_remote_outputs_dir == "~/outputs"
    assert settings.wf_fake_gpus == 4 and settings.train_launcher == "python"
    assert fleet3.config(tmp_path, name="other.env").read_text() != text  # its own tmux socket and session
    one = load_settings(fleet3.config(tmp_path, pod=2, name="pod2.env"), environ={})
    assert one.ops_default_host == fleet3.pods[2].address and not one.ops_hosts


def test_a_checked_out_copy_makes_every_pod_checked_out(tmp_path: Path, fresh_fleet3: Fleet, checked_out: Path,
                                                        training_repo):
    fleet = fresh_fleet3
    fleet.checked_out(checked_out)
    for pod in fleet.pods:
        assert (pod.home / "repo" / ".git").exists() and (pod.home / "outputs").is_dir()
        cfg = fleet.config(tmp_path, pod=pod.index, name=f"pod{pod.index}.env", REPO_URL=training_repo.url)
        res = fleet.wf(cfg, "fsm.status", "--json")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["state"] == "CHECKED_OUT"
    assert os.path.isdir(fleet.pods[0].home / "data")
