"""`sweep.wait --recover --down-when-done` (docs/recovery.md): once a managed sweep has ended, fetch every run
(incremental, as `run.fetch --all`), then remove every pod this sweep rented (its record: wfops.sweeps.recover.Book);
a fetch that fails keeps the pods and says so. Split out of wfops.tasks.managed (its size)."""

from __future__ import annotations

from wfops.artifacts.transfer import fetch_runs, tell
from wfops.errors import LiumError, WfopsError
from wfops.fanout import Log, to_stderr
from wfops.settings.load import Settings
from wfops.sweeps import fleet_status
from wfops.sweeps.recover import Book
from wfops.targets import resolve
from wfops.targets.providers import lium


def down_when_done(settings: Settings, book: Book, log: Log = to_stderr) -> None:
    """After the sweep ended: fetch every run (incremental), then remove every pod this sweep rented; a fetch that
    fails keeps the pods and raises (non-zero exit)."""
    try:
        for m in resolve.pods(settings):
            only = fleet_status.runs_on(settings, "", m.name) if resolve.is_fleet(settings) else None
            tell(fetch_runs(settings, "", True, "", False, only, member=m, log=log), log)
    except WfopsError as exc:
        keep = ", ".join(book.renting) or "none rented by this sweep"
        raise WfopsError(f"--down-when-done: fetching the runs failed ({exc.message}); the pods stay ({keep}): fetch "
                         "with `inv run.fetch --all`, then remove them with pod.down", exc.code or 1) from None
    if not book.renting:
        log("wfops: --down-when-done: every run fetched; this sweep rented no pod, so none is removed")
        return
    cli = lium.cli("sweep.wait --down-when-done", settings)
    billing = []
    for pod_id in book.renting:
        if lium.listed(cli, pod_id) is None:
            continue
        failed = lium.remove(cli, settings, pod_id)
        line = (f"removed pod {pod_id}, rented by this sweep" if failed is None
                else f"could not remove pod {pod_id} ({failed}): remove it with `lium rm {pod_id} -y`")
        log(f"wfops: --down-when-done: {line}")
        book.note("", "removed" if failed is None else "kept", line, pod_id=pod_id)
        billing += [pod_id] if failed else []
    if billing:
        raise LiumError(f"--down-when-done: {len(billing)} pod(s) this sweep rented could not be removed and bill: "
                        "remove them with the `lium rm` lines above")


__all__ = ["down_when_done"]
