"""Real parts for the tests: an OpenSSH server on loopback, an isolated tmux server, a pod per test.

Nothing here skips: a missing sshd, tmux or rsync fails the tests that need it, with what to install.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import forkrun, realparts, slowness
from tests.forkrun import BIN as BIN  # re-exported: the tests import BIN and WFOPS from here
from tests.forkrun import WFOPS as WFOPS
from tests.longest_first import longest_first
from tests.realparts import SSHD, copy_tree, start_sshd, stop_sshd
from tests.slowness import scaled

# A test session started as `cmd &` by a shell without job control (a CI script, nohup, a detached terminal)
# inherits Ctrl-C (SIGINT) ignored, and so would every wfops, inv and pod agent the tests start: Python keeps an
# ignored SIGINT, so the Ctrl-C tests would find their commands deaf to it (22 of them failed so, in a CI run
# started that way). The tests play a user at a terminal: a Python handler here (reset to the default at exec)
# gives every child the default disposition, as a terminal's shell does.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]


def need(tool: str, hint: str) -> str:
    try:
        return realparts.need(tool, hint)
    except realparts.MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(autouse=True)
def _own_host_key_pins(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test pins SSH host keys (wfops.transport.hostkeys) in a file of its own: loopback sshds get new keys
    on ports other tests used before, which a shared pin file would (rightly) refuse."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHD]:
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except (realparts.MissingTool, RuntimeError) as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    stop_sshd(server)


# ------------------------------------------------------------------ tmux

@pytest.fixture(scope="session")
def tmux_socket() -> Iterator[str]:
    need("tmux", "apt-get install tmux")
    name = f"wfops-test-{os.getpid()}"
    yield name
    kill_tmux_server(name)


def kill_tmux_server(name: str) -> None:
    """End an isolated tmux server and remove its socket file (a killed server leaves it behind)."""
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)
    sock = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / name
    sock.unlink(missing_ok=True)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: without xdist (-p no:xdist) it is not called
def pytest_configure_node(node: Any) -> None:  # xdist's WorkerController; runs in the controller
    """Tell the workers whether the controller hands the tests out in collection order (`--dist load`): a worker's own
    config says `dist=no`."""
    node.workerinput["wfops_longest_first"] = node.config.getoption("dist") in ("load", "loadgroup")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist load` (scripts/test.sh) the workers take the tests in collection order, one at a time: the
    longest go first (tests/longest_first.py), so that no long test is started last. Other runs keep pytest's order."""
    worker = getattr(config, "workerinput", {})
    if worker.get("wfops_longest_first"):
        items[:] = longest_first(items, int(worker.get("workercount", 1)))


def pytest_report_header() -> str:
    """The deadline factor at the start (tests/slowness.py): a failure's "timed out after" reads against it."""
    how = "WF_TEST_SLOWNESS" if os.environ.get("WF_TEST_SLOWNESS", "").strip() else "measured; WF_TEST_SLOWNESS sets it"
    return f"wfops test deadlines x{slowness.factor():.1f} ({how})"


# ------------------------------------------------------------------ a pod per test

@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)

    @property
    def last_err(self) -> str:
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        return lines[-1] if lines else ""


_session_counter = itertools.count()


