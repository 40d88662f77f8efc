"""The dashboard document: per-beach time series of temperature, turbidity and battery, and the latest
reading per beach. Data arrives from the shared hub through ``add_next_tick_callback``.

Everything is built inside :func:`build`, in closures: Bokeh clears a directory app's ``main.py``
globals when a session ends, so callbacks must not depend on them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from html import escape
from typing import Any

from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.models.widgets import DataTable, Div, TableColumn
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from sensor_pipeline.config import Settings
from sensor_pipeline.dashboard.hub import Hub
from sensor_pipeline.dashboard.shaping import METRICS, SERIES_COLUMNS, TABLE_COLUMNS, latest_table, series_by_beach
from sensor_pipeline.simulator import BEACHES


def build(doc: Document, hub: Hub, settings: Settings) -> None:
    """Lay out the dashboard in ``doc`` and subscribe it to ``hub``."""
    doc.title = "Chicago beach water quality: live"
    rollover = settings.dashboard_rollover

    sources: dict[str, ColumnDataSource] = {}
    colors = {beach: Category10_10[i % 10] for i, beach in enumerate(BEACHES)}
    figures = []
    for metric, title, unit in METRICS:
        fig = figure(
            title=f"{title} ({unit})",
            x_axis_type="datetime",
            y_axis_type="log" if metric == "Turbidity" else "linear",
            height=260,
            sizing_mode="stretch_width",
            tools="pan,wheel_zoom,box_zoom,reset,save",
        )
        fig.add_tools(
            HoverTool(
                tooltips=[("time", "@time{%F %T}"), (title, f"@{metric}{{0.00}} {unit}")],
                formatters={"@time": "datetime"},
            )
        )
        figures.append((metric, fig))
    if len(figures) > 1:
        for _, fig in figures[1:]:
            fig.x_range = figures[0][1].x_range

    table_source = ColumnDataSource({c: [] for c in TABLE_COLUMNS})
    table = DataTable(
        source=table_source,
        columns=[TableColumn(field=c, title=c) for c in TABLE_COLUMNS],
        height=220,
        sizing_mode="stretch_width",
        index_position=None,
    )
    status = Div(text="waiting for CleanSensorData ...")
    consumer = Div(text="")

    def show_health() -> None:
        """The consumer's health, for operators: a stalled or rejecting consumer is visible here."""
        health = hub.health()
        state = "connected" if health["connected"] else ("reconnecting" if health["alive"] else "stopped")
        text = (
            f"consumer <b>{state}</b> &middot; {health['messages']} messages &middot; "
            f"{health['rejected']} rejected &middot; {health['errors']} errors"
        )
        if health["last_error"]:
            text += f" &middot; last error {escape(str(health['last_error'])[:200])} at {health['last_error_at']}"
        consumer.text = text

    show_health()
    doc.add_periodic_callback(show_health, 2000)

    def ensure_beach(beach: str) -> ColumnDataSource:
        if beach not in sources:
            source = ColumnDataSource({c: [] for c in SERIES_COLUMNS})
            sources[beach] = source
            color = colors.get(beach, Category10_10[len(sources) % 10])
            for metric, fig in figures:
                fig.line("time", metric, source=source, color=color, legend_label=beach, line_width=2)
                fig.scatter("time", metric, source=source, color=color, legend_label=beach, size=3)
                fig.legend.location = "top_left"
                fig.legend.click_policy = "hide"
        return sources[beach]

    def apply(messages: list[dict[str, Any]]) -> None:
        """Runs on the document's event loop (scheduled by the hub's thread)."""
        for beach, columns in series_by_beach(messages).items():
            new_data: dict[str, Any] = dict(columns)
            ensure_beach(beach).stream(new_data, rollover=rollover)
        table_source.data = latest_table(hub.latest)
        status.text = (
            f"<b>{hub.received}</b> clean readings received; last update "
            f"{datetime.now(UTC):%H:%M:%S} UTC; {len(sources)} beaches"
        )

    def on_messages(messages: list[dict[str, Any]]) -> None:
        """Called from the consumer thread: hand over to the document's own loop."""
        doc.add_next_tick_callback(partial(apply, messages))

    history = hub.subscribe(doc, on_messages)
    if history:
        apply(history)
    doc.on_session_destroyed(lambda _context: hub.unsubscribe(doc))

    doc.add_root(
        column(
            row(Div(text="<h2>Chicago beach water quality &mdash; live</h2>"), status),
            consumer,
            *(fig for _, fig in figures),
            Div(text="<h3>Latest reading per beach</h3>"),
            table,
            sizing_mode="stretch_width",
        )
    )
