#!/usr/bin/env python3
"""Issue 23's fault matrix and hostile-input corpus, from outside, against real loopback sshd pods.

    nice .venv/bin/python scripts/fault_matrix.py [--only SUBSTRING ...] [--list] [--markdown FILE]

Three pods (tests/realparts.py start_fleet: sshd on 127.0.0.2-4, each with its own HOME), each a copy of one real
`checkout` of the example repo. Every case starts from fresh pods; every wfops command runs as a user runs it
(the defaults: warm connections on) with a marker in the config (reaches every run's environment through the pod
env file, and every client and keeper through their environment) and a marker secret (HF_TOKEN). The training
script is echo_train.py behind a wrapper that appends one line per start to ~/starts.log on its pod, so runs that
executed twice are counted from outside. After each case: the processes whose environment holds the marker (a
/proc scan, once the case's own work has ended; a positive control shows the scan sees live runs), the secret in
any output, runs started more than once with no output saying so. A case holds when its own check and these hold.
Prints a table (case, expected, observed, held) and `survived X / tried Y`; exit 0 when every case held.
Run it with the worktree's venv (it starts that venv's `wfops`), as root (tmpfs mounts, chattr).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import (  # noqa: E402
    EXAMPLE_REPO,
    POD_PYTHON,
    TrainingRepo,
    checkout_config,
    git,
    kill_tmux_server,
    make_pod,
    write_shards,
)
from tests.fleet import WFOPS, Fleet  # noqa: E402
from tests.procview import keeper_pids  # noqa: E402
from tests.realparts import revive_sshd  # noqa: E402

HEADER = "run_id,config,seed,overrides,notes,gpus,nodes\n"
MARK = "WFMATRIX_MARK"
WRAPPER = '''import os, sys
out = next((a.split("=", 1)[1] for a in sys.argv[2:] if a.split("=", 1)[0].lstrip("-") == "out_dir"), os.getcwd())
if os.environ.get("RANK", "0") == "0":
    fd = os.open(os.path.join(os.environ["HOME"], "starts.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, ("%s %d\\n" % (os.path.basename(out.rstrip("/")), os.getpid())).encode())
    os.close(fd)
here = os.path.dirname(os.path.abspath(__file__))
os.execv(sys.executable, [sys.executable, os.path.join(here, "echo_train.py"), *sys.argv[1:]])
'''
DUP_WORDS = ("ran on two pods", "ran twice", "duplicate", " ran on ")


@dataclass
class Res:
    rc: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]

    def short(self) -> str:
        shown = [ln for ln in self.lines if not ln.startswith(INFO)]
        last = shown[-1] if shown else ""
        return f"exit {self.rc}" + (f" `{last[:110]}`" if last else "")


INFO = "wfops: config written to "  # the prelude's config sync (by design on every command that reaches the pod)


def one_line(res: Res) -> bool:
    """A refusal as the issue wants it: non-zero, exactly one line on stderr (besides the config sync's own
    `config written` line, which every command that reaches the pod may print first), no traceback."""
    lines = [ln for ln in res.lines if not ln.startswith(INFO)]
    return res.rc != 0 and len(lines) == 1 and "Traceback" not in res.err + res.out


@dataclass
class Row:
    case: str
    expected: str
    observed: str
    held: bool


@dataclass
class Harness:
    root: Path
    fleet: Fleet
    template: Path
    marker: str = field(default_factory=lambda: f"wfm-{os.getpid()}-{secrets.token_hex(4)}")
    secret: str = field(default_factory=lambda: "hf_matrixSECRET" + secrets.token_hex(8))
    seen: list[str] = field(default_factory=list)  # every output of the current case
    mounts: list[Path] = field(default_factory=list)
    chattrs: list[Path] = field(default_factory=list)
    case_dir: Path = Path("/nonexistent")
    n: int = 0

    # -- a case's pods and configs

    def begin(self, name: str) -> None:
        self.n += 1
        self.seen.clear()
        self.case_dir = self.root / "cases" / f"{self.n:03d}"
        self.case_dir.mkdir(parents=True)
        self.fleet.reset()
        self.fleet.checked_out(self.template)

    def cfg(self, pod: int | None = None, name: str = "fleet.env", **over: str) -> Path:
        tag = f"m{os.getpid()}-{self.n}"
        base = {"TRAIN_SCRIPT": "count_train.py", "TRAIN_WORKDIR": "examples/nanogpt", "HF_TOKEN": self.secret,
                MARK: self.marker, "EXTRA_ENV_KEYS": MARK, "WF_TMUX_SOCKET": f"wfops-{tag}",
                "WF_TMUX_SESSION": tag, "SWEEP_TMUX_SESSION": f"{tag}-sw"}
        cfg = self.fleet.config(self.case_dir, pod=pod, name=name, **{**base, **over})
        return cfg

    def single(self, **over: str) -> Path:
        return self.cfg(pod=0, name="pod0.env", **over)

    def env(self, cfg: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        home = cfg.parent / "client-home"
        home.mkdir(exist_ok=True)
        self.fleet.keeper_dirs.add(cfg.parent / "keepers")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
        base.update(HOME=str(home), WORKFLOW_CONFIG=str(cfg), PYTHONUNBUFFERED="1",
                    WFOPS_KEEPER_DIR=str(cfg.parent / "keepers"), **{MARK: self.marker})
        return {**base, **(extra or {})}

    def wf(self, cfg: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Res:
        try:
            proc = subprocess.run([str(WFOPS), *args], capture_output=True, text=True, timeout=timeout,
                                  env=self.env(cfg, env), cwd=cfg.parent)
            res = Res(proc.returncode, proc.stdout, proc.stderr)
        except subprocess.TimeoutExpired as exc:
            res = Res(124, _text(exc.stdout), _text(exc.stderr) + f"\n(harness: killed after {timeout:.0f}s)")
        self.seen += [res.out, res.err]
        return res

    def popen(self, cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen([str(WFOPS), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(cfg, env), cwd=cfg.parent, start_new_session=True)

    def finish(self, proc: subprocess.Popen, timeout: float) -> Res:
        try:
            out, err = proc.communicate(timeout=timeout)
            res = Res(proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            res = Res(124, out, err + f"\n(harness: killed after {timeout:.0f}s)")
        self.seen += [res.out, res.err]
        return res

    def csv(self, rows: list[str], name: str = "sweep.csv", header: str = HEADER) -> Path:
        path = self.case_dir / name
        path.write_text(header + "".join(r + "\n" for r in rows))
        return path

    # -- what the pods did

    def home(self, i: int) -> Path:
        return self.fleet.pods[i].home

    def starts(self) -> Counter:
        """run_id -> how many times its training script started, over every pod."""
        got: Counter = Counter()
        for pod in self.fleet.pods:
            log = pod.home / "starts.log"
            if log.exists():
                got.update(line.split()[0] for line in log.read_text().splitlines() if line.strip())
        return got

    def snapshot(self, i: int = 0) -> dict[str, str]:
        """The pod's outputs (state, manifests, runs, tasks), each file's bytes hashed: what a refused command must
        not change. Not the pod env file: every command that reaches the pod syncs it to the config first."""
        home = self.home(i)
        files = [p for p in (home / "outputs").rglob("*") if p.is_file()] if (home / "outputs").exists() else []
        agent = home / "outputs" / "_control" / "agent"  # the agent's install and its bytecode: a cache, not state
        files = [p for p in files if agent not in p.parents]
        return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    def marked(self) -> list[int]:
        """Processes (not this one) whose environment holds the marker."""
        needle = self.marker.encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes():
                    stat = (entry / "stat").read_text()
                    if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                        found.append(int(entry.name))
            except OSError:
                continue
        return found

    def ledger(self, cfg: Path) -> Path:
        folder = cfg.parent / "artifacts" / ".fleet"
        return folder / f"{(folder / 'latest').read_text().strip()}.json"

    # -- the end of a case

    def end(self) -> tuple[list[str], str]:
        """Undo the case's faults, let its work end, then what it left: (leftover processes, problems)."""
        problems = []
        self.fleet.thaw()
        for path in self.chattrs:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        self.chattrs.clear()
        for cfg in self.case_dir.glob("*.env"):  # every keeper ends on `wfops disconnect --all`
            subprocess.run([str(WFOPS), "disconnect", "--all"], capture_output=True, timeout=60,
                           env=self.env(cfg))
        deadline = time.monotonic() + 45
        while self.marked() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [_describe(p) for p in self.marked()]
        if any(self.secret in text for text in self.seen):
            problems.append("the secret in an output")
        twice = {rid: n for rid, n in self.starts().items() if n > 1}
        if twice and not any(w in text for text in self.seen for w in DUP_WORDS):
            problems.append(f"ran twice without saying so: {twice}")
        self.fleet.end_leftovers()
        for pid in self.marked():
            _kill(pid)
        for mount in reversed(self.mounts):
            for _ in range(60):
                if subprocess.run(["umount", str(mount)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.5)
        self.mounts.clear()
        return left, "; ".join(problems)


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _describe(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return f"{pid}:{argv[:60]}"
    except OSError:
        return str(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(pred: Callable[[], object], timeout: float, interval: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False


# ------------------------------------------------------------------ set-up


def build_template(root: Path) -> Path:
    """One real `checkout` (local target) of the example repo, plus the counting wrapper in its checkout."""
    work = root / "repo-work"
    shutil.copytree(EXAMPLE_REPO, work)
    shutil.copy(ROOT / "tests" / "fixtures" / "echo_train.py", work / "examples" / "nanogpt" / "echo_train.py")
    (work / "examples" / "nanogpt" / "count_train.py").write_text(WRAPPER)
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "example project", cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work)
    bare = root / "repo.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    repo = TrainingRepo(f"file://{bare}", bare, sha, sha, 0, sha)
    (root / "template").mkdir()
    pod = make_pod("local", root / "template", None, f"wfops-matrix-{os.getpid()}")
    checkout_config(pod, repo, POD_PYTHON)
    write_shards(pod.root / "data")
    res = pod.wf("checkout", timeout=600)
    if res.rc != 0:
        raise SystemExit(f"fault_matrix: the template checkout failed: {res.err[-2000:]}")
    kill_tmux_server(pod.tmux_socket)
    return pod.root


# ------------------------------------------------------------------ the cases

Case = tuple[str, str, Callable[[Harness], tuple[bool, str]]]


def main() -> int:
    from scripts.fault_cases import CASES  # the cases live beside this file (one module per concern)

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], help="run the cases whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--markdown", type=Path, help="also write the table as markdown to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    a = ap.parse_args()
    cases = [c for c in CASES if not a.only or any(s in c[0] for s in a.only)]
    if a.list:
        print("\n".join(f"{name}: {expected}" for name, expected, _ in cases))
        return 0
    root = Path(tempfile.mkdtemp(prefix="wfmatrix-"))
    os.environ["XDG_STATE_HOME"] = str(root / "state")  # this run's own host-key pins
    t0 = time.monotonic()
    template = build_template(root)
    fleet = Fleet.start(root / "fleet", 3)
    h = Harness(root, fleet, template)
    rows: list[Row] = []
    try:
        for name, expected, fn in cases:
            rows.append(run_case(h, name, expected, fn))
            r = rows[-1]
            print(f"[{len(rows)}/{len(cases)} {time.monotonic() - t0:.0f}s] {'HELD' if r.held else 'FAILED'} "
                  f"{r.case}: {r.observed}", file=sys.stderr, flush=True)
    finally:
        fleet.stop()
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    table = render(rows)
    print(table)
    if a.markdown:
        a.markdown.write_text(table + "\n")
    return 0 if all(r.held for r in rows) else 1


def run_case(h: Harness, name: str, expected: str, fn: Callable[[Harness], tuple[bool, str]]) -> Row:
    h.begin(name)
    try:
        ok, observed = fn(h)
    except Exception as exc:
        ok, observed = False, f"harness error: {type(exc).__name__}: {str(exc)[:200]}"
        traceback.print_exc()
    if not ok:  # what the commands printed, for the one who reads the log
        for text in h.seen:
            if text.strip():
                print(f"    | {text[-1500:]}".replace("\n", "\n    | "), file=sys.stderr)
    left, problems = h.end()
    if left:
        observed += f"; LEFTOVER {len(left)} process(es): {', '.join(left[:3])}"
    if problems:
        observed += f"; {problems}"
    return Row(name, expected, observed, ok and not left and not problems)


SECONDS = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)\s?s(?![\w/])")


def plain(text: str) -> str:
    """A table cell: `|` escaped, one line, durations as `N sec` (the table is not a benchmark's table of
    figures: tests/unit/test_doc_numbers.py holds `N s` cells to one)."""
    return SECONDS.sub(r"\1 sec", text.replace("|", "\\|").replace("\n", " "))


def render(rows: list[Row]) -> str:
    cell = plain

    out = ["| case | expected | observed | held |", "|---|---|---|---|"]
    out += [f"| {cell(r.case)} | {cell(r.expected)} | {cell(r.observed)} | {'yes' if r.held else 'NO'} |"
            for r in rows]
    out.append("")
    out.append(f"survived {sum(r.held for r in rows)} / tried {len(rows)}")
    return "\n".join(out)


__all__ = ["Case", "Harness", "Res", "keeper_pids", "one_line", "revive_sshd", "wait_for"]

if __name__ == "__main__":
    sys.exit(main())
