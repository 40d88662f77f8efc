"""The job's core: the ``foreachBatch`` writer that stores and publishes each validated micro-batch.

Per batch (the job hands over raw lines already validated: ``spark_rules.validate``):

1. **Ledger entry** (:mod:`sensor_pipeline.ledger`), keyed by the batch's source offset ranges. A
   done entry means a replay: nothing is written again.
2. **Store**: the first copy of each valid MeasurementID, hash-bucketed by id into a number of
   buckets fixed in the entry, inserted unordered by the executors. Each bucket records its own
   inserts in the ledger (ids marked pending before a chunk's insert, settled after), so a retried
   task tells its own earlier inserts from readings other batches stored. Documents the store
   refuses come back with the server's error.
3. **Publish**, one Kafka write: dead letters (rule verdicts, and ``store_rejected`` readings with
   the server's error) to ``InvalidSensorData``, the batch's own readings to ``CleanSensorData``.
4. **Done**: the entry is marked done and the next offsets advanced.

Nothing a record holds can fail a batch: the rules bound every field to what both the store and
Kafka take (parity-tested); a document the store refuses for what it holds becomes a dead letter,
and one it refuses otherwise, in ``SP_REFUSALS_BEFORE_DEAD_LETTER`` attempts of its batch while the
store takes the ledger's writes, too. A batch that
fails for another reason (store or broker down, a lost executor) is retried with backoff and a log
line per attempt, for up to ``SP_BATCH_RETRY_SECONDS``; then the job fails and its supervisor
(supervisord, EMR's retry policy) restarts it from the checkpoint.

Guarantees (proved by ``tests/chaos``; README "Guarantees"): the store holds each valid reading
exactly once. CleanSensorData and InvalidSensorData carry each reading at least once, and exactly
once except in two windows. A: a crash after the Kafka write began and before the done mark: the
replay reads back the messages with the batch's header (from a minute before the write began, so
clocks must agree within a minute) and sends only the rest; a record still buffered in a failed
task's producer when the replay reads can arrive twice. B: a reading another batch had already
stored, in a chunk a crashed attempt was inserting, is published again (the duplicate answer
cannot be told from the crashed attempt's own insert). Every message carries its MeasurementID
(clean) or source offset (dead letters), so consumers can deduplicate.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import reduce
from itertools import islice
from typing import Any

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from sensor_pipeline import faults, ledger, schema, spark_rules, store
from sensor_pipeline.config import Settings

log = logging.getLogger("sensor_pipeline.job")

STORE_REJECTED = "store_rejected"


class PhaseTimer:
    """Wall time per phase of a batch, for the job's log."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps.append((name, now - self.last))
        self.last = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.laps)


@dataclass
class BucketResult:
    """What one insert bucket reports to the driver (small: counts and the exceptions only)."""

    rows: int = 0
    inserted: int = 0
    ambiguous: list[int] = field(default_factory=list)
    foreign: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Published:
    """What an earlier attempt of a batch delivered to Kafka before it failed."""

    clean: set[int]
    #: Dead letters by their source (topic, partition, offset).
    letters: set[tuple[str, int, int]]


_settings_cache: dict[str, Settings] = {}


def _settings(settings_json: str) -> Settings:
    if settings_json not in _settings_cache:
        _settings_cache[settings_json] = Settings.model_validate_json(settings_json)
    return _settings_cache[settings_json]


