"""The Spark job's ``foreachBatch`` writer: dead letters, the document store and the clean topic.

Per micro-batch (Spark replays a batch whose commit was not written before a crash):

1. A *batch ledger* document (``<collection>_batches``, keyed by the checkpoint and batch id) is read
   first. A batch marked ``done`` was fully written before a crash: it is skipped.
2. Valid readings, first copy per MeasurementID, are inserted unordered by the executors; duplicate
   keys (E11000) count as already stored, so the store holds every reading exactly once. The ids
   the store rejected as duplicates (readings stored by earlier batches) are recorded in the ledger
   before anything is published, so a replay publishes exactly what the first attempt did.
3. One Kafka write sends the dead letters to ``InvalidSensorData`` and the batch's new readings to
   ``CleanSensorData``; then the ledger entry is marked ``done``.

No lookup by id is made against the store: FerretDB scans the whole collection for such a filter,
which would make every batch slower as the collection grows (measured: 3.4 s for 600 ids at 50k
documents). The duplicate-key answers of the insert carry the same knowledge for free.

Kafka output is at-least-once in two crash windows, and exactly-once otherwise: a crash between a
batch's Kafka write and its ``done`` mark republishes that batch; a crash in the middle of a batch's
inserts republishes readings of that batch that were already stored by earlier batches (they cannot
be told apart from the batch's own first-attempt inserts). Every message carries its MeasurementID,
so consumers can deduplicate (the dashboard does). The store never holds a reading twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from bson.int64 import Int64
from pymongo import MongoClient
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from sensor_pipeline import spark_rules, store
from sensor_pipeline.config import Settings

log = logging.getLogger("sensor_pipeline.job")

INSERT_CHUNK = 1000


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def to_document(row: Row) -> dict[str, Any]:
    """A Spark row (TimeStamp as epoch milliseconds) as the stored document with the contract's BSON types.

    Ids are wrapped in Int64 so that small values are still stored as BSON long, and the timestamp is
    rebuilt from epoch milliseconds, independent of the executor's local time zone.
    """
    document = row.asDict()
    document["_id"] = Int64(document["_id"])
    document["MeasurementID"] = Int64(document["MeasurementID"])
    document["TimeStamp"] = EPOCH + timedelta(milliseconds=document["TimeStamp"])
    return document


def _insert_partition(settings_json: str) -> Any:
    """An executor-side writer: one client per partition, unordered inserts in chunks.

    Yields one row per partition: (inserted count, ids that were already stored).
    """

    def write(rows: Iterable[Row]) -> Iterator[tuple[int, list[int]]]:
        settings = Settings.model_validate_json(settings_json)
        client = store.connect(settings)
        inserted, duplicates = 0, list[int]()
        remaining = iter(rows)
        try:
            collection = store.readings(client, settings)
            while chunk := [to_document(row) for row in islice(remaining, INSERT_CHUNK)]:
                result = store.insert_new(collection, chunk)
                inserted += result.inserted
                duplicates.extend(int(i) for i in result.duplicate_ids)
            yield inserted, duplicates
        finally:
            client.close()

    return write


class BatchWriter:
    """Callable for ``writeStream.foreachBatch``; see the module docstring for the guarantees."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.settings_json = settings.model_dump_json()
        self.run_key = hashlib.sha1(settings.checkpoint_location.encode()).hexdigest()[:12]
        self.kafka_options = settings.spark_kafka_options()
        self.totals = {
            "batches": 0,
            "valid": 0,
            "invalid": 0,
            "stored": 0,
            "already_stored": 0,
            "published": 0,
        }

    def _ledger(self, client: MongoClient[dict[str, Any]]) -> Any:
        return client[self.settings.mongo_database][f"{self.settings.mongo_collection}_batches"]

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        client = store.connect(self.settings)
        try:
            ledger = self._ledger(client)
            key = f"{self.run_key}:{batch_id}"
            entry = ledger.find_one({"_id": key})
            if entry and entry.get("done"):
                log.info("batch %d already written before a restart: skipped", batch_id)
                return
            validated = spark_rules.validate(
                batch, future_tolerance_seconds=self.settings.future_tolerance_seconds
            ).persist()
            try:
                self._write(validated, batch_id, key, entry, ledger)
            finally:
                validated.unpersist()
        finally:
            client.close()
        log.info("batch %d written in %.2f s; totals %s", batch_id, time.monotonic() - started, self.totals)

    def _write(
        self,
        validated: DataFrame,
        batch_id: int,
        key: str,
        entry: dict[str, Any] | None,
        ledger: Any,
    ) -> None:
        # Three Spark jobs per batch, whatever its size: verdict summary, store insert, one Kafka write.
        phases = PhaseTimer()
        verdicts = validated.select("reason", "MeasurementID").collect()
        invalid = sum(1 for v in verdicts if v["reason"] is not None)
        ids = {v["MeasurementID"] for v in verdicts if v["reason"] is None}
        if entry is None:
            ledger.insert_one({"_id": key, "batch": batch_id, "done": False, "at": datetime.now(UTC)})
        phases.lap("verdicts")

        documents = spark_rules.clean_documents(
            spark_rules.first_copies(validated.where(F.col("reason").isNull()))
        ).persist()  # read by the insert and by the clean-topic write
        try:
            stored, duplicates = self._insert(documents) if ids else (0, set())
            phases.lap("store")
            if entry is None or "existing" not in entry:
                if entry is not None:
                    # The first attempt died while inserting: its new readings now look "already
                    # stored", so nothing can be told apart; publish them all (at-least-once window).
                    duplicates = set()
                ledger.update_one({"_id": key}, {"$set": {"existing": sorted(duplicates)}})
            else:
                duplicates = set(entry["existing"])  # what the first attempt found: publish the same
            published = self._publish(validated, documents, invalid, len(ids), duplicates & ids)
            phases.lap("kafka")
        finally:
            documents.unpersist()
        ledger.update_one({"_id": key}, {"$set": {"done": True, "published": published}})
        log.info("batch %d phases: %s", batch_id, phases)
        for name, value in (
            ("batches", 1),
            ("valid", len(ids)),
            ("invalid", invalid),
            ("stored", stored),
            ("already_stored", len(ids) - stored),
            ("published", published),
        ):
            self.totals[name] += value

    def _insert(self, documents: DataFrame) -> tuple[int, set[int]]:
        """Insert on the executors; returns (inserted, ids that were already stored)."""
        rows = documents.withColumn("TimeStamp", F.unix_millis("TimeStamp"))
        results = rows.rdd.mapPartitions(_insert_partition(self.settings_json)).collect()
        return sum(r[0] for r in results), {i for r in results for i in r[1]}

    def _publish(
        self, validated: DataFrame, documents: DataFrame, invalid: int, valid: int, duplicates: set[int]
    ) -> int:
        """One Kafka write: dead letters and the batch's new clean readings, routed by a `topic` column."""
        new = documents
        if duplicates:
            known = documents.sparkSession.createDataFrame([(i,) for i in sorted(duplicates)], "_id long")
            new = documents.join(F.broadcast(known), "_id", "left_anti")
        published = valid - len(duplicates)
        outputs = []
        if invalid:
            outputs.append(spark_rules.dead_letters(validated).withColumn("topic", F.lit(self.settings.invalid_topic)))
        if published:
            outputs.append(spark_rules.clean_messages(new).withColumn("topic", F.lit(self.settings.clean_topic)))
        if outputs:
            combined = outputs[0] if len(outputs) == 1 else outputs[0].unionByName(outputs[1])
            combined.write.format("kafka").options(**self.kafka_options).save()
        return published
