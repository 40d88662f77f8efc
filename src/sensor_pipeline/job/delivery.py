"""Exactly-once delivery of one source partition's slice of a micro-batch: store, publish, commit.

Kafka's own pattern (consume-transform-produce with transactions), per source partition, in the
Spark task that holds the slice (one task per Kafka partition, rows in offset order):

1. **fence**: the task attempt's transactional producer (``transactional.id`` = job group + raw
   topic + partition) is initialised with ``init_transactions``, which fences every older producer
   of that id (a zombie task, a second driver, the old build during a redeploy) and completes or
   aborts a transaction one of them had open;
2. **skip what is done**: the job group's committed offset for the partition, read as a
   ``read_committed`` consumer reads it (stable: pending transactional offsets resolved). Rows below
   it were delivered by an earlier attempt and are skipped. A slice that starts *above* it would
   mean a gap no attempt delivered (the partition split over two tasks): refused, unless retention
   deleted the records in between;
3. **store**: the valid readings, unordered insert keyed by ``_id`` = MeasurementID, each with its
   ``Source`` (topic, partition, offset). A duplicate-key answer is this slice's own earlier attempt
   when the stored document's Source is this row's (its clean message is published now), another
   record's otherwise (a producer redelivery or a hostile duplicate id: not published again). A
   document the store refused is looked up the same way before it becomes a dead letter, and so is a
   row only the clock rejected (``future_timestamp``): when an earlier attempt at the slice, judging by
   another clock, stored its reading, its clean message is published instead of its dead letter. These
   lookups read what a majority of the store holds (``store.durable_readings``);
4. **publish and commit, atomically**: clean messages and dead letters, and the slice's next offset
   for the job group (``send_offsets_to_transaction``), in one transaction. A ``read_committed``
   consumer sees all of it or none of it, once.

Each task attempt has its own producer; one that fails aborts what it can and is never retried: the
task fails, Spark (or the driver's batch retry) runs it again, and the new attempt's producer fences it.
What this guarantees to users, and the windows that remain: docs/design.md, "Guarantees".
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sensor_pipeline.config import Settings
from sensor_pipeline.contract import rules, schema
from sensor_pipeline.job import faults, python_worker, store

if TYPE_CHECKING:
    import pyarrow as pa

COUNTS = (
    "valid", "invalid", "stored", "already_stored", "rejected", "published", "kept_valid", "skipped",
    "lost_to_retention",
)  # fmt: skip
COUNTS_SCHEMA = "counts string"
log = logging.getLogger("sensor_pipeline.job.delivery")
STORE_REJECTED = "store_rejected"
#: Width of the buckets of the store-delay histogram (reading timestamp -> the store's acknowledgement).
DELAY_BUCKET_MS = 10
TIMEOUT = 30.0

_offsets: dict[str, Any] = {}  # job group -> read_committed consumer (committed offsets, group metadata)


def _producer(settings: Settings, transactional_id: str) -> Any:
    """A new transactional producer for this task attempt. ``init_transactions`` fences every older
    producer of the id and completes or aborts the transaction one of them had open; then the group's
    offsets are stable for this attempt.

    Not kept across tasks: Spark gives a partition to any idle Python worker, so a kept producer is
    often fenced by another worker's and its slice runs twice; tried, it was slower (``make bench``
    clean p50 1.39 s against 1.18 s at 100 readings/s)."""
    from confluent_kafka import KafkaError, KafkaException, Producer

    producer = Producer(
        settings.librdkafka_options()
        | {
            "transactional.id": transactional_id,
            "transaction.timeout.ms": settings.transaction_timeout_seconds * 1000,
            "linger.ms": 5,
            # The transaction coordinator's connection opens after FindCoordinator answers, and waits
            # out this backoff first (100 ms by default): 10 ms took init_transactions from a median
            # of 57 ms to 16 ms locally. Failed connections still back off exponentially (to 10 s).
            "reconnect.backoff.ms": 10,
        }
    )
    # librdkafka (2.10 and later) drops its bootstrap brokers once metadata names the real ones, and
    # finds the transaction coordinator only over a connected broker; with none connected yet it retries
    # after a fixed 500 ms (rdkafka_txnmgr.c): 12 of 30 inits locally, most of a small batch's time.
    # Metadata answered by a broker it learned (an id >= 0; a bootstrap one is -1) means one is
    # connected: then 0 of 72, max 13 ms (one local broker).
    deadline = time.monotonic() + TIMEOUT
    pause = 0.0  # the second request waits for a connection to a learned broker: usually enough
    while producer.list_topics(settings.clean_topic, timeout=max(0.1, deadline - time.monotonic())).orig_broker_id < 0:
        if time.monotonic() + pause > deadline:
            raise KafkaException(
                KafkaError(
                    KafkaError._TIMED_OUT,
                    f"no broker that {settings.kafka_bootstrap} lists answered within {TIMEOUT:.0f} s",
                )
            )
        time.sleep(pause)  # not a busy loop when brokers are unreachable and librdkafka re-bootstraps
        pause = min(max(pause * 2, 0.01), 0.5)
    producer.init_transactions(TIMEOUT)
    return producer


def group_consumer(settings: Settings, cached: bool = True) -> Any:
    """The job group's ``read_committed`` consumer (never joined): committed offsets and the group
    metadata a transaction commits offsets with. Cached per process (a Python worker's tasks), unless
    ``cached`` is false: then the caller closes it."""
    from confluent_kafka import Consumer

    consumer = _offsets.get(settings.job_group) if cached else None
    if consumer is None:
        consumer = Consumer(
            settings.librdkafka_options()
            | {"group.id": settings.job_group, "isolation.level": "read_committed", "enable.auto.commit": False}
        )
        if cached:
            _offsets[settings.job_group] = consumer
    return consumer


def close_group_clients() -> None:
    """Close the cached group consumers (a Python worker keeps its own for its life; a test process
    closes them before the broker it talks to stops)."""
    while _offsets:
        _offsets.popitem()[1].close()


def committed(settings: Settings, topic: str, partition: int) -> int | None:
    """The group's stable committed offset of the partition (None: nothing committed)."""
    from confluent_kafka import TopicPartition

    (position,) = committed_positions(settings, [TopicPartition(topic, partition)])
    return int(position.offset) if position.offset >= 0 else None


def committed_positions(settings: Settings, partitions: list[Any], consumer: Any = None) -> list[Any]:
    """The group's stable committed positions of ``TopicPartition``s (offset < 0: nothing committed), as
    a ``read_committed`` consumer reads them: offsets a transaction has pending are waited for. An error
    for a partition (authorization, an unknown partition) is raised, never read as "nothing".
    ``consumer``: a consumer of the group the caller closes (default: the process's cached one)."""
    from confluent_kafka import KafkaError, KafkaException

    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            positions = (consumer or group_consumer(settings)).committed(partitions, timeout=TIMEOUT)
            failed = [p for p in positions if p.error is not None]
            if failed:
                raise KafkaException(failed[0].error)
            return list(positions)
        except KafkaException as error:
            # The group's coordinator moves or loads (a broker restart, a fresh __consumer_offsets):
            # librdkafka reports it rather than retrying; the answer comes once it is back.
            code = error.args[0].code() if error.args and isinstance(error.args[0], KafkaError) else None
            moves = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                     KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError._TIMED_OUT)  # fmt: skip
            if code not in moves or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def log_start(settings: Settings, topic: str, partition: int) -> int:
    """The partition's first retained offset."""
    from confluent_kafka import TopicPartition

    low, _high = group_consumer(settings).get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT)
    return int(low)


