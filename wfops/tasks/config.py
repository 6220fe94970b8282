"""`config.show`: the effective configuration (secrets redacted) and the target it resolves to."""

from __future__ import annotations

from typing import Any, cast

import yaml as pyyaml
from invoke import Collection

from wfops.errors import WfopsError
from wfops.output import table, to_json
from wfops.targets import resolve
from wfops.tasks._base import JSON_HELP, settings_for, wftask


def _describe_target(settings: Any) -> dict[str, object]:
    try:
        return resolve.describe(settings)
    except WfopsError as exc:
        return {"error": exc.message}


@wftask(help={"json": JSON_HELP, "yaml": "print YAML instead of a table",
              "only_set": "show only the keys the file sets"})
def show(c: Any, json: bool = False, yaml: bool = False, only_set: bool = False, config: str | None = None) -> None:
    """Print the effective config (secrets redacted) and which target it resolves to."""
    settings = settings_for(c, config)
    values = settings.redacted_values()
    keys = [k for k in values if not only_set or settings.sources[k] != "default"]
    target = _describe_target(settings)
    data: dict[str, Any] = {
        "config_file": str(settings.path),
        "target": target,
        "values": {k: values[k] for k in keys},
        "sources": {k: settings.sources[k] for k in keys},
    }
    if json:
        print(to_json(data))
    elif yaml:
        print(pyyaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")
    else:
        notes = "".join(f"; {n}" for n in cast("list[str]", target.get("notes") or []))  # e.g. a Lium fallback
        target_line = target.get("error") or f"{target['label']} ({target['kind']}, from {target['from']}{notes})"
        print(f"config file: {data['config_file']}\ntarget:      {target_line}\n")
        print(table(("key", "value", "source"), [(k, values[k], settings.sources[k]) for k in keys]))


ns = Collection("config", show)
