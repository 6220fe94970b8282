"""`disconnect`: close warm connections now (a root-level task: `inv disconnect`, `wfops disconnect`)."""

from __future__ import annotations

from typing import Any

from wfops.targets import resolve
from wfops.tasks._base import settings_for, wftask
from wfops.transport import warm


@wftask(help={"all": "close every warm connection of yours, whatever its target (no config needed)"})
def disconnect(c: Any, all: bool = False, config: str | None = None) -> None:
    """Close the warm SSH connection to the target now.

    Close the warm SSH connection to the configured target (its keeper exits); see WF_PERSIST_SECS."""
    if all:
        closed = warm.stop_all()
        print(f"closed {closed} warm connection(s)" if closed else "no warm connections")
        return
    target = resolve.target(settings_for(c, config))
    if target.is_local:
        print("the target is local: there is no connection to close")
        return
    if warm.stop_target(warm.socket_path(target, warm.private_dir(create=False))):
        print(f"closed the warm connection to {target.label}")
    else:
        print(f"no warm connection to {target.label}")
