"""The validation rules of a raw sensor line: written once, as data, and executed twice.

A raw line (contract) is six whitespace-separated fields::

    2020-02-17T11:12:58.765969 26.04 540.1 13.12 Montrose_Beach 758028
    <timestamp> <water temp C> <turbidity NTU> <battery V> <beach> <measurement id>

:data:`CHECKS` lists the checks in the order they are applied; the first that fails gives the
reason code. Everything that decides a verdict (the whitespace set, the patterns, the ranges and the
tolerance) is data in this module. :func:`validate_line` executes it in Python (the ``validate``
command, the producer's self-checks, tests); :mod:`sensor_pipeline.job.transforms` compiles the same
data into Spark column expressions. ``tests/unit/test_parity.py`` runs one corpus through both.

Patterns are deliberately strict and ASCII-only so that Python's ``re`` and Java's regex engine agree
(``float()`` alone would accept ``nan``, ``1_0`` or Unicode digits; Spark's cast accepts ``1d``).
Where the two runtimes' own limits differ, the rules state the narrower one, so that whatever both
accept can be stored and published: Java's time zone offsets end at ±18:00 (Python's at ±23:59),
Spark's timestamps reach year 0 and beyond 9999 (Python's ``datetime`` and BSON dates in ``pymongo``
do not), and ``$`` in Java also matches before a final ``\u2028``, ``\u0085`` or ``\r`` (Python's only
before ``\n``), so patterns end with :data:`END` instead. ``tests/unit/test_parity.py`` generates the
edge cases of every field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sensor_pipeline.contract import schema

# --- the rule set (data) -----------------------------------------------------------------------

#: Field names, in line order.
FIELDS: tuple[str, ...] = (
    "TimeStamp",
    "WaterTemperature",
    "Turbidity",
    "BatteryLife",
    "Beach",
    "MeasurementID",
)
FIELD_COUNT = len(FIELDS)

#: The separator set: ASCII whitespace only (Java's ``\s``), so both engines split identically.
WHITESPACE = " \t\n\x0b\f\r"
SPLIT_PATTERN = r"[ \t\n\x0B\f\r]+"

#: End of input in both regex engines (``$`` is not: see the module docstring).
END = r"(?![\s\S])"
#: ISO 8601 date-time, seconds required, up to microseconds, optional ``Z`` or ``±hh:mm`` offset up
#: to ±18:00 (the range both Java's ``ZoneOffset`` and Python accept).
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-](0[0-9]|1[0-7]):[0-5][0-9]|[+-]18:00)?" + END
)
#: The instants a reading may carry: those both runtimes (and BSON dates in pymongo) can hold.
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
#: A plain decimal number with optional exponent (no ``nan``/``inf``, no ``_``, no type suffix).
NUMBER_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?" + END
BEACH_PATTERN = r"^[A-Za-z0-9_]{1,64}" + END
ID_PATTERN = r"^[0-9]{1,19}" + END
ID_MIN, ID_MAX = 1, 2**63 - 1
#: The longest line accepted (characters). Real lines are about 60; the bound keeps every clean
#: message and dead letter far below Kafka's default 1 MB message limit, whatever a sensor sends.
MAX_LINE_LENGTH = 1024
#: How much of a field or line a reason's detail (and a dead letter's RawData) quotes.
DETAIL_QUOTE = 80
RAW_DATA_QUOTE = 4096

#: How far a reading's timestamp may lie ahead of the time it is processed (clock skew).
DEFAULT_FUTURE_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True)
class Range:
    """A closed or half-open numeric range."""

    low: float
    high: float
    low_inclusive: bool = True
    high_inclusive: bool = True

    def contains(self, value: float) -> bool:
        above = value >= self.low if self.low_inclusive else value > self.low
        below = value <= self.high if self.high_inclusive else value < self.high
        return above and below

    def describe(self) -> str:
        return f"{'[' if self.low_inclusive else '('}{self.low:g}, {self.high:g}{']' if self.high_inclusive else ')'}"


#: The numeric fields and their valid ranges.
RANGES: dict[str, Range] = {
    "WaterTemperature": Range(-5.0, 40.0),
    "Turbidity": Range(0.0, 4000.0),
    "BatteryLife": Range(0.0, 20.0, low_inclusive=False),
}

#: Reason codes in the order the checks run; the first failing check names the reason.
CHECKS: tuple[str, ...] = (
    "too_long",
    "bad_shape",
    "bad_timestamp",
    "future_timestamp",
    "bad_number",
    "out_of_range",
    "bad_beach",
    "bad_id",
)
#: The one check whose verdict depends on when a line is judged (the batch's time): two attempts at the
#: same record with different clocks can disagree on it (sensor_pipeline.job.delivery follows the store).
CLOCK_CHECK = "future_timestamp"


@dataclass(frozen=True)
class Flag:
    """A quality flag: informative only, never makes a reading invalid."""

    name: str
    field: str
    below: float | None = None
    above: float | None = None

    def raised(self, value: float) -> bool:
        return (self.below is not None and value < self.below) or (self.above is not None and value > self.above)


FLAGS: tuple[Flag, ...] = (
    Flag("turbidity_above_rated", "Turbidity", above=1600.0),  # the sensor's rated maximum
    Flag("low_battery", "BatteryLife", below=9.0),
)

# --- the Python executor -----------------------------------------------------------------------

_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
_NUMBER = re.compile(NUMBER_PATTERN)
_BEACH = re.compile(BEACH_PATTERN)
_ID = re.compile(ID_PATTERN)
_SPLIT = re.compile(SPLIT_PATTERN)


@dataclass(frozen=True)
class Verdict:
    """The outcome of validating one line. ``record`` is set when valid, ``reason`` when not."""

    valid: bool
    reason: str | None
    detail: str
    record: dict[str, Any] | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The ``validate`` command's contract: ``{"valid", "reason", "record"}``."""
        return {
            "valid": self.valid,
            "reason": self.reason,
            "record": schema.clean_message(self.record) if self.record is not None else None,
        }