def insert_bucket(settings_json: str, key: str) -> Any:
    """The executor side of step 2: one task per bucket, unordered inserts in chunks."""

    def write(index: int, rows: Iterable[Row]) -> Iterator[BucketResult]:
        settings = _settings(settings_json)
        try:
            client = store.shared_client(settings)
            bucket = ledger.Bucket.load(ledger.collection(client, settings), key, index)
            readings = store.durable_readings(client, settings)
            result = BucketResult()
            remaining = iter(rows)
            while chunk := list(islice(remaining, settings.insert_chunk)):
                result.rows += len(chunk)
                documents = []
                for row in chunk:
                    if bucket.settled(row["_id"]):
                        continue
                    refusals, error = bucket.refusals.get(row["_id"], (0, ""))
                    if refusals >= settings.refusals_before_dead_letter:
                        result.rejected.append((row["_id"], f"refused in {refusals} attempts, last: {error}"))
                        continue
                    try:
                        documents.append(schema.to_document(row.asDict()))
                    except Exception as error:
                        result.rejected.append((row["_id"], f"cannot be encoded: {error}"))
                if not documents:
                    continue
                ids = [int(d["_id"]) for d in documents]
                bucket.intend(ids)
                faults.hit("chunk_intended")
                try:
                    outcome = store.insert_new(readings, documents)
                except store.StoreError as error:
                    bucket.count_refusals({int(i): e for i, e in error.failed.items()})
                    raise
                faults.hit("chunk_inserted")
                rejected = {int(i): error for i, error in outcome.rejected}
                ambiguous = bucket.settle(ids, {int(i) for i in outcome.duplicate_ids}, set(rejected))
                result.ambiguous.extend(sorted(ambiguous))
                result.inserted += outcome.inserted
                result.rejected.extend(rejected.items())
            result.foreign = sorted(bucket.foreign)
            yield result
        except Exception:
            store.drop_shared_client(settings)
            raise

    return write


