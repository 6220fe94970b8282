"""Config: dotenv parsing, ${VAR} expansion, typed validation, secrets, file discovery."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from wfops.errors import EXIT_USAGE, ConfigError
from wfops.settings.load import KEYS, find_config, load_settings, parse_settings


def test_defaults_of_an_empty_file():
    s = parse_settings("", environ={})
    assert s.wf_fsm_enforce is True
    assert s.run_timeout_secs == 43200
    assert s.sweep_limit is None
    assert s.run_out_local_root == "~/repo/examples/nanogpt/out"
    assert s.state_file == "/mnt/pod_artifacts/outputs/_control/workflow_state.json"
    assert s.warnings == ()


@pytest.mark.parametrize("word,expected", [("1", True), ("TRUE", True), ("yes", True), ("On", True),
                                           ("0", False), ("false", False), ("NO", False), ("off", False)])
def test_booleans(word, expected):
    assert parse_settings(f"SWEEP_FORCE={word}\n", environ={}).sweep_force is expected


@pytest.mark.parametrize("line,fragment", [
    ("RUN_TIMEOUT_SECS=abc", "RUN_TIMEOUT_SECS='abc' is not valid (workflow.env line 1): expected a whole number"),
    ("SWEEP_FORCE=maybe", "SWEEP_FORCE='maybe' is not valid (workflow.env line 1): expected a boolean"),
    ("RUN_OUT_MODE=fast", "expected one of durable, local_sync"),
    ("OPS_REMOTE_OUTPUTS_DIR=relative/dir", "expected an absolute path on the pod"),
    ("OPS_DEFAULT_HOST=-oProxyCommand=x", "OPS_DEFAULT_HOST"),
    ("WF_TMUX_SESSION=a:b", "expected letters, digits"),
    ("EXPECT_GIT_SHA=xyz", "expected 7 to 40 hex digits"),
    ("TRAIN_INJECT=out_dir bogus", "expected space-separated words among"),
    ("APT_PACKAGES=git;rm", "Debian package names"),
])
def test_bad_values_name_key_value_and_form(line, fragment):
    with pytest.raises(ConfigError) as err:
        parse_settings(line + "\n", environ={})
    assert fragment in err.value.message
    assert err.value.code == EXIT_USAGE
    assert "\n" not in err.value.message


def test_secret_values_never_appear_in_errors_or_redacted_views():
    s = parse_settings("WANDB_API_KEY=sekrit-value-1\nMY_TOKEN=tok-123456\n"
                       "REPO_URL=https://u:${MY_TOKEN}@git.example.invalid/r.git\n"
                       "NOTE_TEXT=see ${WANDB_API_KEY}\nEXTRA_ENV_KEYS=NOTE_TEXT\n", environ={})
    shown = s.redacted_values()
    assert shown["WANDB_API_KEY"] == "********" and shown["MY_TOKEN"] == "********"
    assert shown["REPO_URL"] == "https://u:********@git.example.invalid/r.git"  # a secret inside another key
    assert shown["NOTE_TEXT"] == "see ********"
    assert not [v for v in shown.values() if "sekrit-value-1" in v or "tok-123456" in v]
    assert set(s.secret_values()) == {"sekrit-value-1", "tok-123456"}
    assert s.mask("clone https://u:tok-123456@git.example.invalid") == "clone https://u:********@git.example.invalid"
    for text in ("HF_TOKEN=tok-abcdef\nRUN_TIMEOUT_SECS=${HF_TOKEN}\n",
                 "HF_TOKEN=tok-abcdef\nRUN_TIMEOUT_SECS=9${HF_TOKEN}\n",
                 "MY_PASSWORD=hunter22\nSWEEP_LIMIT=${MY_PASSWORD}\n"):
        with pytest.raises(ConfigError) as err:  # a type error never echoes a secret, whichever key carried it
            parse_settings(text, environ={})
        message = err.value.message
        assert "tok-abcdef" not in message and "hunter22" not in message
        assert "is not valid" in message and "********" in message, message



_OPEN = ("workflow.env line {n}: cannot parse: the {q} quote that opens {key}'s value is not closed on that line "
         "(a missing closing quote takes in the lines after it up to the next {q}): close it")


@pytest.mark.parametrize(("text", "shown"), [
    ("WANDB_API_KEY='sekrit-value-1\n", _OPEN.format(n=1, q="'", key="WANDB_API_KEY")),
    ('export HF_TOKEN="tok-abcdef\nX=1\n', _OPEN.format(n=1, q='"', key="HF_TOKEN")),
    ("MY_TOKEN=tok-123456\nREPO_URL='https://u:tok-123456@git.example.invalid/r.git\n",
     _OPEN.format(n=2, q="'", key="REPO_URL")),
    ("RUN_GPUS='oops\nHF_TOKEN=tok-abcdef\n", _OPEN.format(n=1, q="'", key="RUN_GPUS")),
    ("REPO_URL='https://u:tok-123456@h/r.git\nMY_TOKEN=tok-123456\n",  # the secret comes after the bad line
     _OPEN.format(n=1, q="'", key="REPO_URL")),
    # a missing closing quote that runs on to the next quote of the file: the lines it took in hold secrets that
    # never parsed as keys (before: echoed whole, `cannot parse "WANDB_PROJECT='my project\nHF_TOKEN=hf_..."`)
    ("OPS_DEFAULT_HOST=local\nWANDB_PROJECT='my project\nHF_TOKEN=hf_SECRETTOKENVALUE\n"
     "WANDB_API_KEY=wandbsecret123456\nPREREQ_COMMANDS='git tmux rsync'\n",
     _OPEN.format(n=2, q="'", key="WANDB_PROJECT")),
    ("A='x' junk\nB=1\n", "workflow.env line 1: cannot parse: A's value has text after its closing ' quote (put "
                           "the whole value inside the quotes)"),
    ('A="x\\"\n', _OPEN.format(n=1, q='"', key="A")),  # \" does not close it
    ("=hf_SECRETTOKENVALUE\n", "workflow.env line 1: cannot parse: expected KEY=VALUE"),
])
def test_a_line_that_cannot_be_parsed_is_named_never_quoted(text, shown):
    """The error names the line and the key and says what is wrong, never quoting the text: before, the line was
    echoed with only the secrets of keys that parsed masked, and a missing closing quote swallows later lines."""
    with pytest.raises(ConfigError) as err:
        parse_settings(text, environ={})
    assert err.value.message == shown


def test_a_file_that_closes_its_quotes_parses_with_the_same_secrets():
    """The control of the case above: the same file with the quote closed parses, and its secrets are masked."""
    s = parse_settings("OPS_DEFAULT_HOST=local\nWANDB_PROJECT='my project'\nHF_TOKEN=hf_SECRETTOKENVALUE\n"
                       "WANDB_API_KEY=wandbsecret123456\nPREREQ_COMMANDS='git tmux rsync'\n", environ={})
    assert s.redacted_values()["WANDB_PROJECT"] == "my project"
    assert s.mask("hf_SECRETTOKENVALUE wandbsecret123456") == "******** ********"


def test_a_quoted_secret_with_spaces_around_it_is_masked_without_them():
    """HF_TOKEN='hf_SPACEDTOKEN123 ': `echo $HF_TOKEN` on the pod, or a program that strips it, prints the token
    without the space; before, only the exact value was masked and task.logs / task.status --json showed it."""
    s = parse_settings("OPS_DEFAULT_HOST=local\nHF_TOKEN='hf_SPACEDTOKEN123 '\nWANDB_API_KEY=' ab '\n"
                       "LIUM_API_KEY='    '\n", environ={})
    assert s.mask("tok=hf_SPACEDTOKEN123\n") == "tok=********\n"
    assert "hf_SPACEDTOKEN123" in s.secret_values()  # what remote output is redacted with (transport Redactor)
    assert s.mask("tok=hf_SPACEDTOKEN123 .") == "tok=********."  # the value with its space, masked whole
    assert s.mask("a ab b     c") == "a ab b     c"  # a value shorter than 4 characters stripped: not looked for
    assert s.secret_values() == ["hf_SPACEDTOKEN123 ", "hf_SPACEDTOKEN123"]


def test_a_secret_from_the_environment_is_masked_where_a_key_refers_to_it():
    """Before: REPO_URL=https://u:${GITHUB_TOKEN}@... with the token in the environment showed it in full in
    config.show (redacted_values), in type errors and in remote output (secret_values): only the file's own
    secret keys were known."""
    environ = {"GITHUB_TOKEN": "ghp-sekrit-123", "HOME_TOKEN_X": "unused-secret"}
    s = parse_settings("REPO_URL=https://u:${GITHUB_TOKEN}@github.com/x/y.git\n", environ=environ)
    assert s.redacted_values()["REPO_URL"] == "https://u:********@github.com/x/y.git"
    assert s.secret_values() == ["ghp-sekrit-123"]  # only what a key refers to, not the whole environment
    assert s.mask("remote: https://u:ghp-sekrit-123@github.com") == "remote: https://u:********@github.com"
    assert "ghp-sekrit-123" in s.pod_env_text()  # the pod still gets the URL it needs (mode 600)
    assert s.override({"SWEEP_MATCH": "x"}).secret_values() == ["ghp-sekrit-123"]
    with pytest.raises(ConfigError) as err:
        parse_settings("RUN_GPUS=${GITHUB_TOKEN}\n", environ=environ)
    assert err.value.message == ("config: RUN_GPUS='********' is not valid (workflow.env line 1): expected all, "
                                 "or a whole number >= 1")

def test_an_unknown_lium_key_is_said_to_stay_here():
    s = parse_settings("LIUM_BASE_URL=http://127.0.0.1:9\n", environ={})
    assert s.warnings == ("config: unknown key LIUM_BASE_URL at workflow.env line 1; it stays on this machine "
                          "(LIUM_* keys never reach the pod)",)
    assert "LIUM_BASE_URL" not in s.pod_env_text()


def test_unknown_key_warns_with_closest_known_key():
    s = parse_settings("RUN_TIMEOUT_SEC=10\nMY_THING=1\nEXTRA_ENV_KEYS=OK_EXTRA\nOK_EXTRA=2\n", environ={})
    assert len(s.warnings) == 2
    assert "unknown key RUN_TIMEOUT_SEC at workflow.env line 1 (did you mean RUN_TIMEOUT_SECS?)" in s.warnings[0]
    assert "unknown key MY_THING" in s.warnings[1] and "did you mean" not in s.warnings[1]
    assert s.raw("MY_THING") == "1" and s.raw("OK_EXTRA") == "2"


def test_expansion_from_file_defaults_and_environment():
    text = (
        "OPS_REMOTE_REPO=/work/repo\n"
        "DATA_DIR=${BASE}/data\n"
        "BASE=/srv\n"
        "HF_HOME=${FROM_ENV}/hf\n"
        "WANDB_GROUP=${UNSET_THING:-fallback}\n"
        "WANDB_PROJECT='${NOT_EXPANDED} $literal'\n"
        "MY_NOTE=${OPS_REMOTE_OUTPUTS_DIR}\n"
    )
    s = parse_settings(text, environ={"FROM_ENV": "/env"})
    assert s.data_dir == "/srv/data"  # a later key of the file
    assert s.run_out_local_root == "/work/repo/examples/nanogpt/out"  # a default referring to the file
    assert s.hf_home == "/env/hf"
    assert s.wandb_group == "fallback"
    assert s.wandb_project == "${NOT_EXPANDED} $literal"
    assert s.raw("MY_NOTE") == "/mnt/pod_artifacts/outputs"


def test_undefined_and_circular_references_fail_clearly():
    with pytest.raises(ConfigError, match=r"DATA_DIR \(workflow.env line 1\) refers to \$\{NOPE\}"):
        parse_settings("DATA_DIR=${NOPE}/x\n", environ={})
    with pytest.raises(ConfigError, match="circular reference"):
        parse_settings("A_X=${B_X}\nB_X=${A_X}\n", environ={})


def test_pod_env_file_is_exact_when_sourced_by_bash(tmp_path):
    tricky = "a b  $HOME `x` $(touch pwned) \"q\" it's \\ end"
    s = parse_settings("MY_VALUE='" + tricky.replace("'", "\\'") + "'\nOPS_REMOTE_REPO=~/r\nLIUM_API_KEY=zzzz\n",
                       environ={})
    assert s.raw("MY_VALUE") == tricky
    env_file = tmp_path / "project.env"
    env_file.write_text(s.pod_env_text())
    out = subprocess.run(["bash", "-c", f'set -a; . "{env_file}"; printf "%s\\n%s" "$MY_VALUE" "$OPS_REMOTE_REPO"'],
                         cwd=tmp_path, capture_output=True, text=True,
                         env={"HOME": "/home/pod", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == tricky + "\n/home/pod/r"
    assert not (tmp_path / "pwned").exists()
    assert "LIUM_API_KEY" not in s.pod_env_text() and "LIUM_TARGET" not in s.pod_env_text()


def test_every_key_default_is_valid():
    s = parse_settings("", environ={})
    assert set(s.redacted_values()) == {k.name for k in KEYS} and s.extras == {}


def test_find_config_precedence(tmp_path: Path):
    (tmp_path / "infra_scripts").mkdir()
    seed = tmp_path / "infra_scripts" / "workflow.env"
    seed.write_text("")
    assert find_config(None, tmp_path, {}) == seed
    cwd_file = tmp_path / "workflow.env"
    cwd_file.write_text("")
    assert find_config(None, tmp_path, {}) == cwd_file
    other = tmp_path / "other.env"
    other.write_text("")
    assert find_config(None, tmp_path, {}, consumer_default="other.env") == other
    assert find_config(None, tmp_path, {"WORKFLOW_CONFIG": str(seed)}, "other.env") == seed
    assert find_config("other.env", tmp_path, {"WORKFLOW_CONFIG": str(seed)}) == other
    with pytest.raises(ConfigError, match=r"config file not found: nope.env \(from --config\)"):
        find_config("nope.env", tmp_path, {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config file"):
        find_config(None, tmp_path / "empty", {})


def test_unparseable_line_names_its_line(tmp_path):
    f = tmp_path / "workflow.env"
    f.write_text("GOOD=1\nBAD LINE WITHOUT EQUALS 'x\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_settings(f, environ={})


def test_the_example_file_lists_every_key_with_its_default():
    from pathlib import Path

    from wfops.settings.example import example_text
    from wfops.settings.load import KEYS_BY_NAME

    example = Path(__file__).resolve().parents[2] / "workflow.env.example"
    assert example.read_text() == example_text(), "regenerate: python -m wfops.settings > workflow.env.example"
    s = parse_settings(example.read_text(), environ={})
    assert s.warnings == ()
    defaults = parse_settings("", environ={})
    assert s.redacted_values() == defaults.redacted_values()
    assert [getattr(s, k.attr) for k in KEYS] == [getattr(defaults, k.attr) for k in KEYS]
    assert all(s.sources[k] != "default" for k in KEYS_BY_NAME)
