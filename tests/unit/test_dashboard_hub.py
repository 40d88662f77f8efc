"""The dashboard's consumer loop, driven by a fake consumer: no Kafka, no Bokeh server.

Whatever arrives on CleanSensorData and whatever the broker does, the loop goes on: bad values are
counted and skipped, errors are counted, logged and followed by a new consumer, and stop() ends the
thread with its consumer closed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from sensor_pipeline.config import Settings
from sensor_pipeline.dashboard.hub import MAX_OTHER_BEACHES, TOP_REASONS, Hub
from sensor_pipeline.dashboard.meter import PipelineMeter, Throttle
from sensor_pipeline.dashboard.shaping import Rejected, parse_clean
from sensor_pipeline.source.simulator import BEACHES
from tests.waiting import wait_for

GOOD = {
    "Beach": "Calumet Beach",
    "MeasurementID": 1,
    "BatteryLife": 11.0,
    "RawData": "...",
    "WaterTemperature": 20.5,
    "Turbidity": 1.25,
    "TimeStamp": "2024-07-01T03:00:00.000Z",
}


def clean(mid: int = 1, **changes: Any) -> bytes:
    return json.dumps({**GOOD, "MeasurementID": mid, **changes}).encode()


def without(key: str) -> bytes:
    return json.dumps({k: v for k, v in GOOD.items() if k != key}).encode()


@dataclass
class Record:
    value: Any
    offset: int | None = None
    timestamp: int | None = None


class FakeConsumer:
    """Plays a script: each item is one poll's values, or an exception the poll raises."""

    def __init__(
        self, script: list[list[Any] | dict[str, list[Any]] | Exception], partitions: set[int] | None = None
    ) -> None:
        self.script: deque[list[Any] | dict[str, list[Any]] | Exception] = deque(script)
        self.partitions = {0, 1} if partitions is None else partitions
        self.assigned: list[TopicPartition] = []
        self.seeks: dict[TopicPartition, int] = {}
        self.closed = False
        self.played = threading.Event()
        self.offsets: dict[str, int] = {}
        self.first = 0
        self.end = 100

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions or None

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.end for tp in partitions}

    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.first for tp in partitions}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks[partition] = offset

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        if not self.script:
            self.played.set()
            time.sleep(0.005)
            return {}
        item = self.script.popleft()
        if isinstance(item, Exception):
            raise item
        if not isinstance(item, dict):
            item = {"CleanSensorData": item}
        polled = {}
        for topic, values in item.items():  # {topic: values}, each value at the next offset of partition 0
            first = self.offsets.get(topic, 0)
            self.offsets[topic] = first + len(values)
            polled[TopicPartition(topic, 0)] = [Record(v, first + i) for i, v in enumerate(values)]
        return polled

    def close(self) -> None:
        self.closed = True


class Factory:
    """Hands out the given consumers in turn, or raises the given exceptions (a broker down)."""

    def __init__(self, *items: FakeConsumer | Exception) -> None:
        self.items = deque(items)
        self.made: list[FakeConsumer] = []

    def __call__(self) -> FakeConsumer:
        item = self.items.popleft() if self.items else FakeConsumer([])
        if isinstance(item, Exception):
            raise item
        self.made.append(item)
        return item


class NoOffsets:
    """The meter's broker, answering nothing (the meter's own tests are in test_dashboard_meter.py)."""

    def end_offsets(self, topics: list[str]) -> dict[str, dict[int, int]]:
        return {}

    def beginning_offsets(self, topic: str) -> dict[int, int]:
        return {}

    def committed(self, group: str, topic: str) -> dict[int, int]:
        return {}

    def close(self) -> None:
        pass


def make_hub(factory: Any, **options: Any) -> Hub:
    """A hub on fake Kafka clients: ``factory`` for its consumer, :class:`NoOffsets` for its meter."""
    meter = PipelineMeter(Settings(), offsets_factory=NoOffsets, every=0.01)
    return Hub(Settings(), history=12, consumer_factory=factory, meter=meter, **options)


def wait_until(condition: Callable[[], bool], timeout: float = 5) -> None:
    wait_for(condition, timeout, "the hub", interval=0.005)


