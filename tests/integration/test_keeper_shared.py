"""One keeper process for every warm target (issue 24 part 6): on the loopback fleet (tests/fleet.py), several
pods' connections live in one process, each with its own socket, connection and idle clock; a frozen pod stalls
only its own commands; commands started together still make one connection per pod. sshd's own logs count the
logins and execs; the keeper processes are found by their command line (tests/procview.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import wait_until
from tests.fleet import WFOPS, Fleet
from tests.keeperscripts import PRESTART
from tests.procview import keeper_pids
from tests.slowness import scaled
from wfops.transport import warm

FAST_SILENCE = {"WFOPS_SSH_KEEPALIVE_SECS": "1", "WFOPS_VERBOSE": "1"}  # a frozen pod is found silent after 3 s
VERBOSE = {"WFOPS_VERBOSE": "1"}  # a line per pod request: a script through the keeper, or the kept agent's answer


def _scripts(*errs: str) -> int:
    """Requests that ran a script (an exec), by the commands' WFOPS_VERBOSE lines; the others were answered by a
    pod's kept agent (wfops.transport.podserver: no exec)."""
    return sum(len(re.findall(r"^wfops: exec via the keeper: ", err, re.M)) for err in errs)


def _served(*errs: str) -> int:
    return sum(len(re.findall(r"^wfops: exec via the keeper, answered by the pod's kept agent", err, re.M))
               for err in errs)


def _configs(fleet: Fleet, tmp_path: Path, **over: str) -> tuple[Path, list[Path]]:
    """A fleet config and one config per pod, all in one client dir (one HOME, one keeper directory)."""
    fleet.keeper_dirs.add(tmp_path / "keepers")  # ended at teardown also when a test starts its keepers itself
    whole = fleet.config(tmp_path, WF_PERSIST_SECS="120", SSH_CONNECT_TIMEOUT="2", **over)
    one = [fleet.config(tmp_path, pod=i, name=f"pod{i}.env", WF_PERSIST_SECS="120", SSH_CONNECT_TIMEOUT="2", **over)
           for i in range(len(fleet.pods))]
    return whole, one


def _keepers(tmp_path: Path) -> list[int]:
    return keeper_pids([tmp_path / "keepers"])


def _logins(fleet: Fleet, marks: list[int]) -> list[tuple[int, int]]:
    """(connections, execs) of each pod since its mark."""
    return [p.sshd.counts(m) for p, m in zip(fleet.pods, marks, strict=False)]


def _ok(res: subprocess.CompletedProcess) -> dict:
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    return json.loads(res.stdout)


