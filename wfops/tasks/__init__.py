"""The wfops task tree. Import `ns` whole, or one namespace (e.g. `wfops.tasks.sweep.ns`).

    # your tasks.py
    from invoke import Collection
    from wfops.tasks import ns as wfops
    ns = Collection(wfops)               # or: ns.add_collection(wfops.collections["sweep"])
"""

from __future__ import annotations

from wfops import keep_bytecode
from wfops.interrupt import PROGRAMS, guard, program_name

keep_bytecode()  # invoke turned bytecode off just before importing the tasks (see wfops.keep_bytecode)
guard()  # under `inv`: Ctrl-C while the task tree loads is one line and exit 130, not invoke's silent exit 1
if program_name() in PROGRAMS:  # under `inv` as under `wfops` (which checked already: the same again)
    from wfops.startup import check

    check()  # stdout closed: one line, exit 2; a character the output encoding lacks: its escape (wfops.startup)

from invoke import Collection  # noqa: E402

from wfops.tasks import config, connection, fsm, pod, prep, run, sweep, task  # noqa: E402

ns = Collection("wfops", prep.bootstrap, prep.checkout, connection.disconnect)
for _sub in (config.ns, fsm.ns, pod.ns, task.ns, sweep.ns, run.ns):
    ns.add_collection(_sub)
ns.configure({"wfops": {"config": None}})

__all__ = ["ns"]
