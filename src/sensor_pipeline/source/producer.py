"""The producer: readings from the sensor API into Kafka topic ``RawSensorData``, keyed by beach.

Run: ``sensor-pipeline produce [--count N] [--rate R] [--source stream|poll]``.

- Reads the API's chunked stream (``/sensordata/stream``), or polls ``/sensordata?count=B``.
- Idempotent producer, ``acks=all``, keyed by beach: each beach's readings stay in order, through
  the client's own resends too (see :func:`make_producer`). Every delivery result is checked.
- An unreachable broker, at start-up or later, and an unreachable API are waited out with
  exponential backoff. Only errors Kafka marks retriable are retried; any other (authorization, a
  message too large, bad configuration) stops the producer with one line saying what failed.
- A rate limit (readings/s, token bucket) and a progress line every ``SP_PRODUCER_LOG_EVERY`` s.
  Reading pauses while ``MAX_PENDING`` readings wait for the broker, so memory stays bounded.
- SIGTERM/SIGINT stop reading and flush what is in flight for at most
  ``SP_PRODUCER_SHUTDOWN_TIMEOUT`` s (10), even while the broker is down, then report.

Exit codes: 0 every reading read was delivered; 1 some were not (the log says how many); 2 a
non-retriable Kafka error stopped the producer.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import urllib3
from kafka import KafkaProducer
from kafka.errors import KafkaError
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    before_sleep_log,
    retry_if_exception,
    retry_if_exception_type,
    wait_exponential,
)
from tenacity.wait import WaitBaseT

from sensor_pipeline.config import Settings
from sensor_pipeline.contract.rules import beach_key

log = logging.getLogger("sensor_pipeline.source.producer")

EXIT_OK, EXIT_UNDELIVERED, EXIT_FATAL = 0, 1, 2
#: Seconds the producer waits for the broker after the source ran out (``--count`` reached).
DRAIN_TIMEOUT = 60.0
#: Readings handed to the client but not yet acknowledged before reading pauses. kafka-python 3 has
#: no ``buffer_memory`` bound, so without this an outage would grow the buffer without limit.
MAX_PENDING = 50_000
#: Pause between attempts to hand a reading to a client that refused it with a retriable error.
SEND_RETRY_WAIT = 0.5
#: The client keeps retrying a batch for a week: long enough never to expire while this runs.
DELIVERY_TIMEOUT_MS = 7 * 24 * 3600 * 1000
BOOTSTRAP_TIMEOUT_MS = 5_000
MAX_BLOCK_MS = 2_000
CLOSE_TIMEOUT = 1.0


class SourceUnavailable(ConnectionError):
    """The sensor API did not answer (it is retried with backoff)."""


class Stopped(Exception):
    """A backoff wait was cut short because the producer is stopping."""


class KafkaSender(Protocol):
    """What the producer uses of :class:`kafka.KafkaProducer` (a fake in unit tests)."""

    def send(self, topic: str, key: str | None = None, value: str | None = None) -> Any: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self, timeout: float | None = None) -> None: ...


def retriable(error: BaseException) -> bool:
    """Whether Kafka says ``error`` may go away by itself (a broker down, a leader moving)."""
    return isinstance(error, KafkaError) and bool(error.retriable)


@dataclass
class Counters:
    read: int = 0
    sent: int = 0
    failed_attempts: int = 0
    started: float = field(default_factory=time.monotonic)


class RateLimiter:
    """Token bucket: at most ``rate`` acquisitions per second on average, bursts up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(rate, 1.0)
        self.stamp = time.monotonic()

    def acquire(self, stop: threading.Event) -> None:
        if self.rate <= 0:
            return
        while not stop.is_set():
            now = time.monotonic()
            self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            stop.wait((1 - self.tokens) / self.rate)


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    options: dict[str, Any] = {
        **settings.kafka_client_options(),
        "client_id": "sensor-pipeline-producer",
        "acks": "all",
        # Each beach's order survives resends. The key puts a beach on one partition; idempotence
        # numbers every partition's batches, so the broker refuses a batch that would overtake one
        # being retried, and the client retries (retries defaults to infinite) keeping up to 5
        # batches in flight, still in order, with no duplicates. kafka-python 3.0.12 supports it
        # against brokers >= 0.11; otherwise order would need max_in_flight_requests_per_connection=1
        # and retries, at a cost in throughput.
        "enable_idempotence": True,
        # A batch that expired would have to be sent again by us, behind newer readings of the same
        # beach; so the client retries until we stop, and we count what is left then.
        "delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
        # Blocking calls give control back within seconds, so a stop request is seen while the broker
        # is down: a start-up connection attempt and a send waiting for metadata; both are retried.
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        "max_block_ms": MAX_BLOCK_MS,
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "compression_type": "gzip",
        "key_serializer": lambda k: k.encode() if k is not None else None,
        "value_serializer": lambda v: v.encode(),
    }
    return KafkaProducer(**(options | overrides))


