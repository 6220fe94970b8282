# Executed by train.py (nanoGPT style) with train.py's globals in scope.
# Arguments: a config file path (python assignments), then key=value or --key=value overrides.
# Values are parsed as Python literals when possible (3e-3, True, 8), else kept as strings.
# An unknown key is an error, so a typo never trains silently with defaults.
import ast as _ast
import sys as _sys


def _wf_override(_key, _raw):
    if _key not in globals() or _key.startswith("_"):
        raise SystemExit(f"train.py: unknown config key {_key!r}")
    try:
        _value = _ast.literal_eval(_raw)
    except (ValueError, SyntaxError):
        _value = _raw
    _default = globals()[_key]
    if _default is not None and not isinstance(_value, type(_default)):
        if isinstance(_default, float) and isinstance(_value, int):
            _value = float(_value)
        elif isinstance(_default, str):
            _value = str(_raw)
        else:
            raise SystemExit(f"train.py: {_key}={_raw!r} is not a {type(_default).__name__}")
    globals()[_key] = _value


for _arg in _sys.argv[1:]:
    if "=" not in _arg:
        with open(_arg) as _fh:
            exec(_fh.read())
        continue
    _key, _raw = _arg.split("=", 1)
    _wf_override(_key.lstrip("-"), _raw)
