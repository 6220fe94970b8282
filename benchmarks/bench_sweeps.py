"""Sweep costs against the loopback sshd, each beside its plain-shell baseline, in the same run.

    .venv/bin/python benchmarks/bench_sweeps.py [--runs 10] [--rounds 3] [--fetch-mb 500] [--baseline DIR]

1. Per-run overhead of the queue: N runs of a training script that exits at once, through the wfops
   queue, versus a plain shell loop of exactly the command lines the queue ran (each run's command.sh: the same
   torchrun flags, rendezvous, rank prefixes and env file), with a breakdown by part: loops that add one thing
   at a time (the explicit rendezvous, --tee with rank prefixes, the run's supervisor) and the queue around
   them. `--baseline DIR` (`git archive COMMIT | tar -x -C DIR`) runs that code's queue too, in every round.
   Part `supervisor`: a run's supervisor alone around `bash -c true`, as a new Python and as a fork, interleaved.
2. `sweep.status` wall time for 10, 100 and 1,000 runs (synthetic run directories).
3. `run.fetch` of one large run directory versus `ssh host tar c | tar x`.
4. `sweep.start` wall time for 10, 1,000 and 10,000 runs (`--start-sizes`; each sweep is stopped again, untimed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import ROOT, loopback_pod, ms, print_table, ssh_argv, timed, wf

POD_PYTHON = os.environ.get("WFOPS_TEST_POD_PYTHON", "/usr/bin/python3")
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


def baseline_wf(checkout: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """`wfops ARGS` with the code of another checkout (`--baseline DIR`: `git archive COMMIT | tar -x -C DIR`); its
    own pod agent travels with it."""
    res = subprocess.run([sys.executable, "-m", "wfops", *args], env={**env, "PYTHONPATH": str(checkout)},
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"baseline wfops {' '.join(args)} failed ({res.returncode}): {res.stderr}")
    return res


def run_sweep(env: dict, outputs: Path, csv: Path, n: int, baseline: Path | None = None) -> tuple[float, float]:
    """(seconds for `wfops sweep.start`, seconds until the queue finished), both from the start."""
    csv.write_text("run_id,config,seed,overrides,notes\n"
                   + "".join(f"r{i:03d},config/train_tiny.py,{i},,\n" for i in range(n)))
    t0 = time.perf_counter()
    started = (baseline_wf(baseline, env, "sweep.start", "--csv", str(csv), "--json") if baseline
               else wf(env, "sweep.start", "--csv", str(csv), "--json"))
    t_start = time.perf_counter() - t0
    wait_completed(outputs / "_control" / "sweep.json", json.loads(started.stdout)["sweep_id"])
    return t_start, time.perf_counter() - t0


RDZV_RE = re.compile(r" --nnodes=1 (--nproc-per-node=\d+) --rdzv-backend=c10d \S+ \S+ --rdzv-conf=is_host=1")
TEE_RE = re.compile(r" --tee=3 --log-dir=\S+")
PREFIX_RE = re.compile(r"^export TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE=.*\n", re.M)
# the loops of the breakdown, each one thing more than the row before; "exact" is the baseline of the headline
VARIANTS = [("standalone", "a loop of `torchrun --standalone` (the baseline before: not the queue's command line)"),
            ("sh_standalone", "the queue's command.sh, but `--standalone` and no `--tee`/rank prefix"),
            ("sh_rdzv", "+ the queue's explicit c10d rendezvous (`--rdzv-endpoint=localhost:PORT`, is_host=1)"),
            ("exact", "+ `--tee=3 --log-dir=ranks/` and the rank prefix: **exactly the queue's command.sh**"),
            ("supervised", "+ the run's supervisor as a new Python (`agent supervise spec.json`, as the queue ran it "
                           "before acb662b): status, stamped log, summary")]


def loop_commands(work: Path, n: int, round_no: int, tag: str = "") -> dict[str, list[str]]:
    """The command lines of the breakdown's loops, made from the command.sh and spec.json the queue just ran: the
    same words, the run dir replaced by a dir of the loop's own."""
    outputs = work / "pod" / "outputs"
    workdir = work / "pod" / "repo" / "examples" / "nanogpt"
    venv_py = work / "pod" / "repo" / ".venv" / "bin" / "python"
    mine = (ROOT / "wfops" / "agent" / "supervisor.py").read_bytes()  # this code's agent (not --baseline's)
    agent = next(p for p in work.glob("**/wfops_agent/supervisor.py") if p.read_bytes() == mine).parent.parent
    call = "import sys; sys.path.insert(0, sys.argv.pop(1)); from wfops_agent.__main__ import main; main()"
    loops: dict[str, list[str]] = {name: [] for name, _ in VARIANTS}
    for i in range(n):
        rid = f"r{i:03d}"
        run_dir = str(outputs / rid)
        text = (outputs / rid / "command.sh").read_text()
        spec = (outputs / rid / "spec.json").read_text()
        for name, _ in VARIANTS:
            d = work / "loop" / f"{round_no}-{name}{tag}" / rid
            d.mkdir(parents=True)
            line = text.replace(run_dir, str(d))
            if name.startswith("sh_"):
                line = PREFIX_RE.sub("", TEE_RE.sub("", line))
            if name == "sh_standalone":
                line = RDZV_RE.sub(r" --standalone \1", line)
                assert "--standalone" in line, line
            (d / "command.sh").write_text(line)
            if name == "standalone":
                loops[name].append(f"cd {workdir} && {venv_py} -m torch.distributed.run --standalone "
                                   f"--nproc_per_node=2 noop.py config/train_tiny.py out_dir={d} seed={i} "
                                   f">{d}/stdout.log 2>&1 || exit 1")
            elif name == "supervised":
                (d / "spec.json").write_text(spec.replace(run_dir, str(d)))
                loops[name].append(f"{POD_PYTHON} -I -S -c {shlex.quote(call)} {agent} supervise {d}/spec.json "
                                   "</dev/null || exit 1")
            else:
                loops[name].append(f"bash {d}/command.sh >{d}/stdout.log 2>&1 </dev/null || exit 1")
    return loops


