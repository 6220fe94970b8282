"""Resume from a checkpoint: on an attempt after the first (a retry of a failed, stalled or lost attempt, or a
sweep.retry of a run that did not end ok), the pod looks for RESUME_WHEN (a glob relative to the run's output dir,
e.g. `ckpt.pt`) at the attempt's launch. A match adds RESUME_ARGS (e.g. `init_from=resume`) to the run's command and
WFOPS_RESUME_FROM (the file) to its environment; the attempt's status says `resumed from <file>` (and the last step
of the run's metrics.jsonl, when it has one). No match: the attempt starts from scratch, and says so.

Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import glob
import os

from .metrics import METRICS_FILE, from_jsonl, read_text
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Optional

    from .wire import ExecBlock, Json

FROM_SCRATCH = "no checkpoint: from scratch"
ENV = "WFOPS_RESUME_FROM"  # the checkpoint's path, in the environment of a resumed attempt
TAIL_BYTES = 64 * 1024


def pattern_problem(pattern: str) -> str:
    """Why RESUME_WHEN cannot be used ("" when it can): a glob inside the output dir, never outside it."""
    parts = pattern.replace("\\", "/").split("/")
    if pattern.startswith("/") or ".." in parts or "\x00" in pattern or "\n" in pattern:
        return "RESUME_WHEN %r must be a glob relative to the run's output dir (no leading '/', no '..')" % pattern
    return ""


def checkpoint(out_dir: str, pattern: str) -> Optional[str]:
    """The newest regular file under `out_dir` that `pattern` matches, relative to `out_dir`; None when none does
    (or the pattern would leave the dir)."""
    if not pattern or pattern_problem(pattern):
        return None
    root = os.path.realpath(out_dir)
    found = []
    for path in glob.glob(os.path.join(glob.escape(out_dir), pattern)):
        real = os.path.realpath(path)
        if not real.startswith(root + os.sep) or not os.path.isfile(real):  # a link out of the dir is no checkpoint
            continue
        try:
            found.append((os.path.getmtime(real), path))
        except OSError:
            continue
    if not found:
        return None
    return os.path.relpath(max(found)[1], out_dir)


def last_step(out_dir: str) -> Optional[int]:
    """The step of the last record of the run's metrics.jsonl that has one (None: no metrics, no step)."""
    series = from_jsonl(read_text(os.path.join(out_dir, METRICS_FILE), TAIL_BYTES))
    steps = [points[-1][0] for points in series.data.values() if points]
    numbers = [s for s in steps if isinstance(s, (int, float))]
    return int(max(numbers)) if numbers else None


def decide(ex: ExecBlock, out_dir: str) -> Json:
    """What a later attempt of a run does: {"args": words to add, "file": the checkpoint or None, "note"}.
    Without RESUME_WHEN there is nothing to decide: {} (the attempt runs as the first did)."""
    pattern = ex.get("resume_when") or ""
    if not pattern:
        return {}
    why = pattern_problem(pattern)
    if why:
        return {"args": [], "file": None, "note": "%s; %s" % (why, FROM_SCRATCH)}
    found = checkpoint(out_dir, pattern)
    if found is None:
        return {"args": [], "file": None, "note": FROM_SCRATCH}
    step = last_step(out_dir)
    note = "resumed from %s" % found + (" (last step in metrics: %d)" % step if step is not None else "")
    return {"args": list(ex.get("resume_args") or []), "file": os.path.join(out_dir, found), "note": note,
            "step": step}
