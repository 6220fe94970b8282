"""wfops.fanout and the fleet path of wfops.tasks._base: values per pod, progress through an explicit log, and
nothing global swapped (no sys.stdout / sys.stderr replacement while the pods work)."""

from __future__ import annotations

import io
import sys
import threading

import pytest

from wfops import fanout
from wfops.errors import ConnectError, NotFoundError
from wfops.settings.load import parse_settings
from wfops.targets import resolve
from wfops.targets.target import LOCAL, Target
from wfops.tasks import _base
from wfops.transport.connect import open_session


class _Pod:
    def __init__(self, name: str) -> None:
        self.name = name


def test_values_and_errors_come_back_in_the_pods_order_with_the_worst_code_and_a_failures_line():
    pods = [_Pod("a"), _Pod("b"), _Pod("c")]
    release = threading.Event()

    def work(pod: _Pod, log: fanout.Log) -> str:
        if pod.name == "a":  # the first pod ends last: the order is the pods', not the ending order
            release.wait(10)
        if pod.name == "b":
            release.set()
            raise NotFoundError("no such task")
        if pod.name == "c":
            raise ConnectError("down")
        return "A"

    result = fanout.run_each(pods, work, stream=io.StringIO())
    assert [(o.member.name, o.value, o.code) for o in result] == [("a", "A", 0), ("b", None, 5), ("c", None, 4)]
    assert result.worst == 5 and [o.member.name for o in result.failed] == ["b", "c"]
    assert result.failures_line() == "2 of 3 pod(s) failed: b: no such task; c: down"


def test_a_bug_in_one_pods_work_is_raised_once_every_pod_has_ended():
    ended = []

    def work(pod: _Pod, log: fanout.Log) -> None:
        if pod.name == "bad":
            raise KeyError("a bug")
        ended.append(pod.name)

    with pytest.raises(KeyError):
        fanout.run_each([_Pod("bad"), _Pod("good")], work)
    assert ended == ["good"]


class _Watched(io.StringIO):
    """A stream that says when a line has arrived."""

    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted, self.seen = wanted, threading.Event()

    def write(self, text: str) -> int:
        n = super().write(text)
        if self.wanted in self.getvalue():
            self.seen.set()
        return n


def test_progress_lines_arrive_prefixed_while_the_pod_still_works():
    stream = _Watched("[pod-b] step 1\n")

    def work(pod: _Pod, log: fanout.Log) -> bool:
        log(f"step 1 on {pod.name}" if pod.name == "pod-a" else "step 1")
        log("two\nlines\x1b[2J")
        return stream.seen.wait(10) if pod.name == "pod-b" else True  # still running when its line is out

    result = fanout.run_each([_Pod("pod-a"), _Pod("pod-b")], work, stream=stream)
    assert [o.value for o in result] == [True, True]
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == sorted(["[pod-a] step 1 on pod-a", "[pod-a] two", "[pod-a] lines\\x1b[2J",
                                    "[pod-b] step 1", "[pod-b] two", "[pod-b] lines\\x1b[2J"])


def test_nothing_replaces_stdout_or_stderr_while_a_fleet_command_runs(capsys: pytest.CaptureFixture[str]):
    """A library that prints while the pods work writes where it always writes, at once: not into a pod's section
    (the old fan-out swapped sys.stdout and sys.stderr for the whole process)."""
    s = parse_settings("OPS_HOSTS=root@127.0.0.2:22,root@127.0.0.3:22\n", environ={})
    streams = sys.stdout, sys.stderr
    during = []

    def body(settings, member, log) -> dict:
        during.append((sys.stdout, sys.stderr))
        print("a library says hello")  # the point of the test: a print the fan-out does not own
        log("working")
        return {"pod": member.name}

    _base.run_on_fleet(s, _base.PodWork(body, lambda d: f"done on {d['pod']}"), False)
    assert during == [streams, streams]
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines.count("a library says hello") == 2
    assert lines.index("a library says hello") < lines.index("== pod root@127.0.0.2:22 ==")
    assert lines[-4:] == ["== pod root@127.0.0.2:22 ==", "done on root@127.0.0.2:22",
                          "== pod root@127.0.0.3:22 ==", "done on root@127.0.0.3:22"]
    assert sorted(err.splitlines()) == ["[root@127.0.0.2:22] working", "[root@127.0.0.3:22] working"]


def test_a_task_body_called_from_python_returns_its_data(tmp_path):
    """What the module docstring of wfops.tasks._base shows: the body of a fleet command is a function."""
    from wfops.tasks.fsm import read_state

    outputs = tmp_path / "outputs"
    s = parse_settings(f"OPS_DEFAULT_HOST=local\nOPS_REMOTE_OUTPUTS_DIR={outputs}\nWF_PERSIST_SECS=0\n"
                       f"REMOTE_ENV_PATH={tmp_path / 'project.env'}\n", environ={})
    states = {pod.name: read_state(s, pod) for pod in resolve.pods(s, environ={})}
    assert list(states) == ["local"]
    assert states["local"]["state"] == "INIT" and states["local"]["exists"] is False


def test_a_pods_own_stderr_lines_go_to_the_sessions_log_not_to_sys_stderr(capsys: pytest.CaptureFixture[str]):
    lines: list[str] = []
    session = open_session(Target(kind=LOCAL, label=LOCAL), show=lines.append)
    # `exit`: the session keeps stdin open (a request may follow the script)
    result = session.exec_script("echo progress >&2; printf 'bell\\a\\n' >&2; echo out; exit 0\n")
    assert result.code == 0 and result.stdout == b"out\n"
    assert lines == ["progress", "bell\\x07"]
    assert capsys.readouterr().err == ""
