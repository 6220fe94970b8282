"""One sweep over a fleet, what is seen: sweep.status joins the pods' rows by the ledger (a silent pod's runs are
`unknown`, then `lost`), sweep.report's metrics of every pod, and sweep.wait, which waits on every pod's queue at
once and moves runs off a silent pod or from behind a busy one (wfops.sweeps.fleet_moves) on the way.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from wfops.agent import wire
from wfops.agent.states import LOST, PENDING, RUNNING, UNKNOWN
from wfops.errors import NotFoundError, env_seconds
from wfops.settings.load import Settings
from wfops.sweeps import fleet_copies
from wfops.sweeps.billing import fleet_cost
from wfops.sweeps.fleet_moves import rebalance_fleet, unstarted_pods
from wfops.sweeps.fleet_pods import Answer, Pods
from wfops.sweeps.ledger import (
    Ledger,
    LedgerBusy,
    LedgerDamaged,
    LedgerRun,
    LedgerUnwritable,
    ledger_lock,
    load_ledger,
    save_ledger,
)
from wfops.sweeps.plan import fleet_state, fold_nodes, need_on, node_run_id, totals

WAIT_ROUND_SECS = 3  # sweep.wait: each round waits on every pod's queue this long at most (then checks, moves)
GONE_SECS = 20  # sweep.wait moves the waiting runs of a pod silent this long (sweep.rebalance: at once)
GONE_ENV = "WFOPS_FLEET_GONE_SECS"  # overrides GONE_SECS (seconds > 0; the tests shorten it)
REOPEN_SECS = 5  # sweep.wait tries a silent pod again this often (its answer says what it ran meanwhile)
REBALANCE_EVERY_SECS = 10  # sweep.wait looks for runs stuck next to free slots at most this often
RECORD_WAIT_SECS = 1.0  # sweep.status waits this long for the ledger's lock to record what it saw, no longer


def status(settings: Settings, sweep_id: str = "", patterns: list[Any] | None = None, pods: Pods | None = None,
           wait_secs: int = 0) -> dict[str, Any]:
    """The joined status. `wait_secs` (sweep.wait): each pod answers when its queue ends or after that long
    (`sweep-wait`, woken by the queue's exit), so the end of the sweep is seen at once, not at the next poll."""
    ledger = load_ledger(settings, sweep_id)
    if pods is None:
        with Pods(settings, "sweep.status", only=list(ledger["pods"])) as own:
            return status(settings, sweep_id, patterns, own, wait_secs)
    asked = time.time()
    gone = fleet_copies.to_abandon(ledger, asked)  # sweep.add tokens whose answer was lost: settled by the pods

    def ask(names: list[str] | None = None) -> dict[str, Answer]:
        return pods.call(wire.SWEEP_STATUS, lambda n: {"sweep": ledger["pods"][n]["sweep_id"], "metric_patterns":
                                                    patterns or [], **_abandon(gone, n)}, names)

    if wait_secs:
        answers = pods.call("sweep-wait", lambda n: {"timeout": wait_secs, "patterns": patterns or [],
                                                     **_abandon(gone, n)})
        other = [n for n, o in answers.items() if o.error is None and  # its current sweep is another one
                 ((o.value or {}).get("sweep") or {}).get("sweep_id") != ledger["pods"][n]["sweep_id"]]
        if other:
            answers.update(ask(other))
    else:
        answers = ask()
    data = joined(ledger, answers, pods.down, asked)
    try:
        for rid, pod in _record(settings, ledger["sweep_id"], data).items():
            say_once(f"wfops: {rid} was not queued on {pod} (sweep.add sent it and had no answer; {pod} does not "
                     "have it): it left the ledger; sweep.add it again")
    except (LedgerUnwritable, LedgerDamaged, LedgerBusy) as exc:  # status is still what the pods said: shown,
        say_once(f"wfops: {exc.message}; last-seen states and duplicates were not recorded")  # with one line
    return data


def _abandon(tokens: Mapping[str, list[str]], pod: str) -> dict[str, Any]:
    return {"abandon": tokens[pod]} if tokens.get(pod) else {}


def _record(settings: Settings, sweep_id: str, data: dict[str, Any]) -> dict[str, str]:
    """Last-seen states and duplicates into the ledger (under its lock); the runs it dropped (never queued)."""
    dropped = {}
    with ledger_lock(settings, wait=RECORD_WAIT_SECS):  # never blocked by a sweep.add waiting for its pods
        fresh = load_ledger(settings, sweep_id)  # a rebalance may have moved runs meanwhile: keep them
        for run in fresh["runs"].values():  # a live sweep.add holds this lock: an open mark is a dead one's (kill -9)
            if run.get("sent") and "closed" not in run["sent"]:
                run["sent"]["closed"] = time.time()  # from now on a pod's answer without the run settles it
        for rid, pod in data["not_queued"].items():  # sweep.add's lost answers, resolved: never queued there
            sent = fresh["runs"][rid].get("sent") if rid in fresh["runs"] else None
            if sent is not None and sent["pod"] == pod:
                del fresh["runs"][rid]
                fresh["order"].remove(rid)
                dropped[rid] = pod
        _remember(fresh, [r for r in data["runs"] if r["run_id"] in fresh["runs"]
                          and r.get("pod") == "+".join(fresh["runs"][r["run_id"]]["pods"])])
        for rid, twice in data["duplicates"].items():  # a duplicate stays known when its pod is silent again
            if rid in fresh["runs"]:
                fresh["runs"][rid]["copies"] = twice["copies"]
        save_ledger(settings, fresh)
    return dropped


_said: set[str] = set()
_said_lock = threading.Lock()


def say_once(line: str) -> None:
    """A warning on stderr, once per command (sweep.wait's rounds, run.fetch's pods say it once)."""
    with _said_lock:
        if line in _said:
            return
        _said.add(line)
    print(line, file=sys.stderr, flush=True)


def joined(ledger: Ledger, answers: Mapping[str, Answer], down: Mapping[str, str], asked: float = 0.0
           ) -> dict[str, Any]:
    """One table: each run's row from the pod the ledger has it on (its nodes folded into one row)."""
    multi = [rid for rid, r in ledger["runs"].items() if len(r["pods"]) > 1]
    pod_rows = [dict(row, pod=name) for name, o in answers.items() if o.error is None
                for row in (o.value or {}).get("runs") or []]
    own, strays = fleet_copies.split_rows(ledger, pod_rows)  # a run's row is its ledger pod's; others are copies
    folded = fold_nodes(own, multi)
    twice = fleet_copies.duplicates(ledger, fleet_copies.copies(
        ledger, strays, datetime.now(timezone.utc).isoformat(timespec="seconds")))
    unreachable = {**down, **{n: o.error.message for n, o in answers.items() if o.error is not None}}
    unqueued = fleet_copies.not_queued(ledger, folded, {n: o.value or {} for n, o in answers.items()
                                                        if o.error is None}, asked)
    rows = [_row(rid, ledger["runs"][rid], folded.get(rid), unreachable, twice.get(rid)) for rid in ledger["order"]
            if rid not in unqueued]
    return {"sweep": {"sweep_id": ledger["sweep_id"], "state": fleet_state(rows), "fleet": list(ledger["pods"])},
            "runs": rows, "totals": totals(rows), "duplicates": twice, "not_queued": unqueued,
            "strays": fleet_copies.waiting_strays(strays),
            "pods": {n: {"reachable": n not in unreachable, "error": unreachable.get(n),
                         "queue": ((answers[n].value or {}).get("sweep") or {}).get("state")
                         if n in answers and answers[n].error is None else None} for n in ledger["pods"]},
            "problems": [f"pod {n} does not answer: {why}" for n, why in unreachable.items()],
            "cost": fleet_cost({n: (o.value or {}).get("cost") for n, o in answers.items() if o.error is None})}


def _row(rid: str, run: LedgerRun, row: dict[str, Any] | None, unreachable: Mapping[str, str],
         twice: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run's row, counted once; a run that also ran on another pod says so (`duplicate`, its note)."""
    out = _own_row(rid, run, row, unreachable)
    if twice:
        out["duplicate"] = twice["pods"]
        out["note"] = " ".join(filter(None, [str(out.get("note") or ""), twice["note"]]))
    return out


def _own_row(rid: str, run: LedgerRun, row: dict[str, Any] | None, unreachable: Mapping[str, str]) -> dict[str, Any]:
    where = "+".join(run["pods"])
    dead = [p for p in run["pods"] if p in unreachable]
    if run.get("lost") and (dead or row is None):  # a pod that answers again says how its run went
        return {"run_id": rid, "pod": where, "state": LOST, "note": run["lost"]}
    if dead:
        last = run.get("last")
        seen = f"; last seen {last['state']} at {last['at']}" if last else ""
        if run.get("sent"):
            seen = f"; {run['sent']['why']} (it may be queued there)"
        return {"run_id": rid, "pod": where, "state": UNKNOWN,
                "note": f"pod {dead[0]} does not answer{seen} (sweep.rebalance moves what has not started)"}
    if row is None:
        return {"run_id": rid, "pod": where, "state": UNKNOWN, "note": f"not in the sweep on {where}"}
    return dict(row, pod=where, run_id=rid)


def _remember(ledger: Ledger, rows: list[dict[str, Any]]) -> None:
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for row in rows:
        if row["state"] != UNKNOWN and row["run_id"] in ledger["runs"]:
            ledger["runs"][row["run_id"]]["last"] = {"state": row["state"], "at": at}
            ledger["runs"][row["run_id"]].pop("sent", None)  # its pod has it: sweep.add's lost answer resolved


def runs_on(settings: Settings, sweep_id: str, pod: str) -> list[str] | None:
    """The run dirs the ledger has on the fleet pod named `pod` (node K of a multi-node run is RUN.nodeK); None
    when there is no ledger of that sweep (everything the pod has is fetched)."""
    try:
        ledger = load_ledger(settings, sweep_id)
    except NotFoundError:  # pods of a fleet, but no fleet sweep: fetch what the pod has
        return None
    except LedgerDamaged as exc:  # the pods' own records instead of refusing on every pod
        say_once(f"wfops: {exc.message.split(';')[0]}: run.fetch takes the runs each pod's own sweep records "
                 "(a run that ran on two pods may come from either)")
        return None
    return [node_run_id(rid, rank) for rid, run in ledger["runs"].items()
            for rank, pod_name in enumerate(run["pods"]) if pod_name == pod]


def metrics(settings: Settings, patterns: list[Any]) -> dict[str, Any]:
    """Every pod's `sweep-metrics` at once; each run's row from the pod the ledger has it on (node 0's for a
    multi-node run). Pods that do not answer are listed in `down`."""
    ledger = load_ledger(settings)
    with Pods(settings, "sweep.report", only=list(ledger["pods"])) as pods:
        answers = pods.call("sweep-metrics", {"patterns": patterns})
    runs = []
    for name, o in answers.items():
        for row in (o.value or {}).get("runs") or [] if o.error is None else []:
            run = ledger["runs"].get(row["run_id"])
            if run is not None and run["pods"][0] == name:
                runs.append(dict(row, pod="+".join(run["pods"])))
    order = {rid: i for i, rid in enumerate(ledger["order"])}
    runs.sort(key=lambda r: order.get(r["run_id"], len(order)))
    down = {**pods.down, **{n: o.error.message for n, o in answers.items() if o.error is not None}}
    return {"sweep": {"sweep_id": ledger["sweep_id"], "state": fleet_state(runs)}, "runs": runs, "down": down,
            "cost": fleet_cost({n: (o.value or {}).get("cost") for n, o in answers.items() if o.error is None})}


def wait(settings: Settings, timeout: int | None, patterns: list[Any], every: float = 1.0,
         on_round: Callable[[dict[str, Any], Pods], bool] | None = None) -> dict[str, Any]:
    """Rounds of the joined status (each pod's answer comes when its queue ends, or after WAIT_ROUND_SECS; at
    least `every` seconds a round) until every run has ended, rebalancing on the way: once for a pod that has not
    answered for GONE_SECS (a short blip moves nothing: its runs would run twice if it came back), once for the
    runs of a pod that refused its share, at most every REBALANCE_EVERY_SECS while runs wait on one pod next
    to free slots on another, and when a silent pod answers again with moved runs still in its queue (they are
    withdrawn there: wfops.sweeps.fleet_copies). A silent pod is tried again every REOPEN_SECS.
    `on_round` (sweep.wait --recover): sees each round's status; True when it recovered a pod (the round is
    asked again)."""
    ledger = load_ledger(settings)
    deadline = time.monotonic() + timeout if timeout else None
    down_since: dict[str, float] = {}
    handled: set[str] = set()  # pods whose outage was rebalanced already
    dead_queues: set[str] = set()  # pods back after they died, their queue runner gone: rebalanced once
    unstarted_tried = False  # runs of a pod that refused its share: rebalanced once
    withdrew_at_end = False  # strays withdrawn once the runs had ended: one more round, then done
    last = tried = 0.0
    silence = gone_secs()
    with Pods(settings, "sweep.wait", only=list(ledger["pods"])) as pods:
        while True:
            begun = time.monotonic()
            if pods.down and begun - tried >= REOPEN_SECS:  # a silent pod may answer again (a partition ended)
                tried = begun
                pods.reopen()
            left = WAIT_ROUND_SECS if deadline is None else max(1, min(WAIT_ROUND_SECS, int(deadline - begun)))
            data = status(settings, ledger["sweep_id"], patterns, pods, wait_secs=left)
            if on_round is not None and on_round(data, pods):  # a managed sweep recovered a pod (tasks/managed.py)
                ledger = load_ledger(settings, ledger["sweep_id"])
                continue
            ledger = load_ledger(settings, ledger["sweep_id"])  # another terminal may have added or moved runs
            if data["sweep"]["state"] != RUNNING:
                if not data["strays"] or withdrew_at_end:
                    return data
                # moved runs a returned pod still queues: withdrawn, then one more round (its queue may have
                # started one meanwhile: that copy is a duplicate, and the wait must say so)
                withdrew_at_end = True
                rebalance_fleet(settings, ledger["sweep_id"])
                continue
            now = time.monotonic()
            if deadline is not None and now > deadline:
                return dict(data, wait_timed_out=True)
            gone = _gone(data, down_since, handled, now, silence)
            refused = not unstarted_tried and bool(unstarted_pods(ledger))
            unstarted_tried = unstarted_tried or refused
            stuck = now - last >= REBALANCE_EVERY_SECS and _stuck_next_to_free(ledger, data)
            back = bool(data["strays"]) and now - last >= REOPEN_SECS  # moved runs a returned pod still queues
            dead = {n for n, p in data["pods"].items() if p["queue"] == LOST} - dead_queues
            dead_queues |= dead
            if gone or refused or stuck or back or dead:
                last = now
                moved = rebalance_fleet(settings, ledger["sweep_id"])
                for m in moved["moves"]:
                    said = (f"moved {m['run_id']} from {m['from']} to {m['to']}" if m["moved"] else
                            f"could not move {m['run_id']} from {m['from']} to {m['to']}: {m['error']}")
                    print(f"wfops: {said} ({m['why']})", file=sys.stderr, flush=True)
                ledger = load_ledger(settings, ledger["sweep_id"])
            time.sleep(max(0.0, every - (time.monotonic() - begun)))  # queues that have ended answer at once


def gone_secs() -> float:
    """How long a pod must be silent before sweep.wait moves its runs: GONE_SECS, or $WFOPS_FLEET_GONE_SECS."""
    return env_seconds(GONE_ENV, GONE_SECS)


def _gone(data: dict[str, Any], down_since: dict[str, float], handled: set[str], now: float,
          silence: float = GONE_SECS) -> list[str]:
    """Pods silent for `silence` seconds whose outage has not been rebalanced yet (marked handled now)."""
    for name, info in data["pods"].items():
        if info["reachable"]:
            down_since.pop(name, None)
            handled.discard(name)
        else:
            down_since.setdefault(name, now)
    gone = [n for n, since in down_since.items() if now - since >= silence and n not in handled]
    handled.update(gone)
    return gone


def _stuck_next_to_free(ledger: Ledger, data: dict[str, Any]) -> bool:
    """From the status rows alone: a pod with runs waiting while another has slots nobody uses or waits for."""
    use: dict[str, int] = {n: 0 for n in ledger["pods"]}
    waiting: dict[str, int] = {n: 0 for n in ledger["pods"]}
    for row in data["runs"]:
        pod = row.get("pod")
        if pod not in use or row["run_id"] not in ledger["runs"]:  # a run sweep.add took back meanwhile
            continue
        need = need_on(str(ledger["runs"][row["run_id"]]["entry"].get("gpus")), int(ledger["pods"][pod]["slots"]))
        if row["state"] == RUNNING:
            use[pod] += need
        elif row["state"] == PENDING and not row.get("note"):
            waiting[pod] += need
    free = {n: int(p["slots"]) - use[n] - waiting[n] for n, p in ledger["pods"].items()
            if data["pods"][n]["reachable"]}
    blocked = [n for n in free if waiting[n] and use[n] + waiting[n] > int(ledger["pods"][n]["slots"])]
    return bool(blocked) and any(f > 0 for n, f in free.items() if n not in blocked)
