"""The fleet's edges, pure parts: pod names that collide or carry control characters, hostile WF_POD values,
damaged ledgers, the worst exit code, and moves that must not overfill a pod."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from wfops import fanout
from wfops.errors import ConfigError, ConnectError, NotFoundError, WfopsError
from wfops.settings.load import parse_settings
from wfops.sweeps import fleet_moves, fleet_status, ledger
from wfops.sweeps.plan import PodLoad, PodQueue, Want, rebalance, spread
from wfops.targets import resolve
from wfops.tasks import _base


def settings(text: str):
    return parse_settings(text, environ={})


def test_one_name_in_both_lium_targets_and_ops_hosts_is_refused():
    """Two members with one name would share a ledger entry, a `pod` column and WF_POD: refuse the config."""
    s = settings("LIUM_TARGETS=gpu-box\nOPS_HOSTS=gpu-box,root@127.0.0.2:22\n")
    with pytest.raises(ConfigError, match="gpu-box"):
        resolve.members(s)


def test_a_one_pod_command_on_a_fleet_names_the_program_as_run(monkeypatch):
    """The example names the program the user ran (`wfops`), not `inv` (which finds no tasks outside a checkout)."""
    venv_wfops = str(Path(sys.executable).parent / "wfops")  # the venv's wfops, found on PATH as `wfops`
    monkeypatch.setattr(sys, "argv", [venv_wfops])
    monkeypatch.setattr("shutil.which", lambda name: venv_wfops if name == "wfops" else None)
    err = resolve.one_pod_only(settings("OPS_HOSTS=root@127.0.0.2:22,root@127.0.0.3:22\n"))
    assert err.message.endswith("(e.g. WF_POD=root@127.0.0.2:22 wfops ...)"), err.message


def test_a_hostile_wf_pod_is_shown_escaped_and_never_matches():
    s = settings("OPS_HOSTS=root@127.0.0.2:22,root@127.0.0.3:22\n")
    with pytest.raises(ConfigError) as err:
        resolve.pods(s, {"WF_POD": "\x1b[2J$(touch /tmp/wfops-pwned)\x07"})
    assert "\x1b" not in err.value.message and "\x07" not in err.value.message
    assert "\\x1b" in err.value.message and "not a pod of the fleet" in err.value.message
    assert not Path("/tmp/wfops-pwned").exists()


def _fan_out(s, work: _base.PodWork, json_out: bool = False) -> tuple[str, str, WfopsError | None]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    error = None
    try:
        _base.run_on_fleet(s, work, json_out)
    except WfopsError as exc:
        error = exc
    finally:
        sys.stdout, sys.stderr = old
    return out.getvalue(), err.getvalue(), error


@pytest.mark.parametrize("line", ["LIUM_TARGETS=evil\x1b]0;owned\x07pod,plain", "OPS_HOSTS=ok,evil\x1b[2J",
                                  "OPS_HOSTS=a,$(id)"])
def test_pod_names_with_control_characters_or_shell_never_make_a_fleet(line: str):
    with pytest.raises(ConfigError) as err:
        settings(line + "\n")
    assert "\x1b" not in err.value.message and "\x07" not in err.value.message and "\r" not in err.value.message


def test_a_lium_name_with_a_bell_in_it_is_shown_escaped_in_sections_and_progress():
    """The config takes LIUM_TARGETS=a<BEL>b (as it takes LIUM_TARGET): the fan-out shows it as a\\x07b."""
    s = settings("LIUM_TARGETS=a\x07b,plain\n")

    def body(s, member, log) -> str:
        log("progress")
        return "hi"

    out, err, _ = _fan_out(s, _base.PodWork(body, str))
    assert "\x07" not in out + err
    assert "== pod a\\x07b ==" in out and "[a\\x07b] progress" in err


def test_sections_and_progress_name_each_pod_and_output_is_captured_per_pod():
    s = settings("OPS_HOSTS=root@127.0.0.2:22,local\n")

    def body(s, member, log) -> str:
        log("progress\x1b]0;x\x07")
        return "hello \x1b[31m"

    out, err, error = _fan_out(s, _base.PodWork(body, str))
    assert error is None
    assert "\x1b" not in err and "\x07" not in err, err
    err = err.replace("\\x1b]0;x\\x07", "")
    assert out.count("hello") == 2 and "\x1b" not in out
    assert out.index("== pod root@127.0.0.2:22 ==") < out.index("== pod local ==")
    assert sorted(err.splitlines()) == ["[local] progress", "[root@127.0.0.2:22] progress"]


def test_the_exit_code_is_the_worst_pods_and_json_names_every_pod():
    s = settings("OPS_HOSTS=a,b,c\n")
    codes = iter([0, 5, 4])

    def body(s, member, log) -> dict:
        return {"n": next(codes)}

    def verdict(data: dict) -> WfopsError | None:  # data, and the failure it shows (as pod.status, task.wait)
        return {5: NotFoundError("no such task"), 4: ConnectError("down")}.get(data["n"])

    out, _, error = _fan_out(s, _base.PodWork(body, json.dumps, verdict=verdict), json_out=True)
    doc = json.loads(out)
    assert error is not None and error.code == 5
    assert sorted(p["exit_code"] for p in doc["pods"]) == [0, 4, 5]
    assert all("data" in p for p in doc["pods"])


def test_watch_is_refused_on_a_fleet_before_any_pod_is_touched():
    s = settings("OPS_HOSTS=a,b\n")
    touched = []
    with pytest.raises(WfopsError, match="WF_POD=NAME") as err:
        _base.refuse_watch_on_fleet(s)  # task.status --watch asks this before it opens anything
        touched.append(1)
    assert err.value.code == 2 and touched == []


@pytest.mark.parametrize("text", ["", "{not json", "{}", "[]", '{"sweep_id": "s"}', "null",
                                  '{"sweep_id": "s", "pods": [], "runs": {}, "order": []}'])
def test_a_missing_or_damaged_ledger_is_one_clear_error(tmp_path: Path, text: str):
    s = settings(f"OPS_HOSTS=a,b\nLOCAL_ARTIFACTS_DIR={tmp_path}\n")
    d = tmp_path / ".fleet"
    d.mkdir()
    (d / "latest").write_text("s")
    if text:
        (d / "s.json").write_text(text)
    with pytest.raises(WfopsError) as err:
        ledger.load_ledger(s)
    assert err.value.code != 0 and "\n" not in err.value.message
    assert str(d) in err.value.message


def test_a_sweep_id_cannot_point_the_ledger_outside_its_folder(tmp_path: Path):
    s = settings(f"OPS_HOSTS=a,b\nLOCAL_ARTIFACTS_DIR={tmp_path / 'art'}\n")
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps({"sweep_id": "x", "pods": {}, "runs": {}, "order": []}))
    (tmp_path / "art" / ".fleet").mkdir(parents=True)
    with pytest.raises(WfopsError):
        ledger.load_ledger(s, "../../secret")


def test_orphans_and_stuck_runs_never_overfill_one_idle_pod():
    """a is dead with two runs; b is busy with one stuck run; c has one free slot that the orphans take."""
    queues = [PodQueue("b", 1, busy=1, waiting=[("b1", 1)]), PodQueue("c", 1)]
    moves = rebalance(queues, [("a1", "a", 1), ("a2", "a", 1)])
    assert sorted(m.run_id for m in moves if m.src == "a") == ["a1", "a2"]  # orphans go even if they wait
    assert not [m for m in moves if m.run_id == "b1"]  # c is taken by an orphan: b1 would only wait there too


def test_a_pod_without_gpu_slots_takes_no_run_and_says_so():
    with pytest.raises(WfopsError, match="fit no pod"):
        spread([PodLoad("a", 0), PodLoad("b", 0)], [Want("r", "all")])
    assert spread([PodLoad("a", 0), PodLoad("b", 2)], [Want("r", "all"), Want("q", "1")]) == {"r": ["b"], "q": ["b"]}


def test_a_run_marked_lost_while_its_pod_was_away_shows_the_pods_row_once_the_pod_answers():
    ledger = {"sweep_id": "s", "order": ["r"], "pods": {"a": {"slots": 1, "sweep_id": "s"}},
              "runs": {"r": {"pods": ["a"], "entry": {"gpus": "1"}, "lost": "pod a stopped answering", "moves": []}}}
    row = {"run_id": "r", "state": "running"}
    back = fleet_status.joined(ledger, {"a": fanout.Outcome(resolve.members(settings("OPS_HOSTS=a,b\n"))[0],
                                                          {"runs": [row]})}, {})
    assert back["runs"][0]["state"] == "running" and back["sweep"]["state"] == "running"
    away = fleet_status.joined(ledger, {}, {"a": "connection refused"})
    assert away["runs"][0]["state"] == "lost"


class _FakePods:
    """Pods for fleet_status.status: every pod answers with `rows`; `meanwhile` runs during the call."""

    def __init__(self, rows: dict, meanwhile=lambda: None) -> None:
        self.rows, self.meanwhile, self.down = rows, meanwhile, {}

    def call(self, command: str, args, names=None) -> dict:
        self.meanwhile()
        pods = resolve.members(settings("OPS_HOSTS=a,b\n"))
        return {m.name: fanout.Outcome(m, {"runs": self.rows.get(m.name, [])}) for m in pods}


def _ledger(sid: str, where: str = "a") -> dict:
    return {"sweep_id": sid, "created_at": "", "order": ["r"], "pods": {n: {"slots": 1, "sweep_id": sid} for n in "ab"},
            "runs": {"r": {"pods": [where], "entry": {"gpus": "1"}, "moves": []}}}


def test_looking_at_an_older_sweep_does_not_make_it_the_latest(tmp_path: Path):
    s = settings(f"OPS_HOSTS=a,b\nLOCAL_ARTIFACTS_DIR={tmp_path}\n")
    ledger.save_ledger(s, _ledger("sweep-old"), latest=True)
    ledger.save_ledger(s, _ledger("sweep-new"), latest=True)
    fleet_status.status(s, "sweep-old", [], _FakePods({"a": [{"run_id": "r", "state": "success"}]}))
    assert ledger.load_ledger(s)["sweep_id"] == "sweep-new"  # sweep.add / retry / wait act on this one


def test_a_status_during_a_rebalance_keeps_the_moves_it_made(tmp_path: Path):
    """sweep.status in one terminal, sweep.wait (rebalancing) in another: status must not write back the
    ledger it read before the move."""
    s = settings(f"OPS_HOSTS=a,b\nLOCAL_ARTIFACTS_DIR={tmp_path}\n")
    ledger.save_ledger(s, _ledger("sweep-1", "a"), latest=True)
    moved = lambda: ledger.save_ledger(s, _ledger("sweep-1", "b"))  # noqa: E731 - the rebalance
    fleet_status.status(s, "", [], _FakePods({"a": [{"run_id": "r", "state": "pending"}]}, moved))
    assert ledger.load_ledger(s)["runs"]["r"]["pods"] == ["b"]


def test_a_multi_node_run_with_a_pod_down_ends_as_lost_instead_of_unknown_forever():
    """It cannot move (its nodes start together) and cannot go on without that node: sweep.wait must end."""
    s = settings("OPS_HOSTS=a,b,c\n")
    ledger = _ledger("s")
    ledger["pods"]["c"] = {"slots": 1, "sweep_id": "s"}
    ledger["runs"]["mn"] = {"pods": ["a", "b"], "entry": {"gpus": "1"}, "moves": [], "last": {"state": "pending"}}
    ledger["runs"]["r"]["last"] = {"state": "success", "at": ""}
    ledger["order"].append("mn")
    orphans, lost = fleet_moves._orphans(s, ledger, {"b": "connection refused"})
    assert orphans == [] and lost == ["mn"]
    data = fleet_status.joined(ledger, {}, {"b": "connection refused"})
    assert [r["state"] for r in data["runs"] if r["run_id"] == "mn"] == ["lost"]
