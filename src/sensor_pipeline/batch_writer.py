"""The job's core: the ``foreachBatch`` writer that stores and publishes each micro-batch in one pass.

Per batch (the job hands over raw lines: ``spark_rules.raw_lines``):

1. **Ledger entry** (:mod:`sensor_pipeline.ledger`), keyed by the batch's source offset ranges, read
   from the batch's plan (no Spark job). It fixes the time the rules judge ``future_timestamp``
   against, so a replay gives the same verdicts. A done entry means a replay: nothing is written.
2. **One Spark job**, one task per source partition: Kafka read -> rules (Spark built-ins) -> each
   row's output message built by Spark (``spark_rules.routed``) -> ``mapInArrow`` into this
   module's :func:`store_and_route` -> the Kafka writer. In each task, on Arrow batches (no per-row
   Spark ``Row``): valid readings are inserted unordered in chunks (the first copy of each
   MeasurementID; how far a chunk reaches is recorded as pending in the task's ledger bucket before
   its insert, and the chunk settled, with its foreign ids, after), and once every row of the task
   is stored, its records (clean messages and dead letters) are handed to the Kafka writer: a task
   retried after a store error has sent nothing. Readings another batch had stored are not
   published again; documents the store
   refuses for what they hold become ``store_rejected`` dead letters with the server's error.
   Every message carries the batch key in a ``batch`` header.
3. **Done**: the entry is marked done and the next offsets advanced; the offsets are committed to the
   job's Kafka consumer group, a report for lag monitoring (:mod:`sensor_pipeline.progress`).

Nothing a record holds can fail a batch: the rules bound every field to what both the store and
Kafka take (parity-tested); a document the store refuses for what it holds becomes a dead letter,
and one it refuses otherwise, in ``SP_REFUSALS_BEFORE_DEAD_LETTER`` attempts of its batch while the
store takes the ledger's writes, too. A batch that fails for another reason (store or broker down,
a lost executor) is retried with backoff and a log line per attempt, for up to
``SP_BATCH_RETRY_SECONDS``; then the job fails and its supervisor (supervisord, EMR's retry
policy) restarts it from the checkpoint.

Guarantees (proved by ``tests/chaos``; README "Guarantees"): the store holds each valid reading
exactly once. CleanSensorData and InvalidSensorData carry each reading at least once, and exactly
once except in two windows. A: a crash or task retry after a batch's Kafka write began and before
its done mark: a replay reads back the messages with the batch's header (from a minute before the
write began, so clocks must agree within a minute) and sends only the rest; a retried task re-sends
what its failed attempt had handed to Kafka. B: a reading stored by another batch (or another
partition's task of the same batch), in a chunk a crashed attempt was inserting, is published again
(the duplicate answer cannot be told from the crashed attempt's own insert). Every message carries
its MeasurementID (clean) or source offset (dead letters), so consumers can deduplicate.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import TYPE_CHECKING, Any

from pyspark import AccumulatorParam, TaskContext
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sensor_pipeline import faults, ledger, schema, spark_rules, store
from sensor_pipeline.config import Settings
from sensor_pipeline.progress import ProgressCommitter

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("sensor_pipeline.job")

STORE_REJECTED = "store_rejected"
#: The streaming query's name (the Spark UI's, and how the writer finds its batch's timestamp).
QUERY_NAME = "structure_validate_store"
#: What :func:`store_and_route` hands to the Kafka writer: the output topic and record, and for a
#: reading the store refused, the error and what its dead letter needs (built by Spark after).
ROUTED_FIELDS = (
    ("topic", "string"),
    ("key", "string"),
    ("value", "string"),
    ("error", "string"),
    ("raw", "string"),
    ("source_topic", "string"),
    ("source_partition", "int"),
    ("source_offset", "long"),
)
ROUTED_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in ROUTED_FIELDS)
COUNTS = ("valid", "invalid", "stored", "already_stored", "rejected", "published")
#: Width of the buckets of the store-delay histogram the job logs per batch (reading timestamp ->
#: the store acknowledged its insert): what ``make bench`` reports as "stored" and an operator's
#: metric, without a query (FerretDB answers any query, even on ``_id``, with a collection scan).
DELAY_BUCKET_MS = 10
#: How often the driver prunes the ledger of batches done longer than its retention ago.
PRUNE_SECONDS = 30.0


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


class Tally(AccumulatorParam[dict[str, Any]]):
    """Counts and ambiguous ids from the tasks (Spark applies a successful task's update once)."""

    def zero(self, value: dict[str, Any]) -> dict[str, Any]:
        return {}

    def addInPlace(self, value1: dict[str, Any], value2: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        for name, value in value2.items():
            if isinstance(value, dict):  # a histogram: counts per bucket
                merged = value1.setdefault(name, {})
                for bucket, count in value.items():
                    merged[bucket] = merged.get(bucket, 0) + count
            else:
                value1[name] = value1.get(name, [] if isinstance(value, list) else 0) + value
        return value1


@dataclass(frozen=True)
class Published:
    """What an earlier attempt of a batch delivered to Kafka before it failed."""

    clean: frozenset[int] = frozenset()
    #: Dead letters by their source (topic, partition, offset).
    letters: frozenset[tuple[str, int, int]] = frozenset()


_settings_cache: dict[str, Settings] = {}


def _settings(settings_json: str) -> Settings:
    if settings_json not in _settings_cache:
        _settings_cache[settings_json] = Settings.model_validate_json(settings_json)
    return _settings_cache[settings_json]


class RouteTask:
    """One task of step 2: a source partition's rows (in offset order), as Arrow batches of
    :func:`spark_rules.routed` columns, in; the Kafka records of ``ROUTED_SCHEMA`` out."""

    def __init__(self, settings: Settings, key: str, already: Published) -> None:
        import pyarrow as pa

        self.pa = pa
        self.settings = settings
        self.key = key
        self.already = already
        self.client = store.shared_client(settings)
        self.readings = store.durable_readings(self.client, settings)
        self.bucket: ledger.Bucket | None = None
        # A Spark retry of this task (its failed attempt may have handed records to Kafka). A retry
        # of the whole batch reads back what was delivered instead.
        self.retried = (context := TaskContext.get()) is not None and context.attemptNumber() > 0
        self.seen: set[int] = set()  # ids handled: a later copy in the same partition is dropped
        self.counts: dict[str, Any] = dict.fromkeys(COUNTS, 0) | {"ambiguous": [], "resent": [], "store_delay": {}}
        arrow = {"string": pa.string(), "int": pa.int32(), "long": pa.int64()}
        self.schema = pa.schema([(name, arrow[kind]) for name, kind in ROUTED_FIELDS])

    def output(self, batch: pa.RecordBatch, rows: list[int], topic: str, errors: list[str] | None = None) -> Any:
        """The rows' records for the Kafka writer; with ``errors``, store rejections (Spark builds
        their dead letters)."""
        pa = self.pa
        picked = batch.take(pa.array(rows, pa.int64()))
        none = pa.nulls(len(rows), pa.string())
        columns = [
            pa.array([topic] * len(rows), pa.string()),
            picked.column("key"),
            picked.column("value") if errors is None else none,
            none if errors is None else pa.array(errors, pa.string()),
            none if errors is None else picked.column("RawData"),
            picked.column("topic"),
            picked.column("partition"),
            picked.column("offset"),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def not_sent(self, batch: pa.RecordBatch, rows: list[int]) -> list[int]:
        """Rows whose dead letter an earlier attempt's Kafka write did not deliver."""
        if not self.already.letters:
            return rows
        sources = [batch.column(c).to_pylist() for c in ("topic", "partition", "offset")]
        return [r for r in rows if (sources[0][r], sources[1][r], sources[2][r]) not in self.already.letters]

    def run(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Every row stored first, then every record handed to the Kafka writer: a task that fails
        while storing (and is retried) has sent nothing yet."""
        records: list[pa.RecordBatch] = []
        for batch in batches:
            records.extend(self.route(batch))
        yield from records

    def route(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc

        valid = pc.is_null(batch.column("reason")).to_pylist()
        invalid_rows = self.not_sent(batch, [i for i, ok in enumerate(valid) if not ok])
        self.counts["invalid"] += valid.count(False)
        if invalid_rows:
            yield self.output(batch, invalid_rows, self.settings.invalid_topic)
        valid_rows = [i for i, ok in enumerate(valid) if ok]
        self.counts["valid"] += len(valid_rows)
        if not valid_rows:
            return
        columns = {k: batch.column(k).to_pylist() for k in (*schema.DOCUMENT_KEYS, "offset")}
        if self.bucket is None:
            # Spark's Kafka source gives each topic-partition its own task (no minPartitions):
            # the bucket is the partition, the same in every attempt and replay. Loading it records
            # the first chunk's intent too (one ledger write instead of two).
            partition = int(batch.column("partition")[0].as_py())
            first_chunk = valid_rows[: self.settings.insert_chunk]
            self.bucket = ledger.Bucket.load(
                ledger.collection(self.client, self.settings), self.key, partition, columns["offset"][first_chunk[-1]]
            )
        for start in range(0, len(valid_rows), self.settings.insert_chunk):
            yield from self.chunk(batch, columns, valid_rows[start : start + self.settings.insert_chunk])

    def chunk(self, batch: pa.RecordBatch, columns: dict[str, list[Any]], rows: list[int]) -> Iterator[Any]:
        """Store a chunk's new readings; its records (own clean messages, store rejections) for the
        Kafka writer, which :meth:`run` hands over once every chunk is stored."""
        bucket = self.bucket
        assert bucket is not None
        counts = self.counts
        publish: list[int] = []  # rows whose clean message this batch publishes
        resent: list[int] = []  # of which settled by a failed attempt of this task, which may have sent them
        rejected: dict[int, str] = {}  # row -> error
        documents: dict[int, int] = {}  # id -> row, to insert
        for row in rows:
            measurement_id, offset = columns["_id"][row], columns["offset"][row]
            if measurement_id in self.seen:
                continue
            self.seen.add(measurement_id)
            refusals, error = bucket.refusals.get(measurement_id, (0, ""))
            if refusals >= self.settings.refusals_before_dead_letter:  # checked first: it may sit among settled rows
                rejected[row] = f"refused in {refusals} attempts, last: {error}"
            elif offset <= bucket.settled_through:  # an earlier attempt settled it
                if measurement_id in bucket.foreign:
                    counts["already_stored"] += 1
                elif measurement_id in bucket.rejected:
                    rejected[row] = bucket.rejected[measurement_id]
                else:
                    publish.append(row)
                    if self.retried:
                        resent.append(row)
            else:
                documents[measurement_id] = row
        if documents:
            publish.extend(self.store(bucket, columns, documents, rejected))
        counts["rejected"] += len(rejected)
        counts["published"] += len(publish)
        publish = sorted(r for r in publish if columns["_id"][r] not in self.already.clean)
        # An earlier attempt may have handed these to the Kafka writer before it failed (window A).
        counts["resent"].extend(columns["_id"][r] for r in resent if columns["_id"][r] not in self.already.clean)
        if publish:
            yield self.output(batch, publish, self.settings.clean_topic)
        letters = self.not_sent(batch, sorted(rejected))
        if letters:
            yield self.output(batch, letters, self.settings.invalid_topic, [rejected[r] for r in letters])

    def store(
        self, bucket: ledger.Bucket, columns: dict[str, list[Any]], documents: dict[int, int], rejected: dict[int, str]
    ) -> list[int]:
        """Intend, insert, settle one chunk; the rows that are this batch's own. Adds the rows the
        store refused for what they hold to ``rejected``."""
        ids = list(documents)
        bucket.intend(max(columns["offset"][documents[i]] for i in ids))
        faults.hit("chunk_intended")
        docs = [schema.to_document({k: columns[k][documents[i]] for k in schema.DOCUMENT_KEYS}) for i in ids]
        try:
            outcome = store.insert_new(self.readings, docs)
        except store.StoreError as error:
            bucket.count_refusals({int(i): e for i, e in error.failed.items()})
            raise
        faults.hit("chunk_inserted")
        acknowledged = time.time() * 1000
        refused = {int(i): e for i, e in outcome.rejected}
        duplicates = {int(i) for i in outcome.duplicate_ids}
        # Rows dead-lettered without an insert (refused too often) are settled as rejected, too.
        chunk_rejected = {columns["_id"][r]: e for r, e in rejected.items()} | refused
        chunk = [(i, columns["offset"][documents[i]]) for i in ids]
        ambiguous = bucket.settle(chunk, duplicates, chunk_rejected)
        faults.hit("stored")
        counts = self.counts
        counts["stored"] += outcome.inserted
        counts["ambiguous"].extend(sorted(ambiguous))
        counts["already_stored"] += len(duplicates - ambiguous)
        delays: dict[int, int] = counts["store_delay"]
        for measurement_id in set(ids) - duplicates - set(refused):
            # reading timestamp -> stored, in DELAY_BUCKET_MS buckets
            stamp = columns["TimeStamp"][documents[measurement_id]]
            bucket_ms = max(0, int(acknowledged - stamp) // DELAY_BUCKET_MS)
            delays[bucket_ms] = delays.get(bucket_ms, 0) + 1
        rejected.update((documents[i], e) for i, e in refused.items())
        return [documents[i] for i in ids if i not in refused and i not in bucket.foreign]


def store_and_route(settings_json: str, key: str, already: Published, tally: Any) -> Any:
    """The executor side of step 2, for ``mapInArrow``: one :class:`RouteTask` per task; its counts
    reach the driver through ``tally`` when the task succeeds."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        settings = _settings(settings_json)
        try:
            task = RouteTask(settings, key, already)
            yield from task.run(batches)
            tally.add(task.counts)
        except Exception:
            store.drop_shared_client(settings)
            raise

    return run


def planned_ranges(records: DataFrame) -> list[ledger.OffsetRange] | None:
    """The source offset ranges of a micro-batch's DataFrame, read from its plan (no Spark job): the
    Kafka source's input partitions in the RDD lineage of ``foreachBatch``'s frame. Internal Spark
    classes (KafkaBatchInputPartition, Spark 4.0 as on EMR 8.0): None when they are not there, and
    the caller falls back to a summary job."""
    try:
        leaves = records._jdf.queryExecution().logical().collectLeaves()
        ranges = []
        for i in range(leaves.size()):
            rdd = leaves.apply(i).rdd()
            while rdd.dependencies().size() > 0:
                rdd = rdd.dependencies().head().rdd()
            for partition in rdd.partitions():
                inputs = partition.inputPartitions()
                for j in range(inputs.size()):
                    offsets = inputs.apply(j).offsetRange()
                    if offsets.untilOffset() > offsets.fromOffset():
                        topic_partition = offsets.topicPartition()
                        ranges.append(
                            ledger.OffsetRange(
                                str(topic_partition.topic()),
                                int(topic_partition.partition()),
                                int(offsets.fromOffset()),
                                int(offsets.untilOffset()) - 1,
                            )
                        )
    except Exception as error:
        log.warning("cannot read the batch's offsets from its plan (%s): counting them instead", error)
        return None
    partitions = [(r.topic, r.partition) for r in ranges]
    if len(set(partitions)) != len(partitions):
        # A bucket is a source partition, the same rows in the same order in every attempt.
        raise ValueError("a source partition is split across tasks (Kafka minPartitions/maxRecordsPerPartition?)")
    return ranges


def summary_ranges(records: DataFrame) -> list[ledger.OffsetRange]:
    """The offset ranges of the records a batch holds (a Spark job: only when the plan has none)."""
    rows = records.groupBy("topic", "partition").agg(F.min("offset").alias("a"), F.max("offset").alias("b")).collect()
    return [ledger.OffsetRange(r.topic, r.partition, r.a, r.b) for r in rows]


class BatchWriter:
    """Callable for ``writeStream.foreachBatch``; see the module docstring for the guarantees."""

    def __init__(self, settings: Settings, session: SparkSession | None = None) -> None:
        self.settings = settings
        #: The query's session (foreachBatch hands a clone that does not list the query).
        self.session = session
        self.settings_json = settings.model_dump_json()
        self.kafka_options = settings.spark_kafka_options()
        self.totals = dict.fromkeys(("batches", *COUNTS, "ambiguous"), 0)
        self.pruned_at = time.monotonic()
        self.ambiguous: list[int] = []
        self.resent: list[int] = []
        self.store_delay: dict[int, int] = {}
        self.progress = ProgressCommitter(session, settings) if session is not None else None

    def book(self) -> ledger.Ledger:
        """The ledger, through this process's shared client."""
        client = store.shared_client(self.settings)
        retention = timedelta(seconds=self.settings.ledger_retention_seconds)
        return ledger.Ledger(ledger.collection(client, self.settings), retention)

    def report(self, entry: ledger.BatchEntry) -> None:
        """Commit a done batch's offsets to the job's consumer group (asynchronous; never fails the
        batch). The committed offsets start from the ledger's, so they never move back."""
        if self.progress is None:
            return
        if not self.progress.seeded:
            self.progress.seed(self.settings.raw_topic, self.book().next_offsets(self.settings.raw_topic))
        self.progress.commit(entry.ranges)

    def close(self) -> None:
        """Release the progress client (the job is ending)."""
        if self.progress is not None:
            self.progress.close()

    def __call__(self, routed: DataFrame, batch_id: int) -> None:
        """Write one micro-batch (``foreachBatch``), retried with backoff when it fails."""
        self.with_retries(f"batch {batch_id}", lambda: self.write(routed, batch_id), routed.sparkSession)

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
    def _already_done(entry: ledger.BatchEntry) -> Column | None:
        """Rows of offsets a done batch covered when this one began (a checkpoint older than the
        ledger, or none): a condition selecting them, or None."""
        overlap = [
            (F.col("topic") == topic) & (F.col("partition") == partition) & (F.col("offset") < below)
            for topic, partition, below in entry.skip
        ]
        return reduce(lambda a, b: a | b, overlap) if overlap else None

    def batch_time(self, batch_id: int) -> int:
        """Epoch microseconds of the running micro-batch: the time ``current_timestamp()`` (the rules'
        "processing time") holds in it, the same on a replay from the checkpoint. Read from the
        query's current execution (internal to Spark 4.0); the driver's clock if it cannot be."""
        try:
            assert self.session is not None
            query = next(q for q in self.session.streams.active if q.name == QUERY_NAME)
            execution = query._jsq.streamingQuery().lastExecution()
            if int(execution.currentBatchId()) == batch_id:
                return int(execution.offsetSeqMetadata().batchTimestampMs()) * 1000
            log.warning("batch %d: the query runs batch %s: using the clock", batch_id, execution.currentBatchId())
        except Exception as error:
            log.warning("batch %d: cannot read its timestamp from the query (%s): using the clock", batch_id, error)
        return int(datetime.now(UTC).timestamp() * 1_000_000)

    def write(self, routed: DataFrame, batch_id: int, entry: ledger.BatchEntry | None = None) -> None:
        """Steps 1-3 for one batch of :func:`spark_rules.routed` rows. ``entry`` is given when a begun
        batch is finished from the ledger (``routed`` then holds exactly its ranges, judged against
        its recorded time)."""
        phases = PhaseTimer()
        self.ambiguous = []
        self.resent = []
        self.store_delay = {}
        book = self.book()
        if entry is None:
            ranges = planned_ranges(routed)
            if ranges is None:
                ranges = summary_ranges(routed)
            if not ranges:
                return
            entry = book.begin(ranges, batch_id, self.batch_time(batch_id), max(r.partition for r in ranges) + 1)
        if entry.done:
            book.advance(entry)  # in case a crash came between the done mark and the advance
            self.report(entry)
            log.info("batch %d (%s) was written before a restart: skipped", batch_id, entry.key)
            return
        faults.hit("batch_begun")
        # The same rows are skipped in every attempt, a recovery from the ledger included.
        done_before = self._already_done(entry)
        if done_before is not None:
            log.warning("batch %s overlaps offsets a done batch wrote: those rows are skipped", entry.key)
            routed = routed.where(~done_before)
        retry = entry.publishing_at is not None and not entry.fresh  # an earlier attempt's write began
        already = self._published_before(routed.sparkSession, entry) if retry else None
        entry = book.publishing(entry)
        phases.lap("ledger")
        counts = self._store_and_publish(routed, entry, already or Published())
        faults.hit("published")
        phases.lap("store+kafka")
        book.finish(entry, counts)
        faults.hit("done")
        self.report(entry)
        phases.lap("done")
        for name, value in counts.items():
            self.totals[name] += value
        self.totals["batches"] += 1
        if time.monotonic() - self.pruned_at >= PRUNE_SECONDS:
            self.pruned_at = time.monotonic()
            log.info("ledger: %d old entries pruned", book.prune())
        log.info("batch %d done: counts %s; phases: %s", batch_id, json.dumps(counts), phases)
        if self.store_delay:
            log.info(
                "batch %d store delay (%d ms buckets): %s", batch_id, DELAY_BUCKET_MS, json.dumps(self.store_delay)
            )
        if self.ambiguous:
            # The ids a crash left ambiguous (published even if another batch had stored them).
            log.info("batch %d ambiguous ids: %s", batch_id, json.dumps(sorted(self.ambiguous)))
        if self.resent:
            # Published again by a retried task: its failed attempt may have sent them (window A).
            log.info("batch %d resent ids: %s", batch_id, json.dumps(self.resent))

    def _store_and_publish(self, routed: DataFrame, entry: ledger.BatchEntry, already: Published) -> dict[str, int]:
        """Step 2: one Spark job, store then publish per chunk in each task (see the module docstring)."""
        spark = routed.sparkSession
        tally = spark.sparkContext.accumulator({}, Tally())
        outputs = routed.mapInArrow(store_and_route(self.settings_json, entry.key, already, tally), ROUTED_SCHEMA)
        error = F.col("error")
        letter = spark_rules.dead_letter_value(
            F.col("raw"),
            F.lit(STORE_REJECTED),
            spark_rules.store_rejection_detail(error),
            spark_rules.source_struct(F.col("source_topic"), F.col("source_partition"), F.col("source_offset")),
        )
        header = F.array(F.struct(F.lit("batch").alias("key"), F.lit(entry.key.encode()).alias("value")))
        records = outputs.select(
            "topic",
            "key",
            F.when(error.isNull(), F.col("value")).otherwise(letter).alias("value"),
            header.alias("headers"),
        )
        records.write.format("kafka").options(**self.kafka_options).save()
        totals: dict[str, Any] = tally.value
        self.ambiguous = list(totals.get("ambiguous", []))
        self.resent = sorted(totals.get("resent", []))
        self.store_delay = {int(b): int(n) for b, n in sorted(totals.get("store_delay", {}).items())}
        counts = {name: int(totals.get(name, 0)) for name in COUNTS}
        counts["ambiguous"] = len(self.ambiguous)
        return counts

    def _published_before(self, spark: SparkSession, entry: ledger.BatchEntry) -> Published:
        """What an earlier attempt's Kafka write delivered: read back from both output topics, from a
        minute before it started, the messages with this batch's header (only after a failure)."""
        assert entry.publishing_at is not None
        records = (
            spark.read.format("kafka")
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
            clean=frozenset(r.id for r in rows if r.topic == self.settings.clean_topic),
            letters=frozenset(
                (r.source_topic, r.source_partition, r.source_offset)
                for r in rows
                if r.topic == self.settings.invalid_topic
            ),
        )
        log.info(
            "batch %s: its earlier Kafka write delivered %d clean messages and %d dead letters; not sent again",
            entry.key, len(published.clean), len(published.letters),
        )  # fmt: skip
        return published
