"""Fan-out on the loopback fleet (tests/fleet.py): what a pod says on stderr while a fleet command runs arrives
with its `[pod] ` prefix, and a fleet command's body, called from Python, returns each pod's data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fleet import Fleet
from tests.integration.test_fleet import _config

_CALL = """
import json, sys
from pathlib import Path
from wfops.settings.load import load_settings
from wfops.targets import resolve
from wfops.tasks.task import list_tasks
settings = load_settings(Path(sys.argv[1]))
print(json.dumps({pod.name: list_tasks(settings, pod)["tasks"][0]["id"] for pod in resolve.pods(settings)}))
"""


def test_a_pods_stderr_lines_arrive_prefixed_and_a_body_called_from_python_returns_data(
        tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    first = fleet.wf(cfg, "task.run", "--id", "t1", "--cmd", "true")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("started task t1") == 3
    assert fleet.wf(cfg, "task.wait", "--id", "t1").returncode == 0
    again = fleet.wf(cfg, "task.run", "--id", "t1", "--cmd", "true", "--force")  # each pod says it kept the old one
    assert again.returncode == 0, again.stderr
    kept = [line for line in again.stderr.splitlines() if "kept the previous t1" in line]
    assert sorted(line.split("]")[0] + "]" for line in kept) == sorted(f"[{p.address}]" for p in fleet.pods), kept
    assert all(line.startswith(f"[{line[1:].split(']')[0]}] wfops: ") for line in kept), kept
    assert "kept the previous" not in again.stdout  # progress is not a pod's section

    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "WF_", "LIUM_"))}
    env.update(HOME=str(tmp_path / "client-home"), WFOPS_KEEPER_DIR=str(tmp_path / "keepers"))
    call = subprocess.run([sys.executable, "-c", _CALL, str(cfg)], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    assert call.returncode == 0, call.stderr
    assert json.loads(call.stdout) == {p.address: "t1" for p in fleet.pods}
