"""How the store's write errors are told apart: already stored, refused for good, or the server."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import BulkWriteError

from sensor_pipeline.job import store


class FakeCollection:
    """insert_many that answers per document from ``codes`` (a list per _id: one code per attempt)."""

    def __init__(self, codes: dict[int, list[int]]) -> None:
        self.codes = codes
        self.calls = 0

    def insert_many(self, documents: list[dict[str, Any]], ordered: bool) -> Any:
        self.calls += 1
        errors = []
        for index, document in enumerate(documents):
            answers = self.codes.get(document["_id"], [])
            code = answers.pop(0) if answers else 0
            if code:
                errors.append({"index": index, "code": code, "errmsg": f"code {code}"})
        if errors:
            raise BulkWriteError({"writeErrors": errors, "nInserted": len(documents) - len(errors)})
        return type("Result", (), {"inserted_ids": [d["_id"] for d in documents]})()


def insert(codes: dict[int, list[int]], ids: list[int]) -> tuple[store.WriteResult, FakeCollection]:
    collection = FakeCollection(codes)
    return store.insert_new(collection, [{"_id": i} for i in ids], sleep=lambda _: None), collection  # type: ignore[arg-type]


def test_duplicates_count_as_stored_and_document_errors_as_rejected() -> None:
    result, _ = insert({2: [store.DUPLICATE_KEY], 3: [121]}, [1, 2, 3])
    assert result.inserted == 1 and result.duplicate_ids == (2,)
    assert [i for i, _ in result.rejected] == [3]


def test_a_passing_error_on_some_documents_is_retried_until_they_are_written() -> None:
    result, collection = insert({2: [24, 24]}, [1, 2])  # LockTimeout twice, then written
    assert result.inserted == 2 and result.rejected == () and collection.calls == 3


def test_a_document_refused_every_time_fails_the_call_naming_it_never_a_dead_letter_here() -> None:
    with pytest.raises(store.StoreError) as refused:
        insert({2: [1] * 10}, [1, 2])
    assert set(refused.value.failed) == {2}  # counted by the caller across batch attempts


def test_a_failed_call_still_says_what_it_settled_for_the_other_documents() -> None:
    """A caller that dead-letters the refused document must not take the chunk's others for stored: a
    duplicate is someone's (maybe another record's), a rejected one was never stored."""
    with pytest.raises(store.StoreError) as refused:
        insert({2: [1] * 10, 3: [store.DUPLICATE_KEY], 4: [121]}, [1, 2, 3, 4])
    settled = refused.value.partial
    assert settled.inserted == 1 and settled.duplicate_ids == (3,) and [i for i, _ in settled.rejected] == [4]


def test_a_server_that_writes_nothing_fails_the_batch_even_beside_a_duplicate() -> None:
    with pytest.raises(store.StoreError, match="refused 2 of 2"):
        insert({1: [14031], 2: [14031]}, [1, 2])  # disk full: retried as a batch, never dead-lettered
    with pytest.raises(store.StoreError, match="refused 1 of 1"):
        insert({1: [store.DUPLICATE_KEY], 2: [14031] * 10}, [1, 2])


def test_a_write_concern_error_fails_the_call_naming_no_document() -> None:
    """A majority not reached within the write concern's wtimeout: the documents may be written on the
    primary only. No document is named (none may become a dead letter): the batch is retried."""

    class Unconfirmed:
        def insert_many(self, documents: list[dict[str, Any]], ordered: bool) -> Any:
            raise BulkWriteError({"writeErrors": [], "nInserted": len(documents),
                                  "writeConcernErrors": [{"code": 64, "errmsg": "waiting for replication timed out"}]})  # fmt: skip

    with pytest.raises(store.StoreError, match="write concern error 64") as raised:
        store.insert_new(Unconfirmed(), [{"_id": 1}], sleep=lambda _: None)  # type: ignore[arg-type]
    assert raised.value.failed == {}
