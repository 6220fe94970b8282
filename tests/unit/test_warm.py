"""The client side of warm connections without SSH: the private directory, long socket paths, the identity and
fingerprint of a target. Real directories and Unix sockets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wfops.errors import ConfigError, ConnectError
from wfops.targets.target import Target
from wfops.transport import frames, warm


def ssh(**kw) -> Target:
    return Target(**{"kind": "ssh", "label": "root@127.0.0.1:2222", "host": "127.0.0.1", "user": "root",
                     "port": 2222, "key_filename": "/k", **kw})


def test_the_private_directory_is_made_mode_700_and_anything_else_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(warm.DIR_ENV, str(tmp_path / "k"))
    made = warm.private_dir()
    assert made == tmp_path / "k" and (made.stat().st_mode & 0o777) == 0o700
    made.chmod(0o755)
    with pytest.raises(ConfigError, match="must be a directory of yours with mode 700 \\(it is mode 755"):
        warm.private_dir()
    made.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    made.symlink_to(tmp_path / "elsewhere")  # a link is not the directory itself
    with pytest.raises(ConfigError, match="must be a directory of yours"):
        warm.private_dir()


def test_a_socket_path_too_long_for_sockaddr_un_still_works(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "0123456789abcdef.sock"
    assert len(str(path)) > 108
    server = warm.bind_socket(path)
    try:
        client = warm.dial(path)
        assert client is not None
        conn, _ = server.accept()
        assert warm.peer_uid(conn) == os.getuid()
        frames.send_frame(client, b"h", b"x" * 70_000)  # a frame bigger than one send
        assert frames.recv_frame(conn) == (b"h", b"x" * 70_000)
        client.close()
        assert frames.recv_frame(conn) is None
        conn.close()
    finally:
        server.close()
    assert warm.dial(path) is None  # nobody listens: a dead keeper's socket reads as "none"


def test_identity_is_the_name_and_the_fingerprint_everything_else(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    a = ssh()
    moved = ssh(port=2223)
    assert warm.identity(a) == warm.identity(moved) and warm.fingerprint(a) != warm.fingerprint(moved)
    assert warm.identity(ssh(key_filename="/other")) != warm.identity(a)
    before = warm.fingerprint(a)
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host pod\n  HostName 10.0.0.1\n")
    assert warm.fingerprint(a) != before  # an alias may now resolve elsewhere
    assert warm.fingerprint(ssh(use_ssh_config=False)) == warm.fingerprint(ssh(use_ssh_config=False))
    lium = Target(kind="lium", label="lium pod a (u1)", host="10.0.0.2", port=22, pod_id="u1")
    assert warm.identity(lium) == warm.identity(Target(kind="lium", label="lium pod a (u1)", host="10.0.0.3",
                                                       port=2200, pod_id="u1"))


def test_a_keeper_of_another_user_is_refused_by_the_client(tmp_path):
    """A socket in the keeper directory whose listener runs as another user (euid nobody; fsuid 0 lets it into the
    directory): the client refuses to talk to it, with one line."""
    path = tmp_path / "foreign.sock"
    code = ("import ctypes, os, socket, sys\n"
            "os.setresuid(0, 65534, 0)\n"
            "ctypes.CDLL(None).setfsuid(0)\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.bind(sys.argv[1])\n"
            "s.listen(1)\n"
            "print('ready', flush=True)\n"
            "c, _ = s.accept()\n"
            "sys.stdin.read()\n")
    listener = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
    try:
        assert listener.stdout.readline().strip() == "ready"
        with pytest.raises(ConnectError, match=f"the connection keeper at {path} runs as another user; refused"):
            warm.dial(path)
    finally:
        listener.stdin.close()
        listener.wait(timeout=30)


def test_the_keeper_process_is_one_per_environment_a_connection_reads(tmp_path, monkeypatch):
    """One keeper process holds every target (wfops.transport.hub); a connection made in it reads HOME, the pins'
    directory, the agent and the keepalive interval from its environment, so another value is another process."""
    for key in warm.HUB_ENV:
        monkeypatch.setenv(key, "a")
    first = warm.hub_path(tmp_path)
    assert first.parent == tmp_path and first.suffix == ".hub" and warm.hub_path(tmp_path) == first
    monkeypatch.setenv("WFOPS_VERBOSE", "1")  # not read by a connection: the same process
    assert warm.hub_path(tmp_path) == first
    for key in warm.HUB_ENV:
        monkeypatch.setenv(key, "b")
        assert warm.hub_path(tmp_path) != first, key
        monkeypatch.setenv(key, "a")
    assert not list(tmp_path.glob("*.sock"))  # `wfops disconnect --all` counts targets (*.sock), not the process


def test_a_target_that_does_not_answer_is_dropped_by_its_answering_keeper_process(tmp_path):
    """end_frozen: a target's socket that accepts and says nothing, in a keeper process that answers its own
    socket: that one target is dropped (its socket removed, the others go on); the process is not ended."""
    import threading

    from wfops.transport.hub import Hub
    from wfops.transport.served import Keeper

    hub = Hub(warm.hub_path(tmp_path))
    hub.claim(None)
    runner = threading.Thread(target=hub.run, daemon=True)
    runner.start()
    frozen_path, other_path = tmp_path / "a.sock", tmp_path / "b.sock"
    frozen = Keeper(ssh(), "fp", 60, frozen_path, on_exit=hub._gone)
    other = Keeper(ssh(label="other"), "fp", 60, other_path, on_exit=hub._gone)
    servers = [warm.bind_socket(frozen_path), warm.bind_socket(other_path)]  # nobody accepts: silent
    frozen.inode, other.inode = frozen_path.stat().st_ino, other_path.stat().st_ino
    hub.keepers |= {frozen, other}
    hub.added()
    sock = warm.dial(frozen_path)
    assert sock is not None
    warm.end_frozen(sock, frozen_path)
    assert frozen.stopping.is_set() and not frozen_path.exists()
    assert not other.stopping.is_set() and other_path.exists()
    for keeper in (frozen, other):
        keeper.stop()
        hub._gone(keeper)
    runner.join(timeout=10)
    assert not runner.is_alive() and not hub.path.exists()  # no target left: the process's socket goes too
    sock.close()
    for server in servers:
        server.close()
