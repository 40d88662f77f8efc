"""One Kafka consumer per dashboard server, aggregating the pipeline's output for every browser session.

The consumer runs in its own thread, never on Bokeh's event loop. It reads CleanSensorData (from a
little before the end: recent history) and InvalidSensorData, and keeps only aggregates: per-beach
bucketed series (:class:`~sensor_pipeline.dashboard.aggregate.Downsampler`), the latest reading and
the reading cadence per beach, end-to-end delays of the last minute (clean record timestamp minus
reading timestamp) and dead letters per reason of the last minute. Sessions pull a bounded
:meth:`Hub.snapshot` on their own loop, so the browser's work does not grow with the reading rate.
A :class:`~sensor_pipeline.dashboard.meter.PipelineMeter` thread adds rates and the job's lag from
Kafka offsets. Readings are deduplicated by MeasurementID (the clean topic is at-least-once across
a job crash).

Nothing it reads and no broker outage ends the thread. A value that is not a clean reading (see
:func:`parse_clean`) is counted, logged at most once every ``LOG_EVERY`` seconds, and skipped; any
other error is counted and logged the same way, the consumer is closed, and a new one starts after
``BACKOFF`` seconds. :meth:`Hub.health` tells how the consumer is doing; :meth:`Hub.stop` ends the
threads and closes the consumer.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import numpy as np

from sensor_pipeline.config import Settings
from sensor_pipeline.contract.schema import BEACHES
from sensor_pipeline.dashboard import status
from sensor_pipeline.dashboard.aggregate import DelayWindow, Downsampler, View
from sensor_pipeline.dashboard.meter import PipelineMeter, Throttle, kafka_client
from sensor_pipeline.dashboard.shaping import MAX_MESSAGE_BYTES, METRICS, parse_clean

log = logging.getLogger("sensor_pipeline.dashboard")

BACKOFF = 3.0
LOG_EVERY = 30.0
STOP_TIMEOUT = 10.0
#: Bounds each consumer start-up, so stop() is not held up by a broker that is down.
BOOTSTRAP_TIMEOUT_MS = 5_000
#: A fetch waits for this much data (or 200 ms).
FETCH_MIN_BYTES = 256 * 1024
#: Dead letters read back per topic at start (enough for the last minute's reasons).
LETTER_HISTORY = 2_000
#: The window of the delay percentiles and the dead-letter reasons, in seconds.
WINDOW = 60
#: A session's views of one range are computed at most this often (seconds), whatever the sessions.
VIEW_TTL = 0.5
#: The newest readings kept as they are (tests and debugging).
RECENT = 100
#: MeasurementIDs remembered for deduplication (about 15 s at 20,000 readings/s; ~20 MB).
SEEN = 300_000
#: Beaches drawn besides the six known ones; readings of more are counted, not drawn.
MAX_OTHER_BEACHES = 24
#: Dead-letter reasons listed by name; the rest are summed as "other".
TOP_REASONS = 8
#: Readings published within this many seconds of their timestamps are live (not a replayed history).
LIVE_WITHIN = 600.0
#: Consecutive polls that must agree before the live/replay mode flips (a mixed stream does not flicker).
MODE_POLLS = 3


class Consumer(Protocol):
    """What the hub uses of :class:`kafka.KafkaConsumer` (a fake in unit tests)."""

    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def assign(self, partitions: list[Any]) -> None: ...
    def end_offsets(self, partitions: list[Any]) -> dict[Any, int]: ...
    def beginning_offsets(self, partitions: list[Any]) -> dict[Any, int]: ...
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


def kafka_consumer(settings: Settings) -> Consumer:
    from kafka import KafkaConsumer

    consumer: Consumer = kafka_client(
        KafkaConsumer,
        **settings.kafka_client_options(),
        client_id="sensor-pipeline-dashboard",
        enable_auto_commit=False,
        # The job writes both topics in transactions: committed messages only, each once.
        isolation_level="read_committed",
        consumer_timeout_ms=1000,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        # Sessions refresh once a second: let the broker gather up to 200 ms of records per fetch
        # rather than answer each fetch with the few that just arrived (each round trip costs Python time).
        fetch_min_bytes=FETCH_MIN_BYTES,
        fetch_max_wait_ms=200,
    )
    return consumer


def _published_at(record: Any, default: float) -> float:
    """A record's timestamp in epoch seconds (the job's send time on the clean topic)."""
    stamp = getattr(record, "timestamp", None)
    return stamp / 1000.0 if isinstance(stamp, int) and stamp > 0 else default


def letter_reason(value: object) -> str:
    """The ``Reason`` of a dead letter, or ``unreadable`` (a letter is counted whatever it holds)."""
    try:
        raw = value.encode() if isinstance(value, str) else value
        if not isinstance(raw, bytes | bytearray) or len(raw) > MAX_MESSAGE_BYTES:
            return "unreadable"
        reason = json.loads(bytes(raw)).get("Reason")
    except (ValueError, AttributeError, RecursionError):
        return "unreadable"
    if isinstance(reason, str) and 0 < len(reason) <= 40 and reason.replace("_", "").isalnum():
        return reason
    return "unreadable"


class Hub:
    """The output topics' consumer thread, its aggregates, and the offsets meter.

    ``consumer_factory``, ``meter``, ``backoff``, ``log_every``, ``clock`` (monotonic seconds, for the
    log throttle) and ``wall`` (epoch seconds) replace Kafka and timing in tests.
    """

    def __init__(
        self,
        settings: Settings,
        history: int,
        consumer_factory: Callable[[], Consumer] | None = None,
        backoff: float = BACKOFF,
        log_every: float = LOG_EVERY,
        clock: Callable[[], float] = time.monotonic,
        meter: PipelineMeter | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.history = history
        self.series = Downsampler(len(METRICS))
        self.delays = DelayWindow(WINDOW)
        self.reasons: dict[int, Counter[str]] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        self.cadence: dict[str, status.Cadence] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.received = 0
        self.letters = 0
        #: Readings of beaches beyond MAX_OTHER_BEACHES unknown ones (counted, not drawn).
        self.not_shown = 0
        self._others = 0
        #: Whether the readings are published about when they are taken (not a replayed history).
        self.live = True
        self._mode_votes = 0
        #: Per beach, the time its latest reading counts for (its timestamp, never later than now).
        self._latest_at: dict[str, float] = {}
        #: The next offset to read per (topic, partition): a new consumer resumes there.
        self._positions: dict[tuple[str, int], int] = {}
        self.meter = meter or PipelineMeter(settings)
        self.wall = wall
        self._views: dict[float | None, tuple[float, dict[str, View]]] = {}
        self._seen: deque[int] = deque(maxlen=SEEN)
        self._seen_set: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="output-topics-consumer", daemon=True)
        self._consumer_factory = consumer_factory or partial(kafka_consumer, settings)
        self._backoff = backoff
        self._reject_log = Throttle(log_every, clock)
        self._error_log = Throttle(log_every, clock)
        self._connected = False
        self._messages = 0
        self._rejected = 0
        self._errors = 0
        self._last_message_at: datetime | None = None
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None

    def start(self) -> None:
        self._thread.start()
        self.meter.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """End the threads (the consumer's closes its consumer); False if one still runs after ``timeout``."""
        self._stop.set()
        metered = self.meter.stop(timeout)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive() or not metered:
            log.warning("the dashboard's Kafka threads did not stop within %.0f s", timeout)
            return False
        return True

    def health(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the consumer.

        ``alive``: its thread runs; ``connected``: it has its partitions; ``messages``: values read;
        ``received``: new readings; ``rejected``: clean-topic values that were not clean readings;
        ``errors``: failures of the loop (each followed by a backoff and a new consumer); times are
        ISO 8601 UTC.
        """
        with self._lock:
            return {
                "alive": self._thread.is_alive(),
                "connected": self._connected,
                "messages": self._messages,
                "received": self.received,
                "rejected": self._rejected,
                "not_shown": self.not_shown,
                "errors": self._errors,
                "last_message_at": self._last_message_at.isoformat() if self._last_message_at else None,
                "last_error": self._last_error,
                "last_error_at": self._last_error_at.isoformat() if self._last_error_at else None,
            }

    def ingest(self, readings: list[tuple[dict[str, Any], float]]) -> None:
        """Take parsed clean readings with their publication times: deduplicated, readings of beaches
        beyond the ``MAX_OTHER_BEACHES`` unknown ones counted but not kept (a flood of made-up names
        must not grow the dashboard), publication times no later than now."""
        now = self.wall()
        fresh = []
        batch: set[int] = set()
        for message, published in readings:
            mid = int(message["MeasurementID"])
            if mid in self._seen_set or mid in batch:  # only this (the consumer's) thread touches _seen
                continue
            beach = message["Beach"]
            if beach not in self.cadence and beach not in BEACHES:
                if self._others >= MAX_OTHER_BEACHES:
                    self.not_shown += 1
                    continue
                self._others += 1
                self.cadence[beach] = status.Cadence()
            batch.add(mid)
            fresh.append((message, min(published, now)))
        if not fresh:
            return
        times = np.array([m["TimeStamp"].timestamp() for m, _ in fresh])
        published_at = np.array([p for _, p in fresh])
        values = np.array([[m[metric] for metric, _, _ in METRICS] for m, _ in fresh])
        beaches = [m["Beach"] for m, _ in fresh]
        # A reading stamped ahead (the rules allow 5 minutes) counts as now: it must not hide the next ones.
        counted = np.minimum(times, now).tolist()
        live = float(np.median(published_at - times)) < LIVE_WITHIN
        with self._lock:
            self.series.add(beaches, times, values)
            self.delays.add(published_at, published_at - times)
            for (message, _), beach, at in zip(fresh, beaches, counted, strict=True):
                self.cadence.setdefault(beach, status.Cadence()).saw(at)
                if at >= self._latest_at.get(beach, -math.inf):
                    self._latest_at[beach] = at
                    self.latest[beach] = message
            self.recent.extend(m for m, _ in fresh)
            self.received += len(fresh)
            # Live: published seconds after they were taken; a replay's readings are years old.
            self._mode_votes = self._mode_votes + 1 if live != self.live else 0
            if self._mode_votes >= MODE_POLLS or self.received == len(fresh):  # the first readings decide at once
                self.live, self._mode_votes = live, 0
        for mid in batch:  # seen only once kept
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(mid)
            self._seen_set.add(mid)

    def count_letters(self, letters: list[tuple[str, float]]) -> None:
        """Take dead letters' (reason, publication time)."""
        now = self.wall()
        with self._lock:
            for reason, published in letters:
                self.reasons.setdefault(int(min(published, now)), Counter())[reason] += 1
            horizon = int(now) - WINDOW
            for second in [s for s in self.reasons if s <= horizon]:
                del self.reasons[second]
            self.letters += len(letters)

    def snapshot(self, seconds: float | None) -> dict[str, Any]:
        """What a session draws: each beach's bucketed series over ``seconds`` (None: all) up to
        ``end`` (now while readings arrive live, else the newest reading), latest readings, badges,
        the last minute's delays and dead letters (the ``TOP_REASONS`` most frequent, the rest as
        ``other``), rates and lag."""
        now = self.wall()
        with self._lock:
            newest = self.series.newest if self.received else None
            present = min(newest, now) if newest is not None else now
            end = now if self.live or newest is None else newest
            cached = self._views.get(seconds)
            if cached is None or not 0 <= now - cached[0] < VIEW_TTL:
                cached = (now, self.series.view(seconds, end))
                self._views[seconds] = cached
            beaches = sorted({*BEACHES, *self.latest})
            badges = {b: status.badges(self.latest.get(b), self.cadence.get(b), present) for b in beaches}
            count, (p50, p95) = self.delays.percentiles(now, (0.5, 0.95))
            reasons: Counter[str] = Counter()
            for second, counts in self.reasons.items():
                if second > now - WINDOW:
                    reasons.update(counts)
            latest = dict(self.latest)
            live = self.live
            intervals = {b: c.interval() for b, c in self.cadence.items()}
        top = dict(reasons.most_common(TOP_REASONS))
        if len(reasons) > TOP_REASONS:
            top["other"] = top.get("other", 0) + sum(reasons.values()) - sum(top.values())
        return {
            "views": cached[1],
            "end": end,
            "newest": newest,
            "live": live,
            "intervals": intervals,
            "latest": latest,
            "badges": badges,
            "delay": {"count": count, "p50": p50, "p95": p95},
            "reasons": top,
            "health": self.health(),
            "pipeline": self.meter.snapshot(),
        }

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
                    clean: list[Any] = []
                    letters: list[Any] = []
                    for tp, records in batches.items():
                        (letters if tp.topic == self.settings.invalid_topic else clean).extend(records)
                        last = getattr(records[-1], "offset", None) if records else None
                        if isinstance(last, int):
                            self._positions[tp.topic, tp.partition] = last + 1
                    self.handle(clean)
                    self.handle_letters(letters)
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

        assigned = []
        for topic, back in ((self.settings.clean_topic, self.history), (self.settings.invalid_topic, LETTER_HISTORY)):
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            if not partitions:
                raise KafkaError(f"topic {topic} has no partitions yet (created by `sensor-pipeline init`)")
            assigned.append((partitions, back))
        consumer.assign([tp for partitions, _ in assigned for tp in partitions])
        # A new consumer after an error resumes where the last one stopped (nothing read twice or
        # skipped); the first starts with recent history: the last `back / partitions` messages of each.
        # A position is kept within [end - history, end] and after the partition's first offset: a long
        # outage does not replay its whole backlog, and a recreated topic is read from its history.
        for partitions, back in assigned:
            ends = consumer.end_offsets(partitions)
            firsts = consumer.beginning_offsets(partitions)
            each = math.ceil(back / len(partitions))
            for tp in partitions:
                recent = max(ends[tp] - each, firsts[tp], 0)
                position = self._positions.get((tp.topic, tp.partition), recent)
                consumer.seek(tp, min(max(position, recent), ends[tp]))

    def handle(self, records: list[Any]) -> None:
        """Parse one poll's clean-topic records and ingest the clean readings; never raises."""
        readings = []
        now = self.wall()
        for record in records:
            try:
                readings.append((parse_clean(record.value), _published_at(record, now)))
            except Exception as error:  # Rejected, or a parser bug: either way one value, not the feed
                self._record_rejected(record.value, error)
        with self._lock:
            self._messages += len(records)
            if records:
                self._last_message_at = datetime.now(UTC)
        if readings:
            try:
                self.ingest(readings)
            except Exception as error:  # the consumer is fine: keep it, lose only this batch
                self._record_error(error, restart=False)

    def handle_letters(self, records: list[Any]) -> None:
        """Count one poll's dead letters by reason; never raises."""
        if not records:
            return
        now = self.wall()
        try:
            self.count_letters([(letter_reason(r.value), _published_at(r, now)) for r in records])
        except Exception as error:
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
        _shared = Hub(settings, history=settings.dashboard_history)
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
