"""One Kafka consumer per dashboard server, fanning CleanSensorData out to every browser session.

The consumer runs in its own thread, never on Bokeh's event loop. It keeps recent history (so a
new session starts with data) and hands each batch to every registered session through that
session's ``doc.add_next_tick_callback``, the thread-safe way into a Bokeh document. Messages are
deduplicated by MeasurementID (the clean topic is at-least-once across a job crash).

Nothing it reads and no broker outage ends the thread. A value that is not a clean reading (see
:func:`parse_clean`) is counted, logged at most once every ``LOG_EVERY`` seconds, and skipped; any
other error is counted and logged the same way, the consumer is closed, and a new one starts after
``BACKOFF`` seconds. :meth:`Hub.health` tells how the consumer is doing; :meth:`Hub.stop` ends the
thread and closes the consumer.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from sensor_pipeline.config import Settings
from sensor_pipeline.dashboard.shaping import newer, parse_clean

log = logging.getLogger("sensor_pipeline.dashboard")
Listener = Callable[[list[dict[str, Any]]], None]

BACKOFF = 3.0
LOG_EVERY = 30.0
STOP_TIMEOUT = 10.0
#: Bounds each consumer start-up, so stop() is not held up by a broker that is down.
BOOTSTRAP_TIMEOUT_MS = 5_000


class Consumer(Protocol):
    """What the hub uses of :class:`kafka.KafkaConsumer` (a fake in unit tests)."""

    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def assign(self, partitions: list[Any]) -> None: ...
    def end_offsets(self, partitions: list[Any]) -> dict[Any, int]: ...
    def seek(self, partition: Any, offset: int) -> None: ...
    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]: ...
    def close(self) -> None: ...


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _preview(value: object) -> str:
    return _shorten(repr(value), 80)


def _describe(error: BaseException) -> str:
    text = str(error)
    name = type(error).__name__
    return _shorten(text if text.startswith(name) else f"{name}: {text}", 300)  # Kafka's errors name themselves


class _Throttle:
    """Lets a log line through at most once every ``every`` seconds and counts the ones held back."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.held = 0
        self._next = -math.inf

    def __call__(self) -> int | None:
        """None to hold this line back; otherwise how many were held back since the last one."""
        now = self.clock()
        if now < self._next:
            self.held += 1
            return None
        self._next = now + self.every
        held, self.held = self.held, 0
        return held


def kafka_consumer(settings: Settings) -> Consumer:
    from kafka import KafkaConsumer

    consumer: Consumer = KafkaConsumer(
        **settings.kafka_client_options(),
        client_id="sensor-pipeline-dashboard",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
    )
    return consumer


