"""Promises of the README that no other test held to (the audit of docs/testing.md, README as of 821df59).

Each test fails when the mechanism it names is removed, with what a user would notice; where a test checks
that something is absent, it first shows (a positive control) that the same check sees it when present.
Real parts only: the loopback sshd, tmux, git, torchrun of tests/conftest.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    BIN,
    ROOT,
    Pod,
    TrainingRepo,
    checkout_config,
    git,
    wait_until,
    write_shards,
)
from tests.integration.test_interruptions import _command_lock_held, _start, _waiting_for
from tests.integration.test_ownership import owned_by
from tests.integration.test_sweeps import (
    ssh_swept,  # noqa: F401 - fixture
    states,
    swept,  # noqa: F401 - fixture
    wait_sweep,
    write_csv,
)
from tests.realparts import SSHD, free_port
from wfops.cli import program
from wfops.tasks import ns

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 ")


def log_lines(pod: Pod, task_id: str) -> list[str]:
    return [STAMP.sub("", ln) for ln in (pod.outputs / "_tasks" / task_id / "stdout.log").read_text().splitlines()]


def owned_env(token: str, name: str) -> list[str | None]:
    """The value of `name` in the environment of every live process that carries WFOPS_OWNER=token."""
    mark = f"WFOPS_OWNER={token}".encode()
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in env:
            values = [e.split(b"=", 1)[1].decode() for e in env if e.startswith(name.encode() + b"=")]
            found.append(values[0] if values else None)
    return found


# ------------------------------------------------------------------ commands and connections

def test_local_only_commands_never_connect(ssh_pod: Pod):
    """config.show, sweep.template and sweep.validate are 'local only' (the command table)."""
    ssh_pod.configure(SWEEP_CSV=str(ssh_pod.root.parent / "sweep.csv"))
    for args in (("config.show",), ("config.show", "--json"), ("sweep.template",), ("sweep.validate",)):
        res, conns, execs = ssh_pod.count(*args)
        assert (res.rc, conns, execs) == (0, 0, 0), (args, res.err)
    assert not ssh_pod.outputs.exists()
    res, conns, execs = ssh_pod.count("fsm.status")  # control: the count sees a command that does connect
    assert (res.rc, conns, execs) == (0, 1, 1)


def test_bootstrap_checkout_sweep_start_and_stop_open_one_connection_each(ssh_swept: Pod):  # noqa: F811
    """'Every command opens one SSH connection': the mutating commands the other counts leave out."""
    pod = ssh_swept
    for args in (("bootstrap",), ("checkout",),
                 ("sweep.start", "--csv", str(write_csv(pod, "long,config/train_tiny.py,1,sleep=300,\n")))):
        res, conns, _ = pod.count(*args)
        assert (res.rc, conns) == (0, 1), (args, res.err)
    assert pod.state()["state"] == "SWEEP_RUNNING"
    res, conns, _ = pod.count("sweep.stop")
    assert (res.rc, conns) == (0, 1), res.err
    assert states(wait_sweep(pod)) == {"long": "cancelled"}


def test_help_on_every_task_lists_its_options(capsys: pytest.CaptureFixture[str]):
    """`--help` on any task lists its options (in process: the parser is the point, not the process)."""
    for name in sorted(ns.task_names):
        program.run(["wfops", "--help", name], exit=False)
        shown = capsys.readouterr().out
        assert shown.startswith(f"Usage: wfops [--core-opts] {name} "), name
        for arg in ns[name].get_arguments():
            assert f"--{arg.names[0].replace('_', '-')}" in shown, (name, arg.names)


def test_inv_help_and_config_after_the_task_name(local_pod: Pod, tmp_path: Path):
    """With `inv`: `inv --help TASK` lists its options, the dotenv file goes after the task name, and a command
    line invoke cannot parse is invoke's own message and exit 1 (the `wfops` program makes it exit 2)."""
    local_pod.write_config()
    alt = tmp_path / "alt.env"
    alt.write_text(local_pod.config_path.read_text() + "WANDB_PROJECT=from-alt\n")

    def inv(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "inv"), *args], cwd=ROOT, capture_output=True, text=True,
                              env=local_pod.env(), timeout=60)

    shown = inv("--help", "sweep.start")
    assert shown.returncode == 0 and "--csv=STRING" in shown.stdout and "--config=STRING" in shown.stdout
    data = json.loads(inv("config.show", "--json", "--config", str(alt)).stdout)
    assert data["config_file"] == str(alt) and data["values"]["WANDB_PROJECT"] == "from-alt"
    bad = inv("task.list", "--no-such-option")
    assert (bad.returncode, bad.stderr.strip()) == (1, "No idea what '--no-such-option' is!")


