"""Parity: the Python rules and the Spark transformation give identical verdicts on one corpus."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from sensor_pipeline import rules, spark_rules
from tests.unit.corpus import corpus

pytestmark = pytest.mark.spark
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_python_and_spark_agree_on_every_line(spark: Any) -> None:
    from pyspark.sql import functions as F

    lines = corpus()
    frame = spark.createDataFrame(
        [(line, "RawSensorData", 0, offset) for offset, line in enumerate(lines)],
        "value string, topic string, partition int, offset long",
    )
    validated = spark_rules.validate(frame, now=F.lit(NOW)).orderBy("offset").collect()

    mismatches = []
    for row in validated:
        expected = rules.validate_line(row.value, now=NOW)
        if expected.reason != row.reason:
            mismatches.append((row.value, expected.reason, row.reason))
            continue
        if expected.record is not None:
            record = expected.record
            got = (
                row.TimeStamp.replace(tzinfo=UTC),
                row.WaterTemperature,
                row.Turbidity,
                row.BatteryLife,
                row.Beach,
                row.MeasurementID,
            )
            want = (
                record["TimeStamp"],
                record["WaterTemperature"],
                record["Turbidity"],
                record["BatteryLife"],
                record["Beach"],
                record["MeasurementID"],
            )
            if got != want:
                mismatches.append((row.value, want, got))
    assert mismatches == []
    # the corpus exercises every reason code and valid lines
    reasons = Counter(row.reason for row in validated)
    assert set(reasons) == {None, *rules.CHECKS}, reasons
