"""The pod agent kept alive for reads (wfops/agent/serve.py), driven here as a keeper drives it: frames on its
stdin and stdout, the real agent code, this machine's python (`-I -S`, as on a pod). What a fresh agent answers to
the same request is the yardstick."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import wait_until
from wfops.agent import wire
from wfops.agent.launch import call_for

ROOT = Path(__file__).resolve().parents[2]
CALL = call_for("wfops.agent")
HEAD = struct.Struct(">cI")


def request(tmp: Path, cmd: str, **data: object) -> bytes:
    """A request for the outputs dir tmp/out, where this agent is installed (as the script's glue installs it
    on a pod: the kept agent serves only such a dir)."""
    installed = tmp / "out" / "_control" / "agent" / "wfops"  # the server runs the agent of ROOT/wfops
    installed.mkdir(parents=True, exist_ok=True)
    (installed / ".complete").touch()
    pod = {"out": str(tmp / "out"), "state_file": str(tmp / "out" / "state.json")}
    return (wire.REQUEST_GUARD + json.dumps({"cmd": cmd, "pod": pod, "prelude": {"command": "fsm.status"},
                                             "data": data}) + "\n").encode()


def fresh(line: bytes) -> tuple[bytes, bytes, int]:
    """What a freshly started agent says to `line`."""
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", CALL, str(ROOT)], input=line, capture_output=True,
                          timeout=60)
    return proc.stdout, proc.stderr, proc.returncode


class Server:
    def __init__(self, agent_dir: Path = ROOT) -> None:
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", CALL, str(agent_dir), wire.SERVE_FLAG],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     bufsize=0)  # unbuffered: select() on the pipe sees all there is
        assert self.frame() == (b"R", b"")

    def send(self, kind: bytes, data: bytes = b"") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(HEAD.pack(kind, len(data)) + data)
        self.proc.stdin.flush()

    def frame(self, timeout: float = 60, beats: bool = False) -> tuple[bytes, bytes] | None:
        """The next frame within `timeout` seconds; heartbeats (`h`, every second while a request runs, so their
        number depends on the machine's load) are passed over unless `beats` (they do not extend the wait)."""
        out = self.proc.stdout
        assert out is not None
        deadline = time.monotonic() + timeout
        while True:
            if not select.select([out], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("no frame from the server")
            head = self._exact(HEAD.size)
            if head is None:
                return None
            kind, size = HEAD.unpack(head)
            data = self._exact(size)
            if data is None:
                return None
            if kind != b"h" or beats:
                return kind, data

    def _exact(self, n: int) -> bytes | None:
        out = self.proc.stdout
        assert out is not None
        buf = b""
        while len(buf) < n:
            chunk = out.read(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def ask(self, line: bytes) -> tuple[bytes, bytes, int]:
        self.send(b"q", line)
        got = {}
        while True:
            frame = self.frame()
            assert frame is not None, "the server ended"
            kind, data = frame
            assert kind in (b"o", b"e", b"x"), frame
            got[kind] = data
            if kind == b"x":
                return got[b"o"], got[b"e"], int(data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def ended(pid: int) -> bool:
    """Gone, or a zombie (killed; whoever inherited it has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def blocked(s: Server, tmp_path: Path) -> int:
    """Send `s` a request that blocks (fsm-show of a state file that is a FIFO nobody writes: its open waits); the pid
    of the child that runs it."""
    (tmp_path / "out").mkdir(exist_ok=True)
    os.mkfifo(tmp_path / "out" / "state.json")
    s.send(b"q", request(tmp_path, wire.FSM_SHOW))
    wait_until(lambda: children(s.proc.pid), what="the request's child", interval=0.02)
    [child] = children(s.proc.pid)
    return child


def test_a_served_request_says_what_a_fresh_agent_says(server: Server, tmp_path: Path):
    (tmp_path / "out").mkdir()
    lines = [request(tmp_path, wire.FSM_SHOW), request(tmp_path, wire.TASK_LIST, limit=3),
             request(tmp_path, wire.TASK_SHOW, id="nope"),  # a refusal: its line on stderr and its exit status
             request(tmp_path, wire.SWEEP_STATUS, sweep="x"),
             request(tmp_path, wire.TASK_LIST, limit="three")]  # a bad argument: the door's refusal
    for line in lines:
        assert server.ask(line) == fresh(line), line
    (tmp_path / "out" / "state.json").write_text("{damaged")  # the state read afresh by every request
    line = request(tmp_path, wire.FSM_SHOW)
    answer = server.ask(line)
    assert answer == fresh(line) and b"damaged" in answer[0]


def test_what_is_not_a_served_read_is_refused_with_F_and_nothing_runs(server: Server, tmp_path: Path):
    (tmp_path / "out").mkdir()
    for line in (request(tmp_path, wire.FSM_RESET, to="INIT"), request(tmp_path, wire.TASK_WAIT, id="a"),
                 b"not json\n"):
        server.send(b"q", line)
        frame = server.frame()
        assert frame is not None and frame[0] == b"F", (line, frame)
    assert not (tmp_path / "out" / "state.json").exists()  # fsm-reset would have written it
    assert children(server.proc.pid) == []


def test_one_request_at_a_time_a_second_is_refused_busy_and_k_ends_the_first(tmp_path: Path):
    """A request that runs for a while: `fsm-show` on a pod whose state file is a FIFO nobody writes (its open
    blocks). The next request is refused `F busy`; `k` interrupts the first as a Ctrl-C would (SIGINT: the agent's
    clean-up runs, quietly), whose answer still comes: exit 130, nothing on stderr."""
    s = Server()
    try:
        child = blocked(s, tmp_path)
        s.send(b"q", request(tmp_path, wire.TASK_LIST))
        assert s.frame() == (b"F", b"busy")
        s.send(b"k")
        kinds = [s.frame() for _ in range(3)]
        assert kinds == [(b"o", b""), (b"e", b""), (b"x", b"130")], kinds
        wait_until(lambda: not Path(f"/proc/{child}").exists(), what="the killed child to be reaped")
        line = request(tmp_path, wire.TASK_LIST)
        assert s.ask(line) == fresh(line)  # and the next one is served
    finally:
        s.close()


def test_a_k_that_comes_with_its_request_ends_the_request(tmp_path: Path):
    """`q` and `k` read together (a Ctrl-C right after the request left): the server forks the child and signals it at
    once, before the child has its own SIGINT handler. The child must still end (exit 130), not lose the signal and
    run on (here: block for ever on a state file that is a FIFO nobody writes)."""
    s = Server()
    try:
        (tmp_path / "out").mkdir()
        os.mkfifo(tmp_path / "out" / "state.json")
        line = request(tmp_path, wire.FSM_SHOW)
        assert s.proc.stdin is not None
        s.proc.stdin.write(HEAD.pack(b"q", len(line)) + line + HEAD.pack(b"k", 0))
        s.proc.stdin.flush()
        kinds = [s.frame(timeout=30) for _ in range(3)]
        assert kinds == [(b"o", b""), (b"e", b""), (b"x", b"130")], kinds
    finally:
        s.close()


def test_the_end_of_stdin_ends_the_server_and_the_request_it_runs(tmp_path: Path):
    s = Server()
    try:
        child = blocked(s, tmp_path)
        assert s.proc.stdin is not None
        s.proc.stdin.close()
        assert s.proc.wait(timeout=30) == 0
        wait_until(lambda: ended(child), what="the request's child to be killed with the server")
    finally:
        s.close()


def test_a_child_killed_by_a_signal_is_answered_with_128_plus_the_signal(server: Server, tmp_path: Path):
    child = blocked(server, tmp_path)
    os.kill(child, signal.SIGTERM)
    kinds = [server.frame() for _ in range(3)]
    assert kinds[2] == (b"x", b"143"), kinds


def test_a_server_whose_agent_directory_is_gone_refuses_and_ends(tmp_path: Path):
    """The agent removed on the pod: the next request is refused `F` (the keeper then runs the script, which installs
    the agent again) and the server ends."""
    (tmp_path / "out").mkdir()
    agent_dir = patched_agent(tmp_path, "")
    s = Server(agent_dir)
    try:
        line = request(tmp_path, wire.FSM_SHOW)
        assert s.ask(line) == fresh(line)
        shutil.rmtree(agent_dir)
        s.send(b"q", line)
        assert s.frame() == (b"F", b"the agent's directory is gone")
        assert s.proc.wait(timeout=30) == 0
    finally:
        s.close()


def test_a_requests_child_holds_no_fd_of_the_server_and_no_file(tmp_path: Path):
    """The child's stdin is /dev/null, its stdout and stderr pipes to the server (no temporary file: a pod's full
    disk cannot lose an answer), fd 3 its pipe for what the server may keep of the files it parsed (filecache.py),
    closed in any program it starts; nothing else of the server's is open in it (its channel, its pipes)."""
    s = Server()
    try:
        child = blocked(s, tmp_path)
        wait_until(lambda: Path(f"/proc/{child}/wchan").read_text() not in ("", "0"), what="the child to block")
        fds = {int(fd.name): os.readlink(fd) for fd in Path(f"/proc/{child}/fd").iterdir()}
        assert fds[0] == "/dev/null" and all(fds[n].startswith("pipe:") for n in (1, 2, 3)), fds
        assert sorted(fds) == [0, 1, 2, 3], fds
        flags = Path(f"/proc/{child}/fdinfo/3").read_text().split("flags:")[1].split()[0]
        assert int(flags, 8) & os.O_CLOEXEC and int(flags, 8) & os.O_ACCMODE == os.O_WRONLY, flags
        assert Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[-2] == wire.SERVE_FLAG.encode()
    finally:
        s.close()


def test_a_large_answer_comes_whole(server: Server, tmp_path: Path):
    """Megabytes on stdout (an fsm-show of a long history) come through the pipes as a fresh agent writes them."""
    (tmp_path / "out").mkdir()
    history = [{"at": "2026-12-01T00:00:00+00:00", "from": "INIT", "to": "POD_READY", "by": "x" * 100,
                "reason": f"r{i}"} for i in range(20000)]
    (tmp_path / "out" / "state.json").write_text(json.dumps({"state": "POD_READY", "history": history}))
    line = request(tmp_path, wire.FSM_SHOW)
    answer = server.ask(line)
    assert len(answer[0]) > 2_000_000 and answer == fresh(line)


def patched_agent(tmp_path: Path, body: str) -> Path:
    """A copy of the agent whose fsm-show first runs `body` (Python lines, indented for the function): for a served
    request that writes while it runs, or that cleans up after an interrupt."""
    agent_dir = tmp_path / "agent"
    shutil.copytree(ROOT / "wfops" / "agent", agent_dir / "wfops" / "agent")
    (agent_dir / "wfops" / "__init__.py").write_text("")
    main = agent_dir / "wfops" / "agent" / "__main__.py"
    anchor = "    try:\n        data = workflow.read_state(pod.state_file)\n"  # the start of fsm_show's work
    text = main.read_text()
    assert text.count(anchor) == 1
    main.write_text(text.replace(anchor, body + anchor))
    return agent_dir


def test_a_request_that_writes_as_it_runs_still_gets_heartbeats(tmp_path: Path):
    """The keeper gives up on a kept agent silent for 3 keepalive intervals: a child that writes to stderr every
    0.2 s for 3 s keeps the server's select busy, and the server still sends `h` every second."""
    (tmp_path / "out").mkdir()
    body = ("    import sys as _s, time as _t\n"
            "    for _i in range(15):\n"
            "        _s.stderr.write('tick\\n'); _s.stderr.flush(); _t.sleep(0.2)\n")
    s = Server(patched_agent(tmp_path, body))
    try:
        s.send(b"q", request(tmp_path, wire.FSM_SHOW))
        kinds = []
        while not kinds or kinds[-1] != b"x":
            got = s.frame(beats=True)
            assert got is not None
            kinds.append(got[0])
        assert kinds.count(b"h") >= 2 and kinds[-3:] == [b"o", b"e", b"x"], kinds
    finally:
        s.close()


def test_an_interrupted_request_finishes_its_clean_up_when_the_keeper_goes_too(tmp_path: Path):
    """`k`, then the keeper's connection ends (and with the server gone, the kernel's parent-death signal): the
    child's clean-up after the first SIGINT runs to its end (a second SIGINT does not cut it)."""
    (tmp_path / "out").mkdir()
    marker = tmp_path / "cleaned"
    body = ("    import time as _t\n"
            "    try:\n"
            "        _t.sleep(60)\n"
            "    finally:\n"
            "        _t.sleep(0.5)\n"
            f"        open({str(marker)!r}, 'w').close()\n")
    s = Server(patched_agent(tmp_path, body))
    try:
        s.send(b"q", request(tmp_path, wire.FSM_SHOW))
        wait_until(lambda: children(s.proc.pid), what="the request's child", interval=0.02)
        [child] = children(s.proc.pid)
        s.send(b"k")
        assert s.proc.stdin is not None
        s.proc.stdin.close()
        assert s.proc.wait(timeout=30) == 0
        wait_until(lambda: ended(child), what="the interrupted child to end")
        assert marker.exists()
    finally:
        s.close()