def test_short_flags_are_the_documented_ones():
    """'-c is --config in every task; task.run --cmd is -m; sweep.* --csv is -s' (Decisions)."""
    def names(task: str, arg: str) -> tuple[str, ...]:
        return next(tuple(a.names) for a in ns[task].get_arguments() if a.name == arg)

    assert names("task.run", "cmd") == ("cmd", "m")
    for task in ("sweep.start", "sweep.validate", "sweep.template"):
        assert names(task, "csv") == ("csv", "s"), task


def test_config_show_only_set_shows_just_what_the_file_sets(local_pod: Pod):
    local_pod.configure(WANDB_PROJECT="mine")
    full = local_pod.ok("config.show", "--json").json()["values"]
    only = local_pod.ok("config.show", "--json", "--only-set").json()["values"]
    file_keys = {ln.split("=", 1)[0] for ln in local_pod.config_path.read_text().splitlines() if "=" in ln}
    assert "TASK_TIMEOUT_SECS" in full and full["TASK_TIMEOUT_SECS"] == "7200"  # control: defaults are shown...
    assert set(only) == file_keys and only["WANDB_PROJECT"] == "mine"  # ... but not with --only-set
    table = local_pod.ok("config.show", "--only-set").out
    assert "WANDB_PROJECT" in table and "TASK_TIMEOUT_SECS" not in table


# ------------------------------------------------------------------ targets and connections

def test_ops_default_host_may_be_an_alias_from_ssh_config(ssh_pod: Pod):
    sshd = ssh_pod.sshd
    assert sshd is not None
    ssh_dir = ssh_pod.home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text(f"Host wfops-alias-pod\n    HostName {sshd.host}\n    Port {sshd.port}\n"
                                    f"    User {sshd.user}\n    IdentityFile {sshd.key}\n")
    ssh_pod.configure(OPS_DEFAULT_HOST="wfops-alias-pod", SSH_KEY_PATH="")  # port, user and key from the alias
    res, conns, execs = ssh_pod.count("fsm.status", "--json")
    assert (res.rc, conns, execs) == (0, 1, 1), res.err
    assert res.json()["state"] == "INIT" and ssh_pod.env_path.is_file()
    (ssh_dir / "config").write_text("")  # control: without the alias the same name reaches nothing
    res = ssh_pod.wf("fsm.status")
    assert res.rc == 4 and res.last_err.startswith("wfops: cannot resolve host 'wfops-alias-pod'"), res.err


@pytest.mark.parametrize("persist", ["0", "120"])
def test_an_alias_through_a_proxy_command_or_a_proxy_jump_reaches_the_pod(ssh_pod: Pod, persist: str):
    """ssh_config's ProxyCommand (OpenSSH's own `ssh -W` here) and ProxyJump (the pod as its own jump host) work
    as they did through Fabric, cold (the command's own connection) and warm (the keeper's); a jump host that
    refuses is one line."""
    sshd = ssh_pod.sshd
    assert sshd is not None
    ssh_dir = ssh_pod.home / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    plain = f"    HostName {sshd.host}\n    Port {sshd.port}\n    User {sshd.user}\n    IdentityFile {sshd.key}\n"
    ow = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes"
    (ssh_dir / "config").write_text(
        f"Host wfops-via-command\n{plain}    ProxyCommand ssh -q {ow} -i {sshd.key} -p {sshd.port} -W %h:%p "
        f"{sshd.user}@{sshd.host}\n"
        f"Host wfops-via-jump\n{plain}    ProxyJump wfops-hop\n"
        f"Host wfops-hop\n{plain}"
        f"Host wfops-via-dead-jump\n{plain}    ProxyJump wfops-dead-hop\n"
        f"Host wfops-dead-hop\n    HostName 127.0.0.1\n    Port 1\n    User {sshd.user}\n    IdentityFile {sshd.key}\n")
    for alias in ("wfops-via-command", "wfops-via-jump"):
        ssh_pod.configure(OPS_DEFAULT_HOST=alias, SSH_KEY_PATH="", WF_PERSIST_SECS=persist, SSH_CONNECT_TIMEOUT="10")
        res = ssh_pod.wf("fsm.status", "--json")
        assert res.rc == 0 and res.json()["state"] == "INIT", (alias, res.err)
        ssh_pod.wf("disconnect")
    ssh_pod.configure(OPS_DEFAULT_HOST="wfops-via-dead-jump")
    res = ssh_pod.wf("fsm.status")
    assert res.rc == 4 and res.last_err.startswith("wfops: cannot connect to") and len(res.err.splitlines()) == 1, \
        res.err


