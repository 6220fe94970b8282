"""Where this user's connection keepers live (wfops.transport.warm makes and checks it). Standard library `os`
only: the cached fast path (wfops.leancache) keys its entries by it without importing the transport, so a kept
request never dials a keeper in a directory this command would no longer use (`wfops disconnect --all` looks
in the current one)."""

from __future__ import annotations

import os
from collections.abc import Mapping

DIR_ENV = "WFOPS_KEEPER_DIR"


def keeper_dir(environ: Mapping[str, str] | None = None) -> str:
    """$WFOPS_KEEPER_DIR; else $XDG_RUNTIME_DIR/wfops when that folder exists; else /tmp/wfops-UID."""
    env = os.environ if environ is None else environ
    if env.get(DIR_ENV):
        return env[DIR_ENV]
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "wfops")
    return os.path.join("/tmp", f"wfops-{os.getuid()}")
