"""Reads through a warm keeper answered by the agent it keeps alive on the pod (wfops.transport.podserver,
wfops/agent/serve.py): no exec and no Python start per read; the same answers, errors and exit codes as a script;
never a mutating command; a kept agent that dies costs one exec and is started again; it ends with the keeper.
sshd's own log counts the execs (tests/realparts.SSHD.counts: the kept agent's own start is not a command's)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import WFOPS, Pod, make_pod, stop_keepers, wait_until
from tests.realparts import start_sshd, stop_sshd
from wfops.targets.target import Target
from wfops.transport import ssh

VERBOSE = {"WFOPS_VERBOSE": "1"}
KEPT = "answered by the pod's kept agent"
READS = (("fsm.status",), ("fsm.status", "--json"), ("task.list",), ("task.list", "--json"), ("sweep.list",),
         ("task.status", "--id", "no-such-task"), ("sweep.status",))


def kept_agents(pod: Pod) -> list[int]:
    """Pids of the kept agents of this pod (their argv names the pod's agent directory and --serve), not counting
    the children that run their requests (forked: the same argv)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if b"--serve" in argv and any(str(pod.outputs).encode() in a for a in argv):
            found[int(entry.name)] = ppid
    return [pid for pid, ppid in found.items() if ppid not in found]


def _script_agents(pod: Pod) -> list[int]:
    """Pids of agents started by a command's script on this pod (the boot program reads the request on stdin)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if b"sys.stdin.buffer.readline" in argv and str(pod.outputs).encode() in argv:
            found.append(int(entry.name))
    return found


def served(pod: Pod, *args: str) -> bool:
    return KEPT in pod.wf(*args, env=VERBOSE).err


def visible(err: str) -> str:
    return "".join(line + "\n" for line in err.splitlines() if not line.startswith("wfops: exec "))


def test_reads_after_the_first_are_answered_on_the_pod_without_an_exec_and_say_what_a_script_says(ssh_pod: Pod):
    assert ssh_pod.sshd is not None
    first = ssh_pod.ok("fsm.status", env=VERBOSE)
    assert KEPT not in first.err and "via the keeper" in first.err  # the first read runs a script
    wait_until(lambda: served(ssh_pod, "fsm.status"), what="a read answered by the kept agent")
    assert len(kept_agents(ssh_pod)) == 1
    mark = ssh_pod.sshd.mark()
    warm = {args: ssh_pod.wf(*args, env=VERBOSE) for args in READS}
    cached = ssh_pod.wf("task.list")  # the lean entry's cached fast path (no WFOPS_VERBOSE) sends the same order
    assert ssh_pod.sshd.counts(mark) == (0, 0) and ssh_pod.sshd.kept_agents(mark) == 0
    assert all(KEPT in res.err for res in warm.values()), {a: r.err for a, r in warm.items()}
    assert cached.rc == 0 and cached.out == warm[("task.list",)].out
    assert warm[("task.status", "--id", "no-such-task")].rc != 0 and warm[("sweep.status",)].rc != 0
    ssh_pod.configure(WF_PERSIST_SECS="0")  # the same reads as scripts over a connection of their own
    for args, res in warm.items():
        script = ssh_pod.wf(*args)
        assert (res.rc, res.out, visible(res.err)) == (script.rc, script.out, visible(script.err)), args


def test_a_config_change_reaches_the_pod_through_a_served_read(ssh_pod: Pod):
    ssh_pod.ok("fsm.status")
    wait_until(lambda: served(ssh_pod, "fsm.status"), what="a read answered by the kept agent")
    ssh_pod.configure(KEPT_AGENT_PROBE="42")
    res = ssh_pod.ok("task.list", env=VERBOSE)
    assert KEPT in res.err and "config written to" in res.err
    assert "KEPT_AGENT_PROBE" in ssh_pod.env_path.read_text()


def test_mutating_commands_never_go_to_the_kept_agent(ssh_pod: Pod):
    assert ssh_pod.sshd is not None
    ssh_pod.ok("fsm.status")
    wait_until(lambda: served(ssh_pod, "fsm.status"), what="a read answered by the kept agent")
    mark = ssh_pod.sshd.mark()
    res = ssh_pod.ok("fsm.reset", "POD_READY", "--reason", "kept-agent test", env=VERBOSE)
    assert KEPT not in res.err and "via the keeper" in res.err
    assert ssh_pod.sshd.counts(mark) == (0, 1)
    assert ssh_pod.state()["history"][-1]["reason"] == "kept-agent test"


def test_a_kept_agent_killed_on_the_pod_costs_one_exec_and_is_started_again(ssh_pod: Pod):
    assert ssh_pod.sshd is not None
    before = ssh_pod.ok("task.list").out
    wait_until(lambda: served(ssh_pod, "fsm.status"), what="a read answered by the kept agent")
    [pid] = kept_agents(ssh_pod)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or pid not in kept_agents(ssh_pod), what="it to end")
    res = ssh_pod.ok("task.list", env=VERBOSE)
    assert res.out == before and KEPT not in res.err  # the same answer, from a script
    wait_until(lambda: served(ssh_pod, "task.list"), what="a new kept agent to answer")
    assert len(kept_agents(ssh_pod)) == 1 and pid not in kept_agents(ssh_pod)


def test_the_kept_agent_ends_with_the_keeper(ssh_pod: Pod):
    ssh_pod.ok("fsm.status")
    wait_until(lambda: served(ssh_pod, "fsm.status"), what="a read answered by the kept agent")
    assert len(kept_agents(ssh_pod)) == 1
    ssh_pod.ok("disconnect")
    wait_until(lambda: not kept_agents(ssh_pod), what="the kept agent to end with the connection")


def test_a_frozen_kept_agent_is_given_up_and_the_read_runs_as_a_script(ssh_pod: Pod):
    """The kept agent stopped (SIGSTOP) with the connection alive: it sends no heartbeat while the read waits, so after
    3 keepalive intervals the keeper ends it and runs the script: the right answer, exit 0, not shown as kept."""
    fast = {**VERBOSE, "WFOPS_SSH_KEEPALIVE_SECS": "1"}  # the keeper takes it from the command that starts it
    expected = ssh_pod.ok("task.list", env=fast).out
    wait_until(lambda: KEPT in ssh_pod.wf("task.list", env=fast).err, what="a read answered by the kept agent")
    [pid] = kept_agents(ssh_pod)
    os.kill(pid, signal.SIGSTOP)
    try:
        res = ssh_pod.wf("task.list", env=fast, timeout=60)
        assert (res.rc, res.out) == (0, expected) and KEPT not in res.err, res
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: pid not in kept_agents(ssh_pod), what="the given-up kept agent to end")


def test_a_session_refused_by_sshd_takes_the_kept_agents_and_ends_no_other_command(tmp_path: Path, tmux_socket: str):
    """sshd with MaxSessions 2: the kept agent holds one session and a task.wait the other; a third command is refused
    a session by sshd. The kept agent gives its own back and the command runs; the connection (and the waiting
    command on it) goes on."""
    with _pod_of_sshd(tmp_path, tmux_socket, max_sessions=2) as pod:
        with _a_task_waited_for(pod, lambda: wait_until(lambda: served(pod, "fsm.status"),
                                                        what="a read answered by the kept agent")):
            reset = pod.wf("fsm.reset", "CHECKED_OUT", "--reason", "third session")
            assert reset.rc == 0, reset.err
        assert pod.state()["history"][-1]["reason"] == "third session"


@contextlib.contextmanager
def _pod_of_sshd(tmp_path: Path, tmux_socket: str, max_sessions: int) -> Iterator[Pod]:
    """A pod on an sshd of its own allowing `max_sessions` sessions a connection; its keepers and sshd ended after."""
    server = start_sshd(tmp_path / "sshd", max_sessions=max_sessions)
    (tmp_path / "p").mkdir()
    pod = make_pod("ssh", tmp_path / "p", server, tmux_socket)
    try:
        yield pod
    finally:
        stop_keepers(pod.keeper_dir)
        stop_sshd(server)


@contextlib.contextmanager
def _a_task_waited_for(pod: Pod, before_the_wait: Callable[[], object] = lambda: None) -> Iterator[None]:
    """A tracked task that runs until the block ends, and a `task.wait` on it holding a session (its agent seen
    running on the pod) for the block; after it, the wait ends with the task's success."""
    flag = pod.root / "go"
    pod.ok("task.run", "--id", "long", "--cmd", f"while [ ! -e {flag} ]; do sleep 0.05; done")
    before_the_wait()
    waiter = subprocess.Popen([str(WFOPS), "task.wait", "--id", "long"], env=pod.env(), cwd=pod.root.parent,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: _script_agents(pod), what="the wait's agent to run on the pod")
    yield
    flag.touch()
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0 and "success" in out, (out, err)


def test_two_configs_with_other_outputs_dirs_share_one_kept_agent_and_each_read_sees_its_own(ssh_pod: Pod):
    """The kept agent is one per agent and python, not per pod layout (each request carries its own): a second config
    on the same pod with another OPS_REMOTE_OUTPUTS_DIR is answered by it, with that config's state, once that dir
    has the agent (its first read runs the script, whose glue makes the dir and installs it). A config whose
    outputs dir cannot be made says so every time, as the script's glue does, never an answer from the kept agent."""
    other = ssh_pod.root / "other-outputs"
    config_b = ssh_pod.root.parent / "b.env"
    config_b.write_text(ssh_pod.write_config().read_text().replace(str(ssh_pod.outputs), str(other)))
    ssh_pod.ok("fsm.reset", "POD_READY", "--reason", "config a")
    wait_until(lambda: served(ssh_pod, "fsm.status"), what="a read answered by the kept agent")
    env_b = {**VERBOSE, "WORKFLOW_CONFIG": str(config_b)}
    first_b = ssh_pod.ok("fsm.status", "--json", env=env_b)
    assert KEPT not in first_b.err and first_b.json()["state"] == "INIT"  # no agent in its dir yet: the script
    res_b = ssh_pod.ok("fsm.status", "--json", env=env_b)
    res_a = ssh_pod.ok("fsm.status", "--json", env=VERBOSE)
    assert KEPT in res_b.err and KEPT in res_a.err
    assert res_a.json()["state"] == "POD_READY" and res_b.json()["state"] == "INIT"
    assert res_b.json()["file"].startswith(str(other))
    assert len(kept_agents(ssh_pod)) == 1
    config_c = ssh_pod.root.parent / "c.env"  # its outputs dir under a regular file: it cannot be made
    config_c.write_text(config_b.read_text().replace(str(other), str(ssh_pod.env_path / "outputs")))
    for _ in range(2):
        res_c = ssh_pod.wf("fsm.status", env={**VERBOSE, "WORKFLOW_CONFIG": str(config_c)})
        assert res_c.rc == 6 and "cannot create" in res_c.last_err and KEPT not in res_c.err, res_c.err
    assert served(ssh_pod, "fsm.status")  # the kept agent serves config a as before


def test_sessions_refused_at_once_are_each_a_refusal_and_the_connection_lives(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch):
    """sshd with MaxSessions 1, its session held by a running command: four channels asked for at once are each
    refused as a refusal (ssh.SessionRefused), never a connection taken for dead (paramiko keeps one failure
    reason for the whole connection: two at once left one of them a bare "Unable to open channel", and the keeper
    replaced a live connection under its commands); the held command runs on."""
    monkeypatch.setenv("HOME", str(tmp_path))  # the first host key seen is pinned under HOME
    server = start_sshd(tmp_path / "sshd", max_sessions=1)
    link = None
    try:
        target = Target(kind="ssh", label=server.address, host=server.host, user=server.user, port=server.port,
                        key_filename=str(server.key), use_ssh_config=False)
        link = ssh.SSHLink(target)
        held = link.open_exec()
        held.sendall(b"read line; echo got $line\n")
        errors: list[BaseException] = []

        def ask() -> None:
            try:
                link.open_exec().close()  # type: ignore[union-attr]
            except BaseException as exc:
                errors.append(exc)

        for _ in range(5):
            errors.clear()
            threads = [threading.Thread(target=ask) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert len(errors) == 4 and all(isinstance(e, ssh.SessionRefused) for e in errors), errors
            assert link.active
        held.sendall(b"still\n")
        held.shutdown_write()
        assert held.recv_exit_status() == 0 and held.recv(100) == b"got still\n"
    finally:
        if link is not None:
            link.close()
        stop_sshd(server)


def test_a_session_refused_with_no_kept_agent_to_give_back_is_one_line_and_changes_nothing(tmp_path: Path,
                                                                                           tmux_socket: str):
    """sshd with MaxSessions 1, its session held by a task.wait (the kept agent gave its own back for it): a
    mutating command is refused a session: one line, exit 4, the state file as it was, and the wait goes on."""
    with _pod_of_sshd(tmp_path, tmux_socket, max_sessions=1) as pod, _a_task_waited_for(pod):
        before = pod.state_file.read_bytes()
        reset = pod.wf("fsm.reset", "CHECKED_OUT", "--reason", "no session")
        assert reset.rc == 4 and len(reset.err.strip().splitlines()) == 1, reset
        assert "refused one more session" in reset.err and "Traceback" not in reset.err
        assert pod.state_file.read_bytes() == before
