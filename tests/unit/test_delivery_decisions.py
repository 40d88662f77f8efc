"""What a slice publishes after its inserts (sensor_pipeline.job.delivery.Slice.insert), the store faked.

The real broker and store run these paths in tests/integration/test_delivery.py; here, the answers a
real store gives rarely (a document it keeps refusing beside others it settled) are produced at will.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from sensor_pipeline.config import Settings
from sensor_pipeline.job import delivery, store

SETTINGS = Settings(raw_topic="RawSensorData")


def rows(*ids: int) -> list[dict[str, Any]]:
    """Readings ``ids``, reading ``i`` at offset ``100 + i`` (an offset is not an id)."""
    return [
        {"_id": i, "topic": "RawSensorData", "partition": 0, "offset": 100 + i, "RawData": f"line {i}"} for i in ids
    ]


def source(i: int) -> dict[str, Any]:
    """The Source of the raw record that holds reading ``i`` in :func:`rows`."""
    return {"topic": "RawSensorData", "partition": 0, "offset": 100 + i}


@pytest.fixture
def faked(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The store's answers, set per test: ``insert`` (a WriteResult, a StoreError, or a function of the
    documents giving one) and ``sources``; ``calls`` lists the barriers and lookups in order."""
    answers: dict[str, Any] = {"sources": {}, "calls": []}

    def insert_new(_collection: Any, documents: list[dict[str, Any]]) -> store.WriteResult:
        answer = answers["insert"]
        if callable(answer):
            answer = answer([d["_id"] for d in documents])
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    monkeypatch.setattr(store, "shared_client", lambda _settings: object())
    monkeypatch.setattr(store, "durable_readings", lambda _client, _settings: object())
    monkeypatch.setattr(store, "takes_writes", lambda _client, _settings: True)
    monkeypatch.setattr(store, "insert_new", insert_new)

    def barrier(_client: Any, _settings: Any) -> None:
        answers["calls"].append("barrier")

    def sources(_collection: Any, ids: list[Any], _chunk: int) -> dict[Any, Any]:
        answers["calls"].append("lookup")
        return {i: answers["sources"][i] for i in ids if i in answers["sources"]}  # ids not stored: absent

    monkeypatch.setattr(store, "majority_barrier", barrier)
    monkeypatch.setattr(store, "sources", sources)
    monkeypatch.setattr(delivery.schema, "to_document", lambda row: {"_id": row["_id"], "TimeStamp": 0})
    return answers


def published_and_refused(slice_rows: list[dict[str, Any]], dead_letter_refused: bool) -> tuple[list[int], list[int]]:
    publish, refused = delivery.Slice(SETTINGS, slice_rows, dead_letter_refused).insert(slice_rows)
    return [r["_id"] for r in publish], sorted(r["_id"] for r, _ in refused)


def test_own_duplicates_are_published_anothers_are_not(faked: dict[str, Any]) -> None:
    faked["insert"] = store.WriteResult(1, duplicate_ids=(2, 3))
    faked["sources"] = {2: source(2), 3: source(99)}  # 2: this row's earlier attempt; 3: another record
    assert published_and_refused(rows(1, 2, 3), dead_letter_refused=False) == ([1, 2], [])


def test_a_later_copy_of_an_id_that_an_earlier_attempt_stored_is_published_as_the_slices_own(
    faked: dict[str, Any],
) -> None:
    """Two lines with one MeasurementID in the slice: an earlier attempt judged the first in the future (an
    earlier clock) and stored the second; this attempt finds both valid and inserts the first. The stored
    document is the second's: its clean message is published, once. Only the duplicate-key answer was
    asked about, which is its own barrier: no extra write."""
    first, later = (r | {"_id": 5} for r in rows(1, 2))
    faked["insert"] = store.WriteResult(0, duplicate_ids=(5,))
    faked["sources"] = {5: source(2)}
    one = delivery.Slice(SETTINGS, [first, later], dead_letter_refused=False)
    publish, letters = one.insert([first, later])
    assert (publish, letters, faked["calls"]) == ([later], [], ["lookup"])