def test_an_ssh_config_match_exec_line_still_runs(ssh_pod: Pod):
    """paramiko runs `Match exec` through invoke, which wfops otherwise hides from paramiko's import (cold): with
    such a line in ~/.ssh/config it is imported as usual, and the line decides which block applies."""
    sshd = ssh_pod.sshd
    assert sshd is not None
    ssh_dir = ssh_pod.home / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    seen = ssh_pod.root.parent / "match-exec-ran"
    (ssh_dir / "config").write_text(
        f'Match host wfops-matched exec "touch {seen}"\n    HostName {sshd.host}\n    Port {sshd.port}\n'
        f"    User {sshd.user}\n    IdentityFile {sshd.key}\n")
    ssh_pod.configure(OPS_DEFAULT_HOST="wfops-matched", SSH_KEY_PATH="", WF_PERSIST_SECS="0")
    res = ssh_pod.wf("fsm.status", "--json")
    assert res.rc == 0 and res.json()["state"] == "INIT", res.err
    assert seen.exists()  # the exec ran, and its block gave the port, user and key
    (ssh_dir / "config").write_text("Host wfops-matched\n    Port\n")  # an unparsable file: one line, exit 4
    for lean in ("1", "0"):
        res = ssh_pod.wf("fsm.status", env={"WFOPS_LEAN": lean})
        assert (res.rc, res.err) == (4, f"wfops: cannot read {ssh_dir / 'config'}: Unparsable line Port\n"), res.err


def test_a_match_exec_line_written_while_a_keeper_runs_still_runs(ssh_pod: Pod):
    """The keeper process imported paramiko with invoke hidden (no `Match exec` then); a `Match exec` line written
    later must still run there, where it reconnects for the changed ssh_config (before: every warm command
    `kept going away`, exit 4, until `wfops disconnect --all`)."""
    sshd = ssh_pod.sshd
    assert sshd is not None
    ssh_dir = ssh_pod.home / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    block = f"    HostName {sshd.host}\n    Port {sshd.port}\n    User {sshd.user}\n    IdentityFile {sshd.key}\n"
    (ssh_dir / "config").write_text(f"Host wfops-kept\n{block}")
    ssh_pod.configure(OPS_DEFAULT_HOST="wfops-kept", SSH_KEY_PATH="", WF_PERSIST_SECS="120")
    ssh_pod.ok("fsm.status")
    seen = ssh_pod.root.parent / "match-exec-ran"
    (ssh_dir / "config").write_text(f'Match host wfops-kept exec "touch {seen}"\n{block}')
    for lean in ("1", "0"):
        res = ssh_pod.wf("fsm.status", "--json", env={"WFOPS_LEAN": lean})
        assert res.rc == 0 and res.json()["state"] == "INIT", res.err
    assert seen.exists()


@pytest.mark.parametrize("line,says", [
    ("Port abc", "wfops: ssh_config gives 'wfops-bad' the port 'abc', which is not a port number"),
    ('ProxyCommand sh -c "echo unbalanced', "wfops: SSH to "),
])
def test_an_ssh_config_value_wfops_cannot_use_is_one_line(ssh_pod: Pod, line: str, says: str):
    sshd = ssh_pod.sshd
    assert sshd is not None
    ssh_dir = ssh_pod.home / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    (ssh_dir / "config").write_text(f"Host wfops-bad\n    HostName {sshd.host}\n    User {sshd.user}\n"
                                    f"    IdentityFile {sshd.key}\n    {line}\n")
    for persist in ("0", "120"):
        ssh_pod.configure(OPS_DEFAULT_HOST="wfops-bad", SSH_KEY_PATH="", WF_PERSIST_SECS=persist)
        for lean in ("1", "0"):
            res = ssh_pod.wf("fsm.status", env={"WFOPS_LEAN": lean})
            assert res.rc == 4 and len(res.err.splitlines()) == 1 and res.err.startswith(says), (persist, res.err)


def test_new_hosts_are_accepted_but_never_added_to_known_hosts(ssh_pod: Pod):
    sshd = ssh_pod.sshd
    assert sshd is not None
    known = ssh_pod.home / ".ssh" / "known_hosts"

    def recorded() -> bool:
        return known.exists() and subprocess.run(["ssh-keygen", "-F", f"[{sshd.host}]:{sshd.port}", "-f", str(known)],
                                                 capture_output=True).returncode == 0

    ssh_pod.ok("fsm.status")
    ssh_pod.ok("task.list")
    assert not recorded()
    # control: a client that does record new hosts (OpenSSH's accept-new) makes the same check see the entry
    known.parent.mkdir(exist_ok=True)
    subprocess.run(["ssh", "-q", "-i", str(sshd.key), "-p", str(sshd.port), "-o", "StrictHostKeyChecking=accept-new",
                    "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes", f"{sshd.user}@{sshd.host}", "true"],
                   check=True, timeout=30, stdin=subprocess.DEVNULL)
    assert recorded()
    before = known.read_bytes()
    ssh_pod.ok("fsm.status")
    assert known.read_bytes() == before  # a known host: loaded, checked, the file left alone


