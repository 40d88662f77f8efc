"""The producer: readings from the sensor API into Kafka topic ``RawSensorData``, keyed by beach.

Run: ``sensor-pipeline produce [--count N] [--rate R] [--source stream|poll]``.

- Reads the API's chunked stream (``/sensordata/stream``), or polls ``/sensordata?count=B``.
- Idempotent producer, ``acks=all``, batched (``linger_ms``, compression); every delivery result is
  checked: a send that finally fails is queued and sent again, never dropped.
- The API or the broker being down is retried with exponential backoff (tenacity).
- A rate limit (readings/s, token bucket) and a progress line every ``SP_PRODUCER_LOG_EVERY`` s.
- SIGTERM/SIGINT stop reading, flush everything in flight and exit 0; if anything could not be
  delivered the exit code is 1 and the log says how many.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from tenacity import (
    RetryError,
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_when_event_set,
    wait_exponential,
)

from sensor_pipeline.config import Settings
from sensor_pipeline.rules import beach_key

log = logging.getLogger("sensor_pipeline.producer")


class SourceUnavailable(ConnectionError):
    """The sensor API did not answer (it is retried with backoff)."""


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
        "enable_idempotence": True,  # broker-side dedup of retried batches; keeps per-key order
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "compression_type": "gzip",
        "key_serializer": lambda k: k.encode() if k is not None else None,
        "value_serializer": lambda v: v.encode(),
    }
    return KafkaProducer(**(options | overrides))


class Producer:
    """Moves lines from a source iterator to Kafka; see the module docstring."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.counters = Counters()
        self._resend: deque[tuple[str | None, str]] = deque()
        self._lock = threading.Lock()
        self._retrying = Retrying(
            retry=retry_if_exception_type((SourceUnavailable, KafkaTimeoutError)),
            wait=wait_exponential(multiplier=0.5, max=30),
            before_sleep=before_sleep_log(log, logging.WARNING),
            stop=stop_when_event_set(self.stop),
        )
        self.kafka: KafkaProducer = self._retrying(make_producer, settings)
        self._http = urllib3.PoolManager(retries=False)

    # --- sources -----------------------------------------------------------------------------

    def stream_lines(self) -> Iterator[str]:
        """Lines from ``/sensordata/stream``; reconnects with backoff when the API goes away."""
        while not self.stop.is_set():
            try:
                response = self._retrying(self._open, f"{self.settings.api_url}/sensordata/stream")
            except RetryError:  # stopped while waiting for the API
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
                response = self._retrying(self._open, url, stream=False)
            except RetryError:
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

    def _send(self, key: str | None, line: str) -> None:
        def delivered(_: object) -> None:
            with self._lock:
                self.counters.sent += 1

        def failed(error: BaseException) -> None:
            log.warning("delivery failed (%s); queued to send again", error)
            with self._lock:
                self.counters.failed_attempts += 1
                self._resend.append((key, line))

        while True:
            try:
                future = self.kafka.send(self.settings.raw_topic, key=key, value=line)
                break
            except KafkaError as error:  # buffer full (max_block_ms) or metadata unavailable: wait, never drop
                log.warning("send blocked (%s); waiting for the broker", error)
                time.sleep(1)
        future.add_callback(delivered)
        future.add_errback(failed)

    def run(self, lines: Iterator[str], count: int | None = None, rate: float | None = None) -> int:
        """Send ``lines`` (all, or ``count``) at ``rate``/s; returns the exit code (0 = nothing lost)."""
        limiter = RateLimiter(self.settings.producer_rate if rate is None else rate)
        next_log = time.monotonic() + self.settings.producer_log_every
        for line in lines:
            limiter.acquire(self.stop)
            self._send(beach_key(line), line)
            self.counters.read += 1
            while self._resend:
                self._send(*self._resend.popleft())
            if time.monotonic() >= next_log:
                self.log_progress()
                next_log += self.settings.producer_log_every
            if self.stop.is_set() or (count is not None and self.counters.read >= count):
                break
        return self.close()

    def close(self, timeout: float = 60.0) -> int:
        """Flush everything in flight (retrying failed sends) and report; 0 when all was delivered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.kafka.flush(timeout=max(deadline - time.monotonic(), 0.1))
            except KafkaError as error:
                log.warning("flush: %s", error)
            if not self._resend:
                break
            while self._resend:
                self._send(*self._resend.popleft())
        self.kafka.close(timeout=5)
        self.log_progress()
        undelivered = self.counters.read - self.counters.sent
        if undelivered:
            log.error("%d readings could not be delivered to %s", undelivered, self.settings.raw_topic)
            return 1
        return 0

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
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping after flushing what is in flight", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    producer = Producer(settings, stop)
    lines = producer.stream_lines() if source == "stream" else producer.poll_lines()
    log.info("producing from %s (%s) to %s", settings.api_url, source, settings.raw_topic)
    return producer.run(lines, count=count, rate=rate)
