"""Commands as a user runs them, against the loopback sshd: warm (a keeper holds the connection) and cold, beside
the floors measured in the same run; the pod agent's own start; a --watch refresh; run.fetch full and repeated.

    .venv/bin/python benchmarks/bench_commands.py [--repeat 15] [--fetch-mb 200] [--baseline DIR]
    .venv/bin/python benchmarks/bench_commands.py --fetch-only [--repeat 9] [--fetch-rounds 5]   # run.fetch alone

`--baseline DIR`: a checkout of older code (`git archive 821df59 | tar -x -C DIR`), run as `python -m wfops`
beside, in the same rounds (it has no keeper: its rows compare with "cold").

Prints markdown tables (medians, p90). Every wfops row is a fresh `wfops` process, so Python's start and imports
are included. "cold" is WF_PERSIST_SECS=0 (the command's own connection); "cold, keeper start" is the first
command after `wfops disconnect` (it starts the keeper); "warm" finds the keeper.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _harness import ROOT, loopback_pod, ms, p90, print_table, ssh_argv, timed, wf

SWEEP_ID = "sweep-20261201T000000Z"


def synthetic_sweep(outputs: Path, runs: int, log_lines: int = 0) -> None:
    """A finished sweep of `runs` runs, written the way the pod agent writes one (for sweep.status); `log_lines`:
    each run also has a stdout.log of that many nanoGPT-style lines (`iter N: loss L, time T, mfu M`), whose
    last values sweep.status shows."""
    manifests = outputs / "_manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    ids = [f"s{i:04d}" for i in range(runs)]
    for rid in ids:
        d = outputs / rid
        d.mkdir(exist_ok=True)
        doc = json.dumps({"run_id": rid, "sweep_id": SWEEP_ID, "state": "success", "ok": True, "exit_code": 0,
                          "duration_secs": 1.0})
        (d / "status.json").write_text(doc)
        (d / "summary.json").write_text(doc)
        if log_lines:
            (d / "stdout.log").write_text("".join(f"iter {n}: loss {4 - n / log_lines:.4f}, time 12.3ms, mfu 1.2%\n"
                                                  for n in range(log_lines)))
    plan = {"sweep_id": SWEEP_ID, "runs": [{"run_id": r, "selected": True, "notes": ""} for r in ids], "queue": []}
    (manifests / "sweep-latest.json").write_text(json.dumps(plan))
    (manifests / f"{SWEEP_ID}.json").write_text(json.dumps(plan))
    (outputs / "_control" / "sweep.json").write_text(json.dumps({
        "sweep_id": SWEEP_ID, "state": "completed", "reason": "queue finished", "pid": 0,
        "started_at": "2026-12-01T00:00:00+00:00", "ended_at": "2026-12-01T00:01:00+00:00"}))


def baseline_run(checkout: Path, env: dict, *args: str) -> None:
    """`wfops ARGS` with the code of another checkout (`--baseline`: e.g. `git archive 821df59 | tar -x -C DIR`)."""
    res = subprocess.run([sys.executable, "-m", "wfops", *args], env={**env, "PYTHONPATH": str(checkout)},
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"baseline wfops {' '.join(args)} failed ({res.returncode}): {res.stderr}")


def read_only(env: dict, cold_env: dict, n: int, baseline: Path | None) -> list[list[str]]:
    """Each round runs warm, cold, keeper-start (and the baseline) one after the other: the same load for all."""
    rows = []
    samples = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), n)
    rows.append(["floor: `python -c pass`", ms(samples), p90(samples)])
    for label, args in (("fsm.status", ["fsm.status"]), ("task.status", ["task.status", "--id", "bench"]),
                        ("task.list", ["task.list"]), ("sweep.status, 1,000 runs", ["sweep.status"])):
        warm, cold, start, base = [], [], [], []
        wf(env, *args)
        if baseline:
            baseline_run(baseline, cold_env, *args)
        for _ in range(n):
            warm += timed(lambda args=args: wf(env, *args), 1, warmup=0)
            cold += timed(lambda args=args: wf(cold_env, *args), 1, warmup=0)
            wf(env, "disconnect")
            start += timed(lambda args=args: wf(env, *args), 1, warmup=0)
            if baseline:
                base += timed(lambda args=args: baseline_run(baseline, cold_env, *args), 1, warmup=0)
        rows.append([f"wfops {label}: warm", ms(warm), p90(warm)])
        rows.append([f"wfops {label}: cold (WF_PERSIST_SECS=0)", ms(cold), p90(cold)])
        rows.append([f"wfops {label}: cold, keeper start", ms(start), p90(start)])
        if baseline:
            rows.append([f"baseline {label} ({baseline.name})", ms(base), p90(base)])
    return rows


def agent_start(outputs: Path, n: int) -> list[list[str]]:
    sys.path.insert(0, str(ROOT))
    from wfops.transport.render import AGENT_CALL, agent

    home = outputs / "_control" / "agent" / agent().sha
    request = json.dumps({"cmd": "noop", "pod": {"out": str(outputs)}, "prelude": {"command": "fsm.status"},
                          "data": {}}) + "\n"
    show = dict(json.loads(request), cmd="fsm-show")
    py = "/usr/bin/python3"
    rows = []
    samples = timed(lambda: subprocess.run([py, "-I", "-S", "-c", "pass"], check=True), n)
    rows.append(["floor: `python3 -I -S -c pass` on the pod", ms(samples), p90(samples)])
    for label, req in (("agent noop (prelude only)", request), ("agent fsm-show", json.dumps(show) + "\n")):
        argv = [py, "-I", "-S", "-c", AGENT_CALL, str(home)]
        samples = timed(lambda req=req, argv=argv: subprocess.run(argv, input=req.encode(), check=True,
                                                                  capture_output=True), n)
        rows.append([label, ms(samples), p90(samples)])
    return rows


def watch_refresh(work: Path, n: int) -> list[list[str]]:
    """What one --watch refresh costs: one more exec on the open session (here through the warm keeper)."""
    sys.path.insert(0, str(ROOT))
    from wfops.settings.load import load_settings
    from wfops.transport.command import PodCommand

    settings = load_settings(work / "workflow.env")
    with PodCommand("sweep.status", settings) as cmd:
        samples = timed(lambda: cmd.call("sweep-status"), n)
    return [["sweep.status --watch: one refresh, 1,000 runs", ms(samples), p90(samples)]]


def fetch_rows(env: dict, work: Path, sshd, megabytes: int, n: int, rounds: int = 3) -> list[list[str]]:
    """Full copies interleaved with `ssh tar c | tar x` (`rounds`), then repeated fetches interleaved with a warm
    fsm.status (`n`): medians and their ratios."""
    outputs = work / "pod" / "outputs"
    big = outputs / "big"
    big.mkdir(parents=True, exist_ok=True)
    chunk = os.urandom(1 << 20)
    for f in range(5):
        with (big / f"blob{f}.bin").open("wb") as fh:
            for _ in range(megabytes // 5):
                fh.write(chunk)
    plan_path = outputs / "_manifests" / "sweep-latest.json"
    plan = json.loads(plan_path.read_text())
    plan["runs"].append({"run_id": "big", "selected": True, "notes": ""})
    plan_path.write_text(json.dumps(plan))
    size_mb = sum(p.stat().st_size for p in big.iterdir()) / 1e6
    local, plain_dest = work / "artifacts", work / "plain"

    def full() -> None:
        shutil.rmtree(local / "big", ignore_errors=True)
        wf(env, "run.fetch", "big")

    def plain() -> None:
        shutil.rmtree(plain_dest, ignore_errors=True)
        plain_dest.mkdir()
        cmd = " ".join(ssh_argv(sshd, f"tar -C {outputs} -cf - big")) + f" | tar -C {plain_dest} -xf -"
        subprocess.run(["bash", "-c", cmd], check=True)

    fetch_s, tar_s = [], []
    for _ in range(rounds):  # interleaved, so both see the same machine load
        fetch_s += timed(full, 1, warmup=0)
        tar_s += timed(plain, 1, warmup=0)
    wf(env, "run.fetch", "--all")
    wires = []

    def again() -> None:
        res = wf(env, "run.fetch", "--all")
        wires.append(int(re.search(r"([\d,]+) bytes on the wire", res.stderr).group(1).replace(",", "")))

    again_s, status_s = [], []
    wf(env, "fsm.status")
    for _ in range(n):  # interleaved with the warm read-only command it is compared with
        again_s += timed(again, 1, warmup=0)
        status_s += timed(lambda: wf(env, "fsm.status"), 1, warmup=0)
    changed_s, uncached_s = [], []
    first_run = outputs / "s0000" / "status.json"

    def one_changed(env_: dict) -> None:
        first_run.write_text(first_run.read_text() + " ")  # one file new on the pod: the fetch copies it
        res = wf(env_, "run.fetch", "--all")
        assert "1 file(s) new or changed" in res.stderr, res.stderr

    no_cache = {**env, "WFOPS_LEAN_CACHE": "0"}
    wf(no_cache, "run.fetch", "--all")
    for _ in range(n):  # what the cached fast path costs a fetch that does copy: the plan asked twice
        changed_s += timed(lambda: one_changed(env), 1, warmup=0)
        uncached_s += timed(lambda: one_changed(no_cache), 1, warmup=0)
    med = statistics.median
    return [
        [f"wfops run.fetch big: full copy of {size_mb:.0f} MB (warm)", f"{med(fetch_s) * 1000:.0f}",
         f"{size_mb / med(fetch_s):.0f} MB/s"],
        [f"ssh host tar c \\| tar x, {size_mb:.0f} MB", f"{med(tar_s) * 1000:.0f}", f"{size_mb / med(tar_s):.0f} MB/s"],
        ["full copy: wfops speed / tar speed (goal >= 0.95)", "", f"{med(tar_s) / med(fetch_s):.2f}x"],
        ["wfops run.fetch --all again, nothing changed (1,001 runs, warm)", ms(again_s),
         f"{max(wires)} bytes on the wire"],
        ["wfops fsm.status (warm), same rounds", ms(status_s), ""],
        ["repeated fetch / warm fsm.status (goal <= 1.2)", "", f"{med(again_s) / med(status_s):.2f}x"],
        ["wfops run.fetch --all, one file changed on the pod (warm)", ms(changed_s), ""],
        ["the same with WFOPS_LEAN_CACHE=0 (no plan asked first), same rounds", ms(uncached_s),
         f"{med(changed_s) / med(uncached_s):.2f}x"],
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--fetch-mb", type=int, default=200)
    ap.add_argument("--baseline", type=Path, help="a checkout of older code to measure beside (python -m wfops)")
    ap.add_argument("--fetch-only", action="store_true", help="only the run.fetch table")
    ap.add_argument("--fetch-rounds", type=int, default=3, help="interleaved rounds of the full copies")
    opts = ap.parse_args()
    n = opts.repeat
    with loopback_pod("ssh", WF_PERSIST_SECS="300") as (work, sshd, env):
        os.environ.update(WFOPS_KEEPER_DIR=env["WFOPS_KEEPER_DIR"], HOME=env["HOME"])  # for watch_refresh
        cold_cfg = work / "cold.env"
        cold_cfg.write_text((work / "workflow.env").read_text() + "WF_PERSIST_SECS=0\n")
        cold_env = {**env, "WORKFLOW_CONFIG": str(cold_cfg)}
        wf(env, "task.run", "--id", "bench", "--cmd", "echo hello")
        wf(env, "task.wait", "--id", "bench")
        wf(env, "fsm.reset", "CHECKED_OUT")
        synthetic_sweep(work / "pod" / "outputs", 1000)
        assert len(json.loads(wf(env, "sweep.status", "--json").stdout)["runs"]) == 1000
        if opts.fetch_only:
            print_table(f"run.fetch (median of {opts.fetch_rounds} interleaved rounds for the full copies)",
                        ["what", "ms", "rate / bytes"],
                        fetch_rows(env, work, sshd, opts.fetch_mb, n, opts.fetch_rounds))
            return
        rows = read_only(env, cold_env, n, opts.baseline)
        samples = timed(lambda: subprocess.run(ssh_argv(sshd, "true"), check=True), n)
        rows.append(["floor: OpenSSH `ssh host true`", ms(samples), p90(samples)])
        today = time.strftime("%Y-%m-%d")
        print_table(f"Read-only commands, warm and cold (loopback sshd, {n} runs each, {today})",
                    ["what", "median ms", "p90 ms"], rows)
        print_table("The pod agent's own start (python3 -I -S, this machine's system python)",
                    ["what", "median ms", "p90 ms"], agent_start(work / "pod" / "outputs", n))
        print_table("--watch", ["what", "median ms", "p90 ms"], watch_refresh(work, n))
        print_table(f"run.fetch (median of {opts.fetch_rounds} interleaved rounds for the full copies)",
                    ["what", "ms", "rate / bytes"],
                    fetch_rows(env, work, sshd, opts.fetch_mb, max(5, n // 3), opts.fetch_rounds))


if __name__ == "__main__":
    main()
