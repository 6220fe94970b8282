"""One sweep over a fleet, the moves: sweep.rebalance moves runs that have not started (from an unreachable pod, or
stuck behind a busy one) with `sweep-withdraw` on the pod they leave and `sweep-add` on the pod they join;
sweep.add and sweep.retry place new or failed runs on the pods by free slots; the ledger follows every move.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Set
from contextlib import suppress
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from wfops import fanout
from wfops.agent import wire
from wfops.agent.states import LOST, RUNNING, TERMINAL
from wfops.errors import ConflictError, ConnectError, NotFoundError, WfopsError
from wfops.settings.load import Settings
from wfops.sweeps.fleet_pods import Answer, Pods, check_all, facts_of
from wfops.sweeps.fleet_start import ledger_run
from wfops.sweeps.ledger import Ledger, LedgerUnwritable, ledger_lock, load_ledger, save_ledger
from wfops.sweeps.model import exec_block
from wfops.sweeps.plan import PodLoad, PodQueue, Want, need_on, rebalance, spread

if TYPE_CHECKING:  # the wire's TypedDicts exist for the type checker only (the pod agent never imports typing)
    from wfops.agent.wire import QueueEntry, RunRow, Withdrawn


def rebalance_fleet(settings: Settings, sweep_id: str = "") -> dict[str, Any]:
    """Move runs that have not started: off unreachable pods (their runs seen running become lost, retried
    elsewhere when RETRY_ON has `lost` and RUN_RETRIES > 0), and from a pod whose queue is stuck to one with
    free slots; take back from a returned pod the runs that were moved off it."""
    with ledger_lock(settings):
        return _rebalance(settings, sweep_id)


def _rebalance(settings: Settings, sweep_id: str) -> dict[str, Any]:
    ledger = load_ledger(settings, sweep_id)
    _writable(settings, ledger, "nothing was moved")  # before any pod changes: each move must reach the ledger
    with Pods(settings, "sweep.rebalance", only=list(ledger["pods"])) as pods:
        facts = {n: o.value for n, o in facts_of(pods, settings, ledger["sweep_id"]).items() if o.value is not None}
        unstarted = unstarted_pods(ledger)  # pods that refused their share at sweep.start: their runs go elsewhere
        orphans, lost = _orphans(settings, ledger, {**unstarted, **pods.down})
        dead = _dead_queue_orphans(ledger, facts)  # a pod back after it died: its queue runner is gone
        queues = _queues(ledger, facts)
        moves = rebalance([q for q in queues if q.name in pods.cmds and q.name not in unstarted
                           and q.name not in {src for _, src, _ in dead}], orphans + dead,
                          {rid: set(run.get("copies") or ()) for rid, run in ledger["runs"].items()})
        moves = [replace(m, why=f"the queue runner of {m.src} is gone") if (m.run_id, m.src) in
                 {(rid, src) for rid, src, _ in dead} else m for m in moves]
        reclaimed = _reclaim(pods, ledger, facts)
        done = _apply(settings, pods, ledger, moves, set(unstarted))
    save_ledger(settings, ledger)
    return {"sweep_id": ledger["sweep_id"], "moves": done, "lost_runs": lost, "reclaimed": reclaimed,
            "down": dict(pods.down)}


def _writable(settings: Settings, ledger: Ledger, nothing: str) -> None:
    """Write the ledger as it is (or with what is about to be done: its intent) before a pod is changed; one
    line and nothing changed on any pod when it cannot be written."""
    try:
        save_ledger(settings, ledger)
    except LedgerUnwritable as exc:
        raise LedgerUnwritable(f"{exc.message}; {nothing}") from None


def unstarted_pods(ledger: Ledger) -> dict[str, str]:
    """Pods whose share did not start at sweep.start and that still hold runs of the ledger."""
    return {n: f"its share did not start: {p.get('error')}" for n, p in ledger["pods"].items()
            if p.get("started") is False and any(r["pods"] == [n] and not r.get("lost")
                                                 for r in ledger["runs"].values())}


def _orphans(settings: Settings, ledger: Ledger, down: Mapping[str, str]) -> tuple[list[Any], list[Any]]:
    retry_lost = LOST in settings.retry_on and settings.run_retries > 0
    orphans, lost = [], []
    for rid, run in ledger["runs"].items():
        gone = [p for p in run["pods"] if p in down]
        if run.get("lost") or not gone:
            continue
        seen = run.get("last")
        last = seen["state"] if seen else None
        if last in TERMINAL:
            continue
        if len(run["pods"]) > 1:  # cannot move, and cannot run without that node: the others would wait forever
            run["lost"] = (f"pod {gone[0]} of this multi-node run stopped answering ({down[gone[0]]}); "
                           "a new sweep.start runs it again")
            lost.append(rid)
            continue
        if last == RUNNING and not retry_lost:
            run["lost"] = f"pod {run['pods'][0]} stopped answering while it ran ({down[run['pods'][0]]})"
            lost.append(rid)
            continue
        need = need_on(str(run["entry"].get("gpus")), int(ledger["pods"][run["pods"][0]].get("slots") or 1))
        orphans.append((rid, run["pods"][0], need))
    return orphans, lost


def _dead_queue_orphans(ledger: Ledger, facts: Mapping[str, dict[str, Any]]) -> list[tuple[str, str, int]]:
    """Runs waiting on a pod that answers but whose queue runner is gone (the pod died and came back, its
    processes did not): nothing there would start them, so they go elsewhere like a silent pod's."""
    out = []
    for name, f in facts.items():
        if f.get("queue_state") != LOST:
            continue
        slots = int(ledger["pods"][name].get("slots") or 1)
        for rid in f.get("pending_runs") or []:
            run = ledger["runs"].get(rid)
            if run is not None and run["pods"] == [name] and not run.get("lost"):
                out.append((rid, name, need_on(str(run["entry"].get("gpus")), slots)))
    return out


