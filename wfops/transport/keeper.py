"""The keeper: one background process per user and environment that holds a Fabric connection to every warm
target, each for its own WF_PERSIST_SECS.

    python -m wfops.transport.keeper HUB_PATH   (started by wfops.transport.launch; the first order arrives as
    JSON on stdin, later ones over HUB_PATH)

The process first claims its hub socket (HUB_PATH, warm.hub_path: one per keeper directory and environment; a
later command asks it to add its target instead of starting another process; if another process already answers
there, this one serves its own targets only), then connects its first target (through wfops.transport.ssh, the
one connection factory), binds that target's socket (mode 600, in the private directory), prints `{"ok": true}`
(or the connection error) on stdout and serves (wfops.transport.hub). Every target has its own socket,
connection, locks and idle clock (wfops.transport.served): every accepted client whose uid is ours gets one
`bash -s` channel for one script, relayed frame by frame (wfops.transport.warm). A connection that died under
it (the pod rebooted, sshd restarted, the keepalive found it frozen) is made again for the next request — before
anything was sent on it, so no script runs twice. A target leaves when idle for its persist time (the latest a
client sent), when asked (`wfops disconnect`), or when a client's fingerprint says the target now resolves to
another connection; the process exits when it holds no target.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from wfops.transport import warm
from wfops.transport.hub import Hub


def main(argv: list[str]) -> int:
    order = json.loads(sys.stdin.read())
    hub = Hub(Path(argv[0]))
    ticket = hub.reserve(order)  # pending before the process listens: a disconnect from then on cancels it
    hub.claim(order.get("hub_lock_fd"))
    threading.Thread(target=hub.run, daemon=True).start()  # later orders may come while the first one connects
    answer = hub.add(order, ticket)
    if order.get("lock_fd") is not None:  # started ahead of its command (wfops.prewarm): the command may go on
        # and finds why this one could not connect, instead of trying again
        warm.write_failure(Path(order["path"]), order["fp"], answer)
        os.close(int(order["lock_fd"]))
    try:
        print(json.dumps(answer), flush=True)
    except OSError:  # nobody reads it (started ahead of its command)
        pass
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    hub.added()
    hub.run_done.wait()
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
