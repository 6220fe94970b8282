"""GPU packing: the makespan of a sweep on 4 pretend GPU slots against the ideal and one-at-a-time.

    .venv/bin/python benchmarks/bench_packing.py [--rounds 1] [--scale 1.0] [--baseline DIR]

16 runs of fixed durations (2 to 6 s times --scale), each asking for 1 or 2 GPUs, through the real scheduler
on the `local` target with WF_FAKE_GPUS=4 and TRAIN_LAUNCHER=python (a script that sleeps). Makespan is
`wfops sweep.start` to the queue's recorded end, so every cost of the queue is in it. Ideal: the sum of
GPU-seconds / 4. Today's one-at-a-time queue is the same sweep with every run holding all 4 slots.
`--baseline DIR` (`git archive COMMIT | tar -x -C DIR`): that code's packed sweep runs too, in every round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _harness import loopback_pod, print_table, wf
from bench_sweeps import baseline_wf, make_repo, wait_completed

SLEEPER = ("import json, os, sys, time\n"
           "t0 = time.time()\n"
           "args = dict(a.split('=', 1) for a in sys.argv[2:] if '=' in a)\n"
           "time.sleep(float(args['secs']))\n"
           "os.makedirs(args['out_dir'], exist_ok=True)\n"
           "json.dump([t0, time.time()], open(os.path.join(args['out_dir'], 'times.json'), 'w'))\n")
DURATIONS = [4, 2, 6, 3, 5, 2, 4, 3, 6, 2, 5, 3, 4, 2, 3, 5]
GPUS = [2, 1, 1, 2, 1, 2, 1, 1, 2, 1, 2, 1, 1, 2, 1, 1]


def sweep_csv(path: Path, scale: float, every_run_all: bool) -> float:
    """Write the sweep; returns its GPU-seconds."""
    rows = [f"p{i:02d},config/train_tiny.py,{i},secs={d * scale},,{'all' if every_run_all else g}\n"
            for i, (d, g) in enumerate(zip(DURATIONS, GPUS, strict=True))]
    path.write_text("run_id,config,seed,overrides,notes,gpus\n" + "".join(rows))
    return sum(d * scale * (4 if every_run_all else g) for d, g in zip(DURATIONS, GPUS, strict=True))


def makespan(env: dict, work: Path, csv: Path, baseline: Path | None = None) -> tuple[float, float, float]:
    """(sweep.start to the queue's end, first run's start to last run's end, sweep.start to first run's start)"""
    t0, wall0 = time.perf_counter(), time.time()
    args = ("sweep.start", "--csv", str(csv), "--json")
    sweep_id = json.loads((baseline_wf(baseline, env, *args) if baseline else wf(env, *args)).stdout)["sweep_id"]
    record = work / "pod" / "outputs" / "_control" / "sweep.json"
    wait_completed(record, sweep_id)
    data = json.loads(record.read_text())
    took = time.perf_counter() - t0
    if data.get("totals") != {"success": len(DURATIONS)}:
        raise SystemExit(f"the sweep did not succeed: {data}")
    spans = [json.loads((work / "pod" / "outputs" / f"p{i:02d}" / "times.json").read_text())
             for i in range(len(DURATIONS))]
    first, last = min(s[0] for s in spans), max(s[1] for s in spans)
    return took, last - first, first - wall0


def policy_only(scale: float) -> float:
    """The makespan the scheduler's policy (wfops.agent.slots) gives these runs with zero overheads."""
    from wfops.agent.slots import Order, Slots

    order, table = Order(4, 4), Slots(["0", "1", "2", "3"])
    for i, g in enumerate(GPUS):
        order.push(i, g, i)
    running, now, end = [], 0.0, 0.0
    while len(order) or running:
        while (i := order.pop_fitting(len(table.free))) is not None:
            running.append((now + DURATIONS[i] * scale, table.take(GPUS[i])))
        running.sort(key=lambda r: r[0])
        now, ids = running.pop(0)
        table.give(ids)
        end = max(end, now)
    return end


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every run's duration")
    ap.add_argument("--baseline", type=Path, help="a checkout of older code whose packed sweep runs beside, each "
                    "round (`git archive COMMIT | tar -x -C DIR`)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wfops-bench-repo-") as repo_tmp:
        url = make_repo(Path(repo_tmp), {"sleeper.py": SLEEPER})
        extra = {"REPO_URL": url, "REMOTE_PYTHON_BIN": os.environ.get("WFOPS_TEST_POD_PYTHON", "/usr/bin/python3"),
                 "CPU_ONLY": "1", "TRAIN_SCRIPT": "sleeper.py", "TRAIN_LAUNCHER": "python", "WF_FAKE_GPUS": "4",
                 "DOWNLOAD_FINEWEB": "1", "REPO_INSTALL_CMD": "true", "SWEEP_FORCE": "1"}
        with loopback_pod("local", **extra) as (work, _, env):
            wf(env, "checkout")
            rounds = []
            for _ in range(opts.rounds):
                gpu_secs = sweep_csv(work / "packed.csv", opts.scale, False)
                base = makespan(env, work, work / "packed.csv", opts.baseline) if opts.baseline else None
                packed = makespan(env, work, work / "packed.csv")
                sweep_csv(work / "alone.csv", opts.scale, True)
                rounds.append((packed, makespan(env, work, work / "alone.csv"), base))
    ideal = gpu_secs / 4
    med = lambda f: statistics.median(f(r) for r in rounds)  # noqa: E731 - each figure from one round, then medians
    p, a = med(lambda r: r[0][0]), med(lambda r: r[1][0])
    p_runs, a_runs, lead = med(lambda r: r[0][1]), med(lambda r: r[1][1]), med(lambda r: r[0][2])
    rows = []
    if opts.baseline:
        b, b_runs, b_lead = (med(lambda r, k=k: r[2][k]) for k in range(3))
        rows = [[f"--baseline code ({opts.baseline.name}), same rounds: sweep.start → the queue's end", f"{b:.1f}",
                 f"{b / ideal:.2f}"],
                ["of it, first run's start → last run's end", f"{b_runs:.1f}", f"{b_runs / ideal:.2f}"],
                ["of it, sweep.start → first run's start", f"{b_lead:.1f}", "-"],
                ["of it, last run's end → the queue's end", f"{b - b_runs - b_lead:.2f}", "-"]]
    print_table(f"GPU packing: 16 runs of 2-6 s asking 1 or 2 of 4 pretend GPUs (median of {opts.rounds} round(s); "
                f"`benchmarks/bench_packing.py --rounds {opts.rounds} --scale {opts.scale:g}`)",
                ["schedule", "makespan s", "x ideal"], [
                    ["ideal: sum of GPU-seconds / 4", f"{ideal:.1f}", "1.00"],
                    ["the policy alone, no overheads (simulated with wfops.agent.slots)",
                     f"{policy_only(opts.scale):.1f}", f"{policy_only(opts.scale) / ideal:.2f}"],
                    ["**wfops packing: sweep.start → the queue's end**", f"**{p:.1f}**", f"**{p / ideal:.2f}**"],
                    ["of it, first run's start → last run's end", f"{p_runs:.1f}", f"{p_runs / ideal:.2f}"],
                    ["of it, sweep.start → first run's start", f"{lead:.1f}", "-"],
                    ["of it, last run's end → the queue's end", f"{med(lambda r: r[0][0] - r[0][1] - r[0][2]):.2f}",
                     "-"],
                    *rows,
                    ["one at a time (every run holds all 4 GPUs, as before)", f"{a:.1f}", f"{a / ideal:.2f}"],
                    ["of it, first run's start → last run's end", f"{a_runs:.1f}", f"{a_runs / ideal:.2f}"],
                ])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
