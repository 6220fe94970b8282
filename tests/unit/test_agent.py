"""The pod agent (wfops/agent) as modules and as real `python3 -I -S` processes: stdlib only, the Python
floor, one vocabulary, the request protocol, liveness, state files under concurrent writers."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wfops.agent import outcome, procs, states, store, workflow
from wfops.agent.facts import deepest_mount, pf_mounts

ROOT = Path(__file__).resolve().parents[2]
WFOPS_DIR = ROOT / "wfops"
POD_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
CALL = "import sys; sys.path.insert(0, sys.argv.pop(1)); from agent.__main__ import main; main()"


def agent(cmd: str, data: dict | None = None, out: Path | None = None, prelude: dict | None = None,
          **pod: str) -> subprocess.CompletedProcess:
    """One client-style request to the agent, run from its own directory with `python3 -I -S`."""
    request = {"cmd": cmd, "pod": {"out": str(out or "/nonexistent"), **pod}, "prelude": prelude or {},
               "data": data or {}}
    return subprocess.run([POD_PYTHON, "-I", "-S", "-c", CALL, str(WFOPS_DIR)], input=json.dumps(request),
                          capture_output=True, text=True)


def test_the_agent_needs_nothing_outside_the_standard_library():
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import agent.__main__ as m\n"
             "[m.load(name) for name in m.MODULES]\n"
             "names = sorted(m for m in sys.modules if m.split('.')[0] == 'agent' or m == 'wfops')\n"
             "print(' '.join(names))")
    res = subprocess.run([POD_PYTHON, "-I", "-S", "-c", probe, str(WFOPS_DIR)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    loaded = res.stdout.split()
    assert "agent.states" in loaded and "agent.scheduler" in loaded and "wfops" not in loaded


def test_the_agent_runs_on_python_3_8():
    vermin = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    assert Path(vermin).exists(), "vermin is a dev dependency (pip install -e .[dev])"
    res = subprocess.run([vermin, "-t=3.8-", "--no-tips", "--violations", "--eval-annotations",
                          str(WFOPS_DIR / "agent")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_modules_and_functions_stay_small():
    import ast

    for path in sorted((WFOPS_DIR / "agent").glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 400, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 60, f"{path.name}:{node.name}"


# names that are defined once, in wfops/agent/states.py: no client module or template may spell them again
VOCABULARY = [*states.STATES, *states.TERMINAL, states.PENDING, states.RUNNING, states.CONTROL_DIR,
              states.TASKS_DIR, states.MANIFESTS_DIR, states.PREVIOUS_DIR, states.STATE_FILE, states.SWEEP_FILE,
              states.STATUS_FILE, states.SUMMARY_FILE, states.LOCK_FILE, states.LATEST_MANIFEST]


@pytest.mark.parametrize("path", sorted([*(WFOPS_DIR / "tasks").glob("*.py"), WFOPS_DIR / "tracked.py",
                                         WFOPS_DIR / "transport" / "rules.py", WFOPS_DIR / "transport" / "command.py",
                                         WFOPS_DIR / "transport" / "render.py",
                                         *(ROOT / "remote_templates").glob("*.j2")]), ids=lambda p: p.name)
def test_states_and_pod_names_are_imported_not_repeated(path: Path):
    text = path.read_text()
    # pod.py speaks of Lium pods: "running" is a pod's status there and "failed" a key of lium's `rm` answer
    allowed = {"pod.py": {"failed", "running"}}.get(path.name, set())
    found = [word for word in set(VOCABULARY) - allowed if re.search(rf"""["'/]{re.escape(word)}["'/]""", text)]
    assert found == [], f"{path.name} spells {found}; import them from wfops.agent.states"


def test_every_rule_names_known_states():
    for rule in states.RULES.values():
        assert set(rule.allowed) <= set(states.STATES)
        assert rule.on_success in (None, *states.STATES)


def test_requests_are_checked_against_the_handlers_signature(tmp_path):
    for data, words in (({"id": "t1", "bogus": 1}, "unknown argument(s) bogus"), ({}, "missing argument id"),
                        ({"id": 7}, "argument id must be str")):
        res = agent("task-show", data, tmp_path)
        assert res.returncode == 2 and words in res.stderr and res.stderr.startswith("@wfops-error 2 ")
    res = agent("no-such-command", {}, tmp_path)
    assert res.returncode == 2 and "no command 'no-such-command'" in res.stderr


def test_liveness_reports_lost_for_dead_runner_other_boot_and_missing_pid():
    me = os.getpid()
    alive = {"state": "running", "pid": me, "pid_start": procs.proc_start(me), "boot_id": procs.boot_id()}
    assert procs.liveness(alive) == ("running", "")
    assert procs.liveness(dict(alive, pid_start=1))[0] == "lost"  # a reused pid: another process
    assert procs.liveness(dict(alive, boot_id="another-boot")) == ("lost", "the pod rebooted after this started")
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert procs.liveness(dict(alive, pid=dead.pid, pid_start=None))[0] == "lost"
    assert procs.liveness({"state": "running"})[0] == "lost"
    assert procs.liveness({"state": "success", "pid": dead.pid}) == ("success", "")
    assert procs.liveness({"state": "pending"}) == ("pending", "")


def test_a_terminal_state_never_goes_back(tmp_path):
    path = str(tmp_path / "status.json")
    store.update_json(path, {"state": "running"})
    store.update_json(path, {"state": "success", "exit_code": 0})
    after = store.update_json(path, {"state": "running"})
    assert after["state"] == "success"
    assert json.loads(Path(path).read_text())["state"] == "success"


@pytest.mark.parametrize("text,why", [("{", "not valid JSON"), ("[1]", "expected a JSON object"),
                                      ('{"x": 1}', "no state"), ("\xff", "unreadable")])
def test_the_loader_reports_damaged_files(tmp_path, text, why):
    path = tmp_path / "f.json"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(store.Damaged) as exc:
        store.load(str(path), required=("state",))
    assert why in str(exc.value) and str(path) in str(exc.value)
    assert store.load(str(tmp_path / "missing.json")) is None


def _text_mode(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return type(exc).__name__, str(exc), getattr(exc, "strerror", None)


@pytest.mark.parametrize("data", [
    b"", b'{"state": "success"}', b'{"a": 1,\r\n "b": 2}\r\n', b'{\r"a":\r 1', b'{"a": 1,\r\n "b" 2}\r\n',
    b"\xef\xbb\xbf{}", b"\xff", b'{"x": "\xc3"}', b'{"x": "\xe2\x82"', "{\"\u00e9\u20ac\U0001f600\": 1}".encode(),
    b'{"k": "' + b"\xc3\xa9" * 70000 + b'"}\r\n', b"{" + b" " * 65535 + b"\xc3\xa9}", b'{"t": "a\rb"}'])
def test_file_text_reads_what_text_mode_reads(tmp_path, data):
    """store.file_text (sweep.status's fast read, issue 24) gives what open(encoding="utf-8").read() gave: the same
    text (newlines translated), the same errors; so a damaged file's note is word for word the same."""
    path = tmp_path / "f.json"
    path.write_bytes(data)
    assert _outcome(store.file_text, str(path)) == _outcome(_text_mode, str(path))
    expected = _outcome(json.loads, _text_mode(str(path))) if _outcome(_text_mode, str(path))[0] == "ok" else None
    if expected is not None and expected[0] != "ok":
        with pytest.raises(store.Damaged) as exc:
            store.load(str(path))
        assert exc.value.why == f"not valid JSON: {expected[1]}"


@pytest.mark.parametrize("make", ["missing", "dir", "under_a_file"])
def test_file_text_fails_as_text_mode_does(tmp_path, make):
    path = tmp_path / "f.json"
    if make == "dir":
        path.mkdir()
    elif make == "under_a_file":
        path.write_text("{}")
        path = path / "status.json"
    a, b = _outcome(store.file_text, str(path)), _outcome(_text_mode, str(path))
    assert (a[0], a[2]) == (b[0], b[2])  # the exception and its strerror (what store.load's note shows)


@pytest.mark.parametrize("log,state,code,expected", [
    ("Root Cause (first observed failure):\n[0]:\n  rank : 1\n  exitcode  : 3 (pid: 12)\n", "failed", 1,
     (3, "nonzero_exit")),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\nRoot Cause\n  exitcode  : 1 (pid: 9)\n",
     "failed", 1, (1, "oom")),
    ("[rank0]: NCCL error in: ProcessGroupNCCL.cpp, unhandled system error\n", "failed", 1, (1, "nccl")),
    ("Watchdog caught collective operation timeout: WorkNCCL(...)\n", "failed", 1, (1, "nccl")),
    ("Root Cause\n  exitcode  : -9 (pid: 4)\n", "failed", 1, (137, "nonzero_exit")),
    ("anything", "timed_out", 143, (143, "timeout")),
    ("anything", "cancelled", 143, (143, "cancelled")),
    ("anything", "success", 0, (0, None)),
])
def test_failure_classes_and_the_workers_real_exit_code(log, state, code, expected):
    got = outcome.classify(log, code, state)
    assert (got["exit_code"], got["failure_class"]) == expected


def test_a_failed_final_sync_makes_a_failed_run(tmp_path):
    run = tmp_path / "r1"
    run.mkdir()
    st = store.update_json(str(run / "status.json"), {"state": "success", "exit_code": 0, "sync_rc": 23})
    final = outcome.write_summary(str(run), st)
    summary = json.loads((run / "summary.json").read_text())
    assert final["state"] == "failed" and json.loads((run / "status.json").read_text())["state"] == "failed"
    assert summary["ok"] is False and summary["failure_class"] == "sync_failed"
    assert summary["final_sync"] == "failed (rsync exit 23)" and "rsync exit 23" in summary["reason"]


def test_mounts_format_table_lookup(tmp_path):
    """WF_MOUNT_TABLE may be in /proc/mounts format (the tests' fake s3fs); mountinfo is covered in tests/lium."""
    table = tmp_path / "mounts"
    table.write_text("/dev/vda / ext4 rw 0 0\ns3fs /mnt fuse.s3fs rw 0 0\nnone /mnt/fast\\040disk tmpfs rw 0 0\n")
    mounts = pf_mounts(str(table))
    assert deepest_mount("/mnt/data/fineweb", mounts) == ("/mnt", "fuse.s3fs", "s3fs")
    assert deepest_mount("/root/x", mounts) == ("/", "ext4", "/dev/vda")
    assert deepest_mount("/mnt/fast disk/x", mounts) == ("/mnt/fast disk", "tmpfs", "none")


def _env_prelude(env: Path, payload: bytes, command: str = "") -> dict:
    return {"command": command, "enforce": True,
            "env": {"sha": hashlib.sha256(payload).hexdigest(), "b64": base64.b64encode(payload).decode()}}


def test_fsm_gate_refuses_and_changes_nothing(tmp_path):
    out = tmp_path / "out"
    state = out / "_control" / "workflow_state.json"
    assert agent("fsm-reset", {"to": "SWEEP_RUNNING"}, out).returncode == 0
    before = state.read_bytes()
    env = tmp_path / "project.env"
    res = agent("noop", {}, out, _env_prelude(env, b"A=1\n", "bootstrap"), env_path=str(env))
    assert res.returncode == 3
    assert res.stderr.strip() == (
        "@wfops-error 3 bootstrap is not allowed in state SWEEP_RUNNING (allowed: POD_READY, BOOTSTRAPPED, "
        "CHECKED_OUT, SWEEP_COMPLETED); see `fsm.status`, or `fsm.reset STATE` if the pod really is elsewhere")
    assert state.read_bytes() == before
    assert not env.exists()  # the config sync comes after the gate


def test_config_sync_writes_mode_600_only_when_changed(tmp_path):
    env = tmp_path / "deep" / "project.env"
    payload = b"A='1 2 $x'\n"
    first = agent("noop", {}, tmp_path, _env_prelude(env, payload), env_path=str(env))
    assert first.returncode == 0 and first.stderr == f"wfops: config written to {env}\n"
    assert env.read_bytes() == payload and oct(env.stat().st_mode & 0o777) == "0o600"
    inode = env.stat().st_ino
    second = agent("noop", {}, tmp_path, _env_prelude(env, payload), env_path=str(env))
    assert second.stderr == "" and env.stat().st_ino == inode


def test_history_is_bounded(tmp_path):
    state = str(tmp_path / "state.json")
    for i in range(states.HISTORY_LIMIT + 7):
        workflow.write_state(state, workflow.read_state(state), "POD_READY" if i % 2 else "INIT", "t", str(i))
    data = json.loads(Path(state).read_text())
    assert len(data["history"]) == states.HISTORY_LIMIT
    assert data["history"][-1]["reason"] == str(states.HISTORY_LIMIT + 6)


def test_concurrent_transitions_from_two_processes_never_corrupt_the_file(tmp_path):
    """Two writer processes, each making 40 transitions, while a reader keeps parsing the file."""
    state = tmp_path / "_control" / "workflow_state.json"
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(WFOPS_DIR)!r})\n"
        "from agent import store, workflow\n"
        "for i in range(40):\n"
        "    with store.locked(sys.argv[1]):\n"
        "        cur = workflow.read_state(sys.argv[1])\n"
        "        workflow.write_state(sys.argv[1], cur, sys.argv[2], 'writer-' + sys.argv[2], str(i))\n"
    )
    writers = [subprocess.Popen([POD_PYTHON, "-I", "-S", "-c", script, str(state), s])
               for s in ("BOOTSTRAPPED", "CHECKED_OUT")]
    reads = 0
    while any(w.poll() is None for w in writers):
        if state.exists():
            json.loads(state.read_text())  # never a half-written file
            reads += 1
    assert [w.returncode for w in writers] == [0, 0]
    assert reads > 0, "the reader never read while the writers ran"
    data = json.loads(state.read_text())
    assert len(data["history"]) == states.HISTORY_LIMIT
    assert sorted({h["to"] for h in data["history"]}) == ["BOOTSTRAPPED", "CHECKED_OUT"]
    # no lost update: every transition's "from" is the "to" of the one before it
    assert all(a["to"] == b["from"] for a, b in zip(data["history"], data["history"][1:], strict=False))
    assert not list(state.parent.glob("*.tmp.*"))


