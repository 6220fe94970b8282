"""A loopback TCP gate in front of the test sshd: it forwards every connection until it is shut (the pod becomes
unreachable: the forwarded connections are cut, and every later one is accepted and never answered, like a pod
whose network froze), and counts the connections it took either way."""

from __future__ import annotations

import selectors
import socket
import threading

from tests.procview import tcp_connections_to


class Gate:
    def __init__(self, sshd_host: str, sshd_port: int) -> None:
        self.to = (sshd_host, sshd_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.shut = False
        self.accepted = 0  # connections taken, forwarded or not
        self.silent = 0  # connections taken after it was shut
        self.changed = threading.Condition()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.held: list[socket.socket] = []
        self.holding = False
        self.waiting: list[socket.socket] = []  # held until released (hold)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.closed = False
        self.thread.start()

    def open(self) -> None:
        """Forward the connections made from now on again."""
        with self.changed:
            self.shut = False

    def close_all(self) -> None:
        """Shut the gate: the forwarded connections are cut, later ones are held open and never answered."""
        with self.changed:
            self.shut = True
            for a, b in self.pairs:
                for s in (a, b):
                    self._drop(s)
            self.pairs.clear()

    def blackhole(self) -> None:
        """The connections forwarded so far go silent (kept open, nothing passes either way: a NAT or VPN that
        dropped their state); new ones are forwarded as before."""
        with self.changed:
            for a, b in self.pairs:
                for s in (a, b):
                    self._unwatch(s)
                self.held += [a, b]
            self.pairs.clear()

    def hold(self) -> None:
        """New connections are accepted and wait (unanswered) until `release`: a pod slow to answer."""
        with self.changed:
            self.holding = True

    def release(self) -> None:
        """Forward the connections held so far, and new ones from now on."""
        with self.changed:
            self.holding = False
            for conn in self.waiting:
                self._forward(conn)
            self.waiting.clear()

    def wait_held(self, n: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.waiting) >= n, timeout)

    def wait_silent(self, n: int, timeout: float) -> bool:
        """Until `n` connections were taken since the gate shut."""
        with self.changed:
            return self.changed.wait_for(lambda: self.silent >= n, timeout)

    def stop(self) -> None:
        with self.changed:
            self.closed = True
            for s in (*self.held, *self.waiting, *(s for pair in self.pairs for s in pair)):
                self._drop(s)
        self.listener.close()

    def _unwatch(self, s: socket.socket) -> None:
        """Nothing of `s` is forwarded any more."""
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass

    def _drop(self, s: socket.socket) -> None:
        self._unwatch(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def _loop(self) -> None:
        while not self.closed:
            try:
                events = self.sel.select(0.2)
            except (OSError, ValueError):
                return
            for key, _ in events:
                with self.changed:
                    if self.closed:
                        return
                    if key.fileobj is self.listener:
                        self._accept()
                    else:
                        self._pump(key.fileobj, key.data)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.accepted += 1
        if self.shut:
            self.silent += 1
            self.held.append(conn)  # accepted, never answered
            self.changed.notify_all()
            return
        if self.holding:
            self.waiting.append(conn)  # answered once released
            self.changed.notify_all()
            return
        self._forward(conn)

    def _forward(self, conn: socket.socket) -> None:
        up = socket.create_connection(self.to)
        self.pairs.append((conn, up))
        self.sel.register(conn, selectors.EVENT_READ, up)
        self.sel.register(up, selectors.EVENT_READ, conn)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            data = src.recv(65536)
            if data:
                dst.sendall(data)
                return
        except OSError:
            pass
        for pair in [p for p in self.pairs if src in p]:
            self.pairs.remove(pair)
            for s in pair:
                self._drop(s)


def sockets_to(pid: int, port: int) -> int:
    """How many TCP sockets the process holds to `port` on loopback, in any state (one the peer closed is counted
    until the process itself closes it)."""
    return tcp_connections_to(pid, port, established=False)
