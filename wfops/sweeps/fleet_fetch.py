"""run.fetch on a fleet with no usable ledger (damaged or deleted): each pod's own sweep says which runs it has;
a run that ran on two pods (a partition) is fetched once into LOCAL_ARTIFACTS_DIR/RUN/ from the copy that wins,
and each other copy into LOCAL_ARTIFACTS_DIR/_duplicates/<pod>/RUN/: two copies' files never mix in one folder.
The copy that wins: one that ended `success`, then one that ended, then the pod first in the config's order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wfops.agent import wire
from wfops.agent.states import SUCCESS, TERMINAL
from wfops.errors import ConnectError, WfopsError
from wfops.settings.load import Settings
from wfops.sweeps.fleet_copies import executed
from wfops.sweeps.fleet_pods import Pods, known
from wfops.sweeps.ledger import Ledger
from wfops.targets import resolve

DUPLICATES_DIR = "_duplicates"  # LOCAL_ARTIFACTS_DIR/_duplicates/<pod>/RUN: the copies that did not win


@dataclass
class Share:
    """What run.fetch takes from one pod: its winning copies (`mine`), its losing ones (`dups`), or the reason
    it could not be asked (`error`: its fetch fails with it instead of guessing)."""

    mine: list[str] = field(default_factory=list)
    dups: list[str] = field(default_factory=list)
    error: WfopsError | None = None
    skip: bool = False  # nothing of this pod's is asked for (one run, which this pod does not have)


def pod_dir_name(pod: str) -> str:
    """A pod's name as a folder name (`root@127.0.0.2:2222` -> `root_127.0.0.2_2222`)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", pod).strip(".") or "pod"


def _rank(row: Mapping[str, Any], index: int) -> tuple[bool, bool, int]:
    return (row.get("state") == SUCCESS, row.get("state") in TERMINAL, -index)


def choose(rows: Mapping[str, Sequence[Mapping[str, Any]]], order: Sequence[str]) -> dict[str, Share]:
    """pod -> its Share, from each pod's status rows (runs not started have nothing to fetch). Pure."""
    where: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for pod in order:
        for row in (r for r in rows.get(pod) or () if executed(r)):  # one not started has no files
            where.setdefault(str(row["run_id"]), []).append((pod, row))
    out = {pod: Share() for pod in order if pod in rows}
    for rid, copies in where.items():
        best = max(copies, key=lambda c: _rank(c[1], list(order).index(c[0])))[0]
        for pod, _row in copies:
            (out[pod].mine if pod == best else out[pod].dups).append(rid)
    return out


def shares(settings: Settings, sweep: str) -> dict[str, Share]:
    """Ask every pod (one exec each) for its sweep's rows; pod name -> Share."""
    names = [m.name for m in resolve.members(settings)]
    with Pods(settings, "run.fetch", only=names) as pods:
        answers = pods.call(wire.SWEEP_STATUS, {"sweep": sweep, "metric_patterns": []})
        down = dict(pods.down)
    rows = {n: (o.value or {}).get("runs") or [] for n, o in answers.items() if o.error is None}
    out = choose(rows, names)
    for n, o in answers.items():
        if o.error is not None:
            out[n] = Share(error=o.error)
    for n, why in down.items():
        out.setdefault(n, Share(error=ConnectError(why)))
    if any(s.mine or s.dups for s in out.values()):  # a pod that ran none of them has nothing to send: not asked
        for s in out.values():  # (asked, it would fail the fetch: "none of the runs ... has a run directory")
            s.skip = s.skip or (s.error is None and not (s.mine or s.dups))
    return out


def one_run(settings: Settings, run_id: str, ledger: Ledger | None) -> dict[str, Share] | None:
    """`run.fetch RUN` on a fleet: the pod the ledger has it on, alone; with no ledger of it, the pods whose current
    sweep ran it (one copy into RUN/, the others apart, as for --all). None: no pod's sweep knows it (each pod is
    asked for it, as before)."""
    names = [m.name for m in resolve.members(settings)]
    if ledger is not None and run_id in ledger["runs"]:
        known(settings, ledger["runs"][run_id]["pods"])  # a pod removed from the config: said, not an empty fetch
        pod = ledger["runs"][run_id]["pods"][0]  # node 0's: RUN's own dir (node K's is RUN.nodeK)
        return {n: Share(mine=[run_id]) if n == pod else Share(skip=True) for n in names}
    got = shares(settings, "")
    if not any(run_id in s.mine or run_id in s.dups for s in got.values()):
        return None
    return {n: s if s.error is not None else
            Share(mine=[r for r in s.mine if r == run_id], dups=[r for r in s.dups if r == run_id],
                  skip=run_id not in s.mine + s.dups) for n, s in got.items()}
