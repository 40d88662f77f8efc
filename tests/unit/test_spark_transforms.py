"""The job's pure transformations, on a local SparkSession."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sensor_pipeline.job import transforms

pytestmark = pytest.mark.spark

#: The micro-batch's time the rows are judged against (the writer passes its own).
NOW = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)

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
    return transforms.validate(frame, now=transforms.instant(NOW))


def test_routed_rows_have_the_documents_columns_with_the_contracts_types(validated: Any) -> None:
    from pyspark.sql.types import DoubleType, LongType, StringType

    types = dict(transforms.routed(validated).dtypes)
    expected = {"_id": LongType(), "Beach": StringType(), "MeasurementID": LongType(), "BatteryLife": DoubleType(),
                "RawData": StringType(), "WaterTemperature": DoubleType(), "Turbidity": DoubleType(),
                "TimeStamp": LongType()}  # fmt: skip
    assert {name: types[name] for name in expected} == {name: kind.simpleString() for name, kind in expected.items()}


def test_every_row_goes_to_the_writer_in_offset_order_duplicates_included(validated: Any) -> None:
    """The job routes every raw record: the store's ``_id`` key, not Spark, settles a duplicate."""
    rows = transforms.routed(validated).orderBy("offset").collect()
    assert [(r.offset, r.reason, r._id) for r in rows] == [
        (100, None, 758028),
        (101, None, 758028),
        (102, "out_of_range", None),
        (103, "bad_shape", None),
        (104, None, 7),
    ]
    first = rows[0]
    assert first.Beach == "Montrose Beach" and first.RawData == LINES[0]
    # milliseconds, as a BSON date holds them
    assert first.TimeStamp == int(datetime(2020, 2, 17, 11, 12, 58, 765000, tzinfo=UTC).timestamp() * 1000)


def test_routed_rows_carry_their_message_and_the_document_for_the_store(validated: Any) -> None:
    rows = transforms.routed(validated).collect()
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
    clean = transforms.routed(validated).where("reason IS NULL").orderBy("offset").collect()
    messages = [(r.key, json.loads(r.value)) for r in clean]
    assert [key for key, _ in messages] == ["Montrose_Beach", "Montrose_Beach", "Calumet_Beach"]
    assert messages[2][1] == {
        "Beach": "Calumet Beach",
        "MeasurementID": 7,
        "BatteryLife": 11.5,
        "RawData": LINES[4],
        "WaterTemperature": 20.5,
        "Turbidity": 1.25,
        "TimeStamp": "2020-02-17T13:00:00.000Z",
    }
    assert isinstance(messages[0][1]["MeasurementID"], int)


def test_a_row_only_the_clock_rejects_carries_the_clean_record_a_later_clock_gives_it(spark: Any) -> None:
    """Two attempts judging by different clocks: the one that finds a reading in the future still has the
    clean record the other published (same key, same value), to publish when the other stored it; no
    other row carries one."""
    lines = ["2024-07-01T12:06:00Z 20.5 1.25 11.5 Calumet_Beach 7", LINES[2], LINES[0]]  # future at NOW, two others
    frame = spark.createDataFrame(
        [(line, "RawSensorData", 0, i) for i, line in enumerate(lines)],
        "value string, topic string, partition int, offset long",
    )

    def routed(now: datetime) -> list[Any]:
        return transforms.routed(transforms.validate(frame, now=transforms.instant(now))).orderBy("offset").collect()

    early, late = routed(NOW), routed(NOW + timedelta(minutes=2))
    assert [r.reason for r in early] == ["future_timestamp", "out_of_range", None]
    assert late[0].reason is None, "two minutes later the reading is valid"
    assert (early[0].key, early[0].clock_value) == (late[0].key, late[0].value)
    assert early[0]._id is None and json.loads(early[0].value)["Reason"] == "future_timestamp"
    assert all(r.clock_value is None for r in early[1:] + late)


