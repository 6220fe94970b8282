"""The pure parts of issue 12's results: metrics parsed on the pod (wfops/agent/metrics.py), the line filters of
run.logs (wfops/agent/logs.py), and the metric columns, order and report rows of the client
(wfops/sweeps/metrics.py)."""

from __future__ import annotations

import json

from wfops.agent import logs, metrics
from wfops.sweeps import metrics as results


def test_metrics_from_the_log_keep_rank_0_and_skip_what_is_no_number(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "stdout.log").write_text(
        "2026-01-01T00:00:00.000+00:00 [rank1]:iter 1: loss 9.0\n"
        "2026-01-01T00:00:00.000+00:00 [rank0]:iter 1: loss 4.5\n"
        "2026-01-01T00:00:00.000+00:00 iter 2: loss 2.25 and more\n"
        "2026-01-01T00:00:00.000+00:00 iter x: loss nan?\n")
    pats = metrics.compile_patterns([r"iter (?P<step>\d+): loss (?P<loss>[\d.]+)"])
    source, series = metrics.run_series(str(run), pats)
    assert source == "stdout.log" and series.data == {"loss": [[1.0, 4.5], [2.0, 2.25]]}
    assert metrics.last_values(str(run), pats) == {"loss": 2.25}  # read backwards: the last match of rank 0
    data = json.loads(json.dumps(metrics.summary(series, 10)))
    assert (data["loss"]["min"], data["loss"]["max"], data["loss"]["last"], data["loss"]["n"]) == (2.25, 4.5, 2.25, 2)
    assert metrics.run_series(str(run), metrics.compile_patterns([r"never (?P<x>\d)"]))[1].data == {}


def test_metrics_jsonl_wins_and_its_step_may_be_called_iter(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "stdout.log").write_text("x iter 1: loss 7\n")
    (run / "metrics.jsonl").write_text('{"iter": 5, "loss": 1.5, "lr": 0.1, "note": "s", "ok": true}\nnot json\n'
                                       '{"iter": 6, "loss": 1.25}\n[1, 2]\n')
    pats = metrics.compile_patterns([r"iter (?P<step>\d+): loss (?P<loss>[\d.]+)"])
    assert metrics.run_series(str(run), pats)[1].data == {"loss": [[5.0, 1.5], [6.0, 1.25]], "lr": [[5.0, 0.1]]}
    assert metrics.last_values(str(run), pats) == {"loss": 1.25, "lr": 0.1}
    assert metrics.thin([[i, i] for i in range(100)], 5) == [[0, 0], [25, 25], [50, 50], [74, 74], [99, 99]]


def test_rank_filter_and_tail_offsets(tmp_path):
    log = tmp_path / "stdout.log"
    lines = [b"T torchrun says hello", b"T [rank0]:a", b"T [rank1]:b", b"T [rank1]:c", b"T [rank0]:d"]
    log.write_bytes(b"\n".join(lines) + b"\n")
    rank0, rank1, every = logs.rank_filter(0), logs.rank_filter(1), logs.rank_filter(None)
    assert [ln for ln in lines if rank0(ln)] == [lines[0], lines[1], lines[4]]
    assert [ln for ln in lines if rank1(ln)] == [lines[2], lines[3]]
    text = log.read_bytes()
    assert text[logs.tail_offset(str(log), 2, every):] == b"T [rank1]:c\nT [rank0]:d\n"
    assert text[logs.tail_offset(str(log), 1, rank1):].startswith(b"T [rank1]:c\n")
    assert logs.tail_offset(str(log), 99, every) == 0
    big = tmp_path / "big.log"
    big.write_bytes(b"".join(b"T line %d\n" % i for i in range(40000)))  # several read chunks
    assert big.read_bytes()[logs.tail_offset(str(big), 3, every):] == b"T line 39997\nT line 39998\nT line 39999\n"


