"""What a run.fetch tells the user: the summary line, and the run folders it fetched into (resolved paths).

Light imports: the full fetch (wfops.artifacts.transfer) and the cached fast path of a repeated fetch (wfops.leanfetch)
both say it with these.
"""

from __future__ import annotations

import os
from pathlib import Path

from wfops.agent.wire import TYPE_CHECKING

if TYPE_CHECKING:  # typing is not imported at run time: the cached fast path (wfops.leanfetch) stays light
    from typing import Any


class Fetched:
    """What one fetch did: `plan` is the pod's `@wfops-plan` (its runs, unchanged and gone files); `aside`: the
    replaced runs and where their old local copy went."""

    def __init__(self, runs: list[Any], files: int, wire_bytes: int, secs: float, plan: dict[str, Any],
                 aside: list[tuple[str, Path]]) -> None:
        self.runs = runs  # the run folders here (Paths; the cached fast path has their shown paths, shown_folders)
        self.files = files  # new or changed files received
        self.unchanged = int(plan.get("unchanged") or 0)
        self.wire_bytes = wire_bytes  # the tar stream as it came over the connection
        self.secs = secs
        self.gone = int(plan.get("gone") or 0)
        self.gone_names: list[str] = list(plan.get("gone_names") or [])
        self.aside = aside


def _kinds(folder: Path) -> dict[str, os.DirEntry[str]]:
    """The entries of `folder` by name: one listing instead of a stat per run (1,000 runs)."""
    try:
        with os.scandir(folder) as it:
            return {e.name: e for e in it}
    except OSError:
        return {}


def existing_dirs(dest: Path, runs: list[Path]) -> list[Path]:
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


def shown_folders(dest: Path, names: list[str]) -> list[str]:
    """resolved(existing_dirs(dest, [dest / name ...])) with one listing and one realpath, no Path a run (1,000 runs:
    ~1 ms instead of ~8): the runs `names` that are folders (or links to folders) in `dest`, resolved."""
    entries = _kinds(dest)
    base, shown = os.path.realpath(dest), []
    for name in names:
        entry = entries.get(name)
        if entry is not None and entry.is_dir():
            shown.append(os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(base, name))
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
