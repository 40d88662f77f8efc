"""Structure, validate and store: the pipeline's Spark Structured Streaming job.

    read       Kafka RawSensorData (offsets in the checkpoint; without one, where the job's consumer
               group says: its offsets are committed with each batch's output)
    transform  each line -> typed fields + a verdict, by the project's one rule set (Spark built-ins),
               against the micro-batch's time
    write      per micro-batch, per source partition, exactly once (sensor_pipeline.job.writer):
                 valid   -> MongoDB / DocumentDB water_quality.sensor_readings
                 valid   -> Kafka CleanSensorData (JSON)       } one Kafka transaction, with the
                 invalid -> Kafka InvalidSensorData (reasons)  } consumer group's offsets

Locally (``make local-up`` runs this for you)::

    spark-submit --master 'local[2]' --jars <spark-sql-kafka jars> \\
        --conf spark.sql.session.timeZone=UTC jobs/structure_validate_store.py [--available-now]

On EMR Serverless the same file is the job run's entry point (``sensor-pipeline emr submit``), with
the project's venv archive and the connector jars from S3. Settings come from ``SP_*`` environment
variables (see sensor_pipeline.config); the flags below override them. SIGTERM (supervisord, EMR's
cancel) lets the running batch finish, then stops the query: exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import ClassVar
from urllib.parse import urlparse

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from sensor_pipeline.config import Settings, load_settings, setting_help
from sensor_pipeline.job import progress, transforms
from sensor_pipeline.job.writer import QUERY_NAME, BatchWriter

log = logging.getLogger("sensor_pipeline.job")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", dest="checkpoint_location", help=setting_help("checkpoint_location"))
    parser.add_argument("--trigger-seconds", type=float, help=setting_help("trigger_seconds"))
    parser.add_argument("--available-now", action="store_true", help="process what is there, then stop")
    parser.add_argument("--starting-offsets", choices=["earliest", "latest"], help=setting_help("starting_offsets"))
    parser.add_argument("--max-offsets-per-trigger", type=int, help=setting_help("max_offsets_per_trigger"))
    return parser.parse_args(argv)


#: Spark's checkpoint file manager over Hadoop's FileSystem API, for a checkpoint on the local disk. The
#: default (FileContext) asks Hadoop for each file's link status, which without Hadoop's native library
#: runs the ``readlink`` program: 12 processes a second at a 0.5 s trigger, each forked from the JVM.
#: The setting is Spark's own (spark.apache.org/docs/latest/cloud-integration.html names it for S3);
#: a checkpoint in S3 (EMR) keeps EMR's default.
LOCAL_CHECKPOINT_MANAGER = "org.apache.spark.sql.execution.streaming.FileSystemBasedCheckpointFileManager"


def is_local_path(location: str) -> bool:
    """A checkpoint on this machine's disk: a plain path, a ``file:`` URI or a Windows drive (not ``s3://``,
    ``s3a:/bucket``, ``hdfs:/path``)."""
    scheme = urlparse(location).scheme.lower()
    return scheme in ("", "file") or len(scheme) == 1


def session(checkpoint_location: str = "") -> SparkSession:
    # No speculative task attempts: a second attempt of a slice would fence the first, costing work.
    builder = SparkSession.builder.appName(QUERY_NAME).config("spark.speculation", "false")
    if checkpoint_location and is_local_path(checkpoint_location):
        builder = builder.config("spark.sql.streaming.checkpointFileManagerClass", LOCAL_CHECKPOINT_MANAGER)
    # Micro-batches are small: adaptive query execution only adds planning time to each.
    builder = builder.config("spark.sql.adaptive.enabled", "false")
    for key, value in transforms.utc_session_conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def forward_jvm_sigterm(spark: SparkSession, on_term: Callable[[], None]) -> None:
    """SIGTERM to the driver's JVM (what supervisord and EMR's cancel signal: spark-submit runs the JVM,
    the JVM this Python process) asks for the same graceful stop, instead of the JVM's default, which
    runs its shutdown hooks and stops the SparkContext under the running batch. Through the JDK's signal
    API (``sun.misc.Signal``) and a py4j callback."""
    from pyspark.java_gateway import ensure_callback_server_started

    gateway = spark.sparkContext._gateway
    assert gateway is not None
    ensure_callback_server_started(gateway)  # type: ignore[no-untyped-call]

    class Handler:
        def handle(self, _signal: object) -> None:
            on_term()

        class Java:
            implements: ClassVar[list[str]] = ["sun.misc.SignalHandler"]

    jvm = gateway.jvm
    jvm.sun.misc.Signal.handle(jvm.sun.misc.Signal("TERM"), Handler())


def stop_gracefully(query: StreamingQuery, writer: BatchWriter) -> None:
    """On SIGTERM: the batch being written finishes (its transactions commit), then the query stops. A
    batch that starts meanwhile is interrupted, uncommitted: the next run writes it again."""
    writer.stopping.wait()
    log.info("stop requested: finishing the running batch, then stopping the query")
    while writer.busy.is_set():
        time.sleep(0.05)
    query.stop()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    level = os.environ.get("SP_LOG_LEVEL", "INFO").upper()  # as for every sensor-pipeline command
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings: Settings = load_settings(
        checkpoint_location=args.checkpoint_location,
        trigger_seconds=args.trigger_seconds,
        starting_offsets=args.starting_offsets,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
    )
    # Where to start without a checkpoint: the group's committed offsets, which commit with the output
    # (Spark ignores this when the checkpoint has offsets). Refuses a recreated topic, reports retention loss.
    starting = progress.starting_offsets(settings)
    spark = session(settings.checkpoint_location)
    writer = BatchWriter(settings)

    # Read: the raw topic. Data deleted by retention before it was read fails the query, loudly.
    records: DataFrame = (
        spark.readStream.format("kafka")
        .options(**settings.spark_kafka_options())
        .option("subscribe", settings.raw_topic)
        .option("startingOffsets", json.dumps(starting) if starting else settings.starting_offsets)
        .option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
        .option("failOnDataLoss", "true")
        .load()
    )
    # Transform and write, per micro-batch: validation against the batch's time, then delivery.
    stream = records.writeStream.queryName(QUERY_NAME).foreachBatch(writer)
    stream = stream.option("checkpointLocation", settings.checkpoint_location)
    if args.available_now:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=f"{settings.trigger_seconds} seconds")
    query = stream.start()

    def on_term(signum: int, _frame: FrameType | None) -> None:
        writer.stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    forward_jvm_sigterm(spark, writer.stopping.set)
    threading.Thread(target=stop_gracefully, args=(query, writer), daemon=True).start()
    try:
        query.awaitTermination()
    except StreamingQueryException:
        if not writer.stopping.is_set():
            raise
        log.info("stopped during a batch, before its commit: the next run writes it")
    log.info("stopped; totals %s", writer.totals)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