def test_lookups_no_insert_answered_first_pass_a_majority_barrier(faked: dict[str, Any]) -> None:
    """Before reading who stored a refused document, or a reading the clock rejected, a majority write
    makes what the primary applied before it (an older attempt's insert) visible to the majority read."""
    faked["insert"] = store.StoreError("refused", {2: "1: internal"}, store.WriteResult(1))
    published_and_refused(rows(1, 2), dead_letter_refused=True)
    delivery.Slice(SETTINGS, clocked(3), dead_letter_refused=False).stored_earlier(clocked(3))
    assert faked["calls"] == ["barrier", "lookup", "barrier", "lookup"]


def test_a_chunk_refused_whole_is_tried_again_document_by_document_before_any_dead_letter(
    faked: dict[str, Any],
) -> None:
    """A busy moment refuses the whole chunk at once; on the dead-letter attempt each document is tried
    again on its own: 1 and 3 are stored then, only 2, refused again, becomes a dead letter."""

    def answer(ids: list[int]) -> Any:
        if len(ids) > 1 or ids == [2]:
            return store.StoreError("refused", dict.fromkeys(ids, "1: busy"), store.WriteResult(0))
        return store.WriteResult(1)

    faked["insert"] = answer
    assert published_and_refused(rows(1, 2, 3), dead_letter_refused=True) == ([1, 3], [2])


def test_a_refused_reading_that_is_stored_after_all_is_not_dead_lettered(faked: dict[str, Any]) -> None:
    """The store kept refusing this attempt's copies of 2, 3 and 4. A fenced older attempt at the slice,
    still running, stored 2: the reading is stored, so it is published clean. Another record with the same
    id stored 3: already stored, published by that record. 4 is stored by no one: a dead letter."""
    refused = {2: "1: internal", 3: "1: internal", 4: "1: internal"}
    faked["insert"] = store.StoreError("refused", refused, store.WriteResult(1))
    faked["sources"] = {2: source(2), 3: source(99)}
    one = delivery.Slice(SETTINGS, rows(1, 2, 3, 4), dead_letter_refused=True)
    publish, letters = one.insert(rows(1, 2, 3, 4))
    assert ([r["_id"] for r in publish], [r["_id"] for r, _ in letters]) == ([1, 2], [4])
    assert one.counts["already_stored"] == 1


def test_a_reading_refused_for_its_content_whose_id_another_record_stored_counts_as_already_stored(
    faked: dict[str, Any],
) -> None:
    """As any duplicate id of another record: not published again, and not a dead letter either."""
    faked["insert"] = store.WriteResult(1, rejected=((2, "121: validation"),))
    faked["sources"] = {2: source(99)}
    one = delivery.Slice(SETTINGS, rows(1, 2), dead_letter_refused=False)
    publish, letters = one.insert(rows(1, 2))
    assert ([r["_id"] for r in publish], letters, one.counts["already_stored"]) == ([1], [], 1)


def test_a_duplicate_whose_document_a_majority_does_not_hold_fails_the_slice(faked: dict[str, Any]) -> None:
    """The insert met a document the majority-read does not see (on a replica set, a write a failover can
    still roll back): neither "own" nor "another's" can be said yet, so the batch is retried."""
    faked["insert"] = store.WriteResult(1, duplicate_ids=(2,))
    with pytest.raises(store.StoreError, match="majority"):
        published_and_refused(rows(1, 2), dead_letter_refused=False)


def clocked(*ids: int) -> list[dict[str, Any]]:
    """Rows rejected by the clock alone: their clean record rides along (``transforms.routed``)."""
    return [
        r | {"reason": "future_timestamp", "clock_value": json.dumps({"MeasurementID": r["_id"]}), "_id": None}
        for r in rows(*ids)
    ]


