"""The pod agent's side of a fleet: the torchrun command of one node of a multi-node run, its single attempt,
its summary, the order's withdrawal of waiting runs, and the reachability check (net-listen / net-probe) over
real sockets on loopback, run as real `python3 -I -S` agent processes."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from tests.unit.test_agent import CALL, POD_PYTHON, WFOPS_DIR, agent
from wfops.agent import outcome, runs, slots
from wfops.agent.scheduler import Scheduler

EX = {"repo": "/r", "workdir": "/r/w", "train_script": "train.py", "launcher": "torchrun", "data_dir": "/d",
      "local_root": "/l", "retries": 3}
NODES = [{"rank": 0, "pod": "a", "addr": "10.0.0.1"}, {"rank": 1, "pod": "b", "addr": "10.0.0.2"}]


def node_run(rank: int, local_addr: str = "") -> dict:
    rid = "big" if rank == 0 else f"big.node{rank}"
    return {"run_id": rid, "config": "c.py", "args": ["seed=1"], "gpus": "2",
            "node": {"rank": rank, "nnodes": 2, "endpoint": "10.0.0.1:29611", "local_addr": local_addr,
                     "join_timeout": 900, "rdzv_id": "sweep-x-big", "nodes": NODES}}


def place(nproc: int = 2) -> dict:
    return {"ids": ["0", "1"], "devices": "0,1", "nproc": nproc, "port": 29611, "attempt": 1, "max_attempts": 1}


def test_rank_0_hosts_the_rendezvous_and_rank_1_joins_it_with_its_own_address():
    head = runs.Launch(EX, "/v/python", node_run(0), place()).argv("/o", "/rd")
    assert head == ["/v/python", "-m", "torch.distributed.run", "--nnodes=2", "--node-rank=0", "--nproc-per-node=2",
                    "--rdzv-backend=c10d", "--rdzv-endpoint=10.0.0.1:29611", "--rdzv-id=sweep-x-big",
                    "--rdzv-conf=is_host=1,join_timeout=900", "--tee=3", "--log-dir=/rd/ranks",
                    "train.py", "c.py", "seed=1"]
    other = runs.Launch(EX, "/v/python", node_run(1, "10.0.0.2"), place(nproc=1))
    assert other.argv("/o", "/rd")[3:12] == [
        "--nnodes=2", "--node-rank=1", "--nproc-per-node=1", "--rdzv-backend=c10d", "--rdzv-endpoint=10.0.0.1:29611",
        "--rdzv-id=sweep-x-big", "--rdzv-conf=is_host=0,join_timeout=900", "--local-addr=10.0.0.2", "--tee=3"]
    # one process on this node, but ranks across nodes: each line still carries its global rank
    assert ("TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE", runs.RANK_PREFIX) in other.env()
    single = runs.Launch(EX, "/v/python", {"run_id": "s", "config": "c.py"}, place(nproc=1)).argv("/o", "/rd")
    assert single[3:5] == ["--nnodes=1", "--nproc-per-node=1"] and "--tee=3" not in single


def test_a_node_gets_one_attempt_and_its_endpoints_port_and_its_summary_names_the_nodes(tmp_path: Path):
    pod = {"out": str(tmp_path / "out")}
    (tmp_path / "out" / "_manifests").mkdir(parents=True)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"sweep_id": "sweep-x", "runs": [], "queue": [], "exec": dict(EX, fake_gpus=2),
                                    "pod": pod}))
    sched = Scheduler(str(manifest))
    sched.slots = slots.Slots(["0", "1"])
    where = sched.place(dict(node_run(1), attempt=1))
    assert (where["max_attempts"], where["port"], where["ids"]) == (1, 29611, ["0", "1"])
    sched.slots.give(where["ids"])
    plain = sched.place({"run_id": "p", "config": "c.py", "gpus": "1", "attempt": 1})
    assert plain["max_attempts"] == 4 and plain["port"] != 29611
    spec = runs.spec(EX, "sweep-x", node_run(1), "/rd", "/o", where, "abc")
    assert (spec["extra"]["nodes"], spec["extra"]["node_rank"]) == (NODES, 1)
    assert "nodes" not in runs.spec(EX, "sweep-x", {"run_id": "p", "config": "c.py"}, "/rd", "/o", plain, "a")["extra"]
    for st, nodes in ((dict(spec["extra"], state="success", exit_code=0), NODES), ({"state": "success"}, None)):
        d = tmp_path / ("n" if nodes else "p")
        d.mkdir()
        outcome.write_summary(str(d), st)
        summary = json.loads((d / "summary.json").read_text())
        assert summary.get("nodes") == nodes and ("node_rank" in summary) == bool(nodes)


def test_withdrawn_runs_leave_the_order_and_the_rest_keep_their_places():
    order = slots.Order(4, 4)
    for i, (rid, need) in enumerate((("a", 1), ("b", 2), ("c", 1), ("d", 4)), start=1):
        order.push(i, need, {"run_id": rid})
    assert [r["run_id"] for r in order.remove({"c", "d", "zzz"})] == ["c", "d"]
    assert len(order) == 2 and order.pop_fitting(4)["run_id"] == "a" and order.pop_fitting(4)["run_id"] == "b"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_listen(tmp_path: Path, ports: list[int], secs: float, expect: int) -> subprocess.Popen:
    request = {"cmd": "net-listen", "pod": {"out": str(tmp_path)}, "prelude": {},
               "data": {"ports": ports, "secs": secs, "expect": expect}}
    proc = subprocess.Popen([POD_PYTHON, "-I", "-S", "-c", CALL, str(WFOPS_DIR)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.flush()
    return proc


def test_net_listen_says_when_it_listens_and_counts_what_net_probe_reaches(tmp_path: Path):
    ports = free_ports(2)
    proc = start_listen(tmp_path, ports, secs=60, expect=2)
    assert proc.stderr.readline() == f"@wfops-listening {ports[0]},{ports[1]}\n"
    for _ in range(2):
        probe = agent("net-probe", {"host": "127.0.0.1", "ports": ports, "timeout": 5}, tmp_path)
        assert probe.returncode == 0, probe.stderr
        assert json.loads(probe.stdout) == {"reached": {str(p): True for p in ports}}
    out, err = proc.communicate(timeout=30)  # every port had its 2 connections: it ends long before 60 s
    assert proc.returncode == 0, err
    assert json.loads(out) == {"accepted": {str(p): 2 for p in ports}}
    closed = agent("net-probe", {"host": "127.0.0.1", "ports": ports[:1], "timeout": 2}, tmp_path)
    assert json.loads(closed.stdout)["reached"][str(ports[0])] == "Connection refused"


def test_net_listen_ends_after_secs_with_what_it_got(tmp_path: Path):
    ports = free_ports(2)
    proc = start_listen(tmp_path, ports, secs=1, expect=1)
    assert proc.stderr.readline().startswith("@wfops-listening ")
    probe = agent("net-probe", {"host": "127.0.0.1", "ports": ports[:1], "timeout": 5}, tmp_path)
    assert json.loads(probe.stdout) == {"reached": {str(ports[0]): True}}
    out, _ = proc.communicate(timeout=30)
    assert json.loads(out) == {"accepted": {str(ports[0]): 1, str(ports[1]): 0}}


def test_a_port_in_use_is_refused_and_nothing_listens(tmp_path: Path):
    ports = free_ports(2)
    holder = socket.socket()
    holder.bind(("0.0.0.0", ports[1]))
    holder.listen(1)
    try:
        res = agent("net-listen", {"ports": ports, "secs": 30, "expect": 1}, tmp_path)
    finally:
        holder.close()
    assert res.returncode == 10, res.stderr
    assert res.stderr == f"@wfops-error 10 port {ports[1]} is in use on this pod\n"  # no listening line
    probe = agent("net-probe", {"host": "127.0.0.1", "ports": ports[:1], "timeout": 2}, tmp_path)
    assert json.loads(probe.stdout)["reached"][str(ports[0])] == "Connection refused"  # the first one closed too
    bad = agent("net-probe", {"host": "127.0.0.1", "ports": [0], "timeout": 2}, tmp_path)
    assert bad.returncode == 2 and "port numbers" in bad.stderr