class BatchWriter:
    """Callable for ``writeStream.foreachBatch``; see the module docstring for the guarantees."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.settings_json = settings.model_dump_json()
        self.kafka_options = settings.spark_kafka_options()
        self.totals = dict.fromkeys(
            ("batches", "valid", "invalid", "stored", "already_stored", "rejected", "published", "ambiguous"), 0
        )
        self.batches_since_prune = 0
        self.ambiguous: list[int] = []

    def buckets(self, spark: SparkSession) -> int:
        """Insert buckets of a new batch (fixed in its ledger entry, so replays hash ids the same way)."""
        return self.settings.write_buckets or spark.sparkContext.defaultParallelism

    def book(self) -> ledger.Ledger:
        """The ledger, through this process's shared client."""
        client = store.shared_client(self.settings)
        retention = timedelta(seconds=self.settings.ledger_retention_seconds)
        return ledger.Ledger(ledger.collection(client, self.settings), retention)

    def __call__(self, validated: DataFrame, batch_id: int) -> None:
        """Write one micro-batch (``foreachBatch``), retried with backoff when it fails."""
        self.with_retries(f"batch {batch_id}", lambda: self.write(validated, batch_id), validated.sparkSession)

    def with_retries(self, what: str, action: Callable[[], None], spark: SparkSession) -> None:
        """Run ``action`` until it succeeds, with backoff (1 s doubling to 30 s) and a log line per
        failure, for up to ``SP_BATCH_RETRY_SECONDS``; no record can make it fail, so what fails is
        the store, the broker or an executor, and waiting is what helps."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                action()
                break
            except Exception as error:
                store.drop_shared_client(self.settings)
                waited = time.monotonic() - started
                if spark.sparkContext._jsc is None or waited > self.settings.batch_retry_seconds:
                    log.error("%s failed after %d attempts in %.0f s: giving up", what, attempt, waited)
                    raise
                delay = min(30.0, 2.0 ** (attempt - 1))
                first_line = (str(error).strip().splitlines() or [""])[0][:300]
                log.warning(
                    "%s attempt %d failed (%s: %s); retrying in %.0f s (gives up after %.0f s)",
                    what, attempt, type(error).__name__, first_line, delay, self.settings.batch_retry_seconds,
                )  # fmt: skip
                time.sleep(delay)
        log.info("%s written in %.2f s; totals %s", what, time.monotonic() - started, self.totals)

    @staticmethod
    def _summary(validated: DataFrame) -> list[Row]:
        return (
            validated.groupBy("topic", "partition")
            .agg(
                F.min("offset").alias("first"),
                F.max("offset").alias("last"),
                F.count(F.when(F.col("reason").isNull(), 1)).alias("valid"),
                F.count(F.when(F.col("reason").isNotNull(), 1)).alias("invalid"),
                F.max(F.unix_micros("checked_at")).alias("checked_at"),
            )
            .collect()
        )

    @staticmethod
    def _already_done(book: ledger.Ledger, summary: list[Row]) -> Column | None:
        """Rows of offsets a done batch covered (a checkpoint older than the ledger, or none): a
        condition selecting them, or None when the batch does not overlap the done offsets."""
        overlap = []
        for topic in {r.topic for r in summary}:
            done = book.next_offsets(topic)
            for r in summary:
                if r.topic == topic and r["first"] < done.get(r.partition, 0):
                    overlap.append(
                        (F.col("topic") == topic)
                        & (F.col("partition") == r.partition)
                        & (F.col("offset") < done[r.partition])
                    )
        return reduce(lambda a, b: a | b, overlap) if overlap else None

    def write(self, validated: DataFrame, batch_id: int, entry: ledger.BatchEntry | None = None) -> None:
        """Steps 1-4 for one batch. ``entry`` is given when a begun batch is finished from the ledger."""
        phases = PhaseTimer()
        recovering = entry is not None
        self.ambiguous = []
        cached = [validated.persist()]
        validated = cached[0]
        try:
            summary = self._summary(validated)
            book = self.book()
            if not summary:
                if entry is not None:  # a begun batch whose records are gone (retention): nothing to do
                    log.warning("batch %s: its records are no longer in Kafka; marked done", entry.key)
                    book.finish(entry, {})
                return
            if entry is None:
                ranges = [ledger.OffsetRange(r.topic, r.partition, r["first"], r["last"]) for r in summary]
                checked_at = max(r.checked_at for r in summary)
                entry = book.begin(ranges, batch_id, checked_at, self.buckets(validated.sparkSession))
            if entry.done:
                book.advance(entry)  # in case a crash came between the done mark and the advance
                log.info("batch %d (%s) was written before a restart: skipped", batch_id, entry.key)
                return
            faults.hit("batch_begun")
            # A begun batch finished from the ledger covers exactly its own offsets: nothing to skip.
            done_before = None if recovering else self._already_done(book, summary)
            if done_before is not None:
                log.warning("batch %s overlaps offsets a done batch wrote: those rows are skipped", entry.key)
                validated = validated.where(~done_before).persist()
                cached.append(validated)
                summary = self._summary(validated)
            phases.lap("ledger")
            valid = sum(r.valid for r in summary)
            invalid = sum(r.invalid for r in summary)
            counts = self._store_and_publish(validated, book, entry, valid, invalid, phases)
            book.finish(entry, counts)
            faults.hit("done")
            phases.lap("done")
            for name, value in counts.items():
                self.totals[name] += value
            self.totals["batches"] += 1
            self.batches_since_prune += 1
            if self.batches_since_prune >= 100:
                self.batches_since_prune = 0
                log.info("ledger: %d old entries pruned", book.prune())
            log.info("batch %d done: counts %s; phases: %s", batch_id, json.dumps(counts), phases)
            if self.ambiguous:
                # The ids a crash left ambiguous (published even if another batch had stored them).
                log.info("batch %d ambiguous ids: %s", batch_id, json.dumps(sorted(self.ambiguous)))
        finally:
            for frame in cached:
                frame.unpersist()

    def _store_and_publish(
        self,
        validated: DataFrame,
        book: ledger.Ledger,
        entry: ledger.BatchEntry,
        valid: int,
        invalid: int,
        phases: PhaseTimer,
    ) -> dict[str, int]:
        documents = spark_rules.first_copies(
            spark_rules.clean_documents(validated).repartition(entry.buckets, "MeasurementID")
        ).persist()  # read by the insert and by the publish
        try:
            results: list[BucketResult] = []
            if valid:
                rows = documents.drop("topic", "partition", "offset").withColumn(
                    "TimeStamp", F.unix_millis("TimeStamp")
                )
                results = rows.rdd.mapPartitionsWithIndex(insert_bucket(self.settings_json, entry.key)).collect()
            faults.hit("stored")
            phases.lap("store")
            self.ambiguous = [i for r in results for i in r.ambiguous]
            foreign = {i for r in results for i in r.foreign}
            rejected = {i: error for r in results for i, error in r.rejected}
            own = sum(r.rows for r in results) - len(foreign) - len(rejected)
            already = self._published_before(validated, entry) if entry.publishing_at is not None else None
            entry = book.publishing(entry)
            published = self._publish(validated, documents, entry.key, invalid, own, foreign, rejected, already)
            faults.hit("published")
            phases.lap("kafka")
        finally:
            documents.unpersist()
        stored = sum(r.inserted for r in results)
        return {
            "valid": valid,
            "invalid": invalid,
            "stored": stored,
            "already_stored": len(foreign),
            "rejected": len(rejected),
            "published": published,
            "ambiguous": sum(len(r.ambiguous) for r in results),
        }

    def _published_before(self, validated: DataFrame, entry: ledger.BatchEntry) -> Published:
        """What an earlier attempt's Kafka write delivered: read back from both output topics, from a
        minute before it started, the messages with this batch's header (only after a failure)."""
        assert entry.publishing_at is not None
        records = (
            validated.sparkSession.read.format("kafka")
            .options(**self.kafka_options)
            .option("subscribe", f"{self.settings.clean_topic},{self.settings.invalid_topic}")
            .option("startingTimestamp", str(max(0, entry.publishing_at - 60_000)))
            .option("startingOffsetsByTimestampStrategy", "latest")
            .option("includeHeaders", "true")
            .load()
            .where(F.exists("headers", lambda h: (h["key"] == "batch") & (h["value"] == F.lit(entry.key.encode()))))
        )
        value = F.col("value").cast("string")
        rows = records.select(
            "topic",
            F.get_json_object(value, "$.MeasurementID").cast("long").alias("id"),
            F.get_json_object(value, "$.Source.topic").alias("source_topic"),
            F.get_json_object(value, "$.Source.partition").cast("int").alias("source_partition"),
            F.get_json_object(value, "$.Source.offset").cast("long").alias("source_offset"),
        ).collect()
        published = Published(
            clean={r.id for r in rows if r.topic == self.settings.clean_topic},
            letters={
                (r.source_topic, r.source_partition, r.source_offset)
                for r in rows
                if r.topic == self.settings.invalid_topic
            },
        )
        log.info(
            "batch %s: its earlier Kafka write delivered %d clean messages and %d dead letters; not sent again",
            entry.key, len(published.clean), len(published.letters),
        )  # fmt: skip
        return published

    def _publish(
        self,
        validated: DataFrame,
        documents: DataFrame,
        key: str,
        invalid: int,
        own_count: int,
        foreign: set[int],
        rejected: dict[int, str],
        already: Published | None,
    ) -> int:
        """One Kafka write: dead letters and the batch's own clean readings, routed by a ``topic`` column
        and marked with the batch key in a ``batch`` header."""
        spark = validated.sparkSession
        letters = []
        if invalid:
            letters.append(spark_rules.dead_letters(validated))
        if rejected:
            refused = spark.createDataFrame(sorted(rejected.items()), "_id long, error string")
            letters.append(spark_rules.store_rejections(documents.join(F.broadcast(refused), "_id"), STORE_REJECTED))
        skip = foreign | set(rejected) | (already.clean if already else set())
        outputs = [frame.withColumn("topic", F.lit(self.settings.invalid_topic)) for frame in letters]
        if already and already.letters:
            sent = spark.createDataFrame(sorted(already.letters), "t string, p int, o long")
            source = F.col("source")
            outputs = [
                frame.join(
                    F.broadcast(sent),
                    (source["topic"] == F.col("t"))
                    & (source["partition"] == F.col("p"))
                    & (source["offset"] == F.col("o")),
                    "left_anti",
                )
                for frame in outputs
            ]
        if own_count:
            own = documents
            if skip:
                known = spark.createDataFrame([(i,) for i in sorted(skip)], "_id long")
                own = documents.join(F.broadcast(known), "_id", "left_anti")
            outputs.append(spark_rules.clean_messages(own).withColumn("topic", F.lit(self.settings.clean_topic)))
        if outputs:
            header = F.array(F.struct(F.lit("batch").alias("key"), F.lit(key.encode()).alias("value")))
            combined = outputs[0].select("key", "value", "topic")
            for output in outputs[1:]:
                combined = combined.unionByName(output.select("key", "value", "topic"))
            combined.withColumn("headers", header).write.format("kafka").options(**self.kafka_options).save()
        return own_count
