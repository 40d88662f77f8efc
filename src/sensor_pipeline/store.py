"""The document store (MongoDB locally, Amazon DocumentDB on AWS): connection, indexes, idempotent writes.

Documents are keyed by ``_id`` = MeasurementID, so every write is idempotent: a reading delivered twice
is stored once and the first copy wins. Writes are unordered ``insert_many`` batches; duplicate-key
errors (code 11000) count as "already stored", any other error fails the batch so that Spark retries
it. This is an upsert with ``$setOnInsert`` semantics that every MongoDB-wire server runs fast
(upserts are slow or broken on FerretDB, and DocumentDB bills per I/O).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from sensor_pipeline.aws import aws_client
from sensor_pipeline.config import Settings

DUPLICATE_KEY = 11000


class StoreError(RuntimeError):
    """A write failed for a reason other than a duplicate key; the batch must be retried."""


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    #: ``_id`` of every document that was already stored (rejected with E11000).
    duplicate_ids: tuple[Any, ...] = ()

    @property
    def duplicates(self) -> int:
        return len(self.duplicate_ids)


def _secret_credentials(settings: Settings) -> tuple[str, str]:
    """Username and password from the DocumentDB-managed secret (JSON with ``username``/``password``)."""
    client = aws_client(settings, "secretsmanager")
    secret = json.loads(client.get_secret_value(SecretId=settings.mongo_secret_arn)["SecretString"])
    return secret["username"], secret["password"]


def connect(settings: Settings, **options: Any) -> MongoClient[dict[str, Any]]:
    """A client for the configured store.

    On AWS, ``SP_MONGO_URI`` holds the DocumentDB address and TLS options only; the credentials are read
    from the secret named by ``SP_MONGO_SECRET_ARN`` when the client is made, never passed by value.
    """
    if settings.mongo_secret_arn:
        options["username"], options["password"] = _secret_credentials(settings)
    if settings.mongo_tls_ca_file:
        options.setdefault("tlsCAFile", settings.mongo_tls_ca_file)
    options.setdefault("serverSelectionTimeoutMS", 10_000)
    return MongoClient(settings.mongo_uri, tz_aware=True, **options)


def readings(client: MongoClient[dict[str, Any]], settings: Settings) -> Collection[dict[str, Any]]:
    return client[settings.mongo_database][settings.mongo_collection]


def ensure_indexes(collection: Collection[dict[str, Any]]) -> None:
    """Idempotent: a unique index on MeasurementID and one on (Beach, TimeStamp) for queries."""
    collection.create_index([("MeasurementID", ASCENDING)], unique=True, name="MeasurementID_unique")
    collection.create_index([("Beach", ASCENDING), ("TimeStamp", ASCENDING)], name="Beach_TimeStamp")


def insert_new(collection: Collection[dict[str, Any]], documents: Iterable[dict[str, Any]]) -> WriteResult:
    """Insert documents unordered; duplicates (E11000) count as already stored, anything else raises."""
    batch = list(documents)
    if not batch:
        return WriteResult(0)
    try:
        result = collection.insert_many(batch, ordered=False)
        return WriteResult(len(result.inserted_ids))
    except BulkWriteError as error:
        details = error.details
        others = [e for e in details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
        if others or details.get("writeConcernErrors"):
            first = (others or details["writeConcernErrors"])[0]
            raise StoreError(f"insert failed ({len(others)} errors), first: {first.get('errmsg')}") from error
        duplicate_ids = tuple(batch[e["index"]]["_id"] for e in details.get("writeErrors", []))
        return WriteResult(details.get("nInserted", len(batch) - len(duplicate_ids)), duplicate_ids)
