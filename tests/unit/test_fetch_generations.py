"""A run replaced on the pod since it was fetched (issue 21, part 8): the pod's plan sends all of it, its generation
file first, and names it; the receiver moves the old local copy aside before anything of the new run lands, unless
--merge-replaced. Real tar streams through the real extractor process; the pod's plan from real run dirs."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import wait_until
from tests.unit.test_fetch import feed, tar_bytes
from wfops.agent import fetching
from wfops.agent.states import GENERATION_FILE, Layout
from wfops.artifacts import fetch
from wfops.errors import RemoteError

GEN = GENERATION_FILE


def local_copy(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / "r1" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "r1" / name).write_text(text)


def receive(root, files: dict[str, bytes], merge: bool = False) -> fetch.TarReceiver:
    receiver = fetch.TarReceiver(root, {"r1"}, merge_replaced=merge)
    receiver.meta("plan", json.dumps({"runs": ["r1"], "files": len(files)}))
    feed(receiver, tar_bytes(files))
    receiver.finish()
    return receiver


def test_a_new_generation_starts_a_fresh_folder_and_the_old_one_moves_aside(tmp_path):
    local_copy(tmp_path, {GEN: "sweep-a 1\n", "stdout.log": "old log", "ckpt.pt": "old model"})
    receiver = receive(tmp_path, {f"r1/{GEN}": b"sweep-b 2\n", "r1/stdout.log": b"new log"})
    assert sorted(p.name for p in (tmp_path / "r1").iterdir()) == [GEN, "stdout.log"]  # no old ckpt.pt mixed in
    assert (tmp_path / "r1" / "stdout.log").read_text() == "new log"
    [(run, aside)] = receiver.aside
    assert run == "r1" and re.fullmatch(r"r1\.replaced-\d{8}T\d{6}Z", aside.name) and aside.parent == tmp_path
    assert (aside / "ckpt.pt").read_text() == "old model" and (aside / GEN).read_text() == "sweep-a 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1", aside.name] and receiver.files == 2


def test_the_same_generation_no_local_copy_or_merge_keep_the_folder(tmp_path):
    local_copy(tmp_path, {GEN: "sweep-a 1\n", "ckpt.pt": "model"})
    assert receive(tmp_path, {f"r1/{GEN}": b"sweep-a 1\n", "r1/log": b"more"}).aside == []  # touched, same run
    assert (tmp_path / "r1" / "ckpt.pt").exists()
    merged = receive(tmp_path, {f"r1/{GEN}": b"sweep-c 3\n", "r1/log": b"mixed"}, merge=True)
    assert merged.aside == [] and (tmp_path / "r1" / "ckpt.pt").exists()
    assert (tmp_path / "r1" / GEN).read_text() == "sweep-c 3\n"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert receive(fresh, {f"r1/{GEN}": b"g\n", "r1/log": b"x"}).aside == [] and list(fresh.iterdir()) == [
        fresh / "r1"]
    # a local copy without a generation file (fetched from a dir made before wfops wrote one) is another run
    older = tmp_path / "older"
    local_copy(older, {"ckpt.pt": "old"})
    assert [run for run, _ in receive(older, {f"r1/{GEN}": b"g\n"}).aside] == ["r1"]


def test_the_pods_plan_sends_a_replaced_run_whole_generation_first(tmp_path, capsys):
    pod = Layout(str(tmp_path / "out"))
    run = tmp_path / "out" / "r1"
    run.mkdir(parents=True)
    for name, text in (("a.txt", "alpha"), ("z.txt", "zulu"), (GEN, "sweep-b 2\n")):
        (run / name).write_text(text)
    have = {"r1": {"a.txt": [5, int((run / "a.txt").stat().st_mtime)], "old.pt": [3, 1]}}

    def plan(generations):
        listed = fetching.fetch_plan(pod, have, run="r1", generations=generations).split("\0")[:-1]
        return listed, json.loads(capsys.readouterr().err.split("@wfops-plan ")[1])

    listed, meta = plan({"r1": "sweep-a 1"})  # another generation here: all of it, its generation file first
    assert listed == [f"r1/{GEN}", "r1/a.txt", "r1/z.txt"] and meta["replaced"] == ["r1"] and meta["gone"] == 0
    listed, meta = plan({"r1": "sweep-b 2"})  # the same: file by file, as always
    assert listed == [f"r1/{GEN}", "r1/z.txt"] and meta["replaced"] == [] and meta["gone_names"] == ["r1/old.pt"]
    listed, meta = plan({})  # not asked (--merge-replaced)
    assert meta["replaced"] == [] and "r1/a.txt" not in listed
    (run / GEN).unlink()  # a run dir made before generations: nothing to compare
    assert plan({"r1": "sweep-a 1"})[1]["replaced"] == []


def test_the_pods_plan_reads_no_generation_through_a_link_and_lists_runs_in_one_look(tmp_path, capsys):
    """The plan knows a run's generation file from its listing (regular files only): a link named like one is not
    followed (it counts as no generation, as the link itself is never sent); a run dir that is a link still counts."""
    pod = Layout(str(tmp_path / "out"))
    run = tmp_path / "out" / "r1"
    run.mkdir(parents=True)
    (run / "a.txt").write_text("alpha")
    (tmp_path / "elsewhere").write_text("sweep-b 2\n")
    (run / GEN).symlink_to(tmp_path / "elsewhere")
    have = {"r1": {"a.txt": [5, int((run / "a.txt").stat().st_mtime)]}}
    assert fetching.fetch_plan(pod, have, run="r1", generations={"r1": "sweep-a 1"}) == ""  # nothing replaced
    assert json.loads(capsys.readouterr().err.split("@wfops-plan ")[1])["replaced"] == []
    (tmp_path / "out" / "linked").symlink_to(run)  # a run dir that is a link (os.path.isdir follows it)
    (tmp_path / "out" / "afile").write_text("not a run dir")
    manifests = tmp_path / "out" / "_manifests"
    manifests.mkdir()
    (manifests / "sweep-latest.json").write_text(json.dumps({"runs": [
        {"run_id": rid} for rid in ("r1", "linked", "afile", "missing")]}))
    assert fetching.sweep_runs(pod, "") == ["r1", "linked"]


def test_a_fetch_that_fails_after_moving_the_old_copy_aside_knows_where_it_went(tmp_path):
    """The extraction refuses a later member: the move is done, and the fetch must still say where the copy went."""
    local_copy(tmp_path, {GEN: "sweep-a 1\n", "ckpt.pt": "old model"})
    receiver = fetch.TarReceiver(tmp_path, {"r1"})
    feed(receiver, tar_bytes({f"r1/{GEN}": b"sweep-b 2\n", "r2/x": b"not asked for"}))
    with pytest.raises(RemoteError, match="unexpected path 'r2/x'"):
        receiver.finish()
    [(run, aside)] = receiver.aside
    assert run == "r1" and (aside / "ckpt.pt").read_text() == "old model"


def test_an_aborted_fetch_knows_where_it_moved_the_old_copy(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM mid-stream: the extractor is killed; the line it wrote when it moved the copy is read (it
    flushed it: its stdout is a pipe, buffered, as a user's shell leaves it)."""
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    local_copy(tmp_path, {GEN: "sweep-a 1\n", "ckpt.pt": "old model"})
    receiver = fetch.TarReceiver(tmp_path, {"r1"})
    data = tar_bytes({f"r1/{GEN}": b"sweep-b 2\n", "r1/big.bin": b"x" * (4 << 20)})
    feed(receiver, data[:3 << 20])  # the stream stops mid-file: the extractor waits for the rest
    wait_until(lambda: any(p.name.startswith("r1.replaced-") for p in tmp_path.iterdir()), timeout=20,
               what="the old copy moved aside")
    receiver.abort()
    [(run, aside)] = receiver.aside
    assert run == "r1" and (aside / "ckpt.pt").read_text() == "old model"
    assert not (tmp_path / "r1" / "big.bin").exists()
