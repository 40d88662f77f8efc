"""Server-side aggregation: bucketed series whose size never depends on the reading rate, and the
delay window's percentiles."""

from __future__ import annotations

import numpy as np
import pytest

from sensor_pipeline.dashboard.aggregate import KEEP, MAX_POINTS, RANGES, DelayWindow, Downsampler

T0 = 1_720_000_000.0  # an epoch second in July 2024


def add(sampler: Downsampler, beach: str, times: list[float], values: list[float]) -> None:
    sampler.add([beach] * len(times), np.array(times), np.array([[v, v * 10, v * 100] for v in values]))


def test_readings_in_a_bucket_are_counted_averaged_and_bounded() -> None:
    sampler = Downsampler(metrics=3)
    add(sampler, "A", [T0 + 0.2, T0 + 0.7, T0 + 1.5], [1.0, 3.0, 5.0])
    view = sampler.view(300.0)["A"]
    assert view.width == 1
    assert view.time.tolist() == [(T0 + 0.5) * 1000, (T0 + 1.5) * 1000]  # bucket centres, epoch ms
    assert view.count.tolist() == [2, 1]
    assert view.mean[:, 0].tolist() == [2.0, 5.0] and view.mean[:, 2].tolist() == [200.0, 500.0]
    assert view.low[:, 1].tolist() == [10.0, 50.0] and view.high[:, 1].tolist() == [30.0, 50.0]


def test_adding_in_several_polls_gives_the_same_buckets_as_one() -> None:
    rng = np.random.default_rng(1)
    times = T0 + rng.uniform(0, 7200, 5000)
    values = rng.normal(20, 3, 5000)
    once, split = Downsampler(3), Downsampler(3)
    add(once, "A", times.tolist(), values.tolist())
    for part in np.array_split(np.arange(5000), 7):
        add(split, "A", times[part].tolist(), values[part].tolist())
    for seconds in (300.0, 3600.0, None):
        a, b = once.view(seconds)["A"], split.view(seconds)["A"]
        assert a.time.tolist() == b.time.tolist() and a.count.tolist() == b.count.tolist()
        np.testing.assert_allclose(a.mean, b.mean)
        np.testing.assert_array_equal(a.low, b.low)
        np.testing.assert_array_equal(a.high, b.high)


@pytest.mark.parametrize(("label", "width"), [("5 min", 1), ("1 h", 10), ("6 h", 60), ("24 h", 600), ("7 d", 3600)])
def test_each_range_is_drawn_in_at_most_max_points_buckets(label: str, width: int) -> None:
    seconds = dict(RANGES)[label]
    assert Downsampler(3).width_for(seconds) == width
    assert seconds is not None and seconds / width <= MAX_POINTS


def test_memory_and_views_stay_bounded_however_many_readings_arrive() -> None:
    sampler = Downsampler(metrics=3)
    span = 5 * 365 * 86_400  # five years of replayed history, 200,000 readings per beach
    for beach in ("A", "B"):
        times = np.linspace(T0 - span, T0, 200_000)
        sampler.add([beach] * len(times), times, np.ones((len(times), 3)))
    for per_beach in sampler._buckets.values():
        assert all(len(buckets) <= KEEP + KEEP // 4 for buckets in per_beach)
    for _, seconds in RANGES:
        view = sampler.view(seconds)["A"]
        assert 0 < len(view.time) <= MAX_POINTS
    everything = sampler.view(None)["A"]
    assert everything.width == 604_800 and everything.count.sum() == 200_000  # "all": weekly buckets


def test_a_range_ends_at_the_newest_reading_not_at_the_wall_clock() -> None:
    sampler = Downsampler(metrics=3)
    add(sampler, "A", [T0 - 10 * 365 * 86_400 + s for s in range(0, 3600, 60)], [1.0] * 60)  # 2014
    view = sampler.view(300.0)["A"]
    assert view.count.sum() == 6  # the last 5 minutes of that hour in 2014, both ends included


def test_delay_percentiles_cover_the_last_minute_within_a_bin() -> None:
    window = DelayWindow(60)
    delays = np.linspace(0.1, 2.0, 1000)
    window.add(np.full(1000, T0 - 5), delays)
    window.add(np.full(50, T0 - 120), np.full(50, 99.0))  # two minutes ago: outside the window
    count, (p50, p95) = window.percentiles(T0, (0.5, 0.95))
    assert count == 1000
    assert p50 is not None and p95 is not None
    assert 1.05 <= p50 <= 1.05 * 1.13 and 1.905 <= p95 <= 1.905 * 1.13  # a bin's upper edge: at most 12% above
    assert DelayWindow(60).percentiles(T0, (0.5,)) == (0, [None])
