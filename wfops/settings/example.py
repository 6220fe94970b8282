"""workflow.env.example, generated from the KEYS table: `python -m wfops.settings.example > workflow.env.example`
(or `python -m wfops.settings`)."""

from __future__ import annotations

from wfops.settings.keys import KEYS

_GROUP_TITLES = {
    "target": "Which machine: LIUM_TARGET wins, else OPS_DEFAULT_HOST (`local` = this machine); or a fleet: "
              "LIUM_TARGETS and/or OPS_HOSTS (never both kinds)",
    "lium": "Renting with pod.up (Lium)",
    "layout": "Where things live on the pod (absolute paths, or ~/...)",
    "workflow": "Workflow state machine and tracked tasks",
    "bootstrap": "bootstrap",
    "checkout": "checkout",
    "sweep": "Sweeps",
    "secrets": "Secrets: written only into the pod env file (mode 600), never printed",
    "misc": "Other",
}


def example_text() -> str:
    """workflow.env.example: every key, its default, one line of meaning (tests keep the file in step)."""
    out = [
        "# wfops configuration: every key with its default (`wfops config.init` writes this as ./workflow.env).",
        "# Every key is optional except a target (LIUM_TARGET or OPS_DEFAULT_HOST) and, for checkout, REPO_URL.",
        "# Values may use ${OTHER_KEY}, ${ENV_VAR} or ${VAR:-fallback}; 'single-quoted' values are literal.",
        "# Booleans: 1/true/yes/on or",
        "# 0/false/no/off. Secrets are never printed: keys ending in _KEY, _TOKEN, _SECRET or containing PASSWORD,",
        "# and any other key whose name contains KEY, TOKEN, SECRET, PASS, CREDENTIAL or PWD (SORT_KEY too).",
    ]
    group = None
    for key in KEYS:
        if key.group != group:
            group = key.group
            out += ["", f"# ---- {_GROUP_TITLES[group]}"]
        out.append(f"# {key.help}")
        value = key.default
        if "${" in value:  # double quotes: the reference expands, as in the default
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif value and any(c in value for c in " \"'#$"):
            value = "'" + value.replace("'", "\\'") + "'"
        out.append(f"{key.name}={value}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(example_text(), end="")
