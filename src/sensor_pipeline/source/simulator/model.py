"""The per-beach, per-metric Gaussian-copula models fitted from the real readings (see the package's
docstring), and their summary (``simulate --report``)."""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from statistics import NormalDist, fmean, median

from sensor_pipeline.contract.schema import BEACHES
from sensor_pipeline.source.simulator.real import (
    HOUR,
    MAX_GAP_HOURS,
    METRICS,
    RealReading,
    real_readings,
    valid_real_readings,
)

#: A month needs this many real readings of a beach for its own distribution of values; sparser
#: months (Calumet Beach's one April reading, Rainbow Beach's two of May) join the nearest fuller one.
MIN_MONTH_READINGS = 100


_NORMAL = NormalDist()


def _dekad_centres(month_days: int) -> tuple[float, float, float]:
    """Middle of days 1-10, 11-20 and 21-end, in days since the start of the month."""
    return 5.0, 15.0, (20 + month_days) / 2


def month_days(at: datetime) -> int:
    first = at.replace(day=1)
    return ((first + timedelta(days=32)).replace(day=1) - first).days


def _dekad(day: int) -> int:
    return min((day - 1) // 10, 2)


@dataclass(frozen=True)
class MetricModel:
    """One metric at one beach: the real values by month, and the latent series that orders them.

    ``pools[m]`` holds the sorted real values of month ``m`` (1-12; a sparse or empty month shares
    its nearest fuller month's); ``trend[m]`` the mean normal score of the real values in days 1-10,
    11-20 and 21-end of month ``m``; ``diurnal[h]`` the mean normal score at hour ``h``. What remains
    is an AR(1) with coefficient ``phi``, standard deviation ``spread`` and steps drawn from
    ``innovations``.
    """

    name: str
    pools: dict[int, tuple[float, ...]]
    trend: dict[int, tuple[float, float, float]]
    diurnal: tuple[float, ...]
    phi: float
    spread: float
    innovations: tuple[float, ...]
    mean: float
    median: float

    def season(self, at: datetime) -> float:
        """``s(t)``: the expected normal score at this time of month and day."""
        days = month_days(at)
        centres = _dekad_centres(days)
        levels = self.trend[at.month]
        position = at.day - 1 + at.hour / 24
        if position <= centres[0]:
            level = levels[0]
        elif position >= centres[2]:
            level = levels[2]
        else:
            i = 0 if position < centres[1] else 1
            share = (position - centres[i]) / (centres[i + 1] - centres[i])
            level = levels[i] + share * (levels[i + 1] - levels[i])
        return level + self.diurnal[at.hour]

    def quantile(self, month: int, u: float) -> float:
        """The real empirical quantile function of ``month`` at ``u`` in [0, 1)."""
        pool = self.pools[month]
        return pool[min(int(u * len(pool)), len(pool) - 1)]


@dataclass(frozen=True)
class GapModel:
    """After a reading, a silence starts with probability ``start`` and lasts one of ``lengths``
    hours (the beach's real silences of up to :data:`MAX_GAP_HOURS`)."""

    start: float
    lengths: tuple[int, ...]


@dataclass(frozen=True)
class BeachModel:
    beach: str
    temperature: MetricModel
    turbidity: MetricModel
    battery: MetricModel
    gaps: GapModel

    @property
    def metrics(self) -> tuple[MetricModel, MetricModel, MetricModel]:
        """In :data:`METRICS` (line) order."""
        return self.temperature, self.turbidity, self.battery


def _home_months(counts: Counter[int]) -> dict[int, int]:
    """Month (1-12) -> the month whose real values it uses: itself if it has enough readings, else
    the nearest month that has (the later one on a tie)."""
    full = [m for m, n in counts.items() if n >= MIN_MONTH_READINGS] or [max(counts, key=counts.__getitem__)]
    return {m: (m if m in full else min(full, key=lambda f: (abs(f - m), -f))) for m in range(1, 13)}


def mid_ranks(values: list[float]) -> list[float]:
    """Rank of each value among ``values``, from 0.5 to ``n - 0.5``; ties share their mean rank."""
    ordered = sorted(values)
    return [(bisect.bisect_left(ordered, v) + bisect.bisect_right(ordered, v)) / 2 for v in values]


def _normal_scores(values: list[float]) -> list[float]:
    """Normal score of each value at its mid-rank among ``values`` (ties share one score)."""
    n = len(values)
    return [_NORMAL.inv_cdf(rank / n) for rank in mid_ranks(values)]


def _fit_metric(name: str, rows: list[RealReading], home: dict[int, int]) -> MetricModel:
    values = [float(getattr(r, name)) for r in rows]
    by_month: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_month.setdefault(home[r.timestamp.month], []).append(i)
    scores = [0.0] * len(rows)
    for members in by_month.values():
        for i, score in zip(members, _normal_scores([values[i] for i in members]), strict=True):
            scores[i] = score
    pools = {m: tuple(sorted(values[i] for i in by_month[home[m]])) for m in range(1, 13)}

    by_hour: dict[int, list[float]] = {h: [] for h in range(24)}
    for r, score in zip(rows, scores, strict=True):
        by_hour[r.timestamp.hour].append(score)
    diurnal = tuple(fmean(by_hour[h]) if by_hour[h] else 0.0 for h in range(24))
    # Ten-day means shrunk towards 0 by a day's worth of readings, so a thin period means little.
    sums: dict[tuple[int, int], list[float]] = {}
    for r, score in zip(rows, scores, strict=True):
        cell = sums.setdefault((home[r.timestamp.month], _dekad(r.timestamp.day)), [0.0, 0.0])
        cell[0] += score - diurnal[r.timestamp.hour]
        cell[1] += 1
    levels = {key: total / (count + 24) for key, (total, count) in sums.items()}
    trend = {
        m: (levels.get((home[m], 0), 0.0), levels.get((home[m], 1), 0.0), levels.get((home[m], 2), 0.0))
        for m in range(1, 13)
    }
    partial = MetricModel(name, pools, trend, diurnal, 0.0, 1.0, (), fmean(values), median(values))

    residuals = {r.timestamp: score - partial.season(r.timestamp) for r, score in zip(rows, scores, strict=True)}
    variance = fmean(e * e for e in residuals.values())
    # An AR(1) fitted to the next hour would forget within days what the buoys remember for
    # weeks: the real series drift smoothly but jump now and then. Fit the coefficient a day apart
    # and take the real steps (jumps included) as innovations, rescaled to the AR(1)'s variance.
    daily, hourly = autocorrelation(residuals, 24), autocorrelation(residuals, 1)
    phi = daily ** (1 / 24) if daily is not None and daily > 0 else max(hourly or 0.0, 0.0)
    phi = min(phi, 0.999)
    steps = [after - phi * before for before, after in pairs(residuals, 1)] or list(residuals.values())
    scale = math.sqrt(variance * (1 - phi * phi) / max(fmean(x * x for x in steps), 1e-12))
    return MetricModel(
        name,
        pools,
        trend,
        diurnal,
        phi,
        math.sqrt(variance),
        tuple(x * scale for x in steps),
        partial.mean,
        partial.median,
    )


def pairs(series: dict[datetime, float], lag: int) -> list[tuple[float, float]]:
    """The values ``lag`` hours apart in a series keyed by time."""
    apart = lag * HOUR
    return [(value, series[at + apart]) for at, value in series.items() if at + apart in series]


def autocorrelation(series: dict[datetime, float], lag: int) -> float | None:
    """Autocorrelation ``lag`` hours apart of a zero-mean series (None from fewer than 10 pairs)."""
    both = pairs(series, lag)
    if len(both) < 10:
        return None
    return sum(a * b for a, b in both) / max(sum(a * a for a, _ in both), 1e-12)


def _fit_gaps(rows: list[RealReading]) -> GapModel:
    silences = [round((b.timestamp - a.timestamp) / HOUR) - 1 for a, b in itertools.pairwise(rows)]
    lengths = tuple(s for s in silences if 0 < s <= MAX_GAP_HOURS)
    return GapModel(len(lengths) / len(rows), lengths or (1,))


@cache
def fitted_models() -> dict[str, BeachModel]:
    """One model per beach, fitted from the packaged real data (about 1 s)."""
    by_beach: dict[str, list[RealReading]] = {b: [] for b in BEACHES}
    for reading in valid_real_readings():
        by_beach.setdefault(reading.beach, []).append(reading)
    fitted = {}
    for beach, rows in by_beach.items():
        home = _home_months(Counter(r.timestamp.month for r in rows))
        temperature, turbidity, battery = (_fit_metric(name, rows, home) for name in METRICS)
        everything = [r for r in real_readings() if r.beach == beach]  # gaps: faulty readings were sent too
        fitted[beach] = BeachModel(beach, temperature, turbidity, battery, _fit_gaps(everything))
    return fitted


# --- ids ------------------------------------------------------------------------------------------


def describe_models() -> dict[str, dict[str, float]]:
    """A summary of the fitted per-beach behaviour (served by ``/beaches``)."""
    summary = {}
    for beach, m in fitted_models().items():
        months = {id(pool): pool for pool in m.temperature.pools.values()}.values()
        summary[beach] = {
            "temperature_summer_mean": round(median(fmean(pool) for pool in months), 2),
            "temperature_ar1_phi": round(m.temperature.phi, 3),
            "turbidity_median": round(m.turbidity.median, 2),
            "turbidity_ar1_phi": round(m.turbidity.phi, 3),
            "battery_mean": round(m.battery.mean, 2),
        }
    return summary


# --- fidelity ------------------------------------------------------------------------------------
