"""The pure decisions of a managed sweep: which runs start again on a recovered pod (agent/recover.py), when a
silent pod is lost, and the record that counts recoveries against RECOVER_MAX and remembers rented pods."""

from __future__ import annotations

from pathlib import Path

from wfops.agent.recover import restart_entries
from wfops.settings.load import load_settings
from wfops.sweeps.history import history_lines
from wfops.sweeps.recover import Book, Silence


def test_lost_runs_restart_at_their_next_attempt_pending_ones_as_queued_and_ended_ones_never():
    queue = [{"run_id": r, "config": "c"} for r in ("ok", "lost", "wait", "bad", "other")]
    queue[2]["attempt"] = 1
    rows = {"ok": {"state": "success"}, "lost": {"state": "lost", "attempt": 2}, "wait": {"state": "pending"},
            "bad": {"state": "failed"}, "other": {"state": "lost", "attempt": 1}}
    out = restart_entries(queue, rows, "pod gone", None)  # type: ignore[arg-type]
    assert [(e["run_id"], e.get("attempt"), e.get("rerun_why")) for e in out] == [
        ("lost", 3, "lost: pod gone"), ("wait", 1, None), ("other", 2, "lost: pod gone")]
    only = restart_entries(queue, rows, "x", ["lost"])  # type: ignore[arg-type]
    assert [e["run_id"] for e in only] == ["lost"]


def test_a_silent_pod_is_lost_after_the_wait_or_at_once_when_its_provider_says_it_is_gone():
    s = Silence(after=10)
    assert s.lost(100.0, "refused", None) is None
    assert s.lost(105.0, "refused", None) is None
    assert s.lost(110.0, "refused", None) == "silent for 10s (refused)"
    s.heard()
    assert s.lost(200.0, "refused", "Lium reports it FAILED") == "Lium reports it FAILED"


def test_the_record_counts_recoveries_per_sweep_and_keeps_rented_pods_across_commands(tmp_path: Path):
    cfg = tmp_path / "workflow.env"
    cfg.write_text(f"OPS_DEFAULT_HOST=local\nLOCAL_ARTIFACTS_DIR={tmp_path / 'a'}\n")
    settings = load_settings(cfg)
    book = Book(settings)
    book.spend()
    book.note("train", "rented", "rented pod p2", pod_id="p2")  # before the sweep id is known: in memory
    book.bind("sweep-1")
    book.ran("r1", 2, "train (id p2)")
    again = Book.load(settings, "sweep-1")
    assert again.recoveries == 1 and again.rented == ["p2"]
    assert history_lines(settings.local_artifacts_dir, "sweep-1")[-1] == "r1: attempt 2 on train (id p2)"
    assert history_lines(settings.local_artifacts_dir, "sweep-2") == []


def test_a_fleet_pods_replacement_gets_its_own_volume_never_the_one_lium_volume():
    import pytest

    from wfops.errors import ConfigError
    from wfops.settings.load import parse_settings
    from wfops.targets.providers.lium import replacement_spec
    from wfops.targets.target import Member

    base = parse_settings("", environ={})
    fleet = base.override({"LIUM_TARGETS": "a,b,c", "LIUM_VOLUME": "id:shared-one",
                           "LIUM_VOLUMES": "id:vol-a,,id:vol-c"})
    assert fleet.lium_volumes == ("id:vol-a", "", "id:vol-c")
    assert [replacement_spec(fleet, Member(n, "lium")).lium_volume for n in "abc"] == ["id:vol-a", "", "id:vol-c"]
    short = fleet.override({"LIUM_VOLUMES": "id:vol-a"})  # c has no entry: no volume, not LIUM_VOLUME
    assert replacement_spec(short, Member("c", "lium")).lium_volume == ""
    one = base.override({"LIUM_TARGET": "train", "LIUM_VOLUME": "id:mine"})  # a single pod: LIUM_VOLUME
    assert replacement_spec(one, Member("train", "lium")).lium_volume == "id:mine"
    for bad in ("new:name=x", "id:a b", "vol-a", "id:$(touch x)"):
        with pytest.raises(ConfigError, match=r"^config: LIUM_VOLUMES=.* is not valid: expected comma-separated id:"):
            base.override({"LIUM_VOLUMES": bad})


def test_status_history_names_the_pod_of_each_attempt_and_where_a_run_waits(tmp_path: Path):
    cfg = tmp_path / "workflow.env"
    cfg.write_text(f"LOCAL_ARTIFACTS_DIR={tmp_path / 'art'}\n")
    book = Book(load_settings(cfg))
    book.bind("sweep-1")
    book.ran("r1", 1, "train")
    book.ran("r1", 2, "train (id new)")
    book.ran("r2", 1, "train (id new)", queued=True)
    lines = history_lines(load_settings(cfg).local_artifacts_dir, "sweep-1")
    assert "r1: attempt 1 on train, attempt 2 on train (id new)" in lines
    assert "r2: attempt 1 queued on train (id new)" in lines
