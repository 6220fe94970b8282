"""The reachability check before a multi-node run: one pod listens on the ports its rendezvous (and the
workers' own connections) will use (net-listen), the other pods connect to them (net-probe). Neither touches
workflow state; the client calls them inside sweep.start / sweep.rebalance.

net-listen tells the client it is ready with the meta line `@wfops-listening PORTS` on stderr, so the probes
start only once every port listens.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import sys
import time

from . import wire
from .registry import Refusal, command
from .states import EXIT_CONFLICT, EXIT_USAGE
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Dict, List, Union

    from .states import Layout
    from .wire import Json

LISTENING_META = "@wfops-listening"


def _bind(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT; a listener still holds its port
    try:
        s.bind(("0.0.0.0", port))  # every address: the other pods reach it
        s.listen(64)
    except OSError as exc:
        s.close()
        if exc.errno == errno.EADDRINUSE:
            raise Refusal(EXIT_CONFLICT, "port %d is in use on this pod" % port) from None
        raise Refusal(EXIT_CONFLICT, "cannot listen on port %d on this pod: %s" % (port, exc.strerror or exc)) from None
    s.setblocking(False)
    return s


def _ports(ports: List[Any]) -> List[Any]:
    bad = [p for p in ports if not isinstance(p, int) or isinstance(p, bool) or not 0 < p < 65536]
    if bad or not ports:
        raise Refusal(EXIT_USAGE, "ports must be a non-empty list of port numbers (1-65535), not %r" % (ports,))
    return list(dict.fromkeys(ports))


@command(wire.NET_LISTEN)
def net_listen(pod: Layout, ports: List[Any], secs: float, expect: int = 1) -> Json:
    """Listen on 0.0.0.0:PORT for each port and accept connections until each port had `expect` of them or
    `secs` passed; returns {"accepted": {"PORT": count}}."""
    ports = _ports(ports)
    socks = {}
    try:
        for port in ports:
            socks[port] = _bind(port)
        sys.stderr.write("%s %s\n" % (LISTENING_META, ",".join(str(p) for p in ports)))
        sys.stderr.flush()
        counts = _accept(socks, float(secs), int(expect))
    finally:
        for s in socks.values():
            s.close()
    return {"accepted": {str(p): counts[p] for p in ports}}


def _accept(socks: Json, secs: float, expect: int) -> Json:
    counts = {p: 0 for p in socks}
    by_fd = {s.fileno(): p for p, s in socks.items()}
    deadline = time.monotonic() + secs
    while any(c < expect for c in counts.values()):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select(list(by_fd), [], [], left)
        for fd in ready:
            port = by_fd[fd]
            with contextlib.suppress(BlockingIOError, InterruptedError):
                conn, _ = socks[port].accept()
                conn.close()
                counts[port] += 1
    return counts


@command(wire.NET_PROBE)
def net_probe(pod: Layout, host: str, ports: List[Any], timeout: float = 5) -> Json:
    """Connect to host:PORT for each port; returns {"reached": {"PORT": true or "error text"}}."""
    reached: Dict[str, Union[bool, str]] = {}
    if timeout <= 0:
        raise Refusal(EXIT_USAGE, "net-probe: timeout must be more than 0 seconds, not %r" % timeout)
    for port in _ports(ports):
        try:
            with socket.create_connection((host, port), timeout=float(timeout)):
                reached[str(port)] = True
        except socket.timeout:
            reached[str(port)] = "timed out after %ss" % timeout
        except OSError as exc:
            reached[str(port)] = exc.strerror or str(exc)
    return {"reached": reached}
