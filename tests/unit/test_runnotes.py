"""A run's summary beyond its end (wfops.agent.runnotes): the files it wrote into the shared checkout, found by
the supervisor of a real process, and the hint for torch.distributed on a CPU pod."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from wfops.agent import runnotes

ROOT = Path(__file__).resolve().parents[2]


def _checkout(tmp_path):
    repo = tmp_path / "repo"
    for rel in ("train.py", "data/x.txt", ".git/HEAD", ".venv/bin/python", "out/old/ckpt.pt"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x")
    os.symlink(tmp_path, repo / "shards")  # a data link: not followed
    return repo


def _supervise(tmp_path, repo, code: str, state_dir: str = "run") -> dict:
    d = tmp_path / state_dir
    d.mkdir()
    spec = {"argv": [sys.executable, "-c", code], "status": str(d / "status.json"), "log": str(d / "stdout.log"),
            "grace": 1, "checkout": {"root": str(repo), "skip": [str(repo / "out")]}}
    (d / "spec.json").write_text(json.dumps(spec))
    code = ("import json, sys; from wfops.agent import supervisor; "  # its own process: it becomes a subreaper
            "print(json.dumps(supervisor.supervise(json.load(open(sys.argv[1])))))")
    out = subprocess.run([sys.executable, "-c", code, str(d / "spec.json")], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    final = json.loads(out.stdout)
    final.pop("output_tail", None)
    return final


def test_files_a_run_creates_or_changes_in_the_checkout_are_named(tmp_path):
    repo = _checkout(tmp_path)
    code = (f"import os, time; os.chdir({str(repo)!r}); time.sleep(0.01)\n"
            "open('model.pt', 'w').write('m'); open('train.py', 'a').write('y')\n"
            "os.makedirs('__pycache__', exist_ok=True); open('__pycache__/t.pyc', 'w').write('c')\n"
            "open('.git/index', 'w').write('i'); open('out/r1.pt', 'w').write('o'); open('.venv/x', 'w').write('v')\n")
    final = _supervise(tmp_path, repo, code)
    assert final["state"] == "success"
    assert final["checkout_writes"] == ["model.pt", "train.py"] and final["checkout_writes_count"] == 2
    (tmp_path / "run" / "summary.json").write_text("{}")
    runnotes.into_summary(str(tmp_path / "run"), final, "")
    summ = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summ["checkout_writes"] == ["model.pt", "train.py"]
    assert runnotes.status_note(summ) == ("wrote into the shared checkout: model.pt, train.py (give it a path in "
                                          "{out_dir})")


def test_a_run_that_writes_only_its_own_dirs_says_nothing(tmp_path):
    repo = _checkout(tmp_path)
    final = _supervise(tmp_path, repo, f"open({str(repo / 'out' / 'model.pt')!r}, 'w').write('o')")
    assert "checkout_writes" not in final
    (tmp_path / "run" / "summary.json").write_text('{"ok": true}')
    runnotes.into_summary(str(tmp_path / "run"), final, "")
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == {"ok": True}


def test_many_writes_are_counted_and_a_huge_checkout_is_not_compared(tmp_path, monkeypatch):
    summ = {"checkout_writes": [f"f{i}" for i in range(runnotes.NAMED)], "checkout_writes_count": 25}
    assert runnotes.status_note(summ).endswith("f9 and 15 more (give it a path in {out_dir})")
    repo = _checkout(tmp_path)
    monkeypatch.setattr(runnotes, "MAX_FILES", 2)
    assert runnotes.listing(str(repo), []) is None
    assert runnotes.Watch({"root": str(repo), "skip": []}).fields() == {}


def test_the_cpu_hint_needs_a_failed_torchrun_on_a_cpu_pod_with_an_nccl_start_error():
    log = "RuntimeError: Distributed package doesn't have NCCL built in\n"
    failed = {"state": "failed", "cpu_target": True, "launcher": "torchrun"}
    assert "TRAIN_LAUNCHER=python" in runnotes.hint(failed, log)
    assert runnotes.hint(dict(failed, cpu_target=False), log) == ""
    assert runnotes.hint(dict(failed, launcher="python"), log) == ""
    assert runnotes.hint(dict(failed, state="success"), log) == ""
    assert runnotes.hint(failed, "KeyError: 'lr'\n") == ""
