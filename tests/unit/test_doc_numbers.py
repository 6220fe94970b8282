"""Every table of measured figures in README.md and docs/*.md names the benchmark script that prints it.

A measured figure is a time or a rate in a table cell (`0.61 s`, `579 ms`, `108 MB/s`); its table must be
preceded, within the same `##` section, by a mention of a script of benchmarks/ that exists. Numbers
measured by hand have no such script to name, and this test points at them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FIGURE = re.compile(r"(?<![\w.])\d[\d,]*(\.\d+)?\s?(ms|s|MB/s|GB/s)(?![\w/])")
SCRIPT = re.compile(r"\b(?:benchmarks/)?(bench_\w+\.py)\b")


def unattributed_tables(text: str, scripts: set[str]) -> list[str]:
    """The first row of every table with a measured figure and no existing bench script named before it in its
    `##` section (or naming one that does not exist)."""
    found, named, in_table = [], [], False
    for line in text.splitlines():
        if line.startswith("## "):
            named = []
        is_row = line.startswith("|")
        if not is_row:
            in_table = False
            named += SCRIPT.findall(line)
            continue
        named += SCRIPT.findall(line)  # a header row may name the script itself
        if FIGURE.search(line) and not in_table:
            in_table = True
            if not named or not all(n in scripts for n in named):
                found.append(line.strip())
    return found


def test_the_check_finds_a_table_without_its_script():
    """Positive control: a hand-measured table is found; the same table under a script's name is not."""
    table = "| what | time |\n|---|---|\n| `lium ps` | 0.47 s |\n"
    by_hand = unattributed_tables("## Speed\n\nMeasured by hand:\n\n" + table, {"bench_lium.py"})
    assert by_hand == ["| `lium ps` | 0.47 s |"]
    assert unattributed_tables("## Speed\n\n`benchmarks/bench_lium.py`:\n\n" + table, {"bench_lium.py"}) == []
    assert unattributed_tables("## Speed\n\n`benchmarks/bench_gone.py`:\n\n" + table, {"bench_lium.py"}) != []
    assert unattributed_tables("## A\n`bench_lium.py`\n## B\n\n" + table, {"bench_lium.py"}) != []  # other section


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_table_of_figures_names_its_benchmark(doc: Path):
    scripts = {p.name for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert unattributed_tables(doc.read_text(), scripts) == []