def _env(cfg: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment Fleet.wf gives `wfops`, for a command started in the background."""
    (cfg.parent / "client-home").mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
    base.update(HOME=str(cfg.parent / "client-home"), WORKFLOW_CONFIG=str(cfg), PYTHONUNBUFFERED="1",
                WFOPS_KEEPER_DIR=str(cfg.parent / "keepers"))
    return {**base, **(extra or {})}


def test_one_keeper_process_holds_every_pods_connection(tmp_path: Path, fresh_fleet3: Fleet):
    fleet = fresh_fleet3
    whole, one = _configs(fleet, tmp_path)
    marks = [p.sshd.mark() for p in fleet.pods]
    runs = [fleet.wf(whole, "fsm.status", "--json", env=VERBOSE), fleet.wf(whole, "fsm.status", "--json", env=VERBOSE),
            fleet.wf(one[1], "fsm.status", "--json", env=VERBOSE)]  # a one-pod config reaches the same connection
    assert len(_ok(runs[0])["pods"]) == 3 and _scripts(runs[0].stderr) == 3  # the first command: scripts
    assert [_ok(r) for r in runs[1:]]
    logins = _logins(fleet, marks)
    assert [c for c, _ in logins] == [1, 1, 1]
    assert sum(e for _, e in logins) == _scripts(*(r.stderr for r in runs))
    assert _scripts(*(r.stderr for r in runs)) + _served(*(r.stderr for r in runs)) == 7
    assert len(_keepers(tmp_path)) == 1
    assert len(list((tmp_path / "keepers").glob("*.sock"))) == 3
    res = fleet.wf(whole, "disconnect", "--all")
    assert res.stdout.strip() == "closed 3 warm connection(s)", res.stdout
    wait_until(lambda: _keepers(tmp_path) == [], what="the keeper process to exit")
    assert not list((tmp_path / "keepers").glob("*.sock")) and not list((tmp_path / "keepers").glob("*.hub"))


def test_commands_started_together_share_one_process_and_one_connection_per_pod(tmp_path: Path, fresh_fleet3: Fleet):
    fleet = fresh_fleet3
    whole, one = _configs(fleet, tmp_path)
    marks = [p.sshd.mark() for p in fleet.pods]
    procs = [subprocess.Popen([str(WFOPS), "fsm.status", "--json"], env=_env(cfg, VERBOSE), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cfg in [whole, *one, whole, *one]]
    results = [(p.communicate(timeout=scaled(120)), p.returncode) for p in procs]
    assert [rc for _, rc in results] == [0] * len(procs), results
    logins, errs = _logins(fleet, marks), [err for (_, err), _ in results]
    assert [c for c, _ in logins] == [1, 1, 1] and all(e >= 1 for _, e in logins)  # one connection a pod
    assert sum(e for _, e in logins) == _scripts(*errs) and _scripts(*errs) + _served(*errs) == 12
    assert len(_keepers(tmp_path)) == 1


def test_a_frozen_pod_stalls_only_its_own_commands(tmp_path: Path, fresh_fleet3: Fleet):
    fleet = fresh_fleet3
    whole, one = _configs(fleet, tmp_path)
    _ok(fleet.wf(whole, "fsm.status", "--json", env=FAST_SILENCE))
    [keeper] = _keepers(tmp_path)
    fleet.freeze(0)
    try:
        stalled = subprocess.Popen([str(WFOPS), "fsm.status", "--json"], env=_env(one[0], FAST_SILENCE),
                                   cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        marks = [p.sshd.mark() for p in fleet.pods]
        errs: list[list[str]] = [[], []]
        for _ in range(3):  # pod 1 and 2 answer at once while pod 0's command waits on its silent pod
            t0 = time.monotonic()
            for i in (1, 2):
                res = fleet.wf(one[i], "fsm.status", "--json", env=FAST_SILENCE)
                _ok(res)
                errs[i - 1].append(res.stderr)
            assert time.monotonic() - t0 < scaled(10)
        out, err = stalled.communicate(timeout=scaled(60))
        assert stalled.returncode == 4, (out, err)
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("wfops: exec ")]
        assert len(lines) == 1 and str(fleet.pods[0].sshd.port) in err, err
        assert _logins(fleet, marks)[1:] == [(0, _scripts(*errs[0])), (0, _scripts(*errs[1]))]
        assert _keepers(tmp_path) == [keeper]  # the process and its other connections went on
    finally:
        fleet.thaw()
    marks = [p.sshd.mark() for p in fleet.pods]
    after = fleet.wf(whole, "fsm.status", "--json", env=FAST_SILENCE)
    _ok(after)
    logins = _logins(fleet, marks)
    assert logins[0] == (1, 1) and [c for c, _ in logins[1:]] == [0, 0]  # pod 0: a new connection, a script
    assert sum(e for _, e in logins) == _scripts(after.stderr) and _scripts(after.stderr) + _served(after.stderr) == 3
    assert _keepers(tmp_path) == [keeper]


def test_each_pod_keeps_its_own_idle_time(tmp_path: Path, fresh_fleet3: Fleet):
    fleet = fresh_fleet3
    _, one = _configs(fleet, tmp_path)
    short = fleet.config(tmp_path, pod=0, name="short.env", WF_PERSIST_SECS="1")
    _ok(fleet.wf(one[1], "fsm.status", "--json"))
    mark = fleet.pods[0].sshd.mark()
    _ok(fleet.wf(short, "fsm.status", "--json"))
    [keeper] = _keepers(tmp_path)
    assert len(list((tmp_path / "keepers").glob("*.sock"))) == 2
    wait_until(lambda: len(list((tmp_path / "keepers").glob("*.sock"))) == 1, timeout=scaled(20),
               what="pod 0's idle connection to end")
    wait_until(lambda: re.search(r"^(Connection closed by|Disconnected from user) ",
                                 fleet.pods[0].sshd.since(mark), re.M), what="pod 0's sshd to see it end")
    assert _keepers(tmp_path) == [keeper]
    marks = [p.sshd.mark() for p in fleet.pods]
    runs = [fleet.wf(cfg, "fsm.status", "--json", env=VERBOSE) for cfg in (one[1], one[0])]
    assert [_ok(r) for r in runs] and _scripts(runs[1].stderr) == 1  # pod 0: a new connection, a script
    assert _logins(fleet, marks)[:2] == [(1, 1), (0, _scripts(runs[0].stderr))]
    assert _keepers(tmp_path) == [keeper]


def test_another_ssh_environment_gets_its_own_keeper_process(tmp_path: Path, fresh_fleet3: Fleet):
    """A connection reads the keepalive interval (and HOME, the agent, the pins) from the environment of the process
    that makes it: a command with another one does not use a process made with the first."""
    fleet = fresh_fleet3
    _, one = _configs(fleet, tmp_path)
    _ok(fleet.wf(one[0], "fsm.status", "--json"))
    _ok(fleet.wf(one[1], "fsm.status", "--json", env=FAST_SILENCE))
    keepers = _keepers(tmp_path)
    assert len(keepers) == 2
    environs = [Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in keepers]
    assert sorted(b"WFOPS_SSH_KEEPALIVE_SECS=1" in env for env in environs) == [False, True]


def test_a_keeper_started_ahead_of_its_command_is_added_without_waiting(tmp_path: Path, fresh_fleet3: Fleet):
    """wfops.prewarm's prestart returns at once; the keeper process connects the pod meanwhile (its first one, then
    a second pod added to the same process): each pod's socket appears with no command waiting on it."""
    fleet = fresh_fleet3
    whole, _ = _configs(fleet, tmp_path)
    env = _env(whole)
    for i in (0, 1):
        pod = fleet.pods[i]
        mark = pod.sshd.mark()
        subprocess.run([sys.executable, "-c", PRESTART, pod.host, str(pod.port), fleet.user, str(fleet.key)],
                       env=env, check=True, timeout=scaled(30))
        wait_until(lambda n=i + 1: len(list((tmp_path / "keepers").glob("*.sock"))) == n, timeout=scaled(30),
                   what=f"pod {i}'s keeper to listen")
        assert pod.sshd.counts(mark) == (1, 0)
        assert len(_keepers(tmp_path)) == 1


