"""LIUM_TARGET as a direct connection: resolution by name, UUID, huid and row number through ONE real
`lium ps` against the fake API, the on-disk cache, host-key pins, re-resolution, and the fallback."""

from __future__ import annotations

import json
import os
import re
import signal
import time

from tests.integration.test_keeper import keepers
from tests.lium.conftest import API_KEY, LiumPod
from tests.lium.fake_lium import FakeLium
from tests.realparts import SSHD, descendants, free_port


def one_line(err: str) -> str:
    """stderr must be exactly one line: the error."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def decoy(fake: FakeLium, name: str, **kw):
    """A listed pod that answers nowhere: resolving to it instead of the right one fails loudly."""
    return fake.add_pod(name, ssh_port=free_port(), **kw)


def test_resolve_by_name_connects_directly_with_one_lium_call(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    decoy(fake, "other")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    res, conns, execs = lpod.count("fsm.status", "--json")
    assert res.rc == 0, res.err
    assert res.json()["state"] == "INIT"
    assert (conns, execs) == (1, 1)
    assert lpod.gets() == 1
    assert fake.requests == [("GET", "/pods")]  # nothing else: no lium exec, no describe


def test_resolve_by_uuid_huid_and_row_number(lpod: LiumPod, fake: FakeLium):
    first = decoy(fake, "first")
    pod = fake.add_pod("train")
    decoy(fake, "third")
    lpod.pin(pod)
    for value in (pod.id, pod.huid, "2"):
        lpod.configure(LIUM_TARGET=value)
        res = lpod.wf("pod.status", "--json")
        assert res.rc == 0, (value, res.err)
        data = res.json()
        assert data["lium"]["id"] == pod.id and data["reachable"] is True, value
    lpod.configure(LIUM_TARGET="1")
    res = lpod.wf("fsm.status")
    assert res.rc == 4, res.err  # row 1 is the decoy, whose address answers nowhere
    assert f"id {first.id}" in res.err or str(first.ssh_port) in res.err


def test_row_number_out_of_range_is_refused(lpod: LiumPod, fake: FakeLium):
    fake.add_pod("train")
    lpod.configure(LIUM_TARGET="7")
    res = lpod.wf("fsm.status")
    assert res.rc == 5
    assert one_line(res.err) == "wfops: LIUM_TARGET=7 is a `lium ps` row number, but lium ps lists rows 1-1"
    assert not lpod.state_file.exists()


def test_ambiguous_name_lists_the_candidates_and_changes_nothing(lpod: LiumPod, fake: FakeLium):
    a = fake.add_pod("train")
    b = fake.add_pod("train", status="PENDING", pending_polls=99)
    lpod.configure(LIUM_TARGET="train")
    res, conns, _ = lpod.count("fsm.status")
    assert res.rc == 2
    assert one_line(res.err) == (
        f"wfops: LIUM_TARGET=train is ambiguous: 2 pods share it: train ({a.huid}, id {a.id}) RUNNING; "
        f"train ({b.huid}, id {b.id}) PENDING; set LIUM_TARGET to one of their UUIDs")
    assert conns == 0 and not lpod.state_file.exists()


def test_unknown_pod_is_not_found(lpod: LiumPod, fake: FakeLium):
    fake.add_pod("train")
    lpod.configure(LIUM_TARGET="nosuch")
    res, conns, _ = lpod.count("task.list")
    assert res.rc == 5
    assert one_line(res.err) == ("wfops: no Lium pod matches LIUM_TARGET=nosuch (by name, UUID, huid or row number); "
                            "lium ps lists: train")
    assert conns == 0 and not lpod.state_file.exists()


def test_a_pod_removed_with_lium_is_gone_even_with_a_warm_cache(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    assert lpod.wf("fsm.status").rc == 0
    removed = lpod.lium("rm", pod.id, "-y", "--name-only", "--format", "json")
    assert removed.rc == 0, removed.err
    res, conns, _ = lpod.count("fsm.status")
    assert res.rc == 5 and conns == 0
    assert one_line(res.err).startswith("wfops: no Lium pod matches LIUM_TARGET=train")


def test_a_pod_removed_behind_wfops_back_is_found_gone_when_its_address_dies(lpod: LiumPod, fake: FakeLium,
                                                                              sshd2: SSHD):
    pod = fake.add_pod("train", ssh_host=sshd2.host, ssh_port=sshd2.port)
    lpod.pin(pod, server=sshd2)
    lpod.lium_config(sshd2.key)
    lpod.configure(LIUM_TARGET="train", SSH_CONNECT_TIMEOUT="2", OPS_REMOTE_OUTPUTS_DIR=str(lpod.root / "out2"))
    assert lpod.wf("fsm.status").rc == 0
    assert keepers(lpod)  # warm connections are on (the default): the first command started the keeper
    del fake.pods[pod.id]  # removed in the web console: the pin stays, the cache still names the address
    sshd2.proc.send_signal(19)  # SIGSTOP: the old address no longer answers
    for pid in descendants(sshd2.proc.pid):  # and the machine's connections die with it: the keeper's too
        os.kill(pid, signal.SIGKILL)
    try:
        res = lpod.wf("fsm.status")
    finally:
        sshd2.proc.send_signal(18)
    assert res.rc == 5
    assert res.last_err.startswith("wfops: no Lium pod matches LIUM_TARGET=train")
    assert lpod.gets() == 2


def test_pending_pod_is_refused_then_pod_wait_waits_until_running(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train", status="PENDING", pending_polls=3)
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    res = lpod.wf("fsm.status")
    assert res.rc == 4
    assert one_line(res.err) == (f"wfops: Lium pod train ({pod.huid}, id {pod.id}) is PENDING, not RUNNING; "
                            "pod.wait waits until it is ready")
    assert not lpod.state_file.exists()
    waited = lpod.wf("pod.wait", "--timeout-secs", "30", "--json")
    assert waited.rc == 0, waited.err
    assert waited.json()["state"] == "POD_READY"
    assert "wfops: waiting: Lium pod train" in waited.err and "is PENDING" in waited.err
    assert lpod.state()["state"] == "POD_READY"
    assert lpod.gets() == 1 + 3  # fsm.status, then PENDING, PENDING, RUNNING


def test_pod_wait_gives_up_with_exit_4_and_the_last_reason(lpod: LiumPod, fake: FakeLium):
    fake.add_pod("train", status="PENDING", pending_polls=99)
    lpod.configure(LIUM_TARGET="train")
    res = lpod.wf("pod.wait", "--timeout-secs", "2")
    assert res.rc == 4
    assert res.last_err.startswith("wfops: pod.wait: gave up after 2s; last: Lium pod train (")
    assert res.last_err.endswith("is PENDING, not RUNNING; pod.wait waits until it is ready")


def test_pod_wait_stops_at_once_for_a_failed_pod(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train", status="FAILED")
    lpod.configure(LIUM_TARGET="train")
    started = time.monotonic()
    res = lpod.wf("pod.wait", "--timeout-secs", "60")
    assert res.rc == 4 and time.monotonic() - started < 30
    assert res.last_err == (f"wfops: Lium pod train ({pod.huid}, id {pod.id}) is FAILED and will not become "
                            "ready; remove it with pod.down")


def test_tracked_task_and_fsm_status_one_connection_each_lium_once_then_cached(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    res, conns, execs = lpod.count("task.run", "--id", "t1", "--cmd", "true")
    assert res.rc == 0, res.err
    assert (conns, execs) == (1, 1) and lpod.gets() == 1  # cold: one lium ps
    res, conns, execs = lpod.count("fsm.status")
    assert res.rc == 0, res.err
    assert (conns, execs) == (1, 1) and lpod.gets() == 1  # warm cache: no lium call at all
    cache = json.loads((lpod.home / ".cache" / "wfops" / "lium-targets.json").read_text())
    (entry,) = cache["entries"].values()
    assert entry["target"]["pod_id"] == pod.id and entry["target"]["port"] == lpod.sshd.port
    assert API_KEY not in json.dumps(cache)  # a fingerprint of the key keys the cache, never the key


def test_cache_expires_after_its_ttl(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.configure(LIUM_TARGET="train")
    assert lpod.wf("fsm.status").rc == 0
    path = lpod.home / ".cache" / "wfops" / "lium-targets.json"
    cache = json.loads(path.read_text())
    for entry in cache["entries"].values():
        entry["resolved_at"] -= 61  # as if the command ran a minute ago
    path.write_text(json.dumps(cache))
    assert lpod.wf("fsm.status").rc == 0
    assert lpod.gets() == 2


def test_a_moved_pod_is_looked_up_again_once(lpod: LiumPod, fake: FakeLium, sshd2: SSHD):
    pod = fake.add_pod("train", ssh_host=sshd2.host, ssh_port=sshd2.port)
    lpod.pin(pod, server=sshd2)
    lpod.lium_config(lpod.sshd.key)
    (sshd2_auth := sshd2.key.parent / "authorized_keys").write_text(
        sshd2_auth.read_text() + lpod.sshd.key.with_suffix(".pub").read_text())
    lpod.configure(LIUM_TARGET="train", OPS_REMOTE_OUTPUTS_DIR=str(lpod.root / "out2"))
    assert lpod.wf("fsm.status").rc == 0  # the cache now holds 127.0.0.2
    # the pod reboots onto another host: the fake now lists the loopback sshd, and the old address is dead
    pod.ssh_host, pod.ssh_port = lpod.sshd.host, lpod.sshd.port
    lpod.pin(pod)
    sshd2.proc.send_signal(19)  # SIGSTOP: connections to the old address hang, then time out
    try:
        lpod.configure(SSH_CONNECT_TIMEOUT="2")
        res, conns, execs = lpod.count("fsm.status", "--json")
    finally:
        sshd2.proc.send_signal(18)  # SIGCONT
    assert res.rc == 0, res.err
    assert (conns, execs) == (1, 1)
    assert lpod.gets() == 2  # the first lookup, and exactly one more after the cached address failed
    assert f"wfops: the cached address of lium pod train ({pod.id}) (127.0.0.2:{sshd2.port}) did not answer; " \
           "looked it up again" in res.err


def test_a_wrong_pinned_host_key_is_refused(lpod: LiumPod, fake: FakeLium, sshd2: SSHD):
    pod = fake.add_pod("train")
    lpod.pin(pod, host_key_pub=sshd2.host_key_pub)  # the key of another host
    lpod.configure(LIUM_TARGET="train")
    res, conns, _ = lpod.count("fsm.status")
    assert res.rc == 4
    assert "changed: it is SHA256:" in res.last_err and ", lium pinned SHA256:" in res.last_err  # both prints
    assert "; refused, nothing ran" in res.last_err
    assert conns == 0 and not lpod.state_file.exists()


def test_first_connection_pins_the_host_key_through_lium(lpod: LiumPod, fake: FakeLium):
    pod = fake.add_pod("train")
    lpod.configure(LIUM_TARGET="train")
    assert not lpod.pin_file(pod).exists()
    res = lpod.wf("fsm.status")
    assert res.rc == 0, res.err
    assert f"wfops: first connection to pod train ({pod.huid}, id {pod.id}): lium pinned its host key in " \
           f"{lpod.pin_file(pod)}" in res.err
    host_key = lpod.sshd.host_key_pub.read_text().split()[1]
    assert host_key in lpod.pin_file(pod).read_text()


def test_lium_ssh_key_path_wins_over_config_ini(lpod: LiumPod, fake: FakeLium, tmp_path):
    pod = fake.add_pod("train")
    lpod.pin(pod)
    lpod.lium_config(tmp_path / "not-a-key")
    lpod.configure(LIUM_TARGET="train")
    res = lpod.wf("fsm.status")
    assert res.rc == 4 and res.last_err == f"wfops: SSH key not found: {tmp_path / 'not-a-key'}"
    lpod.env_extra["LIUM_SSH_KEY_PATH"] = str(lpod.sshd.key)
    assert lpod.wf("fsm.status").rc == 0


def test_lium_api_error_is_one_line_exit_11(lpod: LiumPod, fake: FakeLium):
    fake.add_pod("train")
    fake.refuse_all = 401
    lpod.configure(LIUM_TARGET="train")
    res, conns, _ = lpod.count("fsm.status")
    assert res.rc == 11
    assert one_line(res.err).startswith("wfops: lium ps: Invalid API key (key ")
    assert conns == 0 and not lpod.state_file.exists()


def test_fallback_to_ops_default_host_when_lium_is_missing(lpod: LiumPod, fake: FakeLium):
    fake.add_pod("train")
    lpod.lium_on_path = False
    lpod.configure(LIUM_TARGET="train", OPS_DEFAULT_HOST=lpod.sshd.address, SSH_KEY_PATH=str(lpod.sshd.key))
    res, conns, execs = lpod.count("fsm.status", "--json")
    assert res.rc == 0, res.err
    assert (conns, execs) == (1, 1)
    assert res.err.splitlines()[0] == (f"wfops: lium is not on PATH; using OPS_DEFAULT_HOST={lpod.sshd.address} "
                                       "instead of LIUM_TARGET=train")
    assert fake.requests == []


def test_lium_missing_without_fallback_says_what_to_install(lpod: LiumPod, fake: FakeLium):
    lpod.lium_on_path = False
    lpod.configure(LIUM_TARGET="train")
    res = lpod.wf("fsm.status")
    assert res.rc == 11
    assert res.last_err == ('wfops: LIUM_TARGET=train needs the lium CLI, which is not on PATH: pip install '
                            '"wfops[lium]" (or put the environment it is installed in on PATH), or set '
                            'OPS_DEFAULT_HOST to reach the pod over plain SSH')


def test_fallback_when_the_lium_api_is_unreachable(lpod: LiumPod, fake: FakeLium):
    dead = f"http://127.0.0.1:{free_port()}/api"
    lpod.env_extra["LIUM_BASE_URL"] = dead
    lpod.configure(LIUM_TARGET="train", OPS_DEFAULT_HOST=lpod.sshd.address, SSH_KEY_PATH=str(lpod.sshd.key))
    res = lpod.wf("fsm.status")
    assert res.rc == 0, res.err
    assert res.err.splitlines()[0] == (f"wfops: lium ps: the Lium API at {dead} is unreachable (Connection refused); "
                                       f"using OPS_DEFAULT_HOST={lpod.sshd.address} instead of LIUM_TARGET=train")
    lpod.configure(OPS_DEFAULT_HOST="")
    res = lpod.wf("fsm.status")  # within 30 s: the failed lookup is remembered, lium is not run again
    assert res.rc == 11
    assert re.fullmatch(rf"wfops: lium ps: the Lium API at {re.escape(dead)} is unreachable \(Connection refused\), "
                        r"\d+s ago \(wfops asks again in \d+s\); set OPS_DEFAULT_HOST to reach the pod without the "
                        "Lium API", res.last_err), res.last_err
    (lpod.home / ".cache" / "wfops" / "lium-targets.json").unlink()  # forgotten: lium is asked again
    res = lpod.wf("fsm.status")
    assert res.rc == 11
    assert res.last_err == (f"wfops: lium ps: the Lium API at {dead} is unreachable (Connection refused); "
                            "set OPS_DEFAULT_HOST to reach the pod without the Lium API")


def test_ssh_config_and_config_show_while_lium_is_missing_speak_of_the_fallback(lpod: LiumPod, fake: FakeLium):
    # BUG (review of issue 19 part 1): with LIUM_TARGET=train and OPS_DEFAULT_HOST as the fallback, lium missing,
    # pod.ssh-config said "LIUM_TARGET=train is already an ssh alias or host name" (the Lium pod's name checked as
    # if it were the host), and config.show's table said "ssh, from LIUM_TARGET" without saying why
    fake.add_pod("train")
    lpod.lium_on_path = False
    lpod.configure(LIUM_TARGET="train", OPS_DEFAULT_HOST=lpod.sshd.address, SSH_KEY_PATH=str(lpod.sshd.key))
    note = f"lium is not on PATH; using OPS_DEFAULT_HOST={lpod.sshd.address} instead of LIUM_TARGET=train"
    res = lpod.wf("pod.ssh-config", "--print")
    assert res.rc == 2 and res.out == ""
    assert res.last_err == (f"wfops: pod.ssh-config writes the block of Lium pod train, and {note}: run it again "
                            "once lium answers")
    assert not (lpod.home / ".ssh").exists() or not list((lpod.home / ".ssh").glob("wfops*"))
    res = lpod.wf("config.show")
    assert res.rc == 0, res.err
    assert f"target:      {lpod.sshd.address} (ssh, from LIUM_TARGET; {note})" in res.out.splitlines()
    assert fake.requests == []
