"""tests/longest_first.py: the order scripts/test.sh's workers take the tests in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tests import longest_first as lf

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Item:
    nodeid: str
    fixturenames: list[str] = field(default_factory=list)
    markers: tuple[str, ...] = ()

    def get_closest_marker(self, name: str) -> object:
        return name if name in self.markers else None


def test_known_long_tests_go_first_longest_first_then_heavy_ones_and_the_rest_keep_their_order(monkeypatch):
    monkeypatch.setattr(lf, "SECONDS", {"tests/a.py::test_long": 60.0, "tests/b.py::test_longer": 90.0})
    items = [Item("tests/a.py::test_short1"), Item("tests/a.py::test_long[ssh]"), Item("tests/a.py::test_short2"),
             Item("tests/b.py::test_fleet", ["fleet_ready"]), Item("tests/b.py::test_longer"),
             Item("tests/c.py::test_e2e", markers=("e2e",)), Item("tests/a.py::test_long[local]")]
    order = [it.nodeid for it in lf.longest_first(items)]
    assert order == ["tests/b.py::test_longer", "tests/a.py::test_long[ssh]", "tests/a.py::test_long[local]",
                     "tests/b.py::test_fleet", "tests/c.py::test_e2e", "tests/a.py::test_short1",
                     "tests/a.py::test_short2"]


def test_with_workers_each_starts_with_one_of_the_longest_and_the_first_two_per_worker_snake(monkeypatch):
    monkeypatch.setattr(lf, "SECONDS", {f"tests/a.py::test_{n}": float(n) for n in range(10, 18)})
    items = [Item(f"tests/a.py::test_{n}") for n in range(10, 18)] + [Item("tests/a.py::test_short")]
    order = [it.nodeid.split("_")[-1] for it in lf.longest_first(items, workers=3)]
    # xdist's load gives worker 0 the first two, worker 1 the next two, ...; then one at a time in order
    assert order == ["17", "12", "16", "13", "15", "14", "11", "10", "short"]


def test_every_listed_test_exists():
    for nodeid in lf.SECONDS:
        path, _, name = nodeid.partition("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{nodeid}: no such test (refresh SECONDS)"
