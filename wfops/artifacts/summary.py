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

    def __init__(self, runs: list[str], files: int, wire_bytes: int, secs: float, plan: dict[str, Any],
                 aside: list[tuple[str, Path]], changed: bool = False) -> None:
        self.runs = runs  # the run folders here, as shown_folders shows them
        self.files = files  # new or changed files received
        self.unchanged = int(plan.get("unchanged") or 0)
        self.wire_bytes = wire_bytes  # the tar stream as it came over the connection
        self.secs = secs
        self.gone = int(plan.get("gone") or 0)
        self.gone_names: list[str] = list(plan.get("gone_names") or [])
        self.aside = aside
        self.unreadable = int(plan.get("unreadable") or 0)  # files (and folders, `name/`) the pod could not read
        self.unreadable_names: list[str] = list(plan.get("unreadable_names") or [])
        self.missed = max(0, int(plan.get("files") or 0) - files)  # listed, not sent: gone or unreadable by then
        self.changed = changed  # tar read a file that changed meanwhile: its copy here may be cut short


def _kinds(folder: Path) -> dict[str, os.DirEntry[str]]:
    """The entries of `folder` by name: one listing instead of a stat per run (1,000 runs)."""
    try:
        with os.scandir(folder) as it:
            return {e.name: e for e in it}
    except OSError:
        return {}


def shown_folders(dest: Path, names: list[str]) -> list[str]:
    """The runs `names` that are folders (or links to folders) in `dest` now, as the absolute, resolved paths
    Path.resolve() gives: `dest` resolved once and one listing of it (1,000 runs: ~1 ms; a Path, an is_dir and a
    resolve a run took ~8), a run folder that is a link resolved itself. Only entries of `dest` itself count (a
    name that leaves it, from a pod, is none)."""
    entries = _kinds(dest)
    base, shown = os.path.realpath(dest), []
    for name in names:
        entry = entries.get(name)
        if entry is not None and entry.is_dir():
            shown.append(os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(base, name))
    return shown


def aside_lines(aside: list[tuple[str, Path]], complete: bool = True) -> list[str]:
    """Where the old local copy of each replaced run went; not `complete`: the fetch stopped (an error, Ctrl-C,
    SIGTERM) after it moved the copy, and says so all the same, before its error line."""
    if not complete:
        return [f"wfops: {run} was replaced on the pod since it was fetched (a rerun): the old local copy is now "
                f"{where}; the fetch into a fresh {run}/ stopped before it was complete (fetch again for the rest)"
                for run, where in aside]
    return [f"wfops: {run} was replaced on the pod since it was fetched (a rerun): fetched into a fresh {run}/, the "
            f"old local copy is now {where}" for run, where in aside]


def report(f: Fetched) -> str:
    """The summary line (stderr), the runs replaced, the files kept here that the pod no longer has (names from the
    pod: control characters and line breaks shown as `\\xNN`, as all pod text), and what could not be sent whole
    (see `incomplete`)."""
    text = (f"wfops: fetched {len(f.runs)} run(s): {f.files} file(s) new or changed, {f.unchanged} unchanged, "
            f"{f.wire_bytes:,} bytes on the wire in {f.secs:.1f}s")
    for line in aside_lines(f.aside):
        text += "\n" + line
    if f.gone:
        text += (f"\nwfops: {f.gone} file(s) fetched earlier are no longer on the pod; kept here: "
                 + _names(f.gone_names, f.gone))
    if f.missed:
        text += (f"\nwfops: {f.missed} file(s) the pod listed were gone or unreadable by the time they were sent "
                 "(see the pod's lines above): not fetched")
    if f.changed:
        text += ("\nwfops: some file(s) changed on the pod while they were sent (a run still writing?): their copies "
                 "here may be cut short, or padded with zeros where a file shrank; the next fetch sends each again "
                 "once its size or mtime on the pod differs from the copy's")
    return text


def _names(names: list[str], count: int) -> str:
    """Names from the pod, each on one line as `visible` shows it (pure: the cached fast path has it already)."""
    from wfops.output import visible

    more = f" (and {count - len(names)} more)" if count > len(names) else ""
    return ", ".join(visible(name, one_line=True) for name in names) + more


def incomplete(f: Fetched) -> str:
    """The error of a fetch that left files on the pod it could not read ("" when none): they stay unfetched on every
    fetch until their permissions change, so it is not a success (exit 6, after the summary)."""
    if not f.unreadable:
        return ""
    return (f"{f.unreadable} file(s) or folder(s) of the run(s) cannot be read on the pod by its SSH user "
            f"(permissions), not fetched: {_names(f.unreadable_names, f.unreadable)}")
