"""Surroundings a command cannot work in are one line and exit 2, never a traceback, on every path of `wfops` (the
cached fast path, the lean entry, the full invoke path: WFOPS_LEAN=0), each run through bash as a user's shell
runs it: the working directory removed, stdout closed, a `${VAR}` whose environment value is not UTF-8, a
workflow.env that is not UTF-8. A reader of stdout gone is a quiet 141, a change made all the same; an output
encoding that cannot show a character writes its escape and the command exits as it would have (docs/commands.md
"Where a command runs")."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess

import pytest

from tests.conftest import BIN, ROOT, WFOPS, Pod

WF = shlex.quote(str(WFOPS))
# the cached fast path (primed by the same command just before), the lean entry alone, the full invoke path
PATHS = {"cached": {}, "lean": {"WFOPS_LEAN_CACHE": "0"}, "full": {"WFOPS_LEAN": "0"}}


def bash(pod: Pod, script: str, path: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**pod.env(), **PATHS[path], **env}
    if path == "cached":  # the same command line and environment once before: its entry is kept
        subprocess.run(["bash", "-c", script], env=full_env, capture_output=True, timeout=120, cwd=pod.root.parent)
    return subprocess.run(["bash", "-c", script], env=full_env, capture_output=True, text=True, timeout=120,
                          cwd=pod.root.parent, errors="surrogateescape")


def line_of(pod: Pod, start: bytes) -> int:
    return [ln.startswith(start) for ln in pod.config_path.read_bytes().split(b"\n")].index(True) + 1


def one_line(res: subprocess.CompletedProcess, rc: int, line: str) -> None:
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert (res.returncode, res.stderr.splitlines()) == (rc, [line]), (res.returncode, res.stderr)


@pytest.fixture
def warm(ssh_pod: Pod) -> Pod:
    """An SSH pod whose keeper is warm: the lean entry and the cached fast path take its reads."""
    ssh_pod.configure(WF_PERSIST_SECS="120")
    ssh_pod.ok("fsm.status")
    return ssh_pod


@pytest.mark.parametrize("path", PATHS)
def test_a_removed_working_directory_is_one_line(warm: Pod, path: str):
    gone = shlex.quote(str(warm.root.parent / "gone"))
    res = bash(warm, f"mkdir -p {gone} && cd {gone} && rmdir {gone} && exec {WF} fsm.status", path)
    one_line(res, 2, "wfops: the current directory no longer exists (it was removed after the shell entered it): "
                     "nothing was run; cd to a directory that exists and run the command again")


def test_the_programs_own_flags_and_disconnect_all_work_in_a_removed_directory(local_pod: Pod):
    """They look for no config: --version, --help (of the program or a task), --list, `disconnect --all`."""
    gone = shlex.quote(str(local_pod.root.parent / "gone"))
    for args, says in (("--version", "wfops "), ("--help", "wfops runs ML"), ("--list", "Subcommands"),
                       ("--help fsm.status", "Usage: wfops"), ("fsm.status --help", "Usage: wfops"),
                       ("run.fetch --help", "Usage: wfops"), ("--complete -- wfops fsm.", "fsm.status"),
                       ("disconnect --all", "")):
        for path in ("cached", "lean"):  # a task's --help reaches the cached fast path's lookup first
            res = bash(local_pod, f"mkdir -p {gone} && cd {gone} && rmdir {gone} && exec {WF} {args}", path)
            assert res.returncode == 0 and says in res.stdout and "Traceback" not in res.stderr, (args, res.stderr)
    # past the first task, a program flag is the task's to take: these look for a config, and are refused
    for args in ("fsm.status --version", "task.list -l 3", "disconnect --all fsm.status"):
        res = bash(local_pod, f"mkdir -p {gone} && cd {gone} && rmdir {gone} && exec {WF} {args}", "lean")
        one_line(res, 2, "wfops: the current directory no longer exists (it was removed after the shell entered "
                         "it): nothing was run; cd to a directory that exists and run the command again")


UNWRITABLE = {">&-": "standard output is closed (`>&-`)",
              "1</dev/null": "standard output is open for reading only (`1</dev/null`)"}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("redirect", UNWRITABLE)
def test_stdout_closed_or_read_only_is_one_line_and_nothing_runs(warm: Pod, path: str, redirect: str):
    before = warm.state_file.read_text() if warm.state_file.exists() else None
    res = bash(warm, f"exec {WF} fsm.reset POD_READY {redirect}", path)
    one_line(res, 2, f"wfops: {UNWRITABLE[redirect]}: nothing was run; to discard the output, send it to "
                     "/dev/null (`>/dev/null`) instead")
    assert (warm.state_file.read_text() if warm.state_file.exists() else None) == before
    for args in ("fsm.status", "--version"):  # a read, which the lean paths take; the program's own flag
        res = bash(warm, f"exec {WF} {args} {redirect}", path)
        one_line(res, 2, f"wfops: {UNWRITABLE[redirect]}: nothing was run; to discard the output, send it to "
                         "/dev/null (`>/dev/null`) instead")


@pytest.mark.parametrize("path", PATHS)
def test_arguments_reach_the_pod_as_the_bytes_given_utf8_or_not_whatever_the_locale(warm: Pod, path: str):
    """A task's command runs as typed: UTF-8 text is taken as UTF-8 even where the locale reads it otherwise (a C
    locale without UTF-8 mode: two lone surrogates, which the pod wrote as-is); other bytes reach the pod's script as
    they were (the agent failed on them: `UnicodeEncodeError ... surrogates not allowed`, exit 6)."""
    ascii_locale = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    cases = (("été", ascii_locale, "été".encode()), ("\\xe9t\\xe9", {}, b"\xe9t\xe9"),
             ("\\xe9t\\xe9", ascii_locale, b"\xe9t\xe9"))
    for i, (typed, env, written) in enumerate(cases):
        out = warm.root.parent / f"typed-{path}-{i}.txt"
        res = bash(warm, f"{WF} task.run --id t{i} --cmd $'printf {typed} > {out}' && exec {WF} task.wait --id t{i}",
                   "lean", **env)
        assert res.returncode == 0 and out.read_bytes() == written, (i, res.stderr)
    res = bash(warm, f"exec {WF} fsm.reset POD_READY --reason $'bad\\xffreason'", path)  # stored, as before
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    res = bash(warm, f"exec {WF} fsm.reset POD_READY --reason 'été'", path, **ascii_locale)  # text, not surrogates
    assert res.returncode == 0 and json.loads(warm.state_file.read_text())["history"][-1]["reason"] == "été"


def test_an_argument_that_is_not_utf8_and_stays_here_works_as_before(local_pod: Pod):
    """A local file name of bytes that are not UTF-8 is written, validated and completed as before (a first check that
    refused such arguments at the start refused these too)."""
    local_pod.write_config()
    folder = local_pod.root.parent
    name = "t\\xe9.csv"
    res = bash(local_pod, f"exec {WF} sweep.template --csv $'{name}'", "lean")
    assert res.returncode == 0 and (folder / os.fsdecode(b"t\xe9.csv")).is_file(), res.stderr
    res = bash(local_pod, f"exec {WF} sweep.validate --csv $'{name}'", "lean")
    assert res.returncode == 0 and "valid" in res.stdout, res.stderr
    res = bash(local_pod, f"exec {WF} --complete -- wfops sweep.validate --csv $'{name}' --", "lean")
    assert res.returncode == 0 and "--csv" in res.stdout and not res.stderr, res.stderr


@pytest.mark.parametrize("path", PATHS)
def test_a_reference_to_an_environment_value_that_is_not_utf8_is_one_line(warm: Pod, path: str):
    warm.configure(EXTRA_ENV_KEYS="MYVAR")
    warm.config_path.write_text(warm.config_path.read_text() + "MYVAR=${VAR}\n")  # unquoted: expanded
    res = bash(warm, f"export VAR=$'\\xff'; exec {WF} fsm.status", path)
    one_line(res, 2, f"wfops: config: MYVAR (workflow.env line {line_of(warm, b'MYVAR=')}) refers to ${{VAR}}, and VAR "
                     "in the environment is not valid UTF-8: set VAR to UTF-8 text, or write the value in workflow.env")


@pytest.mark.parametrize("path", PATHS)
def test_a_workflow_env_that_is_not_utf8_names_its_line(warm: Pod, path: str):
    warm.config_path.write_bytes(warm.config_path.read_bytes() + b"EXTRA_ENV_KEYS=X\nX=caf\xe9\n")
    res = bash(warm, f"exec {WF} fsm.status", path)
    line = line_of(warm, b"X=caf")
    one_line(res, 2, f"wfops: config file {warm.config_path} is not UTF-8 text (line {line}, byte 0xe9): "
                     "save it as UTF-8")


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C", "PYTHONUTF8": "0"}])
@pytest.mark.parametrize("path", PATHS)
def test_an_output_encoding_without_a_character_writes_its_escape(warm: Pod, path: str, env: dict[str, str]):
    warm.configure(OPS_REMOTE_OUTPUTS_DIR=str(warm.outputs) + "-\u00e9")
    res = bash(warm, f"exec {WF} fsm.status", path, **env)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 0, res.stderr
    assert f"file    {warm.outputs}-\\xe9/_control/workflow_state.json" in res.stdout.splitlines()


@pytest.mark.parametrize("path", PATHS)
def test_a_reader_gone_is_quiet_141_and_a_change_is_made_all_the_same(warm: Pod, path: str):
    """The reader has gone before the first write (`| head -0` once head has exited): deterministic."""
    read = bash(warm, f"{WF} fsm.status | (exec 0<&-; sleep 0.01); exit ${{PIPESTATUS[0]}}", path)
    assert (read.returncode, read.stderr) == (141, "")
    res = bash(warm, f"{WF} fsm.reset POD_READY | (exec 0<&-; sleep 0.01); exit ${{PIPESTATUS[0]}}", path)
    assert (res.returncode, res.stderr) == (141, "")
    assert warm.state()["state"] == "POD_READY"


# `local`; ssh through the keeper; ssh over a cold connection's reader threads (WF_PERSIST_SECS is SSH's only)
@pytest.mark.parametrize(("kind", "persist"), [("local", "120"), ("ssh", "120"), ("ssh", "0")])
def test_a_followed_log_whose_reader_goes_ends_quietly_with_141(request: pytest.FixtureRequest, kind: str,
                                                                persist: str):
    """`task.logs --follow | head -1` on a task that prints for ever: was a reader thread's traceback and a
    command that never ended (`local`, cold SSH); now the quiet 141, the follow on the pod ended too."""
    pod: Pod = request.getfixturevalue(f"{kind}_pod")
    pod.configure(WF_PERSIST_SECS=persist)
    pod.ok("task.run", "--id", "chatty", "--timeout-secs", "90", "--cmd", "while true; do echo line; sleep 0.1; done")
    proc = subprocess.Popen(["bash", "-c", f"{WF} task.logs --id chatty --follow | head -1 >/dev/null; "
                             "exit ${PIPESTATUS[0]}"], env=pod.env(), cwd=pod.root.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a command that never ended, with its bash and head
    assert "Traceback" not in err, err
    assert (proc.returncode, err) == (141, ""), err


def test_stdin_closed_is_empty_input(local_pod: Pod):
    """`<&-` was an AttributeError (sys.stdin is None) in `--csv -` and pod.down's question: now /dev/null's."""
    local_pod.write_config()
    res = bash(local_pod, f"exec {WF} sweep.validate --csv - <&-", "full")
    assert "Traceback" not in res.stderr, res.stderr
    assert (res.returncode, res.stderr.splitlines()) == (2, [
        "wfops: the sweep CSV has 1 problem(s)",
        "  line 1: the CSV is empty: it needs the header run_id,config,seed,overrides,notes,gpus,nodes"]), res.stderr


def test_inv_too_stdout_closed_is_one_line_and_an_encoding_writes_escapes(local_pod: Pod):
    """`inv` (this checkout's tasks.py) imports the task tree, which makes the same check as `wfops` does."""
    inv = shlex.quote(str(BIN / "inv"))
    local_pod.write_config()
    res = subprocess.run(["bash", "-c", f"exec {inv} fsm.reset POD_READY >&-"], cwd=ROOT, env=local_pod.env(),
                         capture_output=True, text=True, timeout=120)
    one_line(res, 2, "wfops: standard output is closed (`>&-`): nothing was run; to discard the output, send it to "
                     "/dev/null (`>/dev/null`) instead")
    assert not local_pod.state_file.exists()
    local_pod.configure(OPS_REMOTE_OUTPUTS_DIR=str(local_pod.outputs) + "-\u00e9")
    res = subprocess.run([str(BIN / "inv"), "fsm.status"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**local_pod.env(), "PYTHONIOENCODING": "ascii"})
    assert (res.returncode, "Traceback" in res.stderr) == (0, False), res.stderr
    assert f"file    {local_pod.outputs}-\\xe9/_control/workflow_state.json" in res.stdout.splitlines()
