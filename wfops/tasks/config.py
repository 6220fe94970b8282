"""`config.show`: the effective configuration (secrets redacted) and the target it resolves to; `config.init`:
a workflow.env with every key and its default, where the user is."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import yaml as pyyaml
from invoke import Collection

from wfops import hints
from wfops.errors import WfopsError
from wfops.output import table, to_json
from wfops.settings.example import example_text
from wfops.settings.keys import KEYS_BY_NAME
from wfops.settings.secrets import secret_by_shape
from wfops.targets import resolve
from wfops.tasks._base import JSON_HELP, settings_for, wftask, write_new_file


def _describe_target(settings: Any) -> dict[str, object]:
    try:
        return resolve.describe(settings)
    except WfopsError as exc:
        return {"error": exc.message}


@wftask(help={"json": JSON_HELP, "yaml": "print YAML instead of a table",
              "only_set": "show only the keys the file sets"})
def show(c: Any, json: bool = False, yaml: bool = False, only_set: bool = False, config: str | None = None) -> None:
    """Print the effective config and the target it names.

    Print the effective config (secrets redacted) and which target it resolves to."""
    settings = settings_for(c, config, local=True)
    values = settings.redacted_values()
    keys = [k for k in values if not only_set or settings.sources[k] != "default"]
    target = _describe_target(settings)
    data: dict[str, Any] = {
        "config_file": str(settings.path) if settings.path else None,
        "target": target,
        "values": {k: values[k] for k in keys},
        "sources": {k: settings.sources[k] for k in keys},
        "unknown": [k for k in keys if k not in KEYS_BY_NAME and k not in settings.extra_env_keys],
    }
    if json:
        print(to_json(data))
    elif yaml:
        print(pyyaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")
    else:
        notes = "".join(f"; {n}" for n in cast("list[str]", target.get("notes") or []))  # e.g. a Lium fallback
        target_line = target.get("error") or f"{target['label']} ({target['kind']}, from {target['from']}{notes})"
        print(f"config file: {data['config_file'] or 'none (the defaults)'}\ntarget:      {target_line}\n")
        print(table(("key", "value", "source"), [(k, values[k], settings.sources[k] + _flag(k, data)) for k in keys]))


def _flag(key: str, data: dict[str, Any]) -> str:
    if key not in data["unknown"]:
        return ""
    return " (unknown key; masked: looks like a secret)" if secret_by_shape(key) else " (unknown key)"


@wftask(help={"config": "the file to write (default: ./workflow.env)"})
def init(c: Any, config: str | None = None) -> None:
    """Write ./workflow.env with every key and its default.

    The text of workflow.env.example (every key, its default and one line of meaning); an existing file is
    never overwritten. Then set a target (OPS_DEFAULT_HOST or LIUM_TARGET) and REPO_URL in it."""
    path = Path(config or "workflow.env").expanduser()
    write_new_file(path, example_text(), "edit it, or pass --config with another path")
    show_it = hints.command("config.show", config=path)
    print(f"wrote {path}: set a target (OPS_DEFAULT_HOST or LIUM_TARGET) and REPO_URL in it, then: {show_it}")


ns = Collection("config", show, init)
