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
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, HoverTool, InlineStyleSheet
from bokeh.models.annotations import Legend, LegendItem
from bokeh.models.widgets import DataTable, Div, RadioButtonGroup, TableColumn
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from sensor_pipeline.config import Settings
from sensor_pipeline.dashboard import panels
from sensor_pipeline.dashboard.aggregate import RANGES, View
from sensor_pipeline.dashboard.hub import Hub
from sensor_pipeline.dashboard.shaping import METRICS, TABLE_COLUMNS, latest_table
from sensor_pipeline.simulator import BEACHES

#: Milliseconds between a session's refreshes.
REFRESH_MS = 1000
#: The range selected when a page opens.
DEFAULT_RANGE = "1 h"
#: A log axis cannot show 0 NTU: turbidity is drawn from here up.
LOG_FLOOR = 0.01


def view_columns(view: View) -> dict[str, Any]:
    """A beach's :class:`View` as ColumnDataSource columns: ``time``, ``count`` and per metric
    ``<metric>``, ``<metric>_low``, ``<metric>_high``."""
    data: dict[str, Any] = {"time": view.time, "count": view.count}
    for j, (metric, _, _) in enumerate(METRICS):
        floor = LOG_FLOOR if metric == "Turbidity" else -np.inf
        data[metric] = np.maximum(view.mean[:, j], floor)
        data[f"{metric}_low"] = np.maximum(view.low[:, j], floor)
        data[f"{metric}_high"] = np.maximum(view.high[:, j], floor)
    return data


def make_figures() -> list[tuple[str, Any, Legend]]:
    """One time-series figure per metric, sharing the x range, each with its legend on its right."""
    figures: list[tuple[str, Any, Legend]] = []
    for metric, title, unit in METRICS:
        fig = figure(
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
    for _, fig, _ in figures[1:]:
        fig.x_range = figures[0][1].x_range
    return figures


def build(doc: Document, hub: Hub, settings: Settings) -> None:
    """Lay out the dashboard in ``doc`` and refresh it from ``hub``."""
    doc.title = "Chicago beach water quality: live"
    style = InlineStyleSheet(css=panels.STYLE)
    state: dict[str, Any] = {"seconds": dict(RANGES)[DEFAULT_RANGE], "drawn": {}}

    figures = make_figures()

    sources: dict[str, ColumnDataSource] = {}

    def ensure_beach(beach: str) -> ColumnDataSource:
        if beach not in sources:
            empty: dict[str, list[Any]] = {"time": [], "count": []} | {
                f"{m}{suffix}": [] for m, _, _ in METRICS for suffix in ("", "_low", "_high")
            }
            source = ColumnDataSource(empty, name=f"series-{beach}")
            sources[beach] = source
            color = Category10_10[(BEACHES.index(beach) if beach in BEACHES else len(sources)) % 10]
            for metric, fig, legend in figures:
                band = fig.varea(
                    "time", f"{metric}_low", f"{metric}_high", source=source, fill_color=color, fill_alpha=0.12
                )
                line = fig.line("time", metric, source=source, color=color, line_width=2, name=beach)
                renderers: list[Any] = [line, band]
                legend.items.append(LegendItem(label=beach, renderers=renderers))  # type: ignore[arg-type]
        return sources[beach]

    for beach in BEACHES:
        ensure_beach(beach)

    table_source = ColumnDataSource({c: [] for c in TABLE_COLUMNS})
    table = DataTable(
        source=table_source,
        columns=[TableColumn(field=c, title=c) for c in TABLE_COLUMNS],
        height=220,
        sizing_mode="stretch_width",
        index_position=None,
        reorderable=False,  # reordering columns needs jquery-ui, which Bokeh does not ship
    )
    status = Div(text="waiting for CleanSensorData ...", name="status")
    health = Div(text="", name="health", stylesheets=[style], sizing_mode="stretch_width")
    badges = Div(text="", name="badges", stylesheets=[style], sizing_mode="stretch_width")
    labels = [label for label, _ in RANGES]
    selector = RadioButtonGroup(labels=labels, active=labels.index(DEFAULT_RANGE), name="range")

    def refresh() -> None:
        snapshot = hub.snapshot(state["seconds"])
        drawn: dict[str, tuple[Any, ...]] = state["drawn"]
        for beach, view in snapshot["views"].items():
            mark = (view.width, len(view.time), view.time[-1] if len(view.time) else None, float(view.count.sum()))
            if drawn.get(beach) != mark:  # skip a beach whose buckets have not changed
                ensure_beach(beach).data = view_columns(view)
                drawn[beach] = mark
        health.text = panels.health_html(snapshot)
        badges.text = panels.badges_html(snapshot["badges"])
        if snapshot["latest"]:
            table_source.data = latest_table(snapshot["latest"])
        received = snapshot["health"]["received"]
        status.text = (
            f"<b>{received:,}</b> clean readings received; last update {datetime.now(UTC):%H:%M:%S} UTC"
            if received
            else "waiting for CleanSensorData ..."
        )

    def select_range(_attr: str, _old: int, new: int) -> None:
        state["seconds"] = RANGES[new][1]
        state["drawn"] = {}
        refresh()

    selector.on_change("active", select_range)
    refresh()
    doc.add_periodic_callback(refresh, REFRESH_MS)

    doc.add_root(
        column(
            row(Div(text="<h2>Chicago beach water quality &mdash; live</h2>"), status),
            Div(text="<b>Pipeline</b>"),
            health,
            Div(text="<b>Beaches</b> (latest reading; silent = no reading for several of its usual intervals)"),
            badges,
            row(Div(text="Time range (ending at the newest reading):"), selector),
            *(fig for _, fig, _ in figures),
            Div(text="<h3>Latest reading per beach</h3>"),
            table,
            sizing_mode="stretch_width",
        )
    )
