"""The fleet's pure parts: which pods the config names, how runs are spread over their slots, which waiting runs
move, and how the pods' rows join into one table."""

from __future__ import annotations

import pytest

from wfops.errors import ConfigError, UsageError, WfopsError
from wfops.settings.load import parse_settings
from wfops.sweeps.model import parse_csv
from wfops.sweeps.plan import (
    PodLoad,
    PodQueue,
    Want,
    base_run_id,
    fold_nodes,
    rebalance,
    shares,
    spread,
    stuck,
)
from wfops.targets import resolve


def settings(text: str):
    return parse_settings(text, environ={})


def test_the_fleet_keys_name_each_pod_once_and_members_are_named_specs_of_one_provider():
    s = settings("LIUM_TARGETS=pod-a, pod-b\nOPS_HOSTS=root@127.0.0.2:22,local\n")
    members = resolve.pods(s, {})
    assert [(m.name, m.provider, m.source) for m in members] == [
        ("pod-a", "lium", "LIUM_TARGETS"), ("pod-b", "lium", "LIUM_TARGETS"),
        ("root@127.0.0.2:22", "ssh", "OPS_HOSTS"), ("local", "local", "OPS_HOSTS")]
    assert resolve.target(s, members[3]).is_local  # a member resolves through its provider, no settings copied
    two = resolve.target(s, members[2])
    assert (two.user, two.host, two.port, two.name) == ("root", "127.0.0.2", 22, "root@127.0.0.2:22")
    with pytest.raises(ConfigError, match="WF_POD=NAME"):
        resolve.one(s, {})  # a one-pod command on a fleet config says how to pick one
    assert resolve.one(s, {"WF_POD": "local"}) == members[3] and not resolve.is_fleet(s, {"WF_POD": "local"})
    with pytest.raises(ConfigError, match="not a pod of the fleet"):
        resolve.pods(s, {"WF_POD": "pod-c"})
    assert resolve.is_fleet(s, {})


def test_a_target_beside_a_fleet_is_refused_at_load():
    """Issue 19: LIUM_TARGET=victim beside LIUM_TARGETS=fa,fb let pod.down remove victim; now no config says both."""
    with pytest.raises(ConfigError, match=r"^config: OPS_DEFAULT_HOST=other and LIUM_TARGETS=pod-a both name"):
        settings("LIUM_TARGETS=pod-a\nOPS_DEFAULT_HOST=other\n")
    with pytest.raises(ConfigError, match=r"^config: LIUM_TARGET=v and OPS_HOSTS=a,b both name the target"):
        settings("OPS_HOSTS=a,b\nLIUM_TARGET=v\n")
    single = settings("LIUM_TARGET=v\nOPS_DEFAULT_HOST=h\n")  # the SSH fallback of one Lium pod stays allowed
    assert resolve.one(single, {}).fallback == "h"


@pytest.mark.parametrize("line, why", [
    ("OPS_HOSTS=a,b,a", "listed twice"),
    ("OPS_HOSTS=root@h:22,-oProxyCommand=x", "comma-separated hosts"),
    ("OPS_HOSTS=ok,bad host", "comma-separated hosts"),
    ("LIUM_TARGETS=a;rm -rf ~", "Lium pod names"),
    ("LIUM_TARGETS=x,$(id)", "Lium pod names"),
])
def test_bad_fleet_keys_are_one_clear_line(line: str, why: str):
    with pytest.raises(ConfigError, match=why):
        settings(line + "\n")


def test_runs_go_where_the_load_per_slot_is_lowest_and_big_pods_take_more():
    pods = [PodLoad("a", 2), PodLoad("b", 4), PodLoad("c", 2)]
    placed = spread(pods, [Want(f"r{i}", "1") for i in range(8)])
    per = {n: [r for r, w in placed.items() if w == [n]] for n in "abc"}
    assert [len(per[n]) for n in "abc"] == [2, 4, 2]
    assert list(placed) == [f"r{i}" for i in range(8)]  # CSV order kept