def _queues(ledger: Ledger, facts: Mapping[str, dict[str, Any]]) -> list[PodQueue]:
    out = []
    for name, f in facts.items():
        slots = int(f.get("slots") or 0)
        waiting = [(rid, need_on(str(ledger["runs"][rid]["entry"].get("gpus")), slots))
                   for rid in f.get("pending_runs") or []
                   if rid in ledger["runs"] and len(ledger["runs"][rid]["pods"]) == 1
                   and ledger["runs"][rid]["pods"][0] == name]
        out.append(PodQueue(name, slots, int(f.get("busy") or 0), waiting))
    return out


def _reclaim(pods: Pods, ledger: Ledger, facts: Mapping[str, dict[str, Any]]) -> list[str]:
    """Runs queued on a pod that the ledger moved elsewhere (it was unreachable then): take them back out."""
    stray = {n: [rid for rid in f.get("pending_runs") or [] if rid in ledger["runs"]
                 and n not in ledger["runs"][rid]["pods"]] for n, f in facts.items()}
    stray = {n: ids for n, ids in stray.items() if ids}
    if not stray:
        return []
    got = pods.call(wire.SWEEP_WITHDRAW, lambda n: {"sweep_id": ledger["pods"][n]["sweep_id"], "run_ids": stray[n]},
                    list(stray))
    return _withdrawn(got)


def _withdrawn(got: Mapping[str, Answer]) -> list[str]:
    """The run ids the pods' sweep-withdraw answers (wire.Withdrawn) say they took out of their queues."""
    answers: list[Withdrawn] = [o.value for o in got.values() if o.error is None and o.value]
    return [rid for answer in answers for rid in answer.get("withdrawn") or []]


