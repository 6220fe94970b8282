"""One sweep over a fleet: each pod's agent runs its share; this machine keeps the ledger of who runs what.

sweep.start asks every pod for its free GPU slots (`fleet-facts`), spreads the runs (wfops.sweeps.plan), checks
that the pods of a multi-node run reach its rendezvous (`net-listen` on node 0, `net-probe` on the others), and
starts each pod's share under one sweep id. The ledger, `LOCAL_ARTIFACTS_DIR/.fleet/<sweep id>.json`, records
each run's pod, its queue entry and its last seen state: sweep.status joins the pods' rows by it, and
sweep.rebalance moves runs that have not started (from an unreachable pod, or stuck behind a busy one) with
`sweep-withdraw` on the pod they leave and `sweep-add` on the pod they join (the ledger itself: wfops.sweeps.ledger).
One
connection per pod per command.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Set
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from wfops import fanout
from wfops.agent import wire
from wfops.agent.states import LOST, PENDING, RUNNING, TERMINAL, UNKNOWN
from wfops.errors import ConflictError, ConnectError, NotFoundError, WfopsError
from wfops.settings.load import Settings
from wfops.sweeps.ledger import Ledger, LedgerRun, ledger_lock, load_ledger, save_ledger
from wfops.sweeps.model import exec_block
from wfops.sweeps.plan import (
    PodLoad,
    PodQueue,
    Want,
    fleet_state,
    fold_nodes,
    need_on,
    node_run_id,
    rebalance,
    shares,
    spread,
    totals,
)
from wfops.targets import resolve
from wfops.transport.command import PodCommand

if TYPE_CHECKING:  # the wire's TypedDicts exist for the type checker only (the pod agent never imports typing)
    from wfops.agent.wire import FleetFacts, Manifest, NodeInfo, NodePeer, QueueEntry, RunRow, Withdrawn

Answer = fanout.Outcome[resolve.Member, Any]  # one pod's answer to an agent command
WAIT_ROUND_SECS = 3  # sweep.wait: each round waits on every pod's queue this long at most (then checks, moves)
GONE_SECS = 20  # sweep.wait moves the waiting runs of a pod silent this long (sweep.rebalance: at once)
REBALANCE_EVERY_SECS = 10  # sweep.wait looks for runs stuck next to free slots at most this often
LISTEN_SECS = 10  # node 0 waits this long for the others to connect (a failed check waits it out)
PROBE_SECS = 5


# ------------------------------------------------------------------ sessions to the pods

class Pods:
    """One open PodCommand per pod (opened in parallel); pods that did not answer are in `down`."""

    def __init__(self, settings: Settings, command: str, only: list[str] | None = None) -> None:
        self.settings = settings
        self.members = [m for m in resolve.members(settings) if only is None or m.name in only]
        missing = sorted(set(only or ()) - {m.name for m in self.members})
        if missing:
            raise NotFoundError(f"the ledger names pod(s) the config does not: {', '.join(missing)} (put them back "
                                "in LIUM_TARGETS / OPS_HOSTS)")
        self.command = command
        self.cmds: dict[str, PodCommand] = {}
        self.down: dict[str, str] = {}

    def __enter__(self) -> Pods:
        def open_one(m: resolve.Member, log: fanout.Log) -> PodCommand:
            return PodCommand(self.command, self.settings, member=m).__enter__()

        for o in fanout.run_each(self.members, open_one):
            if o.error is not None:
                self.down[o.member.name] = o.error.message
            elif o.value is not None:
                self.cmds[o.member.name] = o.value
        return self

    def __exit__(self, *exc: object) -> None:
        for cmd in self.cmds.values():
            cmd.__exit__(None, None, None)

    def call(self, agent_command: str, args: Callable[[str], dict[str, Any]] | dict[str, Any],
             names: list[str] | None = None) -> dict[str, Answer]:
        """The agent command on each open pod (or on `names`) at once; a pod whose connection breaks moves to
        `down`."""
        live = [m for m in self.members if m.name in self.cmds and (names is None or m.name in names)]

        def one(m: resolve.Member, log: fanout.Log) -> dict[str, Any]:
            return self.cmds[m.name].call(agent_command, **(args(m.name) if callable(args) else args))

        out = {o.member.name: o for o in fanout.run_each(live, one)}
        for name, o in out.items():
            if isinstance(o.error, ConnectError):
                self.down[name] = o.error.message
                self.cmds.pop(name).__exit__(None, None, None)
        return out


def _check_all(outcomes: Mapping[str, Answer], what: str) -> dict[str, FleetFacts]:
    bad = [o for o in outcomes.values() if o.error is not None]
    if bad:
        first = bad[0]
        raise WfopsError(f"{what}: {first.member.name}: {first.error.message}", first.code)  # type: ignore[union-attr]
    return {name: o.value for name, o in outcomes.items() if o.value is not None}


def _facts(pods: Pods, settings: Settings, sweep_id: str = "") -> dict[str, Answer]:
    args: dict[str, object] = {"fake_gpus": settings.wf_fake_gpus, "cpu_only": settings.cpu_only}
    if sweep_id:
        args["sweep_id"] = sweep_id
    return pods.call(wire.FLEET_FACTS, {k: v for k, v in args.items() if v is not None})


# ------------------------------------------------------------------ sweep.start

def start(settings: Settings, plan: Manifest, csv_text: str, session: str) -> dict[str, Any]:
    """Spread `plan`'s queue over the fleet and start every pod's share; the ledger is written before the
    first pod starts (what was sent where), and again with what each pod answered."""
    with Pods(settings, "sweep.start") as pods:
        if pods.down:
            name, why = next(iter(pods.down.items()))
            raise ConnectError(f"sweep.start: pod {name} does not answer ({why}); nothing was started (bring it "
                               "back, or take it out of LIUM_TARGETS / OPS_HOSTS)")
        facts = _check_all(_facts(pods, settings), "sweep.start")
        running = [f"{n} ({f.get('sweep_id')})" for n, f in facts.items() if f.get("queue_state") == RUNNING]
        if running:
            raise ConflictError(f"a sweep is still running on {', '.join(running)}; nothing was started "
                                "(sweep.status, or sweep.stop)")
        loads = [PodLoad(n, int(facts[n].get("slots") or 0), int(facts[n].get("busy") or 0)) for n in pods.cmds]
        wants = [Want(e["run_id"], str(e["gpus"]), int(e.get("nodes") or 1)) for e in plan["queue"]]
        placed = spread([p for p in loads if p.name in pods.cmds], wants)
        entries = _node_entries(settings, plan, placed, pods)
        _check_reach(pods, entries)
        ledger = _new_ledger(plan, placed, entries, {n: facts[n]["slots"] for n in pods.cmds})
        save_ledger(settings, ledger, latest=True)
        answers = pods.call(wire.SWEEP_START, lambda n: {"manifest": _share(plan, entries, placed, n),
                                                      "csv_text": csv_text, "session": session})
    for name, o in answers.items():
        share = ledger["pods"][name]
        share["sweep_id"] = (o.value or {}).get("sweep_id") or plan["sweep_id"]
        share["started"], share["error"] = o.error is None, o.error.message if o.error else None
    save_ledger(settings, ledger)
    return {"sweep_id": plan["sweep_id"], "pods": ledger["pods"], "placed": placed,
            "errors": {n: o.error.message for n, o in answers.items() if o.error is not None},
            "worst": fanout.worst(list(answers.values()))}


def _new_ledger(plan: Manifest, placed: dict[str, list[str]], entries: dict[str, list[QueueEntry]],
                slots: dict[str, int]) -> Ledger:
    rows = {r["run_id"]: r for r in plan["runs"]}
    return {"sweep_id": plan["sweep_id"], "created_at": plan["created_at"], "wandb_group": plan.get("wandb_group"),
            "pods": {n: {"slots": s, "sweep_id": plan["sweep_id"]} for n, s in slots.items()},
            "order": list(placed),
            "runs": {rid: _ledger_run(where, entries[rid][0], rows.get(rid)) for rid, where in placed.items()}}


def _ledger_run(pods: list[str], entry: QueueEntry, row: RunRow | None) -> LedgerRun:
    """A run in the ledger: its pods (node 0 first), its queue entry (node 0's), its CSV row, its moves."""
    return {"pods": pods, "entry": entry, "row": row, "moves": []}


def _node_entries(settings: Settings, plan: Manifest, placed: dict[str, list[str]],
                  pods: Pods) -> dict[str, list[QueueEntry]]:
    """run_id -> its queue entry per node: one for a one-node run; node k of a multi-node run is RUN.nodeK
    with the rendezvous of node 0's pod (RDZV_HOST or the address wfops reaches it at, RDZV_PORT + k)."""
    out: dict[str, list[QueueEntry]] = {}
    k = 0
    by_id = {e["run_id"]: e for e in plan["queue"]}
    for rid, where in placed.items():
        entry = by_id[rid]
        if len(where) == 1:
            out[rid] = [entry]
            continue
        port = settings.rdzv_port + k
        k += 1
        own = settings.rdzv_host
        addrs = [_address(pods.cmds[n]) for n in where]
        host = own or addrs[0]
        nodes: list[NodePeer] = [{"rank": i, "pod": n, "addr": a}
                                 for i, (n, a) in enumerate(zip(where, addrs, strict=True))]
        out[rid] = []
        for i in range(len(where)):
            node: NodeInfo = {
                "rank": i, "nnodes": len(where), "endpoint": f"{host}:{port}", "rdzv_id": f"{plan['sweep_id']}-{rid}",
                "local_addr": (host if i == 0 else "") if own else addrs[i], "nodes": nodes,
                "join_timeout": settings.rdzv_join_secs}
            one = entry.copy()
            one["run_id"], one["node"] = node_run_id(rid, i), node
            out[rid].append(one)
    return out


def _address(cmd: PodCommand) -> str:
    target = cmd.target
    assert target is not None
    return target.host or "127.0.0.1"  # `local` in a fleet: this machine


def _share(plan: Manifest, entries: dict[str, list[QueueEntry]], placed: dict[str, list[str]], pod: str) -> Manifest:
    """The manifest one pod gets: its runs and queue entries only (node k of a multi-node run as RUN.nodeK)."""
    rows = {r["run_id"]: r for r in plan["runs"]}
    mine = [(rid, rank) for rid, rank in shares(placed).get(pod, [])]
    share = plan.copy()
    share["queue"] = [entries[rid][rank] for rid, rank in mine]
    share["runs"] = []
    for rid, rank in mine:
        row = rows[rid].copy()
        row["run_id"] = node_run_id(rid, rank)
        share["runs"].append(row)
    return share


def _check_reach(pods: Pods, entries: dict[str, list[QueueEntry]]) -> None:
    """Before anything starts: node 0's pod listens on each rendezvous port, the other nodes' pods connect."""
    hosting: dict[str, list[tuple[int, str, list[str]]]] = {}
    for nodes in entries.values():
        if len(nodes) > 1:
            first = nodes[0]["node"]
            host, port = first["endpoint"].rsplit(":", 1)
            hosting.setdefault(first["nodes"][0]["pod"], []).append(
                (int(port), host, [n["pod"] for n in first["nodes"][1:]]))
    for pod, ports in hosting.items():
        _listen_and_probe(pods, pod, ports)


def _listen_and_probe(pods: Pods, pod: str, ports: list[tuple[int, str, list[str]]]) -> None:
    cmd, ready = pods.cmds[pod], threading.Event()
    got: dict[str, Any] = {}
    expect = max(len(p[2]) for p in ports)

    def listen() -> None:
        try:
            request = cmd.request(wire.NET_LISTEN, {"ports": [p for p, _, _ in ports], "secs": LISTEN_SECS,
                                                 "expect": expect})
            got["answer"] = cmd.exec("agent.sh.j2", meta=lambda k, v: ready.set() if k == "listening" else None,
                                     request=request).json(cmd.command, cmd.redact)
        except WfopsError as exc:
            got["error"] = exc
        finally:
            ready.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    ready.wait(LISTEN_SECS + 30)
    if "error" in got:
        raise WfopsError(f"sweep.start: the rendezvous check on {pod} failed: {got['error'].message}; nothing was "
                         "started", got["error"].code)
    probers = sorted({n for _, _, names in ports for n in names})
    reached = pods.call("net-probe", lambda n: {"host": ports[0][1], "timeout": PROBE_SECS,
                                                 "ports": [p for p, _, names in ports if n in names]}, probers)
    listener.join(LISTEN_SECS + 30)
    bad = [f"{n} -> {ports[0][1]}:{port}: {ok}" for n, o in reached.items()
           for port, ok in ((o.value or {}).get("reached") or {}).items() if ok is not True]
    bad += [f"{n}: {o.error.message}" for n, o in reached.items() if o.error is not None]
    if bad:
        raise ConnectError(f"sweep.start: the pods of a multi-node run cannot reach its rendezvous on {pod} "
                           f"({'; '.join(bad)}); nothing was started. The pods must reach each other: set RDZV_HOST "
                           f"to an address of {pod} they can reach, and open RDZV_PORT and the ports after it")


# ------------------------------------------------------------------ sweep.status: the pods' rows joined

def status(settings: Settings, sweep_id: str = "", patterns: list[Any] | None = None, pods: Pods | None = None,
           wait_secs: int = 0) -> dict[str, Any]:
    """The joined status. `wait_secs` (sweep.wait): each pod answers when its queue ends or after that long
    (`sweep-wait`, woken by the queue's exit), so the end of the sweep is seen at once, not at the next poll."""
    ledger = load_ledger(settings, sweep_id)
    if pods is None:
        with Pods(settings, "sweep.status", only=list(ledger["pods"])) as own:
            return status(settings, sweep_id, patterns, own, wait_secs)
    def ask(names: list[str] | None = None) -> dict[str, Answer]:
        return pods.call(wire.SWEEP_STATUS, lambda n: {"sweep": ledger["pods"][n]["sweep_id"],
                                                    "metric_patterns": patterns or []}, names)

    if wait_secs:
        answers = pods.call("sweep-wait", {"timeout": wait_secs, "patterns": patterns or []})
        other = [n for n, o in answers.items() if o.error is None and  # its current sweep is another one
                 ((o.value or {}).get("sweep") or {}).get("sweep_id") != ledger["pods"][n]["sweep_id"]]
        if other:
            answers.update(ask(other))
    else:
        answers = ask()
    data = joined(ledger, answers, pods.down)
    with ledger_lock(settings):
        fresh = load_ledger(settings, ledger["sweep_id"])  # a rebalance may have moved runs meanwhile: keep them
        _remember(fresh, [r for r in data["runs"] if r["run_id"] in fresh["runs"]
                          and r.get("pod") == "+".join(fresh["runs"][r["run_id"]]["pods"])])
        save_ledger(settings, fresh)
    return data


def joined(ledger: Ledger, answers: Mapping[str, Answer], down: Mapping[str, str]) -> dict[str, Any]:
    """One table: each run's row from the pod the ledger has it on (its nodes folded into one row)."""
    multi = [rid for rid, r in ledger["runs"].items() if len(r["pods"]) > 1]
    pod_rows = [dict(row, pod=name) for name, o in answers.items() if o.error is None
                for row in (o.value or {}).get("runs") or []]
    folded = fold_nodes(pod_rows, multi)
    unreachable = {**down, **{n: o.error.message for n, o in answers.items() if o.error is not None}}
    rows = [_row(rid, ledger["runs"][rid], folded.get(rid), unreachable) for rid in ledger["order"]]
    return {"sweep": {"sweep_id": ledger["sweep_id"], "state": fleet_state(rows), "fleet": list(ledger["pods"])},
            "runs": rows, "totals": totals(rows),
            "pods": {n: {"reachable": n not in unreachable, "error": unreachable.get(n),
                         "queue": ((answers[n].value or {}).get("sweep") or {}).get("state")
                         if n in answers and answers[n].error is None else None} for n in ledger["pods"]},
            "problems": [f"pod {n} does not answer: {why}" for n, why in unreachable.items()]}


def _row(rid: str, run: LedgerRun, row: dict[str, Any] | None, unreachable: Mapping[str, str]) -> dict[str, Any]:
    where = "+".join(run["pods"])
    dead = [p for p in run["pods"] if p in unreachable]
    if run.get("lost") and (dead or row is None):  # a pod that answers again says how its run went
        return {"run_id": rid, "pod": where, "state": LOST, "note": run["lost"]}
    if dead:
        last = run.get("last")
        seen = f"; last seen {last['state']} at {last['at']}" if last else ""
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


# ------------------------------------------------------------------ sweep.rebalance

def rebalance_fleet(settings: Settings, sweep_id: str = "") -> dict[str, Any]:
    """Move runs that have not started: off unreachable pods (their runs seen running become lost, retried
    elsewhere when RETRY_ON has `lost` and RUN_RETRIES > 0), and from a pod whose queue is stuck to one with
    free slots; take back from a returned pod the runs that were moved off it."""
    with ledger_lock(settings):
        return _rebalance(settings, sweep_id)


def _rebalance(settings: Settings, sweep_id: str) -> dict[str, Any]:
    ledger = load_ledger(settings, sweep_id)
    with Pods(settings, "sweep.rebalance", only=list(ledger["pods"])) as pods:
        facts = {n: o.value for n, o in _facts(pods, settings, ledger["sweep_id"]).items() if o.value is not None}
        unstarted = _unstarted(ledger)  # pods that refused their share at sweep.start: their runs go elsewhere
        orphans, lost = _orphans(settings, ledger, {**unstarted, **pods.down})
        queues = _queues(ledger, facts)
        moves = rebalance([q for q in queues if q.name in pods.cmds and q.name not in unstarted], orphans)
        reclaimed = _reclaim(pods, ledger, facts)
        done = _apply(settings, pods, ledger, moves, set(unstarted))
    save_ledger(settings, ledger)
    return {"sweep_id": ledger["sweep_id"], "moves": done, "lost_runs": lost, "reclaimed": reclaimed,
            "down": dict(pods.down)}


def _unstarted(ledger: Ledger) -> dict[str, str]:
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
    done = []
    for m in going:
        o = answers.get(m.dst)
        ok = o is not None and o.error is None
        run = ledger["runs"][m.run_id]
        if ok:
            run["pods"] = [m.dst]
            run.pop("last", None)
            run["moves"].append({"from": m.src, "to": m.dst, "why": m.why,
                                 "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        done.append({"run_id": m.run_id, "from": m.src, "to": m.dst, "why": m.why, "moved": ok,
                     "error": o.error.message if o is not None and o.error is not None else None})
    return done


def _add_args(settings: Settings, ledger: Ledger, pod: str, ids: list[str]) -> dict[str, object]:
    """sweep-add's arguments for runs that move to `pod` (their rows and queue entries from the ledger)."""
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
            "exec_block": exec_block(settings), "sweep_id": ledger["pods"][pod]["sweep_id"]}


