"""Starting the keeper process, the client side: ask the directory's keeper process (wfops.transport.hub) to add
a target, or start that process with the target as its first order (wfops.transport.keeper's main). Standard
library only, like wfops.transport.warm. `connect` (a live keeper of a target, started if none answers) and
`prestart` (start it without waiting: wfops.prewarm) are what commands call.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wfops.errors import EXIT_CONNECT, ConnectError, WfopsError
from wfops.targets.target import Target
from wfops.transport.frames import recv_frame, send_frame
from wfops.transport.warm import (
    FAILURE_FRESH_SECS,
    HUB_ANSWER_SECS,
    SPAWN_TIMEOUT_SECS,
    TAKE_SECS,
    dial,
    end_process,
    fingerprint,
    hub_path,
    peer_pid,
    socket_path,
)


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
    """Have the keeper process serve `target` at `path` (starting that process if none answers) and wait until it
    is connected (or says why it could not)."""
    for _attempt in range(2):  # a `wfops disconnect` that stopped it while it connected: once more
        if path.exists() or path.is_symlink():
            path.unlink()
        answer = launch(target, path, persist, None, wait=True)
        if not answer.get("stopped"):
            break
    if not answer.get("ok"):
        code = int(answer.get("code") or EXIT_CONNECT)
        raise (ConnectError if code == EXIT_CONNECT else WfopsError)(str(answer.get("message")), code)


def prestart(target: Target, persist: float) -> None:
    """Start serving `target` unless its keeper answers, without waiting for it: the keeper process gets the spawn
    lock and lets go of it once the target listens (or has failed), so the command's own `connect` waits for it
    there."""
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
        launch(target, path, persist, fd, wait=False)
    finally:
        os.close(fd)  # the keeper process holds the lock through its own copy of the descriptor


def _order(target: Target, path: Path, persist: float) -> dict[str, Any]:
    """What the keeper process connects `target` from. Its files as this command sees them: the process may have
    been started by a command in another directory, so a relative key or pin path is made absolute here."""
    fields = asdict(target)
    for name in ("key_filename", "known_hosts"):
        if fields.get(name):
            fields[name] = os.path.abspath(fields[name])
    return {"target": fields, "fp": fingerprint(target), "persist": persist, "path": str(path)}


def launch(target: Target, path: Path, persist: float, lock_fd: int | None, wait: bool) -> dict[str, Any]:
    """Ask the directory's keeper process to add `target` (starting the process if none answers); its answer when
    `wait`, else {} at once. A hub that goes away before it took the order (it was exiting) is asked again."""
    order = _order(target, path, persist)
    hub = hub_path(path.parent)
    for _attempt in range(3):
        sock = dial(hub)
        if sock is None:
            proc, sock = _start_hub(order, hub, lock_fd)
            if proc is not None:
                return _started(proc, target, wait)
        answer = _add(sock, order, lock_fd, wait) if sock is not None else None
        if answer is not None:
            return answer
    return {"ok": False, "code": EXIT_CONNECT, "message": f"the connection keeper for {target.label} kept going away"}


def _start_hub(order: dict[str, Any], hub: Path,
               lock_fd: int | None) -> tuple[subprocess.Popen[bytes] | None, socket.socket | None]:
    """(the keeper process started with `order`, None), or (None, a hub that another command started meanwhile):
    one command at a time starts the process; it holds the hub's lock until it listens."""
    hub_fd = os.open(hub.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(hub_fd, fcntl.LOCK_EX)
        sock = dial(hub)
        return (None, sock) if sock is not None else (_popen(order, hub, lock_fd, hub_fd), None)
    finally:
        os.close(hub_fd)  # the new process holds the lock through its own copy of the descriptor


def _add(sock: socket.socket, order: dict[str, Any], lock_fd: int | None, wait: bool) -> dict[str, Any] | None:
    """The hub's answer to an order (`{}` when not waiting for it); None when it went away first, or did not take
    the order within TAKE_SECS (a process stopped as a whole still accepts into its backlog: it is ended)."""
    with sock:
        try:
            sock.settimeout(TAKE_SECS)
            send_frame(sock, b"h", json.dumps({"op": "add", "order": order, "lock": lock_fd is not None}).encode())
            if lock_fd is not None:
                socket.send_fds(sock, [b"F"], [lock_fd])
            frame = recv_frame(sock)
            if frame is not None and frame[0] == b"a":
                if not wait:
                    return {}
                sock.settimeout(SPAWN_TIMEOUT_SECS + float(order["target"].get("connect_timeout") or 0))
                frame = recv_frame(sock)
        except TimeoutError:
            _end_hub(sock, Path(order["path"]).parent)
            return None
        except OSError:
            return None
    if frame is None or frame[0] not in (b"x", b"E"):
        return None
    answer: dict[str, Any] = json.loads(frame[1])
    return answer


def _end_hub(sock: socket.socket, directory: Path) -> None:
    """End the keeper process behind `sock` (it took no order in time) and wait until its socket no longer
    answers as that process, so that the next try starts another."""
    pid = peer_pid(sock)
    end_process(pid, directory)
    hub = hub_path(directory)
    deadline = time.monotonic() + HUB_ANSWER_SECS
    while time.monotonic() < deadline:
        try:
            other = dial(hub)
        except WfopsError:
            return
        if other is None:
            return
        with other:
            if peer_pid(other) != pid:
                return
        time.sleep(0.05)


def _started(proc: subprocess.Popen[bytes], target: Target, wait: bool) -> dict[str, Any]:
    """The first answer of a keeper process just started (or {} when nobody waits for it)."""
    assert proc.stdout is not None
    if not wait:
        proc.stdout.close()
        return {}
    ready, _, _ = select.select([proc.stdout], [], [], SPAWN_TIMEOUT_SECS + target.connect_timeout)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if not ready:
        proc.kill()
    try:
        answer: dict[str, Any] = json.loads(line)
    except ValueError:
        answer = {"code": EXIT_CONNECT, "message": f"the connection keeper for {target.label} did not start"}
    if not answer.get("ok"):  # reaped if it exited (its only target failed); one that serves others goes on
        proc.poll()
    return answer


def _popen(order: dict[str, Any], hub: Path, lock_fd: int | None, hub_fd: int) -> subprocess.Popen[bytes]:
    data = json.dumps(dict(order, lock_fd=lock_fd, hub_lock_fd=hub_fd))
    fds = (hub_fd,) if lock_fd is None else (hub_fd, lock_fd)
    proc = subprocess.Popen([sys.executable, "-m", "wfops.transport.keeper", str(hub)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                            close_fds=True, pass_fds=fds)
    assert proc.stdin is not None
    proc.stdin.write(data.encode())
    proc.stdin.close()
    return proc


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
