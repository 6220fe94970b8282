"""docs/remote-layout.md: "Every JSON file on the pod is written through one function of the agent
(`store.write_bytes`): whole or not at all (temp file, fsync, rename)". Held statically: no module of the
agent but store.py writes JSON to a file itself — no `json.dump(obj, file)`, and no file opened for writing
in a function that also makes JSON text (`json.dumps`). What store.write_bytes does with the bytes is held by
the agent's own tests (tests/unit/test_agent.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "wfops" / "agent"
WRITE_MODES = set("wxa+")


def _is_call_to(node: ast.AST, module: str, name: str) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name
            and isinstance(node.func.value, ast.Name) and node.func.value.id == module)


def _opens_for_writing(node: ast.AST) -> bool:
    """`open(path, "w"...)` / `io.open(...)` with a writing mode, or `os.open(path, os.O_WRONLY|...)`."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if (isinstance(func, ast.Name) and func.id == "open") or _is_call_to(node, "io", "open"):
        mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
        return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and bool(WRITE_MODES & set(mode.value))
    if _is_call_to(node, "os", "open") and len(node.args) > 1:
        flags = ast.unparse(node.args[1])
        return any(f in flags for f in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND"))
    return False


def json_writes_outside_store(source: str, name: str) -> list[str]:
    """`name:line` of every place in `source` that writes JSON to a file without store.write_bytes."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if _is_call_to(node, "json", "dump"):
            found.append(f"{name}:{node.lineno} json.dump")
    for func in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        calls = list(ast.walk(func))
        if any(_is_call_to(n, "json", "dumps") for n in calls):
            found += [f"{name}:{n.lineno} open for writing beside json.dumps in {func.name}"
                      for n in calls if _opens_for_writing(n)]
    return sorted(set(found))


def test_the_scan_finds_json_written_by_hand():
    """Positive control: both ways of writing JSON by hand are found; a log append and a read are not."""
    by_hand = (
        "import json, os\n"
        "def save(path, data):\n"
        "    with open(path, 'w') as fh:\n"
        "        fh.write(json.dumps(data))\n"
        "def save2(path, data):\n"
        "    with open(path, mode='w') as fh:\n"
        "        json.dump(data, fh)\n"
        "def save3(path, data):\n"
        "    fd = os.open(path, os.O_WRONLY | os.O_CREAT)\n"
        "    os.write(fd, json.dumps(data).encode())\n"
        "def log(path, line):\n"
        "    with open(path, 'a') as fh:\n"
        "        fh.write(line)\n"
        "def load(path):\n"
        "    with open(path) as fh:\n"
        "        return json.loads(fh.read())\n"
    )
    assert json_writes_outside_store(by_hand, "m.py") == [
        "m.py:3 open for writing beside json.dumps in save",
        "m.py:7 json.dump",
        "m.py:9 open for writing beside json.dumps in save3",
    ]


def test_no_agent_module_but_store_writes_json_itself():
    modules = sorted(p for p in AGENT.rglob("*.py") if p.name != "store.py")
    assert len(modules) >= 10  # the agent's modules are where this test looks
    found = [hit for p in modules for hit in json_writes_outside_store(p.read_text(), str(p.relative_to(ROOT)))]
    assert found == []
