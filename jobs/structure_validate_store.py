"""Structure, validate and store: the pipeline's Spark Structured Streaming job.

    read       Kafka RawSensorData (offsets in the checkpoint; without one, where the ledger says)
    transform  each line -> typed fields + a verdict, by the project's one rule set (Spark built-ins)
    write      per micro-batch, in one pass (sensor_pipeline.batch_writer):
                 valid   -> MongoDB / DocumentDB water_quality.sensor_readings, exactly once
                 valid   -> Kafka CleanSensorData (JSON)
                 invalid -> Kafka InvalidSensorData (dead letters: reason code, detail, source offset)

Locally (``make local-up`` runs this for you)::

    spark-submit --master 'local[2]' --jars <spark-sql-kafka jars> \\
        --conf spark.sql.session.timeZone=UTC jobs/structure_validate_store.py [--available-now]

On EMR Serverless the same file is the job run's entry point (``sensor-pipeline emr submit``), with
the project's venv archive and the connector jars from S3. Settings come from ``SP_*`` environment
variables (see sensor_pipeline.config); the flags below override them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from functools import partial

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sensor_pipeline import spark_rules
from sensor_pipeline.batch_writer import QUERY_NAME, BatchWriter
from sensor_pipeline.config import Settings, load_settings
from sensor_pipeline.progress import jvm_admin

log = logging.getLogger("sensor_pipeline.job")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", dest="checkpoint_location", help="checkpoint folder or s3:// URI")
    parser.add_argument("--trigger-seconds", type=float, help="micro-batch interval (default 0.5)")
    parser.add_argument("--available-now", action="store_true", help="process what is there, then stop")
    parser.add_argument("--starting-offsets", choices=["earliest", "latest"], help="first run, empty ledger only")
    parser.add_argument("--max-offsets-per-trigger", type=int)
    return parser.parse_args(argv)


def session() -> SparkSession:
    # No speculative task attempts: an insert bucket is fenced against a second attempt (a zombie
    # task), but running two on purpose only costs store writes.
    builder = SparkSession.builder.appName("structure_validate_store").config("spark.speculation", "false")
    # Spark's Python daemon, minus a zip re-read per task (see sensor_pipeline.spark_daemon).
    builder = builder.config("spark.python.daemon.module", "sensor_pipeline.spark_daemon")
    # Micro-batches are small: adaptive query execution only adds planning time to each.
    builder = builder.config("spark.sql.adaptive.enabled", "false")
    for key, value in spark_rules.utc_session_conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if not spark.sparkContext.getConf().contains("spark.sql.shuffle.partitions"):
        # Batches are small and frequent: a few shuffle partitions, not Spark's default 200.
        spark.conf.set("spark.sql.shuffle.partitions", str(spark.sparkContext.defaultParallelism))
    spark.sparkContext.setLogLevel("WARN")
    return spark


def topic_partitions(spark: SparkSession, settings: Settings, topic: str) -> set[int]:
    """The topic's partitions, asked with the connector's own Kafka client (its auth, e.g. MSK IAM,
    and no Python Kafka client in the job's EMR archive)."""
    admin = jvm_admin(spark, settings)
    try:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        topics = admin.describeTopics(jvm.java.util.Collections.singletonList(topic)).allTopicNames().get()
        return {int(info.partition()) for info in topics.get(topic).partitions()}
    finally:
        admin.close()


def starting_offsets(spark: SparkSession, settings: Settings, writer: BatchWriter) -> str:
    """Where a query without a checkpoint starts: after the last batch the ledger saw done, so that a
    deleted or moved checkpoint neither skips nor repeats readings. Spark ignores it otherwise."""
    done = writer.book().next_offsets(settings.raw_topic)
    if not done:
        return settings.starting_offsets
    partitions = topic_partitions(spark, settings, settings.raw_topic)
    earliest = -2  # Spark's code for "earliest" in a JSON offsets map: a partition the ledger never saw
    offsets = {str(p): done.get(p, earliest) for p in sorted(partitions)}
    log.info("starting offsets from the ledger (used only without a checkpoint): %s", offsets)
    return json.dumps({settings.raw_topic: offsets})


def finish_begun_batches(spark: SparkSession, settings: Settings, writer: BatchWriter) -> None:
    """Batches a crash left half-written are finished first, from their own offsets and time, so the
    result is the same whether or not the checkpoint that would replay them still exists."""
    for entry in writer.book().incomplete():
        bounds: dict[str, dict[str, tuple[int, int]]] = {r.topic: {} for r in entry.ranges}
        for r in entry.ranges:
            bounds[r.topic][str(r.partition)] = (r.first, r.last + 1)
        records = (
            spark.read.format("kafka")
            .options(**settings.spark_kafka_options())
            # assign, not subscribe: a JSON offsets map must name exactly the partitions read
            .option("assign", json.dumps({t: sorted(int(p) for p in ps) for t, ps in bounds.items()}))
            .option("startingOffsets", json.dumps({t: {p: b[0] for p, b in ps.items()} for t, ps in bounds.items()}))
            .option("endingOffsets", json.dumps({t: {p: b[1] for p, b in ps.items()} for t, ps in bounds.items()}))
            .option("failOnDataLoss", "false")
            .load()
        )
        now = F.timestamp_micros(F.lit(entry.checked_at))  # the time its rules ran against
        routed = spark_rules.routed(
            spark_rules.validate(spark_rules.raw_lines(records), now, settings.future_tolerance_seconds)
        )
        log.info("finishing batch %s begun before a crash (%s)", entry.key, entry.ranges)
        writer.with_retries(f"begun batch {entry.key}", partial(finish, writer, routed, entry.key), spark)


def finish(writer: BatchWriter, routed: DataFrame, key: str) -> None:
    """One attempt at a begun batch, from its entry as the ledger has it now (an earlier attempt may
    have started its Kafka write, or finished it)."""
    entry = writer.book().get(key)
    if entry is not None and not entry.done:
        writer.write(routed, -1, entry)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(
        checkpoint_location=args.checkpoint_location,
        trigger_seconds=args.trigger_seconds,
        starting_offsets=args.starting_offsets,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
    )
    spark = session()
    writer = BatchWriter(settings, spark)
    finish_begun_batches(spark, settings, writer)

    # Read: the raw topic. Offsets live in the checkpoint, so a restart resumes where it stopped.
    records: DataFrame = (
        spark.readStream.format("kafka")
        .options(**settings.spark_kafka_options())
        .option("subscribe", settings.raw_topic)
        .option("startingOffsets", starting_offsets(spark, settings, writer))
        .option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
        # Data deleted by retention before it was read cannot be recovered; fail loudly instead.
        .option("failOnDataLoss", "true")
        .load()
    )

    # Transform: lines -> typed fields, a verdict and the Kafka record each becomes, defined once for
    # the query (current_timestamp() is the micro-batch's time, the same on a replay).
    validated = spark_rules.validate(
        spark_rules.raw_lines(records), future_tolerance_seconds=settings.future_tolerance_seconds
    )

    # Write: store, clean topic and dead letters, exactly once per reading in the store.
    stream = spark_rules.routed(validated).writeStream.queryName(QUERY_NAME).foreachBatch(writer)
    stream = stream.option("checkpointLocation", settings.checkpoint_location)
    if args.available_now:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=f"{settings.trigger_seconds} seconds")
    try:
        stream.start().awaitTermination()
    finally:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
