"""Settings attributes and the KEYS table agree one to one (name and type); the only access form is the attribute."""

from __future__ import annotations

import dataclasses
import operator
import subprocess
import sys
import types
import typing

import pytest

from wfops.errors import ConfigError
from wfops.settings.keys import KEYS
from wfops.settings.load import parse_settings
from wfops.settings.model import META_FIELDS, Settings


def _has_type(value: object, hint: object) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, tuple) and all(_has_type(v, args[0]) for v in value)
    assert isinstance(hint, type), hint
    return type(value) is hint or (hint is type(None) and value is None)


def test_each_key_is_one_attribute_of_its_checks_type():
    hints = typing.get_type_hints(Settings)
    attributes = [f.name for f in dataclasses.fields(Settings) if f.name not in META_FIELDS]
    assert attributes == [k.attr for k in KEYS]  # one to one, in table order
    assert not set(META_FIELDS) & {k.attr for k in KEYS}
    for key in KEYS:
        assert hints[key.attr] == typing.get_type_hints(key.check)["return"], key.name


def test_the_values_have_their_attributes_types():
    for text in ("", "TRAIN_NPROC=2\nLIUM_COUNT=1\nOPS_HOSTS=a,b\nRETRY_ON=oom\nMETRIC_COLUMNS=loss\n"):
        s = parse_settings(text, environ={})
        hints = typing.get_type_hints(Settings)
        bad = {k.name: getattr(s, k.attr) for k in KEYS if not _has_type(getattr(s, k.attr), hints[k.attr])}
        assert bad == {}


def test_typed_attributes_and_the_raw_text():
    s = parse_settings("RDZV_PORT=29555\nTRAIN_NPROC=\nRETRY_ON=oom lost\nWF_FSM_ENFORCE=off\nMY_EXTRA=x\n"
                       "EXTRA_ENV_KEYS=MY_EXTRA\n", environ={})
    assert s.rdzv_port == 29555 and s.raw("RDZV_PORT") == "29555"
    assert s.train_nproc is None and s.retry_on == ("oom", "lost") and s.wf_fsm_enforce is False
    assert s.extras == {"MY_EXTRA": "x"} and s.raw("MY_EXTRA") == "x"
    assert not hasattr(s, "values") and not hasattr(s, "get") and not hasattr(s, "typed")
    with pytest.raises(TypeError):  # no item access (operator.getitem: the conversion script leaves it alone)
        operator.getitem(s, "RDZV_PORT")
    assert "sekrit" not in repr(parse_settings("WANDB_API_KEY=sekrit-1\n", environ={}))


def test_override_checks_as_the_file_does():
    s = parse_settings("", environ={})
    one = s.override({"OPS_DEFAULT_HOST": "root@127.0.0.1:22", "OPS_HOSTS": ""})
    assert one.ops_default_host == "root@127.0.0.1:22" and one.ops_hosts == ()
    assert one.raw("OPS_DEFAULT_HOST") == "root@127.0.0.1:22" and "OPS_DEFAULT_HOST" not in s.extras
    assert s.ops_default_host == ""  # the original is untouched
    with pytest.raises(ConfigError, match=r"config: OPS_DEFAULT_HOST='-oProxyCommand=x' is not valid: expected"):
        s.override({"OPS_DEFAULT_HOST": "-oProxyCommand=x"})


def test_the_example_entry_points_print_the_example():
    for module in ("wfops.settings", "wfops.settings.example"):
        out = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, check=True).stdout
        assert out.startswith("# wfops configuration") and "\nRDZV_PORT=29400\n" in out
