"""sweep.report's curves.png: which panels, in which order, and each run's series in them (pure: `panels`), then
the figure (`figure`: matplotlib, imported only there).

A panel per metric that some run reported, those of METRIC_COLUMNS first in their order, then the others as
found; a wall-clock series (`elapsed`, ...) is time, not a result, and gets a panel only when METRIC_COLUMNS names
it. A series of few points is drawn with markers, so one point per run (one validation, one epoch) is visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

WALL_CLOCK = ("elapsed", "elapsed_s", "elapsed_secs", "elapsed_time", "time_elapsed", "wall_time", "wallclock",
              "wall_clock", "timestamp", "_timestamp", "_runtime")
MARKERS_UP_TO = 10  # points in a series drawn with markers (a single point is nothing but its marker)


@dataclass(frozen=True)
class Series:
    run_id: str
    steps: list[float]
    values: list[float]

    @property
    def marker(self) -> str:
        return "o" if len(self.steps) <= MARKERS_UP_TO else ""


@dataclass(frozen=True)
class Panel:
    metric: str
    series: list[Series]


def _points(run: dict[str, Any], metric: str) -> list[Any]:
    return list(((run.get("metrics") or {}).get(metric) or {}).get("points") or [])


def panels(runs: Sequence[dict[str, Any]], metrics: Sequence[str], configured: Sequence[str]) -> list[Panel]:
    """The panels of curves.png: `metrics` (every metric of the report) with METRIC_COLUMNS (`configured`) first,
    wall-clock series left out unless configured, and only those some run has points of."""
    order = [m for m in configured if m in metrics] + [m for m in metrics if m not in configured]
    out = []
    for metric in order:
        if metric.lower() in WALL_CLOCK and metric not in configured:
            continue
        series = [Series(str(run.get("run_id")), [p[0] for p in pts], [p[1] for p in pts])
                  for run in runs if (pts := _points(run, metric))]
        if series:
            out.append(Panel(metric, series))
    return out


def figure(shown: Sequence[Panel]) -> Any:
    """The matplotlib figure of the panels (two columns); the caller saves and closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(2, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, shown, strict=False):
        for s in panel.series:
            ax.plot(s.steps, s.values, label=s.run_id, marker=s.marker or None, markersize=5)
        ax.set_title(panel.metric)
        ax.set_xlabel("step")
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