class Producer:
    """Moves lines from a source iterator to Kafka; see the module docstring.

    ``kafka_factory`` and ``wait`` (a tenacity wait strategy) replace the real client and the backoff
    in tests; ``shutdown_timeout`` defaults to ``SP_PRODUCER_SHUTDOWN_TIMEOUT``.
    """

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event | None = None,
        kafka_factory: Callable[[], KafkaSender] | None = None,
        wait: WaitBaseT | None = None,
        shutdown_timeout: float | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.counters = Counters()
        self.kafka: KafkaSender | None = None
        self.fatal: BaseException | None = None
        self.shutdown_timeout = settings.producer_shutdown_timeout if shutdown_timeout is None else shutdown_timeout
        self._kafka_factory = kafka_factory or partial(make_producer, settings)
        self._resend: deque[tuple[str | None, str]] = deque()
        self._in_flight = 0
        self._closing = False
        self._warned_failure = False
        self._stopped_at: float | None = None
        self._lock = threading.Lock()
        backoff = wait or wait_exponential(multiplier=0.5, max=30)
        self._retrying_api = Retrying(
            retry=retry_if_exception_type(SourceUnavailable),
            wait=backoff,
            sleep=self._backoff_sleep,
            before_sleep=before_sleep_log(log, logging.WARNING),
        )
        self._retrying_kafka = Retrying(
            retry=retry_if_exception(retriable),
            wait=backoff,
            sleep=self._backoff_sleep,
            before_sleep=self._log_kafka_retry,
        )
        self._http = urllib3.PoolManager(retries=False)

    def request_stop(self) -> None:
        """Stop reading; what is in flight gets ``shutdown_timeout`` seconds from now (signal-safe)."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self.stop.set()

    def _backoff_sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped

    def _log_kafka_retry(self, state: RetryCallState) -> None:
        if self.stop.is_set():
            return
        error = state.outcome.exception() if state.outcome else None
        pause = state.next_action.sleep if state.next_action else 0.0
        log.warning("Kafka at %s unreachable (%s); retrying in %.1f s", self.settings.kafka_bootstrap, error, pause)

    def _fail(self, error: BaseException) -> None:
        """A non-retriable error: retrying would fail the same way, so stop and say what to fix."""
        with self._lock:
            first, self.fatal = self.fatal is None, self.fatal or error
        if first:
            log.error(
                "stopping: Kafka error that is not retriable: %s; check the topic, permissions and "
                "Kafka settings (SP_KAFKA_*), then start the producer again",
                error,
            )
        self.request_stop()

    # --- sources -----------------------------------------------------------------------------

    def stream_lines(self) -> Iterator[str]:
        """Lines from ``/sensordata/stream``; reconnects with backoff when the API goes away."""
        while not self.stop.is_set():
            try:
                response = self._retrying_api(self._open, f"{self.settings.api_url}/sensordata/stream")
            except (Stopped, RetryError):
                return
            try:
                buffer = b""
                for chunk in response.stream(64 * 1024, decode_content=True):
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for raw in complete:
                        if raw:
                            yield raw.decode("utf-8", errors="replace")
                    if self.stop.is_set():
                        return
            except (urllib3.exceptions.HTTPError, OSError) as error:
                log.warning("sensor API stream interrupted (%s); reconnecting", error)
            finally:
                response.release_conn()

    def poll_lines(self) -> Iterator[str]:
        """Lines from ``/sensordata?count=B``, as the original design polled (but batched)."""
        url = f"{self.settings.api_url}/sensordata?count={self.settings.producer_batch}"
        while not self.stop.is_set():
            try:
                response = self._retrying_api(self._open, url, stream=False)
            except (Stopped, RetryError):
                return
            yield from (line for line in response.data.decode().splitlines() if line)

    def _open(self, url: str, stream: bool = True) -> urllib3.BaseHTTPResponse:
        try:
            response = self._http.request(
                "GET", url, preload_content=not stream, timeout=urllib3.Timeout(connect=5, read=30)
            )
        except urllib3.exceptions.HTTPError as error:
            raise SourceUnavailable(f"sensor API at {url} unreachable: {error}") from error
        if response.status != 200:
            raise SourceUnavailable(f"sensor API at {url} answered HTTP {response.status}")
        return response

    # --- sending -------------------------------------------------------------------------------

    def connect(self) -> bool:
        """Create the Kafka client, waiting out a broker that is down; False if stopped first or refused."""
        if self.kafka is not None:
            return True
        if self.stop.is_set():
            return False
        try:
            self.kafka = self._retrying_kafka(self._kafka_factory)
        except Stopped:
            log.info("stopped before Kafka at %s was reachable; nothing was read", self.settings.kafka_bootstrap)
            return False
        except KafkaError as error:
            self._fail(error)
            return False
        return True

    def _pending(self) -> int:
        with self._lock:
            return self._in_flight + len(self._resend)

    def _send(self, key: str | None, line: str, until: float | None = None) -> bool:
        """Hand one reading to the client, waiting (never dropping) while it cannot take it.

        False when the producer stops, or ``until`` (monotonic) passes, first.
        """
        assert self.kafka is not None
        waiting = False
        while True:
            try:
                future = self.kafka.send(self.settings.raw_topic, key=key, value=line)
                break
            except KafkaError as error:  # metadata unavailable (broker down), or the record is refused
                if not retriable(error):
                    self._fail(error)
                    return False
                if not waiting:
                    log.warning("send blocked (%s); waiting for the broker", error)
                    waiting = True
                if self.stop.wait(SEND_RETRY_WAIT) or (until is not None and time.monotonic() >= until):
                    return False
        with self._lock:
            self._in_flight += 1
        future.add_callback(self._delivered)
        future.add_errback(partial(self._failed, key, line))
        return True

    def _delivered(self, _metadata: object) -> None:
        with self._lock:
            self._in_flight -= 1
            self.counters.sent += 1

    def _failed(self, key: str | None, line: str, error: BaseException) -> None:
        """Runs on the client's I/O thread when the client gave up on a reading."""
        first = False
        with self._lock:
            self._in_flight -= 1
            if self._closing:  # aborted by close(): counted as undelivered there
                return
            if not retriable(error):
                fatal = True
            else:
                # The client gives up on a retriable error only when it dropped a batch after a
                # producer-epoch reset. Sending it again may put it behind newer readings of its
                # beach, which is better than losing it.
                fatal = False
                self.counters.failed_attempts += 1
                self._resend.append((key, line))
                first, self._warned_failure = not self._warned_failure, True
        if fatal:
            self._fail(error)
        elif first:
            log.warning("delivery failed (%s); queued to send again (the progress line counts the rest)", error)

    def _resend_failed(self, until: float | None = None) -> bool:
        while True:
            with self._lock:
                if not self._resend:
                    return True
                key, line = self._resend.popleft()
            if not self._send(key, line, until):
                with self._lock:
                    self._resend.appendleft((key, line))
                return False

    def _wait_for_room(self) -> None:
        if self._pending() < MAX_PENDING:
            return
        log.warning("%d readings wait for the broker; reading pauses until it takes some", self._pending())
        while self._pending() >= MAX_PENDING and not self.stop.wait(0.2):
            pass

    def run(self, lines: Iterator[str], count: int | None = None, rate: float | None = None) -> int:
        """Send ``lines`` (all, or ``count``) at ``rate``/s; returns the exit code (see the module docstring)."""
        if not self.connect():
            return self.close()
        limiter = RateLimiter(self.settings.producer_rate if rate is None else rate)
        next_log = time.monotonic() + self.settings.producer_log_every
        for line in lines:
            self.counters.read += 1
            if not (self._send(beach_key(line), line) and self._resend_failed()):
                break
            if time.monotonic() >= next_log:
                self.log_progress()
                next_log += self.settings.producer_log_every
            if count is not None and self.counters.read >= count:
                break
            self._wait_for_room()
            limiter.acquire(self.stop)
            if self.stop.is_set():  # checked after the waits, so no reading is taken from the API after it
                break
        return self.close()

    def _deadline(self, drain_until: float) -> float:
        if not self.stop.is_set():
            return drain_until
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        return min(drain_until, self._stopped_at + self.shutdown_timeout)

    def close(self) -> int:
        """Flush what is in flight (sending failed readings again) until done or out of time, and report."""
        drain_until = time.monotonic() + DRAIN_TIMEOUT
        if self.kafka is not None:
            while True:
                until = self._deadline(drain_until)
                if not self.fatal:
                    self._resend_failed(until)
                remaining = until - time.monotonic()
                with self._lock:  # after a fatal error nothing is sent again: only wait for what is in flight
                    left = self._in_flight if self.fatal else self._in_flight + len(self._resend)
                if left == 0 or remaining <= 0:
                    break
                # Short slices, so a SIGTERM during a long drain shortens the deadline; a slice that
                # times out (KafkaTimeoutError) just means the loop looks at the deadline again.
                with contextlib.suppress(KafkaError):
                    self.kafka.flush(timeout=min(remaining, 0.5))
            with self._lock:
                self._closing = True
            try:
                self.kafka.close(timeout=CLOSE_TIMEOUT)
            except KafkaError as error:  # kafka-python's close raises when records are still pending
                log.debug("Kafka client closed with records pending: %s", error)
        self.log_progress()
        undelivered = self.counters.read - self.counters.sent
        if undelivered:
            log.error("%d readings could not be delivered to %s", undelivered, self.settings.raw_topic)
        if self.fatal is not None:
            return EXIT_FATAL
        return EXIT_UNDELIVERED if undelivered else EXIT_OK

    def log_progress(self) -> None:
        elapsed = max(time.monotonic() - self.counters.started, 1e-9)
        c = self.counters
        log.info(
            "read %d, delivered %d (%.1f/s), failed attempts %d, pending %d",
            c.read,
            c.sent,
            c.sent / elapsed,
            c.failed_attempts,
            c.read - c.sent,
        )


def main(settings: Settings, source: str = "stream", count: int | None = None, rate: float | None = None) -> int:
    producer = Producer(settings)

    def on_signal(signum: int, _frame: object) -> None:
        log.info(
            "%s: stopping; flushing what is in flight for at most %.0f s",
            signal.Signals(signum).name,
            producer.shutdown_timeout,
        )
        producer.request_stop()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        if not producer.connect():
            return producer.close()
        lines = producer.stream_lines() if source == "stream" else producer.poll_lines()
        log.info("producing from %s (%s) to %s", settings.api_url, source, settings.raw_topic)
        return producer.run(lines, count=count, rate=rate)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
