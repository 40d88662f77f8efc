"""The producer's delivery policy, with a fake Kafka client: no broker, no API.

What is retried (errors Kafka marks retriable, at start-up and later), what stops the producer (the
others, with exit code 2), and how a stop with the broker down ends within the shutdown timeout
with the undelivered readings counted.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka.errors import (
    IllegalStateError,
    KafkaConfigurationError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
)
from tenacity import wait_fixed, wait_none

from sensor_pipeline.config import Settings
from sensor_pipeline.source import producer as producer_module
from sensor_pipeline.source.producer import EXIT_FATAL, EXIT_OK, EXIT_UNDELIVERED, Producer

LINES = [f"2024-07-01T0{i}:00:00.000000 20.00 1.00 11.00 {beach} {i + 1}" for i, beach in enumerate("ABCABC")]


class FakeFuture:
    """Like kafka-python's future: a callback added after it settled runs at once."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], None]] = []
        self.errbacks: list[Callable[[BaseException], None]] = []
        self.outcome: tuple[bool, Any] | None = None

    def add_callback(self, callback: Callable[[Any], None]) -> None:
        self.callbacks.append(callback)
        if self.outcome and self.outcome[0]:
            callback(self.outcome[1])

    def add_errback(self, errback: Callable[[BaseException], None]) -> None:
        self.errbacks.append(errback)
        if self.outcome and not self.outcome[0]:
            errback(self.outcome[1])

    def succeed(self) -> None:
        self.outcome = (True, object())
        for callback in self.callbacks:
            callback(self.outcome[1])

    def fail(self, error: BaseException) -> None:
        self.outcome = (False, error)
        for errback in self.errbacks:
            errback(error)


class FakeKafka:
    """A KafkaProducer whose broker the test controls.

    ``send_errors`` are raised by the next sends, ``delivery_errors`` fail the next deliveries; with
    ``broker_up`` false nothing is ever acknowledged and ``flush`` times out like the real one;
    ``acks_on_send`` settles each send at once, as a fast broker would before the next reading.
    """

    def __init__(self, broker_up: bool = True, acks_on_send: bool = False) -> None:
        self.broker_up = broker_up
        self.acks_on_send = acks_on_send
        self.send_errors: list[KafkaError] = []
        self.delivery_errors: list[BaseException] = []
        self.pending: list[tuple[str | None, str, FakeFuture]] = []
        self.delivered: list[tuple[str | None, str]] = []
        self.attempts = 0
        #: What each flush was allowed to wait: a stop is bounded by what the producer asks for.
        self.flush_timeouts: list[float] = []
        self.closed = False

    def send(self, topic: str, key: str | None = None, value: str | None = None) -> FakeFuture:
        self.attempts += 1
        if self.send_errors:
            raise self.send_errors.pop(0)
        assert value is not None and not self.closed
        future = FakeFuture()
        self.pending.append((key, value, future))
        if self.acks_on_send:
            self.flush()
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.flush_timeouts.append(float("inf") if timeout is None else timeout)
        if not self.broker_up:
            time.sleep(timeout or 0)
            raise KafkaTimeoutError("Timeout waiting for future")
        while self.pending:
            key, value, future = self.pending.pop(0)
            if self.delivery_errors:
                future.fail(self.delivery_errors.pop(0))
            else:
                self.delivered.append((key, value))
                future.succeed()

    def close(self, timeout: float | None = None) -> None:
        self.closed = True
        aborted, self.pending = self.pending, []
        for _, _, future in aborted:  # what kafka-python's force close does to what is left
            future.fail(IllegalStateError("Producer is closed forcefully."))


class Factory:
    """Stands in for make_producer: raises ``errors`` in turn, then hands out ``client``."""

    def __init__(self, client: FakeKafka, errors: list[KafkaError] | None = None) -> None:
        self.client = client
        self.errors = list(errors or [])
        self.calls = 0

    def __call__(self) -> FakeKafka:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.client


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_module, "SEND_RETRY_WAIT", 0.01)
    monkeypatch.setattr(producer_module, "DRAIN_TIMEOUT", 5.0)


def make(factory: Factory, shutdown_timeout: float = 0.5, wait: Any = None) -> Producer:
    return Producer(
        Settings(producer_rate=0),
        kafka_factory=factory,
        wait=wait or wait_none(),
        shutdown_timeout=shutdown_timeout,
    )


def lines_then(action: Callable[[], None], after: int, total: int = len(LINES)) -> Iterator[str]:
    """The test lines, calling ``action`` (a stop request, a signal) after ``after`` of them."""
    for index, line in enumerate(LINES[:total]):
        if index == after:
            action()
        yield line


