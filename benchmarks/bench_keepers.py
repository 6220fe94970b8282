"""Warm connections on a fleet of loopback pods: the memory of the keeper process(es) and a warm read-only fan-out,
for 1, 4 and 16 pods, for one or more wfops installations in the same run (issue 24 part 6).

    .venv/bin/python benchmarks/bench_keepers.py [--pods 1,4,16] [--repeat 9] [--wfops NAME=PATH/TO/wfops ...]

`--wfops` names a `wfops` executable to compare (e.g. `main=/work/main/.venv/bin/wfops`, the code before), as
many times as wanted; this checkout's own `wfops` is always measured ("this"). It sets itself up: max(--pods)
loopback sshd pods (tests/realparts.py start_fleet, 127.0.0.2.., each its own empty HOME), and for every
installation and fleet size a client dir of its own (config with OPS_HOSTS = the first N pods,
WF_PERSIST_SECS=300, its own HOME and keeper directory). For each: the first `wfops fsm.status --json` (it starts
the keepers), then `--repeat` warm calls (median and p90), and in the same rounds `WF_POD=<first pod> wfops fsm.status
--json` on the biggest fleet (one pod of it chosen), then the keeper processes' memory: RSS (VmRSS) and PSS
(/proc/PID/smaps_rollup, where the kernel has it; shared pages split between the processes that map them), summed
over every keeper process of that client. The installations and sizes alternate within each round, so all
see the same load. Everything it started is ended by PID at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import ROOT, WFOPS, ms, p90, print_table

from tests.fleet import Fleet
from tests.procview import keeper_pids
from tests.realparts import pids_with_env

sys.path.insert(0, str(ROOT))


class Client:
    def __init__(self, fleet: Fleet, base: Path, wfops: Path, pods: int) -> None:
        base.mkdir(parents=True)
        self.dir, self.wfops, self.pods = base, wfops, pods
        hosts = ",".join(p.address for p in fleet.pods[:pods])
        self.config = fleet.config(base, OPS_HOSTS=hosts, WF_PERSIST_SECS="300")
        self.home = base / "client-home"
        self.home.mkdir()
        self.keepers = base / "keepers"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
        env.update(HOME=str(self.home), WORKFLOW_CONFIG=str(self.config), WFOPS_KEEPER_DIR=str(self.keepers))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env = env

    def status(self, pod: str = "") -> float:
        """One `fsm.status --json` of the whole fleet, or (`pod`) of that pod alone (WF_POD=NAME)."""
        t0 = time.perf_counter()
        res = subprocess.run([str(self.wfops), "fsm.status", "--json"], capture_output=True, text=True,
                             env={**self.env, "WF_POD": pod} if pod else self.env, cwd=self.dir, timeout=300)
        took = time.perf_counter() - t0
        if res.returncode != 0 or ("state" not in json.loads(res.stdout) if pod else
                                   len(json.loads(res.stdout)["pods"]) != self.pods):
            raise SystemExit(f"{self.wfops} fsm.status failed ({res.returncode}): {res.stderr[-2000:]}")
        return took

    def memory(self) -> tuple[int, float, float]:
        """(keeper processes, RSS MB, PSS MB) summed over this client's keepers."""
        pids = keeper_pids([self.keepers])
        rss = pss = 0.0
        for pid in pids:
            rss += _kb(Path(f"/proc/{pid}/status"), "VmRSS:")
            pss += _kb(Path(f"/proc/{pid}/smaps_rollup"), "Pss:")
        return len(pids), rss / 1024, pss / 1024

    def disconnect(self) -> None:
        if self.keepers.is_dir():
            subprocess.run([str(self.wfops), "disconnect", "--all"], env=self.env, capture_output=True, timeout=60)


def _kb(path: Path, field: str) -> float:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def bench(fleet: Fleet, work: Path, installs: list[tuple[str, Path]], sizes: list[int],
          repeat: int) -> list[list[str]]:
    """Every installation and size: the first call, then `repeat` rounds of warm calls, installations and sizes
    alternating within each round (the same load for all), then the memory of each client's keepers."""
    clients = {(name, n): Client(fleet, work / f"{name}-{n}", wfops, n) for name, wfops in installs for n in sizes}
    rows = []
    try:
        first = {key: c.status() for key, c in clients.items()}
        for c in clients.values():
            c.status()  # one warm call before timing
        samples: dict[tuple[str, int], list[float]] = {key: [] for key in clients}
        picked: dict[str, list[float]] = {name: [] for name, _ in installs}  # WF_POD=the first pod, biggest fleet
        one = fleet.pods[0].address
        for name, _ in installs:
            clients[(name, sizes[-1])].status(one)  # its first (it keeps its request)
        for _ in range(repeat):
            for key, c in clients.items():
                samples[key].append(c.status())
            for name, _ in installs:
                picked[name].append(clients[(name, sizes[-1])].status(one))
        for name, _ in installs:
            base = statistics.median(samples[(name, sizes[0])])
            for n in sizes:
                procs, rss, pss = clients[(name, n)].memory()
                got = samples[(name, n)]
                rows.append([f"wfops {name}", str(n), f"{first[(name, n)] * 1000:.0f}", ms(got), p90(got),
                             f"**{statistics.median(got) / base:.2f}**", str(procs), f"{rss:.1f}", f"{pss:.1f}",
                             f"**{pss / n:.1f}**"])
            got = picked[name]
            rows.append([f"wfops {name}, WF_POD=one pod of the {sizes[-1]}", "1", "", ms(got), p90(got),
                         f"{statistics.median(got) / base:.2f}", "", "", "", ""])
    finally:
        for c in clients.values():
            c.disconnect()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", default="1,4,16")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--wfops", action="append", default=[], help="NAME=PATH of another wfops to compare")
    opts = ap.parse_args()
    sizes = [int(n) for n in opts.pods.split(",")]
    installs = [(s.split("=", 1)[0], Path(s.split("=", 1)[1])) for s in opts.wfops] + [("this", WFOPS)]
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    fleet = None
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="wfops-bench-keepers-") as tmp:
        work = Path(tmp)
        try:
            fleet = Fleet.start(work / "fleet", max(sizes))
            load = os.getloadavg()[0]
            rows = bench(fleet, work, installs, sizes, opts.repeat)
            load2 = os.getloadavg()[0]
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            for pid in keeper_pids([work]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if fleet is not None:
                for pod in fleet.pods:
                    for pid in pids_with_env("HOME", str(pod.home)):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                fleet.local.stop()
    print_table(f"Warm connections on loopback pods: `wfops fsm.status --json` (median of {opts.repeat}, "
                f"installations and sizes alternating) and the keepers' memory; load average {load:.1f} → "
                f"{load2:.1f}, {os.cpu_count()} cores",
                ["what", "pods", "first call ms (starts keepers)", "warm median ms", "warm p90 ms",
                 f"warm / {sizes[0]} pod", "keeper processes", "RSS MB (sum)", "PSS MB (sum)", "PSS MB a pod"], rows)


if __name__ == "__main__":
    main()
