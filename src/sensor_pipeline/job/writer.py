"""The job's ``foreachBatch`` writer: validate the micro-batch against its time, deliver it exactly once.

Per micro-batch (the raw Kafka records of the batch):

1. **validate** with the batch's time as a literal (``transforms.validate``/``routed``): the future
   limit folds into a string constant, which generated code references, so the compiled plan is
   reused from one batch to the next, and the rules' column expressions, which name the batch's
   time by column, are built once per job;
2. **deliver** in one Spark job, one task per source partition (:mod:`sensor_pipeline.job.delivery`):
   store, then publish clean messages and dead letters and commit the slice's offsets to the job's
   consumer group in one Kafka transaction. The group's offsets are the job's progress, its lag as
   Kafka's tools and MSK's metrics show it, and where it starts when it has no checkpoint.

A batch that fails (store or broker down, an executor lost, a task fenced) is retried with backoff
(1 s doubling to 30 s) and a log line per attempt, for up to ``SP_BATCH_RETRY_SECONDS``; then the job
fails and its supervisor (supervisord, EMR's retry policy) restarts it. From the
``SP_REFUSALS_BEFORE_DEAD_LETTER``-th attempt, documents the store keeps refusing, while it takes
other writes, are dead-lettered (``store_rejected``) so that no record can stop the pipeline.

The batch's time is the driver's clock when the batch is first written. A replay after a restart
judges against a later time: only ``future_timestamp`` depends on it, and only towards valid, and
only one attempt's output is ever committed. An attempt on another host (a second driver, a
redeploy) may judge by an earlier clock: a reading an earlier attempt stored is then published clean,
not dead-lettered (``delivery.Slice.stored_earlier``), so each reading still has one outcome.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pyspark.sql import DataFrame
from tenacity import RetryCallState, Retrying, stop_after_delay, stop_when_event_set, wait_exponential
from tenacity.wait import wait_base

from sensor_pipeline.config import Settings
from sensor_pipeline.job import delivery, faults, transforms

log = logging.getLogger("sensor_pipeline.job")
#: The streaming query's name (the Spark UI's).
QUERY_NAME = "structure_validate_store"
#: A batch's store-delay histogram (reading timestamp -> the store's acknowledgement) and the lowest and
#: highest MeasurementID it holds: ``make bench`` reads it (benchmarks/pipeline.py, by id).
STORE_DELAY_LOG = "batch %d store delay (%d ms buckets, MeasurementIDs %d-%d): %s"
#: A batch written, with its counts (``delivery.COUNTS``): ``make bench`` reads the batches' period and size,
#: the fault suite which driver wrote rows (:func:`logged_batch_counts`).
BATCH_DONE_LOG = "batch %d done in %.2f s: counts %s"
_BATCH_DONE = re.compile(r"batch \d+ done in [\d.]+ s: counts (\{.*\})")


def logged_batch_counts(log_text: str) -> list[dict[str, int]]:
    """The counts of every batch a job's log says it wrote (:data:`BATCH_DONE_LOG` lines), in order."""
    return [json.loads(match.group(1)) for match in _BATCH_DONE.finditer(log_text)]


def batch_time() -> datetime:
    return datetime.now(UTC) + faults.clock_offset()


class BatchWriter:
    """Callable for ``writeStream.foreachBatch``; see the module docstring."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = batch_time) -> None:
        self.settings = settings
        self.settings_json = settings.model_dump_json()
        self.clock = clock
        self.totals = dict.fromkeys(("batches", *delivery.COUNTS), 0)
        #: Set while a batch is being written: a graceful stop waits for it to clear.
        self.busy = threading.Event()
        #: Set by SIGTERM: a failing batch is not retried (the query is stopping).
        self.stopping = threading.Event()
        #: Between attempts at a failing batch: 1 s doubling to 30 s.
        self.retry_wait: wait_base = wait_exponential(multiplier=1, min=1, max=30)

    def routed(self, records: DataFrame, now: datetime) -> DataFrame:
        """The batch's raw records, validated against ``now`` and shaped for delivery."""
        lines = transforms.raw_lines(records)
        return transforms.routed(
            transforms.validate(lines, transforms.instant(now), self.settings.future_tolerance_seconds)
        )

    def __call__(self, records: DataFrame, batch_id: int) -> None:
        if self.stopping.is_set():
            # A batch that starts after SIGTERM fails unwritten (returning would let Spark mark it done):
            # the next run writes it.
            raise RuntimeError(f"batch {batch_id} not written: the job is stopping")
        self.busy.set()
        try:
            routed = self.routed(records, self.clock())
            self.with_retries(f"batch {batch_id}", lambda attempt: self.write(routed, batch_id, attempt))
        finally:
            self.busy.clear()

    def with_retries(self, what: str, action: Callable[[int], None]) -> None:
        """Run ``action(attempt)`` until it succeeds, with backoff and a log line per failure, for up to
        ``SP_BATCH_RETRY_SECONDS``; what fails is the store, the broker or an executor: waiting helps.
        A stop request (SIGTERM) ends the wait and re-raises the last error."""

        failed: list[BaseException] = []

        def sleep(seconds: float) -> None:
            if self.stopping.wait(seconds):  # woken by a stop: no further attempt
                log.error("%s: stop requested while waiting to retry it", what)
                raise failed[-1]

        def log_failure(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if error is not None:
                failed[:] = [error]  # the last one only: a traceback holds its frames
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            delay = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "%s attempt %d failed (%s: %s); retrying in %.0f s (gives up after %.0f s)",
                what, state.attempt_number, type(error).__name__, first_line, delay, self.settings.batch_retry_seconds,
            )  # fmt: skip

        def give_up(state: RetryCallState) -> None:
            log.error("%s failed after %d attempts in %.0f s: giving up", what, state.attempt_number,
                      state.seconds_since_start or 0.0)  # fmt: skip
            assert state.outcome is not None
            state.outcome.result()  # re-raises the last error

        for attempt in Retrying(
            stop=stop_after_delay(self.settings.batch_retry_seconds) | stop_when_event_set(self.stopping),
            wait=self.retry_wait,
            sleep=sleep,
            before_sleep=log_failure,
            retry_error_callback=give_up,
        ):
            with attempt:
                action(attempt.retry_state.attempt_number)

    def write(self, routed: DataFrame, batch_id: int, attempt: int) -> None:
        """One attempt at a batch: every slice delivered (or found delivered) exactly once."""
        started = time.monotonic()
        dead_letter_refused = attempt >= self.settings.refusals_before_dead_letter
        task = delivery.deliver(self.settings_json, dead_letter_refused)
        slices = [json.loads(row.counts) for row in routed.mapInArrow(task, delivery.COUNTS_SCHEMA).collect()]
        counts = {name: sum(int(s[name]) for s in slices) for name in delivery.COUNTS}
        delay: dict[str, int] = {}
        for one in slices:
            for bucket, number in one["store_delay"].items():
                delay[bucket] = delay.get(bucket, 0) + number
        ids = [int(i) for one in slices for i in one["store_ids"]]
        faults.hit("delivered")
        for name, value in counts.items():
            self.totals[name] += value
        self.totals["batches"] += 1
        log.info(BATCH_DONE_LOG, batch_id, time.monotonic() - started, json.dumps(counts))
        if delay:
            ordered = dict(sorted(delay.items(), key=lambda item: int(item[0])))
            log.info(STORE_DELAY_LOG, batch_id, delivery.DELAY_BUCKET_MS, min(ids), max(ids), json.dumps(ordered))
