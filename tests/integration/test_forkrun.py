"""The tests' forked `wfops` (tests/forkrun.py) gives what a real start gives: the same output, exit code and
environment, its own process, a timeout that kills it; a command that sets a Python start-up variable is
started for real."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests import forkrun
from tests.forkrun import WFOPS


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "LIUM_", "WF_"))}
    env.update(HOME=str(tmp_path), PYTHONUNBUFFERED="1", **extra)
    return env


def _both(tmp_path: Path, *args: str, **extra: str) -> tuple[subprocess.CompletedProcess[str], ...]:
    env = _env(tmp_path, **extra)
    forked = forkrun.run([str(WFOPS), *args], env, tmp_path, 60)
    real = subprocess.run([str(WFOPS), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    return forked, real


@pytest.mark.parametrize("args", [("--version",), ("nosuch.task",), ("config.show",), ("fsm.status", "--json"),
                                  ("sweep.status", "--sort", "x", "--bogus"), ("--list",), ("run.fetch",)])
def test_a_forked_command_says_what_a_started_one_says(tmp_path: Path, args: tuple[str, ...]):
    pod = tmp_path / "pod"
    (tmp_path / "workflow.env").write_text(f"OPS_DEFAULT_HOST=local\nREMOTE_ENV_PATH={pod}/project.env\n"
                                           f"OPS_REMOTE_OUTPUTS_DIR={pod}/outputs\n")
    _both(tmp_path, *args)  # a first command on the local target may write its files there: both see them then
    forked, real = _both(tmp_path, *args)
    assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr)


def test_the_child_has_the_callers_environment_directory_and_stdio(tmp_path: Path):
    (tmp_path / "elsewhere").mkdir()
    env = _env(tmp_path, WORKFLOW_CONFIG=str(tmp_path / "elsewhere" / "mine.env"))
    (tmp_path / "elsewhere" / "mine.env").write_text("OPS_DEFAULT_HOST=local\n")
    res = forkrun.run([str(WFOPS), "config.show"], env, tmp_path / "elsewhere", 60)
    assert res.returncode == 0, res
    assert f"config file: {tmp_path / 'elsewhere' / 'mine.env'}" in res.stdout
    assert res.stderr == ""
    gone = forkrun.run([str(WFOPS), "config.show"], _env(tmp_path, WORKFLOW_CONFIG="/nonexistent/x.env"), tmp_path, 60)
    assert gone.returncode != 0 and "/nonexistent/x.env" in gone.stderr, gone  # not the previous child's variable


def test_a_python_start_up_variable_means_a_real_start(tmp_path: Path):
    env = _env(tmp_path, PYTHONPROFILEIMPORTTIME="1")
    res = forkrun.run([str(WFOPS), "--version"], env, tmp_path, 60)
    assert res.returncode == 0 and "import time:" in res.stderr  # only a started interpreter reports its imports


def test_a_timeout_kills_the_command(tmp_path: Path):
    with socket.socket() as mute:  # accepts connections (the kernel's backlog) and never says a word
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        (tmp_path / "workflow.env").write_text(f"OPS_DEFAULT_HOST=root@127.0.0.1:{mute.getsockname()[1]}\n"
                                               "WF_PERSIST_SECS=0\n")
        with pytest.raises(subprocess.TimeoutExpired) as killed:
            forkrun.run([str(WFOPS), "fsm.status"], _env(tmp_path), tmp_path, 2)
    assert killed.value.stdout is None or isinstance(killed.value.stdout, bytes)  # as subprocess.run gives it
    again = forkrun.run([str(WFOPS), "--version"], _env(tmp_path), tmp_path, 60)
    assert again.returncode == 0  # the zygote goes on


def test_a_caller_gone_or_a_bad_request_leaves_the_zygote_serving(tmp_path: Path):
    assert forkrun.run([str(WFOPS), "--version"], _env(tmp_path), tmp_path, 60).returncode == 0
    zygote = forkrun._zygote()
    for message in (None, b"not json"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as caller:
            caller.connect(zygote.path)
            if message is not None:
                caller.send(message)
                assert caller.recv(64) == b""  # refused: the connection closed, no command
    again = forkrun.run([str(WFOPS), "--version"], _env(tmp_path), tmp_path, 60)
    assert (again.returncode, again.stdout) == (0, "wfops 0.1.0\n") and forkrun._zygote() is zygote


def test_a_missing_working_directory_is_refused_as_subprocess_refuses_it(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        forkrun.run([str(WFOPS), "--version"], _env(tmp_path), tmp_path / "gone", 60)


def test_an_ended_command_whose_pipes_stay_open_times_out_without_a_second_kill():
    """A command that ended while a process it left holds its stdout: at the deadline, its exit code is kept (the
    zygote sent it already) and no pid is killed again."""
    held_r, held_w = os.pipe()  # the writer end stays open: as a leftover process holding the command's stdout
    done_r, done_w = os.pipe()
    os.close(done_w)  # stderr: ended
    zygote_end, caller_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        zygote_end.send(b"3")
        chunks: dict[int, list[bytes]] = {held_r: [], done_r: []}
        assert forkrun._collect(caller_end, chunks, forkrun.time.monotonic() + 0.5) == (3, False)
    finally:
        for fd in (held_r, held_w, done_r):
            os.close(fd)
        zygote_end.close()
        caller_end.close()