def test_busy_pods_get_less_and_all_takes_every_slot_of_its_pod():
    pods = [PodLoad("a", 4, load=4), PodLoad("b", 4)]
    placed = spread(pods, [Want("x", "all"), Want("y", "2"), Want("z", "2")])
    assert placed["x"] == ["b"] and pods[1].load >= 4
    assert {placed["y"][0], placed["z"][0]} <= {"a", "b"}


def test_multi_node_runs_take_distinct_pods_first_and_too_big_runs_are_refused_together():
    pods = [PodLoad("a", 2), PodLoad("b", 2), PodLoad("c", 1)]
    placed = spread(pods, [Want("one", "1"), Want("wide", "2", nodes=2)])
    assert placed["wide"] == ["a", "b"] and placed["one"] == ["c"]
    assert shares(placed) == {"c": [("one", 0)], "a": [("wide", 0)], "b": [("wide", 1)]}
    with pytest.raises(UsageError) as err:
        spread([PodLoad("a", 2), PodLoad("b", 1)], [Want("big", "3"), Want("wide", "2", nodes=2), Want("ok", "1")])
    assert "2 run(s) fit no pod" in err.value.message and "big" in err.value.message and "wide" in err.value.message
    with pytest.raises(UsageError, match="no pod reachable"):
        spread([PodLoad("a", 2, reachable=False)], [Want("x", "1")])


def test_a_dead_pods_runs_go_to_the_live_pods_by_load_and_stuck_runs_move_to_free_slots():
    queues = [PodQueue("a", 2, busy=2, waiting=[("w1", 1), ("w2", 1), ("w3", 2)]),
              PodQueue("b", 2, busy=0), PodQueue("dead", 2, reachable=False), PodQueue("c", 4, busy=1)]
    assert stuck(queues[0]) == [("w1", 1), ("w2", 1), ("w3", 2)]
    moves = rebalance(queues, orphans=[("o1", "dead", 1), ("o2", "dead", 2)])
    orphan_moves = {m.run_id: m.dst for m in moves if m.src == "dead"}
    assert set(orphan_moves) == {"o1", "o2"} and "dead" not in orphan_moves.values()
    moved = {m.run_id: m.dst for m in moves if m.src == "a"}
    assert moved and all(dst in ("b", "c") for dst in moved.values())
    assert not any(m.dst == "a" for m in moves)


def test_a_run_never_moves_to_a_pod_where_a_copy_of_it_ran():
    """After a partition the cut-off pod ran a moved run too (a duplicate): its sweep has that run, and sweep-add
    there refuses the whole batch, while the run was already withdrawn from the pod it left, so it ran nowhere
    and sweep.wait waited for ever. Such a pod is no destination for that run (stuck or orphan)."""
    queues = [PodQueue("a", 1, busy=1, waiting=[("k7", 1)]), PodQueue("cut", 1, busy=0), PodQueue("c", 2, busy=2)]
    assert [(m.run_id, m.dst) for m in rebalance(queues)] == [("k7", "cut")]
    assert rebalance(queues, avoid={"k7": {"cut"}}) == []
    live = [PodQueue("cut", 2), PodQueue("b", 1, busy=1)]
    assert [(m.run_id, m.dst) for m in rebalance(live, [("k4", "dead", 1)], {"k4": {"cut"}})] == [("k4", "b")]


def test_nothing_moves_between_busy_pods_or_when_every_run_can_start():
    both_busy = [PodQueue("a", 1, busy=1, waiting=[("x", 1)]), PodQueue("b", 1, busy=1, waiting=[("y", 1)])]
    assert rebalance(both_busy) == []
    fine = [PodQueue("a", 4, busy=1, waiting=[("x", 2)]), PodQueue("b", 4)]
    assert rebalance(fine) == []


def test_a_multi_node_runs_rows_fold_into_one_with_the_worst_nodes_state():
    rows = [{"run_id": "mn", "pod": "a", "state": "success", "exit_code": 0},
            {"run_id": "mn.node1", "pod": "b", "state": "failed", "exit_code": 1},
            {"run_id": "solo", "pod": "b", "state": "running"},
            {"run_id": "x.node1", "pod": "a", "state": "success"}]  # a run really called x.node1: not folded
    out = fold_nodes(rows, ["mn"])
    assert out["mn"]["state"] == "failed" and out["mn"]["exit_code"] == 0
    assert [n["pod"] for n in out["mn"]["nodes"]] == ["a", "b"]
    assert out["solo"]["state"] == "running" and out["x.node1"]["state"] == "success"
    assert base_run_id("mn.node3", ["mn"]) == "mn" and base_run_id("mn.nodeX", ["mn"]) == "mn.nodeX"


