"""What this machine has of the runs it fetched: the index run.fetch sends (the pod compares it with its files).

{run_id: {relative path: [size, mtime seconds]}}, or [size, sha256] with `run.fetch --hash`; regular files only,
links and other kinds left out (the pod lists regular files only too, wfops/agent/fetching.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from wfops.agent.states import GENERATION_FILE

READ_SIZE = 1024 * 1024
FileEntry = list[int | str]  # [size, mtime seconds] or [size, sha256]: as the pod compares


def local_index(dest_root: Path, runs: list[str] | None, by_hash: bool) -> dict[str, dict[str, FileEntry]]:
    """What this machine has: {run_id: {relative path: [size, mtime seconds | sha256]}} for `runs` (None: every
    run directory in dest_root). Regular files only (os.scandir: one stat a file, thousands of runs in ms)."""
    root = str(dest_root)
    if runs is None:
        try:
            with os.scandir(root) as it:
                runs = [e.name for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
        except FileNotFoundError:  # not made yet (any other OSError: the caller's, plan_request)
            runs = []
    have: dict[str, dict[str, FileEntry]] = {}
    for run in runs:
        files: dict[str, FileEntry] = {}
        _index_dir(os.path.join(root, run), "", files, by_hash)
        have[run] = files
    return have


def _index_dir(path: str, prefix: str, files: dict[str, FileEntry], by_hash: bool) -> None:
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _index_dir(entry.path, prefix + entry.name + "/", files, by_hash)
        elif entry.is_file(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            files[prefix + entry.name] = [st.st_size, _sha256(entry.path) if by_hash else _seconds(st)]


def _seconds(st: os.stat_result) -> int:
    """The mtime in whole seconds rounded down, as the pod counts them (wfops/agent/fetching.py `same`) and as tar
    keeps them: a file from before 1970 (-1.5) is -2 on both sides, never -1 here and -2 there."""
    return st.st_mtime_ns // 1_000_000_000


def _sha256(path: str) -> str:
    import hashlib  # only for --hash: a fetch by size and mtime does not import it

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(READ_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def local_generations(dest: Path, have: dict[str, dict[str, FileEntry]]) -> dict[str, str]:
    """The generation of each local copy that has files ("" for one without): the pod compares them with its own."""
    return {run: (dest / run / GENERATION_FILE).read_text(errors="replace").strip()
            if GENERATION_FILE in files else "" for run, files in have.items() if files}


def plan_request(dest: Path, run_id: str, all_runs: bool, sweep: str, by_hash: bool,
                 merge_replaced: bool) -> dict[str, object]:
    """The data of the pod's `fetch-plan` request (wfops/agent/fetching.py): what this machine has of the runs asked
    for, and the generation of each copy (none with --merge-replaced: every run compared file by file)."""
    refuse_unusable(dest)
    refuse_linked_runs(dest, run_id)
    try:
        have = local_index(dest, [run_id] if run_id else None, by_hash)
    except OSError as exc:  # a folder this user may not list (root passes os.access): the same one line
        raise unusable(dest, f"cannot be read ({exc.strerror or exc})") from None
    return {"have": have, "run": run_id, "all": bool(all_runs or sweep), "sweep": sweep, "hash": by_hash,
            "generations": {} if merge_replaced else local_generations(dest, have)}


def refuse_unusable(dest: Path) -> None:
    """LOCAL_ARTIFACTS_DIR is a folder this user may list and write in, or one that can be made (the nearest folder
    that exists above it is writable), before anything is asked or made: ConfigError (exit 2), one line."""
    if os.path.lexists(dest) and not os.path.isdir(dest):  # a file, a dead link, a loop: nothing can land there
        raise unusable(dest, "is not a folder: move it away, or set LOCAL_ARTIFACTS_DIR to a folder")
    if os.path.isdir(dest):
        if not os.access(dest, os.R_OK | os.W_OK | os.X_OK):
            raise unusable(dest, "is not a folder you may list and write in")
        return
    above = dest.parent
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    if not os.path.isdir(above):
        raise unusable(dest, f"cannot be made: {above} is not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise unusable(dest, f"cannot be made: {above} is not a folder you may write in")


def unusable(dest: Path, why: str) -> Exception:
    """The one line for a LOCAL_ARTIFACTS_DIR that cannot hold a fetch (ConfigError, exit 2)."""
    from wfops.errors import ConfigError
    from wfops.output import visible

    return ConfigError(f"LOCAL_ARTIFACTS_DIR {visible(str(dest), one_line=True)} {why}; nothing was fetched")


def refuse_linked_runs(dest: Path, run_id: str) -> None:
    """`run.fetch RUN_ID` whose folder here is a symbolic link (to a folder) is refused before anything is asked or
    written: wfops does not write through links. ConfigError (exit 2), one line naming it. (--all and --sweep: the
    sweep's runs are the pod's to say; a link among them is refused where its first file would land, fetch._place,
    and a link that is none of them, `latest -> r5`, is left alone.)"""
    if not run_id or not (os.path.islink(dest / run_id) and os.path.isdir(dest / run_id)):
        return
    from wfops.errors import ConfigError

    raise ConfigError(linked_run(dest / run_id) + "; nothing was fetched")


def linked_run(folder: Path) -> str:
    """The words for a run folder here that is a symbolic link."""
    from wfops.output import visible

    return (f"run folder {visible(str(folder), one_line=True)} is a symbolic link (to a folder): run.fetch does not "
            "write through links; replace the link with the folder itself (mv), or move it out of "
            "LOCAL_ARTIFACTS_DIR")
