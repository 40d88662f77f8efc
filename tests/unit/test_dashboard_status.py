"""Per-beach badges: thresholds the packaged data supports, and silence judged on each beach's cadence."""

from __future__ import annotations

from typing import Any

from sensor_pipeline.dashboard import status
from sensor_pipeline.source.simulator import real_readings


def reading(turbidity: float = 1.0, battery: float = 11.0) -> dict[str, Any]:
    return {"Turbidity": turbidity, "BatteryLife": battery}


def cadence(*times: float) -> status.Cadence:
    result = status.Cadence()
    for at in times:
        result.saw(at)
    return result


def test_turbidity_levels_split_the_real_readings_into_usual_and_rare() -> None:
    turbidity = [r.turbidity for r in real_readings()]
    clear = sum(t < status.CLEAR_BELOW for t in turbidity) / len(turbidity)
    very = sum(t >= status.VERY_TURBID_FROM for t in turbidity) / len(turbidity)
    assert 0.85 <= clear <= 0.92 and 0.005 <= very <= 0.02  # the shares the module's docstring states
    assert [status.turbidity_badge(t).level for t in (0.3, 5.0, 49.9, 50.0, 1601.0)] == [
        "ok", "watch", "watch", "alert", "alert",
    ]  # fmt: skip
    assert status.turbidity_badge(1601.0).text.startswith("above rated")


def test_a_beach_is_silent_after_three_of_its_usual_intervals() -> None:
    every_ten = cadence(0.0, 10.0, 20.0, 30.0)
    assert [b.text for b in status.badges(reading(), every_ten, now=59.0)] == ["clear (1.00 NTU)"]
    assert status.badges(reading(), every_ten, now=61.0)[0].text == "silent for 31 s"
    hourly = cadence(0.0, 3600.0, 7200.0)
    assert status.badges(reading(), hourly, now=7200.0 + 3 * 3600 - 1)[0].level == "ok"
    assert status.badges(reading(), hourly, now=7200.0 + 3 * 3600 + 1)[0].text == "silent for 3 h"
    burst = cadence(5.0)  # one publication: the floor applies
    assert status.badges(reading(), burst, now=5.0 + status.SILENT_FLOOR + 1)[0].level == "alert"


def test_low_battery_and_no_data() -> None:
    texts = [b.text for b in status.badges(reading(battery=8.7), cadence(0.0), now=1.0)]
    assert texts == ["clear (1.00 NTU)", "low battery (8.7 V)"]
    assert status.badges(None, None, now=1.0) == [status.Badge("no data", "unknown")]
    assert status.worst(["ok", "watch"]) == "watch" and status.worst(["unknown"]) == "unknown"
