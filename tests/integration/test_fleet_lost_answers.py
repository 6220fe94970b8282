"""A fleet command whose pod's answer is lost after the pod may have acted (issue 23, "a command that fails never
leaves work queued that status cannot see"), on the loopback fleet with the defaults on (warm keepers):
sweep.add's run stays in the ledger, marked sent, and the pod's own rows resolve it at the next contact."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import wait_until
from tests.fleet import WFOPS, Fleet
from tests.integration.test_fleet import _config, _csv, _status
from tests.integration.test_fleet_edges import _ended_on
from tests.integration.test_fleet_faults import FAST_SILENCE, _ledger
from tests.realparts import running


def _lock_waiter(dirs: dict[int, int]) -> tuple[int] | None:
    """(the pod index,) whose _manifests dir a process waits to flock (/proc/locks: `->` lines are waiters)."""
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if len(parts) > 6 and parts[1] == "->":
            inode = int(parts[6].split(":")[-1])
            if inode in dirs:
                return (dirs[inode],)
    return None


def _waiter_of(adding: subprocess.Popen, by_inode: dict[int, int]) -> tuple[int] | None:
    """The pod whose inbox lock sweep-add's agent waits for; the command's own output if it ended first."""
    if adding.poll() is not None:
        out, err = adding.communicate()
        raise AssertionError(f"sweep.add ended ({adding.returncode}) before its agent waited: {out} {err}")
    return _lock_waiter(by_inode)


def _wf_background(fleet: Fleet, cfg: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    home = cfg.parent / "client-home"
    home.mkdir(exist_ok=True)
    fleet.keeper_dirs.add(cfg.parent / "keepers")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_", "TMUX"))}
    base.update(HOME=str(home), WORKFLOW_CONFIG=str(cfg), PYTHONUNBUFFERED="1",
                WFOPS_KEEPER_DIR=str(cfg.parent / "keepers"), **env)
    return subprocess.Popen([str(WFOPS), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=base, cwd=cfg.parent)


def test_a_sweep_add_whose_answer_is_lost_keeps_the_run_and_it_runs_once(tmp_path: Path, fleet_ready: Fleet):
    """The pod froze (a partition) after sweep.add's request reached its agent and before it answered: the
    client's connection died (exit 4), the pod, thawed, queued and ran the run. Before, sweep.add dropped the run
    from the ledger on any error: it ran, yet sweep.status and run.fetch never showed it. Now the ledger has it
    (written before the request went out, marked `sent`), status shows it, and the pod's own row resolves it."""
    fleet = fleet_ready
    env = dict(FAST_SILENCE)
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1", SSH_CONNECT_TIMEOUT="2")
    rows = [f"a{i},config/train_tiny.py,{i},,,1," for i in range(3)]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows)), env=env).returncode == 0
    assert fleet.wf(cfg, "sweep.wait", env=env, timeout=120).returncode == 0
    more = _csv(tmp_path, ["late,config/train_tiny.py,7,,,1,"], "more.csv")
    # the pod froze with the request in hand: its answer will not come back
    adding, target = _add_then_fault(fleet, cfg, env, more, lambda _add, i: fleet.freeze(i))
    out, err = adding.communicate(timeout=120)
    pod = fleet.pods[target].address
    assert adding.returncode == 4, (adding.returncode, out, err)
    assert "Traceback" not in err and "may be queued there" in out, (out, err)
    sent = _ledger(tmp_path, cfg)["runs"]["late"]
    assert sent["pods"] == [pod] and sent["sent"]["pod"] == pod, sent
    fleet.thaw()

    def ended() -> dict | None:
        runs = {r["run_id"]: r for r in _status(fleet, cfg)["runs"]}
        return runs if runs.get("late", {}).get("state") == "success" else None

    runs = wait_until(ended, timeout=120, interval=0.5, what="the added run seen ended by sweep.status")
    assert runs["late"]["pod"] == pod and len(runs) == 4, runs
    assert "sent" not in _ledger(tmp_path, cfg)["runs"]["late"]  # resolved by the pod's own row
    assert _ended_on(fleet)["late"] == 1
    fetched = fleet.wf(cfg, "run.fetch", "--all", env=env, timeout=120)
    assert fetched.returncode == 0, (fetched.stdout, fetched.stderr)
    assert (tmp_path / "artifacts" / "late" / "summary.json").is_file()
    shutil.rmtree(tmp_path / "artifacts" / "late")
    one = fleet.wf(cfg, "run.fetch", "late", env=env, timeout=120)  # by its id: from its pod alone (the others
    assert one.returncode == 0, (one.stdout, one.stderr)  # do not have it: they made it exit 5 before)
    assert (tmp_path / "artifacts" / "late" / "summary.json").is_file()


