"""The keeper process's targets: one process per keeper directory and environment holds every warm target
(wfops.transport.keeper).

The process claims its hub socket (warm.hub_path; mode 600) unless another process answers there, and serves on
it, for processes of our uid only:
  `h {"op": "add", "order": {...}, "lock": bool}` (+ the target's spawn-lock fd when "lock"): connect the target,
      bind its socket, serve it; answered `a` at once (the order is taken: a client that gets no `a` within
      warm.TAKE_SECS ends the process as frozen), then `x` with the JSON answer ({"ok": true} or
      {"ok": false, code, message});
      with a lock fd (wfops.prewarm's start ahead of the command), a failure is also written for the command
      (warm.write_failure) and the fd is closed once the target listens or has failed;
  `h {"op": "drop", "path": P}`: end the target served at P (a client found it frozen); `x` "1" or "0"; with
      `"adding": true` (`wfops disconnect`) also a target at P still being added;
  `h {"op": "stop"}`: end every target, those still being added too (the process exits).
An add whose target is stopped while it connects closes what it made and answers `{"ok": false, "stopped": true}`:
no keeper appears after the `wfops disconnect` that stopped it, and no failure is written for a command (its own
connect starts another).
Each target is a `Keeper` with its own connection, socket, threads and idle clock: a target whose pod died or
froze stalls only its own commands. The process exits when it holds no target and none is being added.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from wfops.errors import EXIT_CONNECT, WfopsError
from wfops.targets.target import Target
from wfops.transport import frames, ssh, warm
from wfops.transport.served import ACCEPT_POLL_SECS, Keeper, take_order, unlink_if_ours


def order_target(order: dict[str, Any]) -> Target:
    fields = dict(order["target"])
    fields["notes"] = tuple(fields.get("notes") or ())
    return Target(**fields)


class Hub:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.keepers: set[Keeper] = set()
        self.adding = 1  # the first order, added by main()
        self.tickets = itertools.count(1)
        self.pending: dict[int, str] = {}  # adds still connecting: ticket -> socket path
        self.cancelled: set[int] = set()  # of those, the ones a stop or a drop came for
        self.server: socket.socket | None = None
        self.inode: int | None = None
        self.run_done = threading.Event()

    def claim(self, lock_fd: int | None) -> None:
        """Become the directory's hub unless another answers there (then this process serves its own targets).
        `lock_fd`: the hub's spawn lock, inherited from the command that started us; let go once we listen."""
        try:
            other = warm.dial(self.path)
            if other is not None:
                other.close()
                return
            if self.path.exists() or self.path.is_symlink():
                self.path.unlink()
            self.server = warm.bind_socket(self.path)
            self.inode = self.path.stat().st_ino
        except (OSError, WfopsError):
            self.server = None
        finally:
            if lock_fd is not None:
                os.close(lock_fd)

    def reserve(self, order: dict[str, Any]) -> int:
        """Count an order's add as pending from before it is taken (`a`) or the process listens: a stop or drop
        that comes from then on cancels it. `add` ends the reservation."""
        with self.lock:
            ticket = next(self.tickets)
            self.pending[ticket] = str(order.get("path"))
        return ticket

    def add(self, order: dict[str, Any], ticket: int) -> dict[str, Any]:
        """Connect the order's target, bind its socket and serve it in a thread of its own; the answer. An add that
        a stop or drop cancelled answers `stopped`, whatever its connection did meanwhile."""
        try:
            target, path = order_target(order), Path(order["path"])
            if path.parent != self.path.parent or path.suffix != ".sock":
                return {"ok": False, "code": EXIT_CONNECT,
                        "message": f"refused: a target socket outside {self.path.parent}"}
            keeper = Keeper(target, str(order["fp"]), float(order["persist"]), path, on_exit=self._gone)
            answer = self._connect(keeper, ticket)
            with self.lock:
                stopped = ticket in self.cancelled
            if stopped and not answer.get("ok") and not answer.get("stopped"):  # its connect failed meanwhile
                return dict(self._stopped(target), reason=answer.get("message"))
            return answer
        finally:
            with self.lock:
                del self.pending[ticket]
                self.cancelled.discard(ticket)

    @staticmethod
    def _stopped(target: Target) -> dict[str, Any]:
        return {"ok": False, "stopped": True, "code": EXIT_CONNECT,
                "message": f"the warm connection to {target.label} was closed while it was made (wfops disconnect)"}

    def _connect(self, keeper: Keeper, ticket: int) -> dict[str, Any]:
        """Connect, then (unless a stop or drop cancelled the add meanwhile: then nothing is bound, and a socket
        that another add bound for the same target is left alone) bind the target's socket and serve it."""
        target, path = keeper.target, keeper.path
        try:
            keeper.link = ssh.SSHLink(target)
        except WfopsError as exc:
            return {"ok": False, "code": exc.code, "message": exc.message}
        except Exception as exc:  # anything else of a connect: said, not a keeper that "kept going away"
            return {"ok": False, "code": EXIT_CONNECT, "message": f"the connection keeper for {target.label} failed: "
                    f"{type(exc).__name__}: {exc}"}
        with self.lock:
            stopped = ticket in self.cancelled
            if not stopped:
                try:
                    if path.exists() or path.is_symlink():
                        path.unlink()
                    server = warm.bind_socket(path)
                    keeper.inode = path.stat().st_ino
                except WfopsError as exc:
                    keeper.link.close()
                    return {"ok": False, "code": exc.code, "message": exc.message}
                except OSError as exc:
                    keeper.link.close()
                    return {"ok": False, "code": EXIT_CONNECT,
                            "message": f"the connection keeper cannot listen at {path}: {exc.strerror or exc}"}
                self.keepers.add(keeper)
        if stopped:  # a disconnect came while it connected: it never serves
            keeper.link.close()
            return self._stopped(target)
        threading.Thread(target=keeper.serve, args=(server,), daemon=True).start()
        return {"ok": True, "pid": os.getpid()}

    def added(self) -> None:
        with self.lock:
            self.adding -= 1

    def _gone(self, keeper: Keeper) -> None:
        with self.lock:
            self.keepers.discard(keeper)

    def _empty(self) -> bool:
        with self.lock:
            return not self.keepers and self.adding == 0

    def run(self) -> None:
        """Serve the hub socket (if ours) until no target is left; then free it."""
        server = self.server
        if server is not None:
            server.settimeout(ACCEPT_POLL_SECS)
        done = threading.Event()
        while True:
            if server is None:
                done.wait(ACCEPT_POLL_SECS)
            else:
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    pass
                else:
                    with self.lock:
                        self.adding += 1
                    threading.Thread(target=self._request, args=(client,), daemon=True).start()
                    continue
            with self.lock:
                if not self.keepers and self.adding == 0:
                    self._unlink()  # under the lock: no add is taken after this
                    break
        if server is not None:
            server.close()
        self.run_done.set()

    def _unlink(self) -> None:
        unlink_if_ours(self.path, self.inode)

    def _request(self, client: socket.socket) -> None:
        lock_fd = None
        try:
            header = take_order(client)
            if header is None:
                return
            if header.get("lock"):
                _, fds, _, _ = socket.recv_fds(client, 1, 1)
                lock_fd = fds[0] if fds else None
            ticket = self.reserve(header["order"]) if header.get("op") == "add" else 0
            if ticket:
                try:  # taken: the process answers (a stopped one leaves the order in its backlog, unread)
                    frames.send_frame(client, b"a")
                except OSError:
                    pass
            answer = self.add(header["order"], ticket) if ticket else self._op(header)
            if lock_fd is not None:
                warm.write_failure(Path(header["order"]["path"]), str(header["order"]["fp"]), answer)
            if lock_fd is not None:
                os.close(lock_fd)
                lock_fd = None
            try:
                frames.send_frame(client, b"x", json.dumps(answer).encode())
            except OSError:  # nobody waits for it (started ahead of its command)
                pass
        except (OSError, ValueError, KeyError):
            pass
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
            client.close()
            self.added()

    def _op(self, header: dict[str, Any]) -> dict[str, Any]:
        op = header.get("op")
        with self.lock:
            keepers = list(self.keepers)
            adding = [t for t, p in self.pending.items()
                      if op == "stop" or (op == "drop" and header.get("adding") and p == header.get("path"))]
            self.cancelled.update(adding)
        if op == "stop":
            for keeper in keepers:
                keeper.stop()
            return {"ok": True, "adding": len(adding)}
        if op == "drop":
            mine = [k for k in keepers if str(k.path) == header.get("path") and not k.stopping.is_set()]
            for keeper in mine:
                keeper.stop()
                if keeper.link is not None:  # frees a thread stuck on it (not under link_lock: that one may hang)
                    keeper.link.close()
            return {"ok": bool(mine or adding), "pid": os.getpid()}
        return {"ok": False, "code": EXIT_CONNECT, "message": f"unknown keeper operation {op!r}"}