def _apply(settings: Settings, pods: Pods, ledger: Ledger, moves: list[Any],
           never_queued: Set[str] = frozenset()) -> list[dict[str, Any]]:
    from_live: dict[str, list[str]] = {}
    for m in moves:
        if m.src in pods.cmds and m.src not in never_queued:
            from_live.setdefault(m.src, []).append(m.run_id)
    freed: set[str] = set()
    if from_live:
        got = pods.call(wire.SWEEP_WITHDRAW, lambda n: {"sweep_id": ledger["pods"][n]["sweep_id"],
                                                     "run_ids": from_live[n]}, list(from_live))
        freed = set(_withdrawn(got))
    going = [m for m in moves if m.src not in pods.cmds or m.src in never_queued or m.run_id in freed]
    by_dst: dict[str, list[Any]] = {}
    for m in going:
        by_dst.setdefault(m.dst, []).append(m)
    answers = pods.call(wire.SWEEP_ADD, lambda n: _add_args(settings, ledger, n, [m.run_id for m in by_dst[n]]),
                        list(by_dst))
    back = _put_back(settings, pods, ledger, [m for m in going if m.src in from_live and m.run_id in freed
                                              and (answers.get(m.dst) is None or answers[m.dst].error is not None)])
    done = []
    for m in going:
        o = answers.get(m.dst)
        ok = o is not None and o.error is None
        run = ledger["runs"][m.run_id]
        if ok:
            run["pods"] = [m.dst]
            run.pop("last", None)
            run.pop("sent", None)
            run["moves"].append({"from": m.src, "to": m.dst, "why": m.why,
                                 "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        error = (o.error.message if o is not None and o.error is not None else "no answer") if not ok else None
        done.append({"run_id": m.run_id, "from": m.src, "to": m.dst, "why": m.why, "moved": ok,
                     "error": error and f"{error}{back.get(m.run_id, '')}"})
    return done


def _put_back(settings: Settings, pods: Pods, ledger: Ledger, failed: list[Any]) -> dict[str, str]:
    """Runs withdrawn from a live pod that their new pod refused go back where they were (else they would be in
    no queue at all, and sweep.wait would wait for them for ever). run_id -> what became of it."""
    by_src: dict[str, list[str]] = {}
    for m in failed:
        by_src.setdefault(m.src, []).append(m.run_id)
    answers = pods.call(wire.SWEEP_ADD, lambda n: _add_args(settings, ledger, n, by_src[n]), list(by_src))
    out = {}
    for src, ids in by_src.items():
        o = answers.get(src)
        why = ("; it stays on " + src if o is not None and o.error is None else
               f"; it was withdrawn from {src} and could not be put back: "
               + (o.error.message if o is not None and o.error is not None else "no answer"))
        out.update({rid: why for rid in ids})
    return out


def _add_args(settings: Settings, ledger: Ledger, pod: str, ids: list[str], token: str = "") -> dict[str, object]:
    """sweep-add's arguments for runs that move to `pod` (their rows and queue entries from the ledger); `token`:
    sweep.add's (wfops.agent.addtokens)."""
    rows: list[RunRow] = []
    entries: list[QueueEntry] = []
    for rid in ids:
        run = ledger["runs"][rid]
        row: RunRow = dict(run["row"] or {"run_id": rid, "config": run["entry"]["config"]})  # type: ignore[assignment]
        row["selected"] = True
        entry = run["entry"].copy()
        entry["attempt"] = 1
        rows.append(row)
        entries.append(entry)
    return {"runs": rows, "entries": entries, "session": settings.sweep_tmux_session,
            "exec_block": exec_block(settings), "sweep_id": ledger["pods"][pod]["sweep_id"],
            **({"token": token} if token else {})}


def add(settings: Settings, runs: list[Any], entries: list[QueueEntry], rows: list[RunRow]) -> dict[str, Any]:
    """Spread more runs over the pods that answer, by their free slots, into the fleet sweep."""
    with ledger_lock(settings):
        return _add(settings, runs, entries, rows)


def _add(settings: Settings, runs: list[Any], entries: list[QueueEntry], rows: list[RunRow]) -> dict[str, Any]:
    ledger = load_ledger(settings)
    taken = [r.run_id for r in runs if r.run_id in ledger["runs"]]
    if taken:
        raise ConflictError(f"{len(taken)} run id(s) already in {ledger['sweep_id']}; nothing was added: "
                            + ", ".join(taken[:10]))
    wide = [r.run_id for r in runs if r.nodes > 1]
    if wide:
        raise WfopsError(f"multi-node runs join a fleet sweep only at sweep.start: {', '.join(wide[:5])}", 2)
    with Pods(settings, "sweep.add", only=list(ledger["pods"])) as pods:
        facts = check_all(facts_of(pods, settings, ledger["sweep_id"]), "sweep.add")
        loads = [PodLoad(n, int(f.get("slots") or 0), int(f.get("busy") or 0) + int(f.get("pending") or 0))
                 for n, f in facts.items()]
        placed = spread(loads, [Want(e["run_id"], str(e["gpus"])) for e in entries])
        by_id = {e["run_id"]: e for e in entries}
        row_of = {r["run_id"]: r for r in rows}
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        tokens = {w[0]: secrets.token_hex(12) for w in placed.values()}  # one per pod's request
        for rid, where in placed.items():
            ledger["runs"][rid] = ledger_run(where, by_id[rid], row_of[rid])
            ledger["runs"][rid]["sent"] = {"pod": where[0], "at": at, "why": "sweep.add had no answer",
                                           "token": tokens[where[0]]}
            ledger["order"].append(rid)
        _writable(settings, ledger, "nothing was added")  # the intent first: no pod queues a run status cannot see
        try:
            answers = pods.call(wire.SWEEP_ADD, lambda n: _add_args(settings, ledger, n, [
                rid for rid, w in placed.items() if w[0] == n], tokens[n]), sorted(tokens))
        except BaseException:  # Ctrl-C, SIGTERM: the runs stay sent, and a pod's answer without them is final
            _closed(ledger, placed)
            with suppress(LedgerUnwritable):
                save_ledger(settings, ledger)
            raise
        _closed(ledger, placed)
        failed, maybe = _added(ledger, placed, answers)
    save_ledger(settings, ledger)
    return {"sweep_id": ledger["sweep_id"], "placed": {r: w for r, w in placed.items() if r in ledger["runs"]
                                                       and r not in maybe},
            "maybe": maybe, "errors": failed, "down": dict(pods.down), "worst": fanout.worst(list(answers.values()))}


def _closed(ledger: Ledger, placed: Mapping[str, list[str]]) -> None:
    """sweep.add stopped waiting for the pods (answered, failed or interrupted): from now on a pod that answers
    without one of these runs never queued it (wfops.sweeps.fleet_copies.not_queued)."""
    for rid in placed:
        ledger["runs"][rid]["sent"]["closed"] = time.time()


def _added(ledger: Ledger, placed: Mapping[str, list[str]], answers: Mapping[str, Answer]
           ) -> tuple[dict[str, str], dict[str, str]]:
    """The ledger after sweep.add's answers: a run its pod queued loses its `sent` mark; one its pod refused (the
    agent answered no) leaves the ledger; one whose answer was lost (the connection died after the request went
    out: the pod may have queued it) stays, marked `sent`, for the next contact to resolve. (errors by pod,
    run_id -> the pod it may be queued on)."""
    failed = {n: o.error.message for n, o in answers.items() if o.error is not None}
    unsure = {n for n, o in answers.items() if isinstance(o.error, ConnectError)}
    maybe = {}
    for rid, where in placed.items():
        run = ledger["runs"][rid]
        if where[0] in unsure:
            run["sent"]["why"] = f"sweep.add had no answer: {failed[where[0]]}"
            maybe[rid] = where[0]
        elif where[0] in failed or where[0] not in answers:
            del ledger["runs"][rid]
            ledger["order"].remove(rid)
        else:
            run.pop("sent", None)
    for n in unsure:
        failed[n] += "; the runs sent to it may be queued there: sweep.status says which (they stay in the ledger)"
    return failed, maybe


def retry(settings: Settings, run_ids: list[str], failed: bool) -> dict[str, Any]:
    """sweep-retry on the pod each run is on (`failed`: on every pod, each requeues its own)."""
    ledger = load_ledger(settings)
    unknown = [rid for rid in run_ids if rid not in ledger["runs"]]
    if unknown:
        raise NotFoundError(f"not a run of {ledger['sweep_id']}: {', '.join(unknown)}")
    wide = [rid for rid in run_ids if len(ledger["runs"][rid]["pods"]) > 1]
    if wide:
        raise WfopsError(f"a multi-node run is retried by a new sweep.start: {', '.join(wide)}", 2)
    by_pod: dict[str, list[str]] = {}
    for rid in run_ids:
        by_pod.setdefault(ledger["runs"][rid]["pods"][0], []).append(rid)
    names = list(ledger["pods"]) if failed else list(by_pod)
    session = settings.sweep_tmux_session
    with Pods(settings, "sweep.retry", only=names) as pods:
        answers = pods.call("sweep-retry", lambda n: {"run_ids": by_pod.get(n, []), "failed": failed,
                                                      "session": session})
    quiet_none = {n for n, o in answers.items() if failed and o.error is not None and o.code == 5}
    errors = {n: o.error.message for n, o in answers.items() if o.error is not None and n not in quiet_none}
    errors.update(pods.down)
    queued = sum(int((o.value or {}).get("queued") or 0) for o in answers.values() if o.error is None)
    return {"sweep_id": ledger["sweep_id"], "queued": queued, "errors": errors,
            "worst": max([o.code for n, o in answers.items() if n not in quiet_none] + [4 if pods.down else 0])}


def failures_text(data: Mapping[str, Any]) -> str:
    """sweep.add / sweep.retry on a fleet: a line for each pod that failed, once (its command's error, else why it
    was down), with the runs that may be queued there (a lost answer)."""
    maybe = data.get("maybe") or {}
    return "".join(f"\n  {n}: {why}" + "".join(f" [{rid}]" for rid, pod in maybe.items() if pod == n)
                   for n, why in {**data.get("down", {}), **data.get("errors", {})}.items())


def fleet_exit(data: Mapping[str, Any]) -> None:
    if data.get("worst"):
        raise WfopsError(f"{len({**data.get('errors', {}), **data.get('down', {})})} pod(s) failed", data["worst"])
