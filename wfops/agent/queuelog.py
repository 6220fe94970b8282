"""The sweep queue's log: what it does, stamped, in its tmux window and in _manifests/<sweep>.log."""

from __future__ import annotations

import os
import sys

from . import store


class QueueLog:
    """The queue's log: the tmux window and _manifests/<sweep>.log."""

    def __init__(self, path: str) -> None:
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the queue

    def __call__(self, text: str) -> None:
        line = "%s %s\n" % (store.now_iso(), text)
        try:
            self.fh.write(line)
            self.fh.flush()
        except OSError:  # a full disk: the tmux window still shows it
            pass
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except OSError:  # the tmux window is gone (its terminal answers EIO): the log file still has it
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces stdout for the rest of the queue
