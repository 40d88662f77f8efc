"""The pipeline meter: rates from end-offset growth and the job's lag from its committed offsets,
with a fake broker; it survives a broker that fails."""

from __future__ import annotations

import time
from typing import Any

from kafka.errors import KafkaConnectionError

from sensor_pipeline.config import Settings
from sensor_pipeline.dashboard.meter import PipelineMeter

SETTINGS = Settings()


class FakeOffsets:
    def __init__(self) -> None:
        self.ends = {SETTINGS.raw_topic: {0: 100, 1: 50}, SETTINGS.clean_topic: {0: 90}, SETTINGS.invalid_topic: {0: 5}}
        self.starts = {0: 0, 1: 20}
        self.commits: dict[int, int] = {}

    def end_offsets(self, topics: list[str]) -> dict[str, dict[int, int]]:
        return {t: dict(self.ends.get(t, {})) for t in topics}

    def beginning_offsets(self, topic: str) -> dict[int, int]:
        return dict(self.starts)

    def committed(self, group: str, topic: str) -> dict[int, int]:
        assert group == SETTINGS.job_group and topic == SETTINGS.raw_topic
        return dict(self.commits)

    def close(self) -> None:
        pass


def meter_at(now: list[float]) -> PipelineMeter:
    return PipelineMeter(SETTINGS, offsets_factory=FakeOffsets, clock=lambda: now[0])


def test_rates_are_end_offset_growth_over_the_window() -> None:
    now = [0.0]
    meter, offsets = meter_at(now), FakeOffsets()
    offsets.commits = {0: 100, 1: 50}
    meter.record(meter.sample(offsets))
    assert meter.snapshot()["rates"] == {"in": None, "clean": None, "dead": None}  # one sample: no rate yet
    now[0] = 4.0
    offsets.ends[SETTINGS.raw_topic][0] += 400
    offsets.ends[SETTINGS.clean_topic][0] += 380
    offsets.ends[SETTINGS.invalid_topic][0] += 20
    meter.record(meter.sample(offsets))
    assert meter.snapshot()["rates"] == {"in": 100.0, "clean": 95.0, "dead": 5.0}
    assert meter.snapshot()["lag"] == 400
    now[0] = 100.0  # no answer from the broker for a while: rates and lag are unknown, not stale
    assert meter.snapshot()["rates"] == {"in": None, "clean": None, "dead": None}
    assert meter.snapshot()["lag"] is None


def test_the_lag_is_what_the_job_has_not_committed() -> None:
    now = [0.0]
    meter, offsets = meter_at(now), FakeOffsets()
    assert meter.sample(offsets).lag is None  # the job has committed nothing: unknown, not 150
    offsets.commits = {0: 95}  # partition 1 never committed: not counted (as MSK's lag metrics)
    assert meter.sample(offsets).lag == 5
    offsets.commits = {0: 95, 1: 10}  # a commit older than the partition's first offset (20): from there
    assert meter.sample(offsets).lag == 5 + 30
    offsets.commits = {0: 100, 1: 50}
    assert meter.sample(offsets).lag == 0


def test_a_failing_broker_is_counted_and_the_meter_goes_on() -> None:
    attempts: list[int] = []

    def factory() -> Any:
        attempts.append(1)
        if len(attempts) < 3:
            raise KafkaConnectionError("connection refused")
        return FakeOffsets()

    meter = PipelineMeter(SETTINGS, offsets_factory=factory, every=0.01, backoff=0.01)
    meter.start()
    deadline = time.monotonic() + 5
    while meter.snapshot()["rates"]["in"] is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert meter.stop(timeout=5)
    snapshot = meter.snapshot()
    assert snapshot["errors"] == 2 and "connection refused" in snapshot["last_error"]
    assert snapshot["rates"]["in"] == 0.0  # sampled since: nothing grew


def test_a_group_that_cannot_be_read_leaves_the_rates_counting() -> None:
    now = [0.0]
    meter, offsets = meter_at(now), FakeOffsets()

    def denied(group: str, topic: str) -> dict[int, int]:
        raise PermissionError("GroupAuthorizationFailedError")

    offsets.committed = denied  # type: ignore[method-assign]
    meter.record(meter.sample(offsets))
    now[0] = 2.0
    offsets.ends[SETTINGS.raw_topic][0] += 20
    meter.record(meter.sample(offsets))
    snapshot = meter.snapshot()
    assert snapshot["rates"]["in"] == 10.0 and snapshot["lag"] is None
    assert "GroupAuthorizationFailedError" in snapshot["group_error"] and snapshot["errors"] == 0
