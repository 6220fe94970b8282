"""Trying to break a managed sweep on a Lium pod from outside (tests/lium/test_recover.py's rig: the real lium CLI
against the fake API, loopback sshd pods, a shared "volume"): two `sweep.wait --recover` in two terminals at once,
and a managed command run again after Ctrl-C while the replacement it rented is down."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.lium import test_recover
from tests.lium.fake_lium import FakeLium, FakePod
from tests.lium.test_recover import Rig, _lines, _resumed, _start, rent_settings
from tests.realparts import SSHD, descendants

rig = test_recover.rig  # the fixture: test_recover's rig

LONG_RUN = "r1,config/train_tiny.py,1,steps=150 every=5 step_secs=0.15,,1,"  # still runs a while after it resumed
# for the tests in which nothing happens after r1 resumed but its end (which they wait for): ~11 s of steps left
# after step 7 (the loss comes right after it) and after the resume, not ~21 s
RUN = LONG_RUN.replace("steps=150", "steps=80")


def test_two_managed_commands_at_once_rent_one_replacement(rig: Rig) -> None:
    _start(rig, [RUN])
    wait_until(lambda: "step 7" in rig.log("r1"), timeout=60, what="r1 past its first checkpoint")
    first = rig.managed()
    assert first.stderr is not None
    assert first.stderr.readline().startswith("wfops: managing sweep-")
    second = rig.managed()  # another terminal
    rig.lose(rig.first, rig.original.id)
    _, err = first.communicate(timeout=400)
    _, err2 = second.communicate(timeout=400)
    assert first.returncode == 0, err
    rented = [i for i in rig.api.pods if i != rig.original.id]
    assert len(rented) == 1 and len(rig.servers) == 1, (rented, err, err2)  # one replacement, not two
    assert second.returncode == 10, err2
    assert len(err2.splitlines()) == 1 and "another `sweep.wait --recover` (pid " in err2, err2  # one line
    assert "manages pod train already" in err2, err2


def test_a_managed_command_run_again_while_the_replacement_it_rented_is_down_removes_it_and_counts_on(rig: Rig) -> None:
    _start(rig, [LONG_RUN])
    wait_until(lambda: "step 7" in rig.log("r1"), timeout=60, what="r1 past its first checkpoint")
    first = rig.managed()
    rig.lose(rig.first, rig.original.id)
    wait_until(lambda: _resumed(rig) is not None, timeout=300, what="r1 resumed on the replacement")
    first.send_signal(signal.SIGINT)  # Ctrl-C: the pods stay
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    rented = next(i for i in rig.api.pods if i != rig.original.id)
    rig.lose(rig.servers[0], rented)  # the replacement is lost while no managed command runs
    again = rig.managed()  # `inv sweep.wait --recover`, as the Ctrl-C line says: the pod is down at its start
    _, err = again.communicate(timeout=400)
    lines = _lines(err)
    assert again.returncode == 0, err
    assert any(ln.startswith("wfops: removed lost pod ") and rented in ln for ln in lines), err  # it bills no more
    assert rented not in rig.api.pods, err
    assert any("(recovery 2/3)" in ln for ln in lines), err  # RECOVER_MAX counts across managed commands


def test_ctrl_c_while_the_replacement_is_prepared_then_running_it_again_prepares_it_and_the_run_resumes(
        rig: Rig) -> None:
    _start(rig, [RUN])
    wait_until(lambda: "step 7" in rig.log("r1"), timeout=60, what="r1 past its first checkpoint")
    first = rig.managed()
    assert first.stderr is not None
    rig.lose(rig.first, rig.original.id)
    seen = ""
    while not seen.startswith("wfops: rented pod "):
        seen = first.stderr.readline()
        assert seen, "the managed command ended before it rented a replacement"
    first.send_signal(signal.SIGINT)  # Ctrl-C while the replacement is waited for, bootstrapped, checked out
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert "every pod stays as it is" in err and "`inv sweep.wait --recover`" in err.splitlines()[-1], err
    again = rig.managed()  # as the last line says
    out, err = again.communicate(timeout=400)
    assert again.returncode == 0, err
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {"r1": "success"}
    assert (rig.root / "home1" / "repo" / ".git").is_dir(), err  # it was checked out after all
    assert (_resumed(rig) or 0) > 0, rig.log("r1")
    assert len(rig.servers) == 1, err  # one replacement, not two
    assert "(recovery 2/" not in err, err  # one loss, one recovery


@pytest.mark.parametrize("status", [402, 403])  # lium: budget exceeded, permission denied (its exit 6)
def test_a_quota_refusal_of_the_replacement_is_said_at_once_not_retried(
        status: int, tmp_path: Path, sshd: SSHD, fake: FakeLium, lium_bin: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from wfops.errors import LiumError
    from wfops.targets.providers import lium

    settings = rent_settings(tmp_path, sshd, fake, monkeypatch)
    fake.rent_refusals = [status] * 50  # the account cannot rent: waiting does not change that
    said: list[str] = []
    with pytest.raises(LiumError) as refused:
        lium.rent_replacement(lium.cli("sweep.wait --recover", settings), settings, 1.0, said.append)
    assert said == [], said  # no "trying again in 1s (1/4)", 2s, 4s ...
    assert refused.value.message.startswith("Lium refused to rent a replacement (lium up: "), refused.value.message
    assert "hint: " in refused.value.message and "waiting would not change that" in refused.value.message
    assert fake.count("POST", f"/executors/{fake.executor['id']}/rent") == 1 and not fake.pods


def test_a_replacement_lost_while_it_is_checked_out_is_one_more_loss_and_replaced_in_turn(rig: Rig) -> None:
    machine, rented = rig.rent_machine, []

    def rent_then_lose_the_first_during_its_checkout(pod: FakePod) -> None:
        machine(pod)
        rented.append(pod.id)
        if len(rig.servers) == 1:
            server = rig.servers[0]
            assert server.home is not None
            repo = server.home / "repo"

            def lose_it() -> None:
                wait_until(repo.exists, timeout=300, what="the replacement's checkout began")
                rig.lose(server, pod.id)

            threading.Thread(target=lose_it, daemon=True).start()

    rig.api.on_rent = rent_then_lose_the_first_during_its_checkout
    _start(rig, [RUN])
    wait_until(lambda: "step 7" in rig.log("r1"), timeout=60, what="r1 past its first checkpoint")
    managed = rig.managed()
    rig.lose(rig.first, rig.original.id)
    out, err = managed.communicate(timeout=500)
    lines = _lines(err)
    assert managed.returncode == 0, err
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {"r1": "success"}
    first, second = rented
    assert any("was lost while it was prepared: Lium reports it FAILED" in ln and first in ln for ln in lines), err
    assert any(ln.startswith("wfops: removed lost pod ") and first in ln for ln in lines), err
    assert first not in rig.api.pods and second in rig.api.pods and any("(recovery 2/3)" in ln for ln in lines), err
    assert (_resumed(rig) or 0) > 0, rig.log("r1")


def test_a_silent_pod_the_sweep_did_not_rent_that_lium_still_runs_is_said_to_maybe_run_the_runs_twice(
        rig: Rig) -> None:
    _start(rig, [LONG_RUN.replace("steps=150", "steps=900")])
    wait_until(lambda: "step 7" in rig.log("r1"), timeout=60, what="r1 past its first checkpoint")
    managed = rig.managed()
    assert managed.stderr is not None
    assert rig.first.proc is not None
    for pid in [rig.first.proc.pid, *descendants(rig.first.proc.pid)]:  # cut off: its sshd and every connection
        os.kill(pid, signal.SIGKILL)  # (its queue and r1 go on; Lium still reports it RUNNING)
    seen: list[str] = []
    while not any("left as it is" in ln for ln in seen):
        seen.append(managed.stderr.readline())
        assert seen[-1], seen
    managed.send_signal(signal.SIGINT)
    managed.communicate(timeout=120)
    left = next(ln for ln in seen if "left as it is" in ln)
    assert "Lium reports it RUNNING, so it may still be running this sweep's runs" in left, left
    assert f"lium rm {rig.original.id} -y" in left and rig.original.id in rig.api.pods, left  # said, not removed


def test_past_recover_max_a_lost_pod_the_sweep_rented_is_removed_not_left_billing(rig: Rig) -> None:
    with rig.config.open("a") as cfg:
        cfg.write("RECOVER_MAX='1'\n")
    _start(rig, [LONG_RUN])
    wait_until(lambda: "step 7" in rig.log("r1"), timeout=60, what="r1 past its first checkpoint")
    managed = rig.managed()
    rig.lose(rig.first, rig.original.id)
    wait_until(lambda: (_resumed(rig) or 0) > 0, timeout=300, what="r1 resumed on the replacement")
    rented = next(i for i in rig.api.pods if i != rig.original.id)
    rig.lose(rig.servers[0], rented)  # lost again: RECOVER_MAX=1 is spent
    _, err = managed.communicate(timeout=300)
    assert managed.returncode == 8, err
    assert "spent its RECOVER_MAX=1 recoveries: stopping" in err.splitlines()[-1], err
    assert any(ln.startswith("wfops: removed lost pod ") and rented in ln for ln in _lines(err)), err
    assert rented not in rig.api.pods and rig.original.id in rig.api.pods, err  # ours removed, the user's left
    assert len(rig.servers) == 1, err  # nothing more rented


def test_ctrl_c_while_lium_rents_the_replacement_spends_no_recovery_and_running_again_recovers(rig: Rig) -> None:
    with rig.config.open("a") as cfg:
        cfg.write("RECOVER_MAX='1'\n")
    _start(rig, [RUN])
    wait_until(lambda: "step 7" in rig.log("r1"), timeout=60, what="r1 past its first checkpoint")
    rig.api.slow[("POST", "/executors")] = 20  # the rent is carried out, its answer comes late
    first = rig.managed()
    assert first.stderr is not None
    rig.lose(rig.first, rig.original.id)
    seen = ""
    while not seen.startswith("lium: renting"):
        seen = first.stderr.readline()
        assert seen, "the managed command ended before lium rented"
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert "go on with `inv sweep.wait --recover`" in err.splitlines()[-1], err
    rig.api.slow.clear()
    again = rig.managed()
    out, err = again.communicate(timeout=400)
    assert again.returncode == 0, err  # not "spent its RECOVER_MAX=1 recoveries": nothing was replaced before
    assert any("(recovery 1/1)" in ln for ln in _lines(err)), err
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {"r1": "success"}
