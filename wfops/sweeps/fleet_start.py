"""One sweep over a fleet, the start: sweep.start asks every pod for its free GPU slots (`fleet-facts`), spreads the
runs (wfops.sweeps.plan), checks that the pods of a multi-node run reach its rendezvous (`net-listen` on node 0,
`net-probe` on the others), starts each pod's share under one sweep id and writes the ledger
(`LOCAL_ARTIFACTS_DIR/.fleet/<sweep id>.json`, wfops.sweeps.ledger): each run's pod, queue entry, last seen state.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from wfops import fanout
from wfops.agent import wire
from wfops.agent.states import RUNNING
from wfops.errors import ConflictError, ConnectError, WfopsError
from wfops.settings.load import Settings
from wfops.sweeps.billing import fleet_billing
from wfops.sweeps.fleet_pods import Pods, check_all, facts_of
from wfops.sweeps.ledger import Ledger, LedgerRun, LedgerUnwritable, save_ledger
from wfops.sweeps.plan import PodLoad, Want, node_run_id, shares, spread
from wfops.targets import resolve
from wfops.transport.command import PodCommand

if TYPE_CHECKING:  # the wire's TypedDicts exist for the type checker only (the pod agent never imports typing)
    from wfops.agent.wire import Billing, Manifest, NodeInfo, NodePeer, QueueEntry, RunRow

LISTEN_SECS = 10  # node 0 waits this long for the others to connect (a failed check waits it out)
PROBE_SECS = 5


def start(settings: Settings, plan: Manifest, csv_text: str, session: str) -> dict[str, Any]:
    """Spread `plan`'s queue over the fleet and start every pod's share; the ledger is written before the
    first pod starts (what was sent where), and again with what each pod answered."""
    bills = fleet_billing(settings, resolve.members(settings))  # each pod's price and budget share, or nothing starts
    with Pods(settings, "sweep.start") as pods:
        if pods.down:
            name, why = next(iter(pods.down.items()))
            raise ConnectError(f"sweep.start: pod {name} does not answer ({why}); nothing was started (bring it "
                               "back, or take it out of LIUM_TARGETS / OPS_HOSTS)")
        facts = check_all(facts_of(pods, settings), "sweep.start")
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
        try:
            save_ledger(settings, ledger, latest=True)  # before the first pod starts: what is sent where
        except LedgerUnwritable as exc:
            raise LedgerUnwritable(f"{exc.message}; nothing was started") from None
        answers = pods.call(wire.SWEEP_START, lambda n: {"manifest": _billed(_share(plan, entries, placed, n),
                                                                             bills[n]),
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
            "runs": {rid: ledger_run(where, entries[rid][0], rows.get(rid)) for rid, where in placed.items()}}


def ledger_run(pods: list[str], entry: QueueEntry, row: RunRow | None) -> LedgerRun:
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


def _billed(share: Manifest, bill: Billing) -> Manifest:
    """A pod's share with its own billing block (its price, its part of the budget: wfops.sweeps.billing)."""
    share["billing"] = bill
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