@dataclass
class Pod:
    """A target (the loopback sshd or `local`) with its own dirs, config file and tmux session."""

    kind: str
    root: Path
    home: Path
    sshd: SSHD | None
    tmux_socket: str
    session: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def keeper_dir(self) -> Path:
        """This test's own keeper directory (warm connections): its keepers are stopped at teardown."""
        return self.root.parent / "keepers"

    @property
    def env_path(self) -> Path:
        return self.root / "project.env"

    @property
    def state_file(self) -> Path:
        return self.outputs / "_control" / "workflow_state.json"

    @property
    def config_path(self) -> Path:
        return self.root.parent / "workflow.env"

    def base_config(self) -> dict[str, str]:
        cfg = {
            "OPS_REMOTE_OUTPUTS_DIR": str(self.outputs),
            "REMOTE_ENV_PATH": str(self.env_path),
            "OPS_REMOTE_REPO": str(self.root / "repo"),
            "DATA_DIR": str(self.root / "data"),
            "WF_TMUX_SOCKET": self.tmux_socket,
            "WF_TMUX_SESSION": self.session,
            "SWEEP_TMUX_SESSION": self.session + "-sw",
            "KILL_GRACE_SECS": "2",
            "LOCAL_ARTIFACTS_DIR": str(self.root.parent / "artifacts"),
            # WF_PERSIST_SECS is left at its default, as users run it: an SSH pod's commands go through a warm
            # keeper (in this test's own keeper directory). `count` takes its command cold unless the test set it.
        }
        if self.kind == "ssh":
            assert self.sshd
            cfg["OPS_DEFAULT_HOST"] = self.sshd.address
            cfg["SSH_KEY_PATH"] = str(self.sshd.key)
        else:
            cfg["OPS_DEFAULT_HOST"] = "local"
        return cfg

    def write_config(self, **overrides: str) -> Path:
        cfg = {**self.base_config(), **self.extra, **overrides}
        self.config_path.write_text("".join(f"{k}={_dotenv_quote(v)}\n" for k, v in cfg.items()))
        return self.config_path

    def configure(self, **overrides: str) -> None:
        self.extra.update(overrides)
        self.write_config()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
        env.update(HOME=str(self.home), WORKFLOW_CONFIG=str(self.config_path), PYTHONUNBUFFERED="1",
                   WFOPS_KEEPER_DIR=str(self.keeper_dir))
        return env

    def wf(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> Result:
        if not self.config_path.exists():
            self.write_config()
        proc = forkrun.run([str(WFOPS), *args], env={**self.env(), **(env or {})}, cwd=cwd or self.root.parent,
                           timeout=scaled(timeout))
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def wf_in_process(self, *args: str) -> Result:
        """`wfops ARGS` run in this process (wfops.program, the program `wfops` runs after its start-up), with the
        environment and working directory `wf` gives the subprocess: for tests of what the program does with a
        command line before it connects (parsing, one-line refusals), which pay ~0.3 s of interpreter start-up per
        subprocess but do not need one. The start-up itself (wfops.cli: the lean path, prewarm, Ctrl-C guard) is
        what the other tests run."""
        from wfops.program import program

        if not self.config_path.exists():
            self.write_config()
        out, err, rc = io.StringIO(), io.StringIO(), 0
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        os.environ.clear()
        os.environ.update(self.env())
        os.chdir(self.root.parent)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    program.run(["wfops", *args])
                except SystemExit as exc:
                    rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
        return Result(rc, out.getvalue(), err.getvalue())

    def count_in_process(self, *args: str) -> tuple[Result, int, int]:
        """`count`, with the command run in this process (wf_in_process)."""
        return self.count(*args, run=self.wf_in_process)

    def ok(self, *args: str, **kw: object) -> Result:
        res = self.wf(*args, **kw)  # type: ignore[arg-type]
        assert res.rc == 0, f"wfops {' '.join(args)} exited {res.rc}\nstdout:\n{res.out}\nstderr:\n{res.err}"
        return res

    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def count(self, *args: str, run: Callable[..., Result] | None = None) -> tuple[Result, int, int]:
        """Run a command (with `run`, else `wf`) and count (ssh connections, execs) it made; ssh targets only.
        The command makes its own connection (WF_PERSIST_SECS=0 for it) unless the test set WF_PERSIST_SECS:
        what is counted is then the command's own login and execs, not a keeper's (tests/integration/test_keeper.py
        counts those)."""
        assert self.sshd is not None
        cold = "WF_PERSIST_SECS" not in self.extra
        if cold:
            self.write_config(WF_PERSIST_SECS="0")
        try:
            mark = self.sshd.mark()
            res = (run or self.wf)(*args)
            conns, execs = self.sshd.counts(mark)
        finally:
            if cold:
                self.write_config()
        return res, conns, execs

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.tmux_socket, *args], capture_output=True, text=True)


def stop_keepers(directory: Path) -> None:
    """Stop every keeper a test left in its keeper directory (they would otherwise idle for WF_PERSIST_SECS): what
    `wfops disconnect --all` does, in this process (the keepers are the same; a subprocess cost ~0.3 s a test)."""
    if not directory.is_dir():
        return
    from wfops.errors import ConfigError
    from wfops.transport import warm

    with keepers_in(directory):
        try:
            warm.stop_all()
        except ConfigError:  # the test made the directory unusable (its mode, its owner): nothing to stop through it
            pass


@contextlib.contextmanager
def keepers_in(directory: Path) -> Iterator[None]:
    """Keepers this process starts or reaches meanwhile are those of `directory` (WFOPS_KEEPER_DIR): a pod's
    commands run in the test's own process (PodCommand) then use the pod's keepers, which its teardown stops,
    not the user's default directory, where they would idle for WF_PERSIST_SECS after the tests."""
    from wfops.transport import warm

    saved = os.environ.get(warm.DIR_ENV)
    os.environ[warm.DIR_ENV] = str(directory)
    try:
        yield
    finally:
        if saved is None:
            del os.environ[warm.DIR_ENV]
        else:
            os.environ[warm.DIR_ENV] = saved


def _dotenv_quote(value: str) -> str:
    if value == "" or all(ch.isalnum() or ch in "/._-@:+,=" for ch in value):
        return value
    return "'" + value.replace("'", "\\'") + "'"


