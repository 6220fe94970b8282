"""Warm connections, the client side: find (or start) the keeper of a target; the frames scripts travel in are
wfops.transport.frames (wfops.transport.connect runs a script through the keeper: KeeperExec, KeeperSession).

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
client -> keeper: `h` header JSON ({"op": "exec"|"stop"|"ping", "fp", "persist", optional "serve":
                  wfops.transport.session.ServeOrder}),
                  then `i` stdin bytes
keeper -> client: `s` started (the channel is open: from here on a failure is not retried), `K` the pod's kept
                  agent answers (its `o`, `e`, `x` follow: wfops.transport.podserver), `o` stdout,
                  `e` stderr, `x` exit code (text), `E` error JSON ({"code", "message", "stale", "unreached": a served
                  read was lost and the pod could not be reached after it: nothing of it was shown})
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import socket
import stat
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wfops.errors import ConfigError, ConnectError, WfopsError
from wfops.targets.target import Target
from wfops.transport import keeperdir
from wfops.transport.frames import recv_frame, send_frame

DIR_ENV = keeperdir.DIR_ENV
SPAWN_TIMEOUT_SECS = 120  # the keeper connects within the target's own connect timeout; this is a backstop
FAILURE_FRESH_SECS = 30  # how long what a prestarted keeper could not do stays news for its command
_SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes; longer paths are reached through /proc/self/fd


# ------------------------------------------------------------------ where keepers live

def keeper_dir(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    return Path(keeperdir.keeper_dir(environ))


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

HUB_ENV = ("HOME", "XDG_STATE_HOME", "SSH_AUTH_SOCK", "WFOPS_SSH_KEEPALIVE_SECS")  # what a connection reads here
HUB_ANSWER_SECS = 3  # how long a hub that answers at all takes to say whether it dropped a target
TAKE_SECS = 10  # how long a keeper has to take an order (add, stop) before it is ended as stopped as a whole:
# generous, since ending a live one cuts every pod's connection (a loaded machine is not a frozen process)


def hub_path(directory: Path | None = None) -> Path:
    """The socket of the keeper process (wfops.transport.hub) that holds the targets of commands started with this
    environment: a connection reads HOME (~/.ssh/config, known_hosts), the host-key pins, the agent and the
    keepalive interval from the environment of the process that makes it, so another environment gets another
    keeper process."""
    env = "\0".join(f"{k}={os.environ.get(k, '')}" for k in HUB_ENV)
    return (directory or private_dir()) / f"hub-{hashlib.sha256(env.encode()).hexdigest()[:12]}.hub"


def write_failure(path: Path, fp: str, answer: dict[str, Any]) -> None:
    """What a keeper started ahead of its command (prestart) could not do, for that command to report: nothing when
    `answer` is no failure, or is an add a `wfops disconnect` stopped (the command's own connect starts another)."""
    if answer.get("ok", True) or answer.get("stopped"):
        return
    tmp = path.with_suffix(f".err.{os.getpid()}")
    tmp.write_text(json.dumps({"fp": fp, "answer": answer, "at": time.time()}))
    os.replace(tmp, path.with_suffix(".err"))


def stop(path: Path) -> dict[str, Any] | None:
    """Ask the keeper at `path` to close its connection and exit; None when none was there, else its answer ({} but
    for a keeper process's: {"adding": N}, the adds it cancelled). A keeper that does not answer within TAKE_SECS
    (its process stopped: the socket still accepts into its backlog) is ended as a frozen one (end_frozen)."""
    sock = dial(path)
    if sock is None:
        return None
    answer: Any = {}
    with sock:
        try:
            sock.settimeout(TAKE_SECS)
            send_frame(sock, b"h", json.dumps({"op": "stop"}).encode())
            while (frame := recv_frame(sock)) is not None:
                if frame[0] == b"x":
                    answer = _json(frame[1])
        except TimeoutError:
            end_frozen(sock, path)
        except OSError:  # it went away while it answered (it was exiting): it is stopped all the same
            pass
    return answer if isinstance(answer, dict) else {}


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def stop_all() -> int:
    """Stop every keeper of this user, those still being made too; how many targets were closed."""
    directory = private_dir(create=False)
    if not directory.is_dir():
        return 0
    _wait_for_starting(directory)
    closed = sum(stop(p) is not None for p in sorted(directory.glob("*.sock")))
    for hub in sorted(directory.glob("*.hub")):  # and the processes themselves, with what they were still adding
        adding = (stop(hub) or {}).get("adding")
        closed += adding if isinstance(adding, int) else 0
    return closed


def stop_target(path: Path) -> bool:
    """Stop the keeper of the target at `path`, or its add still being made (a command started it ahead of itself:
    wfops.prewarm) in whichever keeper process of this directory holds it; False when there was neither."""
    _wait_for_starting(path.parent)
    closed = stop(path) is not None
    for hub in sorted(path.parent.glob("*.hub")):
        answer = _ask_hub(hub, {"op": "drop", "path": str(path), "adding": True}, end_if_frozen=True)
        closed = closed or bool(answer and answer.get("ok"))
    return closed


def _wait_for_starting(directory: Path) -> None:
    """Until no keeper process of `directory` is starting: one holds its hub's spawn lock (`hub-*.lock`) until it
    listens. At most TAKE_SECS in all."""
    deadline = time.monotonic() + TAKE_SECS
    for lock in sorted(directory.glob("hub-*.lock")):
        try:  # O_NONBLOCK: a FIFO put there does not block the open
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            while stat.S_ISREG(os.fstat(fd).st_mode):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return
                    time.sleep(0.02)
        finally:
            os.close(fd)


def end_frozen(sock: socket.socket, path: Path) -> None:
    """A keeper that does not even open a channel in time (stopped, hung): end it and free its socket, so that the
    retry starts another. The keeper process is asked to drop that one target (its other targets go on); a process
    that does not answer within HUB_ANSWER_SECS is frozen as a whole and is ended: only a process of ours whose
    command line is a wfops keeper of this very directory."""
    pid = _peer(sock)[0]
    if _answering(path) != pid:
        end_process(pid, path.parent)
    if path.exists() or path.is_symlink():
        path.unlink()


def end_process(pid: int, directory: Path) -> None:
    """End the keeper process `pid` (frozen as a whole): only a process of ours whose command line is a wfops
    keeper of this very directory."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        mine = os.fsencode(directory) + b"/"
        if b"wfops.transport.keeper" in argv and any(a.startswith(mine) for a in argv):
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def peer_pid(sock: socket.socket) -> int:
    return _peer(sock)[0]


def _answering(path: Path) -> int | None:
    """The pid of the keeper process that answered an order to drop the target served at `path` (and dropped it,
    if it held it), or None when none answered within HUB_ANSWER_SECS."""
    answer = _ask_hub(hub_path(path.parent), {"op": "drop", "path": str(path)}, end_if_frozen=False)
    pid = None if answer is None else answer.get("pid")
    return pid if isinstance(pid, int) else None


def _ask_hub(hub: Path, header: dict[str, Any], end_if_frozen: bool) -> dict[str, Any] | None:
    """A keeper process's answer to `header`; None when none answers there, or not within HUB_ANSWER_SECS; but with
    `end_if_frozen`, such a process is ended (frozen as a whole, it would serve what it holds once it runs again) and
    the answer is {"ok": True, "ended": True}."""
    try:
        sock = dial(hub)
    except WfopsError:
        return None
    if sock is None:
        return None
    with sock:
        try:
            sock.settimeout(HUB_ANSWER_SECS)
            send_frame(sock, b"h", json.dumps(header).encode())
            frame = recv_frame(sock)
        except TimeoutError:
            if not end_if_frozen:
                return None
            end_process(peer_pid(sock), hub.parent)
            return {"ok": True, "ended": True}  # what it held or was adding is closed with it
        except OSError:
            return None
    answer = _json(frame[1]) if frame is not None and frame[0] == b"x" else None
    return answer if isinstance(answer, dict) else None
