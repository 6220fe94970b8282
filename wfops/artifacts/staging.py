"""The staging folders of run.fetch: where a file in flight lives until it is complete (wfops.artifacts.fetch).

Each fetch holds an flock on its own staging folder (its extractor inherits it); a folder whose lock can be taken
belongs to a fetch that is gone (killed outright), and the next fetch removes it. Light imports: the cached fast
path of a repeated fetch (wfops.leanfetch) sweeps them too, without the extractor's machinery.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

STAGING_PREFIX = ".incoming-"


def _lock(path: Path, wait: bool) -> int | None:
    """An flock on the directory itself (an open fd); None when another process holds it and `wait` is False."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_same_dir(path: Path, fd: int) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def claim_staging(dest_root: Path) -> tuple[Path, int]:
    """A new staging folder in `dest_root` and the fd that holds its lock. A folder swept away by another fetch
    between its mkdir and our lock (it looked abandoned) is made again under a new name."""
    while True:
        path = dest_root / f"{STAGING_PREFIX}{os.getpid()}-{time.time_ns()}"
        path.mkdir()
        try:
            fd = _lock(path, wait=True)
        except FileNotFoundError:
            continue
        except OSError:  # a filesystem without flock: no lock (and no sweeping either: every folder looks in use)
            return path, os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        if fd is not None and _is_same_dir(path, fd):
            return path, fd
        if fd is not None:
            os.close(fd)


def remove_tree(path: Path) -> None:
    """rmtree, errors ignored; an empty folder is one rmdir (no shutil: it imports bz2, lzma, zlib, ~8 ms)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:  # not empty
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def remove_abandoned_staging(dest_root: Path) -> list[Path]:
    """Remove the staging folders of fetches that are gone (their lock is free); returns them."""
    removed = []
    for path in sorted(dest_root.glob(STAGING_PREFIX + "*")):
        try:
            fd = _lock(path, wait=False)
        except OSError:  # not a folder, or gone already
            continue
        if fd is None:  # a fetch that is still running
            continue
        try:
            remove_tree(path)
            removed.append(path)
        finally:
            os.close(fd)
    return removed
