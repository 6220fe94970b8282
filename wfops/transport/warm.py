"""Warm connections, the client side: find (or start) the keeper of a target; the frames scripts travel in
(wfops.transport.connect runs a script through the keeper: KeeperExec, KeeperSession).

A keeper (`python -m wfops.transport.keeper`, see wfops/transport/keeper.py) holds one Fabric connection to one
target open for WF_PERSIST_SECS after its last use, like OpenSSH's ControlPersist. Commands reach it over a
Unix socket in a private directory: `$WFOPS_KEEPER_DIR`, else `$XDG_RUNTIME_DIR/wfops`, else `/tmp/wfops-<uid>`; the
directory must be ours and mode 700 (anything else is refused), and each side checks the other's uid (SO_PEERCRED).

This module never imports paramiko or fabric: a warm command pays for neither. Standard library only.

The socket of a target is named by its identity (`identity`: the configured name, e.g. OPS_DEFAULT_HOST or
the Lium pod); each request carries the fingerprint of everything the connection was made from (address,
user, port, key, host-key pin, ~/.ssh/config). A keeper asked with another fingerprint (the target now
resolves elsewhere) exits, and a new one is started for the new resolution.

Frames, both ways: one type byte, a 4-byte big-endian length, the payload.
client -> keeper: `h` header JSON ({"op": "exec"|"stop"|"ping", "fp", "persist"}), then `i` stdin bytes
keeper -> client: `s` started (the channel is open: from here on a failure is not retried), `o` stdout,
                  `e` stderr, `x` exit code (text), `E` error JSON ({"code", "message", "stale"})
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wfops.errors import EXIT_CONNECT, ConfigError, ConnectError, WfopsError
from wfops.targets.target import Target

DIR_ENV = "WFOPS_KEEPER_DIR"
HEADER = struct.Struct(">cI")
MAX_FRAME = 1 << 20
SPAWN_TIMEOUT_SECS = 120  # the keeper connects within the target's own connect timeout; this is a backstop
FAILURE_FRESH_SECS = 30  # how long what a prestarted keeper could not do stays news for its command
_SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes; longer paths are reached through /proc/self/fd


# ------------------------------------------------------------------ frames

def send_frame(sock: socket.socket, kind: bytes, data: bytes = b"") -> None:
    sock.sendall(HEADER.pack(kind, len(data)) + data if len(data) < 65536 else HEADER.pack(kind, len(data)))
    if len(data) >= 65536:
        sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return None
        got += k
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """(type, payload), or None when the peer closed the socket (at a frame boundary or not)."""
    head = _recv_exact(sock, HEADER.size)
    if head is None:
        return None
    kind, size = HEADER.unpack(head)
    if size == 0:
        return kind, b""
    data = _recv_exact(sock, size)
    return None if data is None else (kind, data)


# ------------------------------------------------------------------ where keepers live

def keeper_dir(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(DIR_ENV):
        return Path(env[DIR_ENV])
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "wfops"
    return Path("/tmp") / f"wfops-{os.getuid()}"


def private_dir(create: bool = True) -> Path:
    """The keeper directory, made mode 700 if missing; refused (one line) unless it is ours and mode 700."""
    path = keeper_dir()
    if create:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the keeper directory {path}: {exc.strerror}") from None
    try:
        st = path.lstat()
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) != 0o700:
        raise ConfigError(f"the keeper directory {path} must be a directory of yours with mode 700 (it is "
                          f"mode {stat.S_IMODE(st.st_mode):o}, owner uid {st.st_uid}); refused to use it. "
                          "Remove it, or set WF_PERSIST_SECS=0")
    return path


def identity(target: Target) -> str:
    """What names a target's keeper: the configured name, not the address it resolves to."""
    name = target.pod_id or target.label
    return hashlib.sha256(f"{target.kind}\0{name}\0{target.key_filename or ''}".encode()).hexdigest()[:16]


def fingerprint(target: Target) -> str:
    """Everything the connection is made from; a keeper made from another resolution is stale."""
    fields = asdict(target)
    fields.pop("notes", None)
    fields.pop("name", None)  # the configured name of the pod: the same address is the same connection
    ssh_config = b""
    if target.use_ssh_config:
        try:
            ssh_config = (Path.home() / ".ssh" / "config").read_bytes()
        except OSError:
            pass
    blob = json.dumps(fields, sort_keys=True).encode() + b"\0" + hashlib.sha256(ssh_config).digest()
    return hashlib.sha256(blob).hexdigest()[:32]


def socket_path(target: Target, directory: Path | None = None) -> Path:
    return (directory or private_dir()) / f"{identity(target)}.sock"


@contextmanager
def _address(path: Path) -> Iterator[str]:
    """An address for bind/connect: the path itself, or /proc/self/fd/N/NAME when the path is too long."""
    if len(os.fsencode(path)) < _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def peer_uid(sock: socket.socket) -> int:
    return _peer(sock)[1]


def _peer(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the other end (SO_PEERCRED: a keeper's, as of its listen())."""
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))


def bind_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with _address(path) as addr:
        sock.bind(addr)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


