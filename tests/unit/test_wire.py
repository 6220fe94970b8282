"""The wire between client and pod agent (wfops/agent/wire.py): its TypedDicts and its run-time schema are one
schema, the checker names the first bad field in one line, and the agent refuses a bad request or manifest at
its door with exit 2 before it changes anything."""

from __future__ import annotations

import json
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from tests.unit.test_agent import CALL, POD_PYTHON, WFOPS_DIR, agent
from wfops.agent import wire
from wfops.settings.load import parse_settings
from wfops.sweeps.launch_script import scripts
from wfops.sweeps.model import exec_block, parse_csv, plan_runs, queue_entries

# each TypedDict the agent checks at run time, and its schema there
CHECKED = {"PodLayout": wire.POD_LAYOUT, "PodEnv": wire.POD_ENV, "Prelude": wire.PRELUDE, "Request": wire.REQUEST,
           "NodePeer": wire.NODE_PEER, "NodeInfo": wire.NODE_INFO, "LaunchScript": wire.LAUNCH_SCRIPT,
           "QueueEntry": wire.QUEUE_ENTRY,
           "RunRow": wire.RUN_ROW, "ExecBlock": wire.EXEC_BLOCK, "CsvInfo": wire.CSV_INFO, "Filters": wire.FILTERS,
           "Manifest": wire.MANIFEST, "Inbox": wire.INBOX, "Billing": wire.BILLING}


def typed_wire() -> types.ModuleType:
    """wire.py as the type checker reads it: its TypedDicts exist only under TYPE_CHECKING (the pod never
    imports typing), so run its source once with TYPE_CHECKING true."""
    source = (WFOPS_DIR / "agent" / "wire.py").read_text()
    assert source.count("\nTYPE_CHECKING = False") == 1
    module = types.ModuleType("wire_as_typed")
    sys.modules[module.__name__] = module  # TypedDict resolves its forward references through sys.modules
    exec(compile(source.replace("\nTYPE_CHECKING = False", "\nTYPE_CHECKING = True"), "wire.py", "exec"),
         module.__dict__)
    return module


