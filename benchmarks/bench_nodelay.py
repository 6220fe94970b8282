"""What TCP_NODELAY saves per exec: Fabric `run("true")` on an open connection to the loopback sshd, with
paramiko's default socket (Nagle on) and with TCP_NODELAY set as wfops.transport.ssh sets it.

    .venv/bin/python benchmarks/bench_nodelay.py [--rounds 7 --execs 20]

Prints a markdown table: the median time of one exec on each kind of connection (each round opens one of
each, in turn, and times `--execs` execs on it; the figure is the median over rounds of each round's median).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

from _harness import print_table  # also puts the repository root on sys.path

from tests.realparts import SSHD, start_sshd, stop_sshd


def exec_ms(sshd: SSHD, nodelay: bool, execs: int) -> float:
    from fabric import Config, Connection

    c = Connection(sshd.host, user=sshd.user, port=sshd.port, config=Config(overrides={"load_ssh_configs": False}),
                   connect_kwargs={"key_filename": str(sshd.key), "look_for_keys": False, "allow_agent": False})
    try:
        c.open()
        if nodelay:
            c.transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.run("true", hide=True, in_stream=False)  # the first exec warms the channel machinery
        samples = []
        for _ in range(execs):
            t0 = time.perf_counter()
            c.run("true", hide=True, in_stream=False)
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1000
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--execs", type=int, default=20)
    args = ap.parse_args()
    plain, fast = [], []
    with tempfile.TemporaryDirectory(prefix="wfops-bench-nodelay-") as tmp:
        sshd = start_sshd(Path(tmp) / "sshd")
        try:
            for _ in range(args.rounds):
                plain.append(exec_ms(sshd, False, args.execs))
                fast.append(exec_ms(sshd, True, args.execs))
        finally:
            stop_sshd(sshd)
    p, f = statistics.median(plain), statistics.median(fast)
    print_table(f"One exec on an open Fabric connection (loopback sshd; median of {args.rounds} rounds of "
                f"{args.execs} execs, {time.strftime('%Y-%m-%d')})", ["socket", "ms per exec"], [
        ["paramiko's default (Nagle on)", f"{p:.1f}"],
        ["TCP_NODELAY set (as wfops.transport.ssh does)", f"{f:.1f}"],
        ["saved per exec", f"{p - f:.1f}"],
    ])


if __name__ == "__main__":
    main()
