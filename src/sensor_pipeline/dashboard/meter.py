"""The pipeline's rates and the job's lag, from Kafka offsets alone (no message is read).

Once a second a thread asks the broker for the end offsets of RawSensorData, CleanSensorData and
InvalidSensorData, and for the offsets the job committed to its consumer group (``SP_JOB_GROUP``,
see :mod:`sensor_pipeline.job.progress`). Rates are end-offset growth over the last ``WINDOW`` seconds
(offsets, not records: the job's transactions add a commit marker per output partition they wrote);
the lag is, over the RawSensorData partitions the job has committed (as MSK's lag metrics count),
each end offset minus the committed offset (or the partition's first offset, when later). Both read
"unknown" when the broker has not answered for three windows. Offsets cost the same at 20,000
readings/s as at one, and do not depend on the dashboard keeping up with the clean topic.

Like the hub's consumer, the thread survives anything: an error is counted, shown in
:meth:`PipelineMeter.snapshot`, and a new client is made after a backoff.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from sensor_pipeline.config import Settings

log = logging.getLogger("sensor_pipeline.dashboard")

EVERY = 1.0
WINDOW = 10.0
BACKOFF = 3.0
LOG_EVERY = 30.0
#: Bounds each offsets request, so one slow broker does not stall a sample for 30 s.
TIMEOUT_MS = 5_000


class Throttle:
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


def kafka_client(cls: Any, **options: Any) -> Any:
    """``cls(**options)`` for a kafka-python client class, closing what it started when it fails:
    kafka-python 3.0.12 starts a client's network thread before its bootstrap, and a bootstrap that
    times out (a broker down) would otherwise leave the thread and its sockets behind at every retry."""
    instance = cls.__new__(cls)
    try:
        instance.__init__(**options)
    except Exception:
        client = getattr(instance, "_client", None)
        if client is not None:
            client.close()
        raise
    return instance


class Offsets(Protocol):
    """What the meter asks the broker (kafka-python in production, a fake in unit tests)."""

    def end_offsets(self, topics: list[str]) -> dict[str, dict[int, int]]: ...
    def beginning_offsets(self, topic: str) -> dict[int, int]: ...
    def committed(self, group: str, topic: str) -> dict[int, int]: ...
    def close(self) -> None: ...


class KafkaOffsets:
    """:class:`Offsets` with one kafka-python consumer (no group membership) and one admin client."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaConsumer
        from kafka.admin import KafkaAdminClient

        options = {
            **settings.kafka_client_options(),
            "client_id": "sensor-pipeline-dashboard-meter",
            "bootstrap_timeout_ms": TIMEOUT_MS,
        }
        # End offsets as a read_committed consumer sees them (the last stable offset of the job's output).
        self.consumer = kafka_client(
            KafkaConsumer, **options, enable_auto_commit=False, isolation_level="read_committed"
        )
        try:
            self.admin = kafka_client(KafkaAdminClient, **options, request_timeout_ms=TIMEOUT_MS)
        except Exception:
            self.consumer.close()
            raise

    def _partitions(self, topic: str) -> list[Any]:
        from kafka import TopicPartition

        return [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or [])]

    def end_offsets(self, topics: list[str]) -> dict[str, dict[int, int]]:
        partitions = [tp for topic in topics for tp in self._partitions(topic)]
        ends = self.consumer.end_offsets(partitions, timeout_ms=TIMEOUT_MS) if partitions else {}
        result: dict[str, dict[int, int]] = {topic: {} for topic in topics}
        for tp, offset in ends.items():
            result[tp.topic][tp.partition] = int(offset)
        return result

    def beginning_offsets(self, topic: str) -> dict[int, int]:
        partitions = self._partitions(topic)
        starts = self.consumer.beginning_offsets(partitions, timeout_ms=TIMEOUT_MS) if partitions else {}
        return {tp.partition: int(offset) for tp, offset in starts.items()}

    def committed(self, group: str, topic: str) -> dict[int, int]:
        offsets = self.admin.list_group_offsets({group: None}).get(group, {})
        return {
            tp.partition: int(meta.offset) for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0
        }

    def close(self) -> None:
        for client in (self.consumer, self.admin):
            try:
                client.close()
            except Exception as error:
                log.debug("closing a meter client: %s", error)


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    ends: dict[str, int]  # topic -> sum of end offsets
    lag: int | None  # None: the job has committed nothing yet


