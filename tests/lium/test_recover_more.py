"""A managed sweep on Lium pods, more cases (issue 20): the budget across a replacement (what the lost pod spent
counts), a pod Lium stops listing or reports STOPPED recovered at once (RECOVER_AFTER_SECS is an hour here), and a
fleet of Lium pods of which one is lost mid-sweep: replaced with the same spec, its share restarted there, the
other pod untouched. The rig is test_recover's: the real lium CLI, the fake API, loopback sshd pods."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import FAST_INSTALL, TrainingRepo, stop_keepers, wait_until
from tests.lium import test_recover
from tests.lium.fake_lium import FakeLium, FakePod
from tests.lium.test_recover import HEADER, Rig, _lines
from tests.realparts import SSHD, copy_tree, kill_sshd, start_sshd, stop_sshd

rig = test_recover.rig  # the fixture

PER_SEC = 3600.0  # $1 a second: the budget is crossed in seconds


def _configure(rig: Rig, **keys: str) -> None:
    lines = [ln for ln in rig.config.read_text().splitlines() if ln.split("=", 1)[0] not in keys]
    rig.config.write_text("\n".join([*lines, *(f"{k}='{v}'" for k, v in keys.items())]) + "\n")


def _sweep_record(rig: Rig) -> dict:
    path = rig.volume / "outputs" / "_control" / "sweep.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _queue_age(rig: Rig) -> float:
    spans = _sweep_record(rig).get("spans") or []
    return time.time() - float(spans[0][0]) if spans else 0.0


def test_the_budget_counts_what_the_lost_pod_spent_so_the_replacement_starts_no_new_run(rig: Rig):
    """$1/s pods, SWEEP_BUDGET_USD=35: the pod is lost (Lium no longer lists it) 25 s into the sweep, so the
    replacement alone would spend 35 s before the budget stops it, long after r1 ends and r2 starts; counted with
    the lost pod's ~20-26 s, the budget is crossed while r1 (resumed) still runs, and r2 never starts."""
    rig.original.price = PER_SEC
    renting = rig.rent_machine

    def rent_at_the_same_price(pod: FakePod) -> None:
        renting(pod)
        pod.price = PER_SEC

    rig.api.on_rent = rent_at_the_same_price
    _configure(rig, SWEEP_BUDGET_USD="35", RECOVER_AFTER_SECS="3600")  # a loss must not wait for silence
    csv = rig.root / "sweep.csv"
    csv.write_text(HEADER + "r1,config/train_tiny.py,1,steps=450 every=5 step_secs=0.1,,1,\n"
                   "r2,config/train_tiny.py,2,steps=3 every=5 step_secs=0.1,,1,\n")
    started = rig.wf("sweep.start", "--csv", str(csv))
    assert started.returncode == 0, started.stderr
    mark = rig.first.mark()
    managed = rig.managed()
    wait_until(lambda: _queue_age(rig) >= 25, timeout=90, what="25 s of the sweep on the first pod")
    conns, execs = rig.first.counts(mark)  # the managed command's polls while nothing is lost
    print(f"sweep.wait --recover, one pod, before the loss: {conns} SSH connection(s), {execs} exec(s)")
    assert conns <= 1 and execs >= 3, (conns, execs)  # a round is one exec over the warm connection, not a new one
    assert "budget reached" not in json.dumps(_sweep_record(rig))
    rig.lose(rig.first, rig.original.id, how="gone")
    out, err = managed.communicate(timeout=400)
    lines = _lines(err)
    assert any(ln.startswith("wfops: lost pod train: Lium no longer lists it (recovery 1/3)") for ln in lines), err
    restarted = next(ln for ln in lines if ln.startswith("wfops: restarted on train (id "))
    assert "r1 (attempt 2)" in restarted and "queued again: r2" in restarted, err
    data = json.loads(out)
    assert {r["run_id"]: r["state"] for r in data["runs"]} == {"r1": "success", "r2": "cancelled"}, err
    said = re.search(r"; \$([0-9.]+) spent on its earlier pod\(s\) counts toward the sweep's cost and budget$",
                     restarted)
    assert said is not None, restarted
    carried = float(said.group(1))
    assert 15 <= carried <= 30, restarted
    assert data["sweep"]["state"] == "stopped" and data["sweep"]["reason"].startswith("budget reached: $"), data
    assert "SWEEP_BUDGET_USD=35" in data["sweep"]["reason"]
    assert any(ln.startswith(f"wfops: {data['sweep']['sweep_id']} stopped: budget reached: $") for ln in lines), err
    assert managed.returncode == 1, err
    assert abs(data["cost"]["earlier_usd"] - carried) < 0.01 and data["cost"]["pod_usd"] >= 35, data["cost"]
    status = rig.wf("sweep.status")
    assert f"${carried:.2f} of it on lost pods (budget $35.00)" in status.stdout, \
        status.stdout
    new_id = next(i for i in rig.api.pods if i != rig.original.id)
    assert f"r2: attempt 1 queued on train (id {new_id})" in status.stdout, status.stdout
    report = rig.wf("sweep.report")
    assert f"${carried:.2f} of it on lost pods" in report.stdout + report.stderr, (report.stdout, report.stderr)



