"""A fleet (OPS_HOSTS) of loopback sshd pods: sweep throughput on 1, 2 and 3 pods, and `sweep.status` over 3
pods against 1.

    .venv/bin/python benchmarks/bench_fleet.py [--runs 12] [--sleep 4] [--slots 2] [--rounds 3] [--repeat 15]

It sets itself up: a bare git repo of the bundled example plus tests/fixtures/echo_train.py (as committed), one
real `checkout` of it on the `local` target (the tests' `checked_out` fixture, tests/conftest.py), three
loopback pods (tests/realparts.py start_fleet, 127.0.0.2-4, each its own HOME) with a copy of that checked-out
pod in every home (tests/fleet.py Fleet.checked_out). Every process it started is ended by PID at the end, also
on Ctrl-C or SIGTERM.

1. Throughput: `--runs` runs of echo_train.py `sleep=S`, 1 GPU each, WF_FAKE_GPUS=`--slots` per pod,
   TRAIN_LAUNCHER=python, on 1, 2 and 3 pods (the same harness: OPS_HOSTS with 1, 2 or 3 entries; a fresh
   client dir and fresh run ids each time). Wall time: `wfops sweep.start` to `wfops sweep.wait` returning
   (sweep.wait polls the joined status every 2 s, so up to 2 s of it is the poll). Ideal: rounds x S, rounds
   = ceil(runs / (pods x slots)). The sizes alternate within each round; medians over `--rounds`.
2. `wfops sweep.status --json` (a fresh process per call) with a finished fleet sweep of `--runs` runs on
   3 pods and on 1: cold (WF_PERSIST_SECS=0: a connection per pod, opened in parallel) and warm (a keeper per
   pod). Median and p90 of `--repeat` calls, the two fleets alternating.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import ROOT, WFOPS, ms, p90, print_table

from tests.conftest import EXAMPLE_REPO, TrainingRepo, checkout_config, make_pod, write_shards
from tests.fleet import Fleet
from tests.realparts import pids_with_env, running

HEADER = "run_id,config,seed,overrides,notes,gpus,nodes\n"
GIT_ENV = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x.invalid", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x.invalid"}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout


def training_repo(base: Path) -> TrainingRepo:
    """The tests' training_repo fixture, minimal: the example project plus echo_train.py as committed."""
    work = base / "work"
    shutil.copytree(EXAMPLE_REPO, work)
    echo = git("show", "HEAD:tests/fixtures/echo_train.py", cwd=ROOT)
    (work / "examples" / "nanogpt" / "echo_train.py").write_text(echo)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "example project"]):
        git(*args, cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work).strip()
    git("clone", "-q", "--bare", str(work), str(base / "repo.git"), cwd=base)
    return TrainingRepo(f"file://{base / 'repo.git'}", base / "repo.git", sha, sha, 0, sha)