def make_pod(kind: str, tmp_path: Path, sshd: SSHD | None, tmux_socket: str) -> Pod:
    need("tmux", "apt-get install tmux")
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "pod").mkdir()
    session = f"t{os.getpid()}-{next(_session_counter)}"
    return Pod(kind, tmp_path / "pod", home, sshd, tmux_socket, session)


def _pod_fixture(kind: str, tmp_path: Path, sshd: SSHD | None, tmux_socket: str) -> Iterator[Pod]:
    p = make_pod(kind, tmp_path, sshd, tmux_socket)
    yield p
    stop_keepers(p.keeper_dir)
    for session in (p.session, p.session + "-sw"):
        p.tmux("kill-session", "-t", f"={session}")


@pytest.fixture(params=["ssh", "local"])
def pod(request: pytest.FixtureRequest, tmp_path: Path, tmux_socket: str) -> Iterator[Pod]:
    sshd = request.getfixturevalue("sshd") if request.param == "ssh" else None
    yield from _pod_fixture(request.param, tmp_path, sshd, tmux_socket)


@pytest.fixture
def ssh_pod(tmp_path: Path, sshd: SSHD, tmux_socket: str) -> Iterator[Pod]:
    yield from _pod_fixture("ssh", tmp_path, sshd, tmux_socket)


@pytest.fixture
def local_pod(tmp_path: Path, tmux_socket: str) -> Iterator[Pod]:
    yield from _pod_fixture("local", tmp_path, None, tmux_socket)


