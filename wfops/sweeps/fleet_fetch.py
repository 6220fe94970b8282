"""run.fetch on a fleet with no usable ledger (damaged or deleted): each pod's own sweep says which runs it has;
a run that ran on two pods (a partition) is fetched once into LOCAL_ARTIFACTS_DIR/RUN/ from the copy that wins,
and each other copy into LOCAL_ARTIFACTS_DIR/_duplicates/<pod>/RUN/: two copies' files never mix in one folder.
The copy that wins: one that ended `success`, then one that ended, then the pod first in the config's order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wfops.agent import wire
from wfops.agent.states import GENERATION_FILE, SUCCESS, TERMINAL
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


SOURCES = ".sources.json"  # LOCAL_ARTIFACTS_DIR/_duplicates/.sources.json: run -> the pod whose copy RUN/ holds


def settle_copies(dest: Path, shares: Mapping[str, Share]) -> list[str]:
    """Before the fetch: each run's local copies laid out as the copies that win now (one folder per pod and
    run: the winner's in RUN/, each other's in _duplicates/<pod>/RUN/). When the winner changed since the last
    fetch (another copy ended `success`), RUN/ — the old winner's copy — replaces _duplicates/<old>/RUN/, and the
    new winner's copy fetched earlier as a duplicate becomes RUN/ (fetched on from there): nothing piles up. The
    lines say what moved."""
    try:
        return _settle(dest, shares)
    except OSError as exc:  # this machine's folders (read-only, full): one line, before anything is fetched
        raise WfopsError(f"run.fetch: cannot lay out the local copies in {dest} ({exc.strerror or exc}: "
                         f"{exc.filename or ''}); nothing was fetched", 1) from None


def _settle(dest: Path, shares: Mapping[str, Share]) -> list[str]:
    record = _sources(dest)
    said = []
    for pod, share in shares.items():
        for rid in share.mine:
            seen = record.get(rid) or {}
            was = seen.get("pod") if seen.get("generation", "") in ("", _generation(dest / rid)) else None
            was = was or _guess_source(dest, rid, pod, shares)  # no record, or RUN/ replaced since (another fetch)
            if was and was != pod:
                said += _swap(dest, rid, was, pod)
            record[rid] = {"pod": pod, "generation": _generation(dest / rid)}  # "" until RUN/ is fetched
    _save_sources(dest, record)
    return said


def _generation(run_dir: Path) -> str:
    """Which run of that id a local copy holds (the pod wrote it with the run dir), "" for none."""
    try:
        return (run_dir / GENERATION_FILE).read_text(errors="replace").strip()
    except OSError:
        return ""


def _guess_source(dest: Path, rid: str, winner: str, shares: Mapping[str, Share]) -> str:
    """The pod whose copy RUN/ holds when no fetch recorded it (an older wfops): the one pod with a copy of the run
    that has no folder apart, when the winner's copy has one (it was a duplicate then); else "" (left as it is)."""
    apart = dest / DUPLICATES_DIR
    if not ((dest / rid).is_dir() and (apart / pod_dir_name(winner) / rid).is_dir()):
        return ""
    others = [p for p, s in shares.items()
              if p != winner and rid in s.dups and not (apart / pod_dir_name(p) / rid).is_dir()]
    return others[0] if len(others) == 1 else ""


def _swap(dest: Path, rid: str, was: str, now: str) -> list[str]:
    apart = dest / DUPLICATES_DIR
    run, old, new = dest / rid, apart / pod_dir_name(was) / rid, apart / pod_dir_name(now) / rid
    moved = []
    if run.is_dir():
        if old.exists():
            shutil.rmtree(old)  # an older copy from the same pod: RUN/ is the newer one
        old.parent.mkdir(parents=True, exist_ok=True)
        run.rename(old)
        moved.append(f"its copy from {was} moved from {run} to {old}")
    if new.is_dir() and not run.exists():
        new.rename(run)
        moved.append(f"its copy from {now} moved from {new} to {run}")
    if not moved:
        return []
    return [f"wfops: {rid}: the copy from {now} is the one run.fetch takes now (it ended better); "
            + "; ".join(moved)]


def _sources(dest: Path) -> dict[str, dict[str, str]]:
    """run -> {"pod": whose copy RUN/ holds, "generation": RUN/'s then}; {} when unreadable (then guessed)."""
    try:
        doc = json.loads((dest / DUPLICATES_DIR / SOURCES).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: {"pod": v["pod"], "generation": str(v.get("generation") or "")} for k, v in doc.items()
            if isinstance(v, dict) and isinstance(v.get("pod"), str)}


def _save_sources(dest: Path, record: dict[str, dict[str, str]]) -> None:
    if not record:
        return
    path = dest / DUPLICATES_DIR / SOURCES
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SOURCES}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)
