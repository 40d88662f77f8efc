"""Parity: the Python rules and the Spark transformation give identical verdicts and values.

Run over the hand-written corpus and over generated edge cases of every field (tests/hostile.py):
dates at the limits of both calendars and offsets, huge, tiny and negative numbers, Unicode digits,
look-alike separators, line terminators inside fields, 1 MB lines.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sensor_pipeline.contract import rules
from sensor_pipeline.job import transforms
from tests.hostile import hostile_lines
from tests.unit.corpus import corpus

pytestmark = pytest.mark.spark
NOW = datetime(2026, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MEGABYTE_LINES = ["2020-01-01T00:00:00 1 1 1 X " + "1" * 1_000_000, "x" * 1_048_000, "\u00e9" * 500_000]


def mismatches(spark: Any, lines: list[str]) -> tuple[list[tuple[str, Any, Any]], Counter[str | None]]:
    from pyspark.sql import functions as F

    frame = spark.createDataFrame(
        [(line, "RawSensorData", 0, offset) for offset, line in enumerate(lines)],
        "value string, topic string, partition int, offset long",
    )
    # Timestamps as epoch microseconds: Spark holds instants Python's datetime cannot (year 0).
    validated = (
        transforms.validate(frame, now=F.lit(NOW))
        .select("value", "offset", "reason", F.unix_micros("TimeStamp").alias("micros"), *rules.FIELDS[1:])
        .orderBy("offset")
        .collect()
    )
    assert [row.offset for row in validated] == list(range(len(lines))), "Spark returned other rows than it was given"
    found = []
    for row in validated:
        expected = rules.validate_line(row.value, now=NOW)
        if expected.reason != row.reason:
            found.append((row.value[:200], expected.reason, row.reason))
        elif (record := expected.record) is not None:
            want = ((record["TimeStamp"] - EPOCH) // timedelta(microseconds=1), *(record[f] for f in rules.FIELDS[1:]))
            got = (row.micros, *(row[f] for f in rules.FIELDS[1:]))
            if got != want:
                found.append((row.value[:200], want, got))
    return found, Counter(row.reason for row in validated)


def test_python_and_spark_agree_on_the_corpus(spark: Any) -> None:
    found, reasons = mismatches(spark, corpus())
    assert found == []
    assert set(reasons) == {None, *rules.CHECKS} - {"too_long"}, reasons


def test_python_and_spark_agree_on_generated_edge_cases_of_every_field(spark: Any) -> None:
    lines = hostile_lines(20_000) + MEGABYTE_LINES
    found, reasons = mismatches(spark, lines)
    assert found == []
    # The generator reaches every verdict, valid lines included.
    assert set(reasons) == {None, *rules.CHECKS}, reasons


def test_python_and_spark_agree_at_the_future_limit_to_the_microsecond(spark: Any) -> None:
    limit = NOW + timedelta(seconds=300)  # rules' default tolerance
    lines = []
    for delta in (-1, 0, 1):
        at = limit + timedelta(microseconds=delta)
        for text in (
            at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            at.astimezone(timezone(timedelta(hours=14))).isoformat(),  # the same instant, another offset
            at.astimezone(timezone(timedelta(hours=-9, minutes=-30))).isoformat(),
        ):
            lines.append(f"{text} 20.0 1.0 11.0 Montrose_Beach {len(lines) + 1}")
    found, reasons = mismatches(spark, lines)
    assert found == []
    assert reasons == Counter({None: 6, "future_timestamp": 3}), "the limit itself is allowed, 1 µs past it is not"