def wait_until(predicate, timeout: float = 20, interval: float | None = None, what: str = "condition"):
    """Poll `predicate` until it is true (returns its value); `timeout` is for the quiet machine and scales with
    this one's load (tests/slowness.py): it says something is wrong, not that the machine is busy.
    Without an `interval` it polls every 0.05 s, but a predicate that takes longer than 20 ms (a `wfops` command: a
    process of ~0.1-0.3 s of CPU) waits twice its own time between calls, at most 0.5 s: back-to-back commands
    would spend a core of this 2-core machine on waiting. A test that must catch a short moment gives `interval`."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        started = time.monotonic()
        value = predicate()
        if value:
            return value
        took = time.monotonic() - started
        time.sleep(interval if interval is not None else max(0.05, min(2 * took, 0.5)) if took > 0.02 else 0.05)
    raise AssertionError(f"timed out after {limit:.0f}s ({timeout}s scaled by the machine's slowness) "
                         f"waiting for {what}")


# ------------------------------------------------------------------ the training repo and the pod's python

EXAMPLE_REPO = ROOT / "examples" / "nanogpt-repo"
POD_PYTHON = os.environ.get("WFOPS_TEST_POD_PYTHON", "/usr/bin/python3")
FAST_INSTALL = 'pip install -q --no-build-isolation --no-deps -e "$OPS_REMOTE_REPO[examples]"'


@dataclass
class TrainingRepo:
    url: str
    bare: Path
    main_sha: str
    feature_sha: str
    pr: int
    pr_sha: str


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


@contextlib.contextmanager
def shared_build(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, bool]]:
    """A directory that every xdist worker of this run shares (under the run's basetemp, the workers' common
    parent; without xdist the session's own basetemp), held under an exclusive file lock: yields (dir, built).
    The first worker to take the lock finds `built` false, builds into dir and, when its block ends without an
    exception, marks it built; the others wait on the lock and find it built. A failed build leaves no mark:
    the next worker builds again (and fails the same way, with its own message)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    directory = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = directory / ".built"
            if not done.exists() and directory.exists():
                shutil.rmtree(directory)  # a build that failed half-way
            directory.mkdir(exist_ok=True)
            yield directory, done.exists()
            done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def training_repo(tmp_path_factory: pytest.TempPathFactory) -> TrainingRepo:
    """A bare repo of the example project (plus tests/fixtures/echo_train.py), with a `feature` branch and a
    GitHub-style refs/pull/7/head. Built once per run and shared by the xdist workers (shared_build): the
    checked-out pod template (also shared) was checked out from it, so every worker must see the same SHAs.
    Tests only read it (a test that changes a repo clones or copies it first)."""
    need("git", "apt-get install git")
    with shared_build(tmp_path_factory, "training-repo") as (base, built):
        if built:
            return TrainingRepo(**json.loads((base / "repo.json").read_text(), object_hook=_repo_fields))
        repo = _build_training_repo(base)
        (base / "repo.json").write_text(json.dumps({**repo.__dict__, "bare": str(repo.bare)}))
        return repo


def _repo_fields(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "bare": Path(d["bare"])} if "bare" in d else d


def _build_training_repo(base: Path) -> TrainingRepo:
    work = base / "work"
    shutil.copytree(EXAMPLE_REPO, work)
    shutil.copy(ROOT / "tests" / "fixtures" / "echo_train.py", work / "examples" / "nanogpt" / "echo_train.py")
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "example project", cwd=work)
    main_sha = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    (work / "examples" / "nanogpt" / "config" / "train_feature.py").write_text("max_iters = 4\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "feature config", cwd=work)
    feature_sha = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "-q", "--detach", "main", cwd=work)
    (work / "examples" / "nanogpt" / "config" / "train_pr.py").write_text("max_iters = 5\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "a pull request", cwd=work)
    pr_sha = git("rev-parse", "HEAD", cwd=work)
    bare = base / "repo.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=base)
    git("update-ref", "refs/pull/7/head", pr_sha, cwd=bare)
    return TrainingRepo(f"file://{bare}", bare, main_sha, feature_sha, 7, pr_sha)


@pytest.fixture(scope="session")
def pod_python() -> str:
    """The pod image's python: it must have torch (scripts/setup.sh installs the pinned CPU build)."""
    probe = subprocess.run([POD_PYTHON, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"{POD_PYTHON} has no torch: run scripts/setup.sh (it installs torch==2.13.0 CPU there), "
                    f"or point WFOPS_TEST_POD_PYTHON at a python with torch\n{probe.stderr[-500:]}", pytrace=False)
    return POD_PYTHON


def write_shards(directory: Path) -> None:
    """A real shard pair, written by the example's own downloader."""
    script = EXAMPLE_REPO / "examples" / "nanogpt" / "data" / "cached_fineweb10B.py"
    subprocess.run([sys.executable, str(script), "1"], check=True, capture_output=True,
                   env={**os.environ, "WF_DOWNLOAD_DIR": str(directory)})


def checkout_config(pod: Pod, repo: TrainingRepo, python: str, **extra: str) -> None:
    """Configure `pod` for checkout/sweeps of the training repo, CPU-only, with a quick install command."""
    pod.configure(**{"REPO_URL": repo.url, "REMOTE_PYTHON_BIN": python, "CPU_ONLY": "1", "TRAIN_NPROC": "2",
                     "REPO_INSTALL_CMD": FAST_INSTALL, "BOOTSTRAP_SCRIPT": str(pod.root / "no-bootstrap.sh"), **extra})


@pytest.fixture(scope="session")
def checked_out(tmp_path_factory: pytest.TempPathFactory, training_repo: TrainingRepo, pod_python: str,
                tmux_socket: str) -> Path:
    """One real `checkout` (local target) of the training repo, made once per run and shared by the xdist workers
    (shared_build; one checkout takes ~10 s on a quiet machine and three at once ~30 s each); sweep tests start
    from a copy of this pod (repo, venv, data, state CHECKED_OUT) instead of paying for a checkout each. Nothing
    writes into the template: tests copy it (copy_checked_out, Fleet.checked_out)."""
    with shared_build(tmp_path_factory, "checked-out") as (base, built):
        root = base / "pod"
        if built:
            return root
        template = make_pod("local", base, None, tmux_socket)
        checkout_config(template, training_repo, pod_python)
        write_shards(template.root / "data")
        try:
            template.ok("checkout")
        finally:
            stop_keepers(template.keeper_dir)
            for session in (template.session, template.session + "-sw"):
                template.tmux("kill-session", "-t", f"={session}")
        return root


def copy_checked_out(template: Path, pod: Pod) -> None:
    copy_tree(template, pod.root)


# ------------------------------------------------------------------ a local fleet (tests/fleet.py)

@pytest.fixture(scope="session")
def fleet3(tmp_path_factory: pytest.TempPathFactory):
    """Three loopback sshd pods (127.0.0.2-4), each with its own HOME; stopped (every process of theirs) at the
    end of the session. Tests that change it (kill, files in the homes) should use `fresh_fleet3`."""
    from tests.fleet import Fleet

    try:
        fleet = Fleet.start(tmp_path_factory.mktemp("fleet3"), 3)
    except (realparts.MissingTool, RuntimeError) as exc:
        pytest.fail(str(exc), pytrace=False)
    yield fleet
    fleet.stop()


@pytest.fixture
def fresh_fleet3(fleet3):
    """`fleet3` with every pod up and every home empty; what the test left running on the pods is ended after."""
    fleet3.reset()
    yield fleet3
    fleet3.end_leftovers()


@pytest.fixture
def fleet_ready(fresh_fleet3, checked_out: Path):
    """`fresh_fleet3` with every pod a copy of the session's checked-out pod (repo, venv, data: CHECKED_OUT)."""
    fresh_fleet3.checked_out(checked_out)
    return fresh_fleet3
