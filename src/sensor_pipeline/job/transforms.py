"""The rule set of :mod:`sensor_pipeline.contract.rules`, compiled into Spark column expressions.

Pure ``DataFrame -> DataFrame`` functions built only from Spark's built-in functions (no Python
UDF on the hot path). The session must run with ``spark.sql.session.timeZone=UTC`` so that a
timestamp without offset means UTC, as the contract says; :func:`utc_session_conf` gives it.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sensor_pipeline.contract import rules, schema

#: Session settings the transforms rely on.
utc_session_conf: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    # java.time parsing and formatting (the default; pinned: the future-timestamp check compares
    # microsecond text, which the legacy formatter does not write).
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
}

_DOUBLE_INF = float("inf")
#: Timestamps as text that sorts as they do (four-digit years: the rules allow 1-9999).
_SORTABLE = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The batch's time, a column of the validated rows: ``validate`` adds it, ``routed`` writes it in
#: dead letters as ``RejectedAt``.
BATCH_TIME = "batch_time"
#: The field a rejected row's detail quotes (a column of validate's own, dropped before it returns).
DETAIL_ARGUMENT = "_detail_argument"


def instant(value: datetime) -> Column:
    """``value`` as a timestamp literal (the batch's time the writer validates against)."""
    # From epoch microseconds: Python's datetime conversion of a literal depends on the local zone.
    return F.timestamp_micros(F.lit((value - _EPOCH) // timedelta(microseconds=1)))


def quote(text: Column, limit: int = rules.DETAIL_QUOTE) -> Column:
    """:func:`sensor_pipeline.contract.rules.quote` in Spark: a field cut to ``limit`` characters for a message."""
    return F.when(F.length(text) <= limit, text).otherwise(
        F.format_string("%s... (%d characters)", F.substring(text, 1, limit), F.length(text))
    )


def _finite(column: Column) -> Column:
    return ~F.isnan(column) & (column != F.lit(_DOUBLE_INF)) & (column != F.lit(-_DOUBLE_INF))


def _in_range(column: Column, allowed: rules.Range) -> Column:
    low = column >= allowed.low if allowed.low_inclusive else column > allowed.low
    high = column <= allowed.high if allowed.high_inclusive else column < allowed.high
    return low & high


def _number(text: Column) -> Column:
    return F.when(text.rlike(rules.NUMBER_PATTERN), text.try_cast("double"))


def raw_lines(records: DataFrame) -> DataFrame:
    """Kafka records as raw lines: ``value`` (UTF-8 text, never null), ``topic``, ``partition``, ``offset``.

    Bytes that are not UTF-8 become U+FFFD (the line is then invalid, never unreadable), and a record
    without a value (a tombstone) is an empty line, so both reach the dead letters like any other.
    """
    return records.select(*_line_columns())


@functools.cache
def _line_columns() -> tuple[Column, ...]:
    value = F.coalesce(F.make_valid_utf8(F.col("value").cast("string")), F.lit(""))
    return value.alias("value"), F.col("topic"), F.col("partition"), F.col("offset")


def validate(lines: DataFrame, now: Column | None = None, future_tolerance_seconds: int = 300) -> DataFrame:
    """Add the verdict of each ``value`` line: ``reason`` (null when valid), ``detail`` and the typed fields.

    Output columns added: ``batch_time`` (:data:`BATCH_TIME`, ``now``), ``fields`` (array),
    ``TimeStamp`` (timestamp), ``WaterTemperature``, ``Turbidity``, ``BatteryLife`` (double), ``Beach``
    (string, spaces restored), ``MeasurementID`` (long), ``reason``, ``detail``. ``now`` is the time
    ``future_timestamp`` is judged against: the job passes the micro-batch's time as a literal
    (default: ``current_timestamp()``).
    """
    fields, typed, verdict = _validation(future_tolerance_seconds)
    df = lines.withColumn(BATCH_TIME, now if now is not None else F.current_timestamp())
    df = df.withColumn("fields", fields).select("*", *typed)
    for name, column in verdict.items():  # in order: each may name the one before
        df = df.withColumn(name, column)
    return df.drop(DETAIL_ARGUMENT)


@functools.cache
def _validation(future_tolerance_seconds: int) -> tuple[Column, tuple[Column, ...], dict[str, Column]]:
    """``validate``'s column expressions, built once per process: each is a tree of JVM objects that
    costs hundreds of Py4J calls to build (about 0.15 s a micro-batch, measured), and they refer to the
    batch's time by column name, so every batch reuses them. Classic PySpark, as the job runs: a
    process does not switch to Spark Connect, whose columns are of another kind."""
    now = F.col(BATCH_TIME)
    stripped = F.regexp_replace(F.col("value"), f"^{rules.SPLIT_PATTERN}|{rules.SPLIT_PATTERN}$", "")
    fields = F.when(stripped == "", F.array()).otherwise(F.split(stripped, rules.SPLIT_PATTERN))
    field = {name: F.get(F.col("fields"), i) for i, name in enumerate(rules.FIELDS)}
    shape_ok = F.size("fields") == rules.FIELD_COUNT
    ts_text = field["TimeStamp"]
    parsed = ts_text.try_cast("timestamp")
    in_bounds = parsed.between(instant(rules.EARLIEST), instant(rules.LATEST))
    timestamp = F.when(ts_text.rlike(rules.TIMESTAMP_PATTERN) & in_bounds, parsed)
    numbers = {name: _number(field[name]) for name in rules.RANGES}
    id_text = field["MeasurementID"]
    measurement_id = F.when(id_text.rlike(rules.ID_PATTERN), id_text.try_cast("long"))
    typed = (
        timestamp.alias("TimeStamp"),
        *(value.alias(name) for name, value in numbers.items()),
        F.regexp_replace(field["Beach"], "_", " ").alias("Beach"),
        measurement_id.alias("MeasurementID"),
    )

    # The checks, in rules.CHECKS order: the first failing one names the reason.
    col = F.col
    numbers_ok = F.lit(True)
    for name in rules.RANGES:
        numbers_ok = numbers_ok & col(name).isNotNull() & _finite(col(name))
    ranges_ok = F.lit(True)
    for name, allowed in rules.RANGES.items():
        ranges_ok = ranges_ok & _in_range(col(name), allowed)
    # code -> (failed, the detail's format, the field it quotes, if any).
    failures: dict[str, tuple[Column, str, Column | None]] = {
        "too_long": (
            F.length("value") > rules.MAX_LINE_LENGTH,
            f"a line has at most {rules.MAX_LINE_LENGTH} characters, got %s",
            F.length("value"),
        ),
        "bad_shape": (~shape_ok, f"expected {rules.FIELD_COUNT} fields, got %s", F.size("fields")),
        "bad_timestamp": (col("TimeStamp").isNull(), "not an ISO 8601 date-time: '%s'", ts_text),
        "future_timestamp": (
            # Compared as fixed-width text (chronological for years 1-9999): the limit folds into a
            # string constant, which generated code references, where a timestamp constant would be
            # inlined and recompiled for every micro-batch (its time changes each batch). The batch_time
            # literal reaches here through projections only (Spark's FoldablePropagation); a cache,
            # checkpoint or Python UDF between validate and routed would stop the folding
            # (tests/integration/test_delivery.py checks that later batches compile nothing).
            F.date_format(col("TimeStamp"), _SORTABLE)
            > F.date_format(now + F.make_dt_interval(secs=F.lit(future_tolerance_seconds)), _SORTABLE),
            "%s is ahead of processing time",
            ts_text,
        ),
        "bad_number": (~numbers_ok, "a numeric field is not a finite number", None),
        "out_of_range": (
            ~ranges_ok,
            "outside the valid ranges: " + ", ".join(f"{n} {r.describe()}" for n, r in rules.RANGES.items()),
            None,
        ),
        "bad_beach": (
            ~field["Beach"].rlike(rules.BEACH_PATTERN),
            "beach must match [A-Za-z0-9_]{1,64}: '%s'",
            field["Beach"],
        ),
        "bad_id": (
            col("MeasurementID").isNull() | (col("MeasurementID") < rules.ID_MIN),
            "MeasurementID must be an integer in [1, 2^63-1]: '%s'",
            id_text,
        ),
    }
    assert tuple(failures) == rules.CHECKS, "transforms is out of step with rules.CHECKS"
    # Flat CASE WHENs, and one format for the detail, chosen by the reason: the checks nested and
    # written again for the detail made generated code that Spark rebuilt as text for every
    # micro-batch (the cost grows with the nesting) and a method of 10,089 bytes of bytecode, which
    # the JVM never compiles (HotSpot interprets a method above 8,000: its HugeMethodLimit). The JVM
    # option -XX:-DontCompileHugeMethods would compile it, but must reach every driver and executor JVM
    # (EMR's included); the unit case test_the_rules_compile_to_methods_the_jvm_compiles keeps it small.
    is_code = {code: F.col("reason") == code for code in failures}
    reason = _case([(failed, F.lit(code)) for code, (failed, _, _) in failures.items()])
    # A format without an argument must not read a '%' of its own text as one.
    template = _case(
        [(is_code[code], F.lit(text if arg is not None else text.replace("%", "%%")))
         for code, (_, text, arg) in failures.items()]
    )  # fmt: skip
    quoted = _case([(is_code[code], arg.cast("string")) for code, (_, _, arg) in failures.items() if arg is not None])
    verdict = {
        "reason": reason,
        DETAIL_ARGUMENT: quoted,
        "detail": F.printf(template, quote(F.col(DETAIL_ARGUMENT))),
    }
    return fields, typed, verdict


def _case(branches: list[tuple[Column, Column]]) -> Column:
    """One flat ``CASE WHEN c1 THEN v1 WHEN c2 THEN v2 ... END`` (null when no condition holds)."""
    (condition, value), *rest = branches
    column = F.when(condition, value)
    for condition, value in rest:
        column = column.when(condition, value)
    return column


def _document_columns() -> list[Column]:
    """The stored document's columns (:data:`schema.DOCUMENT`), from validated rows."""
    sources = {
        "_id": F.col("MeasurementID"),
        "RawData": F.col("value"),
        # BSON dates hold milliseconds: truncate here so the topic and the store agree exactly.
        "TimeStamp": F.date_trunc("millisecond", F.col("TimeStamp")),
    }
    return [sources.get(key.name, F.col(key.name)).cast(key.spark_type).alias(key.name) for key in schema.DOCUMENT]


def _clean_record() -> tuple[Column, Column]:
    """CleanSensorData (key, value) of a row in the document's shape: key = beach (underscored, as on
    the raw topic), value = JSON of :data:`schema.MESSAGE_KEYS`."""
    fields = [
        F.date_format(name, schema.TIMESTAMP_FORMAT_SPARK).alias(name) if name == "TimeStamp" else F.col(name)
        for name in schema.MESSAGE_KEYS
    ]
    return F.regexp_replace("Beach", " ", "_"), F.to_json(F.struct(*fields))


def source_struct(topic: Column, partition: Column, offset: Column) -> Column:
    """The ``Source`` of a dead letter: the raw record's topic, partition and offset."""
    return F.struct(topic.alias("topic"), partition.alias("partition"), offset.alias("offset"))


def dead_letter_value(raw: Column, reason: Column, detail: Column, source: Column, at: Column) -> Column:
    """The InvalidSensorData value: JSON of RawData/Reason/Detail/Source/RejectedAt.

    RawData is the whole line, except for a ``too_long`` one: its first :data:`rules.RAW_DATA_QUOTE`
    characters (the Detail gives its length, Source the record that holds all of it), so that a
    dead letter always fits in a Kafka message.
    """
    return F.to_json(
        F.struct(
            F.substring(raw, 1, rules.RAW_DATA_QUOTE).alias("RawData"),
            reason.alias("Reason"),
            detail.alias("Detail"),
            source.alias("Source"),
            F.date_format(at, schema.TIMESTAMP_FORMAT_SPARK).alias("RejectedAt"),
        )
    )


def _letter_record() -> tuple[Column, Column]:
    """Dead-letter (key, value) of an invalid validated row: key = beach where known, ``RejectedAt`` =
    the batch's time."""
    key = F.when((F.size("fields") == rules.FIELD_COUNT) & (F.col("reason") != "too_long"), F.get(F.col("fields"), 4))
    source = source_struct(F.col("topic"), F.col("partition"), F.col("offset"))
    return key, dead_letter_value(F.col("value"), F.col("reason"), F.col("detail"), source, F.col(BATCH_TIME))


def routed(validated: DataFrame) -> DataFrame:
    """Every validated row, ready for the batch writer: its source (``topic``, ``partition``,
    ``offset``), ``reason`` (null when valid), the stored document's columns (``TimeStamp`` as epoch
    milliseconds; null for invalid rows) and the Kafka record it becomes (``key``, ``value``): its
    CleanSensorData message when valid, its dead letter otherwise (``RejectedAt`` = the batch's time);
    for a row rejected by the clock alone (:data:`rules.CLOCK_CHECK`), ``clock_value``: the
    CleanSensorData value a later clock gives it (null for every other row; the key is the same).
    One plan, so that the Python side only chooses rows and writes documents.
    """
    first, second, third = _routing()
    return validated.select(*first).select(*second).select(*third)


@functools.cache
def _routing() -> tuple[tuple[Column, ...], tuple[Column, ...], tuple[Column, ...]]:
    """``routed``'s three projections, built once per process (see :func:`_validation`)."""
    valid = F.col("reason").isNull()
    clocked = F.col("reason") == rules.CLOCK_CHECK
    letter_key, letter_value = _letter_record()
    first = (
        *_document_columns(),
        *(F.col(name) for name in ("reason", "detail", "fields", "value", "topic", "partition", "offset")),
        # CASE WHEN evaluates only the branch a row takes: no dead-letter JSON for a valid row.
        F.when(~valid, letter_key).alias("letter_key"),
        F.when(~valid, letter_value).alias("letter_value"),
    )
    clean_key, clean_value = _clean_record()
    # A row that only the clock rejects also carries its clean record: when an earlier attempt at the
    # slice, judging by another clock, stored the reading, the writer publishes it instead of the dead
    # letter (sensor_pipeline.job.delivery, Slice.stored_earlier); its key is the dead letter's (the
    # beach field). The clean JSON is built once, here, and chosen in the last projection: written into
    # two CASE WHENs, its code took the generated method past the 8,000 bytes of bytecode HotSpot
    # compiles (8,694 bytes; see the unit case).
    second = (
        *(F.col(name) for name in ("topic", "partition", "offset", "reason", "letter_value")),
        *(
            F.when(valid, F.unix_millis(key.name) if key.name == "TimeStamp" else F.col(key.name)).alias(key.name)
            for key in schema.DOCUMENT
        ),
        F.when(valid, clean_key).otherwise(F.col("letter_key")).alias("key"),
        clean_value.alias("clean_value"),
    )
    third = (
        *(F.col(name) for name in ("topic", "partition", "offset", "reason", *schema.DOCUMENT_KEYS, "key")),
        F.when(valid, F.col("clean_value")).otherwise(F.col("letter_value")).alias("value"),
        F.when(clocked, F.col("clean_value")).alias("clock_value"),
    )
    return first, second, third