def test_a_reading_an_earlier_attempt_stored_is_published_though_this_clock_rejects_it(
    faked: dict[str, Any],
) -> None:
    """Another clock judged 2 valid and stored it (its Source is this row's): the store holds the
    reading, so it is published, not dead-lettered. 3 was stored by another record, 4 by no one: this
    attempt's verdict stands (dead letters)."""
    faked["sources"] = {2: source(2), 3: source(99)}
    one = delivery.Slice(SETTINGS, clocked(2, 3, 4), dead_letter_refused=False)
    kept, settled = one.stored_earlier(clocked(2, 3, 4))
    assert (sorted(kept), settled) == ([source(2)["offset"]], {source(2)["offset"]})
    faked["sources"] = {}
    assert one.stored_earlier(clocked(2, 3, 4)) == ({}, set())


def test_a_resent_copy_of_a_line_an_earlier_attempt_stored_is_already_stored_not_dead_lettered(
    faked: dict[str, Any],
) -> None:
    """The producer resent a line (offsets 102 and 110, same line): the earlier attempt stored the first and
    judged the second a duplicate. This attempt's clock rejects both: the first is published, the second
    is neither published nor dead-lettered. Another line with the same id (offset 111) keeps its dead letter."""
    first, resent, other = clocked(2, 2, 2)
    resent, other = resent | {"offset": 110}, other | {"offset": 111, "clock_value": '{"MeasurementID":2,"x":1}'}
    faked["sources"] = {2: source(2)}
    kept, settled = delivery.Slice(SETTINGS, [first], dead_letter_refused=False).stored_earlier([first, resent, other])
    assert (sorted(kept), settled) == ([102], {102, 110})


def test_no_read_without_a_clock_verdict_or_for_a_row_that_has_no_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """A row the clock rejected whose id a later check rejects too (its clean record has no MeasurementID:
    to_json leaves nulls out) was stored by no attempt; a slice without clock verdicts reads nothing."""

    def no_read(*_args: Any) -> dict[Any, Any]:
        raise AssertionError("read the store")

    monkeypatch.setattr(store, "sources", no_read)
    no_id = clocked(2)[0] | {"clock_value": '{"Beach":"Calumet Beach"}'}
    one = delivery.Slice(SETTINGS, rows(1), dead_letter_refused=False)
    assert one.stored_earlier([]) == ({}, set()) and one.stored_earlier([no_id]) == ({}, set())


def test_a_stored_source_with_more_keys_is_still_this_records() -> None:
    one = delivery.Slice(SETTINGS, rows(2), dead_letter_refused=False)
    assert one.stored_by(source(2) | {"topic_id": "x"}, rows(2)[0])
    assert not one.stored_by(source(3), rows(2)[0]) and not one.stored_by(None, rows(2)[0])


def test_on_the_dead_letter_path_what_the_insert_settled_for_the_others_still_counts(faked: dict[str, Any]) -> None:
    """Document 2 keeps failing and is dead-lettered; 3 was stored by another record, 4 was refused
    for what it holds: neither may be published as clean."""
    settled = store.WriteResult(1, duplicate_ids=(3,), rejected=((4, "121: validation"),))
    faked["insert"] = store.StoreError("refused", {2: "1: internal"}, settled)
    faked["sources"] = {3: source(99)}
    assert published_and_refused(rows(1, 2, 3, 4), dead_letter_refused=True) == ([1], [2, 4])


def test_before_the_dead_letter_attempt_a_refused_document_fails_the_slice(faked: dict[str, Any]) -> None:
    faked["insert"] = store.StoreError("refused", {2: "1: internal"}, store.WriteResult(1))
    with pytest.raises(store.StoreError):
        published_and_refused(rows(1, 2), dead_letter_refused=False)


class _Metadata:
    def __init__(self, broker: int) -> None:
        self.orig_broker_id = broker


class _Producer:
    """confluent_kafka.Producer's calls that ``delivery._producer`` makes, recorded; metadata is answered
    by the bootstrap address (broker id -1) ``bootstrap_answers`` times, then by broker 1."""

    bootstrap_answers = 2

    def __init__(self, config: dict[str, Any]) -> None:
        self.config, self.calls = config, []  # type: ignore[var-annotated]
        self.answers = [-1] * self.bootstrap_answers + [1]

    def list_topics(self, topic: str, timeout: float) -> _Metadata:
        self.calls.append(("metadata", topic))
        return _Metadata(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])

    def init_transactions(self, timeout: float) -> None:
        self.calls.append(("init_transactions", None))


