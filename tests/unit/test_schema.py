"""One schema: the stored document's BSON types, the clean message's keys, the dashboard's metrics."""

from __future__ import annotations

from datetime import UTC, datetime

import bson
from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64

from sensor_pipeline.contract import schema
from sensor_pipeline.contract.rules import validate_line
from sensor_pipeline.dashboard.shaping import METRICS

LINE = "2020-02-17T11:12:58.765969 26.04 540.1 13.12 Montrose_Beach 7"


def row(timestamp_ms: int) -> dict[str, object]:
    return {
        "_id": 7, "Beach": "Montrose Beach", "MeasurementID": 7, "BatteryLife": 13.12, "RawData": LINE,
        "WaterTemperature": 26.04, "Turbidity": 540.1, "TimeStamp": timestamp_ms,
    }  # fmt: skip


def test_the_stored_document_has_the_contract_keys_and_bson_types() -> None:
    document = schema.to_document(row(1581937978765))
    assert tuple(document) == schema.DOCUMENT_KEYS
    assert type(document["_id"]) is Int64 and type(document["MeasurementID"]) is Int64
    decoded = bson.decode(bson.encode(document), codec_options=bson.CodecOptions(tz_aware=True))
    assert decoded["TimeStamp"] == datetime(2020, 2, 17, 11, 12, 58, 765000, tzinfo=UTC)


def test_any_bson_date_is_storable_even_outside_python_datetime() -> None:
    # Spark holds instants Python's datetime cannot: the writer must never fail on one.
    for millis in (-62_167_219_200_000, 253_402_300_800_000):
        assert schema.to_document(row(millis))["TimeStamp"] == DatetimeMS(millis)


def test_the_python_record_and_the_clean_message_are_derived_from_the_document() -> None:
    record = validate_line(LINE, now=datetime(2026, 1, 1, tzinfo=UTC)).record
    assert record is not None and tuple(record) == schema.MESSAGE_KEYS == schema.DOCUMENT_KEYS[1:]
    assert schema.clean_message(record)["TimeStamp"] == "2020-02-17T11:12:58.765Z"
    assert schema.format_timestamp(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"
    assert [m[0] for m in METRICS] == ["WaterTemperature", "Turbidity", "BatteryLife"]
