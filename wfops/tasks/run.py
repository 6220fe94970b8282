"""`run.fetch`: bring run directories home, only what changed, in one streamed transfer."""

from __future__ import annotations

from typing import Any

from invoke import Collection

from wfops.artifacts.transfer import check_request, fetch_runs, report
from wfops.fanout import Log, to_stderr
from wfops.settings.load import Settings
from wfops.sweeps import fleet_status
from wfops.targets import resolve
from wfops.targets.resolve import Member
from wfops.tasks._base import PodWork, on_pods, settings_for, wftask


def fetch_from(settings: Settings, member: Member, run_id: str = "", all: bool = False, sweep: str = "",
               hash: bool = False, log: Log = to_stderr, merge_replaced: bool = False) -> dict:
    """Bring runs from one pod to LOCAL_ARTIFACTS_DIR: {"runs": [local folders]}; the summary goes to `log`.
    On a fleet (no WF_POD) each pod sends the runs the fleet ledger has on it: no stale copy of a moved run."""
    only = fleet_status.runs_on(settings, sweep, member.name) if resolve.is_fleet(settings) and (all or sweep) else None
    fetched = fetch_runs(settings, run_id, all, sweep, hash, only, member=member, log=log,
                         merge_replaced=merge_replaced)
    log(report(fetched))
    return {"runs": [str(path.resolve()) for path in fetched.runs]}


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
    on_pods(settings_for(c, config), False, PodWork(
        lambda s, m, log: fetch_from(s, m, run_id or "", bool(all), sweep or "", bool(hash), log,
                                     bool(merge_replaced)),
        lambda data: "\n".join(data["runs"])))


ns = Collection("run", fetch)

from wfops.tasks.results import logs  # noqa: E402 - run.logs

ns.add_task(logs)
