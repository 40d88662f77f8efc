"""Bokeh server hooks: one Kafka consumer (the hub) per server process."""

from __future__ import annotations

from typing import Any

from sensor_pipeline.config import load_settings
from sensor_pipeline.dashboard import hub


def on_server_loaded(server_context: Any) -> None:
    settings = load_settings()
    hub.start_shared(settings)


def on_server_unloaded(server_context: Any) -> None:
    hub.stop_shared()
