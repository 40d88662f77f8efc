"""The dashboard's data shaping, without a Bokeh server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sensor_pipeline.config import Settings
from sensor_pipeline.dashboard.hub import Hub
from sensor_pipeline.dashboard.shaping import Rejected, latest_table, newer, parse_clean, series_by_beach


def message(beach: str, hour: int, mid: int, turbidity: float = 1.0, battery: float = 11.0) -> dict[str, Any]:
    return parse_clean(
        json.dumps(
            {
                "Beach": beach,
                "MeasurementID": mid,
                "BatteryLife": battery,
                "RawData": "...",
                "WaterTemperature": 20.0 + hour,
                "Turbidity": turbidity,
                "TimeStamp": f"2024-07-01T{hour:02d}:00:00.000Z",
            }
        )
    )


def test_messages_parse_with_utc_timestamps_and_bad_ones_are_skipped() -> None:
    assert message("Calumet Beach", 3, 1)["TimeStamp"] == datetime(2024, 7, 1, 3, tzinfo=UTC)
    with pytest.raises(Rejected, match="not JSON"):
        parse_clean(b"not json")
    with pytest.raises(Rejected, match="missing"):
        parse_clean(json.dumps({"Beach": "X"}))


def test_series_are_grouped_per_beach_in_time_order() -> None:
    grouped = series_by_beach([message("B", 5, 1), message("A", 2, 2), message("B", 1, 3)])
    assert list(grouped["B"]["MeasurementID"]) == [3, 1]
    assert grouped["B"]["WaterTemperature"] == [21.0, 25.0]
    assert grouped["A"]["time"] == [datetime(2024, 7, 1, 2)]  # naive UTC for Bokeh


def test_latest_table_keeps_the_newest_reading_per_beach_with_flags() -> None:
    latest = newer({}, [message("B", 5, 1), message("B", 1, 3), message("A", 2, 2, turbidity=1700, battery=8)])
    table = latest_table(latest)
    assert table["Beach"] == ["A", "B"]
    assert table["Time"] == ["2024-07-01 02:00:00 UTC", "2024-07-01 05:00:00 UTC"]
    assert table["Flags"] == ["turbidity_above_rated, low_battery", "-"]


def test_hub_deduplicates_by_measurement_id_and_fans_out() -> None:
    hub = Hub(Settings(), history=10)
    received: list[list[dict[str, Any]]] = []
    assert hub.subscribe("session", received.append) == []
    hub.publish([message("A", 1, 1), message("A", 2, 2)])
    hub.publish([message("A", 2, 2), message("A", 3, 3)])  # 2 again: the clean topic is at-least-once
    assert [[m["MeasurementID"] for m in batch] for batch in received] == [[1, 2], [3]]
    assert hub.received == 3 and len(hub.subscribe("late", lambda _: None)) == 3


def test_a_failing_session_is_dropped_and_the_others_keep_their_feed() -> None:
    hub = Hub(Settings(), history=10)
    received: list[int] = []

    def gone(_: list[dict[str, Any]]) -> None:
        raise NameError("doc")  # what a destroyed Bokeh session's callback raises

    hub.subscribe("gone", gone)
    hub.subscribe("alive", lambda batch: received.extend(m["MeasurementID"] for m in batch))
    hub.publish([message("A", 1, 1)])
    hub.publish([message("A", 2, 2)])
    assert received == [1, 2]
    assert "gone" not in hub._listeners