def test_direction_columns_and_order():
    assert results.higher_is_better("val_acc") and not results.higher_is_better("val_loss")
    rows = [{"run_id": "a", "metrics": {"loss": 2.0, "acc": 0.5}}, {"run_id": "b", "metrics": {}},
            {"run_id": "c", "metrics": {"loss": 1.0, "acc": 0.9}}]
    cols, ordered = results.status_metrics(rows, [], "loss")
    assert cols == ["loss"] and [r["run_id"] for r in ordered] == ["c", "a", "b"]
    cols, ordered = results.status_metrics(rows, ["acc"], "acc")
    assert cols == ["acc"] and [r["run_id"] for r in ordered] == ["c", "a", "b"]
    cols, ordered = results.status_metrics(rows, [], None)
    assert cols == ["loss"] and [r["run_id"] for r in ordered] == ["a", "b", "c"]
    assert results.fmt(3.0) == "3" and results.fmt(0.123456) == "0.1235" and results.fmt(None) == ""
    sorted_keys = [{"metrics": {"acc": 1, "val_loss": 2}, "metric_order": ["val_loss", "acc"]}]  # as JSON sends it
    assert results.metric_names(sorted_keys) == ["val_loss", "acc"]
    assert results.metric_cells({"metrics": {"loss": 2.0}}, ["loss", "acc"]) == ["2", ""]


def test_report_rows_have_an_override_per_column_and_final_and_best():
    runs = [{"run_id": "a", "state": "success", "attempts": 1, "duration_secs": 3.5, "config": "c.py", "seed": 1,
             "overrides": ["lr=1e-3", "--batch=8"], "metrics": {"loss": {"last": 2.0, "min": 1.5, "max": 3.0}}},
            {"run_id": "b", "state": "failed", "attempts": 2, "duration_secs": 1, "config": "c.py", "seed": 2,
             "overrides": ["depth=4"], "metrics": {}}]
    keys, names = results.report_columns(runs, [])
    assert keys == ["lr", "batch", "depth"] and names == ["loss"]
    assert results.report_header(keys, names) == ["run_id", "state", "attempts", "duration_secs", "cost_usd",
                                                  "config", "seed", "lr", "batch", "depth", "loss_final", "loss_best"]
    assert results.report_row(runs[0], keys, names) == ["a", "success", 1, 3.5, None, "c.py", 1, "1e-3", "8", "",
                                                        2.0, 1.5]
    assert results.report_row(dict(runs[0], cost_usd=0.1234567891), keys, names)[4] == 0.123457
    assert results.report_row(runs[1], keys, names)[-5:] == ["", "", "4", None, None]
    assert [r["run_id"] for r in results.report_sort(list(reversed(runs)), "loss")] == ["a", "b"]
    assert results.report_columns(runs, ["acc"])[1] == ["acc", "loss"]  # METRIC_COLUMNS first, then every other


def test_sweep_status_reads_metrics_where_the_run_trains_from_the_files_its_row_was_read_from(tmp_path):
    """status.json (else summary.json) names the run's training dir (local_sync): its metrics.jsonl is read, as
    when the agent read those files a second time; a damaged status.json falls back to summary.json's."""
    from wfops.agent import sweeps
    from wfops.agent.states import Layout

    out = tmp_path / "out"
    (out / "_control").mkdir(parents=True)
    (out / "_manifests").mkdir()
    sid = "sweep-20261201T000000Z"
    for rid, status, summary in (("a", {"out_dir": str(tmp_path / "a-local")}, None),
                                 ("b", "{damaged", {"out_dir": str(tmp_path / "b-local"), "state": "success"}),
                                 ("c", {}, None)):
        (out / rid).mkdir()
        doc = status if isinstance(status, str) else json.dumps({"run_id": rid, "sweep_id": sid, "state": "running",
                                                                 **status})
        (out / rid / "status.json").write_text(doc)
        if summary is not None:
            (out / rid / "summary.json").write_text(json.dumps({"run_id": rid, "sweep_id": sid, **summary}))
        (tmp_path / f"{rid}-local").mkdir()
        (tmp_path / f"{rid}-local" / "metrics.jsonl").write_text(json.dumps({"loss": ord(rid)}) + "\n")
        (out / rid / "metrics.jsonl").write_text(json.dumps({"loss": -1}) + "\n")  # the synced copy: older
    plan = {"sweep_id": sid, "runs": [{"run_id": r, "selected": True} for r in "abc"], "queue": []}
    (out / "_manifests" / "sweep-latest.json").write_text(json.dumps(plan))
    (out / "_control" / "sweep.json").write_text(json.dumps({"sweep_id": sid, "state": "completed", "pid": 0}))
    rows = sweeps.sweep_status(Layout(str(out)), "", [])["runs"]
    assert [r["metrics"] for r in rows] == [{"loss": ord("a")}, {"loss": ord("b")}, {"loss": -1}]
