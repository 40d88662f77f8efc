"""The job's pure transformations, on a local SparkSession."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sensor_pipeline import spark_rules

pytestmark = pytest.mark.spark

LINES = [
    "2020-02-17T11:12:58.765969 26.04 540.1 13.12 Montrose_Beach 758028",  # valid
    "2020-02-17T11:12:58.765969 26.04 540.1 13.12 Montrose_Beach 758028",  # duplicate (later offset)
    "2020-02-17T12:00:00 99 1 1 Ohio_Street_Beach 5",  # out of range
    "garbage",  # bad shape
    "2020-02-17T13:00:00Z 20.5 1.25 11.5 Calumet_Beach 7",  # valid
]


@pytest.fixture
def validated(spark: Any) -> Any:
    frame = spark.createDataFrame(
        [(line, "RawSensorData", 1, 100 + i) for i, line in enumerate(LINES)],
        "value string, topic string, partition int, offset long",
    )
    return spark_rules.validate(frame)


def test_clean_documents_have_the_contract_schema(validated: Any) -> None:
    from pyspark.testing import assertSchemaEqual

    documents = spark_rules.clean_documents(validated).drop("topic", "partition", "offset")
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, TimestampType

    assertSchemaEqual(
        documents.schema,
        StructType(
            [
                StructField("_id", LongType()),
                StructField("Beach", StringType()),
                StructField("MeasurementID", LongType()),
                StructField("BatteryLife", DoubleType()),
                StructField("RawData", StringType()),
                StructField("WaterTemperature", DoubleType()),
                StructField("Turbidity", DoubleType()),
                StructField("TimeStamp", TimestampType()),
            ]
        ),
        ignoreNullable=True,
    )
    rows = {r["_id"]: r for r in documents.collect()}
    assert sorted(rows) == [7, 758028], "the duplicate is dropped, invalid lines are not documents"
    first = rows[758028]
    assert first["Beach"] == "Montrose Beach" and first["RawData"] == LINES[0]
    # milliseconds, as a BSON date holds them
    assert first["TimeStamp"] == datetime(2020, 2, 17, 11, 12, 58, 765000)


def test_routed_rows_carry_their_message_and_the_document_for_the_store(validated: Any) -> None:
    rows = spark_rules.routed(validated).collect()
    assert len(rows) == validated.count(), "every row goes to the writer, valid or not"
    for row in rows:
        message = json.loads(row.value)
        if row.reason is None:
            assert row.key == row.Beach.replace(" ", "_") and message["MeasurementID"] == row._id
            assert message["TimeStamp"] == datetime.fromtimestamp(row.TimeStamp / 1000, UTC).isoformat(
                timespec="milliseconds"
            ).replace("+00:00", "Z"), "epoch milliseconds for the store, the same instant in the message"
        else:
            assert message["Reason"] == row.reason and row._id is None and row.TimeStamp is None
            assert message["Source"] == {"topic": row.topic, "partition": row.partition, "offset": row.offset}


def test_clean_messages_are_keyed_json_with_utc_z_timestamps(validated: Any) -> None:
    documents = spark_rules.clean_documents(validated).drop("topic", "partition", "offset")
    messages = {r.key: json.loads(r.value) for r in spark_rules.clean_messages(documents).collect()}
    assert set(messages) == {"Montrose_Beach", "Calumet_Beach"}
    calumet = messages["Calumet_Beach"]
    assert calumet == {
        "Beach": "Calumet Beach",
        "MeasurementID": 7,
        "BatteryLife": 11.5,
        "RawData": LINES[4],
        "WaterTemperature": 20.5,
        "Turbidity": 1.25,
        "TimeStamp": "2020-02-17T13:00:00.000Z",
    }
    assert isinstance(messages["Montrose_Beach"]["MeasurementID"], int)


def test_dead_letters_carry_reason_detail_and_source(validated: Any) -> None:
    letters = [(r.key, json.loads(r.value)) for r in spark_rules.dead_letters(validated).collect()]
    by_reason = {value["Reason"]: (key, value) for key, value in letters}
    assert set(by_reason) == {"out_of_range", "bad_shape"}
    key, value = by_reason["out_of_range"]
    assert key == "Ohio_Street_Beach"
    assert value["RawData"] == LINES[2]
    assert value["Source"] == {"topic": "RawSensorData", "partition": 1, "offset": 102}
    assert "WaterTemperature" in value["Detail"]
    assert datetime.fromisoformat(value["RejectedAt"].replace("Z", "+00:00")) <= datetime.now(UTC)
    assert by_reason["bad_shape"][0] is None, "no beach is known for a line of the wrong shape"


def test_each_batch_reuses_the_rules_expressions_and_gets_its_own_time(spark: Any) -> None:
    """The job validates every micro-batch against its own time; the expressions that encode the rules
    are built for the first batch only (hundreds of Py4J calls each time otherwise)."""
    from pyspark.sql import functions as F

    frame = spark.createDataFrame(
        [("garbage", "RawSensorData", 0, 1)], "value string, topic string, partition int, offset long"
    )
    built: list[tuple[int, int]] = []
    rejected = []
    for at in ("2026-01-01T00:00:00", "2026-01-01T00:00:05"):
        batch = spark_rules.routed(spark_rules.validate(frame, now=F.lit(at).cast("timestamp")))
        rejected.append(json.loads(batch.first().value)["RejectedAt"])
        built.append((spark_rules._validation.cache_info().misses, spark_rules._routing.cache_info().misses))
    assert rejected == ["2026-01-01T00:00:00.000Z", "2026-01-01T00:00:05.000Z"]
    assert built[1] == built[0], "the second batch built the rules' expressions again"
