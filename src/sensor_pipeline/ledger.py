"""The batch ledger: what makes the job's writes exactly-once across task retries, crashes and resets.

It lives next to the readings, in ``<collection>_ledger`` (batches, next offsets) and
``<collection>_ledger_parts`` (insert buckets), and holds three kinds of documents:

``batch:<key>``
    One per micro-batch, keyed by what identifies the batch's *data*: a hash of its source
    topic-partition offset ranges (never Spark's batch id, which restarts at 0 with a new
    checkpoint). It records the ranges, the time the batch was validated against (so a replay gives
    the same verdicts), the number of insert buckets, when its Kafka write started, and ``done``
    once every output is written. A replay of a done batch writes nothing; a replay of a batch whose
    Kafka write started first reads back what that write delivered (every message carries the
    batch key in a ``batch`` header) and publishes only the rest.
``part:<key>:<bucket>``
    One per insert bucket (a source partition of the batch): how far its rows were settled, the
    ids the store already held from other batches (``foreign``) or refused (``rejected``), and how
    far the chunk being inserted reaches (``pending_through``, written before the insert). A retried
    task whose inserts answer "duplicate key" can tell its own earlier inserts from other batches'
    readings.
``next:<topic>``
    The next offset to read per partition, advanced when a batch is done. A job started without a
    checkpoint (deleted, or a new location) starts there instead of losing or redoing data.

Everything is read on the primary and written with majority concerns: a ledger read from a lagging
replica (DocumentDB URIs say ``readPreference=secondaryPreferred``) could miss the write that makes
the difference. Ledger documents are small and looked up by ``_id`` only (FerretDB scans for any
other filter); done batches are pruned after ``retention``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import MongoClient, ReadPreference, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from sensor_pipeline.config import Settings


@dataclass(frozen=True, order=True)
class OffsetRange:
    """The offsets of one source topic-partition in a batch, both ends included."""

    topic: str
    partition: int
    first: int
    last: int


@dataclass(frozen=True)
class BatchEntry:
    key: str
    ranges: tuple[OffsetRange, ...]
    #: Epoch microseconds the batch's rules ran against (``future_timestamp``).
    checked_at: int
    buckets: int
    done: bool
    #: Epoch ms at which an attempt started the batch's Kafka write (None: never started).
    publishing_at: int | None = None
    #: (topic, partition, offset) below which a done batch already wrote the rows, fixed when the
    #: batch began (an old checkpoint replayed over done batches): every attempt skips them.
    skip: tuple[tuple[str, int, int], ...] = ()
    #: Created by this call of :meth:`Ledger.begin` (a first attempt: nothing to read back).
    fresh: bool = field(default=False, compare=False)


def batch_key(ranges: Iterable[OffsetRange]) -> str:
    """A short, stable key for a batch's data: the same offsets give the same key in any run."""
    text = ";".join(f"{r.topic}:{r.partition}:{r.first}-{r.last}" for r in sorted(ranges))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def collection(client: MongoClient[dict[str, Any]], settings: Settings) -> Collection[dict[str, Any]]:
    """The ledger collection, read on the primary and written with majority concerns."""
    database = client.get_database(
        settings.mongo_database,
        read_preference=ReadPreference.PRIMARY,
        read_concern=ReadConcern("majority"),
        write_concern=WriteConcern("majority"),
    )
    return database[f"{settings.mongo_collection}_ledger"]


def parts(ledger: Collection[dict[str, Any]]) -> Collection[dict[str, Any]]:
    """The insert buckets' documents, beside the ledger (same concerns): FerretDB scans a whole
    collection for every lookup, and the buckets are looked up most."""
    return ledger.database[f"{ledger.name}_parts"]


def _entry(document: dict[str, Any]) -> BatchEntry:
    return BatchEntry(
        key=document["_id"].removeprefix("batch:"),
        ranges=tuple(OffsetRange(**r) for r in document["ranges"]),
        checked_at=document["checked_at"],
        buckets=document["buckets"],
        done=document.get("done", False),
        publishing_at=document.get("publishing_at"),
        skip=tuple((str(d["topic"]), int(d["partition"]), int(d["below"])) for d in document.get("skip", [])),
    )


