"""The simulation is statistically faithful to the packaged real data (``simulate --report``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from sensor_pipeline.cli import main
from sensor_pipeline.contract.rules import validate_line
from sensor_pipeline.source import simulator
from sensor_pipeline.source.simulator import (
    BEACHES,
    KS_LIMIT,
    LAG1_LIMIT,
    METRICS,
    Fidelity,
    Simulator,
    fidelity_report,
    gap_counts,
    ks_distance,
    real_fault_rate,
    real_gap_rates,
)
from sensor_pipeline.source.simulator.fidelity import lag1_correlation, rank_lag1_correlation


@pytest.fixture(scope="module")
def season() -> Fidelity:
    return fidelity_report(seed=1)


# --- the measure ---------------------------------------------------------------------------------


def test_ks_distance_is_zero_for_identical_samples_and_one_for_disjoint_ones() -> None:
    sample = [3.0, 1.0, 2.0, 2.0, 5.5]
    assert ks_distance(sample, sample) == 0.0
    assert ks_distance(sample, sorted(sample * 3)) == 0.0  # same values, same proportions
    assert ks_distance([1.0, 2.0], [3.0, 4.0]) == 1.0
    assert ks_distance([3.0, 4.0], [1.0, 2.0]) == 1.0


def test_ks_distance_is_the_largest_gap_between_the_distribution_functions() -> None:
    assert ks_distance([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]) == pytest.approx(0.5)
    assert ks_distance([1.0, 1.0, 2.0], [1.0, 2.0, 2.0]) == pytest.approx(1 / 3)  # ties count together
    assert ks_distance([0.0], [0.0, 1.0, 2.0, 3.0]) == pytest.approx(0.75)


def test_weights_count_a_value_several_times() -> None:
    assert ks_distance([1.0, 2.0], [1.0, 1.0, 1.0, 2.0], weights=[3.0, 1.0]) == pytest.approx(0.0)
    assert ks_distance([1.0, 2.0, 9.0], [1.0, 2.0], weights=[1.0, 1.0, 0.0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="at least one value"):
        ks_distance([1.0], [1.0], weights=[0.0])
    with pytest.raises(ValueError, match="at least one value"):
        ks_distance([], [1.0])


def test_gap_counts_count_missed_hours_but_not_a_buoy_out_of_the_water() -> None:
    hours = [datetime(2015, 7, 1, h, tzinfo=UTC) for h in (0, 1, 4, 5)]  # 2 and 3 missing
    assert gap_counts(hours) == (2, 6)
    later = [datetime(2015, 7, 10, tzinfo=UTC)]  # 9 days later: out of service, not a gap
    assert gap_counts(hours + later) == (2, 7)


# --- the simulated season --------------------------------------------------------------------------


def test_every_beach_and_metric_is_within_the_ks_limit_of_the_real_data(season: Fidelity) -> None:
    assert set(season.ks) == set(BEACHES)
    for beach, row in season.ks.items():
        assert set(row) == set(METRICS)
        for metric, distance in row.items():
            assert distance <= KS_LIMIT, f"{beach} {metric}: {distance:.3f}\n{season.table()}"


def test_the_season_covers_the_months_the_real_buoys_report(season: Fidelity) -> None:
    start, end = season.season
    assert (start.month, end.month) == (5, 11)  # May to October
    assert season.readings[1] > 20_000


def test_gaps_and_faults_come_at_the_real_rates(season: Fidelity) -> None:
    assert real_fault_rate() == pytest.approx(1 / 36_405)  # Calumet Beach's battery at 0.0 V
    assert season.fault_rates[1] < 0.001
    assert all(0.05 < rate < 0.2 for rate in real_gap_rates().values())
    for beach, (real, simulated) in season.gap_rates.items():
        # one season of a heavy-tailed gap process: a couple of points either way
        assert abs(simulated - real) < 0.04, (beach, real, simulated)


def test_every_metric_keeps_the_real_hour_to_hour_persistence(season: Fidelity) -> None:
    """Rank (Spearman) lag-1 correlation per beach and metric within LAG1_LIMIT of the real data."""
    assert set(season.rank_lag1) == set(BEACHES)
    for beach, pairs in season.rank_lag1.items():
        assert set(pairs) == set(METRICS)
        for metric, (real, simulated) in pairs.items():
            assert abs(simulated - real) <= LAG1_LIMIT, f"{beach} {metric}: real {real:.2f}, simulated {simulated:.2f}"


def test_temperature_and_battery_keep_the_real_hour_to_hour_persistence_in_value_too(season: Fidelity) -> None:
    """Pearson lag-1 correlation per beach within LAG1_LIMIT of the real data. Turbidity's is reported, not
    held to it: a few extreme readings decide it (rank_lag1_correlation says by how much)."""
    assert set(season.lag1) == set(BEACHES)
    for beach, pairs in season.lag1.items():
        assert set(pairs) == set(METRICS)
        for metric in ("water_temperature", "battery"):
            real, simulated = pairs[metric]
            assert abs(simulated - real) <= LAG1_LIMIT, f"{beach} {metric}: real {real:.2f}, simulated {simulated:.2f}"
        assert all(math.isfinite(value) for value in pairs["turbidity"])


def test_one_extreme_reading_decides_the_value_correlation_but_not_the_rank_one() -> None:
    hours = [datetime(2015, 7, 1, h, tzinfo=UTC) for h in range(12)]
    rising = dict(zip(hours, [float(v) for v in range(1, 13)], strict=True))
    assert rank_lag1_correlation(rising) == pytest.approx(1.0) and lag1_correlation(rising) == pytest.approx(1.0)
    spiked = {**rising, hours[5]: 1000.0}  # one turbid hour in a steady rise
    assert lag1_correlation(spiked) < 0
    assert rank_lag1_correlation(spiked) == pytest.approx(0.673, abs=0.001)  # Spearman's rho of the 11 pairs
    alternating = dict(zip(hours[:6], [1.0, 9.0, 2.0, 8.0, 3.0, 7.0], strict=True))
    assert rank_lag1_correlation(alternating) == pytest.approx(-1.0)  # each low hour followed by a high one
    assert math.isnan(rank_lag1_correlation(dict(zip(hours[:1], [1.0], strict=True))))


def test_the_daily_cycle_follows_the_real_one(season: Fidelity) -> None:
    """Mean by hour of day as the buoys stamp it: water warms in the afternoon (warmest 14-21 h), as in the real data."""
    real, simulated = season.daily["water_temperature"]
    assert max(abs(s - r) for r, s in zip(real, simulated, strict=True)) < 0.5
    assert max(range(24), key=simulated.__getitem__) in range(14, 22)
    real, simulated = season.daily["battery"]
    assert max(abs(s - r) for r, s in zip(real, simulated, strict=True)) < 0.1
    assert set(season.daily) == set(METRICS) and all(len(p) == 24 for pair in season.daily.values() for p in pair)


def test_injected_faults_are_counted_as_faults() -> None:
    noisy = fidelity_report(seed=3, fault_rate=0.1)
    assert 0.08 < noisy.fault_rates[1] < 0.12
    assert noisy.worst <= KS_LIMIT


def test_beaches_miss_hours_only_when_asked() -> None:
    start = datetime(2015, 7, 1, tzinfo=UTC)
    steady = Simulator(seed=4, start=start)
    steady.take(6 * 100)
    assert steady.sim_clock == datetime(2015, 7, 5, 4, tzinfo=UTC)  # 100 hours, six lines each
    gappy = Simulator(seed=4, start=start, gaps=True)
    lines = gappy.take(6 * 100)
    assert all(validate_line(line).valid for line in lines)
    assert gappy.sim_clock > steady.sim_clock  # silent beaches: the same lines took more hours


# --- the command ------------------------------------------------------------------------------------


def test_simulate_report_prints_the_ks_table(season: Fidelity, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulator, "fidelity_report", lambda seed, fault_rate: season)
    result = CliRunner().invoke(main, ["simulate", "--report"])
    assert result.exit_code == 0, result.output
    for beach in BEACHES:
        assert beach in result.output
    assert "temperature  turbidity  battery  gaps real  gaps sim" in result.output
    assert f"worst KS distance: {season.worst:.3f} (within {KS_LIMIT})" in result.output
    assert "fault rate: real 0.0027% (1 of 36,405)" in result.output
    assert "Rank correlation of a reading with the next hour's (Spearman, lag 1" in result.output
    assert "Correlation of a reading with the next hour's (Pearson, lag 1)" in result.output
    assert "Mean by hour of day (as the buoys stamp it" in result.output


def test_simulate_prints_valid_lines() -> None:
    result = CliRunner().invoke(main, ["simulate", "--count", "12", "--seed", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 12
    assert all(validate_line(line).valid for line in lines)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--report", "--mode", "replay"], "drop --mode replay"),
        (["--report", "--count", "5"], "drop --count"),
        (["--report", "--gaps"], "drop --gaps"),
        (["--gaps", "--mode", "replay"], "--gaps applies to --mode simulate"),
        (["--count", "0"], "0 is not in the range x>=1"),
        (["--fault-rate", "2"], "2.0 is not in the range 0<=x<=1"),
    ],
)
def test_simulate_refuses_bad_arguments(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["simulate", *arguments])
    assert result.exit_code == 2
    assert message in result.output
