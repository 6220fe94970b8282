"""The lean entry (wfops.lean): a read-only command with its keeper warm runs without invoke or the task tree, and
says exactly what the full invoke path says: the same stdout, stderr and exit code, for answers and for errors
(each command run both ways: WFOPS_LEAN=0 is the full path). Anything unusual takes the full path."""

from __future__ import annotations

import json
import re
import shutil
import socket

from tests.conftest import Pod, Result

SWEEP = "sweep-20261201T000000Z"


def imported(res: Result) -> set[str]:
    """Top-level packages a command imported, from Python's -X importtime report (PYTHONPROFILEIMPORTTIME). A
    package hidden from an import (wfops.transport.sshconf.paramiko hides invoke from paramiko) is listed there
    too, as a bare name that took a few microseconds: not counted."""
    found = re.finditer(r"^import time:\s+(\d+) \|\s+(\d+) \|\s+(\S+)", res.err, re.M)
    return {m.group(3).split(".")[0] for m in found if "." in m.group(3) or int(m.group(2)) >= 50}


def without_importtime(err: str) -> str:
    return "".join(line for line in err.splitlines(keepends=True) if not line.startswith("import time:"))


def both_ways(pod: Pod, *args: str) -> tuple[Result, Result]:
    """(lean, full): the command as users run it, then with the lean entry off; the first must have been lean
    (no invoke imported), the second full."""
    lean = pod.wf(*args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    full = pod.wf(*args, env={"PYTHONPROFILEIMPORTTIME": "1", "WFOPS_LEAN": "0"})
    assert "invoke" not in imported(lean), f"{args}: the lean entry did not run it\n{lean.err[-2000:]}"
    assert "invoke" in imported(full)
    return lean, full


def assert_same(lean: Result, full: Result, args: tuple[str, ...]) -> None:
    assert (lean.rc, lean.out, without_importtime(lean.err)) == (full.rc, full.out, without_importtime(full.err)), args


def finished_sweep(pod: Pod, runs: int) -> None:
    """A finished sweep written the way the pod agent writes one (as benchmarks/bench_commands.py does)."""
    manifests = pod.outputs / "_manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    ids = [f"r{i:03d}" for i in range(runs)]
    for i, rid in enumerate(ids):
        (pod.outputs / rid).mkdir()
        doc = {"run_id": rid, "sweep_id": SWEEP, "state": "success" if i else "failed", "ok": bool(i),
               "exit_code": 0 if i else 1, "duration_secs": 1.5 + i, "reason": "bad \x1b[31mcolour\x1b[0m" * (not i)}
        (pod.outputs / rid / "status.json").write_text(json.dumps(doc))
        (pod.outputs / rid / "summary.json").write_text(json.dumps(doc))
    plan = {"sweep_id": SWEEP, "runs": [{"run_id": r, "selected": True, "notes": ""} for r in ids], "queue": []}
    for name in ("sweep-latest.json", f"{SWEEP}.json"):
        (manifests / name).write_text(json.dumps(plan))
    (pod.outputs / "_control" / "sweep.json").write_text(json.dumps({
        "sweep_id": SWEEP, "state": "completed", "reason": "queue finished", "pid": 0,
        "started_at": "2026-12-01T00:00:00+00:00", "ended_at": "2026-12-01T00:01:00+00:00"}))


def test_lean_and_full_say_the_same_answers_and_errors(ssh_pod: Pod):
    ssh_pod.configure(WF_PERSIST_SECS="120")
    ssh_pod.ok("task.run", "--id", "t1", "--cmd", r"printf 'one\n\033[31mred\033[0m\n'; exit 3")
    ssh_pod.wf("task.wait", "--id", "t1")
    ssh_pod.ok("task.run", "--id", "t2", "--cmd", "echo two")
    ssh_pod.ok("task.wait", "--id", "t2")
    before_checkout = [("sweep.status",), ("sweep.status", "--json")]  # the state gate refuses: exit 3 both ways
    for args in before_checkout:
        lean, full = both_ways(ssh_pod, *args)
        assert lean.rc == 3 and "not allowed in state" in lean.err
        assert_same(lean, full, args)
    ssh_pod.ok("fsm.reset", "CHECKED_OUT", "--reason", "lean test")
    finished_sweep(ssh_pod, 12)
    commands = [
        ("fsm.status",), ("fsm.status", "--json"),
        ("task.list",), ("task.list", "--limit", "1"), ("task.list", "--json", "--limit=0"),
        ("task.status", "--id", "t1"), ("task.status", "--id=t1", "--tail-lines", "1", "--json"),
        ("task.status", "--id", "nosuch"),  # exit 5 from the pod
        ("sweep.status",), ("sweep.status", "--json"), ("sweep.status", "--sort", "loss"),
        ("sweep.status", "--sweep", "sweep-20991231T000000Z"),  # no such sweep
        ("sweep.list",), ("sweep.list", "--json"), ("fsm.status", "-c", str(ssh_pod.config_path)),
    ]
    codes = set()
    for args in commands:
        lean, full = both_ways(ssh_pod, *args)
        assert_same(lean, full, args)
        codes.add(lean.rc)
    assert {0, 5} <= codes  # answers and errors were compared, not only answers
    shown = ssh_pod.ok("task.status", "--id", "t1").out
    assert "\\x1b[31mred" in shown and "\x1b" not in shown  # the pod's control characters made visible, as before


def test_anything_unusual_takes_the_full_path(ssh_pod: Pod):
    profile = {"PYTHONPROFILEIMPORTTIME": "1"}
    ssh_pod.configure(WF_PERSIST_SECS="120")
    assert "invoke" not in imported(ssh_pod.ok("fsm.status", env=profile))  # warm (a keeper started here): lean
    for args in (("task.list", "--limit", "abc"), ("fsm.status", "--help"), ("task.list", "-l", "1"),
                 ("fsm.reset", "INIT")):
        res = ssh_pod.wf(*args, env=profile)
        assert "invoke" in imported(res), args
    bad = ssh_pod.wf("task.list", "--limit", "abc")
    assert bad.rc == 2 and bad.last_err == "wfops: --limit='abc' is not valid: expected a whole number >= 0"
    for args, line in ((("task.list", "--limit", "1", "--limit", "2"), "wfops: -l/--limit was given more than "
                        "once: give it once; nothing was run"),  # refused, as `wfops` and `inv` refuse it
                       (("fsm.status", "--", "x"), "wfops: fsm.status takes no words after '--' (got 'x'): give them "
                        "without the '--'; nothing was run")):
        res = ssh_pod.wf(*args, env=profile)
        assert "invoke" in imported(res) and (res.rc, res.out, without_importtime(res.err)) == (2, "", line + "\n")
    ssh_pod.configure(NO_SUCH_KEY="1")  # a warning about the config: the full path prints it
    warned = ssh_pod.wf("fsm.status", env=profile)
    assert "invoke" in imported(warned) and "NO_SUCH_KEY" in warned.err


def test_the_first_command_starts_the_keeper_as_the_full_path_does(ssh_pod: Pod):
    """No keeper yet: the lean entry starts it (warm.prestart + warm.connect, as wfops.prewarm and the full path
    do) and says the same; a pod the keeper cannot reach is the same one line and exit code both ways."""
    ssh_pod.configure(WF_PERSIST_SECS="120")
    verbose = {"WFOPS_VERBOSE": "1"}  # its exec line counts the bytes sent: the agent travelled too
    lean = ssh_pod.wf("fsm.status", env={"PYTHONPROFILEIMPORTTIME": "1", **verbose})
    assert lean.rc == 0 and "invoke" not in imported(lean)
    assert list(ssh_pod.keeper_dir.glob("*.sock"))  # it started the keeper
    assert "config written to" in lean.err and "via the keeper" in lean.err  # a first command, pod without agent
    ssh_pod.ok("disconnect")
    ssh_pod.env_path.unlink()  # the same pod again for the full path: no project.env, no agent
    shutil.rmtree(ssh_pod.outputs / "_control" / "agent")
    full = ssh_pod.wf("fsm.status", env={"WFOPS_LEAN": "0", **verbose})
    assert (lean.rc, lean.out, without_importtime(lean.err)) == (full.rc, full.out, full.err)
    ssh_pod.ok("disconnect")
    with socket.socket() as closed:  # a port with nothing listening: the keeper's connect is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert ssh_pod.sshd is not None
    ssh_pod.configure(OPS_DEFAULT_HOST=f"{ssh_pod.sshd.user}@127.0.0.1:{port}", SSH_CONNECT_TIMEOUT="5")
    lean = ssh_pod.wf("fsm.status", env={"PYTHONPROFILEIMPORTTIME": "1"})
    full = ssh_pod.wf("fsm.status", env={"WFOPS_LEAN": "0"})
    assert "invoke" not in imported(lean) and lean.rc != 0 and lean.last_err.startswith("wfops: ")
    assert (lean.rc, lean.out, without_importtime(lean.err)) == (full.rc, full.out, full.err)


def fetch_summary(err: str) -> str:
    """The summary line without its seconds (they differ between two fetches)."""
    return re.sub(r" in \d+\.\ds$", " in N s", without_importtime(err).strip(), flags=re.M)


def test_run_fetch_is_lean_and_fetches_exactly_as_the_full_path(ssh_pod: Pod):
    """run.fetch with a warm keeper: the same files, the same stdout and summary as the full path; a repeated
    fetch with nothing changed moves nothing; a fleet-free request the lean parser does not take falls back."""
    ssh_pod.configure(WF_PERSIST_SECS="120")
    ssh_pod.ok("fsm.reset", "CHECKED_OUT", "--reason", "lean fetch")
    finished_sweep(ssh_pod, 3)
    (ssh_pod.outputs / "r001" / "sub").mkdir()
    (ssh_pod.outputs / "r001" / "sub" / "blob.bin").write_bytes(bytes(range(256)) * 4000)
    local = ssh_pod.root.parent / "artifacts"
    results = []
    for lean_off in (False, True):
        shutil.rmtree(local, ignore_errors=True)
        env = {"PYTHONPROFILEIMPORTTIME": "1", **({"WFOPS_LEAN": "0"} if lean_off else {})}
        first = ssh_pod.wf("run.fetch", "--all", env=env)
        again = ssh_pod.wf("run.fetch", "--all", env=env)
        one = ssh_pod.wf("run.fetch", "r001", env=env)
        for res in (first, again, one):
            assert res.rc == 0, res.err
            assert ("invoke" in imported(res)) == lean_off
        for rid in ("r000", "r001", "r002"):
            for path in (ssh_pod.outputs / rid).rglob("*"):
                if path.is_file():
                    assert (local / rid / path.relative_to(ssh_pod.outputs / rid)).read_bytes() == path.read_bytes()
        assert "0 file(s) new or changed" in again.err and " 0 bytes on the wire" in again.err
        results.append([(r.out, fetch_summary(r.err)) for r in (first, again, one)])
    assert results[0] == results[1]
    (ssh_pod.outputs / "r002" / "status.json").write_text('{"changed": true}')
    changed = ssh_pod.wf("run.fetch", "r002", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert changed.rc == 0 and "invoke" not in imported(changed) and "1 file(s) new or changed" in changed.err
    assert (local / "r002" / "status.json").read_text() == '{"changed": true}'
    for args in (("run.fetch", "nosuch"), ("run.fetch", "--sweep", "sweep-20991231T000000Z")):  # the pod refuses
        lean, full = both_ways(ssh_pod, *args)
        assert lean.rc == 5
        assert_same(lean, full, args)
    assert not [p.name for p in local.iterdir() if p.name.startswith(".incoming-")]  # no staging left behind
    both = ssh_pod.wf("run.fetch", "r001", "--all", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert both.rc == 2 and "invoke" in imported(both) and both.last_err.startswith("wfops: give one RUN_ID")


def test_a_cold_command_connects_without_invoke_or_fabric_and_says_what_the_full_path_says(ssh_pod: Pod):
    """WF_PERSIST_SECS=0: the lean entry makes the command's own connection (paramiko, no Fabric, no invoke, no
    keeper) and says what the full path says, for answers, errors from the pod and a pod it cannot reach."""
    ssh_pod.configure(WF_PERSIST_SECS="0")
    ssh_pod.ok("task.run", "--id", "t1", "--cmd", "echo one")
    ssh_pod.ok("task.wait", "--id", "t1")
    for args in (("fsm.status",), ("fsm.status", "--json"), ("task.list",), ("task.status", "--id", "t1"),
                 ("task.status", "--id", "nosuch"), ("sweep.status",)):
        lean, full = both_ways(ssh_pod, *args)
        assert_same(lean, full, args)
        assert "fabric" not in imported(lean) and "paramiko" in imported(lean), args  # its own connection
    assert not list(ssh_pod.keeper_dir.glob("*.sock"))  # no keeper was started either way
    res, conns, execs = ssh_pod.count("fsm.status", "--json")
    assert (res.rc, conns, execs) == (0, 1, 1), res.err
    with socket.socket() as closed:  # a port with nothing listening: the connection is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert ssh_pod.sshd is not None
    ssh_pod.configure(OPS_DEFAULT_HOST=f"{ssh_pod.sshd.user}@127.0.0.1:{port}", SSH_CONNECT_TIMEOUT="5")
    lean, full = both_ways(ssh_pod, "fsm.status")
    assert lean.rc == 4 and lean.last_err == f"wfops: cannot connect to {ssh_pod.sshd.user}@127.0.0.1:{port}: " \
        "connection refused", lean.err
    assert_same(lean, full, ("fsm.status", "refused"))
