"""Which Lium pod a config's name reaches after a managed sweep replaced it (`sweep.wait --recover`).

LIUM_TARGET / LIUM_TARGETS name pods; when a managed sweep rents a replacement for a lost pod, the config still
names the old one. Rather than rewrite the user's config, the sweep records the replacement here, on this machine:
`LOCAL_ARTIFACTS_DIR/.fleet/replaced.json` maps the config's name (the member, as WF_POD and the `pod` column
name it) to the pod id now behind it; the lium provider (wfops.targets.providers.lium) resolves that name to that
id, so every later command (sweep.status, run.fetch, pod.status, pod.down) reaches the replacement. Setting
LIUM_TARGET to the new id (the sweep prints the line) makes the mapping unused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from wfops.settings.load import Settings

FILE = "replaced.json"
DIR = ".fleet"  # beside the fleet ledgers (wfops.sweeps.ledger.LEDGER_DIR)


def _path(settings: Settings) -> Path:
    return Path(settings.local_artifacts_dir).expanduser() / DIR / FILE


def load(settings: Settings) -> dict[str, str]:
    """name -> pod id; {} when nothing was replaced (a damaged file counts as nothing: the config's own names)."""
    try:
        doc = json.loads(_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): str(v) for k, v in doc.items() if isinstance(v, str) and v}


def current(settings: Settings, name: str) -> str:
    """The pod id behind the config's `name` now: a replacement's id, else `name` itself."""
    return load(settings).get(name.strip(), name)


def record(settings: Settings, name: str, pod_id: str) -> None:
    """`name` reaches pod `pod_id` from now on (written whole: a temp file renamed into place)."""
    path = _path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = dict(load(settings), **{name.strip(): pod_id})
    tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
