"""The receiving side of run.fetch, fed a real tar stream by hand: placement, progress, refusals."""

from __future__ import annotations

import io
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