def run_loops(work: Path, loops: dict[str, list[str]], n: int, sshd=None) -> dict[str, float]:
    """One plain bash script runs every loop, interleaved: run i of each variant in turn (the first variant
    rotates), each timed by bash itself ($EPOCHREALTIME); returns each loop's total seconds. With `sshd` the
    script runs over SSH on the pod, in the environment a pod command (and the queue's tmux) has there."""
    names, times = list(loops), work / "loop" / "times.txt"
    lines = ["export GLOO_SOCKET_IFNAME=lo"]
    for i in range(n):
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            lines.append(f"s=$EPOCHREALTIME; {loops[name][i]}; echo \"{name} $s $EPOCHREALTIME\" >>{times}")
    times.unlink(missing_ok=True)
    if sshd is None:
        subprocess.run(["bash", "-c", "\n".join(lines)], check=True)
    else:
        subprocess.run(ssh_argv(sshd, "bash -s"), input="\n".join(lines) + "\n", text=True, check=True)
    out = dict.fromkeys(names, 0.0)
    for row in times.read_text().split("\n"):
        if row:
            name, t0, t1 = row.split()
            out[name] += float(t1) - float(t0)
    return out


def queue_round(env: dict, work: Path, n: int, baseline: Path | None) -> dict[str, float]:
    """One sweep of N runs through the queue (this code's, or --baseline's): its figures, in seconds."""
    outputs = work / "pod" / "outputs"
    t_start, t_queue = run_sweep(env, outputs, work / "bench.csv", n, baseline)
    runs = sum(json.loads((outputs / f"r{i:03d}" / "status.json").read_text())["duration_secs"] for i in range(n))
    key = "base_" if baseline else ""
    return {key + "queue": t_queue - t_start, key + "start": t_start, key + "own": t_queue - t_start - runs}


