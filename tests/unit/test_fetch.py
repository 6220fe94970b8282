"""The receiving side of run.fetch, fed a real tar stream by hand: placement, progress, refusals."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from wfops import fetch
from wfops.errors import RemoteError


def tar_bytes(files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()


def feed(receiver: fetch.TarReceiver, data: bytes, chunk: int = 65536, pause: float = 0.0) -> None:
    for i in range(0, len(data), chunk):
        receiver(data[i:i + chunk])
        if pause:
            time.sleep(pause)


def test_runs_land_in_place_and_replace_an_old_copy(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "stale.txt").write_text("old")
    receiver = fetch.TarReceiver(tmp_path, {"r1"})
    feed(receiver, tar_bytes({"r1/summary.json": b"{}", "r1/sub/ckpt.pt": b"x" * 1000}))
    placed = receiver.finish()
    assert placed == [tmp_path / "r1"]
    assert sorted(p.name for p in (tmp_path / "r1").rglob("*")) == ["ckpt.pt", "sub", "summary.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["r1"]  # no staging or old copy left behind
    assert receiver.files == 2


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil", "other-run/x"])
def test_paths_outside_the_requested_run_are_refused(tmp_path, name):
    dest = tmp_path / "artifacts"
    receiver = fetch.TarReceiver(dest, {"r1"})
    feed(receiver, tar_bytes({"r1/ok.txt": b"1", name: b"2"}))
    with pytest.raises(RemoteError):
        receiver.finish()
    assert not (tmp_path / "escape.txt").exists() and list(dest.iterdir()) == []


def test_links_pointing_out_are_refused(tmp_path):
    link = tarfile.TarInfo("r1/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    receiver = fetch.TarReceiver(tmp_path, None)
    feed(receiver, tar_bytes({"r1/a": b"1"}, [link]))
    with pytest.raises(RemoteError, match="could not be unpacked"):
        receiver.finish()


def test_progress_is_shown_for_large_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fetch, "PROGRESS_MIN_BYTES", 1000)
    monkeypatch.setattr(fetch, "PROGRESS_EVERY_SECS", 0.1)
    receiver = fetch.TarReceiver(tmp_path, {"big"})
    data = tar_bytes({"big/blob": b"z" * 300_000})
    receiver.meta("size", str(len(data)))
    feed(receiver, data, chunk=20_000, pause=0.05)
    receiver.finish()
    err = capsys.readouterr().err
    assert "wfops: fetching " in err and " MB of 0.3 MB (" in err and "MB/s" in err


# ------------------------------------------------------------------ staging: every exit path, and killed fetches

def staging_dirs(root) -> list:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(fetch.STAGING_PREFIX))


@pytest.fixture
def held_staging(tmp_path):
    """A staging folder whose lock another live process holds: a fetch still running elsewhere."""
    live = tmp_path / f"{fetch.STAGING_PREFIX}live"
    live.mkdir()
    (live / "partial.bin").write_bytes(b"p" * 1000)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()", str(live)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield live
    holder.stdin.close()
    holder.wait(timeout=30)


def test_abandoned_staging_is_removed_and_a_live_one_is_kept(tmp_path, held_staging):
    dead = tmp_path / f"{fetch.STAGING_PREFIX}123-456"  # a fetch killed with SIGKILL left it: nobody holds it
    (dead / "r1").mkdir(parents=True)
    (dead / "r1" / "blob").write_bytes(b"x" * 100_000)
    receiver = fetch.TarReceiver(tmp_path, {"r1"})
    assert not dead.exists() and held_staging.exists()
    feed(receiver, tar_bytes({"r1/a": b"1"}))
    receiver.finish()
    assert staging_dirs(tmp_path) == [held_staging.name]
    assert (held_staging / "partial.bin").is_file()


def test_a_running_fetch_keeps_its_staging_from_other_fetches(tmp_path):
    receiver = fetch.TarReceiver(tmp_path, {"r1"})
    assert fetch.remove_abandoned_staging(tmp_path) == []  # its lock is held (by it and by its extractor)
    assert staging_dirs(tmp_path) == [receiver.staging.name]
    receiver.abort()
    assert staging_dirs(tmp_path) == []


def test_abort_removes_the_staging_even_with_a_stuck_extractor(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "old.txt").write_text("old")
    receiver = fetch.TarReceiver(tmp_path, {"r1"})
    feed(receiver, tar_bytes({"r1/new.txt": b"n" * 10_000}))
    os.kill(receiver.proc.pid, signal.SIGSTOP)  # frozen: it would never read the end of the stream
    receiver.abort()
    assert receiver.proc.returncode is not None
    assert staging_dirs(tmp_path) == [] and (tmp_path / "r1" / "old.txt").read_text() == "old"
    assert not (tmp_path / "r1" / "new.txt").exists()


def test_an_old_copy_caught_between_the_two_renames_goes_back(tmp_path):
    """A fetch killed after moving the old copy aside and before moving the new one in: the next fetch (or the
    interrupted one itself) puts the old copy back instead of deleting it with the staging folder."""
    stale = tmp_path / f"{fetch.STAGING_PREFIX}1-2"
    (stale / fetch.REPLACED / "r1").mkdir(parents=True)
    (stale / fetch.REPLACED / "r1" / "old.txt").write_text("old")
    assert fetch.remove_abandoned_staging(tmp_path) == [stale]
    assert (tmp_path / "r1" / "old.txt").read_text() == "old" and staging_dirs(tmp_path) == []


def test_a_top_level_dot_name_is_refused(tmp_path):
    receiver = fetch.TarReceiver(tmp_path, None)
    feed(receiver, tar_bytes({f"{fetch.REPLACED}/r1/x": b"1"}))
    with pytest.raises(RemoteError, match="unexpected path"):
        receiver.finish()
    assert list(tmp_path.iterdir()) == []
