"""What a newcomer meets in the first minutes, through the real console scripts: no option that does nothing
(invoke's -R/--dry and kin are refused with one line, the pod untouched, under `wfops` and under `inv`), no
traceback when the reader of stdout goes away, "did you mean" for a mistyped task, a task's usage line for a
missing argument."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, WFOPS, Pod
from wfops.program import NOT_OFFERED

FLAGS = {"command-timeout": ["-T", "5"], "dry": ["-R"], "echo": ["-e"], "hide": ["--hide", "both"], "pty": ["-p"],
         "warn-only": ["-w"], "prompt-for-sudo-password": ["--prompt-for-sudo-password"], "write-pyc": ["--write-pyc"]}


def test_the_flags_cover_every_option_not_offered():
    assert set(FLAGS) == set(NOT_OFFERED)


@pytest.fixture
def ready(local_pod: Pod) -> Pod:
    local_pod.ok("fsm.reset", "POD_READY")
    return local_pod


NAMED = {"command-timeout": "-T/--command-timeout", "dry": "-R/--dry", "echo": "-e/--echo", "hide": "--hide",
         "pty": "-p/--pty", "warn-only": "-w/--warn-only", "prompt-for-sudo-password": "--prompt-for-sudo-password",
         "write-pyc": "--write-pyc"}
DRY = ("wfops: -R/--dry is not a wfops option: wfops has no dry run; preview with sweep.validate or checkout "
       "--dry-run instead; nothing was run")


# invoke takes core options after the task name too; before the task's positional argument it took the option
# for the positional ("-R" as STATE) and failed on the state: "No idea what 'SWEEP_COMPLETED' is!"
@pytest.mark.parametrize("where", ["before", "after", "before the positional"])
@pytest.mark.parametrize("name", sorted(FLAGS))
def test_wfops_refuses_every_invoke_option_that_means_nothing(ready: Pod, name, where):
    before = ready.state_file.read_text()
    args = {"before": [*FLAGS[name], "fsm.reset", "SWEEP_COMPLETED"],
            "after": ["fsm.reset", "SWEEP_COMPLETED", *FLAGS[name]],
            "before the positional": ["fsm.reset", *FLAGS[name], "SWEEP_COMPLETED"]}[where]
    res = ready.wf_in_process(*args)  # in process: the refusal is wfops.program's; the next test runs `wfops` itself
    assert res.rc == 2 and res.out == ""
    line = DRY if name == "dry" else (f"wfops: {NAMED[name]} is not a wfops option (it is about invoke")
    assert res.err.splitlines() == [res.last_err] and res.last_err.startswith(line), res.err
    assert res.last_err.endswith(("leave it out; nothing was run", "instead; nothing was run"))
    assert ready.state_file.read_text() == before


@pytest.mark.parametrize("args", [["fsm.reset", "--dry=1", "SWEEP_COMPLETED"],
                                  ["fsm.reset", "SWEEP_COMPLETED", "--dry=1"], ["run.logs", "-R", "baseline-s1"],
                                  ["sweep.retry", "-R", "--ids", "a"]])
def test_the_refusal_is_the_line_whatever_else_the_command_line_holds(ready: Pod, args):
    before = ready.state_file.read_text()
    res = ready.wf(*args)
    assert (res.rc, res.out, res.err.splitlines()) == (2, "", [DRY])
    assert ready.state_file.read_text() == before


def test_an_option_word_is_never_taken_for_a_positional_argument(local_pod: Pod):
    """`run.logs --help` is the task's help (was: "run_id '--help' is not valid"); a mistyped option before the
    positional gets "did you mean" (was: taken for the run id)."""
    for args in (["run.logs", "--help"], ["run.logs", "-h"], ["fsm.reset", "--help"], ["task.logs", "-h"]):
        res = local_pod.wf(*args)
        assert res.rc == 0 and res.out.startswith(f"Usage: wfops [--core-opts] {args[0]} "), args
    usage = {name: local_pod.wf(name, "--help").out.splitlines()[0] for name in ("run.logs", "fsm.reset")}
    assert usage == {  # the task's arguments, and which may be left out (invoke's own line names none)
        "run.logs": "Usage: wfops [--core-opts] run.logs RUN_ID [--options] [other tasks here ...]",
        "fsm.reset": "Usage: wfops [--core-opts] fsm.reset [STATE] [--options] [other tasks here ...]"}
    res = local_pod.wf("run.logs", "--folow", "baseline-s1")
    assert (res.rc, res.err.splitlines()) == (2, ["wfops: No idea what '--folow' is! (did you mean --follow?)"])
    res = _inv(local_pod, "run.logs", "--help")
    assert res.returncode == 0 and res.stdout.startswith("Usage: inv[oke] [--core-opts] run.logs ")


def test_the_options_not_offered_are_not_listed_nor_completed():
    out = subprocess.run([str(WFOPS), "--help"], capture_output=True, text=True).stdout
    completed = subprocess.run([str(WFOPS), "--complete", "--", "wfops", "--"], capture_output=True, text=True).stdout
    assert "--config" in out and "--list" in out and "--config" in completed.split()
    for word in ("--dry", "--echo", "--hide", "--pty", "--command-timeout", "--warn-only", "--prompt-for-sudo",
                 "--write-pyc"):
        assert word not in out and word not in completed
    for typed in (["-"], ["fsm.reset", "-"]):  # a bare dash completes short forms too: not the refused ones
        offered = subprocess.run([str(WFOPS), "--complete", "--", "wfops", *typed], capture_output=True,
                                 text=True).stdout.split()
        assert "-c" in offered and "--config" in offered and not {"-R", "-e", "-p", "-T", "-w"} & set(offered), typed


@pytest.mark.parametrize(("args", "line"), [
    (["-D", "abc", "--list"], "wfops: 'abc' is not a whole number, which -D/--list-depth takes"),
    (["sweep.status", "--list-depth", "x"], "wfops: 'x' is not a whole number, which -D/--list-depth takes"),
    (["-T", "abc", "fsm.status"], "wfops: -T/--command-timeout is not a wfops option (it is about invoke's own "
                                  "shell commands, and wfops tasks run none): leave it out; nothing was run"),
    (["--dry-run", "sweep.start"], "wfops: No idea what '--dry-run' is! (wfops has no dry run; preview with "
                                   "sweep.validate or checkout --dry-run instead)"),  # was: did you mean --dry?
    (["sweep.start", "--dry-run"], "wfops: No idea what '--dry-run' is! (wfops has no dry run; preview with "
                                   "sweep.validate or checkout --dry-run instead)"),
    (["--ech"], "wfops: No idea what '--ech' is!"),  # never "did you mean" a refused option
    (["--lst"], "wfops: No idea what '--lst' is! (did you mean --list?)"),
    (["--hide"], "wfops: --hide is not a wfops option (it is about invoke's own shell commands, and wfops tasks run "
                 "none): leave it out; nothing was run"),
    (["--list-format=jsn"], "wfops: --list-format='jsn' is not valid: expected one of flat, nested, json "
                            "(did you mean json?)"),
    (["--list", "swep"], "wfops: no group of tasks named 'swep' to list (groups: config, fsm, pod, run, sweep, task) "
                         "(did you mean sweep?)"),
])
def test_a_bad_core_option_value_is_one_line_not_a_traceback(args, line):
    res = subprocess.run([str(WFOPS), *args], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout, res.stderr.splitlines()) == (2, "", [line])


def _inv(pod: Pod, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "inv"), *args], cwd=ROOT, capture_output=True, text=True, env=pod.env())


def test_inv_dry_refuses_every_wfops_task_and_changes_nothing(ready: Pod):
    before = ready.state_file.read_text()
    for args in (["-R", "fsm.reset", "SWEEP_COMPLETED"], ["--dry", "fsm.reset"], ["-R", "fsm.status"],
                 ["fsm.reset", "-R", "SWEEP_COMPLETED"], ["fsm.reset", "SWEEP_COMPLETED", "--dry"]):
        res = _inv(ready, *args)
        assert res.returncode == 2, res.stderr
        assert res.stderr.splitlines() == ["wfops: invoke's -R/--dry (run.dry) is set, and wfops has no dry run; "
                                           "preview with sweep.validate or checkout --dry-run instead; nothing was run"]
    assert ready.state_file.read_text() == before
    assert _inv(ready, "fsm.reset", "SWEEP_COMPLETED").returncode == 0  # the same command, not dry, does it
    assert ready.state()["state"] == "SWEEP_COMPLETED"


# ------------------------------------------------------------------ closed pipes

INV = str(BIN / "inv")
CLOSED = [([str(WFOPS), "--help"], "checkout"), ([str(WFOPS), "--list"], "checkout"), ([INV, "--list"], "checkout"),
          ([str(WFOPS), "--help", "sweep.start"], "checkout"), ([INV, "--help", "sweep.start"], "checkout"),
          ([INV, "--help"], "checkout"), ([INV, "--help"], "elsewhere"), ([str(WFOPS), "--help"], "elsewhere"),
          ([str(BIN / "python"), "-m", "invoke", "--help"], "elsewhere"),
          ([str(BIN / "python"), "-m", "wfops", "--help"], "elsewhere")]


@pytest.mark.parametrize(("argv", "where"), CLOSED)  # `inv --help` prints before any tasks.py is loaded
def test_a_reader_gone_is_quiet_and_exits_141(argv, where, tmp_path):
    """The reader closes before the first write (deterministic, unlike `| head` racing a short output)."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(argv, stdout=w, stderr=subprocess.PIPE, text=True, timeout=60,
                              cwd=ROOT if where == "checkout" else tmp_path)
    finally:
        os.close(w)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_the_quiet_pipe_hook_acts_in_inv_only():
    """The venv's wfops_quiet_pipe.pth (what makes `inv --help | head` quiet) imports nothing in another Python
    process: its hook is not there, and a broken pipe there is Python's own."""
    probe = "import sys; print(sys.excepthook is sys.__excepthook__, 'wfops' in sys.modules)"
    res = subprocess.run([str(BIN / "python"), "-c", probe], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (0, "True False\n", "")
    assert len(list((BIN.parent / "lib").glob("python3*/site-packages/wfops_quiet_pipe.pth"))) == 1


def test_a_short_read_through_head_is_quiet():
    inv = BIN / "inv"
    proc = subprocess.run(["bash", "-c", f"'{WFOPS}' --list | head -2; '{WFOPS}' --help | head -2; "
                           f"'{inv}' --help | head -2 >/dev/null; '{inv}' --list | head -1 >/dev/null"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.splitlines()[0].startswith("wfops runs ML training sweeps")


# ------------------------------------------------------------------ typos and missing arguments

def test_an_unknown_task_gets_did_you_mean(local_pod: Pod):
    res = local_pod.wf("sweep.stauts")
    assert (res.rc, res.err.splitlines()) == (
        2, ["wfops: No idea what 'sweep.stauts' is! (did you mean sweep.status?)"])
    assert "(did you mean sweep.status?)" in _inv(local_pod, "sweep.stauts").stderr
    res = local_pod.wf("task.list", "--limt", "3")
    assert res.rc == 2 and "(did you mean --limit?)" in res.err
    res = local_pod.wf("--help", "sweep.stauts")
    assert (res.rc, res.err.splitlines()) == (
        2, ["wfops: No idea what 'sweep.stauts' is! (did you mean sweep.status?)"])
    res = local_pod.wf("sweep")  # a group's name: how to list its tasks (was: "did you mean sweep.add?")
    assert (res.rc, res.err.splitlines()) == (
        2, [f"wfops: No idea what 'sweep' is! (sweep is a group of tasks: {WFOPS} --list sweep lists them)"])


@pytest.mark.parametrize("args,usage", [
    (["run.logs"], "run.logs RUN_ID [--follow] [--tail N] [--rank R]"),
    (["task.logs"], "task.logs ID [--follow] [--tail N]"),
    (["task.attach"], "task.attach ID"),
    (["task.status"], "task.status --id ID [--tail-lines N] [--json] [--watch [SECS]]"),
    (["task.wait", "--timeout-secs", "3"], "task.wait --id ID [--timeout-secs N] [--json]"),
    (["task.run", "--id", "t1"], "task.run --id ID --cmd CMD [--timeout-secs N] [--workdir DIR] [--force]"),
    (["sweep.add"], "sweep.add --csv FILE"),
])
def test_a_missing_argument_prints_the_usage_line(local_pod: Pod, args, usage):
    res = local_pod.wf(*args)
    assert (res.rc, res.err.splitlines()) == (2, [f"wfops: usage: {WFOPS} {usage}"])


# ------------------------------------------------------------------ no config yet; config.init; secrets by shape

def _bare(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "WF_", "LIUM_"))}
    return subprocess.run([str(WFOPS), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)


def test_local_commands_work_without_a_config_and_config_init_writes_one(tmp_path):
    said = f"wfops: no workflow.env here: using the defaults ({WFOPS} config.init writes one)"
    for args in (["config.show"], ["sweep.template"], ["sweep.validate"], ["config.show", "--json"]):
        res = _bare(*args, cwd=tmp_path)
        assert (res.returncode, res.stderr.splitlines()) == (0, [said]), args
    assert (tmp_path / "sweeps" / "sweep.csv").is_file()
    assert _bare("fsm.status", cwd=tmp_path).returncode == 2  # a command that needs a pod still needs a config
    res = _bare("config.init", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.endswith(f"then: {WFOPS} config.show\n")
    assert (tmp_path / "workflow.env").read_text() == (ROOT / "workflow.env.example").read_text()
    (tmp_path / "workflow.env").write_text("OPS_DEFAULT_HOST=local\n")
    res = _bare("config.init", cwd=tmp_path)
    assert res.returncode == 10 and res.stderr.startswith("wfops: workflow.env exists; not overwritten")
    assert (tmp_path / "workflow.env").read_text() == "OPS_DEFAULT_HOST=local\n"
    shown = _bare("config.show", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stderr == ""
    assert f"config file: {tmp_path / 'workflow.env'}" in shown.stdout


def test_a_csv_of_dash_is_stdout_for_the_template_and_stdin_for_validate(tmp_path):
    """`sweep.template --csv -` wrote a file named `-`: it prints the template; sweep.validate reads `-` from stdin;
    the commands that upload a CSV want a file and say so."""
    res = _bare("sweep.template", "--csv", "-", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("run_id,config,seed,overrides") and "wrote" not in res.stdout
    assert list(tmp_path.iterdir()) == []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "WF_", "LIUM_"))}
    checked = subprocess.run([str(WFOPS), "sweep.validate", "--csv", "-"], input=res.stdout, cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout.endswith("3 run(s) valid; 3 would be queued with the current "
                                                               "filters\n"), checked.stderr
    bad = subprocess.run([str(WFOPS), "sweep.validate", "--csv", "-"], input="run_id,config,seed\nbad id,x.py,1\n",
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "line 2" in bad.stderr
    for locale in ({"LC_ALL": "C", "PYTHONUTF8": "0"}, {"LC_ALL": "C.UTF-8"}):  # surrogateescape, or strict
        latin1 = subprocess.run([str(WFOPS), "sweep.validate", "--csv", "-"], cwd=tmp_path,
                                input=res.stdout.encode() + b"r\xe9,x.py,1\n", env={**env, **locale},
                                capture_output=True, timeout=60)
        said = latin1.stderr.decode().splitlines()
        assert (latin1.returncode, said[-1]) == (2, "wfops: the CSV on standard input is not UTF-8 text"), locale
        assert "Traceback" not in latin1.stderr.decode() and all(ln.startswith("wfops: ") for ln in said), said
    crlf = subprocess.run([str(WFOPS), "sweep.validate", "--csv", "-"], input=res.stdout.replace("\n", "\r\n"),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert crlf.returncode == 0 and crlf.stdout == checked.stdout, crlf.stderr
    (tmp_path / "workflow.env").write_text("OPS_DEFAULT_HOST=local\n")
    for task in ("sweep.start", "sweep.add"):
        res = _bare(task, "--csv", "-", cwd=tmp_path)
        assert (res.returncode, res.stderr.splitlines()) == (2, [
            f"wfops: {task} reads its CSV from a file, not from standard input ('-'): save it to a file and pass "
            "that; nothing was sent"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workflow.env"]
    help_ = _bare("--help", "sweep.template", cwd=tmp_path).stdout
    assert "--csv - prints it instead" in help_ and "- prints it to stdout" in help_


@pytest.mark.parametrize("task", ["config.init -c", "sweep.template --csv"])
def test_a_file_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, task):
    """config.init and sweep.template write a local file: a file where its folder should be, or a folder that
    cannot be made, is one line and exit 2 (was a FileExistsError / PermissionError traceback, exit 1)."""
    (tmp_path / "a-file").write_text("x")
    for where in (tmp_path / "a-file" / "new.env", Path("/proc/wfops-cannot-write/new.env")):
        res = _bare(*task.split(), str(where), cwd=tmp_path)
        assert res.returncode == 2 and res.stdout == "", res.stderr
        assert res.stderr.splitlines()[-1].startswith(f"wfops: cannot write {where}: "), res.stderr
        assert "Traceback" not in res.stderr and not where.exists()
    assert (tmp_path / "a-file").read_text() == "x"


def test_a_mistyped_secret_key_is_masked_in_config_show_and_flagged(tmp_path):
    (tmp_path / "workflow.env").write_text("OPS_DEFAULT_HOST=local\nWANDB_APIKEY=abc123xyz\n")
    res = _bare("config.show", cwd=tmp_path)
    assert res.returncode == 0 and "abc123xyz" not in res.stdout + res.stderr
    row = next(ln for ln in res.stdout.splitlines() if ln.startswith("WANDB_APIKEY"))
    assert row.split()[1] == "********" and row.endswith("(unknown key; masked: looks like a secret)")
    assert "did you mean WANDB_API_KEY?" in res.stderr
    data = json.loads(_bare("config.show", "--json", cwd=tmp_path).stdout)
    assert data["unknown"] == ["WANDB_APIKEY"] and data["values"]["WANDB_APIKEY"] == "********"


def test_the_completion_script_works_when_wfops_is_not_on_path(tmp_path):
    """The README sources `<(.venv/bin/wfops --print-completion-script bash)`: TAB must work in a shell whose PATH
    lacks the venv (the script calls wfops by its full path), typed as `wfops` or as `.venv/bin/wfops`."""
    script = subprocess.run([str(WFOPS), "--print-completion-script", "bash"], capture_output=True, text=True).stdout
    (tmp_path / "c.bash").write_text(script)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for typed in ("wfops", str(WFOPS)):
        res = subprocess.run(["bash", "-c", f". {tmp_path}/c.bash; COMP_WORDS=({typed} sweep.sta); COMP_CWORD=1; "
                              f"_complete_wfops {typed} sweep.sta; echo \"${{COMPREPLY[@]}}\""],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
        assert (res.returncode, res.stderr) == (0, "") and res.stdout.split() == ["sweep.start", "sweep.status"]
