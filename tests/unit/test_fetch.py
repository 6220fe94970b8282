"""The receiving side of run.fetch, fed a real tar stream by hand: placement file by file, the local index,
progress, refusals, staging on every exit path."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from wfops.artifacts import fetch, index, staging
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


def test_files_land_in_place_one_by_one_and_other_local_files_stay(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "kept.txt").write_text("fetched earlier, gone on the pod")
    (tmp_path / "r1" / "summary.json").write_text("old")
    receiver = fetch.TarReceiver(tmp_path, {"r1"})
    receiver.meta("plan", '{"runs": ["r1"], "files": 2}')
    feed(receiver, tar_bytes({"r1/summary.json": b"{}", "r1/sub/ckpt.pt": b"x" * 1000}))
    placed = receiver.finish()
    assert placed == [tmp_path / "r1"]
    assert sorted(str(p.relative_to(tmp_path / "r1")) for p in (tmp_path / "r1").rglob("*")) == [
        "kept.txt", "sub", "sub/ckpt.pt", "summary.json"]
    assert (tmp_path / "r1" / "summary.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["r1"]  # no staging left behind
    assert receiver.files == 2


def test_an_empty_stream_is_nothing_to_do_and_starts_no_extractor(tmp_path):
    receiver = fetch.TarReceiver(tmp_path, {"r1"})
    receiver.meta("plan", '{"runs": [], "files": 0}')
    assert receiver.finish() == [] and receiver.files == 0 and list(tmp_path.iterdir()) == []
    assert receiver.proc is None
    started = fetch.TarReceiver(tmp_path, {"r1"})
    started.meta("plan", '{"runs": ["r1"], "files": 1}')  # the plan announces files: the extractor starts
    assert started.proc is not None
    started.abort()


def test_the_local_index_has_size_and_mtime_or_hash(tmp_path):
    (tmp_path / "r1" / "sub").mkdir(parents=True)
    (tmp_path / "r1" / "sub" / "a.txt").write_bytes(b"abc")
    os.utime(tmp_path / "r1" / "sub" / "a.txt", (1_700_000_000.7, 1_700_000_000.7))
    (tmp_path / "r1" / "link").symlink_to("/etc/passwd")
    (tmp_path / ".incoming-1-2").mkdir()
    assert index.local_index(tmp_path, None, by_hash=False) == {"r1": {"sub/a.txt": [3, 1_700_000_000]}}
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert index.local_index(tmp_path, ["r1", "r2"], by_hash=True) == {"r1": {"sub/a.txt": [3, digest]}, "r2": {}}


def test_the_local_index_counts_whole_seconds_rounded_down_as_the_pod(tmp_path):
    """Before 1970 too: -1.5 is -2 (as tar keeps it, and the pod counts it), not int()'s -1."""
    from wfops.agent import fetching

    (tmp_path / "r1").mkdir()
    for name, mtime in (("neg", -1.5), ("neg_whole", -2), ("frac", 1_700_000_000.75)):
        (tmp_path / "r1" / name).write_bytes(b"abc")
        os.utime(tmp_path / "r1" / name, (mtime, mtime))
    have = index.local_index(tmp_path, ["r1"], by_hash=False)["r1"]
    assert have == {"neg": [3, -2], "neg_whole": [3, -2], "frac": [3, 1_700_000_000]}
    for name, entry in have.items():
        full = str(tmp_path / "r1" / name)
        assert fetching.same(full, os.stat(full), entry, by_hash=False)


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil", "other-run/x", "r1/../escape.txt"])
def test_paths_outside_the_requested_run_are_refused(tmp_path, name):
    dest = tmp_path / "artifacts"
    receiver = fetch.TarReceiver(dest, {"r1"})
    feed(receiver, tar_bytes({"r1/ok.txt": b"1", name: b"2"}))
    with pytest.raises(RemoteError):
        receiver.finish()
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in dest.rglob("*")] in ([], ["r1", "ok.txt"])  # what came before the bad member stays