class Ledger:
    """The driver's view of the ledger (the insert buckets use :class:`Bucket` on the executors)."""

    def __init__(self, ledger: Collection[dict[str, Any]], retention: timedelta = timedelta(hours=1)) -> None:
        self.ledger = ledger
        self.retention = retention

    def begin(self, ranges: Sequence[OffsetRange], batch_id: int, checked_at: int, buckets: int) -> BatchEntry:
        """The entry of the batch with these ranges: the existing one (a replay) or a new one, which
        records the rows of offsets done batches already wrote (skipped by every attempt)."""
        key = batch_key(ranges)
        document = self.ledger.find_one({"_id": f"batch:{key}"})
        if document is not None:
            return _entry(document)
        skip = []
        for topic in sorted({r.topic for r in ranges}):
            done = self.next_offsets(topic)
            skip += [
                (topic, r.partition, done[r.partition])
                for r in ranges
                if r.topic == topic and r.first < done.get(r.partition, 0)
            ]
        now = datetime.now(UTC)
        document = {
            "_id": f"batch:{key}",
            "batch": batch_id,
            "ranges": [r.__dict__ for r in sorted(ranges)],
            "checked_at": checked_at,
            "buckets": buckets,
            # Objects, not nested arrays (FerretDB stores no arrays of arrays).
            "skip": [{"topic": t, "partition": p, "below": o} for t, p, o in sorted(skip)],
            "done": False,
            "at": now,
            # The Kafka write follows in the same pass: recorded now, so a retry reads back what it sent.
            "publishing_at": int(now.timestamp() * 1000),
        }
        self.ledger.insert_one(document)
        return replace(_entry(document), fresh=True)

    def publishing(self, entry: BatchEntry) -> BatchEntry:
        """Record that the Kafka write starts now (a replay then looks for what it already wrote)."""
        if entry.publishing_at is not None:
            return entry
        at = int(datetime.now(UTC).timestamp() * 1000)
        self.ledger.update_one({"_id": f"batch:{entry.key}"}, {"$set": {"publishing_at": at}})
        return replace(entry, publishing_at=at)

    def finish(self, entry: BatchEntry, counts: dict[str, int]) -> None:
        """Advance the next offsets, mark the batch done, drop its bucket documents (in this order: a
        done batch has always advanced them)."""
        self.advance(entry)
        self.ledger.update_one(
            {"_id": f"batch:{entry.key}"}, {"$set": {"done": True, "counts": counts, "at": datetime.now(UTC)}}
        )
        # Closed, not deleted: a zombie task of this batch must not start a fresh bucket (pruned later).
        # Emptied: FerretDB answers every lookup with a scan of the collection, whose cost grows with
        # what the documents hold.
        parts(self.ledger).update_many(
            {"_id": {"$in": [f"part:{entry.key}:{b}" for b in range(entry.buckets)]}},
            {
                "$set": {"closed": True, "at": datetime.now(UTC)},
                "$unset": dict.fromkeys(("foreign", "rejected", "refusals", "refused"), ""),
            },
        )

    def advance(self, entry: BatchEntry) -> None:
        """Move the next offsets past the batch's ranges (idempotent: ``$max``)."""
        for topic in {r.topic for r in entry.ranges}:
            advance = {f"next.{r.partition}": r.last + 1 for r in entry.ranges if r.topic == topic}
            self.ledger.update_one({"_id": f"next:{topic}"}, {"$max": advance}, upsert=True)

    def incomplete(self) -> list[BatchEntry]:
        """Batches begun and never finished (a crash; their checkpoint may be gone), oldest offsets first."""
        entries = [_entry(d) for d in self.ledger.find({"done": False, "_id": {"$regex": "^batch:"}})]
        return sorted(entries, key=lambda e: min(e.ranges))

    def get(self, key: str) -> BatchEntry | None:
        document = self.ledger.find_one({"_id": f"batch:{key}"})
        return _entry(document) if document is not None else None

    def next_offsets(self, topic: str) -> dict[int, int]:
        """Partition -> next offset to read, from every batch done so far."""
        document = self.ledger.find_one({"_id": f"next:{topic}"}) or {}
        return {int(p): int(o) for p, o in document.get("next", {}).items()}

    def prune(self) -> int:
        """Delete done batches and closed buckets older than the retention (a closed bucket fences a
        late zombie task until then), and buckets left behind by done batches (a crash between the
        done mark and their closing); an unfinished batch keeps its own."""
        now = datetime.now(UTC)
        cutoff = now - self.retention
        done = self.ledger.delete_many({"done": True, "at": {"$lt": cutoff}}).deleted_count
        buckets = parts(self.ledger)
        closed = buckets.delete_many({"closed": True, "at": {"$lt": cutoff}}).deleted_count
        unfinished = {entry.key for entry in self.incomplete()}
        old = buckets.find({"at": {"$lt": cutoff}}, {"_id": 1})
        orphans = [d["_id"] for d in old if d["_id"].split(":")[1] not in unfinished]
        return done + closed + (buckets.delete_many({"_id": {"$in": orphans}}).deleted_count if orphans else 0)


class Fenced(RuntimeError):
    """A newer attempt of the same bucket has started: this one must stop writing."""