def test_a_producer_asks_for_its_id_once_a_broker_learned_from_metadata_has_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before that, librdkafka has no connection it asks a producer id over, and retries after 500 ms."""
    import confluent_kafka

    monkeypatch.setattr(confluent_kafka, "Producer", _Producer)
    producer = delivery._producer(SETTINGS, "job-RawSensorData-0")
    assert producer.calls == [("metadata", "CleanSensorData")] * 3 + [("init_transactions", None)]
    assert producer.config["transactional.id"] == "job-RawSensorData-0"


def test_a_producer_that_no_learned_broker_answers_fails_within_the_timeout_without_spinning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Brokers named in metadata but unreachable (librdkafka falls back to the bootstrap addresses)."""
    import confluent_kafka

    clock = {"now": 0.0}
    sleeps: list[float] = []
    timeouts: list[float] = []

    class Unreachable(_Producer):
        bootstrap_answers = 10**6

        def list_topics(self, topic: str, timeout: float) -> _Metadata:
            timeouts.append(timeout)
            clock["now"] += 0.05  # each answer takes a round trip
            return super().list_topics(topic, timeout)

    # ``delivery.time`` is the time module itself: other threads of the session (clients' background
    # threads left by earlier tests) keep the real clock and sleep, or they would move this test's clock.
    test_thread, real_sleep, real_monotonic = threading.current_thread(), time.sleep, time.monotonic

    def sleep(seconds: float) -> None:
        if threading.current_thread() is not test_thread:
            return real_sleep(seconds)
        sleeps.append(seconds)
        clock["now"] += seconds

    def monotonic() -> float:
        return clock["now"] if threading.current_thread() is test_thread else real_monotonic()

    monkeypatch.setattr(confluent_kafka, "Producer", Unreachable)
    monkeypatch.setattr(delivery.time, "monotonic", monotonic)
    monkeypatch.setattr(delivery.time, "sleep", sleep)
    with pytest.raises(confluent_kafka.KafkaException, match=r"no broker that .* lists answered within 30 s"):
        delivery._producer(SETTINGS, "job-RawSensorData-0")
    assert clock["now"] <= delivery.TIMEOUT + 0.1
    assert timeouts == sorted(timeouts, reverse=True) and timeouts[-1] < 1, "each request waits what is left"
    assert len(timeouts) < 100 and max(sleeps) == 0.5, "backs off instead of spinning"


class _Position:
    def __init__(self, partition: int, offset: int, error: Any = None) -> None:
        self.partition, self.offset, self.error = partition, offset, error


def test_committed_offsets_wait_out_a_moving_coordinator_and_raise_a_partitions_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confluent_kafka import KafkaError, KafkaException

    answers: list[Any] = [
        KafkaException(KafkaError(KafkaError.NOT_COORDINATOR)),
        KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)),
        [_Position(0, 21), _Position(1, -1001)],
    ]

    class Consumer:
        def committed(self, partitions: list[Any], timeout: float) -> Any:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    test_thread, real_sleep = threading.current_thread(), time.sleep
    monkeypatch.setattr(  # this thread's waits only (delivery.time is the time module itself)
        delivery.time,
        "sleep",
        lambda seconds: None if threading.current_thread() is test_thread else real_sleep(seconds),
    )
    positions = delivery.committed_positions(SETTINGS, ["p0", "p1"], Consumer())
    assert [(p.partition, p.offset) for p in positions] == [(0, 21), (1, -1001)] and answers == []

    answers[:] = [[_Position(0, -1, KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))], [_Position(0, 5)]]
    with pytest.raises(KafkaException) as raised:
        delivery.committed_positions(SETTINGS, ["p0"], Consumer())
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, "never read as nothing committed"