@pytest.mark.parametrize("expected", [{"r1"}, None], ids=["one-run", "all"])
@pytest.mark.parametrize("name", ["r1/../r2/x", "r1/./x", "r1//x", "r1/sub/../../r2/x"])
def test_a_path_with_an_empty_dot_or_dotdot_part_is_refused_and_another_run_stays(tmp_path, name, expected):
    """A fetch of r1 (or of a sweep) that a pod answers with `r1/../r2/x`: refused, r2's file untouched."""
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "x").write_text("r2's own file")
    receiver = fetch.TarReceiver(tmp_path, expected)
    feed(receiver, tar_bytes({name: b"sent for r1"}))
    with pytest.raises(RemoteError, match="unexpected path"):
        receiver.finish()
    assert (tmp_path / "r2" / "x").read_text() == "r2's own file"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["r2", "x"]


def test_links_are_refused(tmp_path):
    link = tarfile.TarInfo("r1/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    receiver = fetch.TarReceiver(tmp_path, None)
    feed(receiver, tar_bytes({"r1/a": b"1"}, [link]))
    with pytest.raises(RemoteError, match="unexpected path 'r1/link'"):
        receiver.finish()
    assert not (tmp_path / "r1" / "link").exists()


def test_a_file_where_a_run_folder_goes_is_one_line_and_stays(tmp_path):
    (tmp_path / "r1").write_text("mine")  # a file of the run's name here: the fetch cannot make the folder
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "sub").write_text("mine too")  # and one where a folder inside a run goes
    for run, name in (("r1", "r1/a"), ("r2", "r2/sub/b")):
        receiver = fetch.TarReceiver(tmp_path, {run})
        feed(receiver, tar_bytes({name: b"1"}))
        with pytest.raises(RemoteError, match=r"cannot make the folder .* a file of that name is in the way; move "
                                              r"it away and fetch again"):
            receiver.finish()
    assert (tmp_path / "r1").read_text() == "mine" and (tmp_path / "r2" / "sub").read_text() == "mine too"


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
    return sorted(p.name for p in root.iterdir() if p.name.startswith(staging.STAGING_PREFIX))


@pytest.fixture
def held_staging(tmp_path):
    """A staging folder whose lock another live process holds: a fetch still running elsewhere."""
    live = tmp_path / f"{staging.STAGING_PREFIX}live"
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
    dead = tmp_path / f"{staging.STAGING_PREFIX}123-456"  # a fetch killed with SIGKILL left it: nobody holds it
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
    assert staging.remove_abandoned_staging(tmp_path) == []  # its lock is held ...
    receiver.start()
    assert staging.remove_abandoned_staging(tmp_path) == []  # ... by it and by its extractor
    assert staging_dirs(tmp_path) == [receiver.staging.name]
    receiver.abort()
    assert staging_dirs(tmp_path) == []


def test_abort_removes_the_staging_even_with_a_stuck_extractor(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "old.txt").write_text("old")
    receiver = fetch.TarReceiver(tmp_path, {"r1"})
    receiver.start()
    os.kill(receiver.proc.pid, signal.SIGSTOP)  # frozen: it would never read the end of the stream
    feed(receiver, tar_bytes({"r1/new.txt": b"n" * 10_000}))
    receiver.abort()
    assert receiver.proc.returncode is not None
    assert staging_dirs(tmp_path) == [] and (tmp_path / "r1" / "old.txt").read_text() == "old"
    assert not (tmp_path / "r1" / "new.txt").exists()


def test_a_local_link_out_of_the_artifacts_is_not_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "artifacts"
    (dest / "r1").mkdir(parents=True)
    (dest / "r1" / "sub").symlink_to(outside)
    receiver = fetch.TarReceiver(dest, {"r1"})
    feed(receiver, tar_bytes({"r1/sub/x.txt": b"1"}))
    with pytest.raises(RemoteError, match="leads out of"):
        receiver.finish()
    assert list(outside.iterdir()) == []


def test_a_top_level_dot_name_is_refused(tmp_path):
    receiver = fetch.TarReceiver(tmp_path, None)
    feed(receiver, tar_bytes({".hidden/r1/x": b"1"}))
    with pytest.raises(RemoteError, match="unexpected path"):
        receiver.finish()
    assert list(tmp_path.iterdir()) == []


