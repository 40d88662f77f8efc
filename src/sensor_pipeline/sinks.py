"""The Spark job's ``foreachBatch`` writer: dead letters, the document store and the clean topic.

Exactly-once by construction, per micro-batch (Spark replays a batch whose commit was not written):

1. A *batch ledger* document (``<collection>_batches``, keyed by the checkpoint and batch id) is read
   first. A batch marked ``done`` was fully written before a crash: it is skipped.
2. Otherwise, on the batch's first attempt, the ids of its valid readings that the store already
   holds (duplicates of earlier batches) are looked up by ``_id`` and recorded in the ledger. A
   replay reads that record instead of looking again, so "new in this batch" means the same thing
   on every attempt, even after some of the batch's inserts landed.
3. Invalid lines go to ``InvalidSensorData``; valid ones, first copy per MeasurementID, are inserted
   unordered by the executors (duplicate keys count as stored: idempotent); the new ones (not
   already stored) are published to ``CleanSensorData``; then the ledger is marked ``done``.

A crash between a Kafka write and the ``done`` mark replays that batch's Kafka writes: Kafka output
is at-least-once in that window, and every message carries its MeasurementID so consumers can
deduplicate (the dashboard does). The store never holds a reading twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bson.int64 import Int64
from pymongo import MongoClient
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from sensor_pipeline import spark_rules, store
from sensor_pipeline.config import Settings

log = logging.getLogger("sensor_pipeline.job")

INSERT_CHUNK = 1000
LOOKUP_CHUNK = 10_000


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
    """An executor-side writer: one client per partition, unordered inserts in chunks."""

    def write(rows: Iterable[Row]) -> Iterator[tuple[int, int]]:
        settings = Settings.model_validate_json(settings_json)
        client = store.connect(settings)
        inserted = duplicates = 0
        try:
            collection = store.readings(client, settings)
            chunk: list[dict[str, Any]] = []
            for row in rows:
                chunk.append(to_document(row))
                if len(chunk) >= INSERT_CHUNK:
                    result = store.insert_new(collection, chunk)
                    inserted, duplicates = inserted + result.inserted, duplicates + result.duplicates
                    chunk = []
            result = store.insert_new(collection, chunk)
            yield inserted + result.inserted, duplicates + result.duplicates
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

    def _already_stored(self, collection: Any, ids: list[int]) -> list[int]:
        found: list[int] = []
        for start in range(0, len(ids), LOOKUP_CHUNK):
            chunk = ids[start : start + LOOKUP_CHUNK]
            found.extend(int(d["_id"]) for d in collection.find({"_id": {"$in": chunk}}, {"_id": 1}))
        return found

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
                self._write(validated, batch_id, key, entry, ledger, client)
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
        client: MongoClient[dict[str, Any]],
    ) -> None:
        # Three Spark jobs per batch, whatever its size: verdict summary, store insert, one Kafka write.
        phases = PhaseTimer()
        verdicts = validated.select("reason", "MeasurementID").collect()
        invalid = sum(1 for v in verdicts if v["reason"] is not None)
        ids = sorted({v["MeasurementID"] for v in verdicts if v["reason"] is None})
        if entry is None:
            existing = self._already_stored(store.readings(client, self.settings), ids)
            ledger.insert_one(
                {"_id": key, "batch": batch_id, "existing": existing, "done": False, "at": datetime.now(UTC)}
            )
        else:
            existing = [int(i) for i in entry.get("existing", [])]

        phases.lap("verdicts")
        documents = spark_rules.clean_documents(
            spark_rules.first_copies(validated.where(F.col("reason").isNull()))
        ).persist()  # read by the insert and by the clean-topic write
        try:
            self._store_and_publish(validated, documents, ids, existing, invalid, phases)
        finally:
            documents.unpersist()
        ledger.update_one({"_id": key}, {"$set": {"done": True, "published": len(ids) - len(existing)}})
        log.info("batch %d phases: %s", batch_id, phases)

    def _store_and_publish(
        self,
        validated: DataFrame,
        documents: DataFrame,
        ids: list[int],
        existing: list[int],
        invalid: int,
        phases: PhaseTimer,
    ) -> None:
        stored = already = 0
        if ids:
            rows = documents.withColumn("TimeStamp", F.unix_millis("TimeStamp"))
            counts = rows.rdd.mapPartitions(_insert_partition(self.settings_json)).collect()
            stored, already = sum(c[0] for c in counts), sum(c[1] for c in counts)

        phases.lap("store")
        new = documents
        if existing:
            known = documents.sparkSession.createDataFrame([(i,) for i in existing], "_id long")
            new = documents.join(F.broadcast(known), "_id", "left_anti")
        published = len(ids) - len(existing)
        outputs = []
        if invalid:
            outputs.append(spark_rules.dead_letters(validated).withColumn("topic", F.lit(self.settings.invalid_topic)))
        if published:
            outputs.append(spark_rules.clean_messages(new).withColumn("topic", F.lit(self.settings.clean_topic)))
        if outputs:
            combined = outputs[0] if len(outputs) == 1 else outputs[0].unionByName(outputs[1])
            # One write for both topics: the Kafka sink routes each row by its `topic` column.
            combined.write.format("kafka").options(**self.kafka_options).save()

        phases.lap("kafka")
        for name, value in (
            ("batches", 1),
            ("valid", len(ids)),
            ("invalid", invalid),
            ("stored", stored),
            ("already_stored", already),
            ("published", published),
        ):
            self.totals[name] += value
