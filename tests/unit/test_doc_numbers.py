"""Every table of measured figures in README.md and docs/*.md names the benchmark script that prints it, and in
docs/benchmarks.md (the scripts' own tables, copied) that script prints each row's label.

A table of measured figures: a table with a time or a rate in a cell (`0.61 s`, `579 ms`, `108 MB/s`), or a
table whose header names a unit (`median ms`, `total s`, `MB/s`) over numbers. Its table must be preceded,
within the same `##` section, by a mention of a script of benchmarks/ that exists. Numbers measured by hand
have no such script to name, and this test points at them. A row's label (its first cell, `**` and `` ` ``
kept as printed) must match a string the named script can print: a string literal or an f-string of the
script's source, its `{...}` parts matching any text."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LABELLED = [ROOT / "docs" / "benchmarks.md"]  # its tables are the scripts' printed tables (README's are summaries)
FIGURE = re.compile(r"(?<![\w.])\d[\d,]*(\.\d+)?\s?(ms|s|MB/s|GB/s)(?![\w/])")
UNIT_WORD = re.compile(r"(?:^|\s)(ms|s|MB/s|GB/s)(?=$|\s)")
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(\.\d+)?(?![\w])")
SCRIPT = re.compile(r"\b(?:benchmarks/)?(bench_\w+\.py)\b")


@dataclass
class Table:
    header: str
    named: list[str]  # the scripts named before it in its `##` section (or in its header)
    rows: list[str] = field(default_factory=list)

    def cells(self, line: str) -> list[str]:
        return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]

    @property
    def of_figures(self) -> bool:
        unit_header = any(UNIT_WORD.search(c) for c in self.cells(self.header))
        return any(FIGURE.search(r) or (unit_header and NUMBER.search(r)) for r in self.rows)

    @property
    def labels(self) -> list[str]:
        return [self.cells(r)[0] for r in self.rows if not re.fullmatch(r"\|[-|: ]+\|", r.strip())]


def tables(text: str) -> list[Table]:
    """Every table of the text, with the scripts named before it in its `##` section."""
    found: list[Table] = []
    named: list[str] = []
    current: Table | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            named = []
        if not line.startswith("|"):
            current = None
            named += SCRIPT.findall(line)
            continue
        named += SCRIPT.findall(line)  # a header row may name the script itself
        if current is None:
            current = Table(line, list(named))
            found.append(current)
        else:
            current.rows.append(line)
    return found


def unattributed_tables(text: str, scripts: set[str]) -> list[str]:
    """The first row of every table of figures with no existing bench script named before it in its `##`
    section (or naming one that does not exist)."""
    return [next((r for r in t.rows if FIGURE.search(r)), t.header).strip()
            for t in tables(text) if t.of_figures and (not t.named or not all(n in scripts for n in t.named))]


def printable(script: Path) -> list[re.Pattern[str]]:
    """What the script's strings can print: each string literal, and each f-string with a word of its own, its
    `{...}` parts as any text."""
    patterns = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.JoinedStr):
            parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in node.values]
            if any(isinstance(v, ast.Constant) and re.search(r"\w", str(v.value)) for v in node.values):
                patterns.append(re.compile("".join(parts), re.S))  # some words of its own: f"{x}" says nothing
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
            patterns.append(re.compile(re.escape(node.value)))
    return patterns


def unprinted_labels(text: str, scripts: dict[str, Path]) -> list[str]:
    """Row labels of the tables of figures that none of their named scripts can print."""
    missing = []
    cache: dict[str, list[re.Pattern[str]]] = {}
    for t in tables(text):
        if not t.of_figures:
            continue
        pats = [p for n in t.named if n in scripts for p in cache.setdefault(n, printable(scripts[n]))]
        missing += [f"{label} ({', '.join(dict.fromkeys(t.named))})" for label in t.labels
                    if not any(p.fullmatch(label.replace("\\|", "|")) for p in pats)]
    return missing


def _scripts() -> dict[str, Path]:
    return {p.name: p for p in (ROOT / "benchmarks").glob("bench_*.py")}


def test_the_check_finds_a_table_without_its_script():
    """Positive control: a hand-measured table is found; the same table under a script's name is not."""
    table = "| what | time |\n|---|---|\n| `lium ps` | 0.47 s |\n"
    by_hand = unattributed_tables("## Speed\n\nMeasured by hand:\n\n" + table, {"bench_lium.py"})
    assert by_hand == ["| `lium ps` | 0.47 s |"]
    assert unattributed_tables("## Speed\n\n`benchmarks/bench_lium.py`:\n\n" + table, {"bench_lium.py"}) == []
    assert unattributed_tables("## Speed\n\n`benchmarks/bench_gone.py`:\n\n" + table, {"bench_lium.py"}) != []
    assert unattributed_tables("## A\n`bench_lium.py`\n## B\n\n" + table, {"bench_lium.py"}) != []  # other section


def test_a_table_with_its_unit_in_the_header_is_a_table_of_figures():
    """Positive control: the unit in the header (`median ms`) and bare numbers in the cells is a table of
    figures too; a table of words with a unit-like header word is not."""
    table = "| what | median ms | p90 ms |\n|---|---|---|\n| `fsm.status` warm | 224 | 270 |\n"
    assert unattributed_tables("## Speed\n\n" + table, set()) == ["| what | median ms | p90 ms |"]
    assert unattributed_tables("## Speed\n`bench_commands.py`\n\n" + table, {"bench_commands.py"}) == []
    assert unattributed_tables("## Keys\n\n| key | s |\n|---|---|\n| A | yes |\n", set()) == []


def test_benchmarks_md_has_every_table_seen():
    """The check sees every table of docs/benchmarks.md (each has figures), not only those with units in cells."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    every = [t for t in tables(text) if t.rows]
    assert len(every) >= 12 and all(t.of_figures for t in every), [t.header for t in every if not t.of_figures]


def test_the_label_check_finds_a_row_its_script_cannot_print(tmp_path: Path):
    """Positive control: a label the script prints (an f-string with a value) passes; one it does not is found."""
    script = tmp_path / "bench_x.py"
    script.write_text('def rows(label):\n    return [[f"wfops {label}: warm", "1"], ["floor: `true`", "2"]]\n')
    doc = "## S\n`bench_x.py`\n\n| what | ms |\n|---|---|\n| wfops fsm.status: warm | 1 |\n| floor: `true` | 2 |\n"
    assert unprinted_labels(doc, {"bench_x.py": script}) == []
    assert unprinted_labels(doc.replace(": warm", ": hot"), {"bench_x.py": script}) == [
        "wfops fsm.status: hot (bench_x.py)"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_table_of_figures_names_its_benchmark(doc: Path):
    assert unattributed_tables(doc.read_text(), set(_scripts())) == []


@pytest.mark.parametrize("doc", LABELLED, ids=lambda p: p.name)
def test_every_row_label_is_printed_by_its_named_script(doc: Path):
    assert unprinted_labels(doc.read_text(), _scripts()) == []