# ------------------------------------------------------------------ sweep.add and sweep.retry

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
        facts = _check_all(_facts(pods, settings, ledger["sweep_id"]), "sweep.add")
        loads = [PodLoad(n, int(f.get("slots") or 0), int(f.get("busy") or 0) + int(f.get("pending") or 0))
                 for n, f in facts.items()]
        placed = spread(loads, [Want(e["run_id"], str(e["gpus"])) for e in entries])
        by_id = {e["run_id"]: e for e in entries}
        row_of = {r["run_id"]: r for r in rows}
        for rid, where in placed.items():
            ledger["runs"][rid] = _ledger_run(where, by_id[rid], row_of[rid])
        targets = sorted({w[0] for w in placed.values()})
        answers = pods.call(wire.SWEEP_ADD, lambda n: _add_args(settings, ledger, n, [
            rid for rid, w in placed.items() if w[0] == n]), targets)
    failed = {n: o.error.message for n, o in answers.items() if o.error is not None}
    for rid, where in placed.items():
        if where[0] in failed or where[0] not in answers:
            del ledger["runs"][rid]
        else:
            ledger["order"].append(rid)
    save_ledger(settings, ledger)
    return {"sweep_id": ledger["sweep_id"], "placed": {r: w for r, w in placed.items() if r in ledger["runs"]},
            "errors": failed, "down": dict(pods.down), "worst": fanout.worst(list(answers.values()))}


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


