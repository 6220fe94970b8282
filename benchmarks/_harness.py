"""Shared by the benchmarks: a loopback sshd (the tests' real one), a pod directory with its config,
the wfops CLI in a subprocess, and timing helpers. Benchmarks print tables; they assert nothing."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.realparts import SSHD, start_sshd, stop_sshd  # noqa: E402

WFOPS = Path(sys.executable).parent / "wfops"


@contextmanager
def loopback_pod(kind: str = "ssh", **config: str):
    """(workdir, sshd or None, env) with a config for a pod on the loopback sshd (or `local`)."""
    with tempfile.TemporaryDirectory(prefix="wfops-bench-") as tmp:
        work = Path(tmp)
        sshd = start_sshd(work / "sshd") if kind == "ssh" else None
        socket_name = f"wfops-bench-{os.getpid()}"
        cfg = {
            "OPS_REMOTE_OUTPUTS_DIR": str(work / "pod" / "outputs"),
            "REMOTE_ENV_PATH": str(work / "pod" / "project.env"),
            "OPS_REMOTE_REPO": str(work / "pod" / "repo"), "DATA_DIR": str(work / "pod" / "data"),
            "WF_TMUX_SOCKET": socket_name, "LOCAL_ARTIFACTS_DIR": str(work / "artifacts"),
            "OPS_DEFAULT_HOST": sshd.address if sshd else "local",
        }
        if sshd:
            cfg["SSH_KEY_PATH"] = str(sshd.key)
        cfg.update(config)
        (work / "workflow.env").write_text("".join(f"{k}='{v}'\n" for k, v in cfg.items()))
        env = {**os.environ, "WORKFLOW_CONFIG": str(work / "workflow.env"), "HOME": str(work),
               "WFOPS_KEEPER_DIR": str(work / "keepers")}  # warm connections of this run only, ended below
        # as on a user's machine: Python keeps its bytecode (this project's machines set PYTHONDONTWRITEBYTECODE=1,
        # which makes every command compile wfops afresh: ~100 ms more)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        try:
            yield work, sshd, env
        finally:
            try:  # the sshd is stopped whatever fails before it (a wfops not installed beside this python)
                subprocess.run([str(WFOPS), "disconnect", "--all"], env=env, capture_output=True)
                subprocess.run(["tmux", "-L", socket_name, "kill-server"], capture_output=True)
                (Path("/tmp") / f"tmux-{os.getuid()}" / socket_name).unlink(missing_ok=True)
            finally:
                if sshd:
                    stop_sshd(sshd)


def wf(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([str(WFOPS), *args], env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise SystemExit(f"wfops {' '.join(args)} failed ({res.returncode}): {res.stderr}")
    return res


def ssh_argv(sshd: SSHD, *remote: str) -> list[str]:
    return ["ssh", "-q", "-i", str(sshd.key), "-p", str(sshd.port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", f"{sshd.user}@{sshd.host}", *remote]


def timed(fn: Callable[[], object], repeat: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f}"


def p90(samples: list[float]) -> str:
    return f"{sorted(samples)[int(0.9 * (len(samples) - 1))] * 1000:.0f}"


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
