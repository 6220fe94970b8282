"""pod.up, pod.status, pod.down and pod.ssh-config with the real lium CLI, the fake API and the loopback
sshd as the pod."""

from __future__ import annotations

import os
import pty
import subprocess

from tests.conftest import WFOPS, Pod, wait_until
from tests.lium.conftest import LiumPod
from tests.lium.fake_lium import FakeLium
from tests.realparts import free_port


def lium_calls(fake: FakeLium) -> list[tuple[str, str]]:
    return [r for r in fake.requests if r[0] != "GET" or r[1] in ("/pods",)]


# ------------------------------------------------------------------ pod.up

def up_config(lpod: LiumPod, fake: FakeLium, **kw: str) -> None:
    lpod.configure(LIUM_EXECUTOR_ID=fake.executor_huid, LIUM_POD_NAME="mypod", **kw)


def test_up_rents_waits_for_ssh_and_prints_the_config_line(lpod: LiumPod, fake: FakeLium):
    up_config(lpod, fake)
    res = lpod.wf("pod.up", "--yes", "--json", timeout=180)
    assert res.rc == 0, res.err
    data = res.json()
    (pod,) = fake.pods.values()
    assert data["pod"]["id"] == pod.id and data["pod"]["name"] == "mypod"
    assert data["config_line"] == f"LIUM_TARGET={pod.id}"
    assert data["ssh"] == f"root@127.0.0.1:{lpod.sshd.port}"
    assert data["state"] == "POD_READY" and lpod.state()["state"] == "POD_READY"
    rent = [b for m, p, b in fake.bodies if m == "POST" and p.endswith("/rent")]
    assert len(rent) == 1 and rent[0]["pod_name"] == "mypod"
    assert fake.count("POST", f"/pods/{pod.id}/schedule-removal") == 1  # the TTL (default 6h) was set
    assert pod.removal_scheduled_at
    assert lpod.sshd.host_key_pub.read_text().split()[1] in lpod.pin_file(pod).read_text()
    assert "lium: renting " in res.err  # lium's own progress reaches the user


def test_up_human_output_ends_with_the_exact_line(lpod: LiumPod, fake: FakeLium):
    up_config(lpod, fake, LIUM_TTL="90m")
    res = lpod.wf("pod.up", "--yes", timeout=180)
    assert res.rc == 0, res.err
    (pod,) = fake.pods.values()
    lines = res.out.splitlines()
    assert lines[0].startswith(f"rented Lium pod mypod ({pod.huid}, id {pod.id}): H100 at $2.50/h; removal at ")
    assert f"put this line in your config ({lpod.config_path}):" in lines
    assert lines[lines.index(f"put this line in your config ({lpod.config_path}):") + 1] == f"LIUM_TARGET={pod.id}"
    lpod.configure(LIUM_TARGET=pod.id)
    assert lpod.wf("fsm.status").rc == 0


def test_up_failure_after_rent_removes_the_billing_pod(lpod: LiumPod, fake: FakeLium):
    fake.rent_then = "FAILED"
    up_config(lpod, fake)
    res = lpod.wf("pod.up", "--yes", timeout=180)
    assert res.rc == 11
    rented = [p for m, p in fake.requests if m == "POST" and p.endswith("/rent")]
    assert len(rented) == 1
    deleted = [p for m, p in fake.requests if m == "DELETE"]
    assert len(deleted) == 1
    pod_id = deleted[0].rsplit("/", 1)[1]
    assert res.last_err.startswith(f"wfops: pod.up rented pod mypod (id {pod_id}) but it failed (lium up: Pod ")
    assert res.last_err.endswith("; wfops removed that pod, so it no longer bills")
    assert "status FAILED" in res.last_err
    assert fake.pods == {}


def test_up_refuses_a_bare_executor_number_before_calling_lium(lpod: LiumPod, fake: FakeLium):
    lpod.configure(LIUM_EXECUTOR_ID="3")
    res = lpod.wf("pod.up", "--yes")
    assert res.rc == 2
    assert [ln for ln in res.err.splitlines() if ln] == [res.last_err]
    assert res.last_err == ("wfops: config: LIUM_EXECUTOR_ID=3 looks like a row number of `lium ls`, which names "
                            "another node in every shell; set the node's UUID or huid (lium ls --format json shows "
                            "both)")
    assert fake.requests == [] and fake.pods == {}