def test_a_sweep_add_whose_request_never_reached_the_pod_is_resolved_as_not_queued(
        tmp_path: Path, fleet_ready: Fleet):
    """The other way: the connection was cut while sweep-add's agent waited for the inbox lock, and the agent
    died with it: the run is marked sent; the next sweep.status sees the pod without it and says so in one
    line; the run leaves the ledger (a run no pod has is never waited for)."""
    fleet = fleet_ready
    env = dict(FAST_SILENCE)
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1", SSH_CONNECT_TIMEOUT="2")
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, ["b0,config/train_tiny.py,1,,,1,"])),
                    env=env).returncode == 0
    assert fleet.wf(cfg, "sweep.wait", env=env, timeout=120).returncode == 0
    more = _csv(tmp_path, ["gone,config/train_tiny.py,7,,,1,"], "more.csv")
    adding, target = _add_then_fault(fleet, cfg, env, more, lambda _add, i: fleet.cut(i))  # its sshd and sessions die
    out, err = adding.communicate(timeout=120)
    assert adding.returncode == 4 and "Traceback" not in err, (adding.returncode, out, err)
    assert _ledger(tmp_path, cfg)["runs"]["gone"]["sent"]["pod"] == fleet.pods[target].address
    fleet.revive(target)
    shown = fleet.wf(cfg, "sweep.status", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert [r["run_id"] for r in json.loads(shown.stdout)["runs"]] == ["b0"]
    assert shown.stderr.strip().splitlines() == [
        f"wfops: gone was not queued on {fleet.pods[target].address} (sweep.add sent it and had no answer; "
        f"{fleet.pods[target].address} does not have it): it left the ledger; sweep.add it again"], shown.stderr
    assert "gone" not in _ledger(tmp_path, cfg)["runs"]
    assert _ended_on(fleet)["gone"] == 0


def _add_then_fault(fleet: Fleet, cfg: Path, env: dict[str, str], csv: Path,
                    fault: Callable[[subprocess.Popen[str], int], object]) -> tuple[subprocess.Popen[str], int]:
    """`sweep.add --csv csv` in the background while this test holds every pod's inbox lock (`_manifests`), so the
    agent waits with the request in hand; `fault(sweep.add's process, pod index)` on the pod it reached (the locks
    still held), then the locks go."""
    handles = {i: os.open(p.home / "outputs" / "_manifests", os.O_RDONLY | os.O_DIRECTORY)
               for i, p in enumerate(fleet.pods)}
    try:
        for fd in handles.values():
            fcntl.flock(fd, fcntl.LOCK_EX)
        by_inode = {os.fstat(fd).st_ino: i for i, fd in handles.items()}
        adding = _wf_background(fleet, cfg, env, "sweep.add", "--csv", str(csv))
        (target,) = wait_until(lambda: _waiter_of(adding, by_inode), timeout=90, interval=0.05,
                               what="sweep-add's agent waiting for the inbox lock on its pod")
        fault(adding, target)
    finally:
        for fd in handles.values():
            os.close(fd)
    return adding, target


def test_a_sweep_add_interrupted_while_its_agent_waits_is_not_dropped_by_a_status_meanwhile(
        tmp_path: Path, fleet_ready: Fleet):
    """Found from outside (review of issue 23): Ctrl-C of sweep.add while its agent on the pod still waited for
    the inbox lock (its request had arrived; the agent, holding the pod's command lock, goes on). A sweep.status
    right after heard the pod without the run, said "not queued ... sweep.add it again" and dropped it from the
    ledger; the agent then queued it and it ran, shown by no fleet command (and a second sweep.add would have run
    it twice). A pod whose command lock is held (a mutating command at work) settles no mark now: the run stays,
    and once queued, its own row resolves it."""
    fleet = fleet_ready
    env = dict(FAST_SILENCE)
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1", SSH_CONNECT_TIMEOUT="2")
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, ["c0,config/train_tiny.py,1,,,1,"])),
                    env=env).returncode == 0
    assert fleet.wf(cfg, "sweep.wait", env=env, timeout=120).returncode == 0
    more = _csv(tmp_path, ["late,config/train_tiny.py,7,,,1,"], "more.csv")

    def interrupt_then_look(adding: subprocess.Popen[str], target: int) -> None:
        adding.send_signal(signal.SIGINT)  # Ctrl-C: the client stops waiting, the agent on the pod does not
        out, err = adding.communicate(timeout=60)
        assert adding.returncode == 130 and "Traceback" not in err, (adding.returncode, out, err)
        shown = fleet.wf(cfg, "sweep.status", "--json", env=env)
        assert shown.returncode == 0 and "not queued" not in shown.stderr, (shown.stdout, shown.stderr)
        assert [r["run_id"] for r in json.loads(shown.stdout)["runs"]] == ["c0", "late"]
        assert _ledger(tmp_path, cfg)["runs"]["late"]["sent"]["pod"] == fleet.pods[target].address

    _, target = _add_then_fault(fleet, cfg, env, more, interrupt_then_look)

    def ended() -> dict | None:
        runs = {r["run_id"]: r for r in _status(fleet, cfg)["runs"]}
        return runs if runs.get("late", {}).get("state") == "success" else None

    runs = wait_until(ended, timeout=120, interval=0.5, what="the interrupted add's run seen ended by sweep.status")
    assert runs["late"]["pod"] == fleet.pods[target].address
    assert "sent" not in _ledger(tmp_path, cfg)["runs"]["late"]
    assert _ended_on(fleet)["late"] == 1


