"""Hand-made bad wire data through the real agent on a real pod (sshd on loopback, a checked-out pod whose good
sweep would start): a bad request, a bad manifest, a bad sweep.add entry are each refused with exit 2 and one
line naming the field, and nothing on the pod changes (no state, no manifest, no tmux session, no sweep)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

from tests.conftest import Pod, keepers_in
from tests.integration.test_agent_fleet import start
from tests.integration.test_sweeps import HEADER, ssh_swept, wait_sweep  # noqa: F401 - fixture
from wfops.agent import wire
from wfops.agent.states import EXIT_USAGE
from wfops.settings.load import load_settings
from wfops.sweeps.launch_script import scripts
from wfops.sweeps.model import exec_block, parse_csv, plan_runs, queue_entries
from wfops.transport.command import PodCommand

ROWS = "r1,config/train_tiny.py,1,,\nr2,config/train_tiny.py,2,,\n"


def snapshot(pod: Pod) -> dict[str, str]:
    """Every file under the pod's outputs with a hash of its content (the agent's bytecode cache aside), and the
    tmux sessions of its server."""
    files = {str(p.relative_to(pod.outputs)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(pod.outputs.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}
    files["<tmux>"] = pod.tmux("list-sessions", "-F", "#{session_name}").stdout
    return files


def send(pod: Pod, command: str, request: dict) -> tuple[int, bytes, list[str]]:
    """One exec of the agent with `request` as it travels on stdin; (exit code, stdout, error lines)."""
    with keepers_in(pod.keeper_dir), PodCommand(command, load_settings(pod.write_config(), environ={})) as cmd:
        res = cmd.exec("agent.sh.j2", request=request)
    errors = [] if res.error is None else [f"@wfops-error {res.error.code} {res.error.message}"]
    return res.code, res.stdout, errors


def request_for(pod: Pod, command: str, agent_command: str, **data: object) -> dict:
    with keepers_in(pod.keeper_dir), PodCommand(command, load_settings(pod.write_config(), environ={})) as cmd:
        return dict(cmd.request(agent_command, data))


def good_manifest(pod: Pod) -> dict:
    settings = load_settings(pod.write_config(), environ={})
    runs = parse_csv(HEADER + ROWS)
    sid = "sweep-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return {"sweep_id": sid, "csv": {"name": "s.csv"}, "wandb_group": sid, "force": False, "fail_fast": False,
            "runs": plan_runs(settings, runs, {r.run_id for r in runs}),
            "queue": queue_entries(settings, runs, sid, scripts(settings, runs)), "exec": exec_block(settings)}


def test_a_bad_request_or_manifest_is_refused_at_the_door_and_changes_nothing(ssh_swept: Pod):  # noqa: F811
    pod = ssh_swept
    before = snapshot(pod)
    bad_request = request_for(pod, "sweep.status", wire.SWEEP_STATUS)
    bad_request["prelude"] = dict(bad_request["prelude"], enforce="yes")
    code, out, errors = send(pod, "sweep.status", bad_request)
    assert (code, out) == (EXIT_USAGE, b"")
    assert errors == ["@wfops-error 2 request: prelude.enforce must be bool, not 'yes'"]

    manifest = good_manifest(pod)
    del manifest["queue"][1]["run_id"]
    request = request_for(pod, "sweep.start", wire.SWEEP_START, manifest=manifest, csv_text=HEADER + ROWS,
                          session=pod.session + "-sw")
    code, out, errors = send(pod, "sweep.start", request)
    assert (code, out) == (EXIT_USAGE, b"")
    assert errors == ["@wfops-error 2 sweep-start: manifest.queue[1].run_id is missing"]
    manifest = good_manifest(pod)
    manifest["exec"]["retries"] = "3"
    request["data"]["manifest"] = manifest
    assert send(pod, "sweep.start", request)[2] == ["@wfops-error 2 sweep-start: manifest.exec.retries must be int, "
                                                   "not '3'"]
    assert snapshot(pod) == before
    assert pod.state()["state"] == "CHECKED_OUT"


def test_a_bad_sweep_add_entry_is_refused_and_the_running_sweep_keeps_its_manifest(ssh_swept: Pod):  # noqa: F811
    pod = ssh_swept
    sid = start(pod, ROWS)
    wait_sweep(pod)
    manifest_file = pod.outputs / "_manifests" / f"{sid}.json"
    kept = manifest_file.read_bytes()
    settings = load_settings(pod.write_config(), environ={})
    runs = parse_csv(HEADER + "r3,config/train_tiny.py,3,,\n")
    entries = queue_entries(settings, runs, sid, scripts(settings, runs))
    entries[0]["node"] = {"rank": 0, "nnodes": 2}
    request = request_for(pod, "sweep.add", wire.SWEEP_ADD, runs=plan_runs(settings, runs, {"r3"}), entries=entries,
                          session=pod.session + "-sw", exec_block=exec_block(settings))
    code, _, errors = send(pod, "sweep.add", request)
    assert code == EXIT_USAGE
    assert errors == ["@wfops-error 2 sweep-add: entries[0].node.endpoint is missing"]
    assert manifest_file.read_bytes() == kept
    assert not Path(pod.outputs / "r3").exists()


def test_bools_for_numbers_non_finite_numbers_and_unknown_states_are_refused_at_the_door(ssh_swept: Pod):  # noqa: F811
    # BUG (review of the typed wire): a handler's plain int/float argument took a bool (`tail: true`), NaN or
    # Infinity (net-probe's timeout NaN or -1 was a ValueError traceback, exit 1), the manifest's numbers took
    # NaN/Infinity (JSON's NaN parses in Python), and fsm-reset wrote any string as the workflow state
    pod = ssh_swept
    before = snapshot(pod)
    cases = [
        ("run.logs", wire.RUN_LOGS, {"run_id": "r1", "tail": True},
         "run-logs: argument tail must be int, not True"),
        ("run.logs", wire.RUN_LOGS, {"run_id": "r1", "rank": False},
         "run-logs: argument rank must be int, not False"),
        ("sweep.start", wire.NET_PROBE, {"host": "127.0.0.1", "ports": [1], "timeout": float("nan")},
         "net-probe: argument timeout must be a finite number, not nan"),
        ("sweep.start", wire.NET_PROBE, {"host": "127.0.0.1", "ports": [1], "timeout": -1},
         "net-probe: timeout must be more than 0 seconds, not -1"),
        ("sweep.start", wire.NET_LISTEN, {"ports": [40000], "secs": float("inf")},
         "net-listen: argument secs must be a finite number, not inf"),
        ("fsm.reset", wire.FSM_RESET, {"to": "NOPE"},
         "fsm-reset: NOPE is not a workflow state (INIT, POD_READY, BOOTSTRAPPED, CHECKED_OUT, SWEEP_RUNNING, "
         "SWEEP_COMPLETED)"),
    ]
    for command, agent_command, data, line in cases:
        code, out, errors = send(pod, command, request_for(pod, command, agent_command, **data))
        assert (code, out, errors) == (EXIT_USAGE, b"", [f"@wfops-error 2 {line}"]), (data, out, errors)
    manifest = good_manifest(pod)
    manifest["exec"]["retry_backoff_secs"] = float("nan")
    request = request_for(pod, "sweep.start", wire.SWEEP_START, manifest=manifest, csv_text=HEADER + ROWS,
                          session=pod.session + "-sw")
    assert send(pod, "sweep.start", request)[2] == [
        "@wfops-error 2 sweep-start: manifest.exec.retry_backoff_secs must be a finite number, not nan"]
    assert snapshot(pod) == before
    assert pod.state()["state"] == "CHECKED_OUT"
