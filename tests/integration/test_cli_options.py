"""The command line as a user meets it: every whole-number option of every task refuses a bad value with one
line and exit 2 (before connecting), `--config`/`-c` works before and after the task name, an option given twice
and words after `--` are refused (never taken for another argument, never dropped), and text from the pod never
reaches the terminal as raw control characters (while --json stays exact JSON)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import BIN, ROOT, Pod
from wfops.tasks import ns


def _int_options() -> list[tuple[str, str]]:
    """(task, --flag) for every whole-number option in the public tree."""
    found = []
    for name in sorted(ns.task_names):
        for arg in ns[name].get_arguments():
            if arg.kind is int:
                found.append((name, "--" + arg.names[0]))
    return found


INT_OPTIONS = _int_options()


def test_the_tree_has_the_int_options_we_know_of():
    assert {("task.list", "--limit"), ("task.status", "--tail-lines"), ("task.run", "--timeout-secs"),
            ("task.wait", "--timeout-secs"), ("sweep.stop", "--timeout-secs"), ("pod.wait", "--timeout-secs"),
            ("pod.up", "--timeout-secs")} <= set(INT_OPTIONS)


@pytest.mark.parametrize("task,flag", INT_OPTIONS)
@pytest.mark.parametrize("value", ["abc", "-5", "1.5", ""])
def test_every_bad_int_option_is_one_line_exit_2_before_connecting(ssh_pod: Pod, task, flag, value):
    # in process (the parser is the point: ~130 cases, one interpreter start each otherwise); a command started as
    # `wfops` is test_an_unparsable_command_line_is_one_line_exit_2's
    res, conns, _ = ssh_pod.count_in_process(task, f"{flag}={value}")
    assert (res.rc, conns) == (2, 0), res.err
    assert res.err.strip().splitlines() == [f"wfops: {flag}={value!r} is not valid: expected a whole number >= 0"]
    assert not ssh_pod.outputs.exists()


@pytest.mark.parametrize("args,line", [
    (("task.list", "--limit"), "wfops: Flag --limit needed value and was not given one!"),
    (("task.list", "--no-such-option"), "wfops: No idea what '--no-such-option' is!"),
])
def test_an_unparsable_command_line_is_one_line_exit_2(local_pod: Pod, args, line):
    res = local_pod.wf(*args)
    assert (res.rc, res.err.strip().splitlines()) == (2, [line])


def test_good_int_options_still_work(local_pod: Pod):
    local_pod.ok("task.run", "--id", "t1", "--cmd", "echo one; echo two", "--timeout-secs", "30")
    assert local_pod.ok("task.wait", "--id", "t1", "--timeout-secs=60", "--json").json()["state"] == "success"
    assert local_pod.ok("task.status", "--id", "t1", "-t", "1", "--json").json()["tail"][-1].endswith(" two")
    assert len(local_pod.ok("task.list", "--limit", "0", "--json").json()["tasks"]) == 1


# ------------------------------------------------------------------ an option twice, words after `--`

def _inv(pod: Pod, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "inv"), *args], cwd=ROOT, capture_output=True, text=True, env=pod.env(),
                          timeout=120)


TWICE = [  # (the command line, the option the line names)
    (("fsm.reset", "--reason", "first", "--reason", "POD_READY"), "-r/--reason"),  # was: state POD_READY, exit 0
    (("fsm.reset", "--reason=first", "-r", "POD_READY"), "-r/--reason"),
    (("run.logs", "--tail", "5", "--tail", "10"), "-t/--tail"),  # was: "run 10 is not in ...", exit 5
    (("run.logs", "r1", "--tail=5", "--tail=10"), "-t/--tail"),
    (("fsm.status", "-c", "a.env", "-c", "b.env"), "-c/--config"),  # was: "No idea what 'b.env' is!"
    (("task.list", "--limit", "1", "--limit", "2"), "-l/--limit"),
]


def test_an_option_given_twice_is_refused_by_name_never_taken_for_the_argument(local_pod: Pod):
    local_pod.ok("fsm.reset", "INIT")
    before = local_pod.state_file.read_text()
    for args, flags in [*TWICE, (("-c", "a.env", "--config=b.env", "fsm.status"), "-c/--config")]:
        res = local_pod.wf(*args)
        assert (res.rc, res.out, res.err.splitlines()) == (
            2, "", [f"wfops: {flags} was given more than once: give it once; nothing was run"]), args
    res = local_pod.wf("fsm.reset", "INIT", "--state", "POD_READY")  # the argument by position and by name
    assert (res.rc, res.err.splitlines()) == (2, ["wfops: -s/--state was given more than once (STATE and -s/--state "
                                                  "are one argument): give it once; nothing was run"])
    for args, flags in TWICE:  # `inv`: the same line, as invoke says a line it cannot parse (exit 1)
        res = _inv(local_pod, *args)
        assert (res.returncode, res.stderr.splitlines()) == (
            1, [f"{flags} was given more than once: give it once; nothing was run"]), args
    assert local_pod.state_file.read_text() == before
    local_pod.ok("fsm.reset", "--reason", "once", "POD_READY")  # given once, as before
    assert (local_pod.state()["state"], local_pod.ok("fsm.status", "--json", "--json").json()["state"]) == (
        "POD_READY", "POD_READY")  # a flag twice means the same


DASHED = [(("fsm.reset", "--", "SWEEP_COMPLETED"), "fsm.reset", "SWEEP_COMPLETED"),  # was: reset to INIT, exit 0
          (("fsm.reset", "POD_READY", "--reason", "r", "--", "x", "y"), "fsm.reset", "x y"),
          (("fsm.status", "--", "whatever"), "fsm.status", "whatever"),  # was: ignored
          (("fsm.status", "fsm.reset", "--", "INIT"), "fsm.status", "INIT")]  # refused before the first task runs


@pytest.mark.parametrize("entry", ["wfops", "inv"])
def test_words_after_a_double_dash_are_refused_not_dropped(local_pod: Pod, entry):
    local_pod.ok("fsm.reset", "CHECKED_OUT")
    before = local_pod.state_file.read_text()
    for args, task, words in DASHED:
        res = local_pod.wf(*args) if entry == "wfops" else _inv(local_pod, *args)
        rc, out, err = (res.rc, res.out, res.err) if entry == "wfops" else (res.returncode, res.stdout, res.stderr)
        assert (rc, out, err.splitlines()) == (2, "", [f"wfops: {task} takes no words after '--' (got {words!r}): "
                                                       "give them without the '--'; nothing was run"]), args
    assert local_pod.state_file.read_text() == before


# ------------------------------------------------------------------ --config before and after the task name

@pytest.fixture
def alt_config(local_pod: Pod, tmp_path):
    local_pod.write_config()
    alt = tmp_path / "alt.env"
    alt.write_text(local_pod.config_path.read_text() + "WANDB_PROJECT=from-alt\n")
    return alt


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("flag", ["--config", "-c"])
def test_config_works_before_and_after_the_task_name(local_pod: Pod, alt_config, where, flag):
    args = [flag, str(alt_config), "config.show", "--json"] if where == "before" else \
        ["config.show", "--json", flag, str(alt_config)]
    data = local_pod.ok(*args).json()
    assert data["config_file"] == str(alt_config) and data["values"]["WANDB_PROJECT"] == "from-alt"


def test_config_before_the_name_reaches_the_pod_and_the_task_own_wins(local_pod: Pod, alt_config, tmp_path):
    missing = tmp_path / "missing.env"
    res = local_pod.wf("-c", str(missing), "fsm.status")
    assert res.rc == 2 and res.err.strip() == f"wfops: config file not found: {missing} (from --config)"
    assert local_pod.ok("-c", str(alt_config), "fsm.status", "--json").json()["state"] == "INIT"
    data = local_pod.ok("-c", str(missing), "config.show", "--json", "-c", str(alt_config)).json()
    assert data["config_file"] == str(alt_config)


def test_config_is_dash_c_in_every_task():
    for name in ns.task_names:
        (config,) = [a for a in ns[name].get_arguments() if a.name == "config"]
        assert config.names == ("config", "c"), name


# ------------------------------------------------------------------ control characters from the pod

HOSTILE = "red\x1b[31m bell\x07 title\x1b]0;pwned\x07 del\x7f c1\x9b2J end"  # a log line (\r would end it)
SHOWN = "red\\x1b[31m bell\\x07 title\\x1b]0;pwned\\x07 del\\x7f c1\\x9b2J end"
REASON = HOSTILE + " cr\r back"
REASON_SHOWN = SHOWN + " cr\\x0d back"


def _hostile_script(pod: Pod) -> str:
    script = pod.root / "hostile.py"
    script.write_text(f"import sys\nsys.stdout.write({HOSTILE!r} + '\\n')\n")
    return str(script)


def _raw_controls(text: str) -> list[str]:
    return [ch for ch in text if (ord(ch) < 32 and ch not in "\n\t") or 0x7f <= ord(ch) <= 0x9f]


def test_a_task_log_tail_and_reasons_are_shown_not_executed(pod: Pod):
    pod.ok("task.run", "--id", "esc", "--cmd", f"python3 {_hostile_script(pod)}")
    pod.ok("task.wait", "--id", "esc")
    shown = pod.ok("task.status", "--id", "esc")
    assert SHOWN in shown.out and _raw_controls(shown.out + shown.err) == []
    data = pod.ok("task.status", "--id", "esc", "--json")
    assert json.loads(data.out)["tail"][-1].endswith(HOSTILE)  # --json: exact

    pod.ok("fsm.reset", "POD_READY", "--reason", REASON)
    shown = pod.ok("fsm.status")
    assert REASON_SHOWN in shown.out and _raw_controls(shown.out) == []
    assert pod.ok("fsm.status", "--json").json()["reason"] == REASON


def test_pod_stderr_lines_are_shown_not_executed(pod: Pod):
    script = pod.root / "bootstrap.sh"
    script.write_text(f"exec python3 {_hostile_script(pod)}\n")
    pod.configure(BOOTSTRAP_SCRIPT=str(script))
    res = pod.ok("bootstrap")
    assert SHOWN in res.err and _raw_controls(res.out + res.err) == []
