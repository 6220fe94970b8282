"""run.fetch moves only what changed, resumes after a kill, and fetches the runs of an older sweep.

Run dirs are written on the pod by hand (the fetch reads files, whatever wrote them); the local copy is
LOCAL_ARTIFACTS_DIR. A changed file is replaced by a rename, so an unchanged one keeps its inode: that is how
the tests see which files moved.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import WFOPS, Pod, wait_until

OLD = 1_700_000_000  # an mtime in the past, so that a rewrite in the same second still differs


def write(path: Path, data: bytes, mtime: float | None = OLD) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def artifacts(pod: Pod) -> Path:
    return pod.root.parent / "artifacts"


def inodes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_ino for p in root.rglob("*") if p.is_file()}


def summary(res) -> tuple[int, int, int]:
    """(new or changed, unchanged, bytes on the wire) from the fetch's summary line."""
    m = re.search(r"fetched \d+ run\(s\): (\d+) file\(s\) new or changed, (\d+) unchanged, ([\d,]+) bytes on the wire",
                  res.err)
    assert m, res.err
    return int(m.group(1)), int(m.group(2)), int(m.group(3).replace(",", ""))


@pytest.fixture
def fetch_pod(pod: Pod) -> Pod:
    pod.ok("fsm.reset", "CHECKED_OUT")
    run = pod.outputs / "r1"
    write(run / "a.txt", b"alpha")
    write(run / "b.txt", b"bravo")
    write(run / "sub" / "c.txt", b"charlie")
    return pod


@pytest.mark.parametrize("persist", ["0", "60"], ids=["own-connection", "warm-keeper"])
def test_only_new_and_changed_files_move_and_a_deletion_stays_here(fetch_pod: Pod, persist: str):
    pod = fetch_pod
    pod.configure(WF_PERSIST_SECS=persist)
    run, local = pod.outputs / "r1", artifacts(pod) / "r1"
    res = pod.ok("run.fetch", "r1")
    assert res.out.strip() == str(local) and summary(res)[:2] == (3, 0)
    before = inodes(local)
    write(run / "a.txt", b"alpha, longer now")  # modified
    write(run / "d.txt", b"delta")  # added
    (run / "sub" / "c.txt").unlink()  # deleted on the pod
    res = pod.ok("run.fetch", "r1")
    assert summary(res)[:2] == (2, 1)
    assert "wfops: 1 file(s) fetched earlier are no longer on the pod; kept here: r1/sub/c.txt" in res.err
    after = inodes(local)
    assert after["b.txt"] == before["b.txt"] and after["sub/c.txt"] == before["sub/c.txt"]  # untouched
    assert after["a.txt"] != before["a.txt"]
    assert (local / "a.txt").read_bytes() == b"alpha, longer now" and (local / "d.txt").read_bytes() == b"delta"
    assert (local / "sub" / "c.txt").read_bytes() == b"charlie"
    assert (local / "a.txt").stat().st_mtime == OLD  # the pod's mtime travels with the file
    res = pod.ok("run.fetch", "r1")  # nothing changed: nothing on the wire
    assert summary(res) == (0, 3, 0)


def test_same_size_changes_mtime_and_hash(fetch_pod: Pod):
    pod = fetch_pod
    run, local = pod.outputs / "r1", artifacts(pod) / "r1"
    pod.ok("run.fetch", "r1")
    write(run / "b.txt", b"BRAVO", mtime=OLD + 60)  # same size, new content and mtime
    res = pod.ok("run.fetch", "r1")
    assert summary(res)[:2] == (1, 2) and (local / "b.txt").read_bytes() == b"BRAVO"
    os.utime(run / "a.txt", (OLD + 120, OLD + 120))  # touched: same bytes, another mtime
    ino = (local / "a.txt").stat().st_ino
    res = pod.ok("run.fetch", "r1", "--hash")
    assert summary(res)[:2] == (0, 3) and (local / "a.txt").stat().st_ino == ino  # by content: nothing to send
    res = pod.ok("run.fetch", "r1")
    assert summary(res)[:2] == (1, 2) and (local / "a.txt").stat().st_mtime == OLD + 120


# ------------------------------------------------------------------ --all and --sweep ID

def manifest(pod: Pod, name: str, runs: list[str]) -> None:
    path = pod.outputs / "_manifests" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"sweep_id": name, "runs": [{"run_id": r, "selected": True} for r in runs]}))


def test_fetch_all_and_an_older_sweep(ssh_pod: Pod):
    pod = ssh_pod
    pod.ok("fsm.reset", "CHECKED_OUT")
    for rid in ("o1", "o2", "n1"):
        write(pod.outputs / rid / "summary.json", rid.encode())
    manifest(pod, "sweep-20261201T100000Z", ["o1", "o2", "never-ran"])
    manifest(pod, "sweep-latest", ["n1"])
    res = pod.ok("run.fetch", "--sweep", "sweep-20261201T100000Z", "--all")
    assert res.out.split() == [str(artifacts(pod) / "o1"), str(artifacts(pod) / "o2")]
    assert sorted(p.name for p in artifacts(pod).iterdir()) == ["o1", "o2"]
    res = pod.ok("run.fetch", "--all")
    assert res.out.split() == [str(artifacts(pod) / "n1")] and summary(res)[:2] == (1, 0)
    res = pod.ok("run.fetch", "--sweep", "sweep-20261201T100000Z")  # --sweep alone means its runs too
    assert summary(res) == (0, 2, 0)
    res = pod.wf("run.fetch", "--sweep", "sweep-20990101T000000Z")
    assert res.rc == 5 and res.last_err.startswith("wfops: no manifest of sweep sweep-20990101T000000Z on the pod")