# ------------------------------------------------------------------ run.fetch

def runs_on(settings: Settings, sweep_id: str, pod: str) -> list[str] | None:
    """The run dirs the ledger has on the fleet pod named `pod` (node K of a multi-node run is RUN.nodeK); None
    when there is no ledger of that sweep (everything the pod has is fetched)."""
    try:
        ledger = load_ledger(settings, sweep_id)
    except NotFoundError:  # pods of a fleet, but no fleet sweep: fetch what the pod has (a damaged ledger raises)
        return None
    return [node_run_id(rid, rank) for rid, run in ledger["runs"].items()
            for rank, pod_name in enumerate(run["pods"]) if pod_name == pod]


# ------------------------------------------------------------------ sweep.report

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
    return {"sweep": {"sweep_id": ledger["sweep_id"], "state": fleet_state(runs)}, "runs": runs, "down": down}


# ------------------------------------------------------------------ sweep.wait

def wait(settings: Settings, timeout: int | None, patterns: list[Any], every: float = 1.0) -> dict[str, Any]:
    """Rounds of the joined status (each pod's answer comes when its queue ends, or after WAIT_ROUND_SECS; at
    least `every` seconds a round) until every run has ended, rebalancing on the way: once for a pod that has not
    answered for GONE_SECS (a short blip moves nothing: its runs would run twice if it came back), once for the
    runs of a pod that refused its share, and at most every REBALANCE_EVERY_SECS while runs wait on one pod next
    to free slots on another."""
    ledger = load_ledger(settings)
    deadline = time.monotonic() + timeout if timeout else None
    down_since: dict[str, float] = {}
    handled: set[str] = set()  # pods whose outage was rebalanced already
    unstarted_tried = False  # runs of a pod that refused its share: rebalanced once
    last = 0.0
    with Pods(settings, "sweep.wait", only=list(ledger["pods"])) as pods:
        while True:
            begun = time.monotonic()
            left = WAIT_ROUND_SECS if deadline is None else max(1, min(WAIT_ROUND_SECS, int(deadline - begun)))
            data = status(settings, ledger["sweep_id"], patterns, pods, wait_secs=left)
            if data["sweep"]["state"] != RUNNING:
                return data
            now = time.monotonic()
            if deadline is not None and now > deadline:
                return dict(data, wait_timed_out=True)
            gone = _gone(data, down_since, handled, now)
            refused = not unstarted_tried and bool(_unstarted(ledger))
            unstarted_tried = unstarted_tried or refused
            stuck = now - last >= REBALANCE_EVERY_SECS and _stuck_next_to_free(ledger, data)
            if gone or refused or stuck:
                last = now
                moved = rebalance_fleet(settings, ledger["sweep_id"])
                for m in moved["moves"]:
                    print(f"wfops: moved {m['run_id']} from {m['from']} to {m['to']} ({m['why']})", file=sys.stderr,
                          flush=True)
                ledger = load_ledger(settings, ledger["sweep_id"])
            time.sleep(max(0.0, every - (time.monotonic() - begun)))  # queues that have ended answer at once


def _gone(data: dict[str, Any], down_since: dict[str, float], handled: set[str], now: float) -> list[str]:
    """Pods silent for GONE_SECS whose outage has not been rebalanced yet (marked handled now)."""
    for name, info in data["pods"].items():
        if info["reachable"]:
            down_since.pop(name, None)
            handled.discard(name)
        else:
            down_since.setdefault(name, now)
    gone = [n for n, since in down_since.items() if now - since >= GONE_SECS and n not in handled]
    handled.update(gone)
    return gone


def _stuck_next_to_free(ledger: Ledger, data: dict[str, Any]) -> bool:
    """From the status rows alone: a pod with runs waiting while another has slots nobody uses or waits for."""
    use: dict[str, int] = {n: 0 for n in ledger["pods"]}
    waiting: dict[str, int] = {n: 0 for n in ledger["pods"]}
    for row in data["runs"]:
        pod = row.get("pod")
        if pod not in use:
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
