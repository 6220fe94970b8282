"""One sweep over a fleet, the copies of a run. A run the ledger moved off a silent pod may run where it was too:
a pod cut off (a partition) is alive, and its queue goes on. What the pods answer is split into each run's row
(from the pod the ledger has it on) and strays (the same run id on another pod): a stray that has not started is
taken back out of its pod's queue (sweep.rebalance's reclaim; sweep.wait does it as soon as the pod answers);
one that started is a duplicate, kept in the ledger (`copies`) and shown: `ran on A and B`, the GPU time the
duplicate took, and which copy run.fetch takes (the ledger's: the pod the run was moved to). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from wfops.agent import addtokens
from wfops.agent.states import CANCELLED, FAILED, LOST, PENDING, RUNNING, SUCCESS, TIMED_OUT
from wfops.sweeps.ledger import Ledger, LedgerCopy
from wfops.sweeps.plan import base_run_id

EXECUTED = (RUNNING, SUCCESS, FAILED, TIMED_OUT, LOST)  # a row in one of these states ran (or runs) on its pod


def split_rows(ledger: Ledger, pod_rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                                list[dict[str, Any]]]:
    """(rows of the pods the ledger has each run on, strays: rows of a one-node run of the ledger from another
    pod). Rows of runs the ledger does not know are left to the join (it shows the ledger's runs only)."""
    multi = [rid for rid, r in ledger["runs"].items() if len(r["pods"]) > 1]
    own, strays = [], []
    for row in pod_rows:
        run = ledger["runs"].get(base_run_id(str(row["run_id"]), multi))
        if run is None or len(run["pods"]) > 1 or row.get("pod") in run["pods"]:
            own.append(dict(row))
        else:
            strays.append(dict(row))
    return own, strays


def executed(row: Mapping[str, Any]) -> bool:
    """Whether a row's run started on its pod (a run cancelled before it started did not)."""
    return row.get("state") in EXECUTED or (row.get("state") == CANCELLED and bool(row.get("duration_secs")))


def copies(ledger: Ledger, strays: Iterable[Mapping[str, Any]], at: str) -> dict[str, dict[str, LedgerCopy]]:
    """run_id -> {pod: its copy there} for every run that also ran on a pod the ledger does not have it on:
    the copies the ledger recorded, updated by the strays the pods answer now."""
    out = {rid: dict(run.get("copies") or {}) for rid, run in ledger["runs"].items() if run.get("copies")}
    for row in strays:
        if executed(row):
            secs = row.get("duration_secs")
            out.setdefault(str(row["run_id"]), {})[str(row["pod"])] = {
                "state": str(row["state"]), "secs": float(secs) if isinstance(secs, (int, float)) else None, "at": at}
    return out


def waiting_strays(strays: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """pod -> the run ids it still has queued (not started) that the ledger has elsewhere: to be withdrawn."""
    out: dict[str, list[str]] = {}
    for row in strays:
        if row.get("state") == PENDING:
            out.setdefault(str(row["pod"]), []).append(str(row["run_id"]))
    return out


def duplicate_note(rid: str, pods: list[str], seen: Mapping[str, LedgerCopy]) -> str:
    """`ran on A and B`: where, the GPU time the other copies took, and which copy is the run's."""
    spent = [c["secs"] for c in seen.values() if c.get("secs")]
    wasted = f"{sum(s for s in spent if s):.0f}s of GPU time wasted" if spent else "GPU time wasted"
    return (f"{rid} ran on {' and '.join([*seen, pods[0]])}: the copy on {', '.join(seen)} is a duplicate "
            f"({wasted}); the run is {pods[0]}'s (run.fetch takes that copy)")


def duplicates(ledger: Ledger, seen: Mapping[str, Mapping[str, LedgerCopy]]) -> dict[str, dict[str, Any]]:
    """What sweep.status / sweep.wait --json say of each run that ran more than once."""
    out = {}
    for rid, by_pod in seen.items():
        run = ledger["runs"].get(rid)
        if run is None or not by_pod:
            continue
        out[rid] = {"pods": [*by_pod, *run["pods"]], "fetched_from": run["pods"][0],
                    "copies": dict(by_pod), "note": duplicate_note(rid, run["pods"], by_pod)}
    return out


def not_queued(ledger: Ledger, rows: Mapping[str, Any], answered: Mapping[str, Mapping[str, Any]], asked: float
               ) -> dict[str, str]:
    """run_id -> pod for each run sweep.add sent to a pod without an answer (`sent`) that the pod, answering now
    (`answered`: pod -> its sweep-status answer), does not have and will never queue: it leaves the ledger. One
    the pod has is resolved the other way. Only an answer asked (at `asked`, time.time()) after sweep.add stopped
    waiting counts. With the request's token, the pod's word on it decides (`adds`: failed, or abandoned before
    the add arrived: wfops.agent.addtokens); a mark without one (an older ledger) is settled by a pod whose
    command lock is free (`busy` false)."""
    out = {}
    for rid, run in ledger["runs"].items():
        sent = run.get("sent")
        answer = answered.get(sent["pod"]) if sent else None
        if sent is None or answer is None or rid in rows or sent.get("closed", asked + 1) > asked:
            continue
        token = sent.get("token")
        if (((answer.get("adds") or {}).get(token) in addtokens.FINAL) if token else not answer.get("busy")):
            out[rid] = sent["pod"]
    return out


def to_abandon(ledger: Ledger, asked: float) -> dict[str, list[str]]:
    """pod -> the tokens of sweep.add requests to it whose client stopped waiting before `asked` and whose runs
    the pod has not been seen with: sweep-status is asked to settle them (wfops.agent.addtokens.abandon)."""
    out: dict[str, list[str]] = {}
    for run in ledger["runs"].values():
        sent = run.get("sent")
        if sent and sent.get("token") and sent.get("closed", asked + 1) <= asked:
            tokens = out.setdefault(sent["pod"], [])
            if sent["token"] not in tokens:
                tokens.append(sent["token"])
    return out