def bench_overhead(env: dict, work: Path, n: int, rounds: int = 3, baseline: Path | None = None, sshd=None) -> None:
    """Each round: the queue (and the --baseline code's queue) and the loop of exactly its command lines, one
    right after the other (the order turns each round: this machine's load moves by seconds a run within
    minutes), then the breakdown's loops (VARIANTS) interleaved; every figure is the median over the rounds of
    that round's figure."""
    outputs = work / "pod" / "outputs"
    per_round = []
    for r in range(rounds):  # SWEEP_FORCE=1 (see main): every round runs every row again
        got: dict[str, float] = {}
        if not (outputs / "r000" / "command.sh").exists():
            queue_round(env, work, n, None)  # the loops are made from the queue's command lines: one queue first
        steps: list[Path | str | None] = [None, "exact"] + ([baseline] if baseline else [])
        for step in steps[::-1] if r % 2 else steps:
            if step == "exact":
                got["exact_next"] = run_loops(work, {"exact": loop_commands(work, n, r, "-next")["exact"]}, n, sshd)[
                    "exact"]
            else:
                got.update(queue_round(env, work, n, step if isinstance(step, Path) else None))
        got.update(run_loops(work, loop_commands(work, n, r), n, sshd))
        per_round.append(got)
    med = lambda key: statistics.median(g[key] for g in per_round)  # noqa: E731
    per = lambda key: f"{med(key) / n * 1000:.0f}"  # noqa: E731
    over = lambda key, base: f"{statistics.median((g[key] - g[base]) / n for g in per_round) * 1000:+.0f}"  # noqa: E731
    rows = [["**queue overhead a run: (queue - sweep.start - the loop of exactly its command lines, run beside it) "
             "/ N**", f"{med('exact_next'):.2f}", per("exact_next"), f"**{over('queue', 'exact_next')}**"]]
    if baseline:
        rows.append([f"the same for the --baseline code ({baseline.name}), the same loop", "-", "-",
                     over("base_queue", "exact_next")])
    before = None
    for name, what in VARIANTS:
        rows.append([what, f"{med(name):.2f}", per(name), over(name, before) if before else "-"])
        before = name
    rows.append(["+ the queue: sweep.start → queue finished, less the sweep.start command", f"{med('queue'):.2f}",
                 per("queue"), over("queue", "supervised")])
    rows.append(["beside it: the queue's own accounting, (queue - sum of the runs' recorded durations) / N", "-",
                 per("own"), "-"])
    if baseline:
        rows.append([f"--baseline code ({baseline.name}): its queue, less its sweep.start", f"{med('base_queue'):.2f}",
                     per("base_queue"), over("base_queue", "queue") + " against this code's"])
        rows.append(["--baseline code: its own accounting", "-", per("base_own"), "-"])
    print_table(f"Per-run overhead of the queue ({n} runs of a script that exits at once, 2 processes each; "
                f"median of {rounds} rounds; `wfops sweep.start` itself {med('start') * 1000:.0f} ms)",
                ["what", "total s", "per run ms", "against the row above, ms a run"], rows)


