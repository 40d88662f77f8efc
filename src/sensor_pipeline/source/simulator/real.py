"""The real 2013-2018 readings packaged with the project (:mod:`sensor_pipeline.data`), and what is
counted on them directly: their line format, their fault rate and their gaps."""

from __future__ import annotations

import csv
import gzip
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources

from sensor_pipeline.contract.rules import validate_line
from sensor_pipeline.contract.schema import BEACHES

#: The simulated metrics, in line order (the fields of :class:`RealReading`).
METRICS: tuple[str, ...] = ("water_temperature", "turbidity", "battery")
#: A silence longer than this is a buoy out of the water (winter, repairs), not a missed reading.
MAX_GAP_HOURS = 48
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class RealReading:
    timestamp: datetime
    beach: str
    water_temperature: float
    turbidity: float
    battery: float


@cache
def real_readings() -> tuple[RealReading, ...]:
    """The packaged real data set, sorted by time (36,405 readings)."""
    source = resources.files("sensor_pipeline") / "data" / "readings.csv.gz"
    with source.open("rb") as raw, gzip.open(raw, "rt", newline="") as handle:
        return tuple(
            RealReading(
                datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC),
                row["beach"],
                float(row["water_temperature"]),
                float(row["turbidity"]),
                float(row["battery"]),
            )
            for row in csv.DictReader(handle)
        )


def format_line(timestamp: datetime, temperature: float, turbidity: float, battery: float, beach: str, mid: int) -> str:
    """The raw line contract: ``<ts> <temp> <turbidity> <battery> <beach_with_underscores> <id>``."""
    stamp = timestamp.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    return f"{stamp} {temperature:.2f} {turbidity:.2f} {battery:.2f} {beach.replace(' ', '_')} {mid}"


def replay_id(reading: RealReading) -> int:
    """Deterministic id of a real reading: beach number then yyyymmddHHMM (e.g. 3_201308300800)."""
    number = BEACHES.index(reading.beach) + 1 if reading.beach in BEACHES else 9
    return number * 10**12 + int(reading.timestamp.strftime("%Y%m%d%H%M"))


# --- sources ----------------------------------------------------------------------------------------


def real_line(reading: RealReading) -> str:
    return format_line(
        reading.timestamp,
        reading.water_temperature,
        reading.turbidity,
        reading.battery,
        reading.beach,
        replay_id(reading),
    )


@cache
def real_faults() -> tuple[bool, ...]:
    """For each real reading: is it a fault (fails validation, or repeats a beach and time)?"""
    seen: set[tuple[str, datetime]] = set()
    faults = []
    for reading in real_readings():
        key = (reading.beach, reading.timestamp)
        faults.append(key in seen or not validate_line(real_line(reading)).valid)
        seen.add(key)
    return tuple(faults)


def valid_real_readings() -> list[RealReading]:
    """The real readings that are not faults: what the models learn from."""
    return [r for r, fault in zip(real_readings(), real_faults(), strict=True) if not fault]


def real_fault_rate() -> float:
    """Share of the real readings that are faults: they fail :func:`sensor_pipeline.contract.rules.validate_line`
    or repeat an earlier reading's beach and time.

    0.0027 %: one reading of 36,405 (Calumet Beach, battery 0.0 V: ``out_of_range``); there are no
    repeats. (The city's raw file also has six empty rows, which the packaged copy leaves out.) Pass
    it as ``Simulator(fault_rate=...)`` to inject faults at the real rate; the default is none.
    """
    faults = real_faults()
    return sum(faults) / len(faults)


def gap_counts(times: Sequence[datetime]) -> tuple[int, int]:
    """``(missing, expected)`` hourly readings of one beach, given its reading times in order.

    Each silence between two readings of up to :data:`MAX_GAP_HOURS` missing hours counts them all
    as missing; a longer one is the buoy out of the water and counts neither as missing nor as
    expected. The gap rate is ``missing / expected``.
    """
    missing = 0
    for before, after in itertools.pairwise(times):
        silent = round((after - before) / HOUR) - 1
        if 0 < silent <= MAX_GAP_HOURS:
            missing += silent
    return missing, missing + len(times)


@cache
def _real_gap_rates() -> tuple[tuple[str, float], ...]:
    rates = []
    for beach in BEACHES:
        missing, expected = gap_counts([r.timestamp for r in real_readings() if r.beach == beach])
        rates.append((beach, missing / expected))
    return tuple(rates)


def real_gap_rates() -> dict[str, float]:
    """Per beach, the share of expected hourly readings the real buoys missed (:func:`gap_counts`):
    6.0-15.4 %."""
    return dict(_real_gap_rates())


# --- per-beach models ----------------------------------------------------------------------------
