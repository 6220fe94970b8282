"""A script reaches the pod whole or the command fails at once (a CI run hung 120 s on `sweep.start` of a fleet:
`bash: line 1: cmd:fleet-facts: command not found`, the pod's bash given the agent's request without its script).

The cause: the script cache (render.render) wrote each entry through a temporary file named by the PID alone, and
a fleet command renders the same script for every pod in threads of one process: one thread truncated the
temporary file another had just renamed into place, and a third read an empty script. Now each writer has its own
temporary file, and an entry carries the sha256 of its script, so a damaged entry is rendered again. And the
request line itself is guarded: a shell that reads it as commands says one line and exits instead of waiting."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.unit.test_agent import CALL, POD_PYTHON, WFOPS_DIR
from tests.unit.test_templates import _cmd, _request
from wfops.agent import wire
from wfops.transport import render
from wfops.transport.render import script_cache_dir as cache_dir
from wfops.transport.requestline import json_line, request_line

HOSTILE_REQUEST = {"cmd": "fleet-facts", "pod": {"out": "/nonexistent"},
                   "data": {"x": "$(touch /tmp/wfops-pwned-request)", "y": "`touch /tmp/wfops-pwned-request`"}}


@pytest.fixture
def cold_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return cache_dir()


def _render(command: str = "sweep.start") -> str:
    return _cmd(command).script("agent.sh.j2")


def test_threads_rendering_one_script_at_once_all_get_it_whole(cold_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """Three threads (a fleet of three pods) render the same script on a cold cache, many times over: every one
    gets the whole script (before: one try in 50 to 200 handed a thread an empty script)."""
    context = _cmd("sweep.start").context()  # what a fleet command renders for each pod (the same for all)
    full = render.render("agent.sh.j2", **context)
    bad = []
    for trial in range(1000):
        monkeypatch.setenv("XDG_CACHE_HOME", str(cold_cache.parent / f"c{trial}"))
        barrier = threading.Barrier(3)

        def pod(barrier: threading.Barrier) -> None:
            barrier.wait()
            for _ in range(4):
                text = render.render("agent.sh.j2", **context)
                if text != full:
                    bad.append(len(text))

        threads = [threading.Thread(target=pod, args=(barrier,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert bad == [], f"{len(bad)} renders were not the whole script (lengths {sorted(set(bad))}, whole {len(full)})"


@pytest.mark.parametrize("damage", ["empty", "cut", "changed"])
def test_a_damaged_cache_entry_is_rendered_again(cold_cache: Path, damage: str):
    full = _render()
    [entry] = [p for p in cold_cache.iterdir() if not p.name.startswith(".")]
    data = entry.read_bytes()
    damaged = {"empty": b"", "cut": data[:len(data) // 2], "changed": data.replace(b"wf_main", b"wf_mian")}
    entry.write_bytes(damaged[damage])
    assert _render() == full
    assert _render() == full  # and the entry was written whole again
    assert not [p for p in cold_cache.iterdir() if p.name.startswith(".")]  # no temporary file is left behind


def test_a_shell_that_reads_the_request_as_commands_fails_at_once_with_one_line(tmp_path: Path):
    """The pod's `bash -s` given the request line without its script, its stdin left open (as the client leaves it:
    the pod may ask for the agent): it runs nothing of the request and exits 6 with one error line, at once
    (before: `cmd:fleet-facts: command not found`, then it waited for more stdin for ever)."""
    marker = Path("/tmp/wfops-pwned-request")
    marker.unlink(missing_ok=True)
    bash = subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path)
    assert bash.stdin is not None and bash.stderr is not None
    bash.stdin.write(request_line(HOSTILE_REQUEST).encode())
    bash.stdin.flush()  # and not closed
    started = time.monotonic()
    try:
        code = bash.wait(timeout=20)
    finally:
        bash.kill()
        bash.stdin.close()
    assert time.monotonic() - started < 20
    err = bash.stderr.read().decode()
    assert code == 6 and err.startswith("@wfops-error 6 the shell on the pod read the wfops request as commands"), err
    assert err.count("\n") == 1 and not marker.exists()


def test_the_agent_reads_the_guarded_request_and_a_plain_one():
    """The guard is the agent's business alone: it reads the JSON behind it (and a request without it)."""
    out = "/nonexistent-wfops-out"
    request = {"cmd": "noop", "pod": {"out": out}, "prelude": {}, "data": {}}
    for line in (request_line(request), json.dumps(request) + "\n"):
        res = subprocess.run([POD_PYTHON, "-I", "-S", "-c", CALL, str(WFOPS_DIR)], input=line, capture_output=True,
                             text=True)
        assert res.returncode == 0, res.stderr
    assert request_line(request).startswith(wire.REQUEST_GUARD) and "\n" not in request_line(request)[:-1]


def test_the_guard_leaves_the_request_verbatim_for_the_pod(tmp_path: Path):
    """What the client sends after the script: the guard, then the request's JSON exactly (hostile values too)."""
    request = _request("task.run", "task-start", {"id": "t1", "command_text": "x'; touch /tmp/wfops-pwned",
                                                  "session": "wf", "workdir": "~"})
    line = request_line(request)
    assert json.loads(line[len(wire.REQUEST_GUARD):]) == request
    assert json_line(request) in line