def test_up_refuses_a_bad_ttl_and_bad_volume(lpod: LiumPod, fake: FakeLium):
    up_config(lpod, fake, LIUM_TTL="forever")
    res = lpod.wf("pod.up", "--yes")
    assert res.rc == 2
    assert res.last_err == ("wfops: config: LIUM_TTL='forever' is not a duration like 90m, 6h or 2d (a pod bills "
                            "until it is removed, so pod.up always sets one)")
    up_config(lpod, fake, LIUM_TTL="2h", LIUM_VOLUME="my-volume")
    res = lpod.wf("pod.up", "--yes")
    assert res.rc == 2
    assert res.last_err == "wfops: config: LIUM_VOLUME='my-volume' is not id:<VOLUME_HUID> or new:name=<NAME>"
    assert fake.requests == []


def test_up_without_yes_and_without_a_terminal_rents_nothing(lpod: LiumPod, fake: FakeLium):
    up_config(lpod, fake)
    res = lpod.wf("pod.up")
    assert res.rc == 2
    assert res.last_err == (
        f"wfops: pod.up: not confirmed, nothing done: rent a Lium pod (node {fake.executor_huid}, name mypod, "
        "auto-removed after 6h); it bills per second until removed needs --yes (or LIUM_YES=1) when stdin is not "
        "a terminal")
    assert fake.requests == [("GET", "/pods")] and fake.pods == {}  # only looked for a pod of that name
    lpod.configure(LIUM_YES="1")
    assert lpod.wf("pod.up", timeout=180).rc == 0


def test_up_passes_lium_refusals_on_as_one_line(lpod: LiumPod, fake: FakeLium):
    lpod.configure(LIUM_EXECUTOR_ID="brave-fox-00", LIUM_POD_NAME="mypod")
    res = lpod.wf("pod.up", "--yes")
    assert res.rc == 11
    assert res.last_err.startswith("wfops: lium up: ") and "brave-fox-00" in res.last_err
    assert not [r for r in fake.requests if r[0] == "POST"]


# ------------------------------------------------------------------ pod.status

