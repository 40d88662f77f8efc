"""The validation contract, executed by the Python rules (DESIGN.md: Validation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sensor_pipeline.contract import rules
from sensor_pipeline.contract.rules import flags_of, validate_line
from sensor_pipeline.contract.schema import clean_message

NOW = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
GOOD = "2020-02-17T11:12:58.765969 26.04 540.1 13.12 Montrose_Beach 758028"


def reason(line: str) -> str | None:
    return validate_line(line, now=NOW).reason


def test_the_original_example_line_is_valid_and_structured() -> None:
    verdict = validate_line(GOOD, now=NOW)
    assert verdict.valid and verdict.reason is None
    assert verdict.record == {
        "Beach": "Montrose Beach",
        "MeasurementID": 758028,
        "BatteryLife": 13.12,
        "RawData": GOOD,
        "WaterTemperature": 26.04,
        "Turbidity": 540.1,
        "TimeStamp": datetime(2020, 2, 17, 11, 12, 58, 765969, tzinfo=UTC),
    }


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("", "bad_shape"),
        (GOOD + " " + "x" * 1000, "too_long"),
        ("2020-02-17T11:12:58 26.04 540.1 13.12 Montrose_Beach " + "1" * 2000, "too_long"),
        ("0000-01-01T00:00:00 26.04 540.1 13.12 Montrose_Beach 1", "bad_timestamp"),
        ("0001-01-01T00:00:00+01:00 26.04 540.1 13.12 Montrose_Beach 1", "bad_timestamp"),
        ("2020-02-17T11:12:58+18:01 26.04 540.1 13.12 Montrose_Beach 1", "bad_timestamp"),
        ("2020-02-17T11:12:58+00:60 26.04 540.1 13.12 Montrose_Beach 1", "bad_timestamp"),
        ("2020-02-17T11:12:58 26.04 540.1 13.12 Montrose_Beach\u2028 1", "bad_beach"),
        ("2020-02-17T11:12:58 26.04 540.1 13.12 Montrose_Beach\x85 1", "bad_beach"),
        ("2020-02-17T11:12:58 26.04 540.1 13.12 Montrose_Beach", "bad_shape"),
        (GOOD + " extra", "bad_shape"),
        ("17/02/2020 26.04 540.1 13.12 Montrose_Beach 1", "bad_timestamp"),
        ("2020-02-30T11:12:58 26.04 540.1 13.12 Montrose_Beach 1", "bad_timestamp"),
        ("2020-02-17 26.04 540.1 13.12 Montrose_Beach 1", "bad_timestamp"),
        ("2020-02-17T11:12:58.1234567 26.04 540.1 13.12 Montrose_Beach 1", "bad_timestamp"),
        ("2024-07-01T12:05:01Z 26.04 540.1 13.12 Montrose_Beach 1", "future_timestamp"),
        ("2020-02-17T11:12:58 nan 540.1 13.12 Montrose_Beach 1", "bad_number"),
        ("2020-02-17T11:12:58 inf 540.1 13.12 Montrose_Beach 1", "bad_number"),
        ("2020-02-17T11:12:58 1e999 540.1 13.12 Montrose_Beach 1", "bad_number"),
        ("2020-02-17T11:12:58 1_0 540.1 13.12 Montrose_Beach 1", "bad_number"),
        ("2020-02-17T11:12:58 26.04 1d 13.12 Montrose_Beach 1", "bad_number"),
        ("2020-02-17T11:12:58 40.01 540.1 13.12 Montrose_Beach 1", "out_of_range"),
        ("2020-02-17T11:12:58 -5.01 540.1 13.12 Montrose_Beach 1", "out_of_range"),
        ("2020-02-17T11:12:58 26.04 -0.01 13.12 Montrose_Beach 1", "out_of_range"),
        ("2020-02-17T11:12:58 26.04 4000.01 13.12 Montrose_Beach 1", "out_of_range"),
        ("2020-02-17T11:12:58 26.04 540.1 0 Montrose_Beach 1", "out_of_range"),
        ("2020-02-17T11:12:58 26.04 540.1 20.001 Montrose_Beach 1", "out_of_range"),
        ("2020-02-17T11:12:58 26.04 540.1 13.12 Montrose-Beach 1", "bad_beach"),
        ("2020-02-17T11:12:58 26.04 540.1 13.12 " + "B" * 65 + " 1", "bad_beach"),
        ("2020-02-17T11:12:58 26.04 540.1 13.12 Montrose_Beach 0", "bad_id"),
        ("2020-02-17T11:12:58 26.04 540.1 13.12 Montrose_Beach -3", "bad_id"),
        ("2020-02-17T11:12:58 26.04 540.1 13.12 Montrose_Beach 12.5", "bad_id"),
        ("2020-02-17T11:12:58 26.04 540.1 13.12 Montrose_Beach 9223372036854775808", "bad_id"),
    ],
)
def test_each_rule_rejects_with_its_reason_code(line: str, code: str) -> None:
    assert reason(line) == code


@pytest.mark.parametrize(
    "line",
    [
        "2020-02-17T11:12:58 -5 0 20 A 1",  # every bound that is inclusive, at the bound
        "2020-02-17T11:12:58 40 4000 0.001 " + "B" * 64 + " 9223372036854775807",
        "2024-07-01T12:05:00Z 26.04 540.1 13.12 Montrose_Beach 1",  # exactly 5 minutes ahead
        "2024-07-01T14:04:00+02:00 26.04 540.1 13.12 Montrose_Beach 1",  # offset converted to UTC
        "  2020-02-17T11:12:58\t26.04  540.1 13.12 Montrose_Beach 1 \r",  # any ASCII whitespace
        "2020-02-17T11:12:58 +1.5e1 .5 13. Montrose_Beach 007",
    ],
)
def test_boundaries_and_formatting_variants_are_valid(line: str) -> None:
    verdict = validate_line(line, now=NOW)
    assert verdict.valid, verdict.detail


def test_the_first_failing_check_names_the_reason() -> None:
    # both the number and the beach are bad: numbers are checked first (rules.CHECKS order)
    assert reason("2020-02-17T11:12:58 nan 540.1 13.12 Bad-Beach 0") == "bad_number"
    assert rules.CHECKS.index("bad_number") < rules.CHECKS.index("bad_beach")


def test_a_timestamp_without_offset_means_utc() -> None:
    record = validate_line("2020-02-17T11:12:58 1 1 1 X 1", now=NOW).record
    assert record is not None and record["TimeStamp"] == datetime(2020, 2, 17, 11, 12, 58, tzinfo=UTC)


def test_future_tolerance_is_configurable() -> None:
    line = "2024-07-01T12:01:00 1 1 1 X 1"
    assert validate_line(line, now=NOW, future_tolerance=timedelta(0)).reason == "future_timestamp"
    assert validate_line(line, now=NOW).valid


def test_flags_never_invalidate_a_reading() -> None:
    verdict = validate_line("2020-02-17T11:12:58 20 1683.48 8.5 Calumet_Beach 1", now=NOW)
    assert verdict.valid and verdict.record is not None
    assert flags_of(verdict.record) == ["turbidity_above_rated", "low_battery"]


def test_the_validate_json_contract() -> None:
    verdict = validate_line(GOOD, now=NOW).to_json_dict()
    assert set(verdict) == {"valid", "reason", "record"}
    assert verdict["record"]["TimeStamp"] == "2020-02-17T11:12:58.765Z"
    assert verdict["record"]["MeasurementID"] == 758028
    bad = validate_line("x", now=NOW).to_json_dict()
    assert bad == {"valid": False, "reason": "bad_shape", "record": None}


def test_clean_message_has_the_document_keys_except_id() -> None:
    record = validate_line(GOOD, now=NOW).record
    assert record is not None
    assert set(clean_message(record)) == {
        "Beach",
        "MeasurementID",
        "BatteryLife",
        "RawData",
        "WaterTemperature",
        "Turbidity",
        "TimeStamp",
    }
