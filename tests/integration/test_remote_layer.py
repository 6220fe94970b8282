"""The remote layer: one SSH connection per command (counted in sshd's log), one exec for read-only
commands, and one clear line with a documented exit code for every connection failure."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import Pod
from tests.realparts import free_port


def _no_traceback(res) -> None:
    assert "Traceback" not in res.err and "Traceback" not in res.out


@pytest.mark.parametrize("args,execs", [
    (("fsm.status",), 1),
    (("fsm.reset", "POD_READY"), 1),
    (("task.list",), 1),
    (("task.run", "--id", "cnt", "--cmd", "true"), 1),
    (("task.status", "--id", "cnt"), 1),
    (("task.wait", "--id", "cnt"), 1),
])
def test_one_connection_and_one_exec_per_command(ssh_pod: Pod, args, execs):
    if args[0] in ("task.status", "task.wait"):
        ssh_pod.ok("task.run", "--id", "cnt", "--cmd", "true")
    res, conns, n_exec = ssh_pod.count(*args)
    assert res.rc == 0, res.err
    assert (conns, n_exec) == (1, execs)


def test_unreachable_host_is_one_line_exit_4(ssh_pod: Pod):
    port = free_port()
    ssh_pod.configure(OPS_DEFAULT_HOST=f"root@127.0.0.1:{port}", SSH_CONNECT_TIMEOUT="3")
    res = ssh_pod.wf("fsm.status")
    assert res.rc == 4
    assert res.err.strip() == f"wfops: cannot connect to root@127.0.0.1:{port}: connection refused"
    _no_traceback(res)


@pytest.mark.parametrize("kind", ["ssh", "local"])
def test_an_outputs_dir_that_cannot_be_made_is_one_line_with_the_reason(kind: str, request):
    """OPS_REMOTE_OUTPUTS_DIR below a regular file: the pod's raw `mkdir: cannot create directory ...` came before
    wfops' own line (two lines); now only wfops' line, with mkdir's reason in it, exit 6."""
    pod: Pod = request.getfixturevalue(f"{kind}_pod")
    blocker = pod.root / "afile"
    blocker.write_text("x")
    pod.configure(OPS_REMOTE_OUTPUTS_DIR=str(blocker / "outputs"))
    res = pod.wf("fsm.status")
    assert (res.rc, res.err) == (6, f"wfops: cannot create {blocker}/outputs/_control (Not a directory); check "
                                    "OPS_REMOTE_OUTPUTS_DIR\n"), (res.rc, res.err)
    _no_traceback(res)


def test_an_ssh_connect_timeout_of_zero_is_refused_at_the_config_check(ssh_pod: Pod):
    """SSH_CONNECT_TIMEOUT=0 passed the check, then every connection to a pod that answers failed `cannot connect
    to ...: Operation now in progress`, exit 4: a 0 timeout makes the socket non-blocking."""
    ssh_pod.configure(SSH_CONNECT_TIMEOUT="0")
    res = ssh_pod.wf("fsm.status")
    assert res.rc == 2 and len(res.err.strip().splitlines()) == 1, (res.rc, res.err)
    assert res.err.startswith("wfops: config: SSH_CONNECT_TIMEOUT='0' is not valid"), res.err
    _no_traceback(res)


@pytest.mark.parametrize("persist", ["0", "300"])
def test_a_host_that_takes_the_connection_and_never_answers_is_one_line_that_says_so(ssh_pod: Pod, persist: str):
    """Found by scripts/fault_matrix.py (issue 23): a pod whose sshd is stopped (SIGSTOP: the kernel still
    completes the TCP handshake) ended `SSH to ...: No existing session` (paramiko's words, after its banner
    read timed out), through a warm keeper and without one. A listener that never accepts is the same."""
    port, res = _status_through_a_listener(ssh_pod, persist, None)
    assert res.rc == 4, res.err
    assert res.err.strip() == (f"wfops: root@127.0.0.1:{port} took the connection but did not answer within 2s "
                               "(no SSH banner: the pod or the network is frozen)")
    _no_traceback(res)


def _status_through_a_listener(ssh_pod: Pod, persist: str, how: str | None):
    """(port, fsm.status's result) against a loopback listener in place of sshd (SSH_CONNECT_TIMEOUT=2): one that never
    accepts (`how` None: the kernel completes the handshake), or one that accepts and closes each as `how` says."""
    import socket
    import threading

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def close_each() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                _closing(conn, str(how))

        if how is not None:
            threading.Thread(target=close_each, daemon=True).start()
        ssh_pod.configure(OPS_DEFAULT_HOST=f"root@127.0.0.1:{port}", SSH_CONNECT_TIMEOUT="2",
                          WF_PERSIST_SECS=persist)
        return port, ssh_pod.wf("fsm.status")


def _closing(conn, how: str) -> None:
    """How a server that is no SSH server (or an sshd turning a connection away) ends one."""
    import socket
    import struct
    import time

    if how == "reset":  # a firewall's RST: SO_LINGER 0
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif how == "after a while":  # past half of SSH_CONNECT_TIMEOUT, with the client's banner unread: a reset
        time.sleep(1.5)
    elif how == "http":
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    conn.close()


