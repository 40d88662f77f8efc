"""The simulator's realism (learnt from the real data), ids and replay."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from statistics import median

from sensor_pipeline.contract.rules import validate_line
from sensor_pipeline.source.simulator import BEACHES, Simulator, SnowflakeIds, fitted_models, real_readings, replay_id


def records(lines: list[str]) -> list[dict[str, object]]:
    out = []
    for line in lines:
        verdict = validate_line(line)
        assert verdict.valid, (line, verdict.detail)
        assert verdict.record is not None
        out.append(verdict.record)
    return out


def test_six_beaches_take_turns_one_reading_per_simulated_hour() -> None:
    sim = Simulator(seed=1)
    beaches = [r["Beach"] for r in records(sim.take(12))]
    assert beaches == list(BEACHES) * 2


def test_simulated_distributions_follow_each_beach_in_the_real_data() -> None:
    # June and July: the model is per month, so compare with the same months of the real data
    sim = Simulator(seed=5, start=datetime(2015, 6, 1, tzinfo=UTC))
    simulated = records(sim.take(6 * 24 * 61))
    real = [r for r in real_readings() if r.timestamp.month in (6, 7)]
    for beach in BEACHES:
        sim_turbidity = median(float(r["Turbidity"]) for r in simulated if r["Beach"] == beach)  # type: ignore[arg-type]
        real_turbidity = median(r.turbidity for r in real if r.beach == beach)
        assert abs(math.log(sim_turbidity) - math.log(real_turbidity)) < 0.2, (beach, sim_turbidity, real_turbidity)
        battery = median(float(r["BatteryLife"]) for r in simulated if r["Beach"] == beach)  # type: ignore[arg-type]
        assert abs(battery - fitted_models()[beach].battery.mean) < 1.0


def test_values_are_autocorrelated_like_hourly_sensor_data_not_independent_draws() -> None:
    temps = [float(r["WaterTemperature"]) for r in records(Simulator(seed=2).take(6 * 500)) if r["Beach"] == BEACHES[0]]  # type: ignore[arg-type]
    mean = sum(temps) / len(temps)
    lag1 = sum((a - mean) * (b - mean) for a, b in itertools.pairwise(temps))
    var = sum((a - mean) ** 2 for a in temps)
    assert lag1 / var > 0.8
    assert fitted_models()[BEACHES[0]].temperature.phi > 0.8


def test_ids_are_unique_positive_longs() -> None:
    generator = SnowflakeIds(worker=1)
    ids = [generator.next() for _ in range(20_000)]  # more than 4096 per millisecond: borrows ahead
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**63 for i in ids)
    assert ids == sorted(ids)


def test_replicas_with_distinct_workers_never_collide() -> None:
    first, second = SnowflakeIds(worker=1), SnowflakeIds(worker=2)
    ids = [g.next() for _ in range(2000) for g in (first, second)]
    assert len(set(ids)) == len(ids)


def test_replay_serves_the_real_readings_in_time_order_with_deterministic_ids() -> None:
    first = Simulator(mode="replay").take(50)
    again = Simulator(mode="replay").take(50)
    assert first == again
    parsed = records(first)
    assert [r["TimeStamp"] for r in parsed] == sorted(r["TimeStamp"] for r in parsed)
    assert parsed[0]["MeasurementID"] == replay_id(real_readings()[0])
    assert len(real_readings()) == 36_405


def test_streaming_pace_follows_speed() -> None:
    sim = Simulator(seed=1, speed=3600 * 100)  # 100 simulated hours per second -> 600 lines/s
    assert sim.take_due(now=1000.0) == []  # the pace starts here
    assert len(sim.take_due(now=1000.25)) == 150  # 25 simulated hours of six beaches
    assert len(sim.take_due(now=1000.25)) == 0  # nothing more is due until the clock moves
    assert len(sim.take_due(now=1001.25)) == 600
