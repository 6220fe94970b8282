"""Where a fleet sweep's runs go: spreading runs over pods by free GPU slots, moving runs that have not started,
and joining the pods' status rows into one table. Pure: no I/O.

Each pod runs its own agent scheduler on its share (wfops/agent/scheduler.py packs runs into its slots); this
module only decides shares. A share is balanced by load per slot: a run goes to the pod where
(slots held + slots queued + its need) / slots is lowest, so pods of different sizes finish together when runs
take similar time. A multi-node run (CSV `nodes` > 1) takes that many distinct pods, placed first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from wfops.agent.states import (
    ALL_GPUS,
    CANCELLED,
    FAILED,
    LOST,
    PENDING,
    QUEUE_COMPLETED,
    RUNNING,
    SKIPPED,
    SUCCESS,
    TERMINAL,
    TIMED_OUT,
    UNKNOWN,
)
from wfops.errors import UsageError
from wfops.sweeps.model import NODE_SUFFIX

WORST_FIRST = (FAILED, TIMED_OUT, LOST, CANCELLED, UNKNOWN, PENDING, RUNNING, SKIPPED, SUCCESS)


@dataclass
class PodLoad:
    name: str
    slots: int  # GPU slots of the pod's scheduler
    load: int = 0  # slots held by running runs + slots asked by runs waiting there
    reachable: bool = True

    def fits(self, need: int) -> bool:
        return self.reachable and 0 < need <= self.slots

    def after(self, need: int) -> float:
        return (self.load + need) / self.slots


@dataclass(frozen=True)
class Want:
    run_id: str
    gpus: str = ALL_GPUS  # "all" or a whole number
    nodes: int = 1


def need_on(gpus: str, slots: int) -> int:
    return slots if str(gpus) == ALL_GPUS else int(gpus)


def node_run_id(run_id: str, rank: int) -> str:
    return run_id if rank == 0 else f"{run_id}{NODE_SUFFIX}{rank}"


def base_run_id(entry_id: str, multi: Iterable[str]) -> str:
    """RUN.nodeK -> RUN when RUN is a multi-node run of the sweep; anything else as it is."""
    head, sep, tail = entry_id.rpartition(NODE_SUFFIX)
    return head if sep and tail.isdigit() and head in set(multi) else entry_id


def spread(pods: Sequence[PodLoad], wants: Sequence[Want]) -> dict[str, list[str]]:
    """run_id -> the pods it runs on (one; or `nodes` of them, node 0 first). Loads in `pods` grow as runs are
    placed. A run that fits no pod, or wants more pods than fit it, is a UsageError naming every such run."""
    placed: dict[str, list[str]] = {}
    problems: list[str] = []
    for want in sorted(wants, key=lambda w: w.nodes == 1):  # multi-node first: they need pods at the same time
        able = [p for p in pods if p.fits(need_on(want.gpus, p.slots))]
        if len(able) < want.nodes:
            problems.append(_no_fit(want, pods, able))
            continue
        chosen = sorted(able, key=lambda p: (p.after(need_on(want.gpus, p.slots)), pods.index(p)))[:want.nodes]
        if want.nodes > 1:
            chosen.sort(key=pods.index)  # node 0 is the first of them in config order
        for p in chosen:
            p.load += need_on(want.gpus, p.slots)
        placed[want.run_id] = [p.name for p in chosen]
    if problems:
        raise UsageError(f"{len(problems)} run(s) fit no pod of the fleet; nothing was started: "
                         + "; ".join(problems[:10]))
    return {w.run_id: placed[w.run_id] for w in wants}  # CSV order again


def _no_fit(want: Want, pods: Sequence[PodLoad], able: Sequence[PodLoad]) -> str:
    sizes = ", ".join(f"{p.name} {p.slots}" for p in pods if p.reachable) or "no pod reachable"
    if want.nodes > 1:
        return (f"{want.run_id} wants {want.nodes} pods with {want.gpus} GPU(s) each and {len(able)} have that "
                f"(slots: {sizes})")
    return f"{want.run_id} asks for {want.gpus} GPU(s) (slots: {sizes})"


def shares(placed: Mapping[str, list[str]]) -> dict[str, list[tuple[str, int]]]:
    """pod -> [(run_id, node rank)] in CSV order."""
    out: dict[str, list[tuple[str, int]]] = {}
    for rid, where in placed.items():
        for rank, pod in enumerate(where):
            out.setdefault(pod, []).append((rid, rank))
    return out


# ------------------------------------------------------------------ moving runs that have not started

@dataclass
class PodQueue:
    """One pod as sweep.rebalance sees it."""

    name: str
    slots: int
    busy: int = 0  # slots held by its running runs
    waiting: list[tuple[str, int]] = field(default_factory=list)  # (run_id, need) not started, queue order
    reachable: bool = True


@dataclass(frozen=True)
class Move:
    run_id: str
    src: str
    dst: str
    why: str


def stuck(q: PodQueue) -> list[tuple[str, int]]:
    """The waiting runs this pod cannot start now (its free slots go to the ones before them)."""
    free = q.slots - q.busy
    out = []
    for rid, need in q.waiting:
        if need <= free:
            free -= need
        else:
            out.append((rid, need))
    return out


def rebalance(queues: Sequence[PodQueue], orphans: Sequence[tuple[str, str, int]] = (),
              avoid: Mapping[str, Set[str]] | None = None) -> list[Move]:
    """Moves of runs that have not started: every orphan (run_id, from pod, need: a dead pod's runs, placed on
    the reachable pods by load even if they must wait there), then runs stuck behind a busy pod's queue to a
    pod with slots free for them now (the last waiting first). Nothing moves between two pods that are both
    busy: that would only trade places. `avoid`: run_id -> pods it must not go to (a copy of it ran there: the
    pod's sweep has it already and refuses it)."""
    avoid = avoid or {}
    live = [q for q in queues if q.reachable]
    idle = {q.name: q.slots - q.busy - sum(n for _, n in q.waiting) for q in live}
    loads = [PodLoad(q.name, q.slots, q.busy + sum(n for _, n in q.waiting)) for q in live]
    moves = []
    for rid, src, need in orphans:
        able = [p for p in loads if p.fits(need) and p.name not in avoid.get(rid, ())]
        if not able:
            continue
        dst = min(able, key=lambda p: (p.after(need), loads.index(p)))
        dst.load += need
        idle[dst.name] -= need
        moves.append(Move(rid, src, dst.name, f"{src} is unreachable"))
    for q in live:
        for rid, need in reversed(stuck(q)):
            free = max((o for o in live if o.name != q.name and need <= min(o.slots, idle[o.name])
                        and o.name not in avoid.get(rid, ())),
                       key=lambda o: idle[o.name], default=None)
            if free is None:
                continue
            idle[free.name] -= need
            moves.append(Move(rid, q.name, free.name, f"{q.name} has no free slot for it; {free.name} has"))
    return moves


# ------------------------------------------------------------------ one table from many pods

def worst_state(states: Iterable[str]) -> str:
    states = list(states)
    return min(states, key=lambda s: WORST_FIRST.index(s) if s in WORST_FIRST else 4) if states else UNKNOWN


def fold_nodes(rows: Sequence[Mapping[str, Any]], multi: Iterable[str]) -> dict[str, dict[str, Any]]:
    """run_id -> its row; a multi-node run's node rows (RUN.nodeK, on other pods) fold into RUN's row, whose
    state is the worst node's and whose `nodes` lists each node's pod and state."""
    multi = set(multi)
    out: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["run_id"]):
        rid = base_run_id(row["run_id"], multi)
        if rid not in multi:
            out[rid] = dict(row)
            continue
        node = {"run_id": row["run_id"], "pod": row.get("pod"), "state": row.get("state")}
        if rid not in out:
            out[rid] = dict(row, run_id=rid, nodes=[node])
            continue
        merged = out[rid]
        merged["nodes"].append(node)
        merged["state"] = worst_state(n["state"] for n in merged["nodes"])
        if row["run_id"] == rid:  # node 0's own fields (exit code, metrics) lead
            merged.update({k: v for k, v in row.items() if k not in ("state", "run_id")})
    return out


def totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[row["state"]] = out.get(row["state"], 0) + 1
    return out


def fleet_state(rows: Sequence[Mapping[str, Any]]) -> str:
    """The fleet sweep's state: running while any run has not ended (an `unknown` row of a silent pod counts as
    not ended), else completed."""
    return RUNNING if any(r["state"] not in TERMINAL for r in rows) else QUEUE_COMPLETED
