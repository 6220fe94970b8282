"""A run's rendezvous port taken by another process between the queue's check (slots.pick_port) and torchrun's own
listen (a torch import later: many seconds on a busy machine, where parallel jobs pick ports from the same range)
failed the run (CI: test_kill_9_of_torchrun_ends_its_workers[local] waited 159 s for workers that never started).
Now the same attempt starts again on another port; the failed start's files are kept aside, not counted as an
attempt."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

from tests.conftest import Pod, wait_until
from tests.integration.test_sweeps import local_swept, states, wait_sweep, write_csv  # noqa: F401 - fixture


def _port(command: Path) -> int | None:
    try:
        m = re.search(r"--rdzv-endpoint=localhost:(\d+)", command.read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def test_a_run_whose_rendezvous_port_was_taken_starts_again_on_another_port(local_swept: Pod):  # noqa: F811
    pod = local_swept
    pod.ok("sweep.start", "--csv", str(write_csv(pod, "taken,config/train_tiny.py,1,sleep=1,\n")))
    run = pod.outputs / "taken"
    port = wait_until(lambda: _port(run / "command.sh"), timeout=60, interval=0.002, what="the run's command.sh")
    thief = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # another job takes the port before torchrun listens
    try:
        thief.bind(("", port))
        thief.listen(1)
        data = wait_sweep(pod)
    finally:
        thief.close()
    assert states(data) == {"taken": "success"}, (run / "stdout.log").read_text()[-3000:]
    assert json.loads((run / "args.json").read_text())["world_size"] == 2  # both workers ran, once
    assert _port(run / "command.sh") != port
    aside = run / "attempts" / "1-port-1"
    assert "EADDRINUSE" in (aside / "stdout.log").read_text() or "in use" in (aside / "stdout.log").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert [a.get("attempt") for a in summary["attempts"]] in ([None], [1])  # one attempt, not two
