"""docs/commands.md names every task with every option it takes (`wfops --help TASK` is the other place): a
row per task whose first cell shows each of its flags (`--config`/`-c`, which every task takes, is said once
below the table)."""

from __future__ import annotations

import re
from pathlib import Path

from wfops.tasks import ns

DOC = Path(__file__).resolve().parents[2] / "docs" / "commands.md"
EVERY_TASK = {"config"}  # said once for all tasks under the table


def _rows() -> dict[str, str]:
    """task name -> the first cell of its row(s) (a task may have more than one row: sweep.wait --recover)."""
    cells: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split(" | ", 1)[0]
        for name in re.findall(r"`([a-z]+\.[a-z-]+|[a-z]+)[ `]", first):
            cells[name] = cells.get(name, "") + first
    return cells


def test_every_task_and_option_is_in_the_commands_table():
    rows = _rows()
    missing = []
    for ctx in ns.to_contexts():
        if ctx.name not in rows:
            missing.append(ctx.name)
            continue
        for arg in ctx.args.values():
            name = arg.name.rstrip("_").replace("_", "-")  # print_: --print
            if arg.name in EVERY_TASK or arg.positional:
                continue
            if f"--{name}" not in rows[ctx.name]:
                missing.append(f"{ctx.name} --{name}")
    assert missing == []