def test_the_nodes_column_is_checked_and_node_ids_may_not_clash():
    runs = parse_csv("run_id,config,seed,nodes\nw,c.py,1,2\nn,c.py,1,\n")
    assert [r.nodes for r in runs] == [2, 1] and runs[0].as_dict()["nodes"] == 2 and "nodes" not in runs[1].as_dict()
    with pytest.raises(UsageError, match="nodes 'x'"):
        parse_csv("run_id,config,seed,nodes\nw,c.py,1,x\n")
    with pytest.raises(UsageError, match="nodes '0'"):
        parse_csv("run_id,config,seed,nodes\nw,c.py,1,0\n")
    with pytest.raises(UsageError, match="taken by node 1 of w"):
        parse_csv("run_id,config,seed,nodes\nw,c.py,1,2\nw.node1,c.py,1,\n")


def test_ledger_changes_take_turns(tmp_path):
    """Two commands changing one fleet's ledger (sweep.wait's rebalance here, sweep.add in another terminal): the
    second waits for the first (one would otherwise write back a ledger without the other's moves)."""
    import threading
    import time

    from wfops.sweeps.ledger import ledger_lock

    s = settings(f"OPS_HOSTS=a,b\nLOCAL_ARTIFACTS_DIR={tmp_path}\n")
    (tmp_path / ".fleet").mkdir()  # a fleet sweep's ledger is there (without one there is nothing to guard)
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with ledger_lock(s):
            order.append("first in")
            inside.set()
            time.sleep(0.5)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    inside.wait(5)
    with ledger_lock(s):
        order.append("second in")
    t.join()
    assert order == ["first in", "first out", "second in"]


@pytest.mark.parametrize("line", ["RDZV_PORT=80", "RDZV_PORT=70000", "RDZV_PORT=abc", "RDZV_JOIN_SECS=-1"])
def test_bad_rendezvous_keys_are_one_line(line: str):
    with pytest.raises(ConfigError, match=line.split("=")[0]):
        settings(line + "\n")


def test_multi_node_runs_are_refused_by_sweep_add_and_sweep_retry_before_any_pod_is_asked(tmp_path):
    """Both refusals come before a connection: the fleet's hosts here do not exist (127.0.0.1 port 1)."""
    from wfops.sweeps import fleet_moves
    from wfops.sweeps.ledger import save_ledger

    s = settings(f"OPS_HOSTS=root@127.0.0.1:1,root@127.0.0.1:2\nLOCAL_ARTIFACTS_DIR={tmp_path}\n")
    save_ledger(s, {"sweep_id": "sweep-20261201T000000Z", "created_at": "", "order": ["mn"],
                    "pods": {"root@127.0.0.1:1": {"slots": 1, "sweep_id": "sweep-20261201T000000Z"},
                             "root@127.0.0.1:2": {"slots": 1, "sweep_id": "sweep-20261201T000000Z"}},
                    "runs": {"mn": {"pods": ["root@127.0.0.1:1", "root@127.0.0.1:2"], "entry": {"gpus": "1"},
                                    "moves": []}}}, latest=True)
    with pytest.raises(WfopsError) as err:
        fleet_moves.retry(s, ["mn"], False)
    assert err.value.code == 2 and "multi-node" in err.value.message
    runs = parse_csv("run_id,config,seed,nodes\nwide,c.py,1,2\n")
    with pytest.raises(WfopsError) as err:
        fleet_moves.add(s, runs, [], [])
    assert err.value.code == 2 and "only at sweep.start" in err.value.message
    with pytest.raises(WfopsError) as err:
        fleet_moves.retry(s, ["nope"], False)
    assert err.value.code == 5 and "not a run of" in err.value.message
