"""The workflow state machine through the CLI: the legal path, refusals that change nothing, enforcement
off, reset, and a custom state file."""

from __future__ import annotations

import pytest

from tests.conftest import Pod


def test_legal_path_and_history(pod: Pod):
    data = pod.ok("fsm.status", "--json").json()
    assert (data["state"], data["exists"]) == ("INIT", False)
    pod.ok("bootstrap")
    data = pod.ok("fsm.status", "--json").json()
    assert data["state"] == "BOOTSTRAPPED"
    assert [(h["from"], h["to"], h["command"]) for h in data["history"]] == [
        ("INIT", "POD_READY", "bootstrap"), ("POD_READY", "BOOTSTRAPPED", "bootstrap")]
    assert data["history"][0]["reason"] == "pod reachable (promoted by bootstrap)"
    table = pod.ok("fsm.status").out
    assert table.startswith("state   BOOTSTRAPPED") and "recent transitions" in table


def test_illegal_command_is_one_line_exit_3_and_changes_nothing(pod: Pod):
    pod.ok("fsm.reset", "SWEEP_RUNNING", "--reason", "pretend")
    before_state = pod.state_file.read_bytes()
    before_env = pod.env_path.read_bytes()
    pod.configure(SWEEP_MATCH="a-change-that-would-be-synced")
    res = pod.wf("bootstrap")
    assert res.rc == 3
    assert res.err.strip().splitlines() == [
        "wfops: bootstrap is not allowed in state SWEEP_RUNNING (allowed: POD_READY, BOOTSTRAPPED, CHECKED_OUT, "
        "SWEEP_COMPLETED); see `fsm.status`, or `fsm.reset STATE` if the pod really is elsewhere"]
    assert pod.state_file.read_bytes() == before_state
    assert pod.env_path.read_bytes() == before_env


def test_sweep_commands_refused_before_checkout(pod: Pod):
    pod.ok("bootstrap")
    for args in (("sweep.status",), ("run.fetch", "x"), ("sweep.stop",)):
        res = pod.wf(*args)
        assert res.rc == 3, args
        assert res.last_err.startswith(f"wfops: {args[0]} is not allowed in state BOOTSTRAPPED (allowed: ")
    assert pod.state()["state"] == "BOOTSTRAPPED"


def test_enforcement_off_records_but_does_not_refuse(pod: Pod):
    pod.ok("fsm.reset", "SWEEP_RUNNING")
    pod.configure(WF_FSM_ENFORCE="0")
    res = pod.ok("bootstrap")
    assert ("wfops: WF_FSM_ENFORCE=0: running bootstrap in state SWEEP_RUNNING (normally allowed: POD_READY, "
            "BOOTSTRAPPED, CHECKED_OUT, SWEEP_COMPLETED)") in res.err
    assert pod.state()["state"] == "BOOTSTRAPPED"


def test_reset_defaults_to_init_and_refuses_unknown_states(pod: Pod):
    pod.ok("bootstrap")
    assert pod.ok("fsm.reset").out.strip() == "workflow state is now INIT"
    last = pod.state()["history"][-1]
    assert (last["from"], last["to"], last["command"], last["reason"]) == ("BOOTSTRAPPED", "INIT", "fsm.reset",
                                                                         "manual reset")
    before = pod.state_file.read_bytes()
    res = pod.wf("fsm.reset", "DONE")
    assert res.rc == 2 and res.last_err.startswith("wfops: unknown state 'DONE': expected one of INIT, POD_READY")
    assert pod.state_file.read_bytes() == before


def test_unknown_state_is_refused_before_connecting(ssh_pod: Pod):
    res, conns, _ = ssh_pod.count("fsm.reset", "nonsense")
    assert res.rc == 2 and conns == 0


@pytest.mark.parametrize("where", ["custom/state.json"])
def test_custom_state_file(pod: Pod, where):
    custom = pod.root / where
    pod.configure(WF_STATE_FILE=str(custom))
    pod.ok("bootstrap")
    assert custom.is_file() and not pod.state_file.exists()
    assert pod.ok("fsm.status", "--json").json()["file"] == str(custom)