@pytest.mark.parametrize("args,message", [
    (("--sweep", "../../etc/passwd", "--all"), "wfops: sweep id '../../etc/passwd' is not valid: expected "
                                               "sweep-<letters, digits or '-'>, as sweep.status shows it"),
    (("--sweep", "sweep-x/../../y"), "wfops: sweep id 'sweep-x/../../y' is not valid"),
    (("r1", "--sweep", "sweep-1"), "wfops: give one RUN_ID, or --all / --sweep ID, not both"),
    (("r1", "--all"), "wfops: give one RUN_ID, or --all / --sweep ID, not both"),
    ((), "wfops: give one RUN_ID, or --all (the latest sweep), or --sweep ID"),
    (("../r1",), "wfops: run id '../r1' is not valid"),
])
def test_bad_fetch_requests_change_nothing(ssh_pod: Pod, args, message):
    res, conns, _ = ssh_pod.count("run.fetch", *args)
    assert res.rc == 2 and res.err.strip().startswith(message) and len(res.err.strip().splitlines()) == 1
    assert conns == 0 and not artifacts(ssh_pod).exists() and not ssh_pod.outputs.exists()


# ------------------------------------------------------------------ resume after a kill

def _extractors(dest: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"wfops.artifacts.fetch" in argv and str(dest).encode() in argv:
                pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("persist", ["0", "60"], ids=["own-connection", "warm-keeper"])
def test_a_killed_fetch_resumes_where_it_stopped(ssh_pod: Pod, persist: str):
    pod = ssh_pod
    pod.configure(WF_PERSIST_SECS=persist)
    pod.ok("fsm.reset", "CHECKED_OUT")
    total = 40
    for i in range(total):
        write(pod.outputs / "big" / f"part-{i:02d}.bin", os.urandom(3 * 1024 * 1024))
    local = artifacts(pod) / "big"
    proc = subprocess.Popen([str(WFOPS), "run.fetch", "big"], env=pod.env(), cwd=pod.root.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: local.is_dir() and any(local.iterdir()), timeout=60, interval=0.002,
                   what="the first file in place")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    wait_until(lambda: not _extractors(artifacts(pod)), timeout=60, what="the killed fetch's extractor to end")
    placed = len(list(local.iterdir()))
    assert 1 <= placed < total, placed
    res = pod.ok("run.fetch", "big")
    assert summary(res)[:2] == (total - placed, placed)
    for i in range(total):
        name = f"part-{i:02d}.bin"
        assert (local / name).read_bytes() == (pod.outputs / "big" / name).read_bytes()
    assert not [p for p in artifacts(pod).iterdir() if p.name.startswith(".incoming-")]


def test_a_growing_log_is_fetched_while_it_is_written(local_pod: Pod):
    pod = local_pod
    pod.ok("fsm.reset", "CHECKED_OUT")
    log = pod.outputs / "live" / "stdout.log"
    write(log, b"")
    writer = subprocess.Popen(["bash", "-c", f'for i in $(seq 1 400); do echo "line $i" >> {log}; sleep 0.005; done'])
    try:
        for _ in range(3):
            pod.ok("run.fetch", "live")
            time.sleep(0.2)
    finally:
        writer.wait(timeout=60)
    pod.ok("run.fetch", "live")
    assert (artifacts(pod) / "live" / "stdout.log").read_bytes() == log.read_bytes()


def test_a_file_that_changes_while_tar_reads_it_is_said_and_the_next_fetch_sends_it_whole(local_pod: Pod):
    """tar's "file changed as we read it" (its exit 1) is a success of the fetch, but the copy here may be cut short
    (or padded with zeros where the file shrank): the summary says so, and the next fetch sends the file again."""
    pod = local_pod
    pod.ok("fsm.reset", "CHECKED_OUT")
    ckpt = pod.outputs / "busy" / "last.pt"
    write(ckpt, os.urandom(32 << 20))
    appending = pod.root.parent / "appending"
    writer = subprocess.Popen([sys.executable, "-c", f"""
import os, sys
fd = os.open({str(ckpt)!r}, os.O_WRONLY | os.O_APPEND)
os.write(fd, b"x")
open({str(appending)!r}, "w").close()
while not os.path.exists({str(appending)!r} + ".stop"):
    os.write(fd, b"x")
"""])
    try:
        wait_until(appending.exists, what="the writer's first append")
        res = pod.ok("run.fetch", "busy")
    finally:
        Path(f"{appending}.stop").touch()
        writer.wait(timeout=60)
    assert "some file(s) changed on the pod while they were sent" in res.err
    again = pod.ok("run.fetch", "busy")
    assert "changed on the pod while" not in again.err
    assert summary(again)[0] == 1
    assert (artifacts(pod) / "busy" / "last.pt").read_bytes() == ckpt.read_bytes()
