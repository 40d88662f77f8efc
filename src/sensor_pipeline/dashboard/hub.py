"""One Kafka consumer per dashboard server, fanning CleanSensorData out to every browser session.

The consumer runs in its own thread, never on Bokeh's event loop. It keeps recent history (so a
new session starts with data) and hands each batch to every registered session through that
session's ``doc.add_next_tick_callback``, the thread-safe way into a Bokeh document. Messages are
deduplicated by MeasurementID (the clean topic is at-least-once across a job crash).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from sensor_pipeline.config import Settings
from sensor_pipeline.dashboard.shaping import newer, parse_message

log = logging.getLogger("sensor_pipeline.dashboard")
Listener = Callable[[list[dict[str, Any]]], None]


class Hub:
    def __init__(self, settings: Settings, history: int) -> None:
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

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

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

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        while not self._stop.is_set():
            try:
                consumer = KafkaConsumer(
                    **self.settings.kafka_client_options(),
                    client_id="sensor-pipeline-dashboard",
                    enable_auto_commit=False,
                    consumer_timeout_ms=1000,
                )
                partitions = [
                    TopicPartition(self.settings.clean_topic, p)
                    for p in sorted(consumer.partitions_for_topic(self.settings.clean_topic) or [])
                ]
                if not partitions:
                    raise KafkaError(f"topic {self.settings.clean_topic} has no partitions yet")
                consumer.assign(partitions)
                # Start with recent history: the last `history / partitions` messages of each partition.
                ends = consumer.end_offsets(partitions)
                back = max(self.history.maxlen or 0, 1) // len(partitions)
                for tp in partitions:
                    consumer.seek(tp, max(ends[tp] - back, 0))
                while not self._stop.is_set():
                    batches = consumer.poll(timeout_ms=500, max_records=5000)
                    parsed = [parse_message(r.value) for records in batches.values() for r in records]
                    messages = [m for m in parsed if m is not None]
                    if messages:
                        self.publish(messages)
            except KafkaError as error:
                log.warning("clean topic consumer: %s; retrying in 3 s", error)
                self._stop.wait(3)


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
    if _shared is not None:
        _shared.stop()
