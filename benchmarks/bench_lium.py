"""Lium targets: the real `lium` CLI against the tests' fake Lium API on loopback, the tests' loopback sshd
playing the pod.

    .venv/bin/python benchmarks/bench_lium.py [--rounds 7]

Prints two markdown tables (the numbers of docs/lium.md and the README's Lium paragraph):

1. the cost of resolving `LIUM_TARGET`: one `lium ps --format json` (and, beside it, one `lium exec`), and
   `wfops fsm.status` (a fresh
   process each time, as a user runs it) with an `OPS_DEFAULT_HOST` target (the baseline), a Lium target
   with a cold resolution cache (one `lium ps`) and a warm one (no lium call) -- each command making its
   own SSH connection (`WF_PERSIST_SECS=0`), then the same with the connection kept warm between commands
   (`WF_PERSIST_SECS=300`, the default); then the resolution alone, in this process
   (`wfops.targets.lium_pods.resolve`): a `lium ps` against the cache;
2. an outage: the API answers 502, 503 or 429 on every call, or hangs (`LIUM_LOOKUP_TIMEOUT_SECS=2`):
   the first `fsm.status` (it pays the failed lookup, then falls back to `OPS_DEFAULT_HOST`) and the next
   one (the failure is remembered: no lium call), with the number of `GET /pods` each made on the API
   (`WF_PERSIST_SECS=0`).

Every figure is a median over rounds; within a round every metric of a table is measured once, in turn,
so a slow minute of this shared machine touches all of them alike. The fake API, the sshd and the pod
set-up are the tests' own (tests/lium/fake_lium.py, tests/realparts.py, tests/lium/conftest.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _harness import print_table  # also puts the repository root on sys.path

from tests.conftest import kill_tmux_server, make_pod, stop_keepers
from tests.lium.conftest import LiumPod
from tests.lium.fake_lium import FakeLium
from tests.realparts import start_sshd, stop_sshd
from wfops.settings.load import parse_settings
from wfops.targets import lium_pods as pods
from wfops.targets import resolve


def clock(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def med(samples: list[float], unit: str = "s") -> str:
    m = statistics.median(samples)
    return f"{m * 1000:.1f} ms" if unit == "ms" else f"{m:.2f} s"


def spread(samples: list[float]) -> str:
    return f"{min(samples):.2f}-{max(samples):.2f} s"


class Bench:
    def __init__(self, work: Path, fake: FakeLium, lpod: LiumPod) -> None:
        self.work, self.fake, self.lpod = work, fake, lpod
        self.pod_id = next(iter(fake.pods))
        self.persist = "0"  # WF_PERSIST_SECS: 0, each command its own connection, unless a row says otherwise

    def wf_ok(self, *args: str) -> None:
        res = self.lpod.wf(*args)
        if res.rc != 0:
            raise SystemExit(f"wfops {' '.join(args)} failed ({res.rc}): {res.err}")

    def cache_file(self) -> Path:
        return pods.cache_path(self.lpod.env())

    def cold(self) -> None:
        self.cache_file().unlink(missing_ok=True)

    def lium_target(self) -> None:
        self.lpod.configure(LIUM_TARGET="train", OPS_DEFAULT_HOST="", SSH_KEY_PATH="", LIUM_LOOKUP_TIMEOUT_SECS="20",
                            WF_PERSIST_SECS=self.persist)

    def ssh_target(self) -> None:
        assert self.lpod.sshd is not None
        self.lpod.configure(LIUM_TARGET="", OPS_DEFAULT_HOST=self.lpod.sshd.address,
                            SSH_KEY_PATH=str(self.lpod.sshd.key), WF_PERSIST_SECS=self.persist)

    def fallback_target(self, timeout: str = "20") -> None:
        """LIUM_TARGET with OPS_DEFAULT_HOST set; LIUM_LOOKUP_TIMEOUT_SECS=timeout (20: the default)."""
        assert self.lpod.sshd is not None
        self.lpod.configure(LIUM_TARGET="train", OPS_DEFAULT_HOST=self.lpod.sshd.address,
                            SSH_KEY_PATH=str(self.lpod.sshd.key), LIUM_LOOKUP_TIMEOUT_SECS=timeout,
                            WF_PERSIST_SECS=self.persist)

    def lium_exec(self) -> None:
        res = self.lpod.lium("exec", self.pod_id, "--json", "true")
        if res.rc != 0 or not json.loads(res.out)["ok"]:
            raise SystemExit(f"lium exec failed ({res.rc}): {res.out} {res.err}")

    def lium_ps(self) -> None:
        res = self.lpod.lium("ps", "--format", "json")
        if res.rc != 0:
            raise SystemExit(f"lium ps failed ({res.rc}): {res.err}")

    # ------------------------------------------------------------------ table 1: resolution and the cache

    def resolution(self, rounds: int) -> None:
        keys = ("ps", "exec", "base", "cold", "warm", "inproc_ps", "inproc_cache", "base_kept", "cold_kept",
                "warm_kept")
        samples: dict[str, list[float]] = {k: [] for k in keys}
        settings = parse_settings("LIUM_TARGET=train\n", environ={})
        environ = {**self.lpod.env(), "LIUM_SELF_UPDATE_DISABLE": "1"}
        name = resolve.one(settings, {}).name
        os.environ["HOME"] = str(self.lpod.home)  # lium's key and pins are found under the pod's HOME
        for r in range(rounds + 1):  # round 0 warms up (page cache, bytecode) and is not counted
            got = {"ps": clock(self.lium_ps), "exec": clock(self.lium_exec)}
            self.ssh_target()
            got["base"] = clock(lambda: self.wf_ok("fsm.status"))
            self.lium_target()
            self.cold()
            gets = self.fake.count("GET", "/pods")
            got["cold"] = clock(lambda: self.wf_ok("fsm.status"))
            assert self.fake.count("GET", "/pods") == gets + 1, "a cold cache makes one lium ps"
            got["warm"] = clock(lambda: self.wf_ok("fsm.status"))
            assert self.fake.count("GET", "/pods") == gets + 1, "a warm cache makes no lium call"
            got["inproc_ps"] = clock(lambda: pods.resolve(settings, name, use_cache=False, environ=environ))
            got["inproc_cache"] = clock(lambda: pods.resolve(settings, name, environ=environ))
            assert self.fake.count("GET", "/pods") == gets + 2
            # the same with the connection kept warm between commands (WF_PERSIST_SECS, default 300 s)
            self.persist = "300"
            self.ssh_target()
            self.wf_ok("fsm.status")  # starts the keeper (or finds it)
            got["base_kept"] = clock(lambda: self.wf_ok("fsm.status"))
            self.lium_target()
            self.cold()
            self.wf_ok("fsm.status")  # the keeper follows the changed resolution (another key file)
            self.cold()
            got["cold_kept"] = clock(lambda: self.wf_ok("fsm.status"))
            got["warm_kept"] = clock(lambda: self.wf_ok("fsm.status"))
            assert self.fake.count("GET", "/pods") == gets + 4
            self.persist = "0"
            if r:
                for k, v in got.items():
                    samples[k].append(v)
        print_table(f"Resolving LIUM_TARGET (fake Lium API and sshd on loopback; each command its own SSH connection "
                    f"unless the row says otherwise; median of {rounds} rounds, "
                    f"{time.strftime('%Y-%m-%d')})", ["what", "median", "min-max"], [
            ["`lium ps --format json`", med(samples["ps"]), spread(samples["ps"])],
            ["`lium exec <uuid> --json true` (what a step through lium would cost)", med(samples["exec"]),
             spread(samples["exec"])],
            ["`wfops fsm.status`, `OPS_DEFAULT_HOST` (baseline)", med(samples["base"]), spread(samples["base"])],
            ["`wfops fsm.status`, Lium target, cold cache (one `lium ps`)", med(samples["cold"]),
             spread(samples["cold"])],
            ["`wfops fsm.status`, Lium target, warm cache (no lium call)", med(samples["warm"]),
             spread(samples["warm"])],
            ["with a warm connection (`WF_PERSIST_SECS=300`): `OPS_DEFAULT_HOST` (baseline)",
             med(samples["base_kept"]), spread(samples["base_kept"])],
            ["with a warm connection: Lium target, cold cache (one `lium ps`)", med(samples["cold_kept"]),
             spread(samples["cold_kept"])],
            ["with a warm connection: Lium target, warm cache (no lium call)", med(samples["warm_kept"]),
             spread(samples["warm_kept"])],
            ["resolution in process (`lium_pods.resolve`): `lium ps`", med(samples["inproc_ps"], "ms"), "-"],
            ["resolution in process (`lium_pods.resolve`): warm cache", med(samples["inproc_cache"], "ms"), "-"],
        ])

    # ------------------------------------------------------------------ table 2: an outage costs once

    def outage(self, rounds: int) -> None:
        cases: list[tuple[str, Callable[[], None]]] = []
        for status in (502, 503, 429):
            def refuse(status: int = status) -> None:
                self.fake.refuse_all, self.fake.delay_secs = status, 0.0
                self.fallback_target()
            cases.append((f"answers {status}", refuse))

        def hang() -> None:
            self.fake.refuse_all, self.fake.delay_secs = None, 60.0
            self.fallback_target(timeout="2")
        cases.append(("hangs; `LIUM_LOOKUP_TIMEOUT_SECS=2`", hang))
        first: dict[str, list[float]] = {label: [] for label, _ in cases}
        second: dict[str, list[float]] = {label: [] for label, _ in cases}
        calls: dict[str, tuple[int, int]] = {}
        ps_503: list[float] = []
        for r in range(rounds + 1):
            for label, setup in cases:
                setup()
                self.cold()
                g0 = self.fake.count("GET", "/pods")
                t1 = clock(lambda: self.wf_ok("fsm.status"))
                g1 = self.fake.count("GET", "/pods")
                t2 = clock(lambda: self.wf_ok("fsm.status"))
                g2 = self.fake.count("GET", "/pods")
                calls[label] = (g1 - g0, g2 - g1)
                if r:
                    first[label].append(t1)
                    second[label].append(t2)
            self.fake.refuse_all, self.fake.delay_secs = 503, 0.0
            t = clock(lambda: self.lpod.lium("ps", "--format", "json"))
            if r:
                ps_503.append(t)
        self.fake.refuse_all, self.fake.delay_secs = None, 0.0
        rows = [[label, f"{med(first[label])} ({calls[label][0]} GET /pods)",
                 f"{med(second[label])} ({calls[label][1]} GET /pods)"] for label, _ in cases]
        rows.append(["(beside it) `lium ps --format json` alone, API answers 503", med(ps_503), "-"])
        print_table(f"An outage: `wfops fsm.status` with OPS_DEFAULT_HOST set, a Lium target whose API fails "
                    f"(median of {rounds} rounds)", ["API", "first command", "next command (remembered)"], rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--parts", default="resolution,outage")
    args = ap.parse_args()
    lium = Path(sys.executable).parent / "lium"
    if not lium.exists():
        raise SystemExit(f"the lium CLI is not installed in this venv ({lium}): pip install -e '.[lium]'")
    tmux = f"wfops-bench-lium-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="wfops-bench-lium-") as tmp:
        work = Path(tmp)
        sshd = start_sshd(work / "sshd")
        fake = FakeLium(ssh_host=sshd.host, ssh_port=sshd.port).start()
        lpod = None
        try:
            (work / "p").mkdir()
            base = make_pod("ssh", work / "p", sshd, tmux)
            lpod = LiumPod(base.kind, base.root, base.home, base.sshd, base.tmux_socket, base.session, api=fake)
            lpod.lium_config(sshd.key)
            pod = fake.add_pod("train")
            lpod.pin(pod)  # as lium pins a pod on its first connection: the benchmark measures the later ones
            bench = Bench(work, fake, lpod)
            parts = args.parts.split(",")
            if "resolution" in parts:
                bench.resolution(args.rounds)
            if "outage" in parts:
                bench.outage(args.rounds)
        finally:
            if lpod is not None:
                stop_keepers(lpod.keeper_dir)
            fake.stop()
            stop_sshd(sshd)
            kill_tmux_server(tmux)


if __name__ == "__main__":
    main()
