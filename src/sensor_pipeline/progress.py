"""The job's progress, published where operators already look: a Kafka consumer group.

Spark's Kafka source keeps its offsets in the checkpoint and commits none to Kafka, so no Kafka tool
can tell how far the job lags. After each batch is done (stored and published), the job commits the
next offset of every source partition it has finished to the group ``SP_JOB_GROUP``. Then
``kafka-consumer-groups.sh --describe --group <group>``, the dashboard's health row, and Amazon MSK's
consumer-lag metrics (``SumOffsetLag``, ``MaxOffsetLag``, ``EstimatedMaxTimeLag``: emitted for a group
in the STABLE or EMPTY state that has offsets, "Monitor consumer lags",
https://docs.aws.amazon.com/msk/latest/developerguide/consumer-lag.html) all show the lag.

The group is only a report: the job never reads it back (the checkpoint and the ledger decide where
it resumes), so a commit never holds up or fails a batch:

- commits are asynchronous: at most one is in flight; a batch waits up to ``WAIT_FOR_PREVIOUS``
  seconds for the previous one (a commit takes milliseconds: normally it is long done) and otherwise
  skips its own (offsets are absolute: the next commit carries them);
- the committed offsets only grow: a high-water mark per partition, seeded from the ledger's next
  offsets, so a replay of old batches (a checkpoint older than the ledger) does not move the group
  back; every commit carries every partition, which also renews each offset's retention;
- after a failure, commits pause for ``PAUSE_AFTER_FAILURE`` seconds (no reconnect per batch), with
  one warning a minute.

Commits go through the Spark Kafka connector's own client (``kafka-clients``
``Admin.alterConsumerGroupOffsets``; Kafka creates the group, with no members, on the first commit),
with the same connection options as the source, MSK IAM included: the job's EMR archive has no
Python Kafka client.
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

#: Milliseconds a commit may take before the client gives it up.
COMMIT_TIMEOUT_MS = 5_000
#: Seconds a batch waits for the previous commit before skipping its own (a slow broker).
WAIT_FOR_PREVIOUS = 1.0
#: Seconds without commits after a failed one.
PAUSE_AFTER_FAILURE = 30.0
#: At most one warning per this many seconds while commits fail.
WARN_EVERY = 60.0


def jvm_admin(spark: SparkSession, settings: Settings, client_id: str | None = None) -> Any:
    """A ``kafka-clients`` Admin in the driver's JVM, connected like the job's Kafka source."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    properties = jvm.java.util.Properties()
    for key, value in settings.spark_kafka_options().items():
        properties.put(key.removeprefix("kafka."), value)
    if client_id:
        properties.put("client.id", client_id)
    return jvm.org.apache.kafka.clients.admin.Admin.create(properties)


class ProgressCommitter:
    """Commits the job's finished offsets to its consumer group, asynchronously; never raises."""

    def __init__(self, spark: SparkSession, settings: Settings, clock: Any = time.monotonic) -> None:
        self.spark = spark
        self.settings = settings
        self.group = settings.job_group
        self.clock = clock
        #: (topic, partition) -> the next offset to commit: only grows.
        self.high: dict[tuple[str, int], int] = {}
        self.seeded = False
        self.failures = 0
        self.commits = 0
        self._admin: Any = None
        self._pending: Any = None  # the KafkaFuture of the commit in flight
        self._paused_until = -float("inf")
        self._warned_at = -WARN_EVERY

    def seed(self, topic: str, next_offsets: dict[int, int]) -> None:
        """Start the high-water marks from the ledger's next offsets (once, before the first commit)."""
        for partition, offset in next_offsets.items():
            key = (topic, int(partition))
            self.high[key] = max(self.high.get(key, 0), int(offset))
        self.seeded = True

    def commit(self, ranges: Iterable[OffsetRange]) -> bool:
        """Raise the high-water marks to ``last + 1`` of each range and start a commit of all of them,
        unless one is in flight or commits are paused. True when a commit was started."""
        for r in ranges:
            key = (r.topic, r.partition)
            self.high[key] = max(self.high.get(key, 0), r.last + 1)
        if not self.high or not self._previous_settled() or self.clock() < self._paused_until:
            return False
        try:
            jvm = self.spark.sparkContext._jvm
            assert jvm is not None
            if self._admin is None:
                self._admin = jvm_admin(self.spark, self.settings, client_id=f"{self.group}-progress")
            offsets = jvm.java.util.HashMap()
            for (topic, partition), offset in self.high.items():
                offsets.put(
                    jvm.org.apache.kafka.common.TopicPartition(topic, partition),
                    jvm.org.apache.kafka.clients.consumer.OffsetAndMetadata(offset),
                )
            options = jvm.org.apache.kafka.clients.admin.AlterConsumerGroupOffsetsOptions().timeoutMs(COMMIT_TIMEOUT_MS)
            self._pending = self._admin.alterConsumerGroupOffsets(self.group, offsets, options).all()
            return True
        except Exception as error:
            self._failed(error)
            return False

    def _previous_settled(self) -> bool:
        """Whether no commit is in flight (reporting how the last one ended)."""
        pending = self._pending
        if pending is None:
            return True
        jvm = self.spark.sparkContext._jvm
        assert jvm is not None
        try:
            pending.get(int(WAIT_FOR_PREVIOUS * 1000), jvm.java.util.concurrent.TimeUnit.MILLISECONDS)
        except Exception as error:
            if not pending.isDone():
                return False  # still running: skip this batch's commit
            self._pending = None
            self._failed(error)
            return False
        self._pending = None
        self.commits += 1
        return True

    def _failed(self, error: Exception) -> None:
        self.failures += 1
        self._paused_until = self.clock() + PAUSE_AFTER_FAILURE
        self.close()  # a new client after the pause
        if self.clock() - self._warned_at >= WARN_EVERY:
            self._warned_at = self.clock()
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            log.warning(
                "cannot commit the job's progress to consumer group %s (%s: %s); the job goes on, commits "
                "pause for %.0f s (%d failed so far)",
                self.group, type(error).__name__, first_line, PAUSE_AFTER_FAILURE, self.failures,
            )  # fmt: skip

    def close(self) -> None:
        """Close the client at once (``close(Duration.ZERO)``: a plain close waits for calls in flight,
        up to the client's 60 s API timeout, on the batch's thread)."""
        admin, self._admin = self._admin, None
        self._pending = None
        if admin is not None:
            try:
                jvm = self.spark.sparkContext._jvm
                assert jvm is not None
                admin.close(jvm.java.time.Duration.ZERO)
            except Exception as error:
                log.debug("closing the progress admin client: %s", error)
