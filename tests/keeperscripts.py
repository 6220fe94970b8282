"""Scripts a test runs as `python -c SCRIPT HOST PORT USER KEY` (in the command's environment, so that the keeper
directory and the keeper process are the ones its commands use): what a command does to start or reach the keeper
of that SSH target, without the rest of the command."""

TARGET = """import sys
from wfops.targets.target import Target
from wfops.transport import launch
host, port, user, key = sys.argv[1:5]
target = Target(kind="ssh", label=f"{user}@{host}:{port}", host=host, port=int(port), user=user, key_filename=key)
"""

# wfops.prewarm's start ahead of a command: returns at once, the keeper process connects meanwhile
PRESTART = TARGET + "launch.prestart(target, 120)\n"

# a command's own connect: returns once the keeper serves the target (or raises why not)
CONNECT = TARGET + 'launch.connect(target, 120).close()\nprint("connected", flush=True)\n'
