"""Guard rails of the layout (issue 19): no import cycle among wfops modules, no client module over 400 lines and no
function over 60, and a module map in wfops/__init__.py that names exactly the modules there are. Read from the
source with `ast`: nothing is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import wfops

PKG = Path(wfops.__file__).resolve().parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    """Every module of the tree by dotted name (a package by its own name, for its __init__.py)."""
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _rel(path: Path) -> str:
    return path.relative_to(PKG.parent).as_posix()


def _imported(name: str, path: Path) -> set[str]:
    """The wfops modules `name` imports anywhere in its file: at the top, inside functions and classes, under
    TYPE_CHECKING. `from pkg import mod` counts as an import of pkg.mod."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in out if m in MODULES and m != name}


def _graph() -> dict[str, set[str]]:
    return {name: _imported(name, path) for name, path in MODULES.items()}


def _groups(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan): each one holds at least one cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) for each strongly connected group of modules."""
    return [_a_cycle(graph, group) for group in _groups(graph)]


def _a_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest way from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in {group}")


def test_no_import_cycle_among_wfops_modules():
    graph = _graph()
    groups = _groups(graph)
    cycles = [" -> ".join(_a_cycle(graph, g)) for g in groups]
    assert cycles == [], "import cycles (imports inside functions count):\n" + "\n".join(cycles)


def test_the_cycle_finder_finds_one_hidden_in_a_function(tmp_path):
    """The guard itself: a cycle made by an import inside a function is named; an acyclic graph has none."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    hidden = tmp_path / "x.py"
    hidden.write_text("def f():\n    from wfops.transport import ssh\n    return ssh\n")
    assert _imported("wfops.x", hidden) == {"wfops.transport.ssh"}


def _client_files() -> list[Path]:
    return [p for p in MODULES.values() if "agent" not in p.relative_to(PKG).parts[:1]]


def _long_functions(path: Path, name: str) -> dict[str, int]:
    """`name::qualname` -> lines, for every function (methods and nested ones too) over MAX_FUNCTION_LINES; a
    function's lines run from its `def` to its last line, decorators not counted."""
    found: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = (child.end_lineno or child.lineno) - child.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        found[f"{name}::{qual}"] = lines
                walk(child, qual + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(path.read_text(), str(path)), "")
    return found


def _offenders() -> dict[str, int]:
    found: dict[str, int] = {}
    for path in _client_files():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            found[_rel(path)] = lines
        found.update(_long_functions(path, _rel(path)))
    return found


def test_no_client_module_over_400_lines_and_no_function_over_60():
    offenders = _offenders()
    assert offenders == {}, ("over the limits (a module: 400 lines, a function: 60); split them:\n"
                             + "\n".join(f"{k}: {v} lines" for k, v in sorted(offenders.items())))


def test_the_size_guard_counts_methods_and_nested_functions(tmp_path):
    """The guard itself: a 61-line method and a 61-line function nested in another are named; 60 lines pass."""

    def body(n: int, indent: int) -> str:
        return "".join(f"{' ' * indent}x = {i}\n" for i in range(n))

    src = tmp_path / "m.py"
    src.write_text("class C:\n    def m(self):\n" + body(60, 8) + "    def fits(self):\n" + body(59, 8)
                   + "def outer():\n    def inner():\n" + body(60, 8) + "    return inner\n")
    assert _long_functions(src, "m.py") == {"m.py::C.m": 61, "m.py::outer": 63, "m.py::outer.inner": 61}


# ------------------------------------------------------------------ the module map

_MAP_LINE = re.compile(r"^ {4}(\S+(?:/|\.py))\s{2,}\S")


def _map_entries() -> list[str]:
    doc = ast.get_docstring(ast.parse((PKG / "__init__.py").read_text())) or ""
    return [m.group(1) for m in map(_MAP_LINE.match, doc.splitlines()) if m]


def _tree_entries() -> set[str]:
    """Every package (`settings/`) and module (`settings/load.py`) of wfops, __init__.py files aside."""
    entries = set()
    for path in MODULES.values():
        rel = path.relative_to(PKG).as_posix()
        if path.name == "__init__.py":
            if rel != "__init__.py":
                entries.add(rel.removesuffix("__init__.py"))
        else:
            entries.add(rel)
    return entries


def test_the_module_map_names_every_module_and_nothing_that_is_gone():
    listed = _map_entries()
    assert len(listed) == len(set(listed)), f"named twice: {sorted({e for e in listed if listed.count(e) > 1})}"
    tree = _tree_entries()
    assert sorted(tree - set(listed)) == [], "not in the module map of wfops/__init__.py"
    assert sorted(set(listed) - tree) == [], "in the module map of wfops/__init__.py, but not in the tree"


@pytest.mark.parametrize("line, entry", [
    ("    transport/ssh.py      the one SSH connection factory", "transport/ssh.py"),
    ("    agent/                the pod agent", "agent/"),
    ("    not an entry: prose", None),
])
def test_the_module_map_reader(line, entry):
    m = _MAP_LINE.match(line)
    assert (m.group(1) if m else None) == entry
