"""Issue 19, part 1: every command gets its pod(s) from wfops.targets.resolve, so a destructive command never picks
a pod outside the fleet; `pod.down` on a fleet names the pods; an interrupted `pod.up --count N` removes every pod
it rented (or prints one `lium rm` line for each it could not remove). The real lium CLI against the fake API."""

from __future__ import annotations

import time

from tests.conftest import WFOPS
from tests.lium.conftest import LiumPod
from tests.lium.fake_lium import FakeLium
from tests.lium.test_failures import Running
from tests.slowness import scaled

BOTH = ("wfops: config: LIUM_TARGET=victim and LIUM_TARGETS=fa,fb both name the target: set LIUM_TARGET (one pod) "
        "or LIUM_TARGETS (a fleet), not both")


def deletes(fake: FakeLium) -> list[str]:
    return [p for m, p in fake.requests if m == "DELETE"]


def test_a_config_with_both_a_target_and_a_fleet_is_refused_by_every_command(lpod: LiumPod, fake: FakeLium):
    victim, fa, fb = fake.add_pod("victim"), fake.add_pod("fa"), fake.add_pod("fb")
    for pod in (victim, fa, fb):
        lpod.pin(pod)
    lpod.configure(LIUM_TARGETS="fa,fb", LIUM_TARGET="victim")
    for args in (("pod.down", "--yes"), ("pod.ssh-config", "--print"), ("config.show",), ("fsm.status",)):
        res = lpod.wf(*args)
        assert res.rc == 2, (args, res.err)
        assert res.last_err == BOTH, args
    assert deletes(fake) == [] and set(fake.pods) == {victim.id, fa.id, fb.id}
    assert not (lpod.home / ".ssh" / "wfops_config").exists()


def test_ops_default_host_beside_a_fleet_is_refused_too(lpod: LiumPod, fake: FakeLium):
    lpod.configure(LIUM_TARGETS="fa,fb", OPS_DEFAULT_HOST="local")
    res = lpod.wf("pod.down", "--yes")
    assert res.rc == 2
    assert res.last_err == ("wfops: config: OPS_DEFAULT_HOST=local and LIUM_TARGETS=fa,fb both name the target: set "
                            "OPS_DEFAULT_HOST (one pod) or LIUM_TARGETS (a fleet), not both")


def test_down_on_a_fleet_without_wf_pod_names_the_pods_and_removes_none(lpod: LiumPod, fake: FakeLium):
    fa, fb = fake.add_pod("fa"), fake.add_pod("fb")
    lpod.configure(LIUM_TARGETS="fa,fb")
    res = lpod.wf("pod.down", "--yes")
    assert res.rc == 2, res.err
    program = "wfops" if "wfops pod.down" in res.last_err else str(WFOPS)  # the program as run: on PATH or not
    assert res.last_err == ("wfops: pod.down removes one pod and the config names a fleet of 2 pods (fa, fb): "
                            f"choose it with WF_POD=NAME (e.g. WF_POD=fa {program} pod.down), then take it out of "
                            "LIUM_TARGETS")
    assert deletes(fake) == [] and set(fake.pods) == {fa.id, fb.id}


def test_down_of_one_fleet_pod_removes_it_and_speaks_of_the_fleet(lpod: LiumPod, fake: FakeLium):
    fa, fb = fake.add_pod("fa"), fake.add_pod("fb")
    lpod.pin(fb)
    lpod.configure(LIUM_TARGETS="fa,fb")
    res = lpod.wf("pod.down", "--yes", env={"WF_POD": "fb"})
    assert res.rc == 0, res.err
    assert list(fake.pods) == [fa.id]
    assert res.out.splitlines()[0].startswith(f"removed Lium pod fb ({fb.huid}, id {fb.id})")
    assert res.out.splitlines()[-1] == ("fb is still in LIUM_TARGETS and names no pod now: take it out "
                                        "(LIUM_TARGETS=fa)")


def test_ssh_config_of_a_fleet_pod_uses_that_pod(lpod: LiumPod, fake: FakeLium):
    fake.add_pod("fa")
    fb = fake.add_pod("fb", ssh_port=2222)
    lpod.pin(fb)
    lpod.configure(LIUM_TARGETS="fa,fb")
    res = lpod.wf("pod.ssh-config", "--print", env={"WF_POD": "fb"})
    assert res.rc == 0, res.err
    assert "Host fb\n" in res.out and "    Port 2222\n" in res.out
    res = lpod.wf("pod.ssh-config", "--print")
    assert res.rc == 2 and "fleet of 2 pods (fa, fb)" in res.last_err and "Host " not in res.out


# ------------------------------------------------------------------ pod.up --count N, interrupted

def _interrupt_the_second(lpod: LiumPod, fake: FakeLium) -> tuple[list, object]:
    """`pod.up --yes --count 3`, Ctrl-C while lium waits for the second pod: (the pods it rented, how it ended)."""
    lpod.configure(LIUM_EXECUTOR_ID=fake.executor_huid, LIUM_POD_NAME="exp")
    with Running(lpod, "pod.up", "--yes", "--count", "3") as run:
        run.wait_for("wfops: pod 1/3: ")
        fake.rent_pending_polls = 10**6  # the second pod never starts: lium up is waiting when Ctrl-C comes
        deadline = time.monotonic() + scaled(90)
        while sum(" created; waiting for it to become ready" in ln for ln in run.err) < 2:
            assert time.monotonic() < deadline, "".join(run.err)
            assert run.proc.poll() is None, "".join(run.err)
            time.sleep(0.05)
        rented = sorted(fake.pods.values(), key=lambda p: p.name)
        assert [p.name for p in rented] == ["exp-1", "exp-2"]
        run.ctrl_c()
        return rented, run.finish()


def test_ctrl_c_during_the_second_pod_of_count_removes_both(lpod: LiumPod, fake: FakeLium):
    (first, second), res = _interrupt_the_second(lpod, fake)
    assert res.rc == 130, res.err
    assert fake.pods == {}
    assert fake.count("DELETE", f"/pods/{first.id}") == 1 and fake.count("DELETE", f"/pods/{second.id}") == 1
    assert res.last_err == (f"wfops: pod.up interrupted: removed pods exp-1 (id {first.id}), exp-2 (id {second.id}) "
                            "that it had rented; nothing bills")


def test_ctrl_c_during_count_names_each_pod_it_could_not_remove(lpod: LiumPod, fake: FakeLium):
    fake.fail[("DELETE", "/pods/")] = 500
    (first, second), res = _interrupt_the_second(lpod, fake)
    assert res.rc == 130, res.err
    assert set(fake.pods) == {first.id, second.id}
    for pod in (first, second):
        assert sum(f"`lium rm {pod.id} -y`" in ln for ln in res.err.splitlines()) == 1, res.err
    assert "nothing bills" not in res.last_err
    assert res.last_err.startswith("wfops: pod.up interrupted: 2 pod(s) it rented are billing")
