"""Per-beach status badges, from rules the data supports.

- **Turbidity**, from the latest reading: below 5 NTU *clear* (turbidity becomes visible to the eye at
  about 5 NTU; 88% of the packaged 2013-2018 readings), 5 to 50 NTU *turbid* (11%), 50 NTU and
  above *very turbid* (1%: storms, upwelling), above the sensor's rated 1600 NTU *above rated* (the
  reading is saturated; rules.FLAGS). ``tests/unit/test_dashboard_status.py`` checks these shares
  against the packaged data.
- **Battery**: below 9 V *low battery* (rules.FLAGS; 0.9% of real readings, usually days before a
  buoy goes silent).
- **Silence**: a beach whose newest reading is more than ``SILENT_INTERVALS`` of its own usual
  intervals (the median gap between its recent readings' timestamps, at least ``SILENT_FLOOR``
  seconds) behind the pipeline's present is *silent*; one never seen is *no data*. The present is
  the newest reading of any beach, never later than the wall clock: a sensor is judged against the
  others, so a stalled job or a dashboard catching up raises no sensor alarm (the health row shows
  those), and a replayed history or a sped-up simulation is judged on its own cadence.

Each badge has a level: ``ok``, ``watch``, ``alert`` or ``unknown`` (no data).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any

from sensor_pipeline.contract.rules import FLAGS

CLEAR_BELOW = 5.0
VERY_TURBID_FROM = 50.0
RATED_ABOVE = next(f.above for f in FLAGS if f.name == "turbidity_above_rated")
LOW_BATTERY_BELOW = next(f.below for f in FLAGS if f.name == "low_battery")
SILENT_INTERVALS = 3
SILENT_FLOOR = 10.0
#: Reading times kept per beach to learn its usual interval.
CADENCE_SAMPLES = 17

#: The levels, most severe first.
LEVELS = ("alert", "watch", "ok", "unknown")


@dataclass(frozen=True)
class Badge:
    text: str
    level: str


def turbidity_badge(turbidity: float) -> Badge:
    assert RATED_ABOVE is not None
    if turbidity > RATED_ABOVE:
        return Badge(f"above rated ({turbidity:.0f} NTU)", "alert")
    if turbidity >= VERY_TURBID_FROM:
        return Badge(f"very turbid ({turbidity:.0f} NTU)", "alert")
    if turbidity >= CLEAR_BELOW:
        return Badge(f"turbid ({turbidity:.1f} NTU)", "watch")
    return Badge(f"clear ({turbidity:.2f} NTU)", "ok")


class Cadence:
    """A beach's recent reading times (epoch seconds) and what silence means for it."""

    def __init__(self) -> None:
        self.times: deque[float] = deque(maxlen=CADENCE_SAMPLES)

    def saw(self, at: float) -> None:
        if not self.times or at > self.times[-1]:
            self.times.append(at)

    @property
    def last(self) -> float | None:
        return self.times[-1] if self.times else None

    def interval(self) -> float | None:
        """The median gap between recent readings; None until there are two."""
        if len(self.times) < 2:
            return None
        gaps = [b - a for a, b in zip(self.times, list(self.times)[1:], strict=False)]
        return statistics.median(gaps)

    def silent_after(self) -> float:
        interval = self.interval()
        return max(SILENT_INTERVALS * (interval or 0.0), SILENT_FLOOR)


def duration(seconds: float) -> str:
    """A duration for people: 12 s, 5 min, 3 h, 2 d."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"


def badges(latest: dict[str, Any] | None, cadence: Cadence | None, now: float) -> list[Badge]:
    """A beach's badges: its latest clean reading (or None) and reading cadence, at the pipeline's
    present ``now`` (epoch seconds)."""
    if latest is None or cadence is None or cadence.last is None:
        return [Badge("no data", "unknown")]
    result = []
    quiet = now - cadence.last
    if quiet > cadence.silent_after():
        result.append(Badge(f"silent for {duration(quiet)}", "alert"))
    result.append(turbidity_badge(float(latest["Turbidity"])))
    if float(latest["BatteryLife"]) < (LOW_BATTERY_BELOW or 0.0):
        result.append(Badge(f"low battery ({latest['BatteryLife']:.1f} V)", "watch"))
    return result


def worst(levels: list[str]) -> str:
    """The most severe of ``levels`` (``unknown`` only when it is all there is)."""
    return next((level for level in LEVELS if level in levels), "unknown")
