"""`run.fetch`: bring run directories home, only what changed, in one streamed transfer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from invoke import Collection

from wfops.artifacts.transfer import check_request, fetch_runs, refuse_incomplete, tell
from wfops.errors import NotFoundError
from wfops.fanout import Log, to_stderr
from wfops.settings.load import Settings
from wfops.sweeps import fleet_fetch, fleet_pods, fleet_status
from wfops.sweeps.ledger import Ledger, LedgerDamaged, load_ledger
from wfops.targets import resolve
from wfops.targets.resolve import Member
from wfops.tasks._base import PodWork, on_pods, settings_for, wftask


def fetch_from(settings: Settings, member: Member, run_id: str = "", all: bool = False, sweep: str = "",
               hash: bool = False, log: Log = to_stderr, merge_replaced: bool = False,
               share: fleet_fetch.Share | None = None) -> dict:
    """Bring runs from one pod to LOCAL_ARTIFACTS_DIR: {"runs": [local folders]}; the summary goes to `log`.
    On a fleet (no WF_POD) each pod sends the runs the fleet ledger has on it: no stale copy of a moved run;
    with no usable ledger, `share` (wfops.sweeps.fleet_fetch) says which copies are this pod's to fetch."""
    if share is not None and share.error is not None:
        raise share.error
    if share is not None and share.skip:  # one run, not on this pod
        return {"runs": []}
    runs: list[str] = []
    if share is None or share.mine or not (share.dups or share.skip):
        only = share.mine if share is not None else (fleet_status.runs_on(settings, sweep, member.name)
                                                     if resolve.is_fleet(settings) and (all or sweep) else None)
        fetched = fetch_runs(settings, run_id, all, sweep, hash, only, member=member, log=log,
                             merge_replaced=merge_replaced)
        tell(fetched, log)
        runs = list(fetched.runs)
    if share is not None and share.dups:  # copies of runs that ran on two pods: never into the winner's folder
        aside = Path(settings.local_artifacts_dir).expanduser() / fleet_fetch.DUPLICATES_DIR / fleet_fetch.pod_dir_name(
            member.name)
        dups = fetch_runs(replace(settings, local_artifacts_dir=str(aside)), run_id, all, sweep, hash, share.dups,
                          member=member, log=log, merge_replaced=merge_replaced)
        refuse_incomplete(dups)
        log(f"wfops: {', '.join(share.dups)} also ran on another pod; the copy from {member.name} is a duplicate, "
            f"kept apart in {aside}")
        runs += dups.runs
    return {"runs": runs}


def _shares(settings: Settings, run_id: str, all: bool, sweep: str) -> dict[str, fleet_fetch.Share] | None:
    """A fleet's fetch of one run, or of a sweep with no usable ledger: each pod's share (wfops.sweeps.fleet_fetch);
    None when the ledger says which runs each pod sends (or one pod is fetched from)."""
    if not resolve.is_fleet(settings):
        return None
    if run_id:
        try:
            ledger: Ledger | None = load_ledger(settings)
        except (NotFoundError, LedgerDamaged):
            ledger = None
        return fleet_fetch.one_run(settings, run_id, ledger)
    try:
        pods = load_ledger(settings, sweep)["pods"]
    except LedgerDamaged as exc:
        fleet_status.say_once(f"wfops: {exc.message.split(';')[0]}: run.fetch takes the runs each pod's own sweep "
                              f"records (a run that ran on two pods: one copy in RUN/, each other in "
                              f"{fleet_fetch.DUPLICATES_DIR}/POD/RUN/)")
    except NotFoundError:
        pass
    else:
        fleet_pods.known(settings, pods)  # each pod sends the ledger's runs on it: one removed from the config is said
        return None
    return fleet_fetch.shares(settings, sweep)


@wftask(positional=["run_id"], help={
    "run_id": "the run to fetch (a directory in OPS_REMOTE_OUTPUTS_DIR)",
    "all": "fetch every run of the latest sweep that has a run directory",
    "sweep": "fetch the runs of this sweep (an id as sweep.status shows it) instead of the latest",
    "hash": "compare files by size and sha256 instead of size and mtime (reads every file on both sides)",
    "merge_replaced": "a run replaced on the pod since it was fetched (a rerun) goes into its old local folder, "
                      "mixing both runs' files (default: that folder moves aside to RUN_ID.replaced-<time>)",
})
def fetch(c: Any, run_id: str | None = None, all: bool = False, sweep: str | None = None, hash: bool = False,
          merge_replaced: bool = False, config: str | None = None) -> None:
    """Bring run directories home (only new or changed files).

    Bring runs to LOCAL_ARTIFACTS_DIR/RUN_ID/: only new or changed files move; an interrupted fetch resumes.
    A run replaced on the pod since it was fetched starts in a fresh local folder; the old one moves aside."""
    check_request(run_id or "", bool(all), sweep or "")
    settings = settings_for(c, config)
    shares = _shares(settings, run_id or "", bool(all), sweep or "")
    if shares is not None:  # a run whose winning copy changed since the last fetch: its folders swap, not pile up
        for line in fleet_fetch.settle_copies(Path(settings.local_artifacts_dir).expanduser(), shares):
            fleet_status.say_once(line)
    on_pods(settings, False, PodWork(
        lambda s, m, log: fetch_from(s, m, run_id or "", bool(all), sweep or "", bool(hash), log,
                                     bool(merge_replaced), None if shares is None else shares.get(m.name)),
        lambda data: "\n".join(data["runs"])))


ns = Collection("run", fetch)

from wfops.tasks.results import logs  # noqa: E402 - run.logs

ns.add_task(logs)
