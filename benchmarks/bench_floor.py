"""wfops against its floors, in ONE run with interleaved rounds on one loopback pod (issue 24, part 7).

    .venv/bin/python benchmarks/bench_floor.py [--rounds 15] [--baseline DIR]

Each round runs, one after the other (so every row sees the same machine load): `python -c pass`; one exec over
an open OpenSSH ControlMaster (`ssh -S sock host true`); `ssh host true` cold; then for each code (this checkout,
and the baseline's): the first command that starts a keeper (after `wfops disconnect`); the code's warm commands
twice, untimed (so that its keeper, the pod's kept agent and what that agent keeps of the files it read are as a
user's would be: the two codes' keepers would replace each other's); for this checkout the stdlib-only prototype
client (benchmarks/proto_client.py: a command's cached script + request through the warm keeper, its answer
printed; one for each warm command below, so that each is measured against a prototype of the same command);
the warm read-only commands (fsm.status, task.list, sweep.status of 20 and of 1,000 runs, and of 1,000 runs that
each have a log of LOG_LINES lines, whose last metric values the table shows: each answers from its kept request,
wfops.leancache, as a command repeated with the same inputs does; for this checkout one row with
WFOPS_LEAN_CACHE=0: the lean path making settings, target and request); the same cold (WF_PERSIST_SECS=0).

`--baseline DIR`: a checkout of other code (`git archive COMMIT | tar -x -C DIR`), whose warm, cold and
keeper-start commands run in the same rounds (`python -m wfops` with PYTHONPATH=DIR), for BEFORE/AFTER rows of
one run. Every wfops row is a fresh process (`python -m wfops`, PYTHONPATH naming the checkout), so Python's
start and imports count. Prints one markdown table: medians, p90, and each row's ratio to its floor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _harness import ROOT, loopback_pod, print_table
from bench_commands import synthetic_sweep

PROTO = Path(__file__).resolve().parent / "proto_client.py"


def _run(argv: list[str], env: dict | None = None) -> None:
    res = subprocess.run(argv, env=env, capture_output=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.decode(errors='replace')}")


def wfops_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "wfops", *args]


def with_code(env: dict, checkout: Path) -> dict:
    return {**env, "PYTHONPATH": str(checkout)}


# the read-only commands measured warm, each with its own prototype: (label, command line, config file or None)
WARM = (("fsm.status", ["fsm.status"], None), ("task.list", ["task.list"], None),
        ("sweep.status, 20 runs", ["sweep.status"], "w20.env"), ("sweep.status, 1,000 runs", ["sweep.status"], None),
        ("sweep.status, 1,000 runs with logs", ["sweep.status"], "wlog.env"))
RACY_SECS = 2.0  # wfops/agent/filecache.py's (the baseline may have none: not imported from the checkout)
LOG_LINES = 2000  # each run's stdout.log in the "with logs" sweep (~100 KB: sweep.status reads its last 64 KB)


def proto_specs(work: Path, env: dict) -> dict[str, Path]:
    """Each warm row's prototype: exactly the script + request wfops sends for that command line (made here, once,
    the way the lean path makes them), for proto_client.py to send. {label: spec file}."""
    os.environ.update(WFOPS_KEEPER_DIR=env["WFOPS_KEEPER_DIR"], HOME=env["HOME"])
    sys.path.insert(0, str(ROOT))
    from wfops import lean
    from wfops.settings.load import load_settings
    from wfops.targets import resolve
    from wfops.transport import warm
    from wfops.transport.command import PodCommand

    specs: dict[str, Path] = {}
    for i, (label, argv, config) in enumerate(WARM):
        settings = load_settings(work / (config or "workflow.env"))
        target = resolve.target(settings, resolve.one(settings))
        parsed = lean.parse(argv)
        assert parsed is not None, argv
        command, values = parsed
        op, data = lean._Work(command, values, settings, target)._request()
        out = PodCommand(command, settings, target=target).call_text(op, data)
        specs[label] = work / f"proto{i}.json"
        specs[label].write_text(json.dumps({"sock": str(warm.socket_path(target)), "fp": warm.fingerprint(target),
                                            "persist": float(settings.wf_persist_secs), "script": out.text,
                                            "serve": out.serve}))
    return specs


def proto_name(label: str) -> str:
    return f"prototype: stdlib client, cached {label} script + request through the warm keeper"


def control_master(sshd, work: Path) -> tuple[list[str], list[str], list[str]]:
    """(argv of one exec over the master, argv that ends the master, argv of a cold `ssh host true`); the master
    is open on return."""
    sock = str(work / "cm.sock")
    plain = ["ssh", "-q", "-i", str(sshd.key), "-p", str(sshd.port), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]
    base = [*plain, "-o", f"ControlPath={sock}"]
    host = f"{sshd.user}@{sshd.host}"
    _run([*base, "-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-fN", host])
    return [*base, "-S", sock, host, "true"], [*base, "-O", "exit", host], [*plain, host, "true"]


def ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))] * 1000


def measure(rounds: int, cases: list[tuple[str, Callable[[], None], Callable[[], None] | None]]) -> dict[str, list]:
    """Every case once a round, in order (a case's `before` runs untimed just before it); one warm-up round."""
    samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for r in range(rounds + 1):
        for name, fn, before in cases:
            if before is not None:
                before()
            t0 = time.perf_counter()
            fn()
            if r:
                samples[name].append(time.perf_counter() - t0)
    return samples


def build_cases(work: Path, sshd, env: dict, baseline: Path | None, cm_exec: list[str], ssh_true: list[str],
                specs: dict[str, Path]) -> list:
    cold = {**env, "WORKFLOW_CONFIG": str(work / "cold.env")}
    cases: list = [
        ("floor: `python -c pass`", lambda: _run([sys.executable, "-c", "pass"]), None),
        ("floor: one exec over an OpenSSH ControlMaster (`ssh -S sock host true`)", lambda: _run(cm_exec), None),
        ("floor: `ssh host true` (cold)", lambda: _run(ssh_true), None),
    ]
    codes = [("wfops", ROOT)] + ([("baseline", baseline)] if baseline else [])
    for who, checkout in codes:
        # each code's block starts its own keeper (the two codes' keepers would replace each other's), then runs
        # its warm commands once untimed: the keeper, its kept agent and what that agent keeps are as a user's
        e, c = with_code(env, checkout), with_code(cold, checkout)
        warm = [(label, args, {**e, "WORKFLOW_CONFIG": str(work / config)} if config else e)
                for label, args, config in WARM]
        cases.append((f"{who} fsm.status: first command, starts the keeper",
                      lambda x=e: _run(wfops_argv("fsm.status"), x),
                      lambda x=e: _run(wfops_argv("disconnect"), x)))
        timed = [(f"{who} {label}: warm", lambda a=args, x=x: _run(wfops_argv(*a), x)) for label, args, x in warm]
        if who == "wfops":  # the prototypes send this code's scripts; the lean path without its kept request
            timed = [(proto_name(label), lambda x=spec: _run([sys.executable, str(PROTO), str(x)]))
                     for label, spec in specs.items()] + timed
            nocache = {**e, "WFOPS_LEAN_CACHE": "0"}
            timed.append(("wfops fsm.status: warm, nothing kept (WFOPS_LEAN_CACHE=0)",
                          lambda x=nocache: _run(wfops_argv("fsm.status"), x)))
        warm_up = [lambda a=args, x=x: _run(wfops_argv(*a), x) for _, args, x in warm] * 2  # the 2nd: kept agent up
        cases += [(name, fn, (lambda w=warm_up: [f() for f in w]) if i == 0 else None)
                  for i, (name, fn) in enumerate(timed)]
        for label, args in (("fsm.status", ["fsm.status"]), ("sweep.status, 1,000 runs", ["sweep.status"])):
            cases.append((f"{who} {label}: cold (WF_PERSIST_SECS=0)", lambda a=args, x=c: _run(wfops_argv(*a), x),
                          None))
    return cases


def rows_of(samples: dict[str, list], baseline: bool) -> list[list[str]]:
    pass_ms = ms(samples["floor: `python -c pass`"])
    cm_ms = ms(samples["floor: one exec over an OpenSSH ControlMaster (`ssh -S sock host true`)"])
    ssh_ms = ms(samples["floor: `ssh host true` (cold)"])
    floor6 = 6 * pass_ms + cm_ms
    rows = []
    for name, xs in samples.items():
        med = ms(xs)
        ratio = ""
        who = name.split(" ", 1)[0]
        if name.endswith(": warm") or "nothing kept" in name:
            label = name.split(" ", 1)[1].split(":", 1)[0]  # "wfops sweep.status, 20 runs: warm" -> its command
            ratio = f"{med / ms(samples[proto_name(label)]):.2f}x its proto; {med / floor6:.2f}x (6·pass + CM exec)"
            if "1,000 runs" in name:
                twenty = ms(samples[f"{who} sweep.status, 20 runs: warm"])
                ratio += f"; {med / twenty:.2f}x its 20-run row"
        elif "cold (WF_PERSIST" in name:
            ratio = f"ssh true + {med - ssh_ms:.0f} ms"
        elif "starts the keeper" in name:
            ratio = f"{med / ms(samples[f'{who} fsm.status: cold (WF_PERSIST_SECS=0)']):.2f}x its cold row"
        elif name.startswith("prototype"):
            ratio = f"{med / floor6:.2f}x (6·pass + CM exec)"
        if baseline and who == "wfops" and name.replace("wfops", "baseline", 1) in samples:
            ratio += f"; {med / ms(samples[name.replace('wfops', 'baseline', 1)]):.2f}x the baseline's row"
        rows.append([name, f"{med:.0f}", f"{p90(xs):.0f}", ratio])
    return rows


def goals(samples: dict[str, list], baseline: bool) -> list[list[str]]:
    """The issue's goals (issue 24), each with this run's figure for wfops (and the baseline) and whether it is met."""
    ssh = ms(samples["floor: `ssh host true` (cold)"])
    rows: list[list] = []
    for who in ("wfops", "baseline") if baseline else ("wfops",):
        warm = [ms(samples[f"{who} {x}: warm"]) / ms(samples[proto_name(x)]) for x, _, _ in WARM]
        twenty = ms(samples[f"{who} sweep.status, 20 runs: warm"])
        big = ms(samples[f"{who} sweep.status, 1,000 runs: warm"]) / twenty
        logs = ms(samples[f"{who} sweep.status, 1,000 runs with logs: warm"]) / twenty
        cold = ms(samples[f"{who} fsm.status: cold (WF_PERSIST_SECS=0)"])
        first = ms(samples[f"{who} fsm.status: first command, starts the keeper"]) / cold
        rows += [
            [f"{who}: warm read-only <= 1.3x the stdlib prototype", " / ".join(f"{r:.2f}x" for r in warm),
             max(warm) <= 1.3],
            [f"{who}: sweep.status of 1,000 runs <= 1.5x its 20-run row", f"{big:.2f}x (with logs: {logs:.2f}x)",
             big <= 1.5],
            [f"{who}: cold <= `ssh host true` + 150 ms", f"+ {cold - ssh:.0f} ms", cold - ssh <= 150],
            [f"{who}: the first command (it starts the keeper) <= a cold one", f"{first:.2f}x", first <= 1],
        ]
    return [[label, figure, "yes" if met else "no"] for label, figure, met in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--baseline", type=Path, help="a checkout of other code, measured in the same rounds")
    opts = ap.parse_args()
    with loopback_pod("ssh", WF_PERSIST_SECS="300") as (work, sshd, env):
        # every process runs in the pod's temp dir: `python -m wfops` puts its working directory first on sys.path,
        # so run from a checkout it would import that checkout's wfops whatever PYTHONPATH says
        os.chdir(work)
        base_cfg = (work / "workflow.env").read_text()
        (work / "cold.env").write_text(base_cfg + "WF_PERSIST_SECS=0\n")
        e = with_code(env, ROOT)
        for config, outputs, runs, lines in (("workflow.env", "outputs", 1000, 0), ("w20.env", "outputs20", 20, 0),
                                             ("wlog.env", "outputslog", 1000, LOG_LINES)):
            out = work / "pod" / outputs
            # each sweep on its own outputs dir, with its own config file on the pod
            (work / config).write_text(base_cfg.replace(str(work / "pod" / "outputs"), str(out)).replace(
                str(work / "pod" / "project.env"), str(work / "pod" / f"{outputs}.env")))
            x = {**e, "WORKFLOW_CONFIG": str(work / config)}
            _run(wfops_argv("task.run", "--id", "bench", "--cmd", "echo hello"), x)
            _run(wfops_argv("task.wait", "--id", "bench"), x)
            _run(wfops_argv("fsm.reset", "CHECKED_OUT"), x)
            synthetic_sweep(out, runs, lines)
        # the pod's kept agent keeps what it parsed only of files quiet for RACY_SECS (wfops/agent/filecache.py):
        # measured once they are, as a sweep's finished runs are
        newest = max(p.stat().st_ctime for p in (work / "pod").rglob("*"))
        time.sleep(max(0.0, newest + RACY_SECS - time.time()))
        specs = proto_specs(work, env)
        cm_exec, cm_exit, ssh_true = control_master(sshd, work)
        lean = subprocess.run([sys.executable, "-X", "importtime", "-m", "wfops", "fsm.status"], env=e,
                              capture_output=True, text=True).stderr
        lean = subprocess.run([sys.executable, "-X", "importtime", "-m", "wfops", "fsm.status"], env=e,
                              capture_output=True, text=True).stderr  # the second: its kept request (a hit)
        path = ("full (invoke imported)" if "| invoke" in lean else "lean (no invoke imported)"
                if "| wfops.settings.load" in lean else "cached lean (neither invoke nor the settings imported)")
        try:
            cases = build_cases(work, sshd, env, opts.baseline, cm_exec, ssh_true, specs)
            load = os.getloadavg()[0]
            samples = measure(opts.rounds, cases)
            load_end = os.getloadavg()[0]
        finally:
            subprocess.run(cm_exit, capture_output=True)
        today = time.strftime("%Y-%m-%d %H:%M")
        print_table(f"wfops against its floors ({opts.rounds} interleaved rounds, loopback sshd, {today}; "
                    f"load average {load:.1f} → {load_end:.1f})",
                    ["what", "median ms", "p90 ms", "ratio (same run)"], rows_of(samples, opts.baseline is not None))
        print_table("The goals of issue 24 in this run (warm: fsm.status / task.list / sweep.status of 20 / of 1,000 "
                    "runs, each against its own prototype)",
                    ["goal", "this run", "met?"], goals(samples, opts.baseline is not None))
        print(f"\nA warm `wfops fsm.status` of this checkout took the {path} path.")


if __name__ == "__main__":
    main()
