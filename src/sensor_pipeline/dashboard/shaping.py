"""Pure data shaping for the dashboard: CleanSensorData messages -> column dicts. Tested without a server."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from sensor_pipeline.contract import schema
from sensor_pipeline.contract.rules import flags_of

#: (key, title, unit) of each measured value, from the one schema.
METRICS: tuple[tuple[str, str, str], ...] = tuple((key.name, key.label, key.unit) for key in schema.METRICS)


#: A clean message is a few hundred bytes (RawData is at most 1024 characters); anything far larger
#: is not one, and is not worth parsing.
MAX_MESSAGE_BYTES = 64 * 1024
REQUIRED_KEYS = ("Beach", "MeasurementID", "TimeStamp", *(metric for metric, _, _ in METRICS))
ID_MAX = 2**63 - 1


class Rejected(ValueError):
    """A CleanSensorData value that is not a clean reading; the message says why."""


def parse_clean(value: object) -> dict[str, Any]:
    """One CleanSensorData value as a message, ``TimeStamp`` an aware UTC datetime, metrics floats.

    Raises :class:`Rejected` unless the value is a UTF-8 JSON object of at most ``MAX_MESSAGE_BYTES``
    with a Beach name, an integer MeasurementID in [1, 2^63-1], an ISO 8601 TimeStamp with a UTC
    offset, and finite numbers for the metrics.
    """
    if value is None:
        raise Rejected("no value")
    raw = value.encode("utf-8", errors="surrogatepass") if isinstance(value, str) else value
    if not isinstance(raw, bytes | bytearray):
        raise Rejected(f"a value of type {type(value).__name__}")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise Rejected(f"{len(raw)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        message = json.loads(bytes(raw).decode("utf-8"))
    except UnicodeDecodeError as error:
        raise Rejected(f"not UTF-8 ({error.reason} at byte {error.start})") from None
    except (ValueError, RecursionError):  # RecursionError: nested thousands of levels deep
        raise Rejected("not JSON") from None
    if not isinstance(message, dict):
        raise Rejected(f"a JSON {type(message).__name__}, not an object")
    missing = [key for key in REQUIRED_KEYS if key not in message]
    if missing:
        raise Rejected(f"missing {', '.join(missing)}")
    beach = message["Beach"]
    if not isinstance(beach, str) or not beach.strip() or len(beach) > 100:
        raise Rejected("Beach is not a name")
    mid = message["MeasurementID"]
    if type(mid) is not int or not 1 <= mid <= ID_MAX:  # type(): bool is an int too
        raise Rejected("MeasurementID is not an integer in [1, 2^63-1]")
    stamp = message["TimeStamp"]
    try:
        timestamp = datetime.fromisoformat(stamp) if isinstance(stamp, str) and len(stamp) <= 64 else None
    except ValueError:
        timestamp = None
    if timestamp is None or timestamp.tzinfo is None:
        raise Rejected("TimeStamp is not ISO 8601 with a UTC offset")
    metrics: dict[str, float] = {}
    for metric, _, _ in METRICS:
        number = message[metric]
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise Rejected(f"{metric} is not a number")
        try:
            metrics[metric] = float(number)
        except OverflowError:  # an integer of hundreds of digits
            metrics[metric] = math.inf
        if not math.isfinite(metrics[metric]):
            raise Rejected(f"{metric} is not finite")
    return {**message, **metrics, "TimeStamp": timestamp.astimezone(UTC)}


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