def test_the_pod_lists_regular_files_by_folder_and_name_and_follows_no_link(tmp_path):
    from wfops.agent.fetching import run_files

    run = tmp_path / "r1"
    (run / "sub" / "deep").mkdir(parents=True)
    (run / "a").mkdir()
    for name in ("z.txt", "b.txt", "sub/x", "sub/deep/y", "a/w"):
        (run / name).write_text(name)
    (run / "dirlink").symlink_to(tmp_path)  # a link to a folder outside: not walked
    (run / "filelink").symlink_to(run / "b.txt")
    os.mkfifo(run / "fifo")
    found = list(run_files(str(run)))
    assert [rel for rel, _, _ in found] == ["b.txt", "z.txt", "a/w", "sub/x", "sub/deep/y"]  # os.walk's order
    assert all(full == str(run / rel) and st.st_size == len(rel) for rel, full, st in found)
    assert list(run_files(str(tmp_path / "gone"))) == []


def test_the_fetched_run_dirs_are_shown_as_path_resolve_gives_them(tmp_path):
    from wfops.artifacts.summary import shown_folders

    real = tmp_path / "real"
    (real / "r1").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (real / "r2").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "via").symlink_to(real)  # LOCAL_ARTIFACTS_DIR through a link
    runs = [tmp_path / "via" / "r1", tmp_path / "via" / "r2"]
    assert shown_folders(tmp_path / "via", ["r1", "r2"]) == [str(real / "r1"), str(tmp_path / "elsewhere")] == [
        str(p.resolve()) for p in runs]
    assert shown_folders(tmp_path / "via", []) == []


def test_a_fetch_with_nothing_to_copy_starts_no_progress_thread(tmp_path):
    receiver = fetch.TarReceiver(tmp_path, {"r1"})
    receiver.meta("plan", '{"runs": [], "files": 0}')
    receiver.finish()
    assert receiver.progress_thread is None  # nothing to copy: no extractor, no thread to start and join
    copying = fetch.TarReceiver(tmp_path, {"r1"})
    feed(copying, tar_bytes({"r1/a": b"1"}))
    copying.finish()
    assert copying.progress_thread is not None and not copying.progress_thread.is_alive()


def test_the_fetched_runs_are_those_that_are_folders_now(tmp_path):
    from wfops.artifacts.summary import shown_folders

    (tmp_path / "r1").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "r2").symlink_to(tmp_path / "elsewhere")  # a link to a folder counts, as Path.is_dir() says
    (tmp_path / "r3").write_text("a file")
    (tmp_path / "dead").symlink_to(tmp_path / "nowhere")
    names = ["r1", "r2", "r3", "dead", "missing", ".."]
    assert shown_folders(tmp_path, names) == [str(tmp_path / "r1"), str(tmp_path / "elsewhere")]


def test_the_run_folders_shown_are_the_folders_and_links_to_folders_in_the_artifacts_dir(tmp_path):
    """summary.shown_folders (every path of run.fetch shows the run folders with it): folders, links to folders,
    files, links to files, dead links, missing names, names that leave the folder, a folder that is gone."""
    from wfops.artifacts.summary import shown_folders

    real = tmp_path / "real"
    (real / "r1").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (real / "r2").symlink_to(tmp_path / "elsewhere")
    (real / "r3").write_text("a file")
    (real / "file-link").symlink_to(real / "r3")
    (real / "dead").symlink_to(tmp_path / "nowhere")
    (tmp_path / "via").symlink_to(real)  # LOCAL_ARTIFACTS_DIR through a link
    names = ["r2", "r1", "r3", "file-link", "dead", "missing"]
    for dest in (tmp_path / "via", real):
        assert shown_folders(dest, names) == [str(tmp_path / "elsewhere"), str(real / "r1")] == [
            str((dest / name).resolve()) for name in ("r2", "r1")]
    assert shown_folders(real, ["..", "../real/r1", "/etc"]) == []  # only entries of the folder itself
    assert shown_folders(tmp_path / "gone", ["r1"]) == []
