"""The job's exactly-once delivery of one slice (sensor_pipeline.job.delivery) on the real broker and store.

Each test runs the slice's task as Spark runs it (the rows of ``transforms.routed``, one source
partition) and checks what a ``read_committed`` consumer of the output topics, the store and the job's
consumer group then hold.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import KafkaException

from sensor_pipeline.config import Settings
from sensor_pipeline.job import delivery, store
from sensor_pipeline.job.writer import BatchWriter
from sensor_pipeline.source.simulator import BEACHES, SnowflakeIds, format_line
from tests.integration.conftest import read_all

pytestmark = [pytest.mark.integration, pytest.mark.spark]
INVALID = "2020-02-17T11:12:58 26.04 5000 13.12 Montrose_Beach 5"  # out_of_range


@pytest.fixture(autouse=True)
def _group_clients() -> Iterator[None]:
    yield
    delivery.close_group_clients()  # each test's group is its own; the broker outlives none of them


def slice_rows(
    spark: Any, settings: Settings, lines: list[str], first_offset: int = 0, clock: timedelta = timedelta()
) -> list[dict[str, Any]]:
    """Partition 0's rows of a batch, as the job's routed projection gives them to the task (judged by a
    clock ``clock`` off the host's)."""
    frame = spark.createDataFrame(
        [(line.encode(), settings.raw_topic, 0, first_offset + i) for i, line in enumerate(lines)],
        "value binary, topic string, partition int, offset long",
    )
    rows = BatchWriter(settings).routed(frame, datetime.now(UTC) + clock).collect()
    return [row.asDict() for row in rows]


def readings(count: int) -> list[str]:
    ids, now = SnowflakeIds(worker=3), datetime.now(UTC)
    return [format_line(now - timedelta(seconds=i), 20, 1.5, 11, BEACHES[i % 6], ids.next()) for i in range(count)]


def run(settings: Settings, rows: list[dict[str, Any]], dead_letter_refused: bool = False) -> dict[str, Any]:
    producer = delivery._producer(settings, settings.transactional_id(0))
    return delivery.Slice(settings, rows, dead_letter_refused).deliver(producer)


def outputs(settings: Settings) -> tuple[Counter[int], Counter[int], Counter[Any]]:
    """(clean MeasurementIDs, dead letters by source offset, stored ids) as consumers and the store see them."""
    clean = Counter(json.loads(r.value)["MeasurementID"] for r in read_all(settings, settings.clean_topic, timeout=10))
    dead = Counter(
        json.loads(r.value)["Source"]["offset"] for r in read_all(settings, settings.invalid_topic, timeout=10)
    )
    client = store.connect(settings)
    stored = Counter(d["_id"] for d in store.readings(client, settings).find({}, {"_id": 1}))
    client.close()
    return clean, dead, stored


def beside_a_paused_older_attempt(
    settings: Settings,
    rows: list[dict[str, Any]],
    paused: threading.Event,
    resume: threading.Event,
    dead_letter_refused: bool = False,
    older_rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Two attempts at one slice at once: the older one (thread "older", which the test's hook pauses,
    setting ``paused`` and waiting for ``resume``; ``older_rows`` if it judged them otherwise), then the
    newer one, run to the end; then the older one resumes and must be fenced. The newer attempt's counts."""
    failure: list[BaseException] = []

    def older() -> None:
        try:
            run(settings, older_rows or rows)
        except BaseException as error:
            failure.append(error)

    attempt = threading.Thread(target=older, name="older")
    attempt.start()
    assert paused.wait(60), "the older attempt never reached the paused step"
    newer = run(settings, rows, dead_letter_refused)
    resume.set()
    attempt.join(60)
    assert failure and isinstance(failure[0], KafkaException), "the older attempt must be fenced"
    return newer


def test_a_slice_is_stored_published_and_committed_once(spark: Any, settings: Settings) -> None:
    lines = [*readings(20), INVALID]
    rows = slice_rows(spark, settings, lines)
    counts = run(settings, rows)
    assert (counts["stored"], counts["published"], counts["invalid"]) == (20, 20, 1)
    clean, dead, stored = outputs(settings)
    ids = {int(line.split()[5]) for line in lines[:20]}
    assert clean == Counter(ids) and stored == Counter(ids) and dead == Counter({20: 1})
    assert delivery.committed(settings, settings.raw_topic, 0) == 21, "the group's offset committed with the output"
    # A second attempt at the same slice (Spark's retry after the commit, a replay) finds it done.
    again = run(settings, rows)
    assert (again["skipped"], again["stored"], again["published"]) == (21, 0, 0)
    assert outputs(settings)[:2] == (clean, dead)


def to_raw_partition_0(settings: Settings, lines: list[str], transactional_id: str | None = None) -> None:
    """Lines into RawSensorData's partition 0; with ``transactional_id``, in one committed transaction
    (whose commit marker then takes the offset after them)."""
    from confluent_kafka import Producer

    options = settings.librdkafka_options()
    producer = Producer(options | ({"transactional.id": transactional_id} if transactional_id else {}))
    if transactional_id:
        producer.init_transactions(30)
        producer.begin_transaction()
    for line in lines:
        producer.produce(settings.raw_topic, value=line.encode(), partition=0)
    if transactional_id:
        producer.commit_transaction(30)
    assert producer.flush(30) == 0


def test_a_slice_that_starts_beyond_what_was_delivered_is_refused_not_skipped(spark: Any, settings: Settings) -> None:
    """A Kafka partition split over two tasks (one transactional.id): the later half must not commit
    first, or a retry of the earlier half would find it "done" and skip it."""
    lines = readings(15)
    to_raw_partition_0(settings, lines)
    run(settings, slice_rows(spark, settings, lines[:5]))  # offsets 0-4 delivered
    later = slice_rows(spark, settings, lines[10:], first_offset=10)  # 5-9 not delivered; still retained
    with pytest.raises(RuntimeError, match="split over Spark tasks"):
        run(settings, later)
    assert delivery.committed(settings, settings.raw_topic, 0) == 5
    clean, _, stored = outputs(settings)
    assert len(clean) == 5 and len(stored) == 5, "the refused slice neither stored nor published anything"


def test_a_transaction_marker_between_two_slices_is_no_gap(spark: Any, settings: Settings) -> None:
    """A transactional producer wrote to the raw topic (Kafka Connect with exactly-once, say): its commit
    marker takes an offset no consumer reads, so the next slice starts one above the group's offset. It
    is delivered, not refused as a split partition (which stopped the job for good)."""
    lines = readings(4)
    to_raw_partition_0(settings, lines[:2], transactional_id=f"{settings.raw_topic}-writer")  # 0-1, marker 2
    to_raw_partition_0(settings, lines[2:])  # 3-4
    run(settings, slice_rows(spark, settings, lines[:2]))
    later = run(settings, slice_rows(spark, settings, lines[2:], first_offset=3))
    assert (later["published"], later["lost_to_retention"]) == (2, 0)
    assert delivery.committed(settings, settings.raw_topic, 0) == 5 and len(outputs(settings)[0]) == 4


def test_window_a_second_driver_starting_at_latest_before_any_commit_skips_the_firsts_slice(
    spark: Any, settings: Settings
) -> None:
    """A window that remains, measured (docs/design.md, "Guarantees"), with ``SP_STARTING_OFFSETS=latest``
    only (the default is ``earliest``): two drivers, neither with a committed offset for a partition yet;
    the second starts at the end of the topic and commits its first slice before the first driver's
    slice below it. The group's offset then covers the first slice, which is skipped as delivered: its
    readings are neither stored nor published. A committed offset is one number: it cannot say that
    records below it were skipped by a choice of where to start rather than delivered."""
    lines = readings(10)
    later = run(settings, slice_rows(spark, settings, lines[5:], first_offset=5))  # nothing committed yet
    earlier = run(settings, slice_rows(spark, settings, lines[:5]))
    assert (later["published"], earlier["skipped"], earlier["published"]) == (5, 5, 0), "the window's outcome"
    clean, _, stored = outputs(settings)
    assert len(clean) == len(stored) == 5 and delivery.committed(settings, settings.raw_topic, 0) == 10


def test_an_older_attempt_running_at_the_same_time_is_fenced_and_its_sends_never_seen(
    spark: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two attempts of one partition at once (a zombie task and its retry, or two drivers): the older one,
    paused with part of its messages sent, is fenced by the newer one's producer and commits nothing."""
    rows = slice_rows(spark, settings, [*readings(40), INVALID])
    paused, resume = threading.Event(), threading.Event()
    hit = delivery.faults.hit

    def hold(point: str) -> None:
        if point == "publishing" and threading.current_thread().name == "older":
            paused.set()
            assert resume.wait(60)
        hit(point)

    monkeypatch.setattr(delivery.faults, "hit", hold)
    newer = beside_a_paused_older_attempt(settings, rows, paused, resume)  # the older one is mid-transaction
    assert newer["published"] == 40
    clean, dead, stored = outputs(settings)
    assert set(clean.values()) == {1} and len(clean) == 40, "each reading published once"
    assert len(stored) == 40 and dead == Counter({40: 1})  # one document per reading: the store's key


def test_a_reading_another_record_stored_is_not_published_again_but_the_slices_own_is(
    spark: Any, settings: Settings
) -> None:
    lines = readings(3)
    rows = slice_rows(spark, settings, lines)
    client = store.connect(settings)
    collection = store.readings(client, settings)
    foreign, own = rows[0], rows[1]
    # Stored from another raw record (a producer redelivery at offset 99), and by this slice's earlier attempt.
    collection.insert_one(
        {"_id": foreign["_id"], "Source": {"topic": settings.raw_topic, "partition": 0, "offset": 99}}
    )
    collection.insert_one({"_id": own["_id"], "Source": {"topic": settings.raw_topic, "partition": 0, "offset": 1}})
    client.close()
    counts = run(settings, rows)
    assert (counts["stored"], counts["already_stored"], counts["published"]) == (1, 1, 2)
    clean, _, _ = outputs(settings)
    assert clean == Counter([own["_id"], rows[2]["_id"]])


def test_the_batch_time_is_a_literal_that_compiled_code_reuses(spark: Any, settings: Settings) -> None:
    """Spark generates and compiles the rules' code for the first batch only: the batch's time reaches
    the plan as a string constant, which generated code references instead of inlining."""
    jvm = spark.sparkContext._jvm
    compiled: Callable[[], int] = lambda: int(  # noqa: E731
        jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME().getCount()
    )
    writer = BatchWriter(settings)
    frame = spark.createDataFrame(
        [(line.encode(), settings.raw_topic, 0, i) for i, line in enumerate([*readings(5), INVALID])],
        "value binary, topic string, partition int, offset long",
    )
    start = datetime.now(UTC)
    writer.routed(frame, start).collect()  # the first batch compiles
    before = compiled()
    for second in range(1, 4):
        writer.routed(frame, start + timedelta(seconds=second)).collect()
    assert compiled() == before, "a later batch recompiled the rules"


def refusing(target: int, insert_new: Callable[..., store.WriteResult]) -> Callable[..., store.WriteResult]:
    """The real insert, except that the store refuses ``target`` every time (not for what it holds: an
    InternalError, which a later attempt may not meet)."""

    def insert(collection: Any, documents: list[dict[str, Any]]) -> store.WriteResult:
        settled = insert_new(collection, [d for d in documents if d["_id"] != target])
        if any(d["_id"] == target for d in documents):
            raise store.StoreError("refused", {target: "1: InternalError"}, settled)
        return settled

    return insert


def test_window_a_valid_reading_the_store_refuses_on_a_late_batch_attempt_is_dead_lettered(
    spark: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window that remains, measured (docs/design.md, "No record stops the pipeline"): from a batch's 6th
    attempt (whatever failed the first five: a store failover), a document the store refuses, in its chunk
    and again on its own, while it takes other writes, becomes a ``store_rejected`` dead letter: a valid
    reading neither stored nor published. The slice's 9 others: exactly once."""
    rows = slice_rows(spark, settings, readings(10))
    monkeypatch.setattr(store, "insert_new", refusing(rows[3]["_id"], store.insert_new))
    counts = run(settings, rows, dead_letter_refused=True)
    assert (counts["stored"], counts["rejected"], counts["published"]) == (9, 1, 9)
    clean, dead, stored = outputs(settings)
    assert rows[3]["_id"] not in stored and dead == Counter({3: 1}), "the window's outcome"
    assert len(stored) == len(clean) == 9 and set(clean.values()) == {1}
    (letter,) = (json.loads(r.value) for r in read_all(settings, settings.invalid_topic, timeout=10))
    assert letter["Reason"] == "store_rejected" and "InternalError" in letter["Detail"]


@pytest.mark.parametrize("path", ["refused", "clock"])
def test_window_an_older_attempt_stalled_before_its_insert_stores_what_the_newer_dead_lettered(
    path: str, spark: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window that remains, measured (docs/design.md, "Guarantees"): the older attempt at a slice is
    fenced but stalled before its insert (a GC pause, a lost executor's network); the newer one finds
    a reading stored by no one and dead-letters it, because the store refused it this time (``refused``,
    from the dead-letter attempt on) or because its clock finds it in the future where the older one's,
    15 minutes ahead, did not (``clock``); then the older one stores it. The reading is stored and
    dead-lettered, not published; the slice's 9 others exactly once. The store has no fence that a
    newer Kafka producer could raise against an older attempt's write."""
    lines = readings(10)
    if path == "clock":  # 13 minutes ahead: valid for the older attempt's clock only
        ahead = datetime.now(UTC) + timedelta(seconds=settings.future_tolerance_seconds + 480)
        lines[3] = format_line(ahead, 20, 1.5, 11, BEACHES[3], int(lines[3].split()[5]))
    rows = slice_rows(spark, settings, lines)
    older_rows = slice_rows(spark, settings, lines, clock=timedelta(minutes=15))
    target = older_rows[3]["_id"]
    paused, resume = threading.Event(), threading.Event()
    insert_new = store.insert_new

    def insert(collection: Any, documents: list[dict[str, Any]]) -> store.WriteResult:
        if threading.current_thread().name == "older":  # stalled
            paused.set()
            assert resume.wait(60)
            return insert_new(collection, documents)
        if path == "clock":
            return insert_new(collection, documents)
        return refusing(target, insert_new)(collection, documents)  # refused to this attempt only

    monkeypatch.setattr(store, "insert_new", insert)
    newer = beside_a_paused_older_attempt(
        settings, rows, paused, resume, dead_letter_refused=path == "refused", older_rows=older_rows
    )
    assert (newer["stored"], newer["rejected"] + newer["invalid"], newer["published"]) == (9, 1, 9)
    clean, dead, stored = outputs(settings)
    assert target in stored and target not in clean and dead == Counter({3: 1}), "the window's outcome"
    assert len(stored) == 10 and set(clean.values()) == {1} and len(clean) == 9, "the others: exactly once"
