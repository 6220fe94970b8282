#!/usr/bin/env python3
"""A local fleet for demos: N OpenSSH servers ("pods") on 127.0.0.2, 127.0.0.3, ... each with its own HOME.

    python scripts/local_fleet.py up 3 --dir /tmp/fleet    # start; writes /tmp/fleet/fleet.json, prints the config
    python scripts/local_fleet.py down --dir /tmp/fleet    # stop them (by PID) and every process of theirs

The servers are the tests' (tests/realparts.py start_fleet): each session on pod I gets HOME=DIR/podI/home (so
`~/outputs` differs per pod) and TMUX_TMPDIR under it (a tmux server per pod). One client key for all pods.
Use a config with OPS_HOSTS=<the printed line>, SSH_KEY_PATH=<the printed key> and `~/...` remote paths.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.realparts import descendants, pids_with_env, running, start_fleet  # noqa: E402

STATE = "fleet.json"


def up(n: int, directory: Path) -> int:
    state_file = directory / STATE
    if state_file.exists():
        print(f"local_fleet: {state_file} exists: run `down --dir {directory}` first", file=sys.stderr)
        return 2
    fleet = start_fleet(directory, n, new_session=True)
    state = {
        "key": str(fleet.key),
        "hosts": fleet.hosts_line(),
        "pods": [{"index": p.index, "pid": p.sshd.proc.pid, "user": p.sshd.user, "address": p.host, "port": p.port,
                  "home": str(p.home), "config": str(p.sshd.config), "log": str(p.sshd.log)} for p in fleet.pods],
    }
    state_file.write_text(json.dumps(state, indent=2) + "\n")
    print(f"OPS_HOSTS={fleet.hosts_line()}")
    print(f"SSH_KEY_PATH={fleet.key}")
    print(f"# {n} pods up; homes {directory}/pod*/home; state {state_file}; stop: "
          f"python scripts/local_fleet.py down --dir {directory}", file=sys.stderr)
    return 0


def _is_our_sshd(pid: int, config: str) -> bool:
    """The PID is still the sshd we started (not a reused PID): its command line names our config (sshd
    rewrites its process title to `sshd: /usr/sbin/sshd -D ... -f CONFIG [listener] ...`, one string)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"sshd" in cmdline and f"-f {config}".encode() in cmdline and running(pid)


def down(directory: Path) -> int:
    state_file = directory / STATE
    try:
        state = json.loads(state_file.read_text())
    except OSError as exc:
        print(f"local_fleet: cannot read {state_file}: {exc.strerror}", file=sys.stderr)
        return 2
    pids: list[int] = []
    for pod in state["pods"]:
        if _is_our_sshd(pod["pid"], pod["config"]):
            pids += [pod["pid"], *descendants(pod["pid"])]
        pids += [p for p in pids_with_env("HOME", pod["home"]) if p not in pids]
    for _ in range(3):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while any(running(p) for p in pids) and time.time() < deadline:
            time.sleep(0.02)
        more = [p for pod in state["pods"] for p in pids_with_env("HOME", pod["home"]) if p not in pids]
        if not more:
            break
        pids += more
    left = [p for p in pids if running(p)]
    if left:
        print(f"local_fleet: still running: {left}", file=sys.stderr)
        return 1
    state_file.unlink()
    print(f"# {len(state['pods'])} pods down ({len(pids)} processes ended)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start N pods")
    p_up.add_argument("n", type=int)
    p_up.add_argument("--dir", required=True, type=Path)
    p_down = sub.add_parser("down", help="stop the pods of DIR/fleet.json")
    p_down.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    directory = args.dir.resolve()
    if args.cmd == "up":
        if not 1 <= args.n <= 250:
            parser.error("N must be 1..250")
        return up(args.n, directory)
    return down(directory)


if __name__ == "__main__":
    sys.exit(main())