def dial(path: Path) -> socket.socket | None:
    """A connection to the keeper at `path`, or None when no keeper answers there (no socket, or a dead one)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _address(path) as addr:
            sock.connect(addr)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except OSError as exc:
        sock.close()
        raise ConnectError(f"cannot reach the connection keeper at {path}: {exc.strerror or exc}") from None
    if peer_uid(sock) != os.getuid():
        sock.close()
        raise ConnectError(f"the connection keeper at {path} runs as another user; refused")
    return sock


# ------------------------------------------------------------------ starting a keeper

@contextmanager
def _spawn_lock(path: Path) -> Iterator[None]:
    """One command at a time starts a keeper for a target; the others wait and then use it."""
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _spawn(target: Target, path: Path, persist: float) -> None:
    """Start a keeper for `target` at `path` and wait until it is connected (or says why it could not)."""
    if path.exists() or path.is_symlink():
        path.unlink()
    proc = _popen(target, path, persist)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], SPAWN_TIMEOUT_SECS + target.connect_timeout)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if not ready:
        proc.kill()
    try:
        answer = json.loads(line)
    except ValueError:
        answer = {"code": 4, "message": f"the connection keeper for {target.label} did not start"}
    if not answer.get("ok"):
        proc.wait()
        code = int(answer.get("code") or EXIT_CONNECT)
        raise (ConnectError if code == EXIT_CONNECT else WfopsError)(str(answer.get("message")), code)


def prestart(target: Target, persist: float) -> None:
    """Start a keeper for `target` unless one answers, without waiting for it: the keeper inherits the spawn lock
    and lets go of it once it listens (or has failed), so the command's own `connect` waits for it there."""
    path = socket_path(target)
    sock = dial(path)
    if sock is not None:
        sock.close()
        return
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another command is starting it right now
            return
        if path.exists() or path.is_symlink():
            path.unlink()
        proc = _popen(target, path, persist, lock_fd=fd)
        if proc.stdout is not None:  # (always: a pipe)
            proc.stdout.close()
    finally:
        os.close(fd)


def _popen(target: Target, path: Path, persist: float, lock_fd: int | None = None) -> subprocess.Popen[bytes]:
    order = json.dumps({"target": asdict(target), "fp": fingerprint(target), "persist": persist, "lock_fd": lock_fd})
    proc = subprocess.Popen([sys.executable, "-m", "wfops.transport.keeper", str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                            close_fds=True, pass_fds=() if lock_fd is None else (lock_fd,))
    assert proc.stdin is not None
    proc.stdin.write(order.encode())
    proc.stdin.close()
    return proc


def write_failure(path: Path, fp: str, answer: dict[str, Any]) -> None:
    """What a keeper started ahead of its command (prestart) could not do, for that command to report."""
    tmp = path.with_suffix(f".err.{os.getpid()}")
    tmp.write_text(json.dumps({"fp": fp, "answer": answer, "at": time.time()}))
    os.replace(tmp, path.with_suffix(".err"))


def _take_failure(path: Path, fp: str) -> None:
    """Raise the failure a prestarted keeper left for this very resolution a moment ago, if any."""
    err = path.with_suffix(".err")
    try:
        data = json.loads(err.read_text())
        err.unlink()
    except (OSError, ValueError):
        return
    if data.get("fp") == fp and time.time() - float(data.get("at") or 0) < FAILURE_FRESH_SECS:
        answer = data.get("answer") or {}
        code = int(answer.get("code") or EXIT_CONNECT)
        raise (ConnectError if code == EXIT_CONNECT else WfopsError)(str(answer.get("message")), code)


def connect(target: Target, persist: float) -> socket.socket:
    """A connection to a live keeper of `target`, starting one if none answers."""
    path = socket_path(target)
    sock = dial(path)
    if sock is not None:
        return sock
    with _spawn_lock(path):
        sock = dial(path)  # another command may have started it while we waited for the lock
        if sock is None:
            _take_failure(path, fingerprint(target))
            _spawn(target, path, persist)
            sock = dial(path)
    if sock is None:
        raise ConnectError(f"the connection keeper for {target.label} did not answer")
    return sock


def stop(path: Path) -> bool:
    """Ask the keeper at `path` to close its connection and exit; False when none was there."""
    sock = dial(path)
    if sock is None:
        return False
    with sock:
        send_frame(sock, b"h", json.dumps({"op": "stop"}).encode())
        while recv_frame(sock) is not None:
            pass
    return True


def stop_all() -> list[Path]:
    """Stop every keeper of this user; returns the sockets that answered."""
    directory = private_dir(create=False)
    if not directory.is_dir():
        return []
    return [p for p in sorted(directory.glob("*.sock")) if stop(p)]


def end_frozen(sock: socket.socket, path: Path) -> None:
    """A keeper that does not even open a channel in time (stopped, hung): end it and free its socket, so that the
    retry starts another. Only a process of ours whose command line is a wfops keeper for this very socket."""
    pid = _peer(sock)[0]
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"wfops.transport.keeper" in argv and os.fsencode(path) in argv:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
    if path.exists() or path.is_symlink():
        path.unlink()
