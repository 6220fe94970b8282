"""What a run's summary says beyond how it ended: the files it wrote into the shared checkout (where nothing
fetches them and the next run overwrites them), and what to set when it failed starting torch.distributed on
a CPU pod.

The checkout is listed (path -> mtime and size) before the run starts and after it ends, bounded; files new
or changed in between are the run's, as far as can be told (a run beside it on the same pod may have written
them). Not listed: .git, virtual envs, caches, wandb/, symlinks (a data link), and the run's own output
dirs when they lie inside the checkout (RUN_OUT_LOCAL_ROOT's default does).
"""

from __future__ import annotations

import os
import re

from . import store
from .states import FAILED, SUMMARY_FILE
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

    from .wire import Json

    Listing = Dict[str, Tuple[int, int]]

MAX_FILES = 20000  # a checkout with more files is not compared (the listing would cost the run's start)
NAMED = 10  # files named in the summary (the count says how many there were)
SKIP_DIRS = frozenset({".git", ".venv", "venv", ".env", "env", "__pycache__", ".mypy_cache", ".pytest_cache",
                       ".ruff_cache", "node_modules", ".ipynb_checkpoints", "wandb", ".cache"})
DIST_INIT_RE = re.compile(r"Distributed package doesn't have NCCL built in|ProcessGroupNCCL is only supported with "
                          r"GPUs|NCCL is not available|Torch not compiled with CUDA enabled")
CPU_HINT = ("on this CPU pod the script started torch.distributed with NCCL (torchrun sets RANK/WORLD_SIZE): set "
            "TRAIN_LAUNCHER=python (one plain process) or TRAIN_LAUNCHER=auto with TRAIN_NPROC empty, or make the "
            "script use the gloo backend without a GPU")


def listing(root: str, skip: List[str]) -> Optional[Listing]:
    """path (relative to root) -> (mtime_ns, size) of every regular file under root; None when there are more
    than MAX_FILES or root cannot be read."""
    out: Listing = {}
    skipped = {os.path.realpath(p) for p in skip if p}
    try:
        for here, dirs, files in os.walk(root, onerror=None):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and os.path.realpath(os.path.join(here, d)) not in skipped]
            for name in files:
                path = os.path.join(here, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not os.path.islink(path):
                    out[os.path.relpath(path, root)] = (st.st_mtime_ns, st.st_size)
            if len(out) > MAX_FILES:
                return None
    except OSError:
        return None
    return out


def written(before: Optional[Listing], after: Optional[Listing]) -> List[str]:
    """Files new or changed between two listings, sorted."""
    if before is None or after is None:
        return []
    return sorted(p for p, sig in after.items() if before.get(p) != sig)


class Watch:
    """The checkout of one run: listed at its start, compared at its end (spec["checkout"]: root, skip)."""

    def __init__(self, spec: Optional[Json]) -> None:
        self.root = (spec or {}).get("root") or ""
        self.skip = list((spec or {}).get("skip") or [])
        self.before = listing(self.root, self.skip) if self.root else None

    def fields(self) -> Json:
        """The status fields of what the run wrote into the checkout (none when it wrote nothing)."""
        if not self.root or self.before is None:
            return {}
        files = written(self.before, listing(self.root, self.skip))
        return {"checkout_writes": files[:NAMED], "checkout_writes_count": len(files)} if files else {}


def hint(final: Json, log_tail: str) -> str:
    """What to set, for a run that failed in torch.distributed's start on a CPU pod ("" otherwise)."""
    if final.get("state") != FAILED or not final.get("cpu_target") or final.get("launcher") != "torchrun":
        return ""
    return CPU_HINT if DIST_INIT_RE.search(log_tail) else ""


def into_summary(run_dir: str, final: Json, log_tail: str) -> None:
    """Add the checkout's writes and the CPU hint to the run's summary.json (nothing when there is neither)."""
    extra: Json = {k: final[k] for k in ("checkout_writes", "checkout_writes_count") if final.get(k)}
    why = hint(final, log_tail)
    if why:
        extra["hint"] = why
    if extra:
        store.update_json(os.path.join(run_dir, SUMMARY_FILE), extra)


def status_note(summ: Json) -> str:
    """The words sweep.status adds to a run's why column from its summary."""
    parts = []
    if summ.get("hint"):
        parts.append(str(summ["hint"]))
    files = summ.get("checkout_writes") or []
    if files:
        count = int(summ.get("checkout_writes_count") or len(files))
        more = " and %d more" % (count - len(files)) if count > len(files) else ""
        parts.append("wrote into the shared checkout: %s%s (give it a path in {out_dir})" % (", ".join(files), more))
    return "; ".join(parts)
