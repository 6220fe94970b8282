"""The cached fast path of the lean entry (wfops.leancache): a warm read-only command run again with the same inputs
sends the request kept by the lean path without making settings or target (no settings table, no transport
imported), and says exactly what the lean path and the full path say; any input changed (the config, an
environment variable, the command line) is a miss that answers afresh. Real loopback sshd and keeper."""

from __future__ import annotations

import re
import signal
import subprocess

from tests.conftest import WFOPS, Pod, Result
from tests.integration.test_lean_entry import finished_sweep, imported, without_importtime

PROFILE = {"PYTHONPROFILEIMPORTTIME": "1"}


def modules(res: Result) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", res.err, re.M)}


def hit(res: Result) -> bool:
    """The kept request answered: neither the settings table nor the transport nor invoke was imported."""
    mods = modules(res)
    assert mods, "no import report"
    lean_path = {"wfops.settings.load", "wfops.transport.command", "wfops.lean"}
    return not (lean_path & mods) and "invoke" not in imported(res)


def said(res: Result) -> tuple[int, str, str]:
    return res.rc, res.out, without_importtime(res.err)


def three_ways(pod: Pod, *args: str, env: dict[str, str] | None = None) -> tuple[Result, Result, Result]:
    """(miss, hit, full): the command twice as users run it (the first keeps its request, the second uses it),
    then through the full invoke path."""
    first = pod.wf(*args, env={**PROFILE, **(env or {})})
    again = pod.wf(*args, env={**PROFILE, **(env or {})})
    full = pod.wf(*args, env={**(env or {}), "WFOPS_LEAN": "0"})
    assert not hit(first), f"{args}: the first run had nothing kept yet"
    assert hit(again), f"{args}: the second run did not use the kept request\n{again.err[-3000:]}"
    return first, again, full


def test_a_kept_request_says_what_the_lean_and_full_paths_say(ssh_pod: Pod):
    ssh_pod.configure(WF_PERSIST_SECS="120", HF_TOKEN="hf_secretvalue123456")
    ssh_pod.ok("task.run", "--id", "t1", "--cmd", r"printf 'one\n\033[31mred\033[0m hf_secretvalue123456\n'; exit 3")
    ssh_pod.wf("task.wait", "--id", "t1")
    ssh_pod.ok("fsm.reset", "CHECKED_OUT", "--reason", "cache test")
    finished_sweep(ssh_pod, 6)
    codes = set()
    for args in (("fsm.status",), ("fsm.status", "--json"), ("task.list", "--limit", "1"),
                 ("task.status", "--id", "t1", "--tail-lines", "2"), ("task.status", "--id", "nosuch"),
                 ("sweep.status",), ("sweep.status", "--json"), ("sweep.list",),
                 ("sweep.status", "--sweep", "sweep-20991231T000000Z")):
        first, again, full = three_ways(ssh_pod, *args)
        assert said(first) == said(again) == said(full), args
        codes.add(again.rc)
    assert {0, 5} <= codes  # answers and the pod's errors both came through the kept request
    shown = ssh_pod.ok("task.status", "--id", "t1", "--tail-lines", "2").out
    assert "\\x1b[31mred" in shown and "hf_secretvalue123456" not in shown and "********" in shown


