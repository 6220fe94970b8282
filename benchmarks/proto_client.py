"""The yardstick of bench_floor.py: a stdlib-only client that sends a cached script + request through a warm
keeper and prints the pod's answer. Nothing of wfops is imported; no settings, no parsing, no checks: the least
a warm command must do. (Not a product: it knows one keeper, one script.)

    python benchmarks/proto_client.py SPEC.json    # {"sock", "fp", "persist", "script", "serve"} by bench_floor.py

Frames as in wfops/transport/warm.py: a type byte, a 4-byte big-endian length, the payload.
"""

import json
import os
import socket
import struct
import sys

HEAD = struct.Struct(">cI")


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise SystemExit("proto: the keeper went away")
        buf += chunk
    return buf


def main() -> None:
    with open(sys.argv[1], "rb") as fh:
        spec = json.loads(fh.read())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(spec["sock"])
    header = json.dumps({"op": "exec", "fp": spec["fp"], "persist": spec["persist"], "direct": False,
                         "serve": spec.get("serve")}).encode()
    sock.sendall(HEAD.pack(b"h", len(header)) + header)
    script = spec["script"].encode()
    out = []
    code = 4
    while True:
        kind, size = HEAD.unpack(_exact(sock, HEAD.size))
        data = _exact(sock, size) if size else b""
        if kind == b"s":
            sock.sendall(HEAD.pack(b"i", len(script)) + script)
        elif kind == b"o":
            out.append(data)
        elif kind == b"e":
            sys.stderr.buffer.write(data)
        elif kind == b"x":
            code = int(data)
            break
        elif kind == b"E":
            sys.stderr.write(f"proto: {data.decode()}\n")
            break
    sys.stdout.buffer.write(b"".join(out))
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