@dataclass
class Bucket:
    """One insert bucket's record of its inserts: one source partition of one batch, whose task
    sees the same rows in the same (offset) order in every attempt (see the module docstring).

    What it holds stays small whatever the batch's size: offsets, not ids. Rows up to
    ``settled_through`` were settled by an attempt: their readings are the batch's own, except the
    ``foreign`` ids (another batch had stored them) and the ``rejected`` ones (dead-lettered). Rows
    up to ``pending_through`` beyond that were in a chunk an earlier attempt was inserting when it
    stopped: a duplicate answer for one of them is ambiguous (published, never lost).

    Two attempts of one bucket can run at once (speculation, a zombie task on a lost executor, a
    batch retried while a cancelled task still runs). Each attempt takes a new ``epoch`` when it
    loads the bucket, and every later ledger write is conditional on it: an older attempt finds
    itself fenced at its next intent, before its next insert, and fails. A newer attempt therefore
    sees every chunk an older one inserted as pending (ambiguous, published), never as foreign.
    This needs an atomic ``findAndModify`` and conditional update, as MongoDB and DocumentDB have;
    FerretDB 1.x emulates them (read, then write), so on the local FerretDB store two attempts
    running at the same instant are not fenced. A finished batch closes its buckets: a zombie that
    arrives after the end is fenced too.
    """

    ledger: Collection[dict[str, Any]]
    key: str
    index: int
    epoch: int
    settled_through: int
    #: The highest offset an earlier attempt intended to insert (loaded; this attempt's own intents
    #: are written for the next one).
    pending_through: int
    foreign: set[int]
    rejected: dict[int, str]
    #: Id -> (times the store refused it while it took this bucket's ledger writes, last error).
    refusals: dict[int, tuple[int, str]]

    #: The highest offset this attempt has recorded as pending (its own intents).
    intended: int = -1

    @classmethod
    def load(cls, ledger: Collection[dict[str, Any]], key: str, index: int, through: int = -1) -> Bucket:
        """Start an attempt: take the next epoch, and with ``through`` >= 0, record the first chunk's
        intent (its last offset) in the same write. Reads the state earlier attempts left."""
        change: dict[str, Any] = {"$inc": {"epoch": 1}, "$set": {"at": datetime.now(UTC)}}
        if through >= 0:
            change["$max"] = {"pending_through": through}
        try:
            before = parts(ledger).find_one_and_update(
                {"_id": f"part:{key}:{index}", "closed": {"$ne": True}},
                change,
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:  # the upsert met the closed document of a finished batch
            raise Fenced(f"bucket {index} of batch {key}: the batch is finished") from None
        document = before or {}  # None: this attempt created it
        return cls(
            parts(ledger),
            key,
            index,
            int(document.get("epoch", 0)) + 1,
            int(document.get("settled_through", -1)),
            int(document.get("pending_through", -1)),
            # Plain ints: the store hands back BSON Int64.
            {int(i) for i in document.get("foreign", [])},
            {int(i): str(e) for i, e in document.get("rejected", {}).items()},
            {int(i): (int(n), document.get("refused", {}).get(i, "")) for i, n in document.get("refusals", {}).items()},
            through,
        )

    @property
    def _id(self) -> str:
        return f"part:{self.key}:{self.index}"

    def _update(self, change: dict[str, Any]) -> None:
        # Conditional on this attempt's epoch, and on the batch not being finished (closed).
        if (
            self.ledger.update_one(
                {"_id": self._id, "epoch": self.epoch, "closed": {"$ne": True}}, change
            ).matched_count
            != 1
        ):
            raise Fenced(f"bucket {self.index} of batch {self.key}: a newer attempt took over")

    def count_refusals(self, failed: dict[int, str]) -> None:
        """The store refused these documents (not for what they hold, as far as it said) while this
        bucket's ledger write below succeeds: a store that is down cannot raise the count."""
        self._update(
            {
                "$inc": {f"refusals.{i}": 1 for i in failed},
                "$set": {f"refused.{i}": error[:500] for i, error in failed.items()},
            }
        )

    def intend(self, through: int) -> None:
        """Before inserting a chunk whose last row is at offset ``through``: a retry then knows which
        duplicate answers may be this attempt's own inserts (no write if this attempt recorded it)."""
        if through > self.intended:
            self._update({"$max": {"pending_through": through}, "$set": {"at": datetime.now(UTC)}})
            self.intended = through

    def settle(self, chunk: list[tuple[int, int]], duplicates: set[int], rejected: dict[int, str]) -> set[int]:
        """After a chunk's insert (``(id, offset)`` in offset order): record it as settled, with its
        foreign and rejected ids; returns the ambiguous ids.

        A duplicate answer for a row an earlier attempt was inserting counts as this batch's own
        (published): it was either that attempt's insert or another batch's reading, and only
        publishing it again cannot lose it.
        """
        ambiguous = {i for i, offset in chunk if i in duplicates and offset <= self.pending_through}
        foreign = duplicates - ambiguous
        through = max(self.settled_through, *(offset for _, offset in chunk))
        self._update(
            {
                "$max": {"settled_through": through},
                "$push": {"foreign": {"$each": sorted(foreign)}},
                **({"$set": {f"rejected.{i}": e[:500] for i, e in rejected.items()}} if rejected else {}),
            }
        )
        self.settled_through = through
        self.foreign |= foreign
        self.rejected.update(rejected)
        return ambiguous
