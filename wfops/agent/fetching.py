"""What run.fetch sends: the files of the requested runs that the client lacks or has in another version.

The client sends, per run, what it has: {relative path: [size, mtime seconds]} (or [size, sha256] when it
asks for hashes). Every regular file of the run whose size differs, or whose mtime (or hash) differs, is
listed on stdout (paths relative to the outputs dir, NUL-separated, for `tar --null -T -`); symlinks and
other non-files are left out. On stderr: `@wfops-size N` (the bytes to send) and `@wfops-plan {json}`
(runs, files to send, files unchanged, files the client has that are gone here, runs replaced).

A run dir holds the generation it was made with (.wfops-generation: a rerun that replaced the run made a new
dir, and a new generation). The client sends the generation of each local copy it has (`generations`); a run
whose generation here is another one was replaced since that copy was fetched: every file of it is sent, its
generation file first (so that the client can move the old copy aside before anything of the new run lands),
and it is named in the plan's `replaced`. A run the client does not list there (run.fetch --merge-replaced) is
compared file by file, as any other.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys

from . import store, wire
from .registry import Refusal, command
from .states import EXIT_NOT_FOUND, EXIT_USAGE, GENERATION_FILE, SYNC_TMP_DIR
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Iterator, List, Optional, Set, Tuple

    from .states import Layout
    from .wire import Json

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SWEEP_ID = re.compile(r"^sweep-[0-9A-Za-z][0-9A-Za-z-]{0,70}$")  # sweep-<UTC time>[-suffix]: no '/', no '.'
GONE_SHOWN = 20  # names of files gone on the pod, at most, in the plan (the count is always there)
NOT_ASKED: Json = {}  # no generations to compare (never changed)


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name or "")) and ".." not in name


def sweep_runs(pod: Layout, sweep: str) -> List[Any]:
    """The run ids of a sweep's manifest (the latest when `sweep` is empty) that have a run dir."""
    if sweep and not _SWEEP_ID.match(sweep):
        raise Refusal(EXIT_USAGE, "invalid sweep id %r (sweep.list shows the ids)" % sweep)
    path = os.path.join(pod.manifests, sweep + ".json") if sweep else pod.latest_manifest
    plan = store.load_plan(path, required=("runs",))
    if not plan:
        raise Refusal(EXIT_NOT_FOUND, "no manifest of sweep %s on the pod (%s)" % (sweep, path) if sweep else
                      "no sweep manifest on the pod (start a sweep first, or fetch one run by id)")
    dirs = _dirs(pod.out)  # one listing, not a stat per run (1,000 runs)
    ids = [r["run_id"] for r in plan["runs"]
           if r.get("selected", True) and valid_name(r.get("run_id", "")) and r["run_id"] in dirs]
    if not ids:
        raise Refusal(EXIT_NOT_FOUND, "none of the runs of %s has a run directory yet" % (sweep or "the sweep"))
    return ids


def _dirs(out: str) -> Set[str]:
    """The names in `out` that are folders, or links to folders (as os.path.isdir sees them)."""
    try:
        with os.scandir(out) as it:
            return {e.name for e in it if e.is_dir()}  # follows links, as isdir: a linked run dir counts
    except OSError:
        return set()


def one_run(pod: Layout, run: str) -> List[Any]:
    if not valid_name(run):
        raise Refusal(EXIT_USAGE, "invalid run id %r" % run)
    if not os.path.isdir(pod.run_dir(run)):
        raise Refusal(EXIT_NOT_FOUND, "run %s is not in OPS_REMOTE_OUTPUTS_DIR (%s); see sweep.status" % (run, pod.out))
    return [run]


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def same(path: str, st: os.stat_result, mine: Any, by_hash: bool) -> bool:
    """Whether the client's [size, mtime|sha256] describes this file. The mtime in whole seconds rounded down (tar
    keeps -1.5 as -2; int() would make it -1, and the file would be sent again on every fetch)."""
    if not isinstance(mine, list) or len(mine) != 2 or mine[0] != st.st_size:
        return False
    if by_hash:
        try:
            return bool(mine[1] == sha256(path))
        except OSError:
            return False
    return bool(mine[1] == st.st_mtime_ns // 1000000000)  # whole seconds, floored (as tar keeps them), as index.py


def run_files(root: str, prefix: str = "", unreadable: Optional[List[str]] = None
              ) -> Iterator[Tuple[str, str, os.stat_result]]:
    """(relative path, full path, stat) of every regular file under `root`, in a stable order: a folder's files
    by name, then its folders by name (as os.walk top-down with sorted names; links are not followed). scandir:
    the kind of each entry comes with the listing, one lstat a file (1,000 runs: a third of os.walk's time).
    A folder that cannot be listed (but for one gone meanwhile) goes to `unreadable` as `prefix/`."""
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):  # gone meanwhile, or not a folder
        return
    except OSError:  # no permission to list it, an I/O error: its files cannot be sent, and the plan says so
        if unreadable is not None:
            unreadable.append(prefix or "./")
        return
    dirs = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if prefix or entry.name != SYNC_TMP_DIR:  # local_sync's rsync files in flight: not the run's, not sent
                dirs.append(entry)
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:  # gone meanwhile
            continue
        if stat.S_ISREG(st.st_mode):
            yield prefix + entry.name, entry.path, st
    for entry in dirs:
        yield from run_files(entry.path, prefix + entry.name + "/", unreadable)