def _expected(hint: object, typed: types.ModuleType) -> tuple:
    """(accepted types, nested) that the run-time schema must hold for a field annotated `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if typing.is_typeddict(hint):
        return (dict,), CHECKED[hint.__name__]  # type: ignore[attr-defined]
    if origin is list:
        item = args[0]
        return (list,), CHECKED[item.__name__] if typing.is_typeddict(item) else (item,)
    if origin is dict:
        return (dict,), None
    if origin is typing.Union:
        return tuple(args), None
    return (hint,), None


def test_the_typeddicts_and_the_runtime_schema_agree_field_for_field():
    typed = typed_wire()
    for name, schema in CHECKED.items():
        td = getattr(typed, name)
        hints = typing.get_type_hints(td, globalns=typed.__dict__)
        assert set(hints) == set(schema), name
        for field, hint in hints.items():
            accepted, required, nested = schema[field]
            want_types, want_nested = _expected(hint, typed)
            assert set(accepted) == set(want_types), f"{name}.{field}"
            assert required == (field in td.__required_keys__), f"{name}.{field}"
            if isinstance(want_nested, dict):
                assert nested is want_nested, f"{name}.{field}"
            else:
                assert (set(nested) if nested else None) == (set(want_nested) if want_nested else None), \
                    f"{name}.{field}"
    for annotation, (kind, nested) in wire.ARGUMENTS.items():  # the handler arguments bind() checks
        hint = eval(annotation, typed.__dict__)
        assert _expected(hint, typed) == (kind, nested), annotation


def manifest() -> dict:
    """A manifest as sweep.start builds it."""
    settings = parse_settings("", environ={})
    runs = parse_csv("run_id,config,seed,overrides,notes\nr1,c.py,1,lr=1,a\nr2,c.py,2,,\nr3,c.py,3,,\nr4,c.py,4,,\n")
    return {"sweep_id": "sweep-20260101T000000Z", "created_at": "now", "wfops_version": "0",
            "csv": {"name": "s.csv", "sha256": "ab"}, "filters": {"match": "", "start_at": "", "limit": None},
            "force": False, "fail_fast": False, "wandb_group": "g", "runs": plan_runs(settings, runs, {"r1"}),
            "queue": queue_entries(settings, runs, "g", scripts(settings, runs)), "exec": exec_block(settings)}


def test_a_manifest_as_the_client_builds_it_passes():
    assert wire.problem(manifest(), wire.MANIFEST) == ""
    from wfops.tasks.sweep import _manifest  # what sweep.start sends, multi-node rows and filters included

    settings = parse_settings("TRAIN_NPROC=2\nWF_FAKE_GPUS=2\nCPU_ONLY=1\nRETRY_ON=lost\n", environ={})
    runs = parse_csv("run_id,config,seed,overrides,notes,gpus,nodes\nr1,c.py,1,lr=1,a,2,\nbig,c.py,2,,,all,2\n")
    built = _manifest(settings, "s.csv", "text", runs, runs[:1], {"match": "", "start_at": "", "limit": None}, True,
                      False)
    assert wire.problem(built, wire.MANIFEST) == "" and built["queue"][0]["gpus"] == "2"
    assert wire.problem(_manifest(settings, "s.csv", "text", runs, runs, {"match": "b", "start_at": "", "limit": 3},
                                  False, True), wire.MANIFEST) == ""
    assert wire.problem({"cmd": "noop", "pod": {"out": "/o"}, "prelude": {"command": "pod.status", "enforce": True,
                         "dry_run": False, "env": {"sha": "x", "b64": ""}}, "data": {}}, wire.REQUEST) == ""


@pytest.mark.parametrize("change, fault", [
    (lambda m: m["queue"][3].pop("run_id"), "queue[3].run_id is missing"),
    (lambda m: m.pop("exec"), "exec is missing"),
    (lambda m: m["exec"].pop("repo"), "exec.repo is missing"),
    (lambda m: m["exec"].update(repoo="/r"), "exec.repoo is not a known field"),
    (lambda m: m.update(extra=1), "extra is not a known field"),
    (lambda m: m["queue"][1].update(gpus=2), "queue[1].gpus must be str, not 2"),
    (lambda m: m["queue"][0]["args"].append(3), "queue[0].args[5] must be str, not 3"),
    (lambda m: m["runs"][2].update(selected="yes"), "runs[2].selected must be bool, not 'yes'"),
    (lambda m: m["exec"].update(retries=True), "exec.retries must be int, not True"),  # a bool is no count
    (lambda m: m["exec"].update(nproc="2"), "exec.nproc must be int or null, not '2'"),
    (lambda m: m.update(queue={}), "queue must be list, not {}"),
    (lambda m: m["queue"].append("r5"), "queue[4] must be dict, not 'r5'"),
    (lambda m: m["queue"][0].update(node={"rank": 0}), "queue[0].node.nnodes is missing"),
    (lambda m: m.update(sweep_id=None), "sweep_id must be str, not None"),
])
def test_every_kind_of_fault_is_one_line_naming_the_field(change, fault):
    m = manifest()
    change(m)
    assert wire.problem(m, wire.MANIFEST) == fault


def test_what_the_schema_allows():
    m = manifest()
    m["exec"].update(retry_backoff_secs=1.5, fake_gpus=None)  # a float where a number is, null where optional
    m["queue"][0].update(seed=None, attempt=1, force=True)  # sweep.retry's entries
    m.update(pod={"out": "/o"}, git_sha="abc", start=[m["queue"][0]])  # what sweep-start and a resume add
    assert wire.problem(m, wire.MANIFEST) == ""
    assert wire.problem("text", wire.MANIFEST) == "it must be dict, not 'text'"
    assert wire.problem({"cmd": "x" * 100, "pod": 1}, wire.REQUEST) == "pod must be dict, not 1"
    long = wire.problem({"cmd": "x", "pod": {"out": "y" * 100}, "data": []}, wire.REQUEST)
    assert long.startswith("data must be dict, not [") and len(long) < 100


# ---------------------------------------------------------------- at the agent's door (a real python3 -I -S)
def test_a_bad_request_is_refused_with_exit_2_and_one_line(tmp_path: Path):
    out = tmp_path / "out"
    res = agent("noop", out=out, prelude={"command": "pod.status", "enforce": "yes"})
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == "@wfops-error 2 request: prelude.enforce must be bool, not 'yes'\n"
    assert not out.exists()  # no gate, no state file, no config sync
    res = subprocess.run([POD_PYTHON, "-I", "-S", "-c", CALL, str(WFOPS_DIR)], capture_output=True, text=True,
                         input=json.dumps({"cmd": "noop", "pod": {"out": str(out), "outt": "/x"}}))
    assert (res.returncode, res.stderr) == (2, "@wfops-error 2 request: pod.outt is not a known field\n")
    res = subprocess.run([POD_PYTHON, "-I", "-S", "-c", CALL, str(WFOPS_DIR)], capture_output=True, text=True,
                         input=json.dumps({"pod": {"out": str(out)}}))
    assert (res.returncode, res.stderr) == (2, "@wfops-error 2 request: cmd is missing\n")
    assert not out.exists()


def test_a_bad_manifest_is_refused_at_sweep_start_and_at_load(tmp_path: Path):
    out = tmp_path / "out"
    m = manifest()
    m["queue"][3].pop("run_id")
    res = agent("sweep-start", {"manifest": m, "csv_text": "", "session": "s"}, out=out)
    assert res.returncode == 2
    assert res.stderr == "@wfops-error 2 sweep-start: manifest.queue[3].run_id is missing\n"
    assert not out.exists()
    res = agent("sweep-add", {"runs": [], "entries": [{"run_id": "r"}], "session": "s",
                              "exec_block": manifest()["exec"]}, out=out)
    assert (res.returncode, res.stderr) == (2, "@wfops-error 2 sweep-add: entries[0].config is missing\n")
    path = tmp_path / "m.json"  # sweep-run (the queue in tmux) loads the file: a hand-edited one
    path.write_text(json.dumps(dict(manifest(), pod={"out": str(out)}, start=[{"run_id": 5, "config": "c"}])))
    res = subprocess.run([POD_PYTHON, "-I", "-S", "-c", CALL, str(WFOPS_DIR), "sweep-run", str(path)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr == (f"@wfops-error 2 manifest {path}: start[0].run_id must be str, not 5; the queue did "
                          "not start\n")
    assert not out.exists()


def test_the_agent_still_never_imports_typing():
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import agent.__main__, agent.wire, agent.scheduler, "
             "agent.sweeps, agent.sweepedit, agent.fleet, agent.runs; print('typing' in sys.modules)")
    res = subprocess.run([POD_PYTHON, "-I", "-S", "-c", probe, str(WFOPS_DIR)], capture_output=True, text=True)
    assert res.stdout.strip() == "False", res.stderr


def test_every_handler_argument_of_a_wire_type_is_checked_at_the_door():
    """An annotation that names a wire TypedDict is in wire.ARGUMENTS (e.g. an `Optional[Manifest]` would pass
    unchecked); the others are plain JSON types registry.bind knows, or left to the handler on purpose."""
    from wfops.agent import __main__ as entry
    from wfops.agent.registry import _TYPES, COMMANDS, parameters

    for name in entry.MODULES:
        entry.load(name)
    wire_types = [n for n in CHECKED if n not in ("PodLayout", "PodEnv", "Prelude", "Request")]
    unchecked = set()
    for name, fn in COMMANDS.items():
        for arg, _, annotation in parameters(fn):
            if any(t in annotation for t in wire_types):
                assert annotation in wire.ARGUMENTS, f"{name} {arg}: {annotation}"
            elif annotation not in _TYPES and annotation not in wire.ARGUMENTS:
                unchecked.add(f"{name} {arg}")
    # only these take any JSON value (each checks or ignores what it got)
    assert unchecked == {"fetch-plan only", "sweep-status metric_patterns", "sweep-wait patterns",
                         "sweep-status abandon", "sweep-wait abandon"}  # addtokens.answer checks them