def test_status_shows_the_lium_row_and_the_checks_from_one_exec(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    assert lpod.wf("fsm.status").rc == 0  # warms the cache: pod.status still asks lium once, for a fresh row
    fake.reset_counts()
    res, conns, execs = lpod.count("pod.status", "--json")
    assert res.rc == 0, res.err
    assert (conns, execs) == (1, 1) and lpod.gets() == 1
    data = res.json()
    assert data["lium"]["id"] == pod.id and data["lium"]["status"] == "RUNNING"
    facts = data["pod"]
    assert facts["user"] == lpod.sshd.user and facts["host"]
    assert facts["state"] == "POD_READY" and lpod.state()["state"] == "POD_READY"  # INIT promoted
    assert facts["mnt"]["path"] == "/mnt" and facts["mnt"]["free_bytes"] > 0
    assert facts["repo"]["path"] == str(lpod.root / "repo") and facts["repo"]["exists"] is False
    assert facts["repo"]["existing"] == str(lpod.root)
    assert isinstance(facts["gpus"], list)
    human = lpod.ok("pod.status").out
    for label in ("pod ", "status ", "price ", "uptime ", "ttl ", "reachable ", "user ", "gpus ", "/mnt ",
                  "repo disk ", "state "):
        assert any(line.startswith(label) for line in human.splitlines()), label
    assert f"train ({pod.huid}, id {pod.id})" in human


def test_status_of_a_pending_pod_shows_the_row_and_exits_4(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train", status="PENDING", pending_polls=99)
    lpod.configure(LIUM_TARGET="train")
    res, conns, _ = lpod.count("pod.status")
    assert res.rc == 4 and conns == 0
    assert "status         PENDING" in res.out
    assert "reachable  no: Lium pod train" in res.out
    assert res.last_err == (f"wfops: Lium pod train ({pod.huid}, id {pod.id}) is PENDING, not RUNNING; "
                            "pod.wait waits until it is ready")


def test_status_of_a_running_pod_that_lium_cannot_reach(lpod: LiumPod, fake: FakeLium):
    port = free_port()
    pod = fake.add_pod("train", ssh_port=port)  # never pinned: wfops asks lium to connect first
    lpod.configure(LIUM_TARGET="train")
    res = lpod.wf("pod.status")
    assert res.rc == 4
    assert res.out.splitlines()[0] == "target         LIUM_TARGET=train"
    assert "status         RUNNING" in res.out
    assert res.last_err.startswith(f"wfops: cannot reach Lium pod train ({pod.huid}, id {pod.id}) at "
                                   f"127.0.0.1:{port} to pin its host key through lium (")
    assert not lpod.pin_file(pod).exists() or str(port) not in lpod.pin_file(pod).read_text()


def test_status_works_for_an_ssh_target_without_lium(ssh_pod: Pod):
    res, conns, execs = ssh_pod.count("pod.status", "--json")
    assert res.rc == 0, res.err
    assert (conns, execs) == (1, 1)
    data = res.json()
    assert data["lium"] is None and data["target"]["kind"] == "ssh" and data["pod"]["state"] == "POD_READY"


def test_status_says_unreachable_with_exit_4(ssh_pod: Pod):
    ssh_pod.configure(OPS_DEFAULT_HOST=f"{ssh_pod.sshd.user}@127.0.0.1:{free_port()}")
    res = ssh_pod.wf("pod.status")
    assert res.rc == 4
    assert res.out.splitlines()[-1].startswith("reachable  no: cannot connect to ")
    assert res.last_err.endswith("connection refused")


# ------------------------------------------------------------------ pod.down

def test_down_resets_the_state_and_removes_the_pod(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    lpod.ok("fsm.reset", "CHECKED_OUT")
    res, conns, execs = lpod.count("pod.down", "--yes")
    assert res.rc == 0, res.err
    assert (conns, execs) == (1, 1)
    assert fake.count("DELETE", f"/pods/{pod.id}") == 1 and fake.pods == {}
    st = lpod.state()
    assert st["state"] == "INIT" and st["history"][-1]["command"] == "pod.down"
    assert res.out.splitlines()[0].startswith(f"removed Lium pod train ({pod.huid}, id {pod.id})")
    assert "workflow state on the pod: INIT (was CHECKED_OUT)" in res.out
    assert not lpod.pin_file(pod).exists()  # lium forgets the pin of a removed pod
    res = lpod.wf("fsm.status")  # no stale cache entry: the pod is gone
    assert res.rc == 5 and "no Lium pod matches LIUM_TARGET=train" in res.last_err


def test_down_closes_the_warm_connection_to_the_removed_pod(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train", WF_PERSIST_SECS="300")
    lpod.ok("fsm.status")
    assert list(lpod.keeper_dir.glob("*.sock"))  # positive control: the command left a warm connection
    assert lpod.wf("pod.down", "--yes").rc == 0
    wait_until(lambda: not list(lpod.keeper_dir.glob("*.sock")), timeout=10, what="the keeper to go")


def test_down_refuses_while_a_sweep_runs_unless_forced(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    lpod.ok("fsm.reset", "SWEEP_RUNNING")
    res = lpod.wf("pod.down", "--yes")
    assert res.rc == 10
    assert res.last_err == ("wfops: a sweep is still running on the pod (workflow state SWEEP_RUNNING); nothing was "
                            "removed. pod.down --force removes the pod anyway (the sweep dies with it)")
    assert fake.count("DELETE", f"/pods/{pod.id}") == 0 and lpod.state()["state"] == "SWEEP_RUNNING"
    assert lpod.wf("pod.down", "--yes", "--force").rc == 0
    assert fake.pods == {} and lpod.state()["state"] == "INIT"


def test_down_sees_a_live_sweep_tmux_session(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    lpod.tmux("new-session", "-d", "-s", lpod.session + "-sw", "sleep 300")
    res = lpod.wf("pod.down", "--yes")
    assert res.rc == 10
    assert f"tmux session {lpod.session}-sw is alive" in res.last_err
    assert fake.pods != {}


def test_down_without_yes_and_without_a_terminal_changes_nothing(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    res, conns, _ = lpod.count("pod.down")
    assert res.rc == 2 and conns == 0
    assert res.last_err == (f"wfops: pod.down: not confirmed, nothing done: remove Lium pod train ({pod.huid}, "
                            f"id {pod.id}) (RUNNING, $2.50/h); this cannot be undone needs --yes (or LIUM_YES=1) "
                            "when stdin is not a terminal")
    assert fake.pods != {} and not lpod.state_file.exists()


def test_down_removes_an_unreachable_pod_when_told_to(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train", ssh_port=free_port())
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    res = lpod.wf("pod.down", "--yes")
    assert res.rc == 0, res.err
    assert f"wfops: cannot reach pod train ({pod.huid}, id {pod.id}) (cannot connect to " in res.err
    assert "no check for a running sweep and the workflow state was not reset; removing it" in res.err
    assert fake.pods == {}


def test_down_asks_on_a_terminal(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    for answer, rc in (("n", 2), ("y", 0)):
        primary, secondary = pty.openpty()
        os.write(primary, f"{answer}\n".encode())
        proc = subprocess.run([str(WFOPS), "pod.down"], stdin=secondary, capture_output=True, text=True,
                              env=lpod.env(), cwd=lpod.root.parent, timeout=60)
        os.close(primary)
        os.close(secondary)
        assert proc.returncode == rc, proc.stderr
        assert f"Remove Lium pod train ({pod.huid}, id {pod.id}) (RUNNING, $2.50/h); this cannot be undone? " \
               "[y/N]" in proc.stderr
        if answer == "n":
            # the terminal echoes the answer and its newline; the pipe that stands for stderr here does not
            assert proc.stderr.endswith("[y/N] wfops: pod.down: not confirmed; nothing was done\n")
            assert fake.pods != {} and not lpod.state_file.exists()
    assert fake.pods == {} and lpod.state()["state"] == "INIT"


def test_down_of_a_pending_pod_removes_it(lpod: LiumPod, fake: FakeLium):
    fake.add_pod("train", status="PENDING", pending_polls=99)
    lpod.configure(LIUM_TARGET="train", LIUM_YES="1")
    res = lpod.wf("pod.down")
    assert res.rc == 0, res.err
    assert "is PENDING, not RUNNING; pod.wait waits until it is ready: nothing to check on it" in res.err
    assert fake.pods == {}


def test_down_needs_a_lium_target(ssh_pod: Pod):
    res = ssh_pod.wf("pod.down", "--yes")
    assert res.rc == 2
    assert res.last_err == (f"wfops: pod.down removes a Lium pod and OPS_DEFAULT_HOST={ssh_pod.sshd.address} is "
                            "reached over SSH (a host wfops did not rent: end it where you rented it)")


# ------------------------------------------------------------------ pod.ssh-config

def test_ssh_config_gives_the_pod_an_alias_that_openssh_uses(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    res = lpod.wf("pod.ssh-config")
    assert res.rc == 0, res.err
    managed = lpod.home / ".ssh" / "wfops_config"
    assert res.out.splitlines()[0] == f"wrote Host train to {managed}"
    main = (lpod.home / ".ssh" / "config").read_text()
    assert f"Include {managed}" in main
    text = managed.read_text()
    assert f"UserKnownHostsFile {lpod.pin_file(pod)}" in text and "StrictHostKeyChecking yes" in text
    # OpenSSH reads the passwd home, not $HOME: point it at the sandboxed config explicitly
    ssh = subprocess.run(["ssh", "-F", str(lpod.home / ".ssh" / "config"), "-o", "BatchMode=yes", "train",
                          "echo via-alias"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.strip() == "via-alias"
    again = lpod.ok("pod.ssh-config", "--alias", "train")
    assert "added `Include" not in again.out
    assert managed.read_text().count("Host train") == 1 and main == (lpod.home / ".ssh" / "config").read_text()


def test_ssh_config_print_writes_nothing(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    res = lpod.ok("pod.ssh-config", "--print", "--alias", "gpu1")
    assert res.out.splitlines()[1] == "Host gpu1"
    assert f"    Port {lpod.sshd.port}" in res.out.splitlines()
    assert not (lpod.home / ".ssh").exists()


def test_ssh_config_for_an_ssh_target(ssh_pod: Pod):
    res = ssh_pod.ok("pod.ssh-config", "--print", "--alias", "box")
    assert res.out.splitlines()[1:-1] == [
        "Host box", "    HostName 127.0.0.1", f"    Port {ssh_pod.sshd.port}", f"    User {ssh_pod.sshd.user}",
        f"    IdentityFile {ssh_pod.sshd.key}", "    IdentitiesOnly yes"]
    ssh_pod.configure(OPS_DEFAULT_HOST="somealias")
    res = ssh_pod.wf("pod.ssh-config")
    assert res.rc == 2
    assert res.last_err == ("wfops: OPS_DEFAULT_HOST=somealias is already an ssh alias or host name: "
                            "`ssh` reaches it as it is")


def test_ssh_config_refuses_the_local_target(tmp_path, local_pod: Pod):
    res = local_pod.wf("pod.ssh-config")
    assert res.rc == 2
    assert res.last_err == "wfops: the target is `local` (this machine): it needs no ssh_config entry"
