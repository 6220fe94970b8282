"""A pod that stops answering while its keeper is warm (its network frozen: the keeper's connection is cut, and every
new one is accepted and never answered): the kept request (wfops.leancache) and the lean path report it as the full
path does, with the same line and exit code, after the same connection attempts. The kept request waits for the
keeper's start frame as long as the full path does (the keeper is reconnecting meanwhile), and the keeper's error
before that frame is the command's error, as on the full path: neither hands the command to the lean path, which
would make the keeper try the pod all over again. A loopback gate in front of the test sshd (tests/gate.py) cuts
the connections and counts the attempts."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WFOPS, Pod, wait_until
from tests.gate import Gate, sockets_to
from tests.integration.test_keeper import frozen_keeper, keepers
from tests.integration.test_lean_cache import PROFILE, hit
from tests.integration.test_lean_entry import finished_sweep, imported, without_importtime
from tests.realparts import descendants

PATHS = (("kept", PROFILE), ("lean", {"WFOPS_LEAN_CACHE": "0"}), ("full", {"WFOPS_LEAN": "0"}))


@contextlib.contextmanager
def gated(pod: Pod, connect_timeout: str) -> Iterator[Gate]:
    """The pod reached through a loopback gate (tests/gate.py), warm connections on."""
    assert pod.sshd is not None
    gate = Gate(pod.sshd.host, pod.sshd.port)
    try:
        pod.configure(OPS_DEFAULT_HOST=f"{pod.sshd.user}@127.0.0.1:{gate.port}", SSH_CONNECT_TIMEOUT=connect_timeout,
                      WF_PERSIST_SECS="120")
        yield gate
    finally:
        gate.stop()


def _cut(pod: Pod, gate: Gate, args: tuple[str, ...]) -> None:
    """A warm keeper and a kept request, then the pod's network frozen; returns once the keeper has seen its
    connection go (so that each path finds the keeper in the same state)."""
    pod.ok("disconnect")
    gate.open()
    pod.ok(*args, env=PROFILE)  # starts the keeper, keeps the request (for this very environment)
    if args[0] == "run.fetch":  # the first fetch copied: the next is the lean path's, and keeps the plan request
        pod.ok(*args, env=PROFILE)
    assert hit(pod.wf(*args, env=PROFILE))
    [keeper] = keepers(pod)
    gate.close_all()
    wait_until(lambda: sockets_to(keeper, gate.port) == 0, what="the keeper to see its connection cut")


# the keeper's error comes before 5 s, or after; a repeated run.fetch's kept plan request (wfops.leanfetch) too
@pytest.mark.parametrize(("connect_timeout", "command"), [("1", "fsm.status"), ("3", "fsm.status"),
                                                          ("1", "run.fetch")])
def test_an_unreachable_pod_is_reported_as_the_full_path_reports_it(ssh_pod: Pod, connect_timeout: str,
                                                                   command: str):
    pod = ssh_pod
    assert pod.sshd is not None
    args = (command, "--all") if command == "run.fetch" else (command,)
    if command == "run.fetch":
        pod.ok("fsm.reset", "CHECKED_OUT", "--reason", "unreachable fetch")
        finished_sweep(pod, 2)
    with gated(pod, connect_timeout) as gate:
        said, kept = {}, None
        for path, env in PATHS:
            _cut(pod, gate, args)
            before = gate.silent
            res = pod.wf(*args, env=env)
            said[path] = (res.rc, without_importtime(res.err), gate.silent - before)
            kept = res if path == "kept" else kept
        assert said["kept"] == said["lean"] == said["full"], said
        assert kept is not None and hit(kept), kept  # the kept request said it, not the lean path after it
        rc, err, attempts = said["full"]
        assert rc == 4 and err == f"wfops: {pod.sshd.user}@127.0.0.1:{gate.port} took the connection but did not " \
            f"answer within {connect_timeout}s (no SSH banner: the pod or the network is frozen)\n"
        # the keeper makes a connection that failed once more (a pod coming back from a partition may drop the first:
        # scripts/fault_cases.py partition cases); every path waits the same, none more (the kept request: twice more)
        assert attempts == 2


def test_a_frozen_keeper_is_ended_by_the_kept_request_and_the_lean_path_answers(ssh_pod: Pod):
    """A keeper silent for the whole start timeout (stopped) is ended by the kept request itself, as the full path
    ends one: the lean path then starts another and answers (it does not wait for the frozen one again, nor hand
    the command to the full path)."""
    pod = ssh_pod
    assert pod.sshd is not None
    pod.configure(WF_PERSIST_SECS="120", SSH_CONNECT_TIMEOUT="1")  # silent for 10 + 2 s: frozen
    answer = pod.ok("fsm.status", env=PROFILE).out
    with frozen_keeper(pod):
        mark = pod.sshd.mark()
        res = pod.wf("fsm.status", env=PROFILE)
        assert (res.rc, res.out) == (0, answer), res.err[-3000:]
        assert not hit(res) and "invoke" not in imported(res)  # the lean path answered, not the full path
        assert pod.sshd.counts(mark) == (1, 1)  # the new keeper's login and the command's one exec


def test_commands_at_once_on_a_connection_gone_silent_each_get_the_one_new_connection(ssh_pod: Pod):
    """The keeper's connection goes silent (nothing passes, nothing closes) while new ones work: commands started
    together each find it dead and the first to replace it makes the new one; the others take that one (replacing
    it again cut the first command's channel: every command but one failed, exit 4, reviewer)."""
    pod = ssh_pod
    assert pod.sshd is not None
    env = {"WFOPS_SSH_KEEPALIVE_SECS": "60"}  # the keepalive would find it dead first: the commands must
    with gated(pod, "3") as gate:
        pod.ok("fsm.reset", "INIT", "--reason", "warm", env=env)
        [keeper] = keepers(pod)
        before = gate.accepted
        gate.blackhole()
        procs = [subprocess.Popen([str(WFOPS), "fsm.reset", "CHECKED_OUT", "--reason", f"r{i}"],
                                  env={**pod.env(), **env}, cwd=pod.root.parent, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(3)]
        results = [(p.wait(120), p.communicate()[1]) for p in procs]
        assert [rc for rc, _ in results] == [0, 0, 0], results
        assert gate.accepted - before == 1 and keepers(pod) == [keeper]  # one new connection, the same keeper
        assert '"state": "CHECKED_OUT"' in pod.ok("fsm.status", "--json").out


def _bash_s(pod: Pod) -> list[int]:
    """The `bash -s` of commands' channels on the pod (sshd's descendants)."""
    assert pod.sshd is not None
    found = []
    for pid in descendants(pod.sshd.proc.pid):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"bash", b"-s"]:
                found.append(pid)
        except OSError:
            continue
    return found


def test_a_command_interrupted_while_its_keeper_reconnects_leaves_no_session_on_the_pod(ssh_pod: Pod):
    """Ctrl-C while the keeper makes a new connection for the command: the channel it then opens is closed, not
    left with its `bash -s` holding one of sshd's sessions (MaxSessions: later commands refused; reviewer)."""
    pod = ssh_pod
    assert pod.sshd is not None
    with gated(pod, "10") as gate:
        pod.ok("fsm.reset", "INIT", "--reason", "warm")
        [keeper] = keepers(pod)
        gate.close_all()
        wait_until(lambda: sockets_to(keeper, gate.port) == 0, what="the keeper to see its connection cut")
        gate.open()
        gate.hold()
        proc = subprocess.Popen([str(WFOPS), "fsm.reset", "CHECKED_OUT", "--reason", "interrupted"], env=pod.env(),
                                cwd=pod.root.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert gate.wait_held(1, 30), "the keeper never reconnected"
        mark = pod.sshd.mark()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        gate.release()  # the keeper's connection goes through now, and it opens the command's channel
        wait_until(lambda: pod.sshd.counts(mark)[1] >= 1, what="the keeper to open the gone command's channel")
        wait_until(lambda: not _bash_s(pod), timeout=15, what="the gone command's bash -s to end")
        assert pod.state()["state"] == "INIT"  # nothing ran
        assert pod.ok("fsm.status").rc == 0 and keepers(pod) == [keeper]


def test_a_read_the_kept_agent_lost_with_its_connection_is_answered_on_a_new_one_on_every_path(ssh_pod: Pod):
    """The keeper's connection goes silent while the pod's kept agent answers a read (new connections work): the
    keepalive ends it, and the read runs as a script on a new connection, as any script would; the full path
    failed (exit 4) where the kept request and the lean path answered (reviewer)."""
    pod = ssh_pod
    assert pod.sshd is not None
    with gated(pod, "2") as gate:
        for _path, env in PATHS:
            env = {**env, "WFOPS_SSH_KEEPALIVE_SECS": "1", "WFOPS_VERBOSE": "1"} if _path != "kept" else \
                {**env, "WFOPS_SSH_KEEPALIVE_SECS": "1"}
            pod.ok("disconnect")
            answer = pod.ok("fsm.status", env=env).out
            wait_until(lambda env=env: "answered by the pod's kept agent" in pod.wf(
                "fsm.status", env={**env, "WFOPS_VERBOSE": "1"}).err, what="the kept agent to answer reads")
            if _path == "kept":
                assert hit(pod.wf("fsm.status", env=env))
            gate.blackhole()
            res = pod.wf("fsm.status", env=env)
            assert (res.rc, res.out) == (0, answer), (_path, res.err[-2000:])
