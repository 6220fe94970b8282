"""A supervisor records its run's end where its run dir is now, held by descriptor from the start (supervisor.Home):
a dir moved to _previous/ while it still ended its processes (a lost queue's run, whose run id a new queue started
again) gets its end there, and a newer run's folder at the old path, or a status.json another supervisor owns, is
never written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
SUPERVISE = "import sys; from wfops.agent.supervisor import run_spec; sys.exit(run_spec(sys.argv[1]))"


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    run, flag = tmp_path / "out" / "r1", tmp_path / "go"
    run.mkdir(parents=True)
    spec = {"argv": ["bash", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done; echo trained', str(flag)],
            "status": str(run / "status.json"), "log": str(run / "stdout.log"), "grace": 1, "summary": True}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISE, str(tmp_path / "spec.json")], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    wait_until(lambda: (run / "status.json").exists() and "child_pid" in json.loads((run / "status.json").read_text()),
               timeout=30, what="the run to start")
    return proc, run, flag


def _newer(run: Path) -> str:
    text = json.dumps({"state": "running", "owner": "newer-run", "sweep_id": "sweep-new"})
    (run / "status.json").write_text(text)
    return text


def test_a_supervisor_whose_run_dir_was_moved_records_its_end_there_not_in_the_new_folder(tmp_path):
    proc, run, flag = _start(tmp_path)
    moved = tmp_path / "out" / "_previous" / "r1.1"
    moved.parent.mkdir()
    os.rename(run, moved)  # runs.keep_previous: a new queue started r1 again
    run.mkdir()
    newer = _newer(run)
    flag.touch()
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert (run / "status.json").read_text() == newer and not (run / "summary.json").exists()
    assert json.loads((moved / "status.json").read_text())["state"] == "success"
    assert json.loads((moved / "summary.json").read_text())["state"] == "success"


def test_a_supervisor_writes_no_end_into_a_status_another_supervisor_owns(tmp_path):
    proc, run, flag = _start(tmp_path)
    newer = _newer(run)  # the next attempt's supervisor in the same run dir
    flag.touch()
    proc.wait(timeout=60)
    assert (run / "status.json").read_text() == newer and not (run / "summary.json").exists()
    assert "is no longer this run's dir; its end (success) is not recorded" in proc.stderr.read()