def test_fsm_reset_from_parallel_calls(tmp_path):
    def reset(i: int) -> int:
        target = ("INIT", "POD_READY", "CHECKED_OUT")[i % 3]
        return agent("fsm-reset", {"to": target, "reason": f"r{i}"}, tmp_path).returncode

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(reset, range(24))) == {0}
    data = json.loads((tmp_path / "_control" / "workflow_state.json").read_text())
    assert len(data["history"]) == 24
    assert all(a["to"] == b["from"] for a, b in zip(data["history"], data["history"][1:], strict=False))


def test_processes_holding_gpu_memory_are_named_in_the_summary(tmp_path, monkeypatch):
    """With CUDA (here a stand-in nvidia-smi that answers like the real one), the processes still holding GPU
    memory after a run are listed in its summary; without nvidia-smi there is nothing to list."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\n[ \"$1\" = --query-compute-apps=pid,process_name,used_memory ] || exit 9\n"
                   "echo '4242, python3, 1024 MiB'\necho '4343, /usr/bin/python, 80 MiB'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    holders = procs.gpu_holders()
    assert holders == [{"pid": 4242, "name": "python3", "used_memory": "1024 MiB"},
                       {"pid": 4343, "name": "/usr/bin/python", "used_memory": "80 MiB"}]
    run = tmp_path / "r1"
    run.mkdir()
    st = store.update_json(str(run / "status.json"), {"state": "failed", "exit_code": 1,
                                                      "gpu_memory_held_by": holders})
    outcome.write_summary(str(run), st)
    assert json.loads((run / "summary.json").read_text())["gpu_memory_held_by"] == holders
    monkeypatch.setenv("PATH", "/nonexistent")
    assert procs.gpu_holders() == []


def test_the_entry_point_knows_which_module_registers_each_command():
    """The agent imports only the module of the command it runs (MODULES); every registered command is there."""
    import importlib

    from wfops.agent import __main__ as entry
    from wfops.agent.registry import COMMANDS

    for module in {m for m in entry.MODULES.values() if m}:
        importlib.import_module(f"wfops.agent.{module}")
    assert set(COMMANDS) == set(entry.MODULES)
    for name, fn in COMMANDS.items():
        assert fn.__module__.rsplit(".", 1)[-1] == (entry.MODULES[name] or "__main__"), name


def test_a_sweep_wait_whose_queue_ends_at_its_deadline_does_not_say_it_gave_up(tmp_path, monkeypatch):
    """The queue is seen running, the wait's time runs out, and the queue ends before the last status is read:
    the answer is the ended sweep, not `wait_timed_out` (which made a managed sweep.wait exit 9, 'still
    running', for a sweep that had just ended)."""
    from wfops.agent import results
    from wfops.agent.states import QUEUE_COMPLETED, QUEUE_RUNNING, Layout

    pod = Layout(str(tmp_path / "out"))
    os.makedirs(pod.control)
    store.write_json(pod.sweep_file, {"sweep_id": "s1", "state": QUEUE_RUNNING, "pid": os.getpid(),
                                      "pid_start": procs.proc_start(os.getpid()), "boot_id": procs.boot_id()})
    real = results._status

    def ends_first(layout, patterns=None, abandon=None):  # the queue records its end just before the last read
        store.update_json(pod.sweep_file, {"state": QUEUE_COMPLETED})
        return real(layout, patterns, abandon)

    monkeypatch.setattr(results, "_status", ends_first)
    monkeypatch.setattr(procs, "wait_for_exit", lambda pid, timeout: time.sleep(timeout) or "poll")
    data = results.sweep_wait(pod, timeout=1)
    assert data["sweep"]["state"] == QUEUE_COMPLETED and "wait_timed_out" not in data
    store.update_json(pod.sweep_file, {"state": QUEUE_RUNNING})
    monkeypatch.setattr(results, "_status", real)
    assert results.sweep_wait(pod, timeout=1)["wait_timed_out"] is True  # still running: it did give up


@pytest.mark.parametrize("directory", ["/pod/out/r1", "/pod/out/", "out", "", "/", "a//b", "~/x"])
@pytest.mark.parametrize("name", ["status.json", "metrics.jsonl", "/abs", "a/b", ""])
def test_child_is_os_path_join(directory, name):
    """states.child: the path sweep.status makes for each run's files is the one os.path.join made."""
    assert states.child(directory, name) == os.path.join(directory, name)
