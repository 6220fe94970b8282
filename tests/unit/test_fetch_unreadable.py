"""Files on the pod that its SSH user cannot read: the plan names them and does not send them, and the fetch says so
and fails (exit 6) after its summary, instead of saying every file is here (wfops/agent/fetching.py,
wfops/artifacts/summary.py, wfops/artifacts/transfer.tell).

The pod side runs the agent's own plan as a user without the rights a run's files were written with: `nobody` when
the tests run as root (root reads everything), else this user with the files at mode 000.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import POD_PYTHON
from wfops.artifacts.summary import Fetched, report
from wfops.artifacts.transfer import tell
from wfops.errors import RemoteError

ROOT = Path(__file__).resolve().parents[2]
PLAN = """
import json, sys
sys.path.insert(0, sys.argv[3])
from wfops.agent import fetching
from wfops.agent.states import Layout
ids = fetching.fetch_plan(Layout(sys.argv[1]), json.loads(sys.argv[2]), run="r1")
sys.stdout.write(json.dumps(ids.split("\\0")[:-1]))
"""


@pytest.fixture
def outputs() -> Iterator[Path]:
    """An outputs dir any user can walk to (pytest's tmp_path is root's alone), with run r1: two readable files, one
    the plan's user cannot read, and a folder it cannot list."""
    top = Path(tempfile.mkdtemp(prefix="wfops-unreadable-"))
    try:
        top.chmod(0o755)
        run = top / "outputs" / "r1"
        (run / "ckpts").mkdir(parents=True)
        (run / "logs").mkdir()
        (run / "stdout.log").write_text("loss 1.0\n")
        (run / "logs" / "rank0.log").write_text("rank 0\n")
        (run / "model.pt").write_bytes(b"weights")
        (run / "ckpts" / "step_1.pt").write_bytes(b"step 1")
        for p in (top / "outputs", run, run / "logs"):
            p.chmod(0o755)
        for p in (run / "stdout.log", run / "logs" / "rank0.log"):
            p.chmod(0o644)
        (run / "model.pt").chmod(0o600 if os.getuid() == 0 else 0)
        (run / "ckpts").chmod(0o700 if os.getuid() == 0 else 0)
        yield top / "outputs"
    finally:
        for p in top.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(top)


def plan_as_another_user(outputs: Path, have: dict) -> tuple[list[str], dict]:
    """(files the agent lists to send, its plan) when the plan is made by a user who cannot read model.pt or ckpts/."""
    res = subprocess.run([POD_PYTHON, "-I", "-S", "-c", PLAN, str(outputs), json.dumps(have), str(ROOT)],
                         capture_output=True, text=True, cwd="/", user="nobody" if os.getuid() == 0 else None)
    assert res.returncode == 0, res.stderr
    plan_line = next(ln for ln in res.stderr.splitlines() if ln.startswith("@wfops-plan "))
    return json.loads(res.stdout), json.loads(plan_line.split(" ", 1)[1])


def test_the_plan_names_what_its_user_cannot_read_and_lists_only_the_rest(outputs: Path):
    send, plan = plan_as_another_user(outputs, {})
    assert sorted(send) == ["r1/logs/rank0.log", "r1/stdout.log"]
    assert plan["files"] == 2
    assert plan["unreadable"] == 2
    assert sorted(plan["unreadable_names"]) == ["r1/ckpts/", "r1/model.pt"]


def test_files_fetched_before_in_a_folder_that_cannot_be_listed_now_are_not_called_gone(outputs: Path):
    have = {"r1": {"ckpts/step_1.pt": [6, 0], "old.txt": [3, 0], "stdout.log": [9, 0]}}
    _, plan = plan_as_another_user(outputs, have)
    assert plan["gone_names"] == ["r1/old.txt"]  # ckpts/step_1.pt may well be there: unknown, not gone


def test_a_fetch_that_left_unreadable_files_says_its_summary_then_fails_naming_them():
    plan = {"runs": ["r1"], "files": 2, "unchanged": 0, "unreadable": 2, "unreadable_names": ["r1/ckpts/",
                                                                                             "r1/model.pt"]}
    said: list[str] = []
    with pytest.raises(RemoteError) as err:
        tell(Fetched(["/here/r1"], 2, 100, 0.1, plan, []), said.append)
    assert said and said[0].startswith("wfops: fetched 1 run(s): 2 file(s) new or changed, 0 unchanged")
    assert err.value.code == 6
    assert "2 file(s) or folder(s)" in err.value.message
    assert "cannot be read on the pod" in err.value.message
    assert "r1/ckpts/, r1/model.pt" in err.value.message


def test_a_fetch_with_nothing_unreadable_is_not_an_error():
    said: list[str] = []
    tell(Fetched(["/here/r1"], 1, 100, 0.1, {"runs": ["r1"], "files": 1, "unreadable": 0}, []), said.append)
    assert len(said) == 1


def test_files_not_sent_and_files_changed_while_sent_are_said():
    text = report(Fetched(["/here/r1"], 1, 100, 0.1, {"runs": ["r1"], "files": 3}, [], changed=True))
    assert "2 file(s) the pod listed were gone or unreadable by the time they were sent" in text
    assert "changed on the pod while they were sent" in text
    plain = report(Fetched(["/here/r1"], 3, 100, 0.1, {"runs": ["r1"], "files": 3}, []))
    assert "\n" not in plain