def test_dead_letters_carry_reason_detail_source_and_the_batch_time(validated: Any) -> None:
    rejected = transforms.routed(validated).where("reason IS NOT NULL").orderBy("offset").collect()
    letters = [(r.key, json.loads(r.value)) for r in rejected]
    assert [value["Reason"] for _, value in letters] == ["out_of_range", "bad_shape"]
    key, value = letters[0]
    assert key == "Ohio_Street_Beach"
    assert value["RawData"] == LINES[2]
    assert value["Source"] == {"topic": "RawSensorData", "partition": 1, "offset": 102}
    assert "WaterTemperature" in value["Detail"]
    assert value["RejectedAt"] == NOW.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert letters[1][0] is None, "no beach is known for a line of the wrong shape"


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
        batch = transforms.routed(transforms.validate(frame, now=F.lit(at).cast("timestamp")))
        rejected.append(json.loads(batch.first().value)["RejectedAt"])
        built.append((transforms._validation.cache_info().misses, transforms._routing.cache_info().misses))
    assert rejected == ["2026-01-01T00:00:00.000Z", "2026-01-01T00:00:05.000Z"]
    assert built[1] == built[0], "the second batch built the rules' expressions again"


def test_each_reason_has_its_detail_quoting_the_field_it_names(spark: Any) -> None:
    lines = [
        "x" * 1100,  # too_long
        "a b c",  # bad_shape
        f"{'9' * 100} 20 1 11 Montrose_Beach 1",  # bad_timestamp: a long field is quoted short
        "2020-02-17T11:12:58 20 1 11 Montrose%Beach 1",  # bad_beach: a '%' is text, not a format
        "2020-02-17T11:12:58 nan 1 11 Montrose_Beach 1",  # bad_number
        "2020-02-17T11:12:58 20 1 11 Montrose_Beach 0",  # bad_id
        "2024-07-01T12:05:01 20 1 11 Montrose_Beach 1",  # future_timestamp: 5 min 1 s after NOW
        "2020-02-17T11:12:58 99 1 11 Montrose_Beach 1",  # out_of_range
        "2020-02-17T11:12:58 20 1 11 Montrose_Beach 1",  # valid: no detail
    ]
    frame = spark.createDataFrame(
        [(line, "RawSensorData", 0, i) for i, line in enumerate(lines)],
        "value string, topic string, partition int, offset long",
    )
    rows = transforms.validate(frame, now=transforms.instant(NOW)).orderBy("offset").collect()
    assert [(r.reason, r.detail) for r in rows] == [
        ("too_long", "a line has at most 1024 characters, got 1100"),
        ("bad_shape", "expected 6 fields, got 3"),
        ("bad_timestamp", f"not an ISO 8601 date-time: '{'9' * 80}... (100 characters)'"),
        ("bad_beach", "beach must match [A-Za-z0-9_]{1,64}: 'Montrose%Beach'"),
        ("bad_number", "a numeric field is not a finite number"),
        ("bad_id", "MeasurementID must be an integer in [1, 2^63-1]: '0'"),
        ("future_timestamp", "2024-07-01T12:05:01 is ahead of processing time"),
        (
            "out_of_range",
            "outside the valid ranges: WaterTemperature [-5, 40], Turbidity [0, 4000], BatteryLife (0, 20]",
        ),
        (None, None),
    ]
    assert "_detail_argument" not in rows[0].asDict(), "validate's working column is dropped"


def test_the_rules_compile_to_methods_the_jvm_compiles(spark: Any) -> None:
    """HotSpot never compiles a method of more than 8,000 bytes of bytecode (``-XX:HugeMethodLimit``):
    generated code above it runs interpreted, for every row. The rules once compiled to 10,089 bytes."""
    from sensor_pipeline.config import Settings
    from sensor_pipeline.job.writer import BatchWriter

    records = spark.createDataFrame(  # the Kafka source's columns
        [(None, LINES[0].encode(), "RawSensorData", 0, 1, NOW, 0)],
        "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, timestampType int",
    )
    plan = BatchWriter(Settings()).routed(records, NOW)._jdf.queryExecution().executedPlan()  # the job's plan
    stages = spark._jvm.org.apache.spark.sql.execution.debug.package.codegenStringSeq(plan)
    sizes = [stages.apply(i)._3().maxMethodCodeSize() for i in range(stages.size())]
    assert sizes, "the rules run in generated code"
    # -1: the code did not compile (Spark then runs the plan interpreted)
    assert all(0 < size <= 8000 for size in sizes), f"generated methods of {sizes} bytes of bytecode"