def _nodelay_of_sockets_to(host: str, port: int) -> list[int]:
    """TCP_NODELAY of every socket of this process connected to host:port (found through /proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.fromfd(int(fd), socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue
        with sock:  # a dup of the same socket: its options are the socket's
            try:
                if sock.getpeername() == (host, port):
                    found.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            except OSError:
                pass
    return found


def test_the_connection_sets_tcp_nodelay(sshd: SSHD):
    """TCP_NODELAY on the connection's socket (paramiko leaves it off): in process, where the socket is."""
    from fabric import Config, Connection

    from wfops.targets.target import Target
    from wfops.transport.connect import open_session

    plain = Connection(sshd.host, user=sshd.user, port=sshd.port, config=Config(overrides={"load_ssh_configs": False}),
                       connect_kwargs={"key_filename": str(sshd.key), "look_for_keys": False, "allow_agent": False})
    try:  # control: a plain Fabric connection leaves it off, and the scan finds that connection's socket
        plain.open()
        assert _nodelay_of_sockets_to(sshd.host, sshd.port) == [0]
    finally:
        plain.close()
    target = Target(kind="ssh", label=sshd.address, host=sshd.host, user=sshd.user, port=sshd.port,
                    key_filename=str(sshd.key), use_ssh_config=False)
    session = open_session(target)
    try:
        found = _nodelay_of_sockets_to(sshd.host, sshd.port)
        assert len(found) == 1 and found[0] != 0, found
    finally:
        session.close()


def test_pod_status_works_on_the_local_target_and_promotes_init(local_pod: Pod):
    """`pod.status`: on-pod checks for every target (the Lium and SSH paths have their own tests), INIT→POD_READY."""
    data = local_pod.ok("pod.status", "--json").json()
    assert data["lium"] is None and data["target"]["kind"] == "local"
    facts = data["pod"]
    assert facts["user"] == subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    assert facts["state"] == "POD_READY" and local_pod.state()["state"] == "POD_READY"
    assert isinstance(facts["gpus"], list) and facts["mnt"]["path"] == "/mnt"


def test_pod_wait_on_an_ssh_target_waits_for_ssh(ssh_pod: Pod):
    """`pod.wait`: until SSH answers, for every target (the Lium path has its own tests)."""
    res = ssh_pod.wf("pod.wait", "--timeout-secs", "30")
    assert res.rc == 0, res.err
    ssh_pod.configure(OPS_DEFAULT_HOST=f"{ssh_pod.sshd.user}@127.0.0.1:{free_port()}",  # type: ignore[union-attr]
                      SSH_CONNECT_TIMEOUT="1")
    res = ssh_pod.wf("pod.wait", "--timeout-secs", "2")
    assert res.rc == 4 and "connection refused" in res.last_err, res.err


@pytest.mark.parametrize("args,hint", [
    (("task.run", "--id", "t1", "--cmd", "true"), "task t1 may have started: see task.status --id t1"),
    (("fsm.reset", "CHECKED_OUT"), "the workflow state may have changed: run fsm.status"),
    (("sweep.stop",), "the sweep may be stopping or stopped: run sweep.status"),
])
def test_interrupted_mutating_commands_say_what_to_check(pod: Pod, args: tuple[str, ...], hint: str):
    """'for one that does (sweep.start, sweep.stop, task.run, fsm.reset) ... each names what to check':
    the request arrives and waits on the pod's command lock when Ctrl-C comes."""
    pod.ok("fsm.reset", "SWEEP_RUNNING", "--reason", "so that sweep.stop is allowed")
    with _command_lock_held(pod) as lock:
        proc = _start(pod, *args)
        try:
            wait_until(lambda: _waiting_for(lock), timeout=60, what=f"{args[0]} to wait for the command lock")
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert (proc.returncode, err.strip().splitlines()) == (
        130, [f"wfops: interrupted after the request was sent: {hint}"])


# ------------------------------------------------------------------ configuration

def test_a_bare_dollar_is_literal_and_single_quotes_are_literal():
    from wfops.settings.load import parse_settings

    s = parse_settings("WANDB_PROJECT=cost$ 5$x\nWANDB_GROUP='${HOME} $x'\nWANDB_ENTITY=${HOME}\n",
                       environ={"HOME": "/home/me", "x": "expanded"})
    assert s.raw("WANDB_ENTITY") == "/home/me"  # control: a ${KEY} reference is expanded
    assert s.wandb_project == "cost$ 5$x"
    assert s.wandb_group == "${HOME} $x"