@pytest.fixture
def run_hub() -> Any:
    """Start a hub on the given factory and wait until its last consumer played its script."""
    hubs: list[Hub] = []

    def run(factory: Factory, **options: Any) -> Hub:
        hub = make_hub(factory, backoff=0.01, **options)
        hubs.append(hub)
        hub.start()
        wait_until(lambda: not factory.items and bool(factory.made) and factory.made[-1].played.is_set())
        return hub

    yield run
    for hub in hubs:
        assert hub.stop(timeout=5)


# --- what arrives on the topic --------------------------------------------------------------------

HOSTILE: dict[str, Any] = {
    "not JSON": b"not json",
    "not UTF-8": b'{"Beach": "\xff\xfe"}',
    "a JSON array": b"[1, 2]",
    "a JSON string": b'"text"',
    "a JSON number": b"42",
    "JSON null": b"null",
    "no value (tombstone)": None,
    "empty": b"",
    "missing Beach": without("Beach"),
    "missing MeasurementID": without("MeasurementID"),
    "missing TimeStamp": without("TimeStamp"),
    "missing Turbidity": without("Turbidity"),
    "Beach a number": clean(Beach=5),
    "Beach empty": clean(Beach=" "),
    "MeasurementID text": clean(MeasurementID="x"),
    "MeasurementID float": clean(MeasurementID=1.5),
    "MeasurementID boolean": clean(MeasurementID=True),
    "MeasurementID zero": clean(MeasurementID=0),
    "MeasurementID over 2^63-1": clean(MeasurementID=2**63),
    "TimeStamp a number": clean(TimeStamp=5),
    "TimeStamp not ISO": clean(TimeStamp="yesterday"),
    "TimeStamp without offset": clean(TimeStamp="2024-07-01T03:00:00"),
    "TimeStamp huge": clean(TimeStamp="2024" * 10_000),
    "metric text": clean(WaterTemperature="warm"),
    "metric boolean": clean(Turbidity=True),
    "metric null": clean(BatteryLife=None),
    "metric NaN": b'{"Beach": "A", "MeasurementID": 1, "BatteryLife": NaN, "WaterTemperature": 1, "Turbidity": 1, "TimeStamp": "2024-07-01T03:00:00Z"}',
    "metric overflows to infinity": clean().replace(b'"Turbidity": 1.25', b'"Turbidity": 1e400'),
    "metric a 400-digit integer": clean().replace(b'"Turbidity": 1.25', b'"Turbidity": 1' + b"0" * 400),
    "metric a 5000-digit integer": clean().replace(b'"Turbidity": 1.25', b'"Turbidity": 1' + b"0" * 5000),
    "nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "a megabyte": clean(RawData="x" * 1_000_000),
    "not bytes": 12345,
}


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_value_that_is_not_a_clean_reading_is_rejected_with_a_reason(value: Any) -> None:
    with pytest.raises(Rejected) as rejected:
        parse_clean(value)
    assert str(rejected.value)


def test_a_clean_reading_parses_with_a_utc_timestamp_and_float_metrics() -> None:
    message = parse_clean(clean(7, WaterTemperature=21, TimeStamp="2024-07-01T05:00:00.000+02:00"))
    assert message["MeasurementID"] == 7 and message["WaterTemperature"] == 21.0
    assert message["TimeStamp"].isoformat() == "2024-07-01T03:00:00+00:00"
    assert parse_clean(clean().decode())["Beach"] == "Calumet Beach"  # str values too


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_loop_counts_and_skips_a_bad_value_and_keeps_delivering(run_hub: Any, value: Any) -> None:
    factory = Factory(FakeConsumer([[clean(1), value, clean(2)], [clean(3)]]))
    hub = run_hub(factory)
    received: list[int] = [m["MeasurementID"] for m in hub.recent]
    health = hub.health()
    assert received == [1, 2, 3]
    assert health["alive"] and health["connected"]
    assert health["messages"] == 4 and health["received"] == 3 and health["rejected"] == 1
    assert health["errors"] == 0 and len(factory.made) == 1


