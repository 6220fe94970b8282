"""Overrides as the script takes them (wfops.sweeps.args, the one rule), the run's placeholders
(wfops.agent.argv) and the argv the pod builds from them (runs.Launch): every shape, hostile ones too."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from wfops.agent import argv as pod_argv
from wfops.agent.launch import shell_words
from wfops.agent.runs import Launch
from wfops.agent.runscript import DEFAULT, DEFAULT_MARK, RUNTIME, fill
from wfops.errors import UsageError
from wfops.settings.load import parse_settings
from wfops.sweeps import args
from wfops.sweeps.launch_script import scripts
from wfops.sweeps.model import checked_runs, parse_csv, queue_entries, train_args

HEADER = "run_id,config,seed,overrides,notes\n"


def words(text: str, style: str = "argparse", injected=("seed",)) -> list[str]:
    parsed, bad = args.parse(text, style, injected)
    assert bad is None, bad
    return [w for o in parsed for w in o.words(style)]


def refusal(text: str, style: str = "argparse", injected=("seed",)) -> str:
    parsed, bad = args.parse(text, style, injected)
    assert parsed == () and bad
    return bad


@pytest.mark.parametrize(("text", "style", "expected"), [
    ("lr=1e-3", "bare", ["lr=1e-3"]),
    ("--lr=1e-3", "bare", ["lr=1e-3"]),  # a configurator takes key=value: the dashes are the style's
    ("lr=1e-3", "dashdash", ["--lr=1e-3"]),
    ("lr=1e-3", "argparse", ["--lr=1e-3"]),
    ("--log-interval=20", "bare", ["log-interval=20"]),  # hyphenated names
    ("--log-interval=20", "argparse", ["--log-interval=20"]),
    ("--tied", "argparse", ["--tied"]),  # a bare flag
    ("--dry-run -v", "argparse", ["--dry-run", "-v"]),
    ("--save model.pt --epochs 1", "argparse", ["--save", "model.pt", "--epochs", "1"]),  # --key value
    ("--sizes 1 2 3 --tied", "argparse", ["--sizes", "1", "2", "3", "--tied"]),  # nargs
    ("--lr -0.5 --wd -1e-3", "argparse", ["--lr", "-0.5", "--wd", "-1e-3"]),  # a negative number is a value
    ("--name a=b", "argparse", ["--name", "a=b"]),  # a word after a flag is its value, `=` or not
    ("--include a --include b", "argparse", ["--include", "a", "--include", "b"]),  # repeated keys stay
    ("lr=1 lr=2", "bare", ["lr=1", "lr=2"]),
    ("", "argparse", []),
    ("  \t\n ", "bare", []),
])
def test_every_shape_of_override(text, style, expected):
    assert words(text, style) == expected


def test_flags_and_value_words_need_the_argparse_style():
    for style in ("bare", "dashdash"):
        assert refusal("--tied", style).startswith("override '--tied' is a flag: TRAIN_ARG_STYLE=argparse")
        assert refusal("--save model.pt", style).startswith("override '--save' is a flag")
    assert refusal("model.pt", "bare") == "override 'model.pt' is not key=value"
    assert refusal("model.pt --tied") == "override 'model.pt' is not key=value nor the value of a --flag before it"


@pytest.mark.parametrize("hostile", [
    "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "x; touch /tmp/pwned", "a\nb", "it's \"quoted\"", "$HOME",
    "&& reboot", "| cat /etc/shadow", "> /etc/passwd", "*", "~root", "\\", "é✓",
])
def test_hostile_values_are_one_argv_word_each(hostile, tmp_path):
    """Quoted in a cell, a hostile value is one word of argv; bash running the launch script passes it verbatim."""
    for style in ("bare", "argparse"):
        assert words(f"k={shlex.quote(hostile)}", style) == [args.format_pair(style, "k", hostile)]
    assert words(f"--k {shlex.quote(hostile)}") == ["--k", hostile]
    script = tmp_path / "echo.py"
    script.write_text("import sys, json; print(json.dumps(sys.argv[1:]))")
    argv = [sys.executable, str(script), *words(f"k={shlex.quote(hostile)} --k {shlex.quote(hostile)}")]
    out = subprocess.run(["bash", "-c", "exec " + shell_words(argv)], capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(out.stdout) == [f"--k={hostile}", "--k", hostile]
    assert not (tmp_path / "pwned").exists()


def test_unsplittable_nul_and_huge_cells_are_one_line_each():
    assert refusal("k='open").startswith("overrides cannot be split into words (No closing quotation)")
    assert refusal("k=a\x00b") .startswith("overrides hold a NUL character")
    assert refusal("k=" + "x" * (args.MAX_OVERRIDES + 1)).startswith("overrides are 65,539 characters")
    long = "k=" + "x" * 60_000
    assert words(long) == ["--" + long]


def test_injected_keys_are_refused_in_every_shape():
    assert refusal("--seed 3") == "override seed is set by the seed column; remove it from overrides"
    assert refusal("--out_dir=/x", injected=("out_dir",)).startswith("override out_dir is set by wfops")
    assert words("--out_dir /x", injected=()) == ["--out_dir", "/x"]


@pytest.mark.parametrize(("word", "why"), [
    ("--save={outdir}/m.pt", "unknown placeholder {outdir}"),
    ("--cfg='{\"a\":1}'", "unknown placeholder {\"a\":1}"),
    ("--x={", "a lone '{' (write {{ for a literal brace)"),
    ("--x=}", "a lone '}' (write }} for a literal brace)"),
    ("--x={$(id)}", "unknown placeholder {$(id)}"),
])
def test_unknown_placeholders_and_lone_braces_are_refused(word, why):
    assert why in refusal(word)


def test_placeholders_expand_on_the_pod_and_escapes_stay_literal():
    values = {"out_dir": "/pod/out/r 1", "run_id": "r1", "seed": "7", "run_dir": "/pod/out/r 1"}
    assert pod_argv.expand("--save={out_dir}/model.pt", values) == "--save=/pod/out/r 1/model.pt"
    assert pod_argv.expand("{run_id}-{seed}", values) == "r1-7"
    assert pod_argv.expand("--cfg={{\"a\": 1}}", values) == '--cfg={"a": 1}'
    assert pod_argv.expand("{{out_dir}}", values) == "{out_dir}"
    assert pod_argv.expand("$(echo {run_id})", {"run_id": "$(reboot)"}) == "$(echo $(reboot))"  # a word, no shell
    assert pod_argv.expand(pod_argv.escape("g{x}}"), {}) == "g{x}}"
    assert pod_argv.expand("{run_id}/{out_dir}", {"run_id": "{out_dir}", "out_dir": "/o"}) == "{out_dir}//o"  # once


def test_a_csv_names_the_line_and_key_of_a_bad_placeholder():
    with pytest.raises(UsageError) as err:
        parse_csv(HEADER + "r1,,1,--save={outdir}/m.pt,\nr2,,,--log={seed}.txt,\n", style="argparse",
                  injected=("out_dir",))
    lines = err.value.message.splitlines()[1:]
    assert lines[0].strip().startswith("line 2: override save: unknown placeholder {outdir} (known: {run_dir}, ")
    assert lines[1].strip() == "line 3: override log uses {seed}, and the row has no seed"


def _settings(text: str = ""):
    return parse_settings("TRAIN_INJECT=seed\nTRAIN_ARG_STYLE=argparse\n" + text, environ={})


def test_validate_start_and_add_share_the_rule_for_common_overrides():
    """sweep.validate, sweep.start and sweep.add all read the CSV through checked_runs and the queue through
    queue_entries: SWEEP_COMMON_OVERRIDES follows the cells' rule, and a row's key wins over it."""
    s = _settings("SWEEP_COMMON_OVERRIDES=--log-interval=20 --tied --save={out_dir}/model.pt\n")
    runs = checked_runs(s, HEADER + "r1,,1,--save other.pt --lr 0.1,\n")
    entry = queue_entries(s, runs, "g", scripts(s, runs))[0]
    assert entry["args"] == ["--seed=1", "--log-interval=20", "--tied", "--save", "other.pt", "--lr", "0.1"]
    assert entry["expand"] is True and entry["config"] == ""
    bad = _settings("SWEEP_COMMON_OVERRIDES=--log={nope}\n")
    with pytest.raises(UsageError, match=r"^SWEEP_COMMON_OVERRIDES: override log: unknown placeholder \{nope\}"):
        checked_runs(bad, HEADER + "r1,,1,,\n")
    seedless = parse_settings("TRAIN_INJECT=\nTRAIN_ARG_STYLE=argparse\nSWEEP_COMMON_OVERRIDES=--seed {seed}\n",
                              environ={})
    with pytest.raises(UsageError, match=r"line 2: SWEEP_COMMON_OVERRIDES' seed uses \{seed\}, and the row"):
        checked_runs(seedless, "run_id,overrides\nr1,\n")


def test_wfops_own_values_are_escaped_so_braces_in_them_stay_literal():
    s = parse_settings("TRAIN_INJECT=wandb\n", environ={})
    run = parse_csv("run_id\nr1\n", injected=())[0]
    assert train_args(s, run, "grp{1}") == ["wandb_log=False", "wandb_group=grp{{1}}", "wandb_run_name=r1"]


def _launch(train_script: str, config: str, launcher: str = "python", style: str = "argparse", cpu_only: bool = False,
            nproc: int = 1) -> Launch:
    ex = {"repo": "/r", "workdir": "/r/w", "train_script": train_script, "data_dir": "/data", "local_root": "/l",
          "launcher": launcher, "arg_style": style, "inject_out_dir": False, "cpu_only": cpu_only}
    run = {"run_id": "r1", "config": config, "seed": 3, "expand": True,
           "args": ["--save={out_dir}/model.pt", "--tag={run_id}-{seed}", "--lit={{x}}", "--data={data_dir}"]}
    place = {"nproc": nproc, "port": 29500, "attempt": 1, "max_attempts": 1, "devices": None}
    return Launch(ex, "/venv/python", run, place)  # type: ignore[arg-type]


def test_the_pods_argv_takes_a_command_prefix_no_config_and_expanded_overrides():
    tail = ["--save=/out/r1/model.pt", "--tag=r1-3", "--lit={x}", "--data=/data"]
    assert _launch("main.py", "").argv("/out/r1", "/runs/r1") == ["/venv/python", "main.py", *tail]
    assert _launch("-m pkg.train --quiet", "c.py").argv("/out/r1", "/runs/r1") == [
        "/venv/python", "-m", "pkg.train", "--quiet", "c.py", *tail]
    torch = _launch("'my train.py' --x", "", launcher="torchrun").argv("/out/r1", "/runs/r1")
    assert torch[:3] == ["/venv/python", "-m", "torch.distributed.run"] and torch[-6:] == ["my train.py", "--x", *tail]
    values = dict.fromkeys(RUNTIME, "x")
    values["launcher"] = shell_words(_launch("main.py", "").argv("/o", "/d"))
    text = fill(DEFAULT, DEFAULT_MARK, values)
    assert "exec /venv/python main.py --save=/o/model.pt" in text


def test_an_entry_without_expand_keeps_its_braces():
    how = _launch("main.py", "")
    how.run["expand"] = False
    assert how.argv("/o", "/d")[-4:] == ["--save={out_dir}/model.pt", "--tag={run_id}-{seed}", "--lit={{x}}",
                                         "--data={data_dir}"]


@pytest.mark.parametrize(("value", "ok"), [
    ("train.py", True), ("main.py --epochs 1", True), ("-m pkg.train", True), ("'a b.py' --x", True),
    ("train.py; touch /tmp/pwned", True), ("train.py $(id) `id`", True),  # words, never shell text (below)
    ("/abs/train.py", True), ("../up.py", True),  # a path of the pod's own, as before the command-prefix rule
    ("", False), ("'open", False), ("a\x00b", False), ("train.py\n--x", False),
])
def test_train_script_is_a_command_prefix(value, ok):
    from wfops.settings.checks import Invalid, command_prefix

    if ok:
        assert command_prefix(value) == value
    else:
        with pytest.raises(Invalid):
            command_prefix(value)


@pytest.mark.parametrize(("launcher", "cpu_only", "nproc", "node", "expected"), [
    ("auto", True, 1, None, "python"),  # a CPU pod, one process: no torchrun (it would set RANK)
    ("auto", True, 2, None, "torchrun"),  # several processes need torchrun, CPU or not
    ("auto", True, 1, {"rank": 0}, "torchrun"),  # a node of a multi-node run
    ("auto", False, 1, None, "torchrun"),  # a GPU pod
    ("torchrun", True, 1, None, "torchrun"),  # asked for explicitly
    ("python", False, 1, None, "python"),
    ("", True, 1, None, "torchrun"),  # a manifest from before TRAIN_LAUNCHER=auto
])
def test_the_launcher_fits_the_pod(launcher, cpu_only, nproc, node, expected):
    from wfops.agent.runs import launcher_of

    assert launcher_of({"launcher": launcher, "cpu_only": cpu_only}, nproc, node) == expected  # type: ignore[typeddict-item]
    if node is None:  # the command the run gets: torchrun's module, or the script straight after python
        argv = _launch("main.py", "", launcher=launcher, cpu_only=cpu_only, nproc=nproc).argv("/o", "/d")
        assert argv[1] == ("-m" if expected == "torchrun" else "main.py")


def test_a_hostile_train_script_is_argv_words_and_the_pod_finds_no_such_script(tmp_path):
    argv = _launch("train.py; touch pwned $(id)", "").argv("/o", "/d")
    assert argv[1:5] == ["train.py;", "touch", "pwned", "$(id)"]
    assert pod_argv.missing_script("train.py; touch pwned", str(tmp_path)).startswith(
        "the training script train.py; is not in ")
    (tmp_path / "main.py").write_text("")
    assert pod_argv.missing_script("main.py --epochs 1", str(tmp_path)) == ""
    assert pod_argv.missing_script("-m pkg.train", str(tmp_path)) == ""


def test_resume_args_follow_the_rule_and_their_placeholders_are_filled_in_on_the_pod():
    from wfops.sweeps.model import resume_args

    s = parse_settings("TRAIN_ARG_STYLE=argparse\nRESUME_ARGS=--resume {out_dir}/model.pt --warm\n", environ={})
    assert resume_args(s) == ["--resume", "{out_dir}/model.pt", "--warm"]
    how = _launch("main.py", "")
    how.place["resume"] = {"args": resume_args(s)}
    assert how.argv("/o", "/d")[-3:] == ["--resume", "/o/model.pt", "--warm"]
