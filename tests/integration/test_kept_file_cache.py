"""What the pod's kept agent remembers of the files its reads parsed (wfops/agent/filecache.py): a repeated
sweep.status opens no run file that is unchanged since, and says exactly what a freshly started agent says; a file
changed in any way (in place with its size and mtime put back, replaced, appended to, created, removed) is read
again; a file written less than RACY_SECS before a request is never kept. The kept agent is driven as a keeper
drives it (tests/integration/test_agent_serve.Server); the kernel says which files were opened (tests/inotify.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Pod, wait_until
from tests.inotify import Opens
from tests.integration.test_agent_serve import Server, fresh, request
from tests.integration.test_kept_agent import KEPT, VERBOSE, served
from wfops.agent import filecache, states, wire

SWEEP = "sweep-20261201-000000"
PATTERNS = ["@nanogpt", "@json", "@kv"]
RUNS = [f"r{i:02d}" for i in range(12)]
RUN_FILES = {"status.json", "summary.json", "stdout.log", "metrics.jsonl"}


def _record(rid: str, exit_code: int = 0) -> str:
    state = "success" if exit_code == 0 else "failed"
    return json.dumps({"run_id": rid, "sweep_id": SWEEP, "state": state, "exit_code": exit_code, "duration_secs": 2.5})


def _log(losses: list[float]) -> str:
    return "".join(f"iter {i}: loss {loss:.4f}, time 12.3ms, mfu 1.2%\n" for i, loss in enumerate(losses))


def make_sweep(out: Path) -> None:
    """A finished sweep of RUNS as the agent writes one: r00-r03 with a log, r04-r05 with metrics.jsonl, r06 with a
    damaged status.json, the rest with status and summary only."""
    (out / "_manifests").mkdir(parents=True)
    (out / "_control").mkdir(parents=True, exist_ok=True)
    for i, rid in enumerate(RUNS):
        d = out / rid
        d.mkdir()
        (d / "status.json").write_text("{damaged" if rid == "r06" else _record(rid, exit_code=i % 2))
        (d / "summary.json").write_text(_record(rid, exit_code=i % 2))
        if i < 4:
            (d / "stdout.log").write_text(_log([4.0 - i, 3.0 - i, 2.0 - i / 10]))
        elif i < 6:
            (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.5 + i}) + "\n")
    plan = {"sweep_id": SWEEP, "runs": [{"run_id": r, "selected": True, "notes": ""} for r in RUNS], "queue": []}
    for name in ("sweep-latest.json", f"{SWEEP}.json"):
        (out / "_manifests" / name).write_text(json.dumps(plan))
    (out / "_control" / "sweep.json").write_text(json.dumps({
        "sweep_id": SWEEP, "state": "completed", "reason": "queue finished", "pid": 0,
        "started_at": "2026-12-01T00:00:00+00:00", "ended_at": "2026-12-01T00:01:00+00:00"}))


def settled(out: Path) -> None:
    """Until every file under `out` was last changed (ctime: nothing sets it back) RACY_SECS ago: the kept agent
    may keep what it reads of them from now on."""
    newest = max(p.stat().st_ctime for p in out.rglob("*"))
    wait_until(lambda: time.time() > newest + filecache.RACY_SECS + 0.05, what="the files to settle")


def run_opens(opens: Opens) -> set[tuple[str, str]]:
    return {(folder.name, name) for folder, name in opens.taken() if name in RUN_FILES}


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[tuple[Server, bytes, Opens, Path]]:
    out = tmp_path / "out"
    line = request(tmp_path, wire.SWEEP_STATUS, sweep="", metric_patterns=PATTERNS)  # makes out/_control/agent
    make_sweep(out)
    server = Server()
    opens = Opens([out / rid for rid in RUNS])
    try:
        yield server, line, opens, out
    finally:
        opens.close()
        server.close()


def test_a_repeated_status_opens_no_unchanged_run_file_and_says_what_a_fresh_agent_says(pod):
    server, line, opens, out = pod
    settled(out)
    first = server.ask(line)
    assert first == fresh(line) and first[2] == 0
    rows = {r["run_id"]: r for r in json.loads(first[0])["runs"]}
    assert rows["r01"]["metrics"] == {"loss": 1.9} and rows["r05"]["metrics"] == {"loss": 6.5}, rows
    assert "damaged" in rows["r06"]["note"]
    read_first = run_opens(opens)
    assert ("r03", "stdout.log") in read_first and ("r00", "status.json") in read_first
    assert server.ask(line) == first
    # only the damaged file is read again (a file that does not parse is never kept)
    assert run_opens(opens) == {("r06", "status.json")}


def _mtime_kept(path: Path, text: str) -> None:
    """`path` rewritten in place with `text` (the same size), its mtime and atime put back."""
    before = path.stat()
    assert len(text.encode()) == before.st_size
    with open(path, "r+") as fh:
        fh.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size


def test_a_file_changed_in_any_way_is_read_again_once_quiet(pod):
    server, line, opens, out = pod
    settled(out)
    before = server.ask(line)
    assert server.ask(line) == before
    opens.taken()
    _mtime_kept(out / "r00" / "status.json", _record("r00").replace('"success"', '"skipped"'))
    _mtime_kept(out / "r02" / "summary.json", _record("r02", exit_code=3).replace('"failed"', '"success"'))
    with open(out / "r01" / "stdout.log", "a") as fh:  # a log appended to
        fh.write(_log([0.25]))
    (out / "r08" / "summary.tmp").write_text(_record("r08", exit_code=5))
    os.replace(out / "r08" / "summary.tmp", out / "r08" / "summary.json")  # replaced, as the agent writes
    (out / "r03" / "metrics.jsonl").write_text(json.dumps({"step": 9, "acc": 0.5}) + "\n")  # now the source
    (out / "r09" / "status.json").unlink()
    settled(out)  # quiet again: only the files' identities tell the change
    after = server.ask(line)
    assert after == fresh(line)
    rows = {r["run_id"]: r for r in json.loads(after[0])["runs"]}
    old = {r["run_id"]: r for r in json.loads(before[0])["runs"]}
    assert (old["r00"]["state"], rows["r00"]["state"]) == ("success", "skipped")
    assert (old["r02"]["exit_code"], rows["r02"]["exit_code"]) == (0, 3)
    assert rows["r01"]["metrics"] == {"loss": 0.25} and rows["r03"]["metrics"] == {"acc": 0.5}
    assert rows["r08"]["exit_code"] == 5
    # status.json removed: its end from summary.json now, saying so (the old read had the file)
    assert "status.json is missing" in rows["r09"]["note"] and "status.json is missing" not in old["r09"]["note"]
    assert {("r00", "status.json"), ("r02", "summary.json"), ("r01", "stdout.log"),
            ("r08", "summary.json"), ("r03", "metrics.jsonl")} <= run_opens(opens)
    assert server.ask(line) == after and run_opens(opens) == {("r06", "status.json")}  # kept again


def test_a_file_written_just_now_is_read_by_every_request_until_it_is_quiet(pod):
    server, line, opens, out = pod
    settled(out)
    server.ask(line)
    status = out / "r04" / "status.json"
    for _ in range(5):  # a machine so slow that RACY_SECS passed before the first request tries again
        status.write_text(_record("r04", exit_code=1))
        written = status.stat().st_ctime
        opens.taken()
        first = server.ask(line)
        if time.time() < written + filecache.RACY_SECS:  # the request ran while the file was "racy"
            break
    else:
        pytest.fail("no request ran within RACY_SECS of a write")
    assert ("r04", "status.json") in run_opens(opens)
    again = server.ask(line)
    assert ("r04", "status.json") in run_opens(opens)  # not kept by the first request: read again
    assert again == first == fresh(line)


def test_end_to_end_a_warm_sweep_status_says_a_change_the_cache_holds_an_older_copy_of(ssh_pod: Pod):
    """As a user meets it: `wfops sweep.status` through a warm keeper (the default), answered by the pod's kept agent
    from what it keeps, then a run's summary changed in place with its size and mtime put back: the next warm read
    says the change, as a cold one (its own connection, a fresh agent) does."""
    ssh_pod.configure(WF_PERSIST_SECS="120")
    make_sweep(ssh_pod.outputs)
    settled(ssh_pod.outputs)
    ssh_pod.ok("fsm.reset", states.CHECKED_OUT)  # where sweep.status is allowed; then the keeper keeps the agent
    wait_until(lambda: served(ssh_pod, "fsm.status"), what="a read answered by the kept agent")
    ssh_pod.wf("sweep.status", "--json")  # the kept agent parses the sweep once
    before = ssh_pod.wf("sweep.status", "--json", env=VERBOSE)  # answered from what it kept
    assert KEPT in before.err and before.out, (before.rc, before.err)
    _mtime_kept(ssh_pod.outputs / "r02" / "summary.json", _record("r02", exit_code=3).replace('"failed"', '"success"'))
    settled(ssh_pod.outputs)
    after = ssh_pod.wf("sweep.status", "--json", env=VERBOSE)
    assert KEPT in after.err and after.rc == before.rc, after.err
    rows = {r["run_id"]: r for r in json.loads(after.out)["runs"]}
    assert ({r["run_id"]: r for r in json.loads(before.out)["runs"]}["r02"]["exit_code"], rows["r02"]["exit_code"]) \
        == (0, 3)
    ssh_pod.configure(WF_PERSIST_SECS="0")
    cold = ssh_pod.wf("sweep.status", "--json")
    assert cold.rc == after.rc and json.loads(cold.out)["runs"] == json.loads(after.out)["runs"]
