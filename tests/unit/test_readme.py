"""The README reads in one screen and works as a map: its first lines say what wfops is and give the two commands
(.ci/run runs the second), it stays short and narrow, it speaks of no project history, every link reaches a file
of the repository, and every `wfops TASK` it shows names a task that exists."""

from __future__ import annotations

import re
from pathlib import Path

from wfops.tasks import ns

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_it_starts_with_what_wfops_is_then_the_two_commands():
    lines = README.splitlines()
    assert lines[0] == "# wfops" and lines[2].startswith("wfops runs ML training sweeps on rented GPU pods")
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [ln.split("#")[0].strip() for ln in block] == ["./scripts/demo.sh", "./scripts/test.sh"]
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_it_is_short_narrow_and_without_history():
    lines = README.splitlines()
    assert len(lines) <= 250
    assert [i + 1 for i, ln in enumerate(lines) if len(ln) > 120] == []
    assert not re.search(r"\bthe seed\b|\bseed's\b|\bissue \d+", README, re.IGNORECASE)
    assert not re.search(r'pip install "?wfops(\[[^\]]*\])?"?(?! @)(\s|`|$)', README)  # no package index has it


def test_every_link_reaches_a_file():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_every_task_it_shows_exists():
    """Code only: the lines of its code blocks and its `inline code`."""
    blocks = re.findall(r"```\w*\n(.*?)```", README, re.DOTALL)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```\w*\n.*?```", "", README, flags=re.DOTALL))
    shown = set(re.findall(r"(?:^|[/ ])wfops ([a-z]+(?:\.[a-z-]+)?)\b", "\n".join(blocks + inline), re.MULTILINE))
    shown -= {"sweep.r", "tests"}  # `wfops sweep.r<TAB>` (completion), `ruff check wfops tests` (paths)
    assert len(shown) > 10 and shown <= set(ns.task_names), shown - set(ns.task_names)


def test_the_exit_code_table_is_the_code_table():
    from wfops.errors import EXIT_CODES

    table = README.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    codes = {int(c) for row in table.splitlines()[2:] for c in row.split("|")[1].split("/")}
    assert codes == set(EXIT_CODES) | {130, 141, 143}
