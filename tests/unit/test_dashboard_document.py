"""The dashboard document builds without a server: health row, six beaches' badges, range selector,
legends outside the plots."""

from __future__ import annotations

from bokeh.document import Document
from bokeh.models import Div, Plot
from bokeh.models.widgets import RadioButtonGroup

from sensor_pipeline.config import Settings
from sensor_pipeline.dashboard.aggregate import RANGES
from sensor_pipeline.dashboard.document import build
from sensor_pipeline.dashboard.hub import Hub
from sensor_pipeline.simulator import BEACHES


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
