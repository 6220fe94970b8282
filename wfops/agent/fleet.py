"""A fleet: one sweep spread over several pods. What this pod tells the client that spreads the runs
(fleet-facts), and how runs that have not started leave this pod's share (sweep-withdraw) so the client can
queue them on another pod with sweep-add.

A running queue holds its order in memory: sweep-withdraw drops a `<stamp>.withdraw` request in the sweep's
inbox (under the inbox lock, like sweep-add) and the scheduler answers it within a second with
`<stamp>.withdrawn`: the runs it took out of its order and those it holds (running, or waiting for a retry's
back-off). Either way the withdrawn runs leave the manifest's "runs" and "queue" as if never added here.
"""

from __future__ import annotations

import os
import time

from . import procs, slots, store, wire
from .registry import Refusal, command
from .states import (
    EXIT_CONFLICT,
    EXIT_REMOTE,
    INBOX,
    PENDING,
    QUEUE_RUNNING,
    RUNNING,
    STATUS_FILE,
    UNKNOWN,
    WITHDRAW_ANSWER,
    WITHDRAW_REQUEST,
)
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Set, Tuple

    from .states import Layout
    from .wire import FleetFacts, Json, Manifest, WithdrawAnswer, Withdrawn

    class Queue(Protocol):  # scheduler.Scheduler, as a withdraw request sees it (it imports this module)
        @property
        def running(self) -> Mapping[str, object]: ...
        @property
        def backoff(self) -> Set[str]: ...
        @property
        def order(self) -> slots.Order: ...
        @property
        def log(self) -> Callable[[str], None]: ...

ANSWER_WAIT_SECS = 10.0
KEPT_RUNNING, KEPT_ENDED, KEPT_UNKNOWN = RUNNING, "ended", UNKNOWN


def slot_count(pod: Layout, fake_gpus: Optional[int], cpu_only: bool, repo: str) -> int:
    """The scheduler's slot count (Scheduler.device_ids) without starting it: WF_FAKE_GPUS, one on a CPU
    target, CUDA_VISIBLE_DEVICES of the pod env file, else `nvidia-smi -L`, else torch in the venv; 0 = none."""
    if fake_gpus:
        return int(fake_gpus)
    if cpu_only:
        return 1
    from .facts import gpu_count  # only here: facts imports a lot
    from .launch import env_value

    python = os.path.join(repo, ".venv", "bin", "python") if repo else "python3"
    return gpu_count(python, env_value(pod.env_path, "CUDA_VISIBLE_DEVICES").strip())


def _started_here(pod: Layout, sid: str, run_id: str) -> bool:
    """Whether `run_id` has a status of sweep `sid` (it started in this sweep on this pod)."""
    st = store.load_or_note(os.path.join(pod.run_dir(run_id), STATUS_FILE))[0]
    return bool(st) and st.get("sweep_id") == sid


def _load_current(pod: Layout) -> Tuple[Json, Json, str]:
    """(sweep record or {}, manifest or {}, queue state); Refusal for a damaged sweep.json."""
    sw, problem = store.load_or_note(pod.sweep_file)
    if problem:
        raise Refusal(EXIT_REMOTE, problem)
    plan: Json = {}
    if sw:
        plan = store.load_or_note(os.path.join(pod.manifests, sw["sweep_id"] + ".json"))[0] or {}
    return sw or {}, plan, procs.queue_liveness(sw)[0]


@command(wire.FLEET_FACTS)
def fleet_facts(pod: Layout, fake_gpus: int = 0, cpu_only: bool = False, sweep_id: str = "",
                repo: str = "") -> FleetFacts:
    """What the client needs to spread runs over pods: the slots this pod's queue would use, and the load of
    its current sweep (slots held by running runs, slot demand and ids of runs queued but not started).
    Reads only."""
    sw, plan, state = _load_current(pod)
    repo = repo or (plan.get("exec") or {}).get("repo") or ""
    total = slot_count(pod, fake_gpus, bool(cpu_only), repo)
    out: FleetFacts = {"slots": total, "sweep_id": sw.get("sweep_id"), "queue_state": state, "busy": 0, "pending": 0,
           "pending_runs": []}
    sid: Any = sw.get("sweep_id")
    if not plan or (sweep_id and sweep_id != sid):
        return out
    from .rows import status_rows

    rows = {r["run_id"]: r for r in status_rows(pod, plan, state)}
    for entry in plan.get("queue") or []:
        row, need = rows.get(entry.get("run_id")), slots.need_of(entry.get("gpus"), total)
        if row is None:
            continue
        if row["state"] == RUNNING:
            out["busy"] += need
        elif row["state"] == PENDING and not _started_here(pod, sid, row["run_id"]):
            out["pending"] += need
            out["pending_runs"].append(row["run_id"])
    return out


