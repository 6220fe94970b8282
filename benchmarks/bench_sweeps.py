"""Sweep costs against the loopback sshd, each beside its plain-shell baseline, in the same run.

    .venv/bin/python benchmarks/bench_sweeps.py [--runs 10] [--fetch-mb 500]

1. Per-run overhead of the queue: N runs of a training script that exits at once, through the wfops
   runner, versus the same N torchrun commands in a plain shell loop.
2. `sweep.status` wall time for 10, 100 and 1,000 runs (synthetic run directories).
3. `run.fetch` of one large run directory versus `ssh host tar c | tar x`.
4. `sweep.start` wall time for 10, 1,000 and 10,000 runs (`--start-sizes`; each sweep is stopped again, untimed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _harness import ROOT, loopback_pod, ms, print_table, ssh_argv, timed, wf

NOOP = "import sys\n# exits at once: the benchmark measures everything around the training\n"


def make_repo(base: Path, scripts: dict[str, str] | None = None) -> str:
    """A bare git repo of the bundled example plus `scripts` (name -> text) in its training workdir."""
    src = base / "src"
    shutil.copytree(ROOT / "examples" / "nanogpt-repo", src)
    for name, text in {"noop.py": NOOP, **(scripts or {})}.items():
        (src / "examples" / "nanogpt" / name).write_text(text)
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x.invalid", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x.invalid"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=src, check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(base / "repo.git")], check=True)
    return f"file://{base / 'repo.git'}"


def wait_completed(sweep_json: Path, sweep_id: str) -> None:
    while True:
        try:
            data = json.loads(sweep_json.read_text())
            if data.get("sweep_id") == sweep_id and data.get("state") != "running":
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.02)


def run_sweep(env: dict, outputs: Path, csv: Path, n: int) -> tuple[float, float]:
    """(seconds for `wfops sweep.start`, seconds until the queue finished), both from the start."""
    csv.write_text("run_id,config,seed,overrides,notes\n"
                   + "".join(f"r{i:03d},config/train_tiny.py,{i},,\n" for i in range(n)))
    t0 = time.perf_counter()
    started = wf(env, "sweep.start", "--csv", str(csv), "--json")
    t_start = time.perf_counter() - t0
    wait_completed(outputs / "_control" / "sweep.json", json.loads(started.stdout)["sweep_id"])
    return t_start, time.perf_counter() - t0


def bench_overhead(env: dict, work: Path, n: int, rounds: int = 3) -> None:
    """Queue and plain loop alternate `rounds` times; every figure is the median over the rounds, each round's
    figures taken from that round (no best-of per metric)."""
    outputs = work / "pod" / "outputs"
    workdir = work / "pod" / "repo" / "examples" / "nanogpt"
    venv_py = work / "pod" / "repo" / ".venv" / "bin" / "python"
    loop = (f"export GLOO_SOCKET_IFNAME=lo; cd {workdir}; for i in $(seq {n}); do "
            f"{venv_py} -m torch.distributed.run --standalone --nproc_per_node=2 noop.py "
            f"config/train_tiny.py out_dir={work}/loop/$i seed=$i >/dev/null 2>&1 || exit 1; done")
    per_round = []  # (start, queue, queue time outside the runs, loop), seconds
    for _ in range(rounds):  # SWEEP_FORCE=1 (see main): every round runs every row again
        t_start, t_queue = run_sweep(env, outputs, work / "bench.csv", n)
        runs = sum(json.loads((outputs / f"r{i:03d}" / "status.json").read_text())["duration_secs"] for i in range(n))
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", loop], check=True)
        per_round.append((t_start, t_queue, t_queue - t_start - runs, time.perf_counter() - t0))
    med = lambda i: statistics.median(r[i] for r in per_round)  # noqa: E731
    against_loop = statistics.median((q - s - lp) / n for s, q, _, lp in per_round)
    per = lambda t: f"{t / n * 1000:.0f}"  # noqa: E731
    print_table(f"Per-run overhead of the queue ({n} runs of a script that exits at once, 2 processes each; "
                f"median of {rounds} rounds)", ["what", "total s", "per run ms"], [
                    ["**overhead per run against a plain shell loop: (queue - start - loop) / N**", "-",
                     f"**{against_loop * 1000:.0f}**"],
                    ["plain shell loop of the same torchrun commands", f"{med(3):.2f}", per(med(3))],
                    ["wfops sweep.start → queue finished (incl. the sweep.start command)", f"{med(1):.2f}",
                     per(med(1))],
                    ["of which `wfops sweep.start` itself", f"{med(0):.2f}", "-"],
                    ["beside it, the queue's own accounting: (queue - start - sum of run durations) / N", "-",
                     per(med(2))],
                ])


def bench_status(env: dict, work: Path, sshd) -> None:
    outputs = work / "pod" / "outputs"
    plan_path = outputs / "_manifests" / "sweep-latest.json"
    if not plan_path.exists():
        run_sweep(env, outputs, work / "one.csv", 1)
    plan = json.loads(plan_path.read_text())
    rows = []
    for size in (10, 100, 1000):
        runs = []
        for i in range(size):
            rid = f"s{i:04d}"
            d = outputs / rid
            d.mkdir(exist_ok=True)
            doc = json.dumps({"run_id": rid, "sweep_id": plan["sweep_id"], "state": "success", "ok": True,
                              "exit_code": 0, "duration_secs": 1.0})
            (d / "status.json").write_text(doc)
            (d / "summary.json").write_text(doc)
            runs.append({"run_id": rid, "selected": True, "notes": ""})
        plan_path.write_text(json.dumps(dict(plan, runs=runs)))
        samples = timed(lambda: wf(env, "sweep.status", "--json"), 7)
        rows.append([f"wfops sweep.status, {size} runs", ms(samples)])
    samples = timed(lambda: subprocess.run(ssh_argv(sshd, "true"), check=True), 7)
    rows.append(["floor: OpenSSH `ssh host true`", ms(samples)])
    print_table("sweep.status: one connection, one exec, whatever the number of runs", ["what", "median ms"], rows)


def bench_start(env: dict, work: Path, sizes=(10, 1000, 10000), repeat: int = 3) -> None:
    csv = work / "start.csv"
    rows = []
    for size in sizes:
        csv.write_text("run_id,config,seed,overrides,notes\n"
                       + "".join(f"s{i:05d},config/train_tiny.py,{i},lr=0.001 batch_size=8,row {i}\n"
                                 for i in range(size)))
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            wf(env, "sweep.start", "--csv", str(csv))
            samples.append(time.perf_counter() - t0)
            wf(env, "sweep.stop")
        rows.append([f"wfops sweep.start, {size:,} runs ({csv.stat().st_size / 1e3:.0f} kB CSV)",
                     ms(samples)])
    print_table(f"sweep.start: validate, upload the manifest, start the queue (median of {repeat})",
                ["what", "median ms"], rows)


def bench_fetch(env: dict, work: Path, sshd, megabytes: int) -> None:
    outputs = work / "pod" / "outputs"
    big = outputs / "big"
    big.mkdir(parents=True)
    chunk = os.urandom(1 << 20)
    for f in range(5):
        with (big / f"blob{f}.bin").open("wb") as fh:
            for _ in range(megabytes // 5):
                fh.write(chunk)
    size_mb = sum(p.stat().st_size for p in big.iterdir()) / 1e6
    dest = work / "plain"

    def plain() -> None:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        cmd = " ".join(ssh_argv(sshd, f"tar -C {outputs} -cf - big")) + f" | tar -C {dest} -xf -"
        subprocess.run(["bash", "-c", cmd], check=True)

    def full_fetch() -> None:
        shutil.rmtree(work / "artifacts" / "big", ignore_errors=True)  # run.fetch sends only what changed
        wf(env, "run.fetch", "big")

    fetch = timed(full_fetch, 3)
    tar = timed(plain, 3)
    med = lambda s: sorted(s)[len(s) // 2]  # noqa: E731
    print_table(f"run.fetch of a {size_mb:.0f} MB run directory (median of 3)", ["what", "s", "MB/s"], [
        ["wfops run.fetch big", f"{med(fetch):.2f}", f"{size_mb / med(fetch):.0f}"],
        ["ssh host tar c \\| tar x", f"{med(tar):.2f}", f"{size_mb / med(tar):.0f}"],
    ])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--fetch-mb", type=int, default=500)
    ap.add_argument("--parts", default="overhead,start,status,fetch", help="a comma-separated subset")
    ap.add_argument("--start-sizes", default="10,1000,10000", help="sweep sizes for the sweep.start part")
    opts = ap.parse_args()
    parts = set(opts.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="wfops-bench-repo-") as repo_tmp:
        url = make_repo(Path(repo_tmp))
        extra = {"REPO_URL": url, "REMOTE_PYTHON_BIN": os.environ.get("WFOPS_TEST_POD_PYTHON", "/usr/bin/python3"),
                 "CPU_ONLY": "1", "TRAIN_NPROC": "2", "TRAIN_SCRIPT": "noop.py", "DOWNLOAD_FINEWEB": "1",
                 "REPO_INSTALL_CMD": "true", "SWEEP_FORCE": "1"}
        with loopback_pod("ssh", **extra) as (work, sshd, env):
            wf(env, "checkout")
            if "overhead" in parts:
                bench_overhead(env, work, opts.runs)
            if "start" in parts:
                bench_start(env, work, tuple(int(x) for x in opts.start_sizes.split(",")))
            if "status" in parts:
                bench_status(env, work, sshd)
            if "fetch" in parts:
                bench_fetch(env, work, sshd, opts.fetch_mb)


if __name__ == "__main__":
    main()
