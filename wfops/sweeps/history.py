"""The pods' history of a managed sweep as sweep.status shows it, from this machine's record of the sweep
(`LOCAL_ARTIFACTS_DIR/.fleet/<sweep>.recover.json`, written by wfops.sweeps.recover). Stdlib json only: the cached
fast path of the lean entry (wfops.leancache) shows it without the settings table."""

from __future__ import annotations

import json
import os

from wfops.agent.wire import TYPE_CHECKING

if TYPE_CHECKING:  # typing is not imported at run time (the cached fast path, wfops.leancache)
    from typing import Any

DIR = ".fleet"  # wfops.targets.replaced.DIR: beside the fleet ledgers
SUFFIX = ".recover.json"


def history_lines(artifacts_dir: str, sweep_id: str) -> list[str]:
    """What sweep.status adds below the table of a managed sweep: its pods' history, and which pod ran which
    attempt of each restarted run; [] when the sweep was never managed (or its record is unreadable)."""
    if not sweep_id:
        return []
    try:
        with open(os.path.join(os.path.expanduser(artifacts_dir), DIR, sweep_id + SUFFIX), encoding="utf-8") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict):
        return []
    lines = [f"{h.get('at')}  {h.get('line')}" for h in doc.get("history") or [] if isinstance(h, dict)]
    for rid, tries in sorted((doc.get("attempts") or {}).items()):
        if isinstance(tries, list):
            lines.append(f"{rid}: " + ", ".join(f"attempt {t.get('attempt')} {'queued on' if t.get('queued') else 'on'}"
                                               f" {t.get('pod')}" for t in tries if isinstance(t, dict)))
    return lines


def add_history(data: dict[str, Any], artifacts_dir: str) -> None:
    """sweep.status's answer with its managed sweep's history lines (`pod_history`), where it has any."""
    lines = history_lines(artifacts_dir, str((data.get("sweep") or {}).get("sweep_id") or ""))
    if lines:
        data["pod_history"] = lines