@dataclass
class FleetRig:
    """Two Lium pods `a` and `b` (the fake's), each on its own loopback sshd and HOME whose `mnt` is its own
    volume (a directory per volume: a rented pod's HOME gets the one its rent attached, as Lium mounts it at /mnt)."""

    root: Path
    api: FakeLium
    servers: dict[str, SSHD]
    pods: dict[str, FakePod]
    huids: dict[str, str]  # volume name -> huid
    rented: list[SSHD] = field(default_factory=list)

    def volume(self, name: str) -> Path:
        return self.root / "volumes" / name

    def rent_machine(self, pod: FakePod) -> None:
        n = len(self.rented) + 1
        home = self.root / f"rented{n}"
        home.mkdir()
        volume = self.api.volume_of(pod)
        if volume is None:
            (home / "mnt").mkdir()  # no volume: an empty /mnt
        else:
            (home / "mnt").symlink_to(self.volume(volume))
        server = start_sshd(self.root / f"sshd-rented{n}", host=f"127.0.0.{20 + n}", home=home,
                            client_key=self.servers["a"].key)
        self.rented.append(server)
        pod.ssh_host, pod.ssh_port = server.host, server.port


@pytest.fixture
def fleet_rig(tmp_path: Path, checked_out: Path, training_repo: TrainingRepo, pod_python: str,
              lium_bin: Path) -> Iterator[tuple[FleetRig, Rig]]:
    servers: dict[str, SSHD] = {}
    key = None
    for i, name in enumerate(("a", "b")):
        home = tmp_path / f"home-{name}"
        copy_tree(checked_out, home)
        vol = tmp_path / "volumes" / f"vol-{name}"
        vol.mkdir(parents=True)
        for part in ("outputs", "data"):
            shutil.move(str(home / part), str(vol / part))
        (home / "mnt").symlink_to(vol)
        servers[name] = start_sshd(tmp_path / f"sshd-{name}", host=f"127.0.0.{17 + i}", home=home, client_key=key)
        key = servers[name].key
    (tmp_path / "volumes" / "shared").mkdir()
    api = FakeLium(ssh_host=servers["a"].host, ssh_port=servers["a"].port).start()
    pods = {n: api.add_pod(n, ssh_host=s.host, ssh_port=s.port, price=2.0) for n, s in servers.items()}
    huids = {v: api.add_volume(v) for v in ("vol-a", "vol-b", "shared")}
    fr = FleetRig(tmp_path, api, servers, pods, huids)
    api.on_rent = fr.rent_machine
    client = tmp_path / "client" / ".lium"
    client.mkdir(parents=True)
    (client / "config.ini").write_text(f"[ssh]\nkey_path = {servers['a'].key}\n")
    tag = f"{os.getpid() % 10000}"
    cfg = {"LIUM_TARGETS": "a,b", "LIUM_VOLUMES": f"id:{huids['vol-a']},id:{huids['vol-b']}",
           "LIUM_VOLUME": f"id:{huids['shared']}", "OPS_REMOTE_OUTPUTS_DIR": "~/mnt/outputs",
           "DATA_DIR": "~/mnt/data", "OPS_REMOTE_REPO": "~/repo", "REMOTE_ENV_PATH": "~/project.env",
           "BOOTSTRAP_SCRIPT": "~/no-bootstrap.sh", "REPO_URL": training_repo.url, "REMOTE_PYTHON_BIN": pod_python,
           "CPU_ONLY": "1", "REPO_INSTALL_CMD": FAST_INSTALL, "WF_FAKE_GPUS": "1", "TRAIN_LAUNCHER": "python",
           "TRAIN_SCRIPT": str(test_recover.CKPT_TRAIN), "TRAIN_WORKDIR": "examples/nanogpt", "KILL_GRACE_SECS": "2",
           "WF_TMUX_SOCKET": f"wf{tag}", "SWEEP_TMUX_SESSION": f"f{tag}-sw",
           "LOCAL_ARTIFACTS_DIR": str(tmp_path / "artifacts"), "RECOVER_AFTER_SECS": "3600", "LIUM_TTL": "1h",
           "LIUM_EXECUTOR_ID": str(api.executor["id"])}
    rig = Rig(tmp_path, api, servers["a"], pods["a"])  # its env() and wf() for this config
    rig.config.write_text("".join(f"{k}='{v}'\n" for k, v in cfg.items()))
    yield fr, rig
    stop_keepers(tmp_path / "keepers")
    for server in [*servers.values(), *fr.rented]:
        stop_sshd(server)
        kill_sshd(server)
    api.stop()


