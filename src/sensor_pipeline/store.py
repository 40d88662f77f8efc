"""The document store (MongoDB locally, Amazon DocumentDB on AWS): connection, indexes, idempotent writes.

Documents are keyed by ``_id`` = MeasurementID, so every write is idempotent: a reading delivered twice
is stored once and the first copy wins. Writes are unordered ``insert_many`` batches; duplicate-key
errors (code 11000) count as "already stored", a transient error fails the batch so that it is
retried, and a document the server refuses for itself is returned so the job can dead-letter
it. This is an upsert with ``$setOnInsert`` semantics that every MongoDB-wire server runs fast
(upserts are slow or broken on FerretDB, and DocumentDB bills per I/O).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, MongoClient, ReadPreference
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

from sensor_pipeline.aws import aws_client
from sensor_pipeline.config import Settings

DUPLICATE_KEY = 11000
#: Write error codes that say "the server could not write now", not "this document cannot be
#: written": the batch is retried rather than the document dead-lettered. InternalError (1) is
#: included because FerretDB reports a busy or locked SQLite database with it.
TRANSIENT_CODES = frozenset({1, 6, 7, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})


class StoreError(RuntimeError):
    """A write failed for a reason other than a duplicate key; the batch must be retried."""


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    #: ``_id`` of every document that was already stored (rejected with E11000).
    duplicate_ids: tuple[Any, ...] = ()
    #: ``(_id, error)`` of every document the server refused for a reason of its own (not transient).
    rejected: tuple[tuple[Any, str], ...] = ()

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


_shared: dict[str, MongoClient[dict[str, Any]]] = {}
_shared_lock = threading.Lock()


def _shared_key(settings: Settings) -> str:
    return "|".join((settings.mongo_uri, settings.mongo_secret_arn, settings.mongo_tls_ca_file))


def shared_client(settings: Settings) -> MongoClient[dict[str, Any]]:
    """One client per process and store, reused by every batch and partition (Spark reuses its
    Python workers): a connection pool and, on AWS, one Secrets Manager call instead of one per task."""
    key = _shared_key(settings)
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            client = _shared[key] = connect(settings)
        return client


def drop_shared_client(settings: Settings) -> None:
    """Forget the shared client after a failure: the next one reconnects (and rereads a rotated secret)."""
    with _shared_lock:
        client = _shared.pop(_shared_key(settings), None)
    if client is not None:
        client.close()


def readings(client: MongoClient[dict[str, Any]], settings: Settings) -> Collection[dict[str, Any]]:
    return client[settings.mongo_database][settings.mongo_collection]


def durable_readings(client: MongoClient[dict[str, Any]], settings: Settings) -> Collection[dict[str, Any]]:
    """The readings for the job's writes: acknowledged by a majority before anything is published."""
    database = client.get_database(
        settings.mongo_database, read_preference=ReadPreference.PRIMARY, write_concern=WriteConcern("majority")
    )
    return database[settings.mongo_collection]


def ensure_indexes(collection: Collection[dict[str, Any]]) -> None:
    """Idempotent: a unique index on MeasurementID and one on (Beach, TimeStamp) for queries."""
    collection.create_index([("MeasurementID", ASCENDING)], unique=True, name="MeasurementID_unique")
    collection.create_index([("Beach", ASCENDING), ("TimeStamp", ASCENDING)], name="Beach_TimeStamp")


def insert_new(collection: Collection[dict[str, Any]], documents: Iterable[dict[str, Any]]) -> WriteResult:
    """Insert documents unordered; duplicates (E11000) count as already stored, documents the server
    refuses (non-transient write errors) are returned as rejected, anything else raises."""
    batch = list(documents)
    if not batch:
        return WriteResult(0)
    try:
        result = collection.insert_many(batch, ordered=False)
        return WriteResult(len(result.inserted_ids))
    except BulkWriteError as error:
        details = error.details
        errors = details.get("writeErrors", [])
        transient = [e for e in errors if e.get("code") in TRANSIENT_CODES]
        if transient or details.get("writeConcernErrors"):
            first = (transient or details["writeConcernErrors"])[0]
            raise StoreError(
                f"insert failed ({len(transient)} transient errors), first: {first.get('errmsg')}"
            ) from error
        duplicate_ids = tuple(batch[e["index"]]["_id"] for e in errors if e.get("code") == DUPLICATE_KEY)
        rejected = tuple(
            (batch[e["index"]]["_id"], f"{e.get('code')}: {e.get('errmsg')}")
            for e in errors
            if e.get("code") != DUPLICATE_KEY
        )
        inserted = details.get("nInserted", len(batch) - len(errors))
        return WriteResult(inserted, duplicate_ids, rejected)
