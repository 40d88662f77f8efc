"""Pure data shaping for the dashboard: CleanSensorData messages -> column dicts. Tested without a server."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sensor_pipeline import schema
from sensor_pipeline.rules import flags_of

#: (key, title, unit) of each measured value, from the one schema.
METRICS: tuple[tuple[str, str, str], ...] = tuple((key.name, key.label, key.unit) for key in schema.METRICS)
SERIES_COLUMNS = ("time", *(m[0] for m in METRICS), "MeasurementID")
TABLE_COLUMNS = ("Beach", "Time", "WaterTemperature", "Turbidity", "BatteryLife", "Flags")


def parse_message(value: bytes | str) -> dict[str, Any] | None:
    """One CleanSensorData value as a dict with ``TimeStamp`` as a datetime; None if unreadable."""
    try:
        message = json.loads(value)
        message["TimeStamp"] = datetime.fromisoformat(message["TimeStamp"].replace("Z", "+00:00"))
        for metric, _, _ in METRICS:
            message[metric] = float(message[metric])
        return message if isinstance(message.get("Beach"), str) else None
    except (ValueError, KeyError, TypeError):
        return None


def series_by_beach(messages: Iterable[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    """Group messages into per-beach column dicts, time-ordered, ready for ``ColumnDataSource.stream``."""
    grouped: dict[str, dict[str, list[Any]]] = {}
    for message in sorted(messages, key=lambda m: m["TimeStamp"]):
        columns = grouped.setdefault(message["Beach"], {c: [] for c in SERIES_COLUMNS})
        # Bokeh datetime axes take naive datetimes as UTC.
        columns["time"].append(message["TimeStamp"].replace(tzinfo=None))
        for metric, _, _ in METRICS:
            columns[metric].append(message[metric])
        columns["MeasurementID"].append(message["MeasurementID"])
    return grouped


def latest_table(latest: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """Columns of the "latest reading per beach" table, one row per beach, sorted by beach name."""
    rows = [latest[b] for b in sorted(latest)]
    return {
        "Beach": [r["Beach"] for r in rows],
        "Time": [r["TimeStamp"].strftime("%Y-%m-%d %H:%M:%S UTC") for r in rows],
        "WaterTemperature": [round(r["WaterTemperature"], 2) for r in rows],
        "Turbidity": [round(r["Turbidity"], 2) for r in rows],
        "BatteryLife": [round(r["BatteryLife"], 2) for r in rows],
        "Flags": [", ".join(flags_of(r)) or "-" for r in rows],
    }


def newer(latest: dict[str, dict[str, Any]], messages: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``latest`` updated with ``messages``: per beach, the reading with the newest timestamp."""
    updated = dict(latest)
    for message in messages:
        current = updated.get(message["Beach"])
        if current is None or message["TimeStamp"] >= current["TimeStamp"]:
            updated[message["Beach"]] = message
    return updated
