"""The dashboard document: a pipeline-health row, per-beach status badges, time series of temperature,
turbidity and battery (bucket means with a min-max band, over a selectable time range), and the latest
reading per beach.

Each session pulls a bounded :meth:`Hub.snapshot` once a second on its own event loop: the data a
browser receives is a few hundred buckets per beach, whatever the reading rate.

Everything is built inside :func:`build`, in closures: Bokeh clears a directory app's ``main.py``
globals when a session ends, so callbacks must not depend on them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from bokeh import events
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, HoverTool, InlineStyleSheet, Range1d
from bokeh.models.annotations import Legend, LegendItem
from bokeh.models.widgets import Div, RadioButtonGroup
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from sensor_pipeline.config import Settings
from sensor_pipeline.contract.schema import BEACHES
from sensor_pipeline.dashboard import panels, status
from sensor_pipeline.dashboard.aggregate import RANGES, View
from sensor_pipeline.dashboard.hub import Hub
from sensor_pipeline.dashboard.shaping import METRICS, latest_table

#: Milliseconds between a session's refreshes.
REFRESH_MS = 1000
#: The range selected when a page opens.
DEFAULT_RANGE = "1 h"
#: A log axis cannot show 0 NTU: turbidity is drawn from here up.
LOG_FLOOR = 0.01
#: Without a known cadence, buckets this many times further apart than their median spacing are a gap.
GAP_FACTOR = 5


def view_columns(view: View, interval: float | None = None) -> dict[str, Any]:
    """A beach's :class:`View` as ColumnDataSource columns: ``time``, ``count`` and per metric
    ``<metric>``, ``<metric>_low``, ``<metric>_high``.

    Where the beach was silent, two rows at the gap's edges break the line (NaN) and pinch the min-max
    band to nothing (low = high): a gap shows as a gap, not as a straight line across it. Silent is
    what the badges call it (``status.SILENT_INTERVALS`` of the beach's usual ``interval`` between
    readings, in seconds, at least ``SILENT_FLOOR``), and always more than 3 buckets apart."""
    data: dict[str, Any] = {"time": view.time, "count": view.count}
    for j, (metric, _, _) in enumerate(METRICS):
        floor = LOG_FLOOR if metric == "Turbidity" else -np.inf
        data[metric] = np.maximum(view.mean[:, j], floor)
        data[f"{metric}_low"] = np.maximum(view.low[:, j], floor)
        data[f"{metric}_high"] = np.maximum(view.high[:, j], floor)
    if len(view.time) < 2:
        return data
    spacing = np.diff(view.time)
    silent = (
        status.SILENT_INTERVALS * interval if interval is not None else GAP_FACTOR * float(np.median(spacing)) / 1000
    )
    gaps = np.nonzero(spacing > 1000.0 * max(silent, status.SILENT_FLOOR, 3 * view.width))[0]
    if not len(gaps):
        return data
    half = view.width * 500.0
    edges = {  # per gap: a row just after the bucket before it, and one just before the bucket after it
        "time": (view.time[gaps] + half, view.time[gaps + 1] - half),
        "count": (np.zeros(len(gaps)), np.zeros(len(gaps))),
    }
    for metric, _, _ in METRICS:
        edges[metric] = (np.full(len(gaps), np.nan), np.full(len(gaps), np.nan))
        pinch = (data[metric][gaps], data[metric][gaps + 1])
        edges[f"{metric}_low"] = edges[f"{metric}_high"] = pinch
    order = np.argsort(np.concatenate([np.arange(len(view.time)), gaps + 0.3, gaps + 0.6]), kind="stable")
    return {k: np.concatenate([v, *edges[k]])[order] for k, v in data.items()}


def make_figures() -> list[tuple[str, Any, Legend]]:
    """One time-series figure per metric, sharing one x range (set by the range selector: a gap in
    the feed shows as a gap), each with its legend on its right."""
    figures: list[tuple[str, Any, Legend]] = []
    x_range = Range1d(start=0, end=1)
    for metric, title, unit in METRICS:
        fig = figure(
            x_range=x_range,
            title=f"{title} ({unit})",
            x_axis_type="datetime",
            y_axis_type="log" if metric == "Turbidity" else "linear",
            height=240,
            sizing_mode="stretch_width",
            tools="pan,wheel_zoom,box_zoom,reset,save",
            name=f"plot-{metric}",
        )
        fig.add_tools(
            HoverTool(
                tooltips=[
                    ("beach", "$name"),
                    ("time", "@time{%F %T}"),
                    (title, f"@{metric}{{0.00}} {unit} (min @{metric}_low{{0.00}}, max @{metric}_high{{0.00}})"),
                    ("readings", "@count"),
                ],
                formatters={"@time": "datetime"},
                mode="mouse",
            )
        )
        # Outside the plot, on its right: a legend never covers the data. Click an entry to hide a beach.
        legend = Legend(items=[], location="top_left", click_policy="hide", label_text_font_size="11px")
        fig.add_layout(legend, "right")
        figures.append((metric, fig, legend))
    return figures


def status_line(snapshot: dict[str, Any], now: float) -> str:
    """How much arrived, when the newest reading was taken, and whether the feed is live or a replay."""
    received = snapshot["health"]["received"]
    if not received:
        return "waiting for CleanSensorData ..."
    newest = snapshot["newest"]
    taken = datetime.fromtimestamp(newest, UTC)
    mode = "live" if snapshot["live"] else "replay (historical timestamps)"
    ago = f" ({status.duration(now - newest)} ago)" if snapshot["live"] else ""
    return (
        f"<b>{received:,}</b> clean readings received &middot; "
        f"newest taken {taken:%Y-%m-%d %H:%M:%S} UTC{ago} &middot; {mode}"
    )


class Session:
    """One browser session's models and callbacks (methods, not ``main.py`` globals)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.seconds: float | None = dict(RANGES)[DEFAULT_RANGE]
        #: Whether the x range follows the feed; a pan or zoom stops it, reset or a range choice resumes it.
        self.following = True
        self.pushed: tuple[float, float] | None = None
        #: Per beach, what its source holds (width, buckets, last bucket, count): unchanged is not resent.
        self.drawn: dict[str, tuple[Any, ...]] = {}
        self.figures = make_figures()
        for _, fig, _ in self.figures:
            fig.on_event(events.Reset, self.resume)
        self.sources: dict[str, ColumnDataSource] = {}
        for beach in BEACHES:
            self.ensure_beach(beach)
        style = InlineStyleSheet(css=panels.STYLE)
        self.status = Div(text="waiting for CleanSensorData ...", name="status")
        self.health = Div(text="", name="health", stylesheets=[style], sizing_mode="stretch_width")
        self.badges = Div(text="", name="badges", stylesheets=[style], sizing_mode="stretch_width")
        # An HTML table, not Bokeh's DataTable: in Bokeh 3.9 a DataTable renders the first update of its
        # source and then no more (bokeh/bokeh#13859, #13484; seen here in chromium).
        self.table = Div(text="", name="latest", stylesheets=[style], sizing_mode="stretch_width")
        labels = [label for label, _ in RANGES]
        self.selector = RadioButtonGroup(labels=labels, active=labels.index(DEFAULT_RANGE), name="range")
        self.selector.on_change("active", self.select_range)

    def layout(self) -> Any:
        return column(
            row(Div(text="<h2>Chicago beach water quality &mdash; live</h2>"), self.status),
            Div(text="<b>Pipeline</b>"),
            self.health,
            Div(text="<b>Beaches</b> (latest reading; silent = no reading for several of its usual intervals)"),
            self.badges,
            row(Div(text="Time range (up to now; a replay: up to its newest reading):"), self.selector),
            *(fig for _, fig, _ in self.figures),
            Div(text="<h3>Latest reading per beach</h3>"),
            self.table,
            sizing_mode="stretch_width",
        )

    def ensure_beach(self, beach: str) -> ColumnDataSource:
        if beach not in self.sources:
            empty: dict[str, list[Any]] = {"time": [], "count": []} | {
                f"{m}{suffix}": [] for m, _, _ in METRICS for suffix in ("", "_low", "_high")
            }
            source = ColumnDataSource(empty, name=f"series-{beach}")
            self.sources[beach] = source
            color = Category10_10[(BEACHES.index(beach) if beach in BEACHES else len(self.sources)) % 10]
            for metric, fig, legend in self.figures:
                band = fig.varea(
                    "time", f"{metric}_low", f"{metric}_high", source=source, fill_color=color, fill_alpha=0.12
                )
                line = fig.line("time", metric, source=source, color=color, line_width=2, name=beach)
                renderers: list[Any] = [line, band]
                legend.items.append(LegendItem(label=beach, renderers=renderers))  # type: ignore[arg-type]
        return self.sources[beach]

    @staticmethod
    def show(div: Div, text: str) -> None:
        if div.text != text:  # an unchanged text is not sent again
            div.text = text

    def refresh(self) -> None:
        snapshot = self.hub.snapshot(self.seconds)
        for beach, view in snapshot["views"].items():
            mark = (view.width, len(view.time), view.time[-1] if len(view.time) else None, float(view.count.sum()))
            if self.drawn.get(beach) != mark:
                self.ensure_beach(beach).data = view_columns(view, snapshot["intervals"].get(beach))
                self.drawn[beach] = mark
        self.follow(snapshot)
        self.show(self.health, panels.health_html(snapshot))
        self.show(self.badges, panels.badges_html(snapshot["badges"]))
        self.show(self.table, panels.latest_html(latest_table(snapshot["latest"])))
        self.show(self.status, status_line(snapshot, datetime.now(UTC).timestamp()))

    def follow(self, snapshot: dict[str, Any]) -> None:
        """The x range: the selected span up to the snapshot's end (a gap in the feed shows as one);
        "all": from the first bucket. Left alone once the user pans or zooms (until reset)."""
        x_range = self.figures[0][1].x_range
        if self.pushed is not None and (x_range.start, x_range.end) != self.pushed:
            self.following = False  # moved in the browser: the user's view wins
        if not self.following:
            return
        end = snapshot["end"] * 1000.0
        if self.seconds is not None:
            start = end - self.seconds * 1000.0
        else:
            firsts = [v.time[0] - v.width * 500.0 for v in snapshot["views"].values() if len(v.time)]
            start = min(firsts, default=end - 3_600_000.0)
        if (x_range.start, x_range.end) != (start, end):
            # reset_start/reset_end: the toolbar's reset returns to the followed window.
            x_range.update(start=start, end=end, reset_start=start, reset_end=end)
        self.pushed = (start, end)

    def resume(self, _event: object = None) -> None:
        self.following, self.pushed = True, None

    def select_range(self, _attr: str, _old: int, new: int) -> None:
        self.seconds = RANGES[new][1]
        self.drawn = {}
        self.resume()
        self.refresh()


def build(doc: Document, hub: Hub, settings: Settings) -> None:
    """Lay out the dashboard in ``doc`` and refresh it from ``hub`` once a second."""
    doc.title = "Chicago beach water quality: live"
    session = Session(hub)
    session.refresh()
    doc.add_periodic_callback(session.refresh, REFRESH_MS)
    doc.add_root(session.layout())
