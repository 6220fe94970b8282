"""A fleet of Lium pods: pod.up --count rents several and prints the LIUM_TARGETS line; fleet commands resolve each
entry through lium (the real CLI, the fake API) and run on every pod."""

from __future__ import annotations

import json

from tests.lium.conftest import LiumPod
from tests.lium.fake_lium import FakeLium


def test_up_count_rents_each_pod_with_its_ttl_and_prints_the_fleet_line(lpod: LiumPod, fake: FakeLium):
    lpod.configure(LIUM_EXECUTOR_ID=fake.executor_huid, LIUM_POD_NAME="exp", LIUM_TTL="90m")
    res = lpod.wf("pod.up", "--yes", "--count", "2", "--json", timeout=300)
    assert res.rc == 0, res.err
    data = res.json()
    pods = sorted(fake.pods.values(), key=lambda p: p.name)
    assert [p.name for p in pods] == ["exp-1", "exp-2"]
    assert data["config_line"] == f"LIUM_TARGETS={pods[0].id},{pods[1].id}"
    assert all(p.removal_scheduled_at for p in pods)  # each pod got its TTL
    assert len([b for m, p, b in fake.bodies if m == "POST" and p.endswith("/rent")]) == 2
    lpod.configure(LIUM_TARGETS=f"{pods[0].id},{pods[1].id}", LIUM_POD_NAME="", LIUM_EXECUTOR_ID="")
    res = lpod.wf("fsm.status", "--json")
    assert res.rc == 0, res.err
    assert [p["pod"] for p in json.loads(res.out)["pods"]] == [pods[0].id, pods[1].id]
    again = lpod.wf("pod.up", "--count", "0")
    assert again.rc == 2 and "--count" in again.err and len(fake.pods) == 2


def test_a_fleet_entry_lium_does_not_know_fails_alone(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("alive")
    lpod.configure(LIUM_TARGETS=f"{pod.id},no-such-pod")
    res = lpod.wf("fsm.status")
    assert res.rc != 0
    assert f"== pod {pod.id} ==" in res.out and "== pod no-such-pod ==" in res.out
    assert "no-such-pod" in res.err.splitlines()[-1]
    assert res.out.count("state") >= 1
