"""The wfops task tree. Import `ns` whole, or one namespace (e.g. `wfops.tasks.sweep.ns`).

    # your tasks.py
    from invoke import Collection
    from wfops.tasks import ns as wfops
    ns = Collection(wfops)               # or: ns.add_collection(wfops.collections["sweep"])
"""

from __future__ import annotations

from invoke import Collection

from wfops.tasks import config, connection, fsm, pod, prep, run, sweep, task

ns = Collection("wfops", prep.bootstrap, prep.checkout, connection.disconnect)
for _sub in (config.ns, fsm.ns, pod.ns, task.ns, sweep.ns, run.ns):
    ns.add_collection(_sub)
ns.configure({"wfops": {"config": None}})

__all__ = ["ns"]
