"""Secrets by shape: a key that is not a known key but looks like a secret's is masked everywhere and flagged
as unknown; known keys that only look like secrets (SSH_KEY_PATH, EXTRA_ENV_KEYS) stay readable."""

from __future__ import annotations

import pytest

from wfops.settings.keys import KEYS_BY_NAME
from wfops.settings.load import parse_settings
from wfops.settings.secrets import MASK, is_secret, secret_by_shape
from wfops.sweeps.model import parse_csv
from wfops.sweeps.status import _attempt


@pytest.mark.parametrize("name", ["WANDB_APIKEY", "wandb_apikey", "HF_Token", "MY_SECRET_THING", "DB_PASSWD",
                                  "DB_PASS_WORD", "SMTP_PWD", "GPG_PASSPHRASE", "AWS_CREDENTIALS", "APITOKEN",
                                  "OPENAI_KEY", "some_key_id", "DB_PASS", "smtp_pass", "DB_PASSWRD"])
def test_unknown_names_shaped_like_secrets_are_secret(name):
    assert name not in KEYS_BY_NAME and secret_by_shape(name) and is_secret(name)


@pytest.mark.parametrize("name", ["PWD", "OLDPWD", "HOME", "MY_THING", "LEARNING_RATE", "BATCH"])
def test_ordinary_names_are_not(name):
    assert not is_secret(name)


def test_known_keys_are_secret_by_name_only():
    secret = {k for k in KEYS_BY_NAME if is_secret(k)}
    assert {"LIUM_API_KEY", "WANDB_API_KEY", "HF_TOKEN"} <= secret
    assert not secret & {"SSH_KEY_PATH", "SSH_STRICT_HOST_KEYS", "EXTRA_ENV_KEYS"}
    assert not any(secret_by_shape(k) for k in KEYS_BY_NAME)


def test_a_mistyped_secret_is_masked_everywhere_and_flagged_unknown():
    s = parse_settings("OPS_DEFAULT_HOST=local\nWANDB_APIKEY=abc123xyz\nREPO_URL=https://u:abc123xyz@h/r.git\n"
                       "EXTRA_ENV_KEYS=MY_TOKEN\nMY_TOKEN=tok-9999\n", environ={})
    values = s.redacted_values()
    assert values["WANDB_APIKEY"] == MASK and values["REPO_URL"] == f"https://u:{MASK}@h/r.git"
    assert values["MY_TOKEN"] == MASK  # an intended extra is still a secret by its shape
    assert s.mask("log line abc123xyz tok-9999") == f"log line {MASK} {MASK}"
    (warning,) = s.warnings
    assert warning.startswith("config: unknown key WANDB_APIKEY at workflow.env line 2 (did you mean WANDB_API_KEY?); "
                              "its value is masked") and "abc123" not in warning


def test_a_bad_line_never_echoes_a_shaped_secret():
    with pytest.raises(Exception) as err:
        parse_settings("WANDB_APIKEY='abc123xyz\n", environ={})
    assert "abc123xyz" not in str(err.value)


def test_sweep_validate_does_not_speak_of_uploads_and_start_does():
    with pytest.raises(Exception) as err:
        parse_csv("run_id,config,seed,overrides,notes\nbad..id,c.py,1,,\n", consequence="")
    assert str(err.value).startswith("the sweep CSV has 1 problem(s)\n")
    with pytest.raises(Exception) as err:
        parse_csv("run_id,config,seed,overrides,notes\nbad..id,c.py,1,,\n")
    assert str(err.value).startswith("the sweep CSV has 1 problem(s); nothing was uploaded or started\n")


@pytest.mark.parametrize("row,shown", [({"attempt": 1, "max_attempts": 1}, "1"), ({}, ""),
                                       ({"attempt": 2, "max_attempts": 3}, "2/3"),
                                       ({"attempt": 1, "max_attempts": 3}, "1/3")])
def test_the_attempt_cell_agrees_with_the_report(row, shown):
    assert _attempt(row) == shown
