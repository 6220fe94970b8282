"""run.fetch: what to ask the pod for, the one exec that streams it, and what to tell the user.

One connection (the warm keeper's, or this command's own), one exec: the request carries this machine's index
of the runs (wfops.artifacts.index.local_index), the pod answers with a tar of what differs (wfops/agent/fetching.py),
and the extractor puts each file in place as it completes (wfops.artifacts.fetch.TarReceiver).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wfops.agent.states import GENERATION_FILE
from wfops.artifacts.fetch import TarReceiver
from wfops.artifacts.index import local_index
from wfops.errors import UsageError
from wfops.settings.load import Settings
from wfops.targets.resolve import Member
from wfops.transport.command import PodCommand
from wfops.transport.session import LineSink, stderr_line
from wfops.transport.shell import is_pod_name

SWEEP_ID = re.compile(r"sweep-[0-9A-Za-z][0-9A-Za-z-]{0,70}")  # sweep-<UTC time>[-suffix]: no '/', no '.'


@dataclass
class Fetched:
    runs: list[Path]
    files: int  # new or changed files received
    unchanged: int
    wire_bytes: int  # the tar stream as it came over the connection
    secs: float
    gone: int = 0
    gone_names: list[str] = field(default_factory=list)
    aside: list[tuple[str, Path]] = field(default_factory=list)  # replaced runs: where their old local copy went


def check_request(run_id: str, all_runs: bool, sweep: str) -> None:
    """One RUN_ID, or --all (the latest sweep), or --sweep ID (with or without --all); UsageError otherwise."""
    if run_id and (all_runs or sweep):
        raise UsageError("give one RUN_ID, or --all / --sweep ID, not both")
    if not (run_id or all_runs or sweep):
        raise UsageError("give one RUN_ID, or --all (the latest sweep), or --sweep ID")
    if run_id and not is_pod_name(run_id):
        raise UsageError(f"run id {run_id!r} is not valid: use letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit, no '..'")
    if sweep and not SWEEP_ID.fullmatch(sweep):
        raise UsageError(f"sweep id {sweep!r} is not valid: expected sweep-<letters, digits or '-'>, as sweep.status "
                         "shows it")


def local_generations(dest: Path, have: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The generation of each local copy that has files ("" for one without): the pod compares them with its own."""
    return {run: (dest / run / GENERATION_FILE).read_text(errors="replace").strip()
            if GENERATION_FILE in files else "" for run, files in have.items() if files}


def fetch_runs(settings: Settings, run_id: str = "", all_runs: bool = False, sweep: str = "",
               by_hash: bool = False, only: list[str] | None = None, member: Member | None = None,
               log: LineSink = stderr_line, merge_replaced: bool = False, command: PodCommand | None = None) -> Fetched:
    """`member`: the pod to fetch from (default: the config's one target); `log`: where its progress lines go;
    `merge_replaced`: a run replaced on the pod since its local copy was fetched is fetched into that copy
    (mixing both) instead of a fresh folder; `command`: one with its session open already (wfops.lean)."""
    check_request(run_id, all_runs, sweep)
    dest = Path(settings.local_artifacts_dir).expanduser()
    t0 = time.time()
    with command or PodCommand("run.fetch", settings, member=member, log=log) as cmd:
        have = local_index(dest, [run_id] if run_id else None, by_hash)
        receiver = TarReceiver(dest, {run_id} if run_id else None, merge_replaced=merge_replaced)
        try:
            ask = {"have": have, "run": run_id, "all": bool(all_runs or sweep), "sweep": sweep, "hash": by_hash,
                   "generations": {} if merge_replaced else local_generations(dest, have)}
            request = cmd.request("fetch-plan", ask if only is None else dict(ask, only=only))
            cmd.exec("run_fetch.sh.j2", stdout_sink=receiver, meta=receiver.meta, request=request).check("run.fetch")
        except BaseException:  # errors, Ctrl-C and SIGTERM (the boundary raises it): nothing in flight stays behind
            receiver.abort()
            raise
        runs = receiver.finish()
    plan = receiver.plan
    return Fetched(_existing_dirs(dest, runs), receiver.files, int(plan.get("unchanged") or 0),
                   receiver.received, time.time() - t0, int(plan.get("gone") or 0), list(plan.get("gone_names") or []),
                   receiver.aside)


def _kinds(folder: Path) -> dict[str, os.DirEntry[str]]:
    """The entries of `folder` by name: one listing instead of a stat per run (1,000 runs)."""
    try:
        with os.scandir(folder) as it:
            return {e.name: e for e in it}
    except OSError:
        return {}


def _existing_dirs(dest: Path, runs: list[Path]) -> list[Path]:
    """Those of `runs` that are folders (or links to folders) now, as Path.is_dir() says."""
    entries, folder = _kinds(dest), str(dest)
    found = []
    for run in runs:
        head, name = os.path.split(str(run))
        if run.is_dir() if head != folder else name in entries and entries[name].is_dir():
            found.append(run)
    return found


def resolved(runs: list[Path]) -> list[str]:
    """The absolute, resolved paths of fetched run dirs, as Path.resolve() gives them: the folder resolved once
    (1,000 runs: one realpath instead of 1,000), a run dir that is a link resolved itself."""
    if not runs:
        return []
    parent = runs[0].parent
    base, folder = str(parent.resolve()), str(parent)
    links = {name for name, e in _kinds(parent).items() if e.is_symlink()}
    shown = []
    for run in runs:
        head, name = os.path.split(str(run))
        shown.append(str(run.resolve()) if head != folder or name in links else os.path.join(base, name))
    return shown


def report(f: Fetched) -> str:
    """The summary line (stderr), and the files kept here that the pod no longer has."""
    text = (f"wfops: fetched {len(f.runs)} run(s): {f.files} file(s) new or changed, {f.unchanged} unchanged, "
            f"{f.wire_bytes:,} bytes on the wire in {f.secs:.1f}s")
    for run, where in f.aside:
        text += (f"\nwfops: {run} was replaced on the pod since it was fetched (a rerun): fetched into a fresh "
                 f"{run}/, the old local copy is now {where}")
    if f.gone:
        more = f" (and {f.gone - len(f.gone_names)} more)" if f.gone > len(f.gone_names) else ""
        text += (f"\nwfops: {f.gone} file(s) fetched earlier are no longer on the pod; kept here: "
                 + ", ".join(f.gone_names) + more)
    return text
