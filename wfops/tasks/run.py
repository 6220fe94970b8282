"""`run.fetch`: bring run directories home, only what changed, in one streamed transfer."""

from __future__ import annotations

import sys

from invoke import Collection

from wfops.artifacts.transfer import check_request, fetch_runs, report
from wfops.sweeps import fleet as fleet_sweep
from wfops.tasks._base import on_fleet, settings_for, wftask


@wftask(positional=["run_id"], help={
    "run_id": "the run to fetch (a directory in OPS_REMOTE_OUTPUTS_DIR)",
    "all": "fetch every run of the latest sweep that has a run directory",
    "sweep": "fetch the runs of this sweep (an id as sweep.status shows it) instead of the latest",
    "hash": "compare files by size and sha256 instead of size and mtime (reads every file on both sides)",
}, fleet=True)
def fetch(c, run_id=None, all=False, sweep=None, hash=False, config=None):
    """Bring runs to LOCAL_ARTIFACTS_DIR/RUN_ID/: only new or changed files move; an interrupted fetch resumes."""
    check_request(run_id or "", bool(all), sweep or "")
    settings = settings_for(c, config)
    only = None
    if on_fleet() and (all or sweep):  # each pod sends the runs the ledger has on it: no stale copy of a moved run
        only = fleet_sweep.runs_on(settings, sweep or "")
    fetched = fetch_runs(settings, run_id or "", bool(all), sweep or "", bool(hash), only)
    for path in fetched.runs:
        print(path.resolve())
    print(report(fetched), file=sys.stderr)


ns = Collection("run", fetch)

from wfops.tasks.results import logs  # noqa: E402 - run.logs

ns.add_task(logs)