def test_an_unknown_key_warns_and_still_reaches_the_pod(pod: Pod):
    out = pod.root / "seen.txt"
    pod.configure(RUN_TIMEOUT_SEC="5")  # a typo of RUN_TIMEOUT_SECS
    res = pod.ok("task.run", "--id", "typo", "--cmd", f"printf %s \"$RUN_TIMEOUT_SEC\" > {out}")
    assert "unknown key RUN_TIMEOUT_SEC" in res.err and "did you mean RUN_TIMEOUT_SECS?" in res.err
    pod.ok("task.wait", "--id", "typo")
    assert out.read_text() == "5"  # passed to the pod environment all the same
    pod.configure(EXTRA_ENV_KEYS="RUN_TIMEOUT_SEC")  # listed as an intended extra: no warning
    res = pod.ok("fsm.status")
    assert "RUN_TIMEOUT_SEC" not in res.err
    assert "RUN_TIMEOUT_SEC=5" in pod.env_path.read_text()


def test_lium_ssh_and_local_keys_stay_on_this_machine(ssh_pod: Pod):
    ssh_pod.configure(LIUM_TTL="2h", LIUM_POD_NAME="mypod", LIUM_NOT_A_KEY="x", SSH_CONNECT_TIMEOUT="9",
                      WANDB_PROJECT="kept")
    ssh_pod.ok("fsm.status")
    text = ssh_pod.env_path.read_text()
    keys = {ln.split("=", 1)[0] for ln in text.splitlines() if "=" in ln and not ln.startswith("#")}
    assert {"WANDB_PROJECT", "OPS_REMOTE_OUTPUTS_DIR", "KILL_GRACE_SECS"} <= keys  # control: pod keys arrive
    assert not keys & {"LIUM_TTL", "LIUM_POD_NAME", "LIUM_NOT_A_KEY", "LIUM_TARGET", "OPS_DEFAULT_HOST", "SSH_KEY_PATH",
                       "SSH_CONNECT_TIMEOUT", "LOCAL_ARTIFACTS_DIR"}, sorted(keys)
    assert str(ssh_pod.sshd.key) not in text  # type: ignore[union-attr]


# ------------------------------------------------------------------ the workflow state machine

def test_fsm_reset_never_promotes_and_task_run_promotes_first(pod: Pod):
    pod.ok("fsm.reset", "BOOTSTRAPPED", "--reason", "by hand")
    assert [(h["from"], h["to"], h["command"]) for h in pod.state()["history"]] == [
        ("INIT", "BOOTSTRAPPED", "fsm.reset")]
    pod.ok("fsm.reset")
    pod.ok("task.run", "--id", "promoted", "--cmd", "true")  # 'any but INIT (a reachable pod is promoted first)'
    last = pod.state()["history"][-1]
    assert (last["from"], last["to"], last["command"], pod.state()["state"]) == (
        "INIT", "POD_READY", "task.run", "POD_READY")


# ------------------------------------------------------------------ tracked tasks

def test_a_task_starts_in_the_repo_else_in_home(pod: Pod):
    pod.ok("task.run", "--id", "nohome", "--cmd", 'printf "%s|%s\\n" "$PWD" "$HOME"')
    pod.ok("task.wait", "--id", "nohome")
    pwd, home = log_lines(pod, "nohome")[-1].split("|")
    assert pwd == home and not (pod.root / "repo").exists()
    (pod.root / "repo").mkdir()
    pod.ok("task.run", "--id", "inrepo", "--cmd", 'printf "%s\\n" "$PWD"')
    pod.ok("task.wait", "--id", "inrepo")
    assert log_lines(pod, "inrepo") == [str(pod.root / "repo")]


def test_each_task_runs_in_its_own_window_of_the_task_session(pod: Pod):
    flag = pod.root / "go"
    for tid in ("win1", "win2"):
        pod.ok("task.run", "--id", tid, "--cmd", f"while [ ! -e {flag} ]; do sleep 0.05; done")
    panes = pod.tmux("list-panes", "-s", "-t", f"={pod.session}", "-F", "#{window_name} #{pane_pid}").stdout.split("\n")
    windows = dict(ln.split() for ln in panes if ln.strip())
    for tid in ("win1", "win2"):
        status = json.loads((pod.outputs / "_tasks" / tid / "status.json").read_text())
        assert int(windows[tid]) == status["pid"], (tid, windows, status)  # the window runs that task's runner
    flag.touch()
    for tid in ("win1", "win2"):
        assert pod.ok("task.wait", "--id", tid, "--json").json()["state"] == "success"