def _fleet_log(fr: FleetRig, volume: str, rid: str) -> str:
    path = fr.volume(volume) / "outputs" / rid / "stdout.log"
    return path.read_text() if path.exists() else ""


def test_a_lium_pod_of_a_fleet_reported_stopped_is_replaced_with_its_own_volume_and_the_other_pod_is_untouched(
        fleet_rig: tuple[FleetRig, Rig]):
    fr, rig = fleet_rig
    csv = rig.root / "sweep.csv"
    csv.write_text(HEADER + "".join(f"f{i},config/train_tiny.py,{i},steps=80 every=5 step_secs=0.1,,1,\n"
                                    for i in range(4)))
    started = rig.wf("sweep.start", "--csv", str(csv))
    assert started.returncode == 0, started.stderr
    ledger = json.loads(next((rig.root / "artifacts" / ".fleet").glob("sweep-*.json")).read_text())
    on_b = [rid for rid in ledger["order"] if ledger["runs"][rid]["pods"] == ["b"]]
    on_a = [rid for rid in ledger["order"] if ledger["runs"][rid]["pods"] == ["a"]]
    assert len(on_b) == 2 and len(on_a) == 2, ledger
    running = on_b[0]
    wait_until(lambda: "step 12" in _fleet_log(fr, "vol-b", running), timeout=90, what="b's run past a checkpoint")
    mark = fr.servers["a"].mark()
    managed = rig.managed()
    rig.lose(fr.servers["b"], fr.pods["b"].id, how="STOPPED")  # RECOVER_AFTER_SECS is an hour: no waiting
    out, err = managed.communicate(timeout=400)
    conns, execs = fr.servers["a"].counts(mark)  # polled every 3 s all along, over its warm connection
    print(f"pod a while b was lost and recovered: {conns} SSH connection(s), {execs} exec(s)")
    assert conns <= 1, conns  # the pod that was not lost keeps its warm connection through b's recovery
    lines = _lines(err)
    assert managed.returncode == 0, err
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {f"f{i}": "success" for i in range(4)}, err
    assert any(ln.startswith("wfops: lost pod b: Lium reports it STOPPED (recovery 1/3)") for ln in lines), err
    new = next(p for p in fr.api.pods.values() if p.id not in {fr.pods["a"].id, fr.pods["b"].id})
    assert fr.api.volume_of(new) == "vol-b", "b's replacement must get b's own volume (LIUM_VOLUMES), not LIUM_VOLUME"
    rented = next(ln for ln in lines if ln.startswith("wfops: rented pod "))
    assert f"id {new.id}" in rented and "in place of b" in rented and "at $2.50/h" in rented, err
    assert any(ln.startswith(f"wfops: restarted on b (id {new.id}): {running} (attempt 2)") for ln in lines), err
    assert int(re.search(r"resumed from step (\d+)", _fleet_log(fr, "vol-b", running)).group(1)) > 0  # type: ignore[union-attr]
    # the other pod is untouched: still listed, never lost, its runs ran once
    assert fr.pods["a"].id in fr.api.pods and not any("lost pod a" in ln for ln in lines), err
    for rid in on_a:
        assert json.loads((fr.volume("vol-a") / "outputs" / rid / "status.json").read_text())["attempt"] == 1
    status = rig.wf("sweep.status")
    assert f"{running}: attempt 1 on b, attempt 2 on b (id {new.id})" in status.stdout, status.stdout
