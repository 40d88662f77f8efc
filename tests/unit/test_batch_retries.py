"""How the job's writer retries a failing batch (BatchWriter.with_retries), without Spark."""

from __future__ import annotations

import logging
import threading

import pytest
from tenacity import wait_none

from sensor_pipeline.config import Settings
from sensor_pipeline.job.writer import BatchWriter


def writer(retry_seconds: float = 60.0) -> BatchWriter:
    made = BatchWriter(Settings(batch_retry_seconds=retry_seconds))
    made.retry_wait = wait_none()
    return made


def failing(times: int, attempts: list[int]) -> object:
    def action(attempt: int) -> None:
        attempts.append(attempt)
        if len(attempts) <= times:
            raise ConnectionError(f"store down\nsecond line {attempt}")

    return action


def test_the_wait_between_attempts_doubles_from_1_s_to_30_s() -> None:
    from tenacity import RetryCallState

    wait = BatchWriter(Settings()).retry_wait
    waits = []
    for attempt in range(1, 8):
        state = RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        waits.append(wait(state))
    assert waits == [1, 2, 4, 8, 16, 30, 30]


def test_a_failing_batch_is_tried_again_with_its_attempt_number_and_a_log_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[int] = []
    with caplog.at_level(logging.WARNING, logger="sensor_pipeline.job"):
        writer().with_retries("batch 7", failing(2, attempts))  # type: ignore[arg-type]
    assert attempts == [1, 2, 3], "the attempt number decides when refused documents are dead-lettered"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert warnings[0].startswith("batch 7 attempt 1 failed (ConnectionError: store down); retrying in 0 s")


def test_the_batch_fails_with_its_own_error_once_the_retry_time_is_spent(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []
    with caplog.at_level(logging.ERROR, logger="sensor_pipeline.job"), pytest.raises(ConnectionError):
        writer(retry_seconds=0).with_retries("batch 8", failing(99, attempts))  # type: ignore[arg-type]
    assert attempts == [1]
    assert "batch 8 failed after 1 attempts" in caplog.text


@pytest.mark.timeout(30)  # a stop that is not honoured waits 600 s
def test_a_stop_request_ends_the_wait_and_fails_the_batch() -> None:
    """SIGTERM while a batch waits to be retried: the query stops now, the next run writes the batch."""
    patient = writer()
    patient.retry_wait = lambda _state: 600.0  # type: ignore[assignment]
    attempts: list[int] = []
    threading.Timer(0.2, patient.stopping.set).start()
    with pytest.raises(ConnectionError):
        patient.with_retries("batch 9", failing(99, attempts))  # type: ignore[arg-type]
    assert attempts == [1]


def test_refused_documents_are_dead_lettered_from_the_sixth_batch_attempt_whatever_failed_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A window, measured: the count is of batch attempts, not of one document's refusals. Five attempts
    that failed for another reason (the store down during a failover) let the sixth dead-letter a valid
    reading the store refuses once (docs/design.md, "No record stops the pipeline")."""
    from sensor_pipeline.job import delivery

    flags: list[bool] = []

    class Routed:
        def mapInArrow(self, task: object, schema: str) -> Routed:  # noqa: N802 - Spark's name
            return self

        def collect(self) -> list[object]:
            return []

    monkeypatch.setattr(delivery, "deliver", lambda _settings, dead_letter_refused: flags.append(dead_letter_refused))
    made = writer()  # its attempt numbers count every failure (the case above)
    for attempt in range(1, 8):
        made.write(Routed(), 9, attempt)  # type: ignore[arg-type]
    assert Settings().refusals_before_dead_letter == 6
    assert flags == [False] * 5 + [True, True]