class Hub:
    """The clean topic's consumer thread and its sessions.

    ``consumer_factory``, ``backoff``, ``log_every`` and ``clock`` (monotonic seconds, for the log
    throttle) replace Kafka and timing in tests.
    """

    def __init__(
        self,
        settings: Settings,
        history: int,
        consumer_factory: Callable[[], Consumer] | None = None,
        backoff: float = BACKOFF,
        log_every: float = LOG_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self.latest: dict[str, dict[str, Any]] = {}
        self.received = 0
        self._seen: deque[int] = deque(maxlen=100_000)
        self._seen_set: set[int] = set()
        self._listeners: dict[object, Listener] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clean-topic-consumer", daemon=True)
        self._consumer_factory = consumer_factory or partial(kafka_consumer, settings)
        self._backoff = backoff
        self._reject_log = _Throttle(log_every, clock)
        self._error_log = _Throttle(log_every, clock)
        self._connected = False
        self._messages = 0
        self._rejected = 0
        self._errors = 0
        self._last_message_at: datetime | None = None
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """End the consumer thread (which closes its consumer); False if it is still running after ``timeout``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the clean topic consumer did not stop within %.0f s", timeout)
            return False
        return True

    def health(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the consumer.

        ``alive``: its thread runs; ``connected``: it has its partitions; ``messages``: values read;
        ``received``: new readings handed to sessions; ``rejected``: values that were not clean
        readings; ``errors``: failures of the loop (each followed by a backoff and a new consumer);
        times are ISO 8601 UTC.
        """
        with self._lock:
            return {
                "alive": self._thread.is_alive(),
                "connected": self._connected,
                "messages": self._messages,
                "received": self.received,
                "rejected": self._rejected,
                "errors": self._errors,
                "last_message_at": self._last_message_at.isoformat() if self._last_message_at else None,
                "last_error": self._last_error,
                "last_error_at": self._last_error_at.isoformat() if self._last_error_at else None,
            }

    def subscribe(self, key: object, listener: Listener) -> list[dict[str, Any]]:
        """Register a session; returns the history to draw first."""
        with self._lock:
            self._listeners[key] = listener
            return list(self.history)

    def unsubscribe(self, key: object) -> None:
        with self._lock:
            self._listeners.pop(key, None)

    def publish(self, messages: list[dict[str, Any]]) -> None:
        """Take parsed messages (deduplicated here) and hand them to every session."""
        with self._lock:
            fresh = []
            for message in messages:
                mid = int(message["MeasurementID"])
                if mid in self._seen_set:
                    continue
                if len(self._seen) == self._seen.maxlen:
                    self._seen_set.discard(self._seen[0])
                self._seen.append(mid)
                self._seen_set.add(mid)
                fresh.append(message)
            if not fresh:
                return
            self.received += len(fresh)
            self.history.extend(fresh)
            self.latest = newer(self.latest, fresh)
            listeners = list(self._listeners.items())
        for key, listener in listeners:
            try:
                listener(fresh)
            except Exception:  # a session that went away must not stop the feed for the others
                log.exception("dropping a dashboard session whose update failed")
                self.unsubscribe(key)

    # --- the consumer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            consumer: Consumer | None = None
            failed = False
            try:
                consumer = self._consumer_factory()
                self._assign(consumer)
                with self._lock:
                    self._connected = True
                while not self._stop.is_set():
                    batches = consumer.poll(timeout_ms=500, max_records=5000)
                    self.handle([record.value for records in batches.values() for record in records])
            except Exception as error:  # a broker outage, or a bug: the feed must go on either way
                failed = True
                self._record_error(error)
            finally:
                with self._lock:
                    self._connected = False
                if consumer is not None:
                    self._close(consumer)
            if failed:
                self._stop.wait(self._backoff)

    def _assign(self, consumer: Consumer) -> None:
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        topic = self.settings.clean_topic
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            raise KafkaError(f"topic {topic} has no partitions yet (created by `sensor-pipeline init`)")
        consumer.assign(partitions)
        # Start with recent history: the last `history / partitions` messages of each partition.
        ends = consumer.end_offsets(partitions)
        back = max(self.history.maxlen or 0, 1) // len(partitions)
        for tp in partitions:
            consumer.seek(tp, max(ends[tp] - back, 0))

    def handle(self, values: list[Any]) -> None:
        """Parse one poll's values and publish the clean readings; never raises."""
        messages = []
        for value in values:
            try:
                messages.append(parse_clean(value))
            except Exception as error:  # Rejected, or a parser bug: either way one value, not the feed
                self._record_rejected(value, error)
        with self._lock:
            self._messages += len(values)
            if values:
                self._last_message_at = datetime.now(UTC)
        if messages:
            try:
                self.publish(messages)
            except Exception as error:  # the consumer is fine: keep it, lose only this batch
                self._record_error(error, restart=False)

    def _record_rejected(self, value: object, reason: Exception) -> None:
        with self._lock:
            self._rejected += 1
        held = self._reject_log()
        if held is not None:
            log.warning(
                "skipped a %s value that is not a clean reading (%s): %s%s",
                self.settings.clean_topic,
                reason,
                _preview(value),
                f"; {held} more skipped since the last report" if held else "",
            )

    def _record_error(self, error: Exception, restart: bool = True) -> None:
        from kafka.errors import KafkaError

        with self._lock:
            self._errors += 1
            self._last_error = _describe(error)
            self._last_error_at = datetime.now(UTC)
        held = self._error_log()
        if held is not None:
            log.warning(
                "clean topic consumer: %s; %s%s",
                _describe(error),
                f"a new consumer starts in {self._backoff:g} s" if restart else "this batch is skipped",
                f" ({held} more errors since the last report)" if held else "",
                exc_info=not isinstance(error, KafkaError),  # a traceback only for what is not Kafka's
            )

    def _close(self, consumer: Consumer) -> None:
        try:
            consumer.close()
        except Exception as error:
            log.warning("closing the clean topic consumer: %s", error)


_shared: Hub | None = None


def start_shared(settings: Settings) -> Hub:
    """The process-wide hub (started once, by the Bokeh server's lifecycle hook)."""
    global _shared
    if _shared is None:
        _shared = Hub(settings, history=settings.dashboard_rollover * 6)
        _shared.start()
    return _shared


def shared() -> Hub:
    if _shared is None:
        from sensor_pipeline.config import load_settings

        return start_shared(load_settings())
    return _shared


def stop_shared() -> None:
    """Stop the process-wide hub; a later :func:`shared` starts a new one."""
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None