def test_a_task_dir_holds_the_documented_files(pod: Pod):
    pod.ok("task.run", "--id", "files", "--cmd", "echo hi")
    pod.ok("task.wait", "--id", "files")
    d = pod.outputs / "_tasks" / "files"
    assert {"status.json", "stdout.log", "command.sh", "runner.sh", "spec.json"} <= {p.name for p in d.iterdir()}
    st = json.loads((d / "status.json").read_text())
    for key in ("state", "exit_code", "created_at", "started_at", "ended_at", "pid", "pid_start", "boot_id", "owner"):
        assert st.get(key) not in (None, ""), (key, st)


def test_task_status_shows_the_last_20_log_lines_unless_told(pod: Pod):
    pod.ok("task.run", "--id", "x" * 128, "--cmd", "seq 1 30")  # the longest id the pattern allows
    pod.ok("task.wait", "--id", "x" * 128)
    tail = pod.ok("task.status", "--id", "x" * 128, "--json").json()["tail"]
    assert [STAMP.sub("", ln) for ln in tail] == [str(i) for i in range(11, 31)]
    more = pod.ok("task.status", "--id", "x" * 128, "--tail-lines", "25", "--json").json()["tail"]
    assert len(more) == 25  # control: the option moves it, so 20 is the default and not a cap
    human = pod.ok("task.status", "--id", "x" * 128).out
    assert "--- stdout.log (last 20 lines)" in human and human.rstrip().endswith(" 30")


# ------------------------------------------------------------------ bootstrap

def test_wandb_setup_runs_only_when_asked_and_both_scripts_see_the_pod_env(pod: Pod):
    saw_boot, saw_wandb = pod.root / "bootstrap-saw", pod.root / "wandb-saw"
    boot, wandb = pod.root / "boot.sh", pod.root / "wandb.sh"
    boot.write_text(f'printf %s "$MY_POD_VALUE" > {saw_boot}\n')
    wandb.write_text(f'printf %s "$MY_POD_VALUE" > {saw_wandb}\n')
    log = pod.outputs / "_control" / "wandb-setup.log"
    pod.configure(BOOTSTRAP_SCRIPT=str(boot), WANDB_SETUP_SCRIPT=str(wandb), EXTRA_ENV_KEYS="MY_POD_VALUE",
                  MY_POD_VALUE="from the config", SWEEP_WANDB="0", RUN_WANDB_SETUP="0")
    pod.ok("bootstrap")
    assert saw_boot.read_text() == "from the config"
    assert not saw_wandb.exists() and not log.exists()
    for switch in ("RUN_WANDB_SETUP", "SWEEP_WANDB"):  # control: either switch runs it, and the check sees that
        pod.configure(**{"SWEEP_WANDB": "0", "RUN_WANDB_SETUP": "0", switch: "1"})
        pod.ok("bootstrap")
        assert saw_wandb.read_text() == "from the config" and log.exists(), switch
        saw_wandb.unlink()


# ------------------------------------------------------------------ checkout

def test_checkout_follows_origin_and_reinstalls_only_when_dependencies_change(local_pod: Pod, tmp_path: Path,
                                                                              training_repo: TrainingRepo,
                                                                              pod_python: str):
    """'The pod's checkout follows origin' and 'dependencies are reinstalled only when the install command or
    the repo's pyproject.toml, setup.py, setup.cfg or requirements.txt changed' (hash on the pod)."""
    pod = local_pod
    origin = tmp_path / "origin.git"
    git("clone", "-q", "--bare", str(training_repo.bare), str(origin), cwd=tmp_path)
    work = tmp_path / "work"
    git("clone", "-q", str(origin), str(work), cwd=tmp_path)
    git("checkout", "-q", "-B", "main", "origin/main", cwd=work)
    repo = TrainingRepo(f"file://{origin}", origin, training_repo.main_sha, training_repo.feature_sha,
                        training_repo.pr, training_repo.pr_sha)
    checkout_config(pod, repo, pod_python)
    write_shards(pod.root / "data")
    pod.ok("checkout")
    marker = pod.root / "repo" / ".venv" / ".wfops-installed"
    installed = marker.stat().st_mtime_ns

    def push(path: str, message: str) -> str:
        with (work / path).open("a") as fh:
            fh.write(f"# {message}\n")
        git("commit", "-q", "-am", message, cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)

    config_only = push("examples/nanogpt/config/train_tiny.py", "a config change")
    res = pod.ok("checkout")
    assert git("rev-parse", "HEAD", cwd=pod.root / "repo") == config_only  # followed origin/main
    assert "dependencies  unchanged" in res.out and marker.stat().st_mtime_ns == installed  # no reinstall
    deps = push("pyproject.toml", "a dependency file change")
    res = pod.ok("checkout")
    assert git("rev-parse", "HEAD", cwd=pod.root / "repo") == deps
    assert "dependencies  installed" in res.out and marker.stat().st_mtime_ns != installed  # reinstalled
    installed = marker.stat().st_mtime_ns
    pod.configure(REPO_INSTALL_CMD="true")  # another install command: reinstalled too
    res = pod.ok("checkout")
    assert "dependencies  installed" in res.out and marker.stat().st_mtime_ns != installed