class Producer:
    """The transactional producer's calls a slice makes, recorded."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.offsets: list[Any] = []
        self.committed = False

    def begin_transaction(self) -> None:
        pass

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append((topic, value))

    def send_offsets_to_transaction(self, offsets: list[Any], _group: Any, _timeout: float) -> None:
        self.offsets = offsets

    def commit_transaction(self, _timeout: float) -> None:
        self.committed = True


def raw_rows(*offsets: int) -> list[dict[str, Any]]:
    """Valid rows at these offsets (reading ids equal to them)."""
    return [
        r | {"offset": o, "reason": None, "key": "Beach", "value": f'{{"MeasurementID": {r["_id"]}}}'}
        for o, r in zip(offsets, rows(*offsets), strict=True)
    ]


def deliver_after(faked: dict[str, Any], monkeypatch: pytest.MonkeyPatch, group_at: int, log_start: int,
                  slice_rows: list[dict[str, Any]], data_between: bool = True) -> tuple[dict[str, Any], Producer]:  # fmt: skip
    monkeypatch.setattr(delivery, "committed", lambda _s, _t, _p: group_at)
    monkeypatch.setattr(delivery, "log_start", lambda _s, _t, _p: log_start)
    monkeypatch.setattr(delivery, "data_between", lambda _s, _t, _p, _low, _high: data_between)
    monkeypatch.setattr(delivery, "group_consumer", lambda _s: type("G", (), {"consumer_group_metadata": dict})())
    faked["insert"] = store.WriteResult(len(slice_rows))
    producer = Producer()
    return delivery.Slice(SETTINGS, slice_rows, False).deliver(producer), producer


def test_records_retention_deleted_before_the_group_committed_them_are_counted_and_logged(
    faked: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The group lags the checkpoint (at 5), retention deleted offsets 5-19: the slice from 20 is
    delivered, and the 15 records no attempt may have delivered are reported, not skipped silently."""
    counts, producer = deliver_after(faked, monkeypatch, group_at=5, log_start=20, slice_rows=raw_rows(20, 21))
    assert counts["lost_to_retention"] == 15 and counts["published"] == 2 and producer.committed
    assert [o.offset for o in producer.offsets] == [22]
    assert "offsets 5-19 (15 records, or transaction markers) were deleted by retention" in caplog.text