def generation(run_dir: str) -> str:
    """The generation a run dir was made with ("" for a dir made before wfops wrote one)."""
    try:
        return store.read_text(os.path.join(run_dir, GENERATION_FILE)) or ""
    except ValueError:  # not text: no generation to compare
        return ""


def replaced(run_dir: str, mine: Json, generations: Json, rid: str, listed: bool = True) -> bool:
    """Whether the client's copy of `rid` (files `mine`, generation in `generations`) is of another run dir.
    `listed`: the run dir has a generation file (a regular file: fetch_plan knows from its listing, and does not
    try to read one that is not there)."""
    if not mine or rid not in generations or not listed:  # nothing to compare: the generation file is not read
        return False
    here = generation(run_dir)
    return bool(here) and str(generations[rid] or "") != here


def _generation_first(files: List[Any]) -> bool:
    """Put the run's generation file first (the client moves an old copy aside before anything else lands);
    whether there is one."""
    for i, f in enumerate(files):
        if f[0] == GENERATION_FILE:
            files.insert(0, files.pop(i))
            return True
    return False


def _under(rel: str, folders: List[str]) -> bool:
    """Whether `rel` lies in one of the run's folders that could not be listed (its files are not gone: unknown)."""
    return any(f == "./" or rel.startswith(f) for f in folders)


@command(wire.FETCH_PLAN)
def fetch_plan(pod: Layout, have: Json, run: str = "", all: bool = False, sweep: str = "", hash: bool = False,
               only: Optional[List[str]] = None, generations: Json = NOT_ASKED) -> str:
    """`only` (a fleet): of the sweep's runs, just these (the ones the client's ledger has on this pod)."""
    ids = sweep_runs(pod, sweep) if (all or sweep) else one_run(pod, run)
    if isinstance(only, list):
        ids = [rid for rid in ids if rid in set(only)]
    send: List[str] = []
    gone: List[str] = []
    renewed: List[str] = []
    unreadable: List[str] = []  # files that cannot be read and folders that cannot be listed: not sent, named
    size = unchanged = 0
    for rid in ids:
        mine = have.get(rid) or {}
        run_dir = pod.run_dir(rid)
        folders: List[str] = []
        files = list(run_files(run_dir, unreadable=folders))
        unreadable += [rid + "/" + (f if f != "./" else "") for f in folders]
        if replaced(run_dir, mine, generations, rid, _generation_first(files)):
            renewed.append(rid)
            mine = {}  # a new run: every file of it, none of the old copy's counts as gone
        for rel, full, st in files:
            if same(full, st, mine.get(rel), hash):
                unchanged += 1
            elif not os.access(full, os.R_OK):  # tar could not read it: named in the plan, not sent
                unreadable.append(rid + "/" + rel)
            else:
                send.append(rid + "/" + rel)
                size += st.st_size
        if mine:
            gone += sorted(rid + "/" + rel for rel in set(mine).difference([f[0] for f in files])
                           if not _under(rel, folders))
    plan = {"runs": ids, "files": len(send), "unchanged": unchanged, "gone": len(gone), "gone_names": gone[:GONE_SHOWN],
            "replaced": renewed, "unreadable": len(unreadable), "unreadable_names": unreadable[:GONE_SHOWN]}
    sys.stderr.write("@wfops-size %d\n@wfops-plan %s\n" % (size, json.dumps(plan, sort_keys=True)))
    sys.stderr.flush()
    return "".join(p + "\0" for p in send)