class Client:
    """One client of the fleet: its own dir (config, HOME, keepers, artifacts with the fleet ledger)."""

    def __init__(self, fleet: Fleet, directory: Path, pods: int, **overrides: str) -> None:
        directory.mkdir(parents=True)
        self.dir = directory
        hosts = ",".join(p.address for p in fleet.pods[:pods])
        self.config = fleet.config(directory, OPS_HOSTS=hosts, TRAIN_SCRIPT="echo_train.py",
                                   TRAIN_WORKDIR="examples/nanogpt", **overrides)
        self.home = directory / "client-home"
        self.home.mkdir()
        self.keepers = directory / "keepers"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
        env.update(HOME=str(self.home), WORKFLOW_CONFIG=str(self.config), PYTHONUNBUFFERED="1",
                   WFOPS_KEEPER_DIR=str(self.keepers))
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a user's machine (benchmarks/_harness.py)
        self.env = env

    def wf(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        res = subprocess.run([str(WFOPS), *args], capture_output=True, text=True, timeout=timeout, env=self.env,
                             cwd=self.dir)
        if res.returncode != 0:
            raise SystemExit(f"wfops {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-2000:]}\n"
                             f"{res.stderr[-2000:]}")
        return res

    def persist(self, secs: str) -> None:
        """WF_PERSIST_SECS in the config file (the file wins over the environment)."""
        lines = [ln for ln in self.config.read_text().splitlines() if not ln.startswith("WF_PERSIST_SECS=")]
        self.config.write_text("\n".join([*lines, f"WF_PERSIST_SECS={secs}"]) + "\n")

    def disconnect(self) -> None:
        if self.keepers.is_dir():
            subprocess.run([str(WFOPS), "disconnect", "--all"], env=self.env, capture_output=True, timeout=60)


def one_sweep(fleet: Fleet, client: Client, tag: str, runs: int, sleep: float) -> dict:
    csv = client.dir / "sweep.csv"
    csv.write_text(HEADER + "".join(f"{tag}{i:02d},config/train_tiny.py,{i},sleep={sleep},,1,\n"
                                    for i in range(runs)))
    t0 = time.perf_counter()
    client.wf("sweep.start", "--csv", str(csv))
    t_start = time.perf_counter() - t0
    done = json.loads(client.wf("sweep.wait", "--json").stdout)
    wall = time.perf_counter() - t0
    states = {r["run_id"]: r["state"] for r in done["runs"]}
    if sorted(states) != [f"{tag}{i:02d}" for i in range(runs)] or set(states.values()) != {"success"}:
        raise SystemExit(f"the sweep did not succeed: {states}")
    spans = []  # (start, end) of every run, from echo_train's own records on the pods
    for rid in states:
        for pod in fleet.pods:
            out = pod.home / "outputs" / rid
            if (out / "ended.json").exists():
                spans.append((json.loads((out / "args.json").read_text())["started"],
                              json.loads((out / "ended.json").read_text())["ended"]))
    busy = max(e for _, e in spans) - min(s for s, _ in spans) if len(spans) == runs else float("nan")
    return {"wall": wall, "start": t_start, "busy": busy}


def bench_throughput(fleet: Fleet, work: Path, opts: argparse.Namespace, clients: list[Client]) -> dict[int, Client]:
    sizes = [1, 2, 3]
    results: dict[int, list[dict]] = {k: [] for k in sizes}
    last: dict[int, Client] = {}
    for rnd in range(opts.rounds):
        for k in sizes:
            client = Client(fleet, work / f"tp-{k}-{rnd}", k, WF_FAKE_GPUS=str(opts.slots))
            clients.append(client)
            results[k].append(one_sweep(fleet, client, f"t{k}{rnd}x", opts.runs, opts.sleep))
            print(f"# {k} pod(s), round {rnd + 1}: {results[k][-1]['wall']:.1f} s", file=sys.stderr, flush=True)
            last[k] = client
    med = {k: {m: statistics.median(r[m] for r in results[k]) for m in ("wall", "start", "busy")} for k in sizes}
    rows = []
    for k in sizes:
        ideal = math.ceil(opts.runs / (k * opts.slots)) * opts.sleep
        speed = med[1]["wall"] / med[k]["wall"]
        rows.append([f"{k} pod(s), {k * opts.slots} slots", f"{med[k]['wall']:.1f}", f"{ideal:.0f}",
                     f"{med[k]['wall'] / ideal:.2f}", f"{speed:.2f}", f"**{speed / k:.2f}**",
                     f"{med[k]['busy']:.1f}", f"{med[k]['start']:.1f}",
                     " / ".join(f"{r['wall']:.1f}" for r in results[k])])
    print_table(f"Fleet throughput: {opts.runs} runs of {opts.sleep:g} s, 1 GPU each, {opts.slots} pretend GPUs "
                f"a pod (median of {opts.rounds} rounds)",
                ["pods", "sweep.start → sweep.wait s", "ideal s", "x ideal", "speed-up vs 1 pod",
                 "speed-up / pods", "first run start → last run end s", "of it sweep.start s", "every round s"],
                rows)
    return last


def bench_status(clients: dict[int, Client], repeat: int) -> None:
    rows = []
    for mode, persist in (("cold", "0"), ("warm", "60")):
        samples: dict[int, list[float]] = {1: [], 3: []}
        for k in (1, 3):
            clients[k].persist(persist)
            clients[k].wf("sweep.status", "--json")  # warm-up (warm: starts the keepers)
        for _ in range(repeat):
            for k in (1, 3):
                t0 = time.perf_counter()
                data = json.loads(clients[k].wf("sweep.status", "--json").stdout)
                samples[k].append(time.perf_counter() - t0)
                if len(data["pods"]) != k:
                    raise SystemExit(f"sweep.status answered for {len(data['pods'])} pods, not {k}")
        for k in (1, 3):
            rows.append([f"wfops sweep.status --json, {mode}, {k} pod(s)", ms(samples[k]), p90(samples[k]),
                         "-" if k == 1 else f"**{statistics.median(samples[3]) / statistics.median(samples[1]):.2f}**"])
        for k in (1, 3):
            clients[k].disconnect()
            clients[k].persist("0")
    print_table(f"sweep.status of a finished fleet sweep: 3 pods against 1 ({repeat} calls each, alternating)",
                ["what", "median ms", "p90 ms", "3 pods / 1 pod"], rows)


def stop_everything(fleet: Fleet | None, clients: list[Client], template_home: Path | None, tmux: str) -> None:
    for c in clients:
        try:
            c.disconnect()
        except (OSError, subprocess.SubprocessError):
            pass
    subprocess.run(["tmux", "-L", tmux, "kill-server"], capture_output=True)
    homes = [c.home for c in clients] + ([template_home] if template_home else [])
    pids = [p for h in homes for p in pids_with_env("HOME", str(h))]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if fleet is not None:
        fleet.stop()  # every sshd, its connections and every process with a pod's HOME, by PID
        left = [p for p in fleet.pids() if running(p)]
        if left:
            print(f"bench_fleet: still running: {left}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--sleep", type=float, default=4)
    ap.add_argument("--slots", type=int, default=2, help="WF_FAKE_GPUS per pod")
    ap.add_argument("--rounds", type=int, default=3, help="sweeps per fleet size")
    ap.add_argument("--repeat", type=int, default=15, help="sweep.status calls per fleet and mode")
    ap.add_argument("--parts", default="throughput,status", help="a comma-separated subset")
    opts = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    tmux = f"wfops-bench-fleet-{os.getpid()}"
    fleet: Fleet | None = None
    template = None
    clients: list[Client] = []
    with tempfile.TemporaryDirectory(prefix="wfops-bench-fleet-") as tmp:
        work = Path(tmp)
        try:
            t0 = time.perf_counter()
            repo = training_repo(work / "training-repo")
            (work / "template").mkdir()
            template = make_pod("local", work / "template", None, tmux)
            checkout_config(template, repo, os.environ.get("WFOPS_TEST_POD_PYTHON", "/usr/bin/python3"))
            write_shards(template.root / "data")
            template.ok("checkout", timeout=600)
            fleet = Fleet.start(work / "fleet", 3)
            fleet.checked_out(template.root)
            print(f"# set up in {time.perf_counter() - t0:.0f} s: {fleet.hosts_line()}", file=sys.stderr, flush=True)
            parts = set(opts.parts.split(","))
            last: dict[int, Client] = {}
            if "throughput" in parts:
                last = bench_throughput(fleet, work, opts, clients)
            if "status" in parts:
                for k in (1, 3):
                    if k not in last:
                        last[k] = Client(fleet, work / f"st-{k}", k, WF_FAKE_GPUS=str(opts.slots))
                        clients.append(last[k])
                        one_sweep(fleet, last[k], f"s{k}x", opts.runs, min(opts.sleep, 1))
                bench_status(last, opts.repeat)
        except KeyboardInterrupt:
            print("bench_fleet: interrupted; stopping what it started", file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleaning short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stop_everything(fleet, clients, template.home if template else None, tmux)


if __name__ == "__main__":
    main()
