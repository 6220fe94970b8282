"""local_sync's rsync writes the files it is copying under temporary names outside what run.fetch sends: a fetch
during a sync never brings a half-written `.NAME.XXXXXX` home, where it would stay for good as a file "gone on the
pod" (wfops/agent/supervisor.SyncLoop, wfops/agent/fetching.run_files)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.inotify import IN_CREATE, Opens
from wfops.agent.fetching import run_files
from wfops.agent.states import SYNC_TMP_DIR
from wfops.agent.supervisor import SyncLoop


def test_a_sync_creates_no_file_under_a_temporary_name_in_the_run_dir(tmp_path: Path):
    src, dst = tmp_path / "fast", tmp_path / "run"
    (src / "ckpts").mkdir(parents=True)
    (dst / "ckpts").mkdir(parents=True)
    (src / "ckpts" / "last.pt").write_bytes(os.urandom(4 << 20))
    (src / "stdout.log").write_text("step 1\n")
    created = Opens([dst, dst / "ckpts"], IN_CREATE)
    try:
        rc = SyncLoop(f"{src}/", f"{dst}/", 1e9, str(tmp_path / "sync.log"), start=False).final()
        names = [name for _, name in created.taken()]
    finally:
        created.close()
    assert rc == 0, (tmp_path / "sync.log").read_text()
    assert names == [SYNC_TMP_DIR]  # each file came in by a rename from there, none was written in place
    assert (dst / "ckpts" / "last.pt").read_bytes() == (src / "ckpts" / "last.pt").read_bytes()
    assert (dst / "stdout.log").read_text() == "step 1\n"
    assert not list((dst / SYNC_TMP_DIR).iterdir())


def test_the_fetch_plan_leaves_out_the_sync_folder_of_a_run_but_not_a_folder_of_that_name_deeper(tmp_path: Path):
    (tmp_path / SYNC_TMP_DIR).mkdir()
    (tmp_path / SYNC_TMP_DIR / ".last.pt.Ab12Cd").write_bytes(b"half")
    (tmp_path / "sub" / SYNC_TMP_DIR).mkdir(parents=True)
    (tmp_path / "sub" / SYNC_TMP_DIR / "mine.txt").write_text("the run's own")
    (tmp_path / "stdout.log").write_text("x")
    assert [rel for rel, _, _ in run_files(str(tmp_path))] == ["stdout.log", f"sub/{SYNC_TMP_DIR}/mine.txt"]