def test_a_relative_key_path_means_the_commands_own_directory(tmp_path: Path, fresh_fleet3: Fleet):
    """The keeper process was started by a command elsewhere: a pod added later is still connected with the key
    that the adding command's SSH_KEY_PATH names from its own directory."""
    fleet = fresh_fleet3
    (tmp_path / "client-home").mkdir()
    shared = {"HOME": str(tmp_path / "client-home"), "WFOPS_KEEPER_DIR": str(tmp_path / "keepers")}
    fleet.keeper_dirs.add(tmp_path / "keepers")  # ended at teardown
    for i, (sub, key) in enumerate((("a", "id"), ("b", "k/id"))):
        where = tmp_path / sub
        (where / key).parent.mkdir(parents=True)
        (where / key).write_bytes(fleet.key.read_bytes())
        (where / key).chmod(0o600)
        cfg = fleet.config(where, pod=i, WF_PERSIST_SECS="120", SSH_KEY_PATH=key)
        res = subprocess.run([str(WFOPS), "fsm.status", "--json"], env=_env(cfg, shared), cwd=where,
                             capture_output=True, text=True, timeout=scaled(60))
        _ok(res)
    assert len(keeper_pids([tmp_path / "keepers"])) == 1


def test_a_frozen_keeper_process_does_not_hang_a_pod_it_does_not_hold_yet(tmp_path: Path, fresh_fleet3: Fleet):
    """The whole keeper process stopped (SIGSTOP): a command on a pod it does not hold yet must not wait on it for
    ever (its hub socket still accepts connections, into the stopped process's backlog); the process that does
    not answer is ended and the command goes on with a new one."""
    fleet = fresh_fleet3
    _, one = _configs(fleet, tmp_path)
    _ok(fleet.wf(one[0], "fsm.status", "--json"))
    [keeper] = _keepers(tmp_path)
    os.kill(keeper, signal.SIGSTOP)
    try:
        proc = subprocess.Popen([str(WFOPS), "fsm.status", "--json"], env=_env(one[1]), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=scaled(60))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("a command hung on the stopped keeper process") from None
        assert proc.returncode == 0, (out, err)
        wait_until(lambda: _state(keeper) in (b"", b"Z"), what="the stopped keeper process to be ended")
        _ok(fleet.wf(one[0], "fsm.status", "--json"))
    finally:
        if _state(keeper) not in (b"", b"Z"):
            os.kill(keeper, signal.SIGKILL)


def _state(pid: int) -> bytes:
    """The process's state letter (T stopped, Z ended but not reaped), b"" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b""


def test_disconnect_ends_a_stopped_keeper_process(tmp_path: Path, fresh_fleet3: Fleet):
    """`wfops disconnect` with the keeper process stopped as a whole (SIGSTOP): the sockets still accept into its
    backlog; the command must not wait for ever on an answer: it ends the process that does not answer."""
    fleet = fresh_fleet3
    whole, one = _configs(fleet, tmp_path)
    _ok(fleet.wf(whole, "fsm.status", "--json"))
    [keeper] = _keepers(tmp_path)
    os.kill(keeper, signal.SIGSTOP)
    try:
        for args in (("disconnect",), ("disconnect", "--all")):
            cfg = one[0] if args == ("disconnect",) else whole
            proc = subprocess.Popen([str(WFOPS), *args], env=_env(cfg), cwd=tmp_path, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            try:
                out, err = proc.communicate(timeout=scaled(60))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise AssertionError(f"wfops {' '.join(args)} hung on the stopped keeper process") from None
            assert proc.returncode == 0 and len(out.strip().splitlines()) == 1 and not err, (out, err)
        wait_until(lambda: _state(keeper) in (b"", b"Z"), what="the stopped keeper process to be ended")
        assert all(warm.dial(p) is None for p in (tmp_path / "keepers").glob("*.*"))  # nothing answers there
    finally:
        if _state(keeper) not in (b"", b"Z"):
            os.kill(keeper, signal.SIGKILL)
    _ok(fleet.wf(whole, "fsm.status", "--json"))
