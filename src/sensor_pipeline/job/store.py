"""The document store (MongoDB locally, Amazon DocumentDB on AWS): connection, indexes, idempotent writes.

Documents are keyed by ``_id`` = MeasurementID, so every write is idempotent: a reading delivered twice
is stored once and the first copy wins. Writes are unordered ``insert_many`` batches; duplicate-key
errors (code 11000) count as "already stored"; a document the server refuses for what it holds is
returned so the job can dead-letter it; any other write error is retried, and fails the batch when
the server writes nothing at all (see :func:`insert_new`). This is an upsert with ``$setOnInsert``
semantics that every MongoDB-wire server runs fast
(upserts are slow or broken on FerretDB, and DocumentDB bills per I/O).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, MongoClient, ReadPreference
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from sensor_pipeline.aws import aws_client
from sensor_pipeline.config import Settings

DUPLICATE_KEY = 11000
#: Write errors that say "this document cannot be stored, whatever the server's state": BadValue,
#: TypeMismatch, DollarPrefixedFieldName, DocumentValidationFailure, BSONObjectTooLarge, KeyTooLong.
#: Any other code (disk full, a lock timeout, a stepdown, FerretDB's InternalError for a busy SQLite
#: database) may pass: the document is retried rather than dead-lettered.
DOCUMENT_ERRORS = frozenset({2, 14, 52, 121, 10334, 17280})
#: Attempts (with backoff from 0.5 s) for documents that met another write error while others in
#: the same insert were written; a document still refused after them is dead-lettered.
ATTEMPTS = 4
#: How long a ``w: majority`` write waits for a majority (ms): a replica set that lost its majority then
#: answers with a write concern error, which fails the batch (retried, then the job restarts) instead of
#: blocking it, and a graceful stop, for ever. DocumentDB ignores ``w`` (its writes are always durable).
MAJORITY = WriteConcern("majority", wtimeout=60_000)


class StoreError(RuntimeError):
    """Documents could not be written now: the batch must be retried.

    ``failed`` maps the ``_id`` of each document that was refused to the server's error, so the
    caller can count refusals across attempts (see ``sensor_pipeline.job.writer``); ``partial`` is
    what the call settled for the others (inserted, already stored, rejected for what they hold), so a
    caller that gives up on ``failed`` still knows the rest.
    """

    def __init__(self, message: str, failed: dict[Any, str] | None = None, partial: WriteResult | None = None) -> None:
        super().__init__(message)
        self.failed = failed or {}
        self.partial = partial or WriteResult(0)


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

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(
            self.inserted + other.inserted, self.duplicate_ids + other.duplicate_ids, self.rejected + other.rejected
        )


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
    """The readings for the job's writes and for who stored a document: writes acknowledged by a majority
    before anything is published, reads of what a majority holds (never rolled back).

    On a MongoDB replica set a read at ``local`` could see an older attempt's insert that a failover then
    rolls back (the reading published, not stored): read concern ``majority`` "guarantees that the data
    read has been acknowledged by a majority of the replica set members ... guaranteed to not roll back"
    (https://www.mongodb.com/docs/manual/reference/read-concern-majority/). A duplicate-key answer to a
    ``w: majority`` insert is sent once a majority holds the document it met (a failed or no-op write
    waits for write concern at the primary's latest optime: SERVER-18522), so the read finds it.
    Amazon DocumentDB reads and acknowledged writes are durable whatever is asked ("Data read from an
    Amazon DocumentDB cluster is durable and will not be rolled back"; "An acknowledged write ... is
    durable, and can't be rolled back":
    https://docs.aws.amazon.com/documentdb/latest/developerguide/how-it-works.html) and it takes
    ``readConcern`` (mongo-apis.html: cursor.readConcern, 5.0: Yes); FerretDB ignores it (one server)."""
    database = client.get_database(
        settings.mongo_database,
        read_preference=ReadPreference.PRIMARY,
        write_concern=MAJORITY,
        read_concern=ReadConcern("majority"),
    )
    return database[settings.mongo_collection]


def ensure_indexes(collection: Collection[dict[str, Any]]) -> None:
    """Idempotent: a unique index on MeasurementID and one on (Beach, TimeStamp) for queries."""
    collection.create_index([("MeasurementID", ASCENDING)], unique=True, name="MeasurementID_unique")
    collection.create_index([("Beach", ASCENDING), ("TimeStamp", ASCENDING)], name="Beach_TimeStamp")


def _insert_once(
    collection: Collection[dict[str, Any]], batch: list[dict[str, Any]]
) -> tuple[int, list[Any], list[tuple[dict[str, Any], int, str]]]:
    """One unordered insert: (inserted, duplicate ids, (document, code, message) of other errors)."""
    try:
        return len(collection.insert_many(batch, ordered=False).inserted_ids), [], []
    except BulkWriteError as error:
        details = error.details
        if details.get("writeConcernErrors"):
            concern = details["writeConcernErrors"][0]
            raise StoreError(
                f"the store did not confirm the insert (write concern error {concern.get('code')}: "
                f"{concern.get('errmsg')}); it is retried with its batch"
            ) from error
        errors = details.get("writeErrors", [])
        duplicates = [batch[e["index"]]["_id"] for e in errors if e.get("code") == DUPLICATE_KEY]
        others = [
            (batch[e["index"]], int(e.get("code", 0)), str(e.get("errmsg")))
            for e in errors
            if e.get("code") != DUPLICATE_KEY
        ]
        return int(details.get("nInserted", len(batch) - len(errors))), duplicates, others


def sources(collection: Collection[dict[str, Any]], ids: list[Any], chunk: int = 1000) -> dict[Any, dict[str, Any]]:
    """The ``Source`` (topic, partition, offset of the raw record) of stored documents: who stored each.
    Read only for an insert's duplicate-key answers and the documents it refused, ``chunk`` ids per query,
    from the _id index (on the local FerretDB thanks to ``localstack/ferretdb/``'s patch: without it, each
    query decoded every stored document)."""
    found: dict[Any, dict[str, Any]] = {}
    for start in range(0, len(ids), chunk):
        for document in collection.find({"_id": {"$in": ids[start : start + chunk]}}, {"Source": 1}):
            found[document["_id"]] = document.get("Source") or {}
    return found


def takes_writes(client: MongoClient[dict[str, Any]], settings: Settings) -> bool:
    """Whether the store accepts a write now (a probe document written and removed): a document it keeps
    refusing is then refused for itself, not because the store is down or full."""
    try:
        majority_barrier(client, settings)  # the same probe write: it fails when the store takes none
        return True
    except PyMongoError:
        return False


def majority_barrier(client: MongoClient[dict[str, Any]], settings: Settings) -> None:
    """A ``w: majority`` write (a probe document written and removed): once it is acknowledged, every
    write the primary applied before it is majority-committed, so a ``majority`` read then sees it.
    Called before the lookups that no insert of the same ``_id`` precedes (a duplicate-key answer is
    its own barrier): an older attempt's insert that reached the primary first is then found, on a
    replica set whose secondaries lag too."""
    probes = probe_collection(client, settings)
    probes.delete_one({"_id": probes.insert_one({"at": time.time()}).inserted_id})


def probe_collection(client: MongoClient[dict[str, Any]], settings: Settings) -> Collection[dict[str, Any]]:
    """Where the job writes and removes probe documents: majority writes, bounded like its inserts."""
    return client[settings.mongo_database].get_collection(f"{settings.mongo_collection}_probe", write_concern=MAJORITY)


def insert_new(
    collection: Collection[dict[str, Any]],
    documents: Iterable[dict[str, Any]],
    sleep: Callable[[float], None] = time.sleep,
) -> WriteResult:
    """Insert documents unordered; duplicates (E11000) count as already stored.

    A document refused for what it holds (:data:`DOCUMENT_ERRORS`) is returned as rejected. One that
    meets any other error is tried again, up to :data:`ATTEMPTS` times in this call; still refused,
    it fails the call with :class:`StoreError` (naming it), never becomes a dead letter here: a disk
    full or a stepdown must not cost a reading. Whether a document that keeps failing is poison is
    decided across batch attempts by the caller, which counts refusals only while the store accepts
    its other writes.
    """
    remaining = list(documents)
    inserted, duplicates, rejected = 0, list[Any](), list[tuple[Any, str]]()
    for attempt in range(ATTEMPTS):
        if not remaining:
            break
        written, dups, others = _insert_once(collection, remaining)
        inserted += written
        duplicates += dups
        rejected += [(d["_id"], f"{code}: {message}") for d, code, message in others if code in DOCUMENT_ERRORS]
        retry = [(d, code, message) for d, code, message in others if code not in DOCUMENT_ERRORS]
        everything_failed = not written and not dups and len(retry) == len(remaining)
        if retry and (attempt == ATTEMPTS - 1 or (attempt == 0 and everything_failed)):
            failed = {d["_id"]: f"{code}: {message}" for d, code, message in retry}
            first = next(iter(failed.values()))
            settled = WriteResult(inserted, tuple(duplicates), tuple(rejected))
            raise StoreError(f"the store refused {len(failed)} of {len(remaining)} documents: {first}", failed, settled)
        if retry:
            sleep(0.5 * 2**attempt)
        remaining = [d for d, _, _ in retry]
    return WriteResult(inserted, tuple(duplicates), tuple(rejected))