class PipelineMeter:
    """Samples offsets every ``every`` seconds in its own thread; :meth:`snapshot` is thread-safe."""

    def __init__(
        self,
        settings: Settings,
        offsets_factory: Callable[[], Offsets] | None = None,
        every: float = EVERY,
        window: float = WINDOW,
        backoff: float = BACKOFF,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.topics = {"in": settings.raw_topic, "clean": settings.clean_topic, "dead": settings.invalid_topic}
        self._factory = offsets_factory or partial(KafkaOffsets, settings)
        self.every = every
        self.window = window
        self.backoff = backoff
        self.clock = clock
        self.samples: deque[Sample] = deque()
        self._error_log = Throttle(LOG_EVERY, clock)
        self.group_error: str | None = None
        self._group_log = Throttle(LOG_EVERY, clock)
        self._starts_at: tuple[float, dict[int, int]] | None = None
        self.errors = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline-meter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def sample(self, offsets: Offsets) -> Sample:
        """One sample, asked of ``offsets`` now. The lag counts the partitions the job has committed
        (as MSK's lag metrics do), each from the later of its commit and its first offset; it is None
        when the job has committed nothing, or when the group cannot be read (``group_error``): the
        rates are sampled either way."""
        ends = offsets.end_offsets(list(self.topics.values()))
        raw = ends.get(self.settings.raw_topic, {})
        lag: int | None = None
        group_error = None
        try:
            committed = offsets.committed(self.settings.job_group, self.settings.raw_topic)
            if committed:
                starts = self._starts(offsets)
                lag = sum(max(raw.get(p, 0) - max(c, starts.get(p, 0)), 0) for p, c in committed.items())
        except Exception as error:  # a group not yet readable (IAM, coordinator moving): rates still count
            group_error = f"{type(error).__name__}: {error}"[:300]
            held = self._group_log()
            if held is not None:
                more = f" ({held} more since the last report)" if held else ""
                log.warning(
                    "pipeline meter: cannot read consumer group %s: %s%s", self.settings.job_group, group_error, more
                )
        with self._lock:
            self.group_error = group_error
        return Sample(self.clock(), {topic: sum(ends.get(topic, {}).values()) for topic in self.topics.values()}, lag)

    def _starts(self, offsets: Offsets) -> dict[int, int]:
        """The raw topic's first offsets, asked at most once a minute (they move only with retention)."""
        if self._starts_at is None or self.clock() - self._starts_at[0] >= 60:
            self._starts_at = (self.clock(), offsets.beginning_offsets(self.settings.raw_topic))
        return self._starts_at[1]

    def record(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)
            while self.samples and self.samples[0].at < sample.at - self.window - self.every:
                self.samples.popleft()

    def snapshot(self) -> dict[str, Any]:
        """Rates per second (None until two samples), the job's lag, and the meter's errors."""
        with self._lock:
            samples = list(self.samples)
            errors, last_error = self.errors, self.last_error
        rates: dict[str, float | None] = dict.fromkeys(self.topics)
        lag = None
        silent_for = None
        if samples:
            newest = samples[-1]
            lag = newest.lag
            if self.clock() - newest.at > 3 * self.window:
                samples, lag = [], None  # stale: the broker has not answered for a while
                silent_for = self.clock() - newest.at
            oldest = next((s for s in samples if s.at >= newest.at - self.window), newest)
            if samples and newest.at > oldest.at:
                for name, topic in self.topics.items():
                    grown = newest.ends.get(topic, 0) - oldest.ends.get(topic, 0)
                    rates[name] = max(grown, 0) / (newest.at - oldest.at)
        return {
            "rates": rates,
            "lag": lag,
            "group": self.settings.job_group,
            "errors": errors,
            "last_error": last_error,
            "group_error": self.group_error,
            "broker_silent_for": silent_for,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            offsets: Offsets | None = None
            try:
                offsets = self._factory()
                while not self._stop.is_set():
                    self.record(self.sample(offsets))
                    self._stop.wait(self.every)
            except Exception as error:  # a broker outage or a bug: the meter must go on either way
                with self._lock:
                    self.errors += 1
                    self.last_error = f"{type(error).__name__}: {error}"[:300]
                held = self._error_log()
                if held is not None:
                    more = f" ({held} more errors since the last report)" if held else ""
                    log.warning("pipeline meter: %s; retrying in %g s%s", self.last_error, self.backoff, more)
            finally:
                if offsets is not None:
                    try:
                        offsets.close()
                    except Exception as error:
                        log.debug("closing the meter's clients: %s", error)
            self._stop.wait(self.backoff)
