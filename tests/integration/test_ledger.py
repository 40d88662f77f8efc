"""The batch ledger on the real MongoDB-wire server: what a retried or replayed batch knows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from bson.int64 import Int64
from pymongo.collection import Collection

from sensor_pipeline import ledger, store
from sensor_pipeline.config import Settings

pytestmark = pytest.mark.integration
BIG = 2**40 + 9  # stored as a BSON long, read back as Int64
RANGES = [ledger.OffsetRange("raw", 1, 10, 19), ledger.OffsetRange("raw", 0, 0, 9)]


@pytest.fixture
def collections(settings: Settings) -> Iterator[tuple[Collection[dict[str, Any]], Collection[dict[str, Any]]]]:
    client = store.connect(settings)
    yield ledger.collection(client, settings), store.durable_readings(client, settings)
    client.close()


def insert(readings: Collection[dict[str, Any]], ids: list[int]) -> store.WriteResult:
    return store.insert_new(readings, [{"_id": Int64(i), "MeasurementID": Int64(i)} for i in ids])


def test_a_retry_counts_its_crashed_attempts_inserts_as_its_own(collections: Any) -> None:
    book, readings = collections
    insert(readings, [BIG])  # stored by an earlier batch
    first = ledger.Bucket.load(book, "k", 0)
    first.intend(2)  # the rows at offsets 0-2 hold ids 1, 2, 3
    insert(readings, [1, 2, 3])  # ... and the attempt dies before settling

    retry = ledger.Bucket.load(book, "k", 0)
    assert (retry.settled_through, retry.pending_through) == (-1, 2)
    outcome = insert(readings, [1, 2, 3])
    assert set(outcome.duplicate_ids) == {1, 2, 3}
    assert retry.settle([(1, 0), (2, 1), (3, 2)], {1, 2, 3}, {}) == {1, 2, 3}  # ambiguous: published, never lost
    retry.intend(5)
    outcome = insert(readings, [BIG, 10])
    assert retry.settle([(BIG, 3), (10, 5)], set(outcome.duplicate_ids), {11: "2: bad value"}) == set()

    replay = ledger.Bucket.load(book, "k", 0)
    assert replay.settled_through == 5 and replay.foreign == {BIG} and replay.rejected == {11: "2: bad value"}
    assert {type(i) for i in replay.foreign | set(replay.rejected)} == {int}  # plain ints, not BSON Int64


def test_pending_offsets_survive_a_second_crash(collections: Any) -> None:
    book, _ = collections
    ledger.Bucket.load(book, "k2", 1).intend(7)
    ledger.Bucket.load(book, "k2", 1).intend(3)  # a smaller first chunk; dies again
    assert ledger.Bucket.load(book, "k2", 1).pending_through == 7


def test_an_older_attempt_of_a_bucket_is_fenced_before_its_next_insert(collections: Any) -> None:
    book, readings = collections
    old = ledger.Bucket.load(book, "k3", 0)
    old.intend(1)
    insert(readings, [1, 2])  # a zombie attempt, still inserting when a new one starts
    new = ledger.Bucket.load(book, "k3", 0)
    with pytest.raises(ledger.Fenced):
        old.settle([(1, 0), (2, 1)], set(), {})
    with pytest.raises(ledger.Fenced):
        old.intend(5)
    assert new.pending_through == 1  # what the zombie was inserting counts as the new attempt's own
    assert new.settle([(1, 0), (2, 1)], set(insert(readings, [1, 2]).duplicate_ids), {}) == {1, 2}
    assert new.settled_through == 1 and new.foreign == set()


def test_a_finished_batch_fences_a_late_zombie_and_refusals_are_counted(collections: Any) -> None:
    book = ledger.Ledger(collections[0])
    entry = book.begin([ledger.OffsetRange("raw", 3, 0, 4)], 1, 0, 1)
    bucket = ledger.Bucket.load(collections[0], entry.key, 0)
    bucket.count_refusals({BIG: "1: busy"})
    bucket.count_refusals({BIG: "1: still busy"})
    assert ledger.Bucket.load(collections[0], entry.key, 0).refusals == {BIG: (2, "1: still busy")}
    book.finish(entry, {})
    with pytest.raises(ledger.Fenced, match="finished"):
        ledger.Bucket.load(collections[0], entry.key, 0)


def test_batches_are_known_by_their_offsets_not_by_spark_batch_ids(collections: Any) -> None:
    book = ledger.Ledger(collections[0], retention=timedelta(0))
    entry = book.begin(RANGES, batch_id=5, checked_at=1_000, buckets=2)
    again = book.begin(list(reversed(RANGES)), batch_id=0, checked_at=2_000, buckets=4)  # a new checkpoint
    assert again == entry and not entry.done and entry.checked_at == 1_000 and entry.buckets == 2
    assert book.incomplete() == [entry]

    assert book.get(entry.key) == entry and book.get("unknown") is None
    publishing = book.publishing(entry)
    assert publishing.publishing_at is not None and book.publishing(publishing) == publishing
    book.finish(publishing, {"valid": 20})
    assert book.begin(RANGES, batch_id=6, checked_at=0, buckets=2).done
    assert book.incomplete() == []
    assert book.next_offsets("raw") == {0: 10, 1: 20}
    book.finish(book.begin([ledger.OffsetRange("raw", 0, 10, 14)], 7, 0, 1), {})
    assert book.next_offsets("raw") == {0: 15, 1: 20}
    # An old checkpoint replays over done batches: the new entry fixes which rows every attempt skips.
    replayed = book.begin([ledger.OffsetRange("raw", 0, 12, 16), ledger.OffsetRange("raw", 2, 0, 3)], 3, 0, 3)
    assert replayed.skip == (("raw", 0, 15),) and book.get(replayed.key) == replayed
    book.finish(replayed, {})
    unfinished = book.begin([ledger.OffsetRange("raw", 0, 17, 19)], 8, 0, 1)
    ledger.Bucket.load(collections[0], unfinished.key, 0).intend(17)
    assert book.prune() == 3 and book.next_offsets("raw") == {0: 17, 1: 20, 2: 4}
    assert ledger.Bucket.load(collections[0], unfinished.key, 0).pending_through == 17  # kept: not done yet