def test_rejections_are_logged_at_most_once_per_interval(run_hub: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sensor_pipeline.dashboard"):
        hub = run_hub(Factory(FakeConsumer([[b"junk"] * 500, [clean(1)]])), log_every=3600)
    assert hub.health()["rejected"] == 500 and hub.received == 1
    [line] = [r.getMessage() for r in caplog.records if "not a clean reading" in r.getMessage()]
    assert "CleanSensorData" in line and "not JSON" in line and "b'junk'" in line


def test_the_throttle_reports_how_many_lines_it_held_back() -> None:
    now = [0.0]
    throttle = Throttle(10, clock=lambda: now[0])
    assert throttle() == 0
    assert [throttle() for _ in range(3)] == [None, None, None]
    now[0] = 10.0
    assert throttle() == 3 and throttle() is None


# --- errors of the loop ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [KafkaConnectionError("connection refused"), OSError("network unreachable"), RuntimeError("a bug")],
    ids=lambda e: type(e).__name__,
)
def test_an_error_in_the_loop_closes_the_consumer_and_a_new_one_goes_on(
    run_hub: Any, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = FakeConsumer([[clean(1)], error]), FakeConsumer([[clean(2)]])
    with caplog.at_level(logging.WARNING, logger="sensor_pipeline.dashboard"):
        hub = run_hub(Factory(first, second))
    health = hub.health()
    assert first.closed and not second.closed
    assert [m["MeasurementID"] for m in hub.recent] == [1, 2]
    assert health["alive"] and health["errors"] == 1
    assert health["last_error"].startswith(type(error).__name__) and health["last_error_at"]
    assert "a new consumer starts in" in caplog.text


def test_a_broker_down_when_the_consumer_starts_is_retried(run_hub: Any) -> None:
    down = KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:9092']")
    hub = run_hub(Factory(down, down, FakeConsumer([[clean(1)]])))
    assert hub.received == 1 and hub.health()["errors"] == 2


def test_a_topic_without_partitions_yet_is_waited_for(run_hub: Any) -> None:
    empty = FakeConsumer([], partitions=set())
    factory = Factory(empty, FakeConsumer([[clean(1)]]))
    hub = run_hub(factory)
    assert empty.closed and hub.received == 1
    assert "has no partitions yet" in hub.health()["last_error"]


def test_a_failing_ingest_skips_the_batch_but_keeps_the_consumer(run_hub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = Hub.ingest

    def ingest(self: Hub, readings: list[tuple[dict[str, Any], float]]) -> None:
        calls.append(len(readings))
        if len(calls) == 1:
            raise TypeError("can't compare offset-naive and offset-aware datetimes")
        original(self, readings)

    monkeypatch.setattr(Hub, "ingest", ingest)
    factory = Factory(FakeConsumer([[clean(1)], [clean(2)]]))
    hub = run_hub(factory)
    assert [m["MeasurementID"] for m in hub.recent] == [2]
    assert len(factory.made) == 1 and hub.health()["errors"] == 1


def test_the_consumer_reads_both_output_topics_from_recent_history(run_hub: Any) -> None:
    consumer = FakeConsumer([], partitions={0, 1, 2})
    run_hub(Factory(consumer))
    assert [(tp.topic, tp.partition) for tp in consumer.assigned] == [
        *(("CleanSensorData", p) for p in range(3)),
        *(("InvalidSensorData", p) for p in range(3)),
    ]
    seeks = {(tp.topic, tp.partition): offset for tp, offset in consumer.seeks.items()}
    assert {seeks["CleanSensorData", p] for p in range(3)} == {100 - 12 // 3}  # history 12 over 3 partitions
    assert {seeks["InvalidSensorData", p] for p in range(3)} == {0}  # 2,000 letters back: the start


# --- stop and health ------------------------------------------------------------------------------


def test_stop_ends_the_thread_and_closes_the_consumer() -> None:
    factory = Factory(FakeConsumer([[clean(1)]]))
    hub = make_hub(factory, backoff=0.01)
    hub.start()
    wait_until(lambda: hub.received == 1)
    assert hub.stop(timeout=5)
    assert factory.made[0].closed
    assert not hub.health()["alive"] and not hub.health()["connected"]


def test_stop_during_a_backoff_ends_promptly() -> None:
    hub = make_hub(Factory(KafkaTimeoutError("down")), backoff=60)
    hub.start()
    wait_until(lambda: hub.health()["errors"] == 1)
    assert hub.stop(timeout=5), "the stop waited out the 60 s backoff"


def test_health_is_a_json_snapshot_before_and_after_start(run_hub: Any) -> None:
    idle = make_hub(Factory())
    assert idle.health() == {
        "alive": False,
        "connected": False,
        "messages": 0,
        "received": 0,
        "rejected": 0,
        "not_shown": 0,
        "errors": 0,
        "last_message_at": None,
        "last_error": None,
        "last_error_at": None,
    }
    hub = run_hub(Factory(FakeConsumer([[clean(1), b"junk"]])))
    snapshot = json.loads(json.dumps(hub.health()))
    assert snapshot["messages"] == 2 and snapshot["last_message_at"].endswith("+00:00")


# --- what it keeps --------------------------------------------------------------------------------


def letter(reason: Any) -> bytes:
    return json.dumps({"RawData": "x", "Reason": reason, "Detail": "...", "Source": {}, "RejectedAt": "..."}).encode()


def test_dead_letters_are_counted_by_reason_whatever_they_hold(run_hub: Any) -> None:
    letters = [
        letter("bad_shape"),
        letter("bad_shape"),
        letter("out_of_range"),
        b"junk",
        None,
        letter(5),
        letter("x" * 99),
    ]
    hub = run_hub(Factory(FakeConsumer([{"InvalidSensorData": letters, "CleanSensorData": [clean(1)]}])))
    assert hub.letters == 7 and hub.received == 1
    assert hub.snapshot(None)["reasons"] == {"unreadable": 4, "bad_shape": 2, "out_of_range": 1}


def test_a_snapshot_holds_views_badges_and_the_delay_of_the_last_minute(run_hub: Any) -> None:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 2))
    readings = [clean(i, TimeStamp=stamp, Turbidity=60.0 if i == 3 else 1.0) for i in range(1, 4)]
    hub = run_hub(Factory(FakeConsumer([readings, [clean(2, TimeStamp=stamp)]])))  # 2 again: counted once
    snapshot = hub.snapshot(300.0)
    [view] = snapshot["views"].values()
    assert view.count.sum() == 3 and view.width == 1
    assert snapshot["delay"]["count"] == 3 and 2 <= snapshot["delay"]["p50"] <= 4
    assert set(snapshot["badges"]) == {*BEACHES, "Calumet Beach"}  # the six beaches, even before data
    assert [b.level for b in snapshot["badges"]["Calumet Beach"]] == ["alert"]  # very turbid: the latest (id 3)
    assert snapshot["pipeline"]["rates"] == {"in": None, "clean": None, "dead": None}


def test_a_new_consumer_resumes_where_the_last_one_stopped_within_recent_history(run_hub: Any) -> None:
    first = FakeConsumer(
        [{"InvalidSensorData": [letter("bad_shape")] * 3, "CleanSensorData": [clean(1)]}, OSError("x")]
    )
    second, third, fourth = FakeConsumer([]), FakeConsumer([]), FakeConsumer([])
    second.end = 4
    third.end, third.first = 10_000, 9_000  # a long outage: resume in recent history, not the whole backlog
    fourth.end = 0  # the topics were recreated: positions past their end
    hub = run_hub(Factory(first, second))

    def seeks(consumer: FakeConsumer) -> dict[tuple[str, int], int]:
        return {(tp.topic, tp.partition): offset for tp, offset in consumer.seeks.items()}

    assert seeks(second)["InvalidSensorData", 0] == 3 and seeks(second)["CleanSensorData", 0] == 1  # no re-read
    hub._assign(third)
    assert seeks(third)["CleanSensorData", 0] == 10_000 - 12 // 2 and seeks(third)["InvalidSensorData", 0] == 9_000
    hub._assign(fourth)
    assert set(seeks(fourth).values()) == {0}


def test_made_up_beach_names_are_counted_but_not_drawn_beyond_a_few() -> None:
    hub = make_hub(Factory())
    stamp = "2024-07-01T03:00:00.000Z"
    hub.handle([Record(clean(i, Beach=f"Beach {i}", TimeStamp=stamp)) for i in range(1, 1001)])
    assert hub.received == MAX_OTHER_BEACHES and hub.not_shown == 1000 - MAX_OTHER_BEACHES
    snapshot = hub.snapshot(None)
    assert len(snapshot["views"]) == MAX_OTHER_BEACHES and len(snapshot["badges"]) == len(BEACHES) + MAX_OTHER_BEACHES


def test_ranges_end_now_for_live_readings_and_at_the_newest_for_a_replay() -> None:
    now = [1_800_000_000.0]
    hub = Hub(Settings(), history=0, meter=make_hub(Factory()).meter, wall=lambda: now[0])
    hub.handle([Record(clean(1, TimeStamp="2014-07-01T03:00:00.000Z"))])
    replay = hub.snapshot(300.0)
    assert not replay["live"] and replay["end"] == datetime(2014, 7, 1, 3, tzinfo=UTC).timestamp()
    live = datetime.fromtimestamp(now[0] - 2, UTC).isoformat()
    for mid in (2, 3):  # a mixed stream does not flip the mode at every poll
        hub.handle([Record(clean(mid, TimeStamp=live))])
        assert not hub.snapshot(300.0)["live"]
    hub.handle([Record(clean(4, TimeStamp=live))])
    now[0] += 0.5
    assert hub.snapshot(300.0)["live"] and hub.snapshot(300.0)["end"] == now[0]


def test_live_history_read_long_after_is_still_live() -> None:
    """A dashboard started while the job has been down for an hour: the readings are an hour old, but
    they were published seconds after they were taken: live, and the range ends now (a gap shows)."""
    now = 1_800_000_000.0
    hub = Hub(Settings(), history=0, meter=make_hub(Factory()).meter, wall=lambda: now)
    taken = datetime.fromtimestamp(now - 3600, UTC).isoformat()
    hub.handle([Record(clean(1, TimeStamp=taken), timestamp=int((now - 3599) * 1000))])
    assert hub.snapshot(300.0)["live"] and hub.snapshot(300.0)["end"] == now


def test_a_reading_stamped_ahead_does_not_hide_the_next_ones() -> None:
    now = [1_800_000_000.0]
    hub = Hub(Settings(), history=0, meter=make_hub(Factory()).meter, wall=lambda: now[0])
    ahead = datetime.fromtimestamp(now[0] + 240, UTC).isoformat()  # the rules accept 5 minutes ahead
    hub.handle([Record(clean(1, TimeStamp=ahead, Turbidity=80.0))])
    now[0] += 10
    hub.handle([Record(clean(2, TimeStamp=datetime.fromtimestamp(now[0], UTC).isoformat(), Turbidity=1.0))])
    assert hub.snapshot(300.0)["latest"]["Calumet Beach"]["MeasurementID"] == 2
    assert [b.text for b in hub.snapshot(300.0)["badges"]["Calumet Beach"]] == ["clear (1.00 NTU)"]


def test_record_times_in_the_future_count_as_now() -> None:
    now = 1_800_000_000.0
    hub = Hub(Settings(), history=0, meter=make_hub(Factory()).meter, wall=lambda: now)
    stamp = datetime.fromtimestamp(now - 1, UTC).isoformat()
    future_ms = int((now + 86_400) * 1000)
    hub.handle([Record(clean(1, TimeStamp=stamp), timestamp=future_ms)])
    hub.handle_letters([Record(letter("bad_id"), timestamp=future_ms)])
    snapshot = hub.snapshot(None)
    assert snapshot["delay"]["count"] == 1 and snapshot["delay"]["p50"] is not None
    assert snapshot["reasons"] == {"bad_id": 1} and set(hub.reasons) == {int(now)}


def test_only_the_most_frequent_reasons_are_named() -> None:
    hub = make_hub(Factory())
    hub.handle_letters([Record(letter(f"reason_{i}")) for i in range(20) for _ in range(i + 1)])
    reasons = hub.snapshot(None)["reasons"]
    assert list(reasons)[:TOP_REASONS] == [f"reason_{i}" for i in range(19, 19 - TOP_REASONS, -1)]
    assert reasons["other"] == sum(range(1, 21)) - sum(range(20 - TOP_REASONS + 1, 21))


def test_a_kafka_client_that_cannot_bootstrap_leaves_no_thread_behind() -> None:
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient

    from sensor_pipeline.dashboard.meter import kafka_client

    def io_threads() -> int:
        return sum(t.name.startswith("kafka-io") for t in threading.enumerate())

    before = io_threads()
    for cls in (KafkaConsumer, KafkaAdminClient):
        with pytest.raises(KafkaTimeoutError):
            kafka_client(cls, bootstrap_servers="127.0.0.1:1", bootstrap_timeout_ms=300)
    wait_until(lambda: io_threads() == before, timeout=5)