def data_between(settings: Settings, topic: str, partition: int, low: int, high: int) -> bool:
    """Whether the partition holds a record at an offset in [low, high), as the job's Spark source reads
    it (``read_uncommitted``: aborted records too); offsets that only transaction markers hold do not
    count. Read only when a slice starts above the group's offset, which is rare."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    consumer = Consumer(
        settings.librdkafka_options()
        | {
            "group.id": settings.job_group,  # assigned, never joined, never committed
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            "enable.partition.eof": True,
            # ``low`` deleted by retention meanwhile: an error (the batch is retried and counts the loss),
            # not a silent jump to the end that would read as "no record between".
            "auto.offset.reset": "error",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, low)])
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                # confluent-kafka hands a client's general errors (a broker disconnect) to its error
                # callback, not to poll: what arrives here is the partition's (authorization, an
                # unknown partition, _AUTO_OFFSET_RESET): raised, and the batch is retried.
                if error.code() == KafkaError._PARTITION_EOF:
                    return False
                raise KafkaException(error)
            return int(message.offset()) < high
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{topic}[{partition}]: no record from {low}"))
    finally:
        consumer.close()


def deliver(settings_json: str, dead_letter_refused: bool) -> Callable[[Iterable[pa.RecordBatch]], Iterator[Any]]:
    """The task of one slice, for ``mapInArrow`` over ``transforms.routed`` rows; yields its counts."""

    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[Any]:
        import pyarrow as pa

        python_worker.prepare()
        settings = Settings.model_validate_json(settings_json)
        rows = [r for b in batches for r in b.to_pylist()]
        if not rows:
            return
        if len({(r["topic"], r["partition"]) for r in rows}) > 1:
            raise RuntimeError("a task holds rows of several Kafka partitions: one transactional.id cannot fence them")
        producer = _producer(settings, settings.transactional_id(rows[0]["partition"]))
        try:
            counts = Slice(settings, rows, dead_letter_refused).deliver(producer)
        except BaseException:
            with contextlib.suppress(Exception):  # fenced or fatal: nothing left to abort
                producer.abort_transaction(5)
            store.drop_shared_client(settings)
            raise
        yield pa.RecordBatch.from_pydict({"counts": [json.dumps(counts)]})

    return run


class Slice:
    """One source partition's rows of a batch (dicts of ``transforms.routed`` columns, offset order)."""

    def __init__(self, settings: Settings, rows: list[dict[str, Any]], dead_letter_refused: bool) -> None:
        self.settings, self.rows, self.dead_letter_refused = settings, rows, dead_letter_refused
        self.topic, self.partition = str(rows[0]["topic"]), int(rows[0]["partition"])
        self.counts: dict[str, Any] = dict.fromkeys(COUNTS, 0) | {"store_delay": {}, "store_ids": []}

    def deliver(self, producer: Any) -> dict[str, Any]:
        from confluent_kafka import TopicPartition

        done_below = committed(self.settings, self.topic, self.partition)
        first = int(self.rows[0]["offset"])
        if done_below is not None and first > done_below:
            start = log_start(self.settings, self.topic, self.partition)
            # Offsets between may hold no record at all: a transaction's commit or abort marker (a
            # transactional producer wrote to the raw topic) takes an offset that no consumer reads.
            if start < first and data_between(self.settings, self.topic, self.partition, max(start, done_below), first):
                # Records between, not deleted by retention: another task holds them.
                raise RuntimeError(
                    f"{self.topic}[{self.partition}]: the slice starts at {first}, the job's group has "
                    f"delivered up to {done_below}: a Kafka partition split over Spark tasks (minPartitions, "
                    "maxRecordsPerPartition) is not supported; if the group lags the checkpoint instead (an "
                    "upgrade from the ledger build that skipped its reset-progress step), see docs/design.md's "
                    "upgrade note: a reset now would deliver again what this build has committed"
                )
            if start > done_below:
                # The group lagged the checkpoint and retention deleted the records between: they may never
                # have been delivered. Counted (the batch's log line) and logged, never skipped silently.
                deleted = min(start, first) - done_below
                self.counts["lost_to_retention"] = deleted
                log.warning(
                    "%s[%d]: offsets %d-%d (%d records, or transaction markers) were deleted by retention before "
                    "the job's group committed them; they may never have been delivered",
                    self.topic, self.partition, done_below, done_below + deleted - 1, deleted,
                )  # fmt: skip
        todo = [r for r in self.rows if done_below is None or r["offset"] >= done_below]
        self.counts["skipped"] = len(self.rows) - len(todo)
        if not todo:
            return self.counts
        valid = [r for r in todo if r["reason"] is None]
        self.counts["valid"], self.counts["invalid"] = len(valid), len(todo) - len(valid)
        clean, rejected = self.insert(valid)
        kept, settled = self.stored_earlier([r for r in todo if r["reason"] == rules.CLOCK_CHECK])
        faults.hit("stored")
        letters = [(r["key"], r["value"]) for r in todo if r["reason"] is not None and r["offset"] not in settled]
        letters += [(r["key"], self.rejection(r, error)) for r, error in rejected]
        records = [(self.settings.invalid_topic, k, v) for k, v in letters]
        # In offset order, so that a beach's readings reach CleanSensorData in the order they arrived.
        published = sorted([*((r, r["value"]) for r in clean), *((r, r["clock_value"]) for r in kept.values())],
                           key=lambda pair: int(pair[0]["offset"]))  # fmt: skip
        records += [(self.settings.clean_topic, r["key"], value) for r, value in published]
        producer.begin_transaction()
        for i, (topic, key, value) in enumerate(records):
            if i == len(records) // 2:
                if faults.armed():
                    producer.flush(TIMEOUT)  # the fault strikes with some sends delivered, uncommitted
                faults.hit("publishing")
            self._produce(producer, topic, key, value)
        next_offset = [TopicPartition(self.topic, self.partition, int(todo[-1]["offset"]) + 1)]
        group = group_consumer(self.settings).consumer_group_metadata()
        producer.send_offsets_to_transaction(next_offset, group, TIMEOUT)
        producer.commit_transaction(TIMEOUT)
        faults.hit("committed")
        self.counts["published"] = len(published)
        self.counts["kept_valid"] = len(kept)
        self.counts["already_stored"] += len(settled) - len(kept)
        self.counts["rejected"] = len(rejected)
        return self.counts

    @staticmethod
    def _produce(producer: Any, topic: str, key: str | None, value: str) -> None:
        while True:
            try:
                producer.produce(topic, value=value.encode(), key=key.encode() if key is not None else None)
                return
            except BufferError:  # the local queue is full: wait for deliveries, never drop
                producer.poll(0.1)

    def source(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": int(row["offset"])}

    def stored_by(self, stored: dict[str, Any] | None, row: dict[str, Any]) -> bool:
        """Whether a stored document's ``Source`` is this row's raw record (other keys it may hold ignored)."""
        mine = self.source(row)
        return stored is not None and {key: stored.get(key) for key in mine} == mine

    def stored_earlier(self, clocked: list[dict[str, Any]]) -> tuple[dict[int, dict[str, Any]], set[int]]:
        """Rows this attempt rejected by the clock alone (:data:`rules.CLOCK_CHECK`) whose reading an earlier
        attempt at the slice, judging by another clock (a second driver, a host whose clock differs),
        stored: (the rows whose own raw record it stored, by offset: their clean record is published
        instead of the dead letter; the offsets of every such row, with the copies of the same line that
        it stored from another of the slice's records: already stored, neither published nor
        dead-lettered). One outcome per reading, the first attempt's. One read, for slices with such rows.
        """
        # A later check may fail too (its clean record then lacks what that check rejects: an id, a
        # number); no attempt stored such a row, whatever its clock. Only a row with an id is asked about.
        ids = {int(r["offset"]): json.loads(r["clock_value"]).get("MeasurementID") for r in clocked}
        asked = [r for r in clocked if isinstance(ids[int(r["offset"])], int)]
        if not asked:
            return {}, set()
        client = store.shared_client(self.settings)
        store.majority_barrier(client, self.settings)
        readings = store.durable_readings(client, self.settings)
        owners = store.sources(readings, list({ids[int(r["offset"])] for r in asked}), self.settings.insert_chunk)
        kept = {int(r["offset"]): r for r in asked if self.stored_by(owners.get(ids[int(r["offset"])]), r)}
        # A resent copy of a kept row's line (same clean record: same line): the earlier attempt judged it
        # a duplicate of the stored reading. A different line with that id keeps this attempt's verdict.
        lines = {r["clock_value"] for r in kept.values()}
        copies = {int(r["offset"]) for r in asked if r["clock_value"] in lines}
        return kept, copies

    def insert(self, valid: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
        """Insert the slice's readings; (rows to publish as clean, (row, error) the store refused)."""
        copies: dict[Any, list[dict[str, Any]]] = {}
        for row in valid:
            copies.setdefault(row["_id"], []).append(row)
        first = {i: rows[0] for i, rows in copies.items()}  # a later copy is the same reading, again
        self.counts["already_stored"] += len(valid) - len(first)
        client = store.shared_client(self.settings)
        readings = store.durable_readings(client, self.settings)
        documents = [schema.to_document(row) | {"Source": self.source(row)} for row in first.values()]
        refused: dict[Any, str] = {}
        duplicates: set[Any] = set()
        for start in range(0, len(documents), self.settings.insert_chunk):
            chunk = documents[start : start + self.settings.insert_chunk]
            try:
                outcome = store.insert_new(readings, chunk)
            except store.StoreError as error:
                # Refused for another reason than what it holds: the batch is retried; after
                # SP_REFUSALS_BEFORE_DEAD_LETTER batch attempts, and while the store takes other writes,
                # the document is dead-lettered (no single record may stop the pipeline). What the
                # insert settled for the chunk's other documents still counts.
                if not (self.dead_letter_refused and error.failed and store.takes_writes(client, self.settings)):
                    raise
                # Each refused document is tried once more on its own first: a chunk refused whole in a
                # busy moment must not become dead letters together. Those refused again are.
                outcome = error.partial
                for document in (d for d in chunk if d["_id"] in error.failed):
                    try:
                        outcome += store.insert_new(readings, [document])
                    except store.StoreError as again:
                        if not again.failed:  # not the document: the store (a write concern error)
                            raise
                        refused |= again.failed
            self._delays(outcome, chunk, time.time() * 1000, set(refused))
            refused |= dict(outcome.rejected)
            duplicates.update(outcome.duplicate_ids)
            self.counts["stored"] += outcome.inserted
        # Who stored the duplicates, and whether a document the store refused is stored after all: an
        # earlier attempt at this slice, from any of the slice's copies of the id (own: that copy's clean
        # message is published now; an earlier attempt may have judged the first copy by an earlier clock
        # and stored a later one), or another record with the same id (already stored: neither
        # published nor dead-lettered).
        refused_ids = set(refused)
        if refused_ids:
            store.majority_barrier(client, self.settings)
        asked = list(duplicates | refused_ids)
        owners = store.sources(readings, asked, self.settings.insert_chunk) if asked else {}
        unseen = duplicates - set(owners)
        if unseen:  # the key met a document a majority does not hold: who stored it is not settled yet
            raise store.StoreError(
                f"{len(unseen)} documents answered as duplicates are not in the store's majority-committed "
                "data (a write a failover may still roll back); the batch is retried"
            )
        own = {i: r for i in asked for r in copies[i] if self.stored_by(owners.get(i), r)}
        elsewhere = {i for i in refused_ids - set(own) if i in owners}
        refused = {i: error for i, error in refused.items() if i not in own and i not in elsewhere}
        self.counts["already_stored"] += len(duplicates - set(own)) + len(elsewhere)
        publish = [
            own.get(i, r) for i, r in first.items() if i in own or (i not in duplicates and i not in refused_ids)
        ]
        return publish, [(first[i], error) for i, error in refused.items()]

    def _delays(
        self, outcome: store.WriteResult, chunk: list[dict[str, Any]], acknowledged: float, refused: set[Any]
    ) -> None:
        """Reading timestamp -> stored, for the documents this insert stored (``make bench``'s "stored")."""
        histogram: dict[int, int] = self.counts["store_delay"]
        skip = set(outcome.duplicate_ids) | {i for i, _ in outcome.rejected} | refused
        stored = [document for document in chunk if document["_id"] not in skip]
        for document in stored:
            bucket = max(0, int(acknowledged - int(document["TimeStamp"])) // DELAY_BUCKET_MS)
            histogram[bucket] = histogram.get(bucket, 0) + 1
        # The lowest and highest id stored: whose readings the histogram holds (the bench's phases).
        ids = [*self.counts["store_ids"], *(int(document["_id"]) for document in stored)]
        self.counts["store_ids"] = [min(ids), max(ids)] if ids else []

    def rejection(self, row: dict[str, Any], error: str) -> str:
        """The ``store_rejected`` dead letter of a reading the store refused (InvalidSensorData's shape)."""
        letter = {
            "RawData": str(row["RawData"])[: rules.RAW_DATA_QUOTE],
            "Reason": STORE_REJECTED,
            "Detail": f"the store refused the reading: {rules.quote(error, 500)}",
            "Source": self.source(row),
            "RejectedAt": schema.format_timestamp(datetime.now(UTC)),
        }
        return json.dumps(letter, separators=(",", ":"), ensure_ascii=False)
