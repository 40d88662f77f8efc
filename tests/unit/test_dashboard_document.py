"""The dashboard document builds without a server: health row, six beaches' badges, range selector,
legends outside the plots."""

from __future__ import annotations

import numpy as np
from bokeh.document import Document
from bokeh.models import Div, Plot
from bokeh.models.widgets import RadioButtonGroup

from sensor_pipeline.config import Settings
from sensor_pipeline.dashboard.aggregate import RANGES, View
from sensor_pipeline.dashboard.document import Session, build, view_columns
from sensor_pipeline.dashboard.hub import Hub
from sensor_pipeline.dashboard.panels import dead_alert, latest_html
from sensor_pipeline.source.simulator import BEACHES


def test_the_document_shows_health_badges_a_range_selector_and_outside_legends() -> None:
    hub = Hub(Settings(), history=10)  # never started: no Kafka needed
    doc = Document()
    build(doc, hub, Settings())
    health = doc.select_one({"name": "health"})
    assert isinstance(health, Div)
    assert all(f'data-metric="{m}"' in health.text for m in ("in", "clean", "dead", "lag", "delay", "dashboard"))
    assert "consumer stopped" in health.text
    badges = doc.select_one({"name": "badges"})
    assert isinstance(badges, Div)
    assert all(f'data-beach="{beach}" data-level="unknown"' in badges.text for beach in BEACHES)
    selector = doc.select_one({"name": "range"})
    assert isinstance(selector, RadioButtonGroup) and selector.labels == [label for label, _ in RANGES]
    plots = list(doc.select({"type": Plot}))
    assert len(plots) == 3
    for plot in plots:
        assert plot.center == [] or all(type(r).__name__ != "Legend" for r in plot.center)
        [legend] = plot.right
        assert [item.label["value"] for item in legend.items] == list(BEACHES)


T0 = 1_720_000_000.0


def test_a_silent_stretch_breaks_the_line_instead_of_bridging_it() -> None:
    times = np.array([0.0, 1.0, 2.0, 3.0, 60.0, 61.0]) + 1_720_000_000.0
    view = View(
        width=1,
        time=(times + 0.5) * 1000,
        count=np.ones(6),
        mean=np.full((6, 3), 2.0),
        low=np.full((6, 3), 1.0),
        high=np.full((6, 3), 3.0),
    )
    columns = view_columns(view)
    assert len(columns["time"]) == 8  # two rows at the gap's edges
    assert list(np.diff(columns["time"]) > 0) == [True] * 7
    assert (
        np.isnan(columns["WaterTemperature"][4:6]).all() and not np.isnan(np.delete(columns["Turbidity"], [4, 5])).any()
    )
    assert (columns["Turbidity_low"][4:6] == columns["Turbidity_high"][4:6]).all()  # the band pinched shut
    assert columns["time"][4] == (times[3] + 1) * 1000 and columns["time"][5] == times[4] * 1000  # bucket edges
    steady = View(1, view.time[:4], view.count[:4], view.mean[:4], view.low[:4], view.high[:4])
    assert len(view_columns(steady)["time"]) == 4


def test_dead_letters_are_marked_when_they_exceed_a_share_of_the_input_or_the_store_refuses() -> None:
    assert not dead_alert({"in": 1000.0, "dead": 5.0}, {"bad_shape": 300})  # 0.5%: the usual trickle
    assert dead_alert({"in": 1000.0, "dead": 50.0}, {"bad_shape": 3000})
    assert dead_alert({"in": None, "dead": 0.2}, {"bad_shape": 12})  # nothing coming in, letters still
    assert dead_alert({"in": 1000.0, "dead": 0.1}, {"store_rejected": 6})
    assert not dead_alert({"in": None, "dead": None}, {})


def test_a_gap_is_where_the_beach_was_silent_for_several_of_its_intervals() -> None:
    def view(seconds: list[float]) -> View:
        n = len(seconds)
        ones = np.ones((n, 3))
        return View(1, (np.array(seconds) + T0 + 0.5) * 1000, np.ones(n), ones, ones, ones)

    assert len(view_columns(view([0, 1, 100]), interval=1.0)["time"]) == 5  # three buckets, one gap
    assert len(view_columns(view([0, 100, 200, 201, 202]), interval=1.0)["time"]) == 9  # gaps in the majority
    assert len(view_columns(view([0, 3600, 7200]), interval=3600.0)["time"]) == 3  # hourly: no gap


def test_the_plots_follow_the_feed_until_the_user_pans_and_again_after_reset() -> None:
    now = [T0]
    hub = Hub(Settings(), history=0, wall=lambda: now[0])
    session = Session(hub)
    x_range = session.figures[0][1].x_range
    session.refresh()
    assert (x_range.start, x_range.end) == ((T0 - 3600) * 1000, T0 * 1000)  # 1 h up to now
    now[0] += 5
    session.refresh()
    assert x_range.end == (T0 + 5) * 1000
    x_range.update(start=(T0 - 60) * 1000, end=T0 * 1000)  # a zoom in the browser
    now[0] += 5
    session.refresh()
    assert (x_range.start, x_range.end) == ((T0 - 60) * 1000, T0 * 1000)  # left alone
    session.resume()  # the toolbar's reset, or a range chosen
    session.refresh()
    assert x_range.end == (T0 + 10) * 1000


def test_the_latest_table_is_html_with_a_row_per_beach_and_escapes_what_it_shows() -> None:
    html = latest_html({"Beach": ["<b>A</b>", "B"], "Turbidity": [1.5, 2.0], "Flags": ["-", "low_battery"]})
    assert html.count("<tr data-latest=") == 2 and "&lt;b&gt;A&lt;/b&gt;" in html and "<b>A</b>" not in html
    assert '<td class="number">1.5</td>' in html
    assert "no readings yet" in latest_html({"Beach": [], "Turbidity": [], "Flags": []})
