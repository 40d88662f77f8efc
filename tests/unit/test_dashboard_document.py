"""The dashboard document builds without a server and shows the consumer's health."""

from __future__ import annotations

from bokeh.document import Document
from bokeh.models import Div

from sensor_pipeline.config import Settings
from sensor_pipeline.dashboard.document import build
from sensor_pipeline.dashboard.hub import Hub


def test_the_document_shows_the_consumers_health() -> None:
    hub = Hub(Settings(), history=10)  # never started: no Kafka needed
    doc = Document()
    build(doc, hub, Settings())
    texts = [div.text for div in doc.select({"type": Div})]
    assert any("consumer <b>stopped</b>" in text and "0 rejected" in text for text in texts), texts