SUPERVISOR_DRIVER = """
import json, os, statistics, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from wfops.agent import forkrun, launch, procs, store
work, repeat = sys.argv[2], int(sys.argv[3])
procs.become_subreaper()  # as the queue is (and so with ctypes imported, as in the queue)
ways = {"plain": lambda spec: subprocess.run(["bash", "-c", "true"]).returncode,
        "exec": lambda spec: subprocess.run(launch.agent_argv("supervise", spec), stdin=subprocess.DEVNULL).returncode,
        "fork": lambda spec: os.waitpid(forkrun.fork_run(spec, dict(os.environ)).pid, 0)[1]}
took = {w: [] for w in ways}
for k in range(repeat):
    for j in range(len(ways)):
        way = list(ways)[(k + j) % len(ways)]
        d = os.path.join(work, "%s-%d" % (way, k))
        os.makedirs(d)
        spec = {"argv": ["bash", "-c", "true"], "status": d + "/status.json", "log": d + "/stdout.log", "summary": True,
                "grace": 20, "watch_dir": d, "checkout": {"root": sys.argv[1] + "/examples", "skip": []}}
        store.write_json(d + "/spec.json", spec)
        t0 = time.perf_counter()
        rc = ways[way](d + "/spec.json")
        took[way].append(time.perf_counter() - t0)
        assert rc == 0 and (way == "plain" or json.load(open(d + "/summary.json"))["ok"]), (way, rc)
print(json.dumps({w: statistics.median(t) for w, t in took.items()}))
"""


def bench_supervisor(work: Path, repeat: int = 30) -> None:
    """A run's supervisor alone, around `bash -c true`: started as a new Python (`agent supervise SPEC`, the queue
    before acb662b and a tracked task now) and forked from a running Python (the queue now), interleaved."""
    (work / "sup").mkdir(exist_ok=True)
    out = subprocess.run([POD_PYTHON, "-I", "-S", "-c", SUPERVISOR_DRIVER, str(ROOT), str(work / "sup"), str(repeat)],
                         capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    print_table(f"A run's supervisor around `bash -c true` (median of {repeat}, interleaved; the pod's python)",
                ["what", "median ms", "over plain bash, ms"], [
                    ["`bash -c true` alone", f"{got['plain'] * 1000:.1f}", "-"],
                    ["supervised as a new Python (`agent supervise spec.json`; the queue before acb662b)",
                     f"{got['exec'] * 1000:.1f}", f"{(got['exec'] - got['plain']) * 1000:+.1f}"],
                    ["supervised by a fork of the queue (`forkrun.fork_run`; the queue now)",
                     f"{got['fork'] * 1000:.1f}", f"{(got['fork'] - got['plain']) * 1000:+.1f}"],
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
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the overhead part")
    ap.add_argument("--loop-env", choices=("pod", "here"), default="pod", help="the loops run over SSH on the pod, in "
                    "the environment the queue's runs have (pod), or in this process's environment (here)")
    ap.add_argument("--baseline", type=Path, help="a checkout of older code whose queue runs beside, each round "
                    "(`git archive COMMIT | tar -x -C DIR`)")
    ap.add_argument("--parts", default="supervisor,overhead,start,status,fetch", help="a comma-separated subset")
    ap.add_argument("--start-sizes", default="10,1000,10000", help="sweep sizes for the sweep.start part")
    opts = ap.parse_args()
    parts = set(opts.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="wfops-bench-repo-") as repo_tmp:
        url = make_repo(Path(repo_tmp))
        extra = {"REPO_URL": url, "REMOTE_PYTHON_BIN": POD_PYTHON,
                 "CPU_ONLY": "1", "TRAIN_NPROC": "2", "TRAIN_SCRIPT": "noop.py", "DOWNLOAD_FINEWEB": "1",
                 "REPO_INSTALL_CMD": "true", "SWEEP_FORCE": "1"}
        with loopback_pod("ssh", **extra) as (work, sshd, env):
            wf(env, "checkout")
            if "supervisor" in parts:
                bench_supervisor(work)
            if "overhead" in parts:
                pod_env = sshd if opts.loop_env == "pod" else None
                bench_overhead(env, work, opts.runs, opts.rounds, opts.baseline, pod_env)
            if "start" in parts:
                bench_start(env, work, tuple(int(x) for x in opts.start_sizes.split(",")))
            if "status" in parts:
                bench_status(env, work, sshd)
            if "fetch" in parts:
                bench_fetch(env, work, sshd, opts.fetch_mb)


if __name__ == "__main__":
    main()
