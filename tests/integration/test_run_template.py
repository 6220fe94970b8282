"""A project's own launch script (docs/sweeps.md: Launch script) through the real queue: a run_command.sh.j2 beside
workflow.env that exports variables and wraps the launcher reaches the training script on every attempt, hostile
overrides stay literal in it, and a template error is one line before the pod is asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Pod, TrainingRepo
from tests.integration.test_sweeps import _swept, args_of, states, wait_sweep, write_csv

TEMPLATE = """\
#!/usr/bin/env bash
set -a; . {{ rt.env_file }}; set +a
cd {{ rt.workdir }} || exit 2
{{ rt.exports }}
export WFT_RUN={{ run_id }} WFT_ATTEMPT={{ rt.attempt }} WFT_OUT={{ rt.out_dir }}
{% for k, v in overrides %}
{% if k == "note" %}
export WFT_NOTE={{ v }}
{% endif %}
{% endfor %}
exec env WFT_WRAPPED={{ rt.name }}-{{ rt.nproc }} {{ rt.launcher }}
"""


@pytest.fixture
def ssh_swept(ssh_pod: Pod, training_repo: TrainingRepo, pod_python: str, checked_out: Path) -> Pod:
    return _swept(ssh_pod, training_repo, pod_python, checked_out)


def test_a_template_beside_workflow_env_wraps_every_attempt_and_keeps_overrides_literal(ssh_swept: Pod):
    pod = ssh_swept
    pod.configure(RUN_RETRIES="1", RETRY_BACKOFF_SECS="0")
    (pod.config_path.parent / "run_command.sh.j2").write_text(TEMPLATE)
    pwned, marker = pod.root / "pwned", pod.root / "failed-once"
    note = f"$(touch {pwned}) `touch {pwned}` it's"
    csv = write_csv(pod, [["wrapped", "config/train_tiny.py", "3", f"note=\"{note}\" fail_once={marker}", ""]])
    pod.ok("sweep.start", "--csv", str(csv))
    data = wait_sweep(pod)
    assert states(data) == {"wrapped": "success"}
    assert marker.exists()  # attempt 1 failed (a pretend NCCL error), attempt 2 ran the same template
    recorded = json.loads((pod.outputs / "wrapped" / "args.json").read_text())
    assert recorded["wft_env"] == {"WFT_RUN": "wrapped", "WFT_ATTEMPT": "2", "WFT_OUT": str(pod.outputs / "wrapped"),
                                   "WFT_NOTE": note, "WFT_WRAPPED": "wrapped-2"}
    assert f"note={note}" in args_of(pod, "wrapped")
    assert not pwned.exists()
    first = (pod.outputs / "wrapped" / "attempts" / "1" / "command.sh").read_text()
    assert "export WFT_RUN=wrapped WFT_ATTEMPT=1 " in first and "exec env WFT_WRAPPED=wrapped-2 " in first


@pytest.mark.parametrize(("template", "says"), [
    ("#!/usr/bin/env bash\n{% for x in %}\n", ":2: Expected an expression"),
    ("#!/usr/bin/env bash\nexec env A={{ nope }} {{ rt.launcher }}\n", ":2: 'nope' is undefined"),
])
def test_a_template_error_is_one_line_and_the_pod_is_not_asked(ssh_swept: Pod, template: str, says: str):
    pod = ssh_swept
    path = pod.config_path.parent / "run_command.sh.j2"
    path.write_text(template)
    csv = write_csv(pod, "r1,config/train_tiny.py,1,,\n")
    for command in ("sweep.validate", "sweep.start", "sweep.add"):
        res, conns, _ = pod.count(command, "--csv", str(csv))
        assert (res.rc, conns) == (2, 0), res.err
        assert res.err.splitlines() == [res.last_err]
        assert res.last_err.startswith(f"wfops: run template {path}{says}"), res.last_err
    assert not (pod.outputs / "_manifests").exists() and pod.state()["state"] == "CHECKED_OUT"
    pod.configure(RUN_TEMPLATE=str(pod.root / "missing.j2"))
    res, conns, _ = pod.count("sweep.start", "--csv", str(csv))
    assert (res.rc, conns) == (2, 0)
    assert res.err.splitlines() == [f"wfops: run template {pod.root / 'missing.j2'}: cannot read it: No such file or "
                                    "directory; nothing was started (RUN_TEMPLATE, docs/sweeps.md: Launch script)"]
