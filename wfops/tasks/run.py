"""`run.fetch`: bring run directories home in one streamed transfer."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from invoke import Collection

from ..command import PodCommand
from ..errors import UsageError
from ..fetch import TarReceiver
from ..sweep_model import check_run_id
from ._base import settings_for, wftask


@wftask(positional=["run_id"], help={
    "run_id": "the run to fetch (a directory in OPS_REMOTE_OUTPUTS_DIR)",
    "all": "fetch every run of the latest sweep manifest that has a run directory",
})
def fetch(c, run_id=None, all=False, config=None):
    """Copy a run directory (or all of the sweep's) to LOCAL_ARTIFACTS_DIR/RUN_ID/, streamed in one transfer."""
    if bool(run_id) == bool(all):
        raise UsageError("give one RUN_ID, or --all")
    if run_id:
        bad = check_run_id(run_id)
        if bad:
            raise UsageError(bad)
    settings = settings_for(c, config)
    dest = Path(settings.values["LOCAL_ARTIFACTS_DIR"]).expanduser()
    t0 = time.time()
    with PodCommand("run.fetch", settings) as cmd:
        receiver = TarReceiver(dest, {run_id} if run_id else None)
        try:
            request = cmd.request("fetch-list", {"run": run_id or "", "all": bool(all)})
            cmd.exec("run_fetch.sh.j2", stdout_sink=receiver, meta=receiver.meta, request=request).check("run.fetch")
        except BaseException:  # errors, Ctrl-C and SIGTERM (the boundary raises it): nothing staged stays behind
            receiver.abort()
            raise
        placed = receiver.finish()
    secs = time.time() - t0
    for path in placed:
        print(path.resolve())
    print(f"wfops: fetched {len(placed)} run(s), {receiver.files} file(s), {receiver.received / 1e6:.1f} MB "
          f"in {secs:.1f}s", file=sys.stderr)


ns = Collection("run", fetch)
