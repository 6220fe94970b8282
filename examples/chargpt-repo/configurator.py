# Poor man's configurator, nanoGPT style: run by train.py with exec(), inside train.py's globals.
#   python train.py config/train_tiny.py --batch_size=8 --compile=False
# An argument without "=" is a config file (plain Python); --key=value overrides one default.
# A key train.py does not define is an error: a typo never trains silently with the default.
import sys
from ast import literal_eval

for arg in sys.argv[1:]:
    if "=" not in arg:
        assert not arg.startswith("--"), f"expected --key=value, got {arg}"
        print(f"Overriding config with {arg}:")
        with open(arg) as f:
            print(f.read())
        exec(open(arg).read())
        continue
    assert arg.startswith("--"), f"overrides are --key=value, got {arg}"
    key, val = arg[2:].split("=", 1)
    if key not in globals():
        raise ValueError(f"Unknown config key: {key}")
    try:
        attempt = literal_eval(val)
    except (SyntaxError, ValueError):
        attempt = val  # a bare string, e.g. --out_dir=out-tiny
    assert type(attempt) is type(globals()[key]), f"{key}={val!r}: expected {type(globals()[key]).__name__}"
    print(f"Overriding: {key} = {attempt}")
    globals()[key] = attempt
