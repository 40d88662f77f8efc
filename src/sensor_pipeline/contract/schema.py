"""The stored document and the clean message, defined once (contract: DESIGN.md "Stored document").

Everything that has the document's shape is derived from :data:`DOCUMENT`: the Python record of a
valid line (:func:`record`), the Spark columns the job stores and publishes
(:mod:`sensor_pipeline.job.transforms`), the BSON document written by the batch writer
(:func:`to_document`), the CleanSensorData JSON (:func:`clean_message`) and the dashboard's metrics
(:data:`METRICS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64

#: The beaches of the City of Chicago's data set: the sensors the simulator plays and the dashboard
#: draws (one panel row each).
BEACHES: tuple[str, ...] = (
    "63rd Street Beach",
    "Calumet Beach",
    "Montrose Beach",
    "Ohio Street Beach",
    "Osterman Beach",
    "Rainbow Beach",
)


@dataclass(frozen=True)
class Key:
    """One key of the stored document."""

    name: str
    #: The Spark SQL type of the column the job carries for it.
    spark_type: str
    #: The BSON type it is stored as (contract).
    bson_type: str
    #: For the numeric readings: the dashboard's title and unit.
    label: str = ""
    unit: str = ""


#: The stored document, in key order. ``_id`` is the MeasurementID (the natural key).
DOCUMENT: tuple[Key, ...] = (
    Key("_id", "bigint", "long"),
    Key("Beach", "string", "string"),
    Key("MeasurementID", "bigint", "long"),
    Key("BatteryLife", "double", "double", "Battery", "V"),
    Key("RawData", "string", "string"),
    Key("WaterTemperature", "double", "double", "Water temperature", "°C"),
    Key("Turbidity", "double", "double", "Turbidity", "NTU"),
    Key("TimeStamp", "timestamp", "date"),
)
DOCUMENT_KEYS: tuple[str, ...] = tuple(key.name for key in DOCUMENT)
#: The CleanSensorData value: the document's keys except ``_id``.
MESSAGE_KEYS: tuple[str, ...] = DOCUMENT_KEYS[1:]
#: The measured values, in the order the dashboard shows them.
METRICS: tuple[Key, ...] = tuple(
    key for name in ("WaterTemperature", "Turbidity", "BatteryLife") for key in DOCUMENT if key.name == name
)
#: ISO 8601 UTC with milliseconds and ``Z``: what BSON dates hold, in Python and Spark spellings.
TIMESTAMP_FORMAT_SPARK = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"


def record(
    beach: str,
    measurement_id: int,
    battery: float,
    raw: str,
    water_temperature: float,
    turbidity: float,
    timestamp: datetime,
) -> dict[str, Any]:
    """A valid reading as a Python record with the message's keys (``TimeStamp`` a UTC datetime)."""
    values = (beach, measurement_id, battery, raw, water_temperature, turbidity, timestamp)
    return dict(zip(MESSAGE_KEYS, values, strict=True))


def to_document(values: dict[str, Any]) -> dict[str, Any]:
    """The stored document with the contract's BSON types, from a row whose TimeStamp is epoch ms.

    Ids are wrapped in Int64 so that small values are still BSON longs; the timestamp is a
    ``DatetimeMS``, which holds any BSON date without passing through Python's ``datetime`` (whose
    range and local-time conversions are narrower than Spark's).
    """
    document = {name: values[name] for name in DOCUMENT_KEYS}
    document["_id"] = Int64(document["_id"])
    document["MeasurementID"] = Int64(document["MeasurementID"])
    document["TimeStamp"] = DatetimeMS(int(document["TimeStamp"]))
    return document


def format_timestamp(value: datetime) -> str:
    """ISO 8601 UTC ending in ``Z``, millisecond precision (what BSON dates hold)."""
    # isoformat pads years below 1000 to four digits (strftime's %Y does not on glibc).
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clean_message(values: dict[str, Any]) -> dict[str, Any]:
    """The CleanSensorData value of a record: the message's keys, JSON-ready."""
    return {name: format_timestamp(values[name]) if name == "TimeStamp" else values[name] for name in MESSAGE_KEYS}
