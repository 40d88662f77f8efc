"""The job's progress, published where operators already look: a Kafka consumer group.

Spark's Kafka source keeps its offsets in the checkpoint and commits none to Kafka, so no Kafka tool
can tell how far the job lags. After each batch is done (stored and published), the job commits the
next offset of every source partition it covered to the group ``SP_JOB_GROUP``. Then
``kafka-consumer-groups.sh --describe --group <group>``, the dashboard's health row, and Amazon MSK's
consumer-lag metrics (``SumOffsetLag``, ``MaxOffsetLag``, ``EstimatedMaxTimeLag``: "Monitor consumer
lags", https://docs.aws.amazon.com/msk/latest/developerguide/consumer-lag.html) all show the lag.

The group is only a report: the job never reads it back (the checkpoint and the ledger decide where
it resumes), so a failed commit is logged and the batch goes on. Commits go through the Spark Kafka
connector's own client (``kafka-clients`` ``Admin.alterConsumerGroupOffsets``, on a group with no
members), with the same connection options as the source, MSK IAM included: the job's EMR archive
has no Python Kafka client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from pyspark.sql import SparkSession

from sensor_pipeline.config import Settings
from sensor_pipeline.ledger import OffsetRange

log = logging.getLogger("sensor_pipeline.progress")

#: Seconds a commit may take before it counts as failed (the batch does not wait longer).
COMMIT_TIMEOUT = 5
#: At most one warning per this many seconds while commits fail.
WARN_EVERY = 60.0


def jvm_admin(spark: SparkSession, settings: Settings) -> Any:
    """A ``kafka-clients`` Admin in the driver's JVM, connected like the job's Kafka source."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    properties = jvm.java.util.Properties()
    for key, value in settings.spark_kafka_options().items():
        properties.put(key.removeprefix("kafka."), value)
    return jvm.org.apache.kafka.clients.admin.Admin.create(properties)


class ProgressCommitter:
    """Commits a done batch's offsets to the job's consumer group; never raises."""

    def __init__(self, spark: SparkSession, settings: Settings) -> None:
        self.spark = spark
        self.settings = settings
        self.group = settings.job_group
        self._admin: Any = None
        self._warned_at = -WARN_EVERY
        self.failures = 0

    def commit(self, ranges: Iterable[OffsetRange]) -> bool:
        """Commit ``last + 1`` of each range (a range's partition is then processed up to there)."""
        ranges = list(ranges)
        if not ranges:
            return True
        try:
            jvm = self.spark.sparkContext._jvm
            assert jvm is not None
            if self._admin is None:
                self._admin = jvm_admin(self.spark, self.settings)
            offsets = jvm.java.util.HashMap()
            for r in ranges:
                partition = jvm.org.apache.kafka.common.TopicPartition(r.topic, r.partition)
                offsets.put(partition, jvm.org.apache.kafka.clients.consumer.OffsetAndMetadata(r.last + 1))
            result = self._admin.alterConsumerGroupOffsets(self.group, offsets)
            result.all().get(COMMIT_TIMEOUT, jvm.java.util.concurrent.TimeUnit.SECONDS)
            return True
        except Exception as error:
            self.failures += 1
            self.close()  # a new client next time
            if time.monotonic() - self._warned_at >= WARN_EVERY:
                self._warned_at = time.monotonic()
                first_line = (str(error).strip().splitlines() or [""])[0][:300]
                log.warning(
                    "cannot commit the job's progress to consumer group %s (%s: %s); the job goes on "
                    "(%d failed commits so far)",
                    self.group, type(error).__name__, first_line, self.failures,
                )  # fmt: skip
            return False

    def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                admin.close()
            except Exception as error:
                log.debug("closing the progress admin client: %s", error)
