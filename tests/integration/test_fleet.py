"""A fleet of three loopback sshd pods (tests/fleet.py): commands on every pod at once, one sweep spread over
the pods, a pod that dies mid-sweep, fetching from every pod, and one run across two pods (multi-node torchrun).
Each pod runs its own agent scheduler; the client's ledger (LOCAL_ARTIFACTS_DIR/.fleet) knows who runs what."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

from tests.conftest import wait_until
from tests.fleet import Fleet
from tests.realparts import free_port
from wfops.transport.render import templates_dir

HEADER = "run_id,config,seed,overrides,notes,gpus,nodes\n"


def _csv(tmp_path: Path, rows: list[str], name: str = "sweep.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def _config(fleet: Fleet, tmp_path: Path, **over: str) -> Path:
    return fleet.config(tmp_path, TRAIN_SCRIPT="echo_train.py", TRAIN_WORKDIR="examples/nanogpt", **over)


def _status(fleet: Fleet, cfg: Path) -> dict:
    res = fleet.wf(cfg, "sweep.status", "--json")
    assert res.stdout.strip(), res.stderr
    return json.loads(res.stdout)


def _sshd_logins(fleet: Fleet) -> list[int]:
    return [len(re.findall(r"Accepted publickey", p.sshd.log.read_text())) for p in fleet.pods]




def test_fan_out_runs_on_every_pod_with_one_login_each_and_a_dead_pod_does_not_hide_the_others(
        tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    before = _sshd_logins(fleet)
    res = fleet.wf(cfg, "fsm.status")
    assert res.returncode == 0, res.stderr
    for pod in fleet.pods:
        assert f"== pod {pod.address} ==" in res.stdout
    assert res.stdout.count("CHECKED_OUT") >= 3
    assert [a - b for a, b in zip(_sshd_logins(fleet), before, strict=True)] == [1, 1, 1]
    data = json.loads(fleet.wf(cfg, "fsm.status", "--json").stdout)
    assert [p["pod"] for p in data["pods"]] == [p.address for p in fleet.pods]
    assert {p["data"]["state"] for p in data["pods"]} == {"CHECKED_OUT"}
    fleet.kill(1)
    res = fleet.wf(cfg, "fsm.status")
    assert res.returncode == 4, (res.stdout, res.stderr)
    assert res.stdout.count("CHECKED_OUT") >= 2 and "failed (exit 4)" in res.stdout
    assert fleet.pods[1].address in res.stderr.splitlines()[-1]
    one = fleet.wf(cfg, "task.logs", "x")
    assert one.returncode == 2 and "WF_POD=" in one.stderr
    picked = fleet.wf(cfg, "fsm.status", "--json", env={"WF_POD": fleet.pods[2].address})
    assert picked.returncode == 0 and json.loads(picked.stdout)["state"] == "CHECKED_OUT"


def test_a_twelve_run_sweep_over_three_pods_runs_every_run_exactly_once_and_fetches_from_all(
        tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    rows = [f"r{i:02d},config/train_tiny.py,{i},sleep=1,,1," for i in range(12)]
    res = fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows)))
    assert res.returncode == 0, res.stderr
    assert all(f"{p.address}: 4 run(s)" in res.stdout for p in fleet.pods), res.stdout
    done = fleet.wf(cfg, "sweep.wait", "--json", timeout=180)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr)
    data = json.loads(done.stdout)
    assert {r["run_id"]: r["state"] for r in data["runs"]} == {f"r{i:02d}": "success" for i in range(12)}
    ran = {p.index: sorted(d.name for d in (p.home / "outputs").iterdir() if (d / "ended.json").exists())
           for p in fleet.pods}
    every = [rid for ids in ran.values() for rid in ids]
    assert sorted(every) == [f"r{i:02d}" for i in range(12)]  # each run ran once, on one pod
    assert all(len(ids) == 4 for ids in ran.values()), ran
    table = fleet.wf(cfg, "sweep.status").stdout
    assert re.search(r"^r00\s+\S+:\d+\s+success", table, re.M), table
    report = fleet.wf(cfg, "sweep.report", "--json")
    assert report.returncode == 0, report.stderr
    assert sorted(r["run_id"] for r in json.loads(report.stdout)["runs"]) == [f"r{i:02d}" for i in range(12)]
    # a stale copy: pod 0 also has r01, which the ledger has on another pod (a lost run retried elsewhere, its pod
    # back): run.fetch takes each run from the pod the ledger names, never two copies into one folder
    ledger = json.loads(next((tmp_path / "artifacts" / ".fleet").glob("sweep-*.json")).read_text())
    owner = next(p for p in fleet.pods if [p.address] == ledger["runs"]["r01"]["pods"])
    stray = fleet.pods[0] if owner is not fleet.pods[0] else fleet.pods[1]
    shutil.copytree(owner.home / "outputs" / "r01", stray.home / "outputs" / "r01")
    (stray.home / "outputs" / "r01" / "STALE").write_text("the other copy")
    manifest = stray.home / "outputs" / "_manifests" / "sweep-latest.json"
    plan = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(dict(plan, runs=[*plan["runs"], {"run_id": "r01", "config": "c"}])))
    fetched = fleet.wf(cfg, "run.fetch", "--all")
    assert fetched.returncode == 0, fetched.stderr
    assert not (tmp_path / "artifacts" / "r01" / "STALE").exists()
    local = tmp_path / "artifacts"
    assert sorted(d.name for d in local.iterdir() if d.name[0] not in "._") == [f"r{i:02d}" for i in range(12)]
    assert all((local / f"r{i:02d}" / "summary.json").is_file() for i in range(12))


def test_a_pod_killed_mid_sweep_leaves_its_pending_runs_to_the_others(tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path, WF_FAKE_GPUS="1")
    rows = [f"k{i},config/train_tiny.py,{i},sleep=3,,1," for i in range(9)]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows))).returncode == 0
    ledger = json.loads((tmp_path / "artifacts" / ".fleet" / "latest").read_text() and
                        next((tmp_path / "artifacts" / ".fleet").glob("sweep-*.json")).read_text())
    on_1 = sorted(rid for rid, r in ledger["runs"].items() if r["pods"] == [fleet.pods[1].address])
    assert len(on_1) == 3
    # the event: a run of pod 1 running while another of its runs still waits there (then one must move)
    wait_until(lambda: (lambda on: "running" in on and "pending" in on)(
        [r["state"] for r in _status(fleet, cfg)["runs"] if r["pod"] == fleet.pods[1].address]),
        timeout=60, what="a run running on pod 1 and another waiting there")
    fleet.kill(1)
    try:  # until sweep.wait ends; its deadline scales with the machine (Fleet.wf, tests/slowness.py)
        done = fleet.wf(cfg, "sweep.wait", "--json", timeout=240)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"sweep.wait still waiting after {exc.timeout:.0f}s; it said:\n{exc.stderr}") from None
    data = json.loads(done.stdout)
    state = {r["run_id"]: (r["state"], r["pod"]) for r in data["runs"]}
    moved = [rid for rid in on_1 if state[rid][1] != fleet.pods[1].address]
    assert len(moved) >= 1 and all(state[rid][0] == "success" for rid in moved), state
    lost = [rid for rid in on_1 if state[rid][0] == "lost"]
    assert len(lost) <= 1 and set(moved) | set(lost) == set(on_1), state
    others = [rid for rid in state if rid not in on_1]
    assert all(state[rid][0] == "success" for rid in others), state
    assert done.returncode == (1 if lost else 0), done.stderr


def test_one_run_across_two_pods_with_multi_node_torchrun(tmp_path: Path, fleet_ready: Fleet):
    """2 nodes x 2 processes, gloo, c10d rendezvous on the first pod: the four ranks meet (an all_reduce over
    all of them), the run succeeds on both pods, and its summary.json names both nodes."""
    fleet = fleet_ready
    port = free_port()  # not the default 29400: tests in other workers may run a multi-node run at the same time
    template = tmp_path / "multi.j2"  # a project's launch script: each node fills in its own run-time values
    template.write_text((templates_dir() / "run_command.sh.j2").read_text().replace(
        "exec {{ rt.launcher }}", "export WFT_NODE={{ rt.name }}:{{ rt.node_rank }}/{{ rt.nnodes }}:{{ nodes }}\n"
        "exec {{ rt.launcher }}"))
    cfg = _config(fleet, tmp_path, TRAIN_LAUNCHER="torchrun", WF_FAKE_GPUS="2", RDZV_JOIN_SECS="120",
                  RDZV_PORT=str(port), RUN_TEMPLATE=str(template))
    csv = _csv(tmp_path, ["mn,config/train_tiny.py,7,allreduce=1,,2,2", "solo,config/train_tiny.py,8,,,1,"])
    res = fleet.wf(cfg, "sweep.start", "--csv", str(csv))
    assert res.returncode == 0, (res.stdout, res.stderr)
    done = fleet.wf(cfg, "sweep.wait", "--json", timeout=240)
    data = json.loads(done.stdout)
    rows = {r["run_id"]: r for r in data["runs"]}
    assert done.returncode == 0 and rows["mn"]["state"] == "success", (rows, done.stderr)
    p0, p1 = (fleet.pods[0], fleet.pods[1])
    assert rows["mn"]["pod"] == f"{p0.address}+{p1.address}"
    assert {n["state"] for n in rows["mn"]["nodes"]} == {"success"}
    first, second = p0.home / "outputs" / "mn", p1.home / "outputs" / "mn.node1"
    summary = json.loads((first / "summary.json").read_text())
    assert [n["pod"] for n in summary["nodes"]] == [p0.address, p1.address] and summary["node_rank"] == 0
    assert json.loads((second / "summary.json").read_text())["node_rank"] == 1
    reduced = [json.loads(p.read_text()) for p in (first / "allreduce.json", second / "allreduce.json")
               if p.exists()]
    assert reduced == [{"sum": 10.0, "world_size": 4}]  # ranks 1+2+3+4, once, on whichever node got rank 0
    command = (first / "command.sh").read_text()
    assert "--nnodes=2" in command and f"--rdzv-endpoint={p0.host}:{port}" in command and "is_host=1" in command
    assert "is_host=0" in (second / "command.sh").read_text()
    assert "\nexport WFT_NODE=mn:0/2:2\n" in command
    assert "\nexport WFT_NODE=mn.node1:1/2:2\n" in (second / "command.sh").read_text()
    assert (first / "stdout.log").is_file() and (second / "stdout.log").is_file()  # each node's log is kept


def test_a_multi_node_run_is_refused_before_anything_starts_when_its_rendezvous_cannot_be_reached(
        tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    csv = _csv(tmp_path, ["mn,config/train_tiny.py,7,,,1,2", "solo,config/train_tiny.py,8,,,1,"])
    nothing = lambda: [p for pod in fleet.pods for p in (pod.home / "outputs" / "_manifests").glob("sweep-*")]  # noqa: E731
    # the first pod listens on IPv4 only: the others cannot reach it at ::1
    cfg = _config(fleet, tmp_path, TRAIN_LAUNCHER="torchrun", RDZV_HOST="::1", RDZV_PORT=str(free_port()))
    res = fleet.wf(cfg, "sweep.start", "--csv", str(csv))
    assert res.returncode == 4, (res.stdout, res.stderr)
    assert "cannot reach its rendezvous" in res.stderr and "nothing was started" in res.stderr
    assert nothing() == [] and not (tmp_path / "artifacts" / ".fleet").exists()
    with socket.socket() as busy:  # someone holds the rendezvous port on the first pod's machine
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = _config(fleet, tmp_path, TRAIN_LAUNCHER="torchrun", RDZV_PORT=str(busy.getsockname()[1]),
                      name="busy.env")
        res = fleet.wf(cfg, "sweep.start", "--csv", str(csv))
    assert res.returncode == 10 and "in use" in res.stderr, (res.stdout, res.stderr)
    assert nothing() == []
    single = fleet.config(tmp_path, pod=0, name="one.env", TRAIN_SCRIPT="echo_train.py", TRAIN_LAUNCHER="torchrun")
    res = fleet.wf(single, "sweep.start", "--csv", str(csv))
    assert res.returncode == 2 and "multi-node runs need a fleet" in res.stderr, res.stderr
    cfg = _config(fleet, tmp_path, name="py.env")  # TRAIN_LAUNCHER=python cannot span pods
    res = fleet.wf(cfg, "sweep.start", "--csv", str(csv))
    assert res.returncode == 2 and "torchrun" in res.stderr, res.stderr
    assert nothing() == []


def test_sweep_stop_on_a_fleet_cancels_every_pods_runs_and_a_pod_with_nothing_running_is_no_failure(
        tmp_path: Path, fleet_ready: Fleet):
    fleet = fleet_ready
    cfg = _config(fleet, tmp_path)
    rows = [f"s{i},config/train_tiny.py,{i},sleep=60,,1," for i in range(3)]
    assert fleet.wf(cfg, "sweep.start", "--csv", str(_csv(tmp_path, rows))).returncode == 0
    wait_until(lambda: {r["state"] for r in _status(fleet, cfg)["runs"]} == {"running"}, timeout=60,
               what="a run on every pod")
    res = fleet.wf(cfg, "sweep.stop", "--timeout-secs", "30")
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert res.stdout.count("== pod ") == 3
    data = _status(fleet, cfg)
    assert {r["state"] for r in data["runs"]} == {"cancelled"} and data["sweep"]["state"] == "completed"
    assert {r["pod"] for r in data["runs"]} == {p.address for p in fleet.pods}
    again = fleet.wf(cfg, "sweep.stop")
    assert again.returncode == 0 and again.stdout.count("nothing to stop here") == 3, again.stdout
    one = fleet.wf(cfg, "sweep.stop", env={"WF_POD": fleet.pods[0].address})  # one pod alone: as before, exit 10
    assert one.returncode == 10 and "no sweep is running" in one.stderr