def test_a_sweep_add_killed_before_its_answer_leaves_no_mark_for_ever(tmp_path: Path, fleet_ready: Fleet):
    """Found from outside (review of issue 23): sweep.add killed (SIGKILL, a laptop that died) after it wrote its
    marks never wrote `closed`, so no pod answer could ever settle them: the run, which no pod had, stayed in the
    ledger `unknown` for ever and sweep.wait waited for it until its timeout. A mark without `closed` found under
    the ledger lock belongs to a sweep.add that is gone (a live one holds the lock): it is closed then, and the
    next answer settles it."""
    fleet = fleet_ready
    env = dict(FAST_SILENCE)
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1", SSH_CONNECT_TIMEOUT="2")
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, ["d0,config/train_tiny.py,1,,,1,"])),
                    env=env).returncode == 0
    assert fleet.wf(cfg, "sweep.wait", env=env, timeout=120).returncode == 0
    more = _csv(tmp_path, ["dead,config/train_tiny.py,7,,,1,"], "more.csv")

    def kill_then_cut(adding: subprocess.Popen[str], target: int) -> None:
        adding.kill()  # no Ctrl-C handler runs: no `closed`
        adding.communicate(timeout=60)
        fleet.cut(target)  # the waiting agent dies too: the run was never queued

    _, target = _add_then_fault(fleet, cfg, env, more, kill_then_cut)
    assert "closed" not in _ledger(tmp_path, cfg)["runs"]["dead"]["sent"]
    fleet.revive(target)
    waited = fleet.wf(cfg, "sweep.wait", "--json", "--timeout-secs", "60", env=env, timeout=120)
    assert waited.returncode == 0, (waited.stdout, waited.stderr)
    assert [r["run_id"] for r in json.loads(waited.stdout)["runs"]] == ["d0"], waited.stdout
    assert "dead was not queued on" in waited.stderr, waited.stderr
    assert "dead" not in _ledger(tmp_path, cfg)["runs"]


def _command_lock_waiters(by_inode: dict[int, int]) -> dict[int, int]:
    """pod index -> the pid of a process waiting to flock that pod's command lock (/proc/locks `->` lines)."""
    out = {}
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if len(parts) > 6 and parts[1] == "->" and int(parts[6].split(":")[-1]) in by_inode:
            out[by_inode[int(parts[6].split(":")[-1])]] = int(parts[5])
    return out