def test_a_slice_starting_above_the_group_with_the_records_between_still_there_is_refused(
    faked: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another task holds offsets 5-19 (a partition split over tasks): delivering 20- would commit past them."""
    with pytest.raises(RuntimeError, match="split over Spark tasks"):
        deliver_after(faked, monkeypatch, group_at=5, log_start=0, slice_rows=raw_rows(20, 21))


def test_offsets_between_that_only_transaction_markers_hold_are_no_gap(
    faked: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transactional producer wrote to the raw topic: its commit markers take offsets 5-19, which no
    consumer reads. The slice from 20 is delivered; nothing was lost."""
    counts, producer = deliver_after(faked, monkeypatch, 5, 0, raw_rows(20, 21), data_between=False)
    assert (counts["published"], counts["lost_to_retention"], [o.offset for o in producer.offsets]) == (2, 0, [22])


def test_clean_messages_go_out_in_offset_order_those_kept_from_the_store_included(
    faked: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A beach's readings reach CleanSensorData in the order they arrived, a reading published because an
    earlier attempt stored it (offset 11) among the others."""
    kept = clocked(11)[0] | {"offset": 11, "key": "Beach"}
    faked["sources"] = {11: {"topic": "RawSensorData", "partition": 0, "offset": 11}}
    _counts, producer = deliver_after(faked, monkeypatch, 10, 0, [raw_rows(10)[0], kept, raw_rows(12)[0]])
    assert [json.loads(value)["MeasurementID"] for _topic, value in producer.sent] == [10, 11, 12]


def test_a_write_concern_error_on_a_refused_documents_own_try_fails_the_slice(faked: dict[str, Any]) -> None:
    """Tried on its own on the dead-letter attempt, the document met an error of the store, not of itself
    (no document named: a write concern error): it is neither published nor dead-lettered; the batch fails."""

    def answer(ids: list[int]) -> Any:
        if len(ids) > 1:
            return store.StoreError("refused", dict.fromkeys(ids, "1: busy"), store.WriteResult(0))
        return store.StoreError("the store did not confirm the insert (write concern error 64)")

    faked["insert"] = answer
    with pytest.raises(store.StoreError, match="write concern"):
        published_and_refused(rows(1, 2), dead_letter_refused=True)


def test_the_store_delay_histogram_names_the_ids_it_holds_only_those_this_insert_stored(
    faked: dict[str, Any],
) -> None:
    """``make bench`` gives each phase the histograms of its own readings, by these ids."""
    faked["insert"] = store.WriteResult(2, duplicate_ids=(7,))  # 7: another record's, stored before
    faked["sources"] = {7: source(99)}
    one = delivery.Slice(SETTINGS, rows(5, 6, 7), dead_letter_refused=False)
    one.insert(rows(5, 6, 7))
    assert one.counts["store_ids"] == [5, 6] and sum(one.counts["store_delay"].values()) == 2


class _Message:
    def __init__(self, offset: int = 0, error: Any = None) -> None:
        self._offset, self._error = offset, error

    def offset(self) -> int:
        return self._offset

    def error(self) -> Any:
        return self._error


def data_between_with(monkeypatch: pytest.MonkeyPatch, polled: list[Any]) -> bool:
    """``delivery.data_between(..., 5, 20)`` against a consumer whose polls answer ``polled`` in turn."""
    import confluent_kafka

    class Consumer:
        def __init__(self, config: dict[str, Any]) -> None:
            assert config["auto.offset.reset"] == "error", "a deleted offset must not read as 'nothing between'"

        def assign(self, partitions: list[Any]) -> None:
            assert [p.offset for p in partitions] == [5]

        def poll(self, _timeout: float) -> Any:
            return polled.pop(0)

        def close(self) -> None:
            pass

    monkeypatch.setattr(confluent_kafka, "Consumer", Consumer)
    return delivery.data_between(SETTINGS, "RawSensorData", 0, 5, 20)


def test_a_gap_holds_data_when_a_record_lies_below_the_slice_and_not_when_only_markers_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confluent_kafka import KafkaError, KafkaException

    assert data_between_with(monkeypatch, [None, _Message(12)]) is True
    assert data_between_with(monkeypatch, [_Message(20)]) is False, "the first record is the slice's own"
    assert data_between_with(monkeypatch, [_Message(error=KafkaError(KafkaError._PARTITION_EOF))]) is False
    for code in (KafkaError._AUTO_OFFSET_RESET, KafkaError.TOPIC_AUTHORIZATION_FAILED):
        with pytest.raises(KafkaException):  # offset 5 deleted meanwhile, or no right to read: retried, named
            data_between_with(monkeypatch, [_Message(error=KafkaError(code))])


def test_the_jobs_writes_wait_for_a_majority_for_a_minute_at_most_and_its_lookups_read_majority() -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient("mongodb://127.0.0.1:1", connect=False)
    readings = store.durable_readings(client, SETTINGS)
    assert readings.write_concern.document == {"w": "majority", "wtimeout": 60_000}
    assert store.probe_collection(client, SETTINGS).write_concern.document == {"w": "majority", "wtimeout": 60_000}
    assert readings.read_concern.level == "majority"
    client.close()


def test_a_write_concern_error_fails_the_slice_even_on_the_dead_letter_attempt(faked: dict[str, Any]) -> None:
    """The store did not confirm the insert (a majority not reached in time): no document is named, so none
    is dead-lettered or published; the batch is retried and finds the documents that were written as its own."""
    faked["insert"] = store.StoreError("the store did not confirm the insert (write concern error 64)")
    with pytest.raises(store.StoreError, match="write concern"):
        published_and_refused(rows(1, 2), dead_letter_refused=True)
