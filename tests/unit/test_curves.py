"""curves.png of sweep.report (issue 21, part 7), by behaviour: the panels chosen (pure), and the figure's own
artists: panel titles in order, each run's series, markers where a series is a single point (or a few)."""

from __future__ import annotations

import pytest

from wfops.sweeps import curves


def run(rid: str, **metrics: list) -> dict:
    return {"run_id": rid, "metrics": {m: {"points": pts, "last": pts[-1][1] if pts else None}
                                       for m, pts in metrics.items()}}


RUNS = [run("a", val_loss=[[1, 3.0]], loss=[[i, 5.0 - i / 10] for i in range(30)], elapsed=[[1, 12.5]]),
        run("b", val_loss=[[1, 2.5]], elapsed=[[1, 11.0]], acc=[])]


def test_panels_follow_metric_columns_and_leave_wall_clock_out_unless_asked():
    found = ["loss", "elapsed", "val_loss", "acc"]
    assert [p.metric for p in curves.panels(RUNS, found, [])] == ["loss", "val_loss"]  # acc: no points
    assert [p.metric for p in curves.panels(RUNS, found, ["val_loss"])] == ["val_loss", "loss"]
    assert [p.metric for p in curves.panels(RUNS, found, ["elapsed", "loss"])] == ["elapsed", "loss", "val_loss"]
    val = curves.panels(RUNS, found, [])[1]
    assert [(s.run_id, s.steps, s.values, s.marker) for s in val.series] == [("a", [1], [3.0], "o"),
                                                                         ("b", [1], [2.5], "o")]
    assert curves.panels(RUNS, found, [])[0].series[0].marker == ""  # 30 points: a plain line
    assert curves.panels([run("c")], ["loss"], ["loss"]) == []  # configured but nobody reported it: no panel


def test_the_figure_draws_single_points_as_visible_markers_in_panel_order():
    plt = pytest.importorskip("matplotlib.pyplot")  # scripts/setup.sh installs it (wfops[report])

    fig = curves.figure(curves.panels(RUNS, ["loss", "elapsed", "val_loss"], ["val_loss"]))
    try:
        shown = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in shown] == ["val_loss", "loss"]
        lines = shown[0].get_lines()
        assert [ln.get_label() for ln in lines] == ["a", "b"]
        assert [list(ln.get_ydata()) for ln in lines] == [[3.0], [2.5]]
        assert all(ln.get_marker() == "o" and ln.get_markersize() > 0 for ln in lines)  # one point: a marker
        (loss,) = shown[1].get_lines()
        assert len(loss.get_xdata()) == 30 and loss.get_marker() in ("None", None, "")
    finally:
        plt.close(fig)