def _hold(paths: list[Path]) -> dict[int, int]:
    """Every path's flock, held here (as by another wfops command at work on each pod): index -> fd."""
    fds = {i: os.open(p, os.O_RDWR | os.O_CREAT) for i, p in enumerate(paths)}
    for fd in fds.values():
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fds


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _add_stopped_before_the_lock(fleet: Fleet, cfg: Path, csv: Path) -> tuple[subprocess.Popen[str], int, int,
                                                                            dict[int, int]]:
    """`sweep.add --csv csv` whose sweep-add request reached its pod and stopped (SIGSTOP) just before it took the
    pod's command lock, which this test holds on every pod: (sweep.add's process, the pod, the stopped pid, the
    held locks by pod). Its first calls (fleet-facts, under the same lock) are let through while sweep.add itself
    is stopped, so the one waiter left is sweep-add's."""
    locks = [p.home / "outputs" / "_control" / "command.lock" for p in fleet.pods]
    held = _hold(locks)
    by_inode = {os.fstat(fd).st_ino: i for i, fd in held.items()}
    adding = _wf_background(fleet, cfg, {"WFOPS_LOCK_WAIT_SECS": "300"}, "sweep.add", "--csv", str(csv))
    facts = wait_until(lambda: adding.poll() is None and len(w := _command_lock_waiters(by_inode)) == len(locks)
                       and w, timeout=90, interval=0.05, what="sweep.add's fleet-facts waiting on every pod")
    scripts = [_parent(pid) for pid in facts.values()]
    os.kill(adding.pid, signal.SIGSTOP)  # its facts are answered while it is stopped: its add is not sent yet
    for fd in held.values():
        os.close(fd)
    wait_until(lambda: not any(running(pid) for pid in scripts), timeout=60, what="fleet-facts done on every pod")
    held = _hold(locks)
    os.kill(adding.pid, signal.SIGCONT)
    waiting = wait_until(lambda: _command_lock_waiters(by_inode) or None, timeout=90, interval=0.02,
                         what="sweep.add's request waiting for its pod's command lock")
    ((target, pid),) = waiting.items()
    os.kill(pid, signal.SIGSTOP)  # the pod's process stops before it takes the lock
    return adding, target, pid, held


def test_a_sweep_add_stopped_before_the_pods_command_lock_never_queues_after_a_status_said_not_queued(
        tmp_path: Path, fleet_ready: Fleet):
    """The race left by the `busy` rule (review of issue 23): sweep.add's request reached the pod, whose process
    stopped (SIGSTOP) just before it took the pod's command lock; the client gave up (Ctrl-C). A sweep.status
    then found the lock free and the run absent, said "not queued ... sweep.add it again" and dropped it from the
    ledger; the stopped process went on, took the lock and queued the run: it ran, shown by no fleet command. Now
    each request carries a token: the status declares it abandoned on the pod before it reads the rows, and the
    add that arrives after that is refused (its token's record says it arrived late)."""
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1", SSH_CONNECT_TIMEOUT="2")
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, ["e0,config/train_tiny.py,1,,,1,"]))
                    ).returncode == 0
    assert fleet.wf(cfg, "sweep.wait", timeout=120).returncode == 0
    adding, target, stopped, held = _add_stopped_before_the_lock(
        fleet, cfg, _csv(tmp_path, ["late,config/train_tiny.py,7,,,1,"], "more.csv"))
    pod = fleet.pods[target].address
    try:
        adding.send_signal(signal.SIGINT)  # the client stops waiting
        out, err = adding.communicate(timeout=60)
        assert adding.returncode == 130 and "Traceback" not in err, (adding.returncode, out, err)
        sent = _ledger(tmp_path, cfg)["runs"]["late"]["sent"]
        assert sent["pod"] == pod, sent
        for fd in held.values():
            os.close(fd)
        held.clear()  # the other command ended: the pod's command lock is free, the stopped add not yet in
        shown = fleet.wf(cfg, "sweep.status", "--json")
        assert shown.returncode == 0, (shown.stdout, shown.stderr)
        assert [r["run_id"] for r in json.loads(shown.stdout)["runs"]] == ["e0"]
        assert f"wfops: late was not queued on {pod}" in shown.stderr, shown.stderr
    finally:
        for fd in held.values():
            os.close(fd)
        os.kill(stopped, signal.SIGCONT)  # the stopped add goes on: it takes the lock and reaches the agent
    sid = _ledger(tmp_path, cfg)["pods"][pod]["sweep_id"]
    manifests = fleet.pods[target].home / "outputs" / "_manifests"
    token = manifests / f"{sid}.adds" / str(sent.get("token"))

    def settled() -> str | None:
        if "late" in {r["run_id"] for r in json.loads((manifests / f"{sid}.json").read_text())["runs"]}:
            return "queued"
        return "refused" if token.is_file() and "arrived_late_at" in json.loads(token.read_text()) else None

    assert wait_until(settled, timeout=60, interval=0.1, what="the stopped sweep.add handled on the pod") == "refused"
    assert json.loads(token.read_text())["state"] == "abandoned"
    again = fleet.wf(cfg, "sweep.status", "--json")
    assert again.returncode == 0 and "late" not in again.stdout, (again.stdout, again.stderr)
    assert _ended_on(fleet)["late"] == 0
