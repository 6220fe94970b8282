"""The frames between a command and its keeper (wfops.transport.warm, .connect, .served, .hub, and the cached fast
path's wfops.transport.leanwire): a type byte, a 4-byte big-endian length, the payload. Standard library only
(socket, struct): the cached fast path imports it without the rest of the transport."""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct(">cI")
MAX_FRAME = 1 << 20  # what a sender puts in one frame at most (a script or an agent goes in several)
KEEPER_START_SECS = 10  # + twice the connect timeout: how long a keeper may take to open a channel (reconnecting)


def start_secs(connect_timeout: float) -> float:
    """How long a command waits for its keeper's start frame (`s`): the keeper may be reconnecting to the pod
    meanwhile (a connection that died under it: a channel refused, then a new connection, a connect timeout each).
    Silent that long, it is frozen (stopped, hung)."""
    return KEEPER_START_SECS + 2 * connect_timeout


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


def keeper_silent(limit: float) -> str:
    """What a command says of a keeper that answered no keepalive for `limit` seconds (wfops.transport.connect's
    KeeperExec and the cached fast path's wfops.transport.leanwire)."""
    return (f"the connection keeper stopped answering (no reply to a keepalive for {limit:g}s: it is stopped or "
            "hung); wfops closed it, the command may or may not have run (`wfops disconnect` ends the keeper)")


def keeper_stalled(limit: float) -> str:
    """What a command says of a keeper that stopped for `limit` seconds in the middle of a frame (likewise)."""
    return (f"the connection keeper stopped in the middle of an answer for {limit:g}s; wfops closed it, the command "
            "may or may not have run")
