"""Structure, validate and store: the pipeline's Spark Structured Streaming job.

Reads raw lines from Kafka ``RawSensorData``, validates each with the project's single rule set
(compiled to Spark built-in functions), and in every micro-batch writes
  valid   -> MongoDB / DocumentDB ``water_quality.sensor_readings`` (idempotent, keyed by MeasurementID)
  valid   -> Kafka ``CleanSensorData`` (JSON)
  invalid -> Kafka ``InvalidSensorData`` (dead letters with a reason code and their source offset)

Locally (``make local-up`` runs this for you)::

    spark-submit --master 'local[2]' --jars <spark-sql-kafka jars> \
        --conf spark.sql.session.timeZone=UTC jobs/structure_validate_store.py [--available-now]

On EMR Serverless the same file is the job run's entry point (``sensor-pipeline emr submit``), with
the project's venv archive and the connector jars from S3. Settings come from ``SP_*`` environment
variables (see sensor_pipeline.config); the flags below override them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sensor_pipeline.config import load_settings
from sensor_pipeline.sinks import BatchWriter
from sensor_pipeline.spark_rules import utc_session_conf


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", dest="checkpoint_location", help="checkpoint folder or s3:// URI")
    parser.add_argument("--trigger-seconds", type=float, help="micro-batch interval (default 2)")
    parser.add_argument("--available-now", action="store_true", help="process what is there, then stop")
    parser.add_argument("--starting-offsets", choices=["earliest", "latest"], help="first run only")
    parser.add_argument("--max-offsets-per-trigger", type=int)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(
        checkpoint_location=args.checkpoint_location,
        trigger_seconds=args.trigger_seconds,
        starting_offsets=args.starting_offsets,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
    )
    builder = SparkSession.builder.appName("structure_validate_store")
    for key, value in utc_session_conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if not spark.sparkContext.getConf().contains("spark.sql.shuffle.partitions"):
        # Batches are small and frequent: a few shuffle partitions, not Spark's default 200.
        spark.conf.set("spark.sql.shuffle.partitions", str(spark.sparkContext.defaultParallelism))
    spark.sparkContext.setLogLevel("WARN")

    # Source: the raw topic. Offsets live in the checkpoint, so a restart resumes where it stopped.
    raw = (
        spark.readStream.format("kafka")
        .options(**settings.spark_kafka_options())
        .option("subscribe", settings.raw_topic)
        .option("startingOffsets", settings.starting_offsets)
        .option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
        # Data deleted by retention before it was read cannot be recovered; fail loudly instead.
        .option("failOnDataLoss", "true")
        .load()
        .select(
            F.col("value").cast("string").alias("value"),
            "topic",
            "partition",
            "offset",
            F.col("timestamp").alias("kafka_timestamp"),
        )
    )

    # Sink: one idempotent foreachBatch writer for the store and both output topics.
    writer = raw.writeStream.queryName("structure_validate_store").foreachBatch(BatchWriter(settings))
    writer = writer.option("checkpointLocation", settings.checkpoint_location)
    if args.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{settings.trigger_seconds} seconds")
    query = writer.start()
    query.awaitTermination()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
