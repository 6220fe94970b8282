"""Reads through a warm keeper answered by the agent it keeps alive on the pod (wfops.transport.podserver,
wfops/agent/serve.py): no exec and no Python start per read; the same answers, errors and exit codes as a script;
never a mutating command; a kept agent that dies costs one exec and is started again; it ends with the keeper.
sshd's own log counts the execs (tests/realparts.SSHD.counts: the kept agent's own start is not a command's)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.conftest import Pod, wait_until

VERBOSE = {"WFOPS_VERBOSE": "1"}
KEPT = "answered by the pod's kept agent"
READS = (("fsm.status",), ("fsm.status", "--json"), ("task.list",), ("task.list", "--json"), ("sweep.list",),
         ("task.status", "--id", "no-such-task"), ("sweep.status",))


def kept_agents(pod: Pod) -> list[int]:
    """Pids of the kept agents of this pod (their argv names the pod's agent directory and --serve)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--serve" in argv and any(str(pod.outputs).encode() in a for a in argv):
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
