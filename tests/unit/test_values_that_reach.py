"""Values that cannot reach the training script or the pod are refused where they are read, with one line
(issue 23, part 6): overrides over the OS argument limits or with a NUL, a config line with no `=`, a port out
of range."""

from __future__ import annotations

import pytest

from wfops.errors import ConfigError, UsageError
from wfops.settings.load import parse_settings
from wfops.sweeps.args import MAX_OVERRIDES
from wfops.sweeps.model import parse_csv

HEADER = "run_id,config,seed,overrides,notes\n"


def _csv(overrides: str) -> str:
    return HEADER + 'r1,config/a.py,1,"' + overrides.replace('"', '""') + '",\n'


@pytest.mark.parametrize("overrides,why", [
    ("x=" + "a" * (MAX_OVERRIDES - 1), f"at most {MAX_OVERRIDES:,}"),  # one cell: half of Linux's MAX_ARG_STRLEN
    ("a=1\0b", "NUL character"),
])
def test_overrides_that_cannot_reach_argv_are_refused_at_validation(overrides: str, why: str):
    with pytest.raises(UsageError) as err:
        parse_csv(_csv(overrides))
    assert "line 2: " in err.value.message and why in err.value.message


def test_overrides_up_to_the_limits_pass():
    runs = parse_csv(_csv("x=" + "a" * (MAX_OVERRIDES - 7) + " lr=1"))  # the longest cell that still fits
    assert runs[0].overrides[1].text() == "lr=1"


def test_a_config_line_with_no_equals_sign_is_refused():
    with pytest.raises(ConfigError) as err:
        parse_settings("OPS_DEFAULT_HOST=local\nJUSTAWORD\n", environ={})
    assert err.value.message == "workflow.env line 2: cannot parse: a word with no `=` (write KEY=VALUE)"
    with pytest.raises(ConfigError) as err:  # a known key's name is said; any other word may be a pasted token
        parse_settings("HF_TOKEN\nhf_PASTEDTOKEN123\n", environ={})
    assert err.value.message == "workflow.env line 1: cannot parse: HF_TOKEN with no `=` (write KEY=VALUE)"


@pytest.mark.parametrize("key,value", [("OPS_DEFAULT_HOST", "root@127.0.0.1:0"),
                                       ("OPS_DEFAULT_HOST", "root@127.0.0.1:99999"),
                                       ("OPS_HOSTS", "root@127.0.0.2:22,root@127.0.0.3:65536")])
def test_ports_out_of_range_are_refused_at_load(key: str, value: str):
    with pytest.raises(ConfigError) as err:
        parse_settings(f"{key}={value}\n", environ={})
    assert f"{key}=" in err.value.message and "a port from 1 to 65535" in err.value.message


def test_ports_in_range_pass():
    assert parse_settings("OPS_DEFAULT_HOST=root@127.0.0.1:65535\n", environ={}).ops_default_host.endswith(":65535")


@pytest.mark.parametrize("value", ["../../outside", "/srv/work", "a/../../b", ".."])
def test_a_train_workdir_outside_the_checkout_is_refused_at_load(value: str):
    """TRAIN_WORKDIR is relative to OPS_REMOTE_REPO: checkout makes folders and links in it, runs start there.
    Before, `../../outside` (or an absolute path) passed and checkout wrote outside the checkout."""
    with pytest.raises(ConfigError) as err:
        parse_settings(f"TRAIN_WORKDIR={value}\n", environ={})
    assert err.value.message == (f"config: TRAIN_WORKDIR={value!r} is not valid (workflow.env line 1): expected a "
                                 "path inside the checkout, relative to OPS_REMOTE_REPO (no leading '/', no '..' "
                                 "part), on one line")


@pytest.mark.parametrize("value", [".", "", "examples/nanogpt", "./src/..x", "a..b/c"])
def test_a_train_workdir_inside_the_checkout_passes(value: str):
    assert parse_settings(f"TRAIN_WORKDIR={value}\n", environ={}).train_workdir == value


@pytest.mark.parametrize("value", ["0", "00", "-1", ""])
def test_an_ssh_connect_timeout_under_one_second_is_refused_at_load(value: str):
    """0 reached the socket as a timeout of 0 (non-blocking): every connection failed 'Operation now in progress'."""
    with pytest.raises(ConfigError) as err:
        parse_settings(f"SSH_CONNECT_TIMEOUT={value}\n", environ={})
    assert err.value.message.startswith(f"config: SSH_CONNECT_TIMEOUT={value!r} is not valid")
    assert err.value.message.endswith("expected a whole number of seconds >= 1")
    assert parse_settings("SSH_CONNECT_TIMEOUT=1\n", environ={}).ssh_connect_timeout == 1