@pytest.mark.parametrize("how", ["at once", "reset", "after a while", "http"])
@pytest.mark.parametrize("persist", ["0", "300"])
def test_a_host_that_closes_the_connection_is_one_line_that_says_so(ssh_pod: Pod, persist: str, how: str):
    """A port whose server accepts and closes (not an SSH server; sshd over its MaxStartups; a firewall's reset) is not
    a frozen pod: paramiko raises the same error as for a banner that never came (or the raw reset, or a bare
    EOFError); what it met tells them apart, however soon it came."""
    port, res = _status_through_a_listener(ssh_pod, persist, how)
    assert res.rc == 4, res.err
    assert res.err.strip() == (f"wfops: root@127.0.0.1:{port} took the connection and closed it (not an SSH server "
                               "on that port, or sshd turned it away: its MaxStartups, a firewall)")
    _no_traceback(res)


def test_unknown_host_name_is_one_line_exit_4(ssh_pod: Pod):
    ssh_pod.configure(OPS_DEFAULT_HOST="root@no-such-host.invalid:22")
    res = ssh_pod.wf("task.list")
    assert res.rc == 4 and res.err.strip().startswith("wfops: cannot resolve host 'no-such-host.invalid'")
    _no_traceback(res)


def test_authentication_failure_is_one_line_exit_4(ssh_pod: Pod, tmp_path):
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    ssh_pod.configure(SSH_KEY_PATH=str(wrong))
    res = ssh_pod.wf("fsm.status")
    assert res.rc == 4
    assert res.err.strip().startswith(f"wfops: authentication failed for {ssh_pod.sshd.user}@127.0.0.1")
    _no_traceback(res)
    ssh_pod.configure(SSH_KEY_PATH=str(tmp_path / "missing_key"))
    res = ssh_pod.wf("fsm.status")
    assert res.rc == 4 and res.err.strip() == f"wfops: SSH key not found: {tmp_path / 'missing_key'}"


def test_host_keys_strict_mode_and_changed_key(ssh_pod: Pod):
    sshd = ssh_pod.sshd
    ssh_pod.configure(SSH_STRICT_HOST_KEYS="1")
    res = ssh_pod.wf("fsm.status")
    assert res.rc == 4 and "not found in known_hosts" in res.err, res.err
    known = ssh_pod.home / ".ssh" / "known_hosts"
    known.parent.mkdir()
    key_type, key_b64 = sshd.host_key_pub.read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{sshd.port} {key_type} {key_b64}\n")
    ssh_pod.ok("fsm.status")
    other = ssh_pod.root / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    other_type, other_b64 = other.with_suffix(".pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{sshd.port} {other_type} {other_b64}\n")
    ssh_pod.configure(SSH_STRICT_HOST_KEYS="0")  # even when new hosts are accepted, a changed key is not
    res = ssh_pod.wf("fsm.status")
    assert res.rc == 4 and "changed: it is SHA256:" in res.err and "; refused, nothing ran" in res.err
    _no_traceback(res)


def test_bad_config_fails_before_connecting(ssh_pod: Pod):
    ssh_pod.configure(RUN_TIMEOUT_SECS="abc")
    res, conns, _ = ssh_pod.count("fsm.status")
    assert res.rc == 2 and conns == 0
    line = ssh_pod.config_path.read_text().splitlines().index("RUN_TIMEOUT_SECS=abc") + 1
    assert res.err.strip() == (f"wfops: config: RUN_TIMEOUT_SECS='abc' is not valid (workflow.env line {line}): "
                               "expected a whole number >= 0")
    assert not ssh_pod.outputs.exists()


def test_missing_target_names_both_keys(local_pod: Pod):
    local_pod.configure(OPS_DEFAULT_HOST="")
    res = local_pod.wf("fsm.status")
    assert res.rc == 2
    assert "set LIUM_TARGET" in res.err and "OPS_DEFAULT_HOST" in res.err
    assert len(res.err.strip().splitlines()) == 1


def test_missing_config_file(local_pod: Pod, tmp_path):
    res = local_pod.wf("fsm.status", env={"WORKFLOW_CONFIG": str(tmp_path / "absent.env")})
    assert res.rc == 2 and res.err.strip() == f"wfops: config file not found: {tmp_path / 'absent.env'} " \
                                              "(from WORKFLOW_CONFIG)"


def test_config_option_overrides_the_environment(local_pod: Pod, tmp_path):
    local_pod.write_config()
    alt = tmp_path / "alt.env"
    alt.write_text(local_pod.config_path.read_text() + "WANDB_PROJECT=from-alt\n")
    res = local_pod.ok("config.show", "--json", "--config", str(alt)).json()
    assert res["config_file"] == str(alt) and res["values"]["WANDB_PROJECT"] == "from-alt"
    assert res["target"] == {"kind": "local", "label": "local", "from": "OPS_DEFAULT_HOST", "notes": []}


def test_config_show_redacts_secrets(local_pod: Pod):
    local_pod.configure(WANDB_API_KEY="k-1234567890", EXTRA_ENV_KEYS="DB_PASSWORD", DB_PASSWORD="pw-secret")
    for fmt in ((), ("--json",), ("--yaml",)):
        res = local_pod.ok("config.show", *fmt)
        assert "k-1234567890" not in res.out + res.err and "pw-secret" not in res.out + res.err
        assert "********" in res.out