# ------------------------------------------------------------------ the pod agent

def test_the_agent_runs_on_the_system_python_not_a_python3_on_path(local_pod: Pod, tmp_path: Path):
    """'the system /usr/bin/python3 is preferred, so a slow pyenv/conda shim on PATH never sits in the hot path'."""
    shims = tmp_path / "shims"
    shims.mkdir()
    used = tmp_path / "shim-used"
    shim = shims / "python3"
    shim.write_text(f"#!/bin/sh\necho \"$@\" >> {used}\nexec /usr/bin/python3 \"$@\"\n")
    shim.chmod(0o755)
    env = {"PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", "python3 -c pass"], env={**os.environ, **env}, check=True)
    assert used.exists()  # control: on this PATH `python3` is the shim, and the shim leaves its trace
    used.unlink()
    local_pod.ok("fsm.status", env=env)
    local_pod.ok("task.run", "--id", "t", "--cmd", "true", env=env)
    local_pod.ok("task.wait", "--id", "t", env=env)
    assert not used.exists()


def test_the_agent_is_installed_once_under_its_content_hash(ssh_pod: Pod):
    ssh_pod.ok("fsm.status")
    (agent,) = (ssh_pod.outputs / "_control" / "agent").iterdir()
    assert re.fullmatch(r"[0-9a-f]{12,64}", agent.name), agent.name
    main = agent / "wfops_agent" / "__main__.py"
    marker = agent / "wfops_agent" / "test-marker"  # gone if the package were unpacked again (a fresh dir)
    marker.write_text("x")
    ssh_pod.ok("task.list")
    ssh_pod.ok("fsm.reset", "POD_READY")
    assert marker.is_file()
    # control: a missing agent is installed again, which the check above would notice. The warm keeper's kept agent
    # runs from that folder (its imports may write bytecode there at any moment): ended first, as a user removing
    # the agent would not do it under a running one
    ssh_pod.ok("disconnect")
    shutil.rmtree(agent)
    ssh_pod.ok("fsm.status")
    assert main.is_file() and not marker.exists()


PURE = ("settings.load", "settings.keys", "settings.checks", "settings.model", "settings.example", "transport.rules",
        "sweeps.model", "sweeps.metrics", "sweeps.status", "preparation", "tracked", "transport.shell",
        "transport.render", "transport.session", "transport.warm", "output", "targets.target", "targets.resolve",
        "targets.lium_rows", "targets.ssh_config")


def test_pure_modules_import_neither_fabric_nor_invoke():
    code = ("import importlib, sys; importlib.import_module(sys.argv[1]); "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'fabric', 'invoke', 'paramiko'})))")

    def heavy(module: str) -> str:
        res = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    assert "invoke" in heavy("wfops.tasks").split()  # control: the check sees a module that does import them
    for name in PURE:
        assert heavy(f"wfops.{name}") == "", name


# ------------------------------------------------------------------ sweeps

def test_a_cpu_only_run_is_one_gloo_process_on_lo_in_the_sweep_window(swept: Pod):  # noqa: F811
    """CPU_ONLY=1 without TRAIN_NPROC: one process per run, and with TRAIN_LAUNCHER's default (auto) a plain
    python process, not torchrun (issue 21: torchrun sets RANK and a script then goes distributed with NCCL),
    with GLOO_SOCKET_IFNAME=lo; the queue runs in window `sweep` of $SWEEP_TMUX_SESSION; the pod env's copy in
    _manifests is mode 600. (Before TRAIN_LAUNCHER=auto this run was torchrun and its worker: two processes.)"""
    pod = swept
    pod.configure(TRAIN_NPROC="")
    pod.ok("sweep.start", "--csv", str(write_csv(pod, "cpu,config/train_tiny.py,1,sleep=300,\n")))
    wait_until(lambda: (pod.outputs / "cpu" / "args.json").exists(), timeout=90, what="the run to start")
    assert json.loads((pod.outputs / "cpu" / "args.json").read_text())["world_size"] == 1
    status = json.loads((pod.outputs / "cpu" / "status.json").read_text())
    assert status["launcher"] == "python" and status["nproc"] == 1
    assert "torch.distributed.run" not in (pod.outputs / "cpu" / "command.sh").read_text()
    token = status["owner"]
    seen = wait_until(lambda: owned_env(token, "GLOO_SOCKET_IFNAME") or None,
                      what="the run's process (positive control: the scan finds it)")
    assert set(seen) == {"lo"}, seen
    windows = pod.tmux("list-windows", "-t", f"={pod.session}-sw", "-F", "#{window_name}").stdout.split()
    assert windows == ["sweep"]
    (env_copy,) = (pod.outputs / "_manifests").glob("workflow-*.env")
    assert stat.S_IMODE(env_copy.stat().st_mode) == 0o600
    pod.ok("sweep.stop")
    assert states(wait_sweep(pod)) == {"cpu": "cancelled"}