# ---------------------------------------------------------------- the queue's side (scheduler.py calls it)
def answer_withdrawal(sched: Queue, path: str) -> None:
    """Answer one withdraw request: runs waiting in the order leave it; running ones and retries in their
    back-off stay (reported as running). The request file goes once the answer is written."""
    if not os.path.exists(path):  # its command gave up waiting and took it back
        return
    doc, problem = store.load_or_note(path, required=("run_ids",))
    wanted = set((doc or {}).get("run_ids") or [])
    held = sorted(wanted & (set(sched.running) | sched.backoff))
    gone = [run["run_id"] for run in sched.order.remove(wanted - set(held))]
    store.write_json(path[:-len(WITHDRAW_REQUEST)] + WITHDRAW_ANSWER, {"withdrawn": gone, "running": held,
                                                                       "problem": problem or ""})
    os.unlink(path)
    if problem:
        sched.log("withdraw: %s" % problem)
    if gone:
        sched.log("withdrawn (they run on another pod): %s" % ", ".join(gone))


# ---------------------------------------------------------------- the command
def _ask_queue(pod: Layout, sid: str, run_ids: List[str]) -> Optional[WithdrawAnswer]:
    """Hand the running queue a withdraw request; its answer, or None when the queue is not running (then the
    caller withdraws directly). Refusal when a running queue does not answer in time."""
    inbox = os.path.join(pod.manifests, sid + INBOX)
    name = "withdraw-%s-%d" % (store.now_precise().replace(":", ""), os.getpid())
    request, answer = os.path.join(inbox, name + WITHDRAW_REQUEST), os.path.join(inbox, name + WITHDRAW_ANSWER)
    with store.locked(inbox):  # the manifests dir: the queue holds it while it answers
        if procs.queue_liveness(store.load(pod.sweep_file) or {})[0] != QUEUE_RUNNING:
            return None
        store.write_json(request, {"run_ids": run_ids})
    deadline = time.monotonic() + ANSWER_WAIT_SECS
    while True:
        got: Optional[WithdrawAnswer] = store.load_or_note(answer)[0]
        if got is not None:
            os.unlink(answer)
            return got
        with store.locked(inbox):
            alive = procs.queue_liveness(store.load(pod.sweep_file) or {})[0] == QUEUE_RUNNING
            if not alive and not os.path.exists(answer):  # it ended without reading the request
                os.unlink(request)
                return None
            if time.monotonic() > deadline and not os.path.exists(answer):
                os.unlink(request)
                raise Refusal(EXIT_REMOTE, "the queue of %s did not answer the withdraw request within %ds "
                              "(is it stuck? see sweep.status); nothing was withdrawn" % (sid, ANSWER_WAIT_SECS))
        time.sleep(0.1)


def _drop(pod: Layout, plan: Manifest, withdrawn: Set[str]) -> None:
    """The withdrawn runs leave the manifest (runs, queue, a resumed queue's start), as if never added here."""
    from .sweeps import _write_manifests

    runs, queue, start = plan.get("runs"), plan.get("queue"), plan.get("start")
    if isinstance(runs, list):
        plan["runs"] = [r for r in runs if _stays(r, withdrawn)]
    if isinstance(queue, list):
        plan["queue"] = [r for r in queue if _stays(r, withdrawn)]
    if isinstance(start, list):
        plan["start"] = [r for r in start if _stays(r, withdrawn)]
    _write_manifests(pod, plan, None)


def _run_id(entry: Any) -> Any:
    return entry.get("run_id") if isinstance(entry, dict) else None  # a hand-edited manifest: no crash


def _stays(run: Any, withdrawn: Set[str]) -> bool:
    return not (isinstance(run, dict) and run.get("run_id") in withdrawn)


@command(wire.SWEEP_WITHDRAW)
def sweep_withdraw(pod: Layout, sweep_id: str, run_ids: List[str]) -> Withdrawn:
    """Take runs that have not started out of this pod's share of sweep `sweep_id` (the client queues them
    on another pod). Returns the ids withdrawn and why the others were kept (running / ended / unknown)."""
    from .sweepedit import _current

    sw, plan = _current(pod)
    sid = sw["sweep_id"]
    if sid != sweep_id:
        raise Refusal(EXIT_CONFLICT, "the current sweep of this pod is %s, not %s; nothing was withdrawn"
                      % (sid, sweep_id))
    run_ids = list(dict.fromkeys(run_ids))  # strings: checked at the door (wire.ARGUMENTS)
    queued = {_run_id(e) for e in plan["queue"]}
    answer = _ask_queue(pod, sid, [r for r in run_ids if r in queued])
    taken: Set[str] = set(answer.get("withdrawn") or []) if answer else set()
    held: Set[str] = set(answer.get("running") or []) if answer else set()
    withdrawn: List[str] = []
    kept: Dict[str, str] = {}
    for rid in run_ids:
        if rid in held:
            kept[rid] = KEPT_RUNNING
        elif rid not in queued:
            kept[rid] = KEPT_UNKNOWN
        elif rid in taken or (answer is None and not _started_here(pod, sid, rid)):
            withdrawn.append(rid)
        else:  # a live queue passed it already (ran, skipped, no fit), or a stopped one had started it
            kept[rid] = KEPT_ENDED
    if withdrawn:
        plan = store.load(os.path.join(pod.manifests, sid + ".json")) or plan  # as it is now
        _drop(pod, plan, set(withdrawn))
    return {"sweep_id": sid, "withdrawn": withdrawn, "kept": kept}