def test_a_changed_config_env_or_command_line_answers_afresh(ssh_pod: Pod):
    ssh_pod.configure(WF_PERSIST_SECS="120")
    ssh_pod.ok("fsm.reset", "CHECKED_OUT", "--reason", "before")
    _first, again, _full = three_ways(ssh_pod, "fsm.status", "--json")
    assert '"state": "CHECKED_OUT"' in again.out
    other = ssh_pod.root / "outputs-b"  # the config now names another outputs dir: another workflow state
    ssh_pod.configure(OPS_REMOTE_OUTPUTS_DIR=str(other))
    edited = ssh_pod.wf("fsm.status", "--json", env=PROFILE)
    assert edited.rc == 0 and not hit(edited) and '"state": "CHECKED_OUT"' not in edited.out
    assert hit(ssh_pod.wf("fsm.status", "--json", env=PROFILE))
    # an environment variable the config reads: `${VAR}` in OPS_REMOTE_OUTPUTS_DIR
    ssh_pod.configure(OPS_REMOTE_OUTPUTS_DIR=str(ssh_pod.outputs))
    text = ssh_pod.config_path.read_text()
    line = 'OPS_REMOTE_OUTPUTS_DIR="${WF_TEST_OUT}"'
    ssh_pod.config_path.write_text(re.sub(r"(?m)^OPS_REMOTE_OUTPUTS_DIR=.*$", line, text))
    a = ssh_pod.wf("fsm.status", "--json", env={**PROFILE, "WF_TEST_OUT": str(ssh_pod.outputs)})
    assert '"state": "CHECKED_OUT"' in a.out
    assert hit(ssh_pod.wf("fsm.status", "--json", env={**PROFILE, "WF_TEST_OUT": str(ssh_pod.outputs)}))
    b = ssh_pod.wf("fsm.status", "--json", env={**PROFILE, "WF_TEST_OUT": str(other)})
    assert b.rc == 0 and not hit(b) and '"state": "CHECKED_OUT"' not in b.out
    # the command line: another option is another request
    ssh_pod.write_config()
    ssh_pod.ok("task.run", "--id", "t1", "--cmd", "true")
    ssh_pod.ok("task.run", "--id", "t2", "--cmd", "true")
    one = ssh_pod.wf("task.list", "--limit", "1", env=PROFILE)
    assert hit(ssh_pod.wf("task.list", "--limit", "1", env=PROFILE))
    two = ssh_pod.wf("task.list", "--limit", "2", env=PROFILE)
    assert not hit(two) and "t1 " in two.out and "t1 " not in one.out
    assert said(two) == said(ssh_pod.wf("task.list", "--limit", "2", env={"WFOPS_LEAN": "0"}))


def test_a_keeper_gone_is_the_lean_path_again(ssh_pod: Pod):
    """Nothing reached the pod from the kept request (no keeper there): the lean path starts one and answers."""
    ssh_pod.configure(WF_PERSIST_SECS="120")
    three_ways(ssh_pod, "fsm.status")
    ssh_pod.ok("disconnect")
    res = ssh_pod.wf("fsm.status", env=PROFILE)
    assert res.rc == 0 and not hit(res) and "invoke" not in imported(res)
    assert list(ssh_pod.keeper_dir.glob("*.sock"))


def _printing_then_sigterm(pod: Pod, env: dict[str, str]) -> tuple[int, str]:
    """`sweep.status` of a big sweep, SIGTERMed once its table has started to come and has filled the pipe (this
    side stops reading): its exit status and stderr."""
    proc = subprocess.Popen([str(WFOPS), "sweep.status"], env={**pod.env(), **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(4096)  # the answer is being printed; the rest (> a pipe's 64 KiB) waits for a reader
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read().decode()
    proc.stdout.close()
    return proc.wait(timeout=60), err


def test_sigterm_while_the_answer_is_printed_is_one_line_and_143_on_every_path(ssh_pod: Pod):
    ssh_pod.configure(WF_PERSIST_SECS="120")
    ssh_pod.ok("fsm.reset", "CHECKED_OUT")
    finished_sweep(ssh_pod, 2000)
    ssh_pod.ok("sweep.status")  # the keeper, and the answer kept (the next runs are hits)
    for env in ({"WFOPS_LEAN_CACHE": "0"}, {}, {"WFOPS_LEAN": "0"}):  # the lean path, the kept request, the full path
        code, err = _printing_then_sigterm(ssh_pod, env)
        assert (code, err.splitlines()[-1:]) == (143, ["wfops: terminated (SIGTERM)"]), (env, code, err[-2000:])


def test_with_stderr_closed_every_path_exits_as_the_full_path_does(ssh_pod: Pod):
    """`2>&-`: what would go to stderr goes to stdout (as print(file=None) sends it), and the exit code is the
    command's, on the lean path, the kept request and the full path alike."""
    ssh_pod.configure(WF_PERSIST_SECS="120")
    ssh_pod.ok("fsm.status")
    for args in (("fsm.status",), ("task.status", "--id", "nosuch")):
        said_ = []
        for env in ({"WFOPS_LEAN_CACHE": "0"}, {}, {}, {"WFOPS_LEAN": "0"}):
            res = subprocess.run(["bash", "-c", 'exec "$0" "$@" 2>&-', str(WFOPS), *args],
                                 env={**ssh_pod.env(), **env}, capture_output=True, text=True, timeout=120)
            said_.append((res.returncode, res.stdout))
        assert said_[0] == said_[1] == said_[2] == said_[3], (args, said_)
        assert said_[0][0] == (0 if args == ("fsm.status",) else 5)