def split_fields(line: str) -> list[str]:
    stripped = line.strip(WHITESPACE)
    return _SPLIT.split(stripped) if stripped else []


def parse_timestamp(text: str) -> datetime | None:
    """ISO 8601 per :data:`TIMESTAMP_PATTERN`; no offset means UTC. ``None`` if not a real instant
    between :data:`EARLIEST` and :data:`LATEST`."""
    if not _TIMESTAMP.match(text):
        return None
    try:
        parsed = datetime.fromisoformat(text)
        # Out of datetime's range once shifted to UTC (0001-01-01T00:00+01:00): OverflowError.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # matches the pattern but is not a date, e.g. 2021-02-30
        return None


def quote(text: str, limit: int = DETAIL_QUOTE) -> str:
    """``text`` for a human message, cut to ``limit`` characters (hostile fields can be huge)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _reject(reason: str, detail: str) -> Verdict:
    return Verdict(False, reason, detail)


def validate_line(
    line: str,
    now: datetime | None = None,
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE,
) -> Verdict:
    """Apply :data:`CHECKS` in order to one raw line."""
    if len(line) > MAX_LINE_LENGTH:
        return _reject("too_long", f"a line has at most {MAX_LINE_LENGTH} characters, got {len(line)}")
    fields = split_fields(line)
    if len(fields) != FIELD_COUNT:
        return _reject("bad_shape", f"expected {FIELD_COUNT} fields, got {len(fields)}")
    raw = dict(zip(FIELDS, fields, strict=True))

    timestamp = parse_timestamp(raw["TimeStamp"])
    if timestamp is None:
        return _reject("bad_timestamp", f"not an ISO 8601 date-time: {quote(raw['TimeStamp'])!r}")
    now = now or datetime.now(UTC)
    if timestamp > now + future_tolerance:
        return _reject("future_timestamp", f"{raw['TimeStamp']} is ahead of processing time {now:%Y-%m-%dT%H:%M:%SZ}")

    numbers: dict[str, float] = {}
    for name in RANGES:
        text = raw[name]
        value = float(text) if _NUMBER.match(text) else math.nan
        if not math.isfinite(value):
            return _reject("bad_number", f"{name} is not a finite number: {quote(text)!r}")
        numbers[name] = value
    for name, allowed in RANGES.items():
        if not allowed.contains(numbers[name]):
            return _reject("out_of_range", f"{name} {numbers[name]:g} outside {allowed.describe()}")

    if not _BEACH.match(raw["Beach"]):
        return _reject("bad_beach", f"beach must match [A-Za-z0-9_]{{1,64}}: {quote(raw['Beach'])!r}")
    id_text = raw["MeasurementID"]
    measurement_id = int(id_text) if _ID.match(id_text) else 0
    if not ID_MIN <= measurement_id <= ID_MAX:
        return _reject("bad_id", f"MeasurementID must be an integer in [1, 2^63-1]: {quote(id_text)!r}")

    record = schema.record(
        beach=raw["Beach"].replace("_", " "),
        measurement_id=measurement_id,
        battery=numbers["BatteryLife"],
        raw=line,
        water_temperature=numbers["WaterTemperature"],
        turbidity=numbers["Turbidity"],
        timestamp=timestamp,
    )
    return Verdict(True, None, "", record)


def flags_of(record: dict[str, Any]) -> list[str]:
    """The quality flags a valid record raises."""
    return [flag.name for flag in FLAGS if flag.raised(float(record[flag.field]))]


def beach_key(line: str) -> str | None:
    """The Kafka key for a raw line: its beach field when there is one."""
    fields = split_fields(line)
    return fields[4] if len(fields) == FIELD_COUNT else None
