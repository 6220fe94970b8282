"""run.fetch: what to ask the pod for, the one exec that streams it, and what to tell the user.

One connection (the warm keeper's, or this command's own), one exec: the request carries this machine's index
of the runs (wfops.artifacts.index.local_index), the pod answers with a tar of what differs (wfops/agent/fetching.py),
and the extractor puts each file in place as it completes (wfops.artifacts.fetch.TarReceiver).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from wfops.agent import wire
from wfops.artifacts.fetch import TarReceiver
from wfops.artifacts.index import plan_request
from wfops.artifacts.summary import Fetched, aside_lines, incomplete, report, shown_folders
from wfops.errors import RemoteError, UsageError
from wfops.settings.load import Settings
from wfops.targets.resolve import Member
from wfops.transport.command import PodCommand
from wfops.transport.session import LineSink, stderr_line
from wfops.transport.shell import is_pod_name

SWEEP_ID = re.compile(r"sweep-[0-9A-Za-z][0-9A-Za-z-]{0,70}")  # sweep-<UTC time>[-suffix]: no '/', no '.'


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
        ask = plan_request(dest, run_id, all_runs, sweep, by_hash, merge_replaced)
        receiver = TarReceiver(dest, {run_id} if run_id else None, merge_replaced=merge_replaced)
        try:
            try:
                request = cmd.request(wire.FETCH_PLAN, ask if only is None else dict(ask, only=only))
                done = cmd.exec("run_fetch.sh.j2", stdout_sink=receiver, meta=receiver.meta, request=request)
                done.check("run.fetch")
            except BaseException:  # errors, Ctrl-C and SIGTERM (the boundary raises it): nothing in flight stays behind
                receiver.abort()
                raise
            receiver.finish()
        except BaseException:  # a copy moved aside before it stopped: where it went, before the error line
            for line in aside_lines(receiver.aside, complete=False):
                log(line)
            raise
    plan = receiver.plan
    runs = shown_folders(dest, [str(run) for run in plan.get("runs") or []])
    return Fetched(runs, receiver.files, receiver.received, time.time() - t0, plan, receiver.aside, receiver.changed)


def tell(fetched: Fetched, log: LineSink = stderr_line) -> None:
    """Say what a fetch did (the summary, wfops.artifacts.summary.report); then a fetch that left files on the pod
    it could not read is the command's error (exit 6): they are not here, and the next fetch will not bring them."""
    log(report(fetched))
    refuse_incomplete(fetched)


def refuse_incomplete(fetched: Fetched) -> None:
    """A fetch that left files on the pod it could not read is the command's error (exit 6)."""
    problem = incomplete(fetched)
    if problem:
        raise RemoteError(problem)
