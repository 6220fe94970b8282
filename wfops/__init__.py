"""wfops: run ML experiments on rented GPU pods with Invoke tasks."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# `inv` turns off bytecode writing (for the user's tasks.py) before it imports the tasks, and so wfops' own
# modules were compiled afresh on every call when run from a checkout. Unless the user asked for that too
# (PYTHONDONTWRITEBYTECODE, python -B), Python's bytecode cache stays on for wfops.
if _sys.dont_write_bytecode and not _os.environ.get("PYTHONDONTWRITEBYTECODE") and not _sys.flags.dont_write_bytecode:
    _sys.dont_write_bytecode = False
