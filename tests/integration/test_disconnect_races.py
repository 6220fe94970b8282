"""`wfops disconnect` against a keeper that is still being made: a command starts its keeper ahead of itself
(wfops.prewarm) and may exit before that keeper listens or has connected; a disconnect that runs meanwhile must end
it too, not leave it to idle for WF_PERSIST_SECS after saying there was nothing to close.

The pod's sshd is reached through a loopback relay the test holds shut, so "still connecting" lasts as long as the
test wants; the keeper process's own start is held by withholding its order (it reads it before it listens)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import WFOPS, Pod, wait_until
from tests.keeperscripts import CONNECT, PRESTART, TARGET
from tests.procview import keeper_pids
from tests.slowness import scaled

# what launch._start_hub does, with the order withheld until the test sends a line: the keeper process holds the
# hub's spawn lock (inherited) and has not listened yet
STARTING_HUB = TARGET + """import fcntl, json, os, subprocess
from wfops.transport import warm
path = warm.socket_path(target)
hub = warm.hub_path(path.parent)
fd = os.open(hub.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
proc = subprocess.Popen([sys.executable, "-m", "wfops.transport.keeper", str(hub)], stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, pass_fds=(fd,))
os.close(fd)
print(proc.pid, flush=True)
sys.stdin.readline()
proc.stdin.write(json.dumps(dict(launch._order(target, path, 120), lock_fd=None, hub_lock_fd=fd)).encode())
proc.stdin.close()
"""


class Relay:
    """127.0.0.1:port -> the pod's sshd; each connection (numbered from 1 in the order accepted) waits until the test
    lets it through (`let(n)`, `let_one`: the first one held, `open`: all) or cuts it (`cut`)."""

    def __init__(self, to_port: int) -> None:
        self.to_port, self.gate, self.cut = to_port, threading.Event(), threading.Event()
        self.allowed: set[int] = set()
        self.ended: set[int] = set()  # connections closed (by either side)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._relay, args=(client, self.accepted), daemon=True).start()

    def _relay(self, client: socket.socket, n: int) -> None:
        while not self.gate.is_set() and n not in self.allowed:
            if self.cut.is_set():  # the pod unreachable just then: the held connection is reset
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                client.close()
                return
            self.gate.wait(0.02)
        upstream = socket.create_connection(("127.0.0.1", self.to_port))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b, n), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, n: int) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.ended.add(n)

    def wait_accepted(self, n: int) -> None:
        wait_until(lambda: self.accepted >= n, timeout=scaled(30), what=f"connection {n} to the relay",
                   interval=0.02)

    def let(self, n: int) -> None:
        self.allowed.add(n)

    def let_one(self) -> None:
        self.allowed.add(min(set(range(1, self.accepted + 1)) - self.allowed))

    def open(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.listener.close()


@pytest.fixture
def relayed(ssh_pod: Pod):
    assert ssh_pod.sshd is not None
    relay = Relay(ssh_pod.sshd.port)
    ssh_pod.configure(OPS_DEFAULT_HOST=f"{ssh_pod.sshd.user}@127.0.0.1:{relay.port}", WF_PERSIST_SECS="120")
    yield ssh_pod, relay
    relay.close()


def _script(pod: Pod, text: str, port: int, **kw: object) -> subprocess.Popen[str]:
    assert pod.sshd is not None
    kw.setdefault("env", pod.env())
    return subprocess.Popen([sys.executable, "-c", text, "127.0.0.1", str(port), pod.sshd.user, str(pod.sshd.key)],
                            text=True, **kw)  # type: ignore[call-overload]


def _ended_and_nothing_left(pod: Pod) -> None:
    wait_until(lambda: keeper_pids([pod.keeper_dir], inside=False) == [], timeout=scaled(30),
               what="the keeper process to exit (it was stopped while it connected)")
    assert not list(pod.keeper_dir.glob("*.sock")) and not list(pod.keeper_dir.glob("*.err"))


@pytest.mark.parametrize("disconnect", [("disconnect", "--all"), ("disconnect",)])
def test_a_keeper_still_connecting_when_disconnect_runs_never_serves(relayed, disconnect):
    """Started ahead of a command that has exited (a refused CSV, say); the disconnect comes while its SSH connection
    is being made: once the connection could be made, the keeper closes it and exits; the next command starts its
    own keeper and works."""
    pod, relay = relayed
    _script(pod, PRESTART, relay.port).wait(timeout=scaled(30))
    relay.wait_accepted(1)
    res = pod.ok(*disconnect)
    assert res.out.strip() == ("closed 1 warm connection(s)" if len(disconnect) == 2 else
                               f"closed the warm connection to {pod.sshd.user}@127.0.0.1:{relay.port}")
    relay.open()
    _ended_and_nothing_left(pod)
    assert pod.ok("task.list").out.strip() == "no tracked tasks on the pod yet (start one with task.run)"


def test_a_command_waiting_for_its_keeper_when_disconnect_all_runs_still_answers(relayed):
    """A cold command: the keeper started ahead of it is stopped while it connects, then the one its own connect asks
    for is stopped too (two disconnects); it asks once more and answers as it would have: exit 0, its output."""
    pod, relay = relayed
    cmd = subprocess.Popen([str(WFOPS), "task.list"], env=pod.env(), cwd=pod.root.parent, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for n in (1, 2):
        relay.wait_accepted(n)
        pod.ok("disconnect", "--all")
        relay.let_one()
    relay.open()
    out, err = cmd.communicate(timeout=scaled(120))
    assert (cmd.returncode, out.strip()) == (0, "no tracked tasks on the pod yet (start one with task.run)"), err
    assert err.startswith("wfops: config written to ") and len(err.splitlines()) == 1, err  # its first command
    assert relay.accepted == 3


@pytest.mark.parametrize("disconnect", [("disconnect", "--all"), ("disconnect",)])
def test_disconnect_waits_for_a_keeper_process_that_has_not_listened_yet(ssh_pod: Pod, disconnect):
    """The keeper process is started but has not listened (it holds its hub's spawn lock until it does): the
    disconnect waits for it and stops it, instead of finding nothing and leaving it to serve."""
    assert ssh_pod.sshd is not None
    ssh_pod.configure(WF_PERSIST_SECS="120")
    starter = _script(ssh_pod, STARTING_HUB, ssh_pod.sshd.port, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert starter.stdout is not None and starter.stdin is not None
    keeper = int(starter.stdout.readline())
    disconnect = subprocess.Popen([str(WFOPS), *disconnect], env=ssh_pod.env(), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ssh_pod.root.parent)
    [lock] = ssh_pod.keeper_dir.glob("hub-*.lock")

    def waits_on_the_lock() -> bool:
        fds = Path(f"/proc/{disconnect.pid}/fd")
        try:
            return any(Path(fd).resolve() == lock for fd in fds.iterdir())
        except OSError:
            return False

    wait_until(waits_on_the_lock, timeout=scaled(30), what="the disconnect to wait on the starting keeper",
               interval=0.02)
    starter.stdin.write("go\n")
    starter.stdin.close()
    out, err = disconnect.communicate(timeout=scaled(60))
    assert (disconnect.returncode, err) == (0, ""), (out, err)
    starter.wait(timeout=scaled(30))
    wait_until(lambda: not Path(f"/proc/{keeper}").exists() or "Z" in Path(f"/proc/{keeper}/stat").read_text()
               .rsplit(")", 1)[1].split()[:1], timeout=scaled(30), what="the keeper process to exit")
    assert not list(ssh_pod.keeper_dir.glob("*.sock"))


@pytest.mark.parametrize("disconnect", [("disconnect", "--all"), ("disconnect",)])
def test_an_add_stopped_whose_connection_then_fails_leaves_no_failure_for_later_commands(relayed, disconnect):
    """Stopped while it connects, then the connection fails (the pod unreachable just then): what failed is not
    written for a command to report; once the pod answers again, pod.status says it is reachable."""
    pod, relay = relayed
    _script(pod, PRESTART, relay.port).wait(timeout=scaled(30))
    relay.wait_accepted(1)
    pod.ok(*disconnect)
    relay.cut.set()
    _ended_and_nothing_left(pod)
    relay.cut.clear()
    relay.open()
    res = pod.wf("pod.status")
    assert res.rc == 0 and re.search(r"^reachable\s+yes", res.out, re.M), (res.out, res.err)


def test_disconnect_of_one_target_reaches_its_add_in_a_keeper_process_of_another_environment(relayed):
    """A keeper process is per environment (another SSH agent socket: another process); a `disconnect` run from this
    shell still stops the add that the other one is making for the same target."""
    pod, relay = relayed
    _script(pod, PRESTART, relay.port, env={**pod.env(), "SSH_AUTH_SOCK": "/nonexistent/agent"}).wait(
        timeout=scaled(30))
    relay.wait_accepted(1)
    res = pod.ok("disconnect")
    assert res.out.strip() == f"closed the warm connection to {pod.sshd.user}@127.0.0.1:{relay.port}"
    relay.open()
    _ended_and_nothing_left(pod)


def test_a_fifo_named_like_a_keeper_lock_does_not_hang_disconnect(ssh_pod: Pod):
    ssh_pod.keeper_dir.mkdir(mode=0o700, exist_ok=True)
    os.mkfifo(ssh_pod.keeper_dir / "hub-000000000000.lock")
    for args in (("disconnect", "--all"), ("disconnect",)):
        res = ssh_pod.wf(*args, timeout=30)
        assert res.rc == 0 and res.out.strip().startswith("no warm connection"), (res.out, res.err)


def test_disconnect_of_one_target_ends_a_keeper_process_frozen_while_it_adds_it(relayed):
    """The keeper process is stopped as a whole (SIGSTOP) while it connects the target: it cannot answer the drop,
    and once running again it would serve. The disconnect ends it (after HUB_ANSWER_SECS) and exits 0."""
    pod, relay = relayed
    _script(pod, PRESTART, relay.port).wait(timeout=scaled(30))
    relay.wait_accepted(1)
    [keeper] = keeper_pids([pod.keeper_dir], inside=False)
    os.kill(keeper, signal.SIGSTOP)
    try:
        res = pod.wf("disconnect", timeout=60)
        said = f"closed the warm connection to {pod.sshd.user}@127.0.0.1:{relay.port}"
        assert (res.rc, res.out.strip()) == (0, said), res.err
        relay.open()
        _ended_and_nothing_left(pod)
    finally:
        if Path(f"/proc/{keeper}").exists():
            os.kill(keeper, signal.SIGCONT)


def test_a_first_target_stopped_while_its_process_serves_another_answers_its_command_at_once(relayed):
    """A command's keeper process was started for its target, then another target joined that process; the first
    target is disconnected while it connects: the waiting command is told at once (not when the other target goes
    idle), asks again and connects."""
    pod, relay = relayed
    first = _script(pod, CONNECT, relay.port, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    relay.wait_accepted(1)
    assert pod.sshd is not None
    other = _script(pod, CONNECT, pod.sshd.port, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert other.communicate(timeout=scaled(30))[0] == "connected\n"
    assert len(keeper_pids([pod.keeper_dir], inside=False)) == 1  # one process holds both
    pod.ok("disconnect")
    relay.open()
    out, err = first.communicate(timeout=scaled(30))
    assert (first.returncode, out) == (0, "connected\n"), err
    assert relay.accepted == 2


def test_an_add_cancelled_late_leaves_the_socket_of_the_keeper_that_replaced_it(relayed):
    """A command gave up (killed) while its keeper connected; `disconnect` cancelled that add; the next command's
    keeper connected and serves. When the cancelled connection is made at last, it closes and leaves the serving
    keeper's socket alone: the command after that is warm (no new connection)."""
    pod, relay = relayed
    gave_up = _script(pod, CONNECT, relay.port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay.wait_accepted(1)
    gave_up.kill()
    gave_up.wait(timeout=scaled(30))
    pod.ok("disconnect")
    relay.let(2)
    again = _script(pod, CONNECT, relay.port, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert again.communicate(timeout=scaled(30))[0] == "connected\n"
    [sock] = pod.keeper_dir.glob("*.sock")
    relay.let(1)
    wait_until(lambda: 1 in relay.ended, timeout=scaled(30), what="the cancelled add's connection made, then closed")
    res = pod.ok("task.list")
    assert res.out.strip() == "no tracked tasks on the pod yet (start one with task.run)"
    assert sock.exists() and relay.accepted == 2  # the task.list went through the serving keeper