# --- start-up ---------------------------------------------------------------------------------


def test_a_broker_down_at_start_up_is_waited_for_like_one_lost_later() -> None:
    kafka = FakeKafka()
    factory = Factory(kafka, [KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:9092']")] * 3)
    assert make(factory).run(iter(LINES)) == EXIT_OK
    assert factory.calls == 4
    assert kafka.delivered == [(line.split()[4], line) for line in LINES]


@pytest.mark.parametrize(
    "error", [KafkaConfigurationError("bad option"), SaslAuthenticationFailedError("wrong password")]
)
def test_a_non_retriable_error_at_start_up_stops_at_once_with_one_line_and_exit_2(
    error: KafkaError, caplog: pytest.LogCaptureFixture
) -> None:
    factory = Factory(FakeKafka(), [error])
    with caplog.at_level(logging.ERROR, logger="sensor_pipeline.source.producer"):
        assert make(factory).run(iter(LINES)) == EXIT_FATAL
    assert factory.calls == 1
    [message] = [r.getMessage() for r in caplog.records if "not retriable" in r.getMessage()]
    assert type(error).__name__ in message and "\n" not in message


@pytest.mark.timeout(20)  # a stop that is not honoured waits out the 30 s backoff
def test_a_stop_while_waiting_for_the_broker_at_start_up_ends_the_backoff(caplog: pytest.LogCaptureFixture) -> None:
    factory = Factory(FakeKafka(), [KafkaTimeoutError("Unable to bootstrap")] * 1000)
    producer = make(factory, wait=wait_fixed(30))
    threading.Timer(0.2, producer.request_stop).start()
    with caplog.at_level(logging.INFO, logger="sensor_pipeline.source.producer"):
        assert producer.run(iter(LINES)) == EXIT_OK  # nothing was read, so nothing was lost
    assert factory.calls == 1, "the stop ended the first 30 s wait: no second attempt"
    assert "nothing was read" in caplog.text


# --- which errors are retried -------------------------------------------------------------------------

RETRIABLE = [
    KafkaTimeoutError("Failed to update metadata after 2.0 secs."),
    KafkaConnectionError("connection refused"),
    NotLeaderForPartitionError(),
    RequestTimedOutError(),
]
NOT_RETRIABLE = [
    MessageSizeTooLargeError("The message is 2000000 bytes"),
    TopicAuthorizationFailedError("RawSensorData"),
]


@pytest.mark.parametrize("error", RETRIABLE, ids=lambda e: type(e).__name__)
def test_a_retriable_error_from_send_is_waited_out_and_nothing_is_lost(error: KafkaError) -> None:
    kafka = FakeKafka()
    kafka.send_errors = [error, error]
    assert make(Factory(kafka)).run(iter(LINES)) == EXIT_OK
    assert [value for _, value in kafka.delivered] == LINES


@pytest.mark.parametrize("error", RETRIABLE, ids=lambda e: type(e).__name__)
def test_a_retriable_delivery_failure_is_sent_again(error: KafkaError) -> None:
    kafka = FakeKafka()
    kafka.delivery_errors = [error]
    producer = make(Factory(kafka))
    assert producer.run(iter(LINES)) == EXIT_OK
    assert sorted(value for _, value in kafka.delivered) == sorted(LINES)
    assert producer.counters.failed_attempts == 1 and producer.counters.sent == len(LINES)


@pytest.mark.parametrize("error", NOT_RETRIABLE, ids=lambda e: type(e).__name__)
def test_a_non_retriable_error_from_send_stops_the_producer_with_exit_2(
    error: KafkaError, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = FakeKafka()
    kafka.send_errors = [error]
    producer = make(Factory(kafka))
    with caplog.at_level(logging.ERROR, logger="sensor_pipeline.source.producer"):
        assert producer.run(iter(LINES)) == EXIT_FATAL
    assert kafka.attempts == 1 and producer.counters.read == 1  # not retried, nothing more read
    assert any("not retriable" in r.getMessage() and type(error).__name__ in r.getMessage() for r in caplog.records)
    assert "1 readings could not be delivered" in caplog.text


@pytest.mark.parametrize("error", NOT_RETRIABLE, ids=lambda e: type(e).__name__)
def test_a_non_retriable_delivery_failure_stops_the_producer_without_resending(error: KafkaError) -> None:
    kafka = FakeKafka(acks_on_send=True)
    kafka.delivery_errors = [error]
    producer = make(Factory(kafka))
    assert producer.run(iter(LINES)) == EXIT_FATAL
    assert producer.fatal is error
    assert kafka.attempts == 1 and producer.counters.read == 1  # not sent again, nothing more read


# --- shutdown with the broker down --------------------------------------------------------------------


def test_a_stop_with_the_broker_down_ends_within_the_timeout_and_counts_what_was_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = FakeKafka(broker_up=False)
    producer = make(Factory(kafka), shutdown_timeout=0.5)
    with caplog.at_level(logging.INFO, logger="sensor_pipeline.source.producer"):
        assert producer.run(lines_then(producer.request_stop, after=4)) == EXIT_UNDELIVERED
    assert kafka.flush_timeouts and sum(kafka.flush_timeouts) <= 0.5, kafka.flush_timeouts
    assert kafka.closed and producer.counters.read == 5  # the line read with the stop is still sent
    assert "5 readings could not be delivered to RawSensorData" in caplog.text
    assert "pending 5" in caplog.text


def test_a_stop_while_a_send_waits_for_metadata_ends_within_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    kafka = FakeKafka(broker_up=False)
    kafka.send_errors = [KafkaTimeoutError("Failed to update metadata after 2.0 secs.")] * 10_000
    producer = make(Factory(kafka), shutdown_timeout=0.5)
    threading.Timer(0.3, producer.request_stop).start()
    with caplog.at_level(logging.ERROR, logger="sensor_pipeline.source.producer"):
        assert producer.run(iter(LINES)) == EXIT_UNDELIVERED
    assert sum(kafka.flush_timeouts) <= 0.5, kafka.flush_timeouts
    assert "1 readings could not be delivered" in caplog.text


def test_a_stop_during_a_long_drain_shortens_it_to_the_shutdown_timeout() -> None:
    kafka = FakeKafka(broker_up=False)
    producer = make(Factory(kafka), shutdown_timeout=0.3)
    threading.Timer(0.3, producer.request_stop).start()  # while close() waits DRAIN_TIMEOUT (5 s here)
    assert producer.run(iter(LINES), count=3) == EXIT_UNDELIVERED
    # about 0.3 s of drain before the stop, then at most the 0.3 s shutdown timeout, not the 5 s drain
    assert sum(kafka.flush_timeouts) < 1.5, kafka.flush_timeouts


def test_reading_pauses_while_too_many_readings_wait_for_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_module, "MAX_PENDING", 3)
    kafka = FakeKafka(broker_up=False)
    producer = make(Factory(kafka), shutdown_timeout=0.2)
    threading.Timer(0.3, producer.request_stop).start()
    assert producer.run(iter(LINES)) == EXIT_UNDELIVERED
    assert producer.counters.read == 3


def test_sigterm_with_the_broker_down_exits_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = FakeKafka(broker_up=False)
    monkeypatch.setattr(producer_module, "make_producer", lambda settings: kafka)
    monkeypatch.setattr(
        Producer, "stream_lines", lambda self: lines_then(lambda: os.kill(os.getpid(), signal.SIGTERM), after=2)
    )
    before = signal.getsignal(signal.SIGTERM)
    with caplog.at_level(logging.INFO, logger="sensor_pipeline.source.producer"):
        assert producer_module.main(Settings(producer_rate=0, producer_shutdown_timeout=0.5)) == EXIT_UNDELIVERED
    assert kafka.flush_timeouts and sum(kafka.flush_timeouts) <= 0.5, kafka.flush_timeouts
    assert "SIGTERM: stopping" in caplog.text and "3 readings could not be delivered" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


# --- configuration --------------------------------------------------------------------------------


def test_the_client_keeps_each_beachs_order_through_its_own_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: dict[str, Any] = {}
    monkeypatch.setattr(producer_module, "KafkaProducer", lambda **options: captured.update(options))
    producer_module.make_producer(Settings())
    assert captured["enable_idempotence"] is True and captured["acks"] == "all"
    # Idempotence needs retries > 0 and at most 5 requests in flight: left at kafka-python's defaults.
    assert "retries" not in captured and "max_in_flight_requests_per_connection" not in captured
    # Batches never expire while the producer runs, so the client (not us) resends, in order.
    assert captured["delivery_timeout_ms"] >= 24 * 3600 * 1000
    # Blocking calls return within seconds, so a stop request is seen while the broker is down.
    assert captured["max_block_ms"] <= 5000 and captured["bootstrap_timeout_ms"] <= 10_000
