"""The dashboard's data shaping, without a Bokeh server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sensor_pipeline.dashboard.shaping import Rejected, latest_table, parse_clean


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


def test_the_latest_table_has_a_row_per_beach_sorted_with_flags() -> None:
    latest = {"B": message("B", 5, 1), "A": message("A", 2, 2, turbidity=1700, battery=8)}
    table = latest_table(latest)
    assert table["Beach"] == ["A", "B"]
    assert table["Time"] == ["2024-07-01 02:00:00 UTC", "2024-07-01 05:00:00 UTC"]
    assert table["Flags"] == ["turbidity_above_rated, low_battery", "-"]