def test_runs_start_in_csv_order(swept: Pod):  # noqa: F811
    pod = swept
    pod.ok("sweep.start", "--csv", str(write_csv(pod, "zeta,config/train_tiny.py,1,,\nalpha,config/train_tiny.py,2,,\n"
                                                       "mid,config/train_tiny.py,3,,\n")))
    data = wait_sweep(pod)
    assert states(data) == {"zeta": "success", "alpha": "success", "mid": "success"}
    log = (pod.outputs / "_manifests" / f"{data['sweep']['sweep_id']}.log").read_text().splitlines()
    starts = [ln.split("start ", 1)[1].split()[0] for ln in log if " start " in f" {ln}" and "(attempt" in ln]
    assert starts == ["zeta", "alpha", "mid"], log  # not sorted, not reversed: the order of the CSV


def test_a_killed_run_supervisor_leaves_no_process_and_the_final_sync_still_runs(swept: Pod):  # noqa: F811
    """'A killed run supervisor (kill -9): the run is lost; the scheduler ends every process still carrying
    the run's owner mark and makes the final sync.'"""
    pod = swept
    fast = pod.root / "fast"
    pod.configure(RUN_OUT_MODE="local_sync", RUN_OUT_LOCAL_ROOT=str(fast), SYNC_INTERVAL_SECS="60")
    pod.ok("sweep.start", "--csv", str(write_csv(pod, "victim,config/train_tiny.py,1,sleep=300 daemon=300,\n"
                                                       "after,config/train_tiny.py,2,,\n")))
    wait_until(lambda: (fast / "victim" / "rank1.txt").exists() and (fast / "victim" / "args.json").exists(),
               timeout=90, what="both workers to start")
    st = json.loads((pod.outputs / "victim" / "status.json").read_text())
    wait_until(lambda: len(owned_by(st["owner"])) >= 4, timeout=20,
               what="the scan to find torchrun, its two workers and the daemon (positive control)")
    assert not (pod.outputs / "victim" / "args.json").exists()  # not synced yet (SYNC_INTERVAL_SECS=60)
    os.kill(st["pid"], 9)
    data = wait_sweep(pod)
    assert states(data) == {"victim": "lost", "after": "success"}
    assert owned_by(st["owner"]) == []
    assert (pod.outputs / "victim" / "args.json").is_file()  # the scheduler made the final sync


def test_a_rerun_in_local_sync_moves_the_old_local_output_aside(swept: Pod):  # noqa: F811
    pod = swept
    fast = pod.root / "fast"
    pod.configure(RUN_OUT_MODE="local_sync", RUN_OUT_LOCAL_ROOT=str(fast), SYNC_INTERVAL_SECS="60")
    csv = write_csv(pod, "again,config/train_tiny.py,1,,\n")
    pod.ok("sweep.start", "--csv", str(csv))
    assert states(wait_sweep(pod)) == {"again": "success"}
    first_args = (fast / "again" / "args.json").read_text()
    pod.configure(SWEEP_FORCE="1")
    pod.ok("sweep.start", "--csv", str(csv))
    assert states(wait_sweep(pod)) == {"again": "success"}
    (aside,) = [p for p in fast.iterdir() if p.name.startswith("again.previous.")]
    assert (aside / "args.json").read_text() == first_args  # nothing deleted: the old output is kept
    (previous,) = (pod.outputs / "_previous").iterdir()
    assert previous.name.startswith("again.") and (previous / "summary.json").is_file()
    run_files = {p.name for p in (pod.outputs / "again").iterdir()}  # docs/remote-layout.md's run dir
    assert {"command.sh", "spec.json", "stdout.log", "status.json", "summary.json", "sync.log"} <= run_files
