"""Realistic readings for six Chicago beaches, learnt from the real 2013-2018 data; and its replay.

**Simulate.** Beaches take turns, one reading per simulated hour each; ``speed`` simulated seconds
pass per real second. Each reading is stamped with the wall-clock time it is served (UTC), so
validation and end-to-end latency are real; the simulated hour only drives the values (season and
time of day). Each metric of each beach (water temperature, turbidity, battery) is a Gaussian-copula
model fitted at start-up from the packaged real data (:mod:`sensor_pipeline.data`):

* a latent series ``x_t = s(t) + a_t``, where ``s`` is the real data's mean normal score by hour of
  day and by ten-day period of the month, and ``a_t`` an AR(1) of what remains: its coefficient
  matches the real residuals' autocorrelation a day apart (0.96-0.99 per hour) and its steps are
  drawn from their real hour-to-hour steps (mostly small, now and then a storm or an upwelling);
* each simulated month ranks its latent values and maps rank ``r`` of ``n`` through the real
  empirical quantile function of that beach, metric and month, at a uniform point of
  ``[r/n, (r+1)/n)`` (stratified sampling).

So every simulated month has the real month's distribution of values by construction, with its
atoms (battery in 0.1 V steps, Montrose Beach's zero turbidity) and tails (storms of 1,000+ NTU), and
nothing is clipped. Stratifying matters: with that much autocorrelation a season of free AR(1) draws
holds only a few dozen independent values per beach, and sampling noise alone would put it 0.1 or
more (Kolmogorov-Smirnov) from the real data. Months with fewer than :data:`MIN_MONTH_READINGS` real
readings share the nearest fuller month's values, and months without any (winter) borrow them.

**Gaps.** With ``gaps=True`` a beach also misses hours as the real buoys do: after each reading a
silence starts with the beach's real probability and lasts a length drawn from its real silences
(see :func:`gap_counts`). Off by default: the API serves every beach every hour.

**Replay.** Serves the real readings in time order with their original timestamps and
deterministic ids, so replaying twice stores nothing twice.

**Faults.** With probability ``fault_rate`` a reading is replaced by a malformed line, an
out-of-range or non-numeric value, a bad or future timestamp, or a duplicate of a recent line. The
real data's own rate is :func:`real_fault_rate` (0.003 %: one reading of 36,405).

**Fidelity.** :func:`fidelity_report` (``sensor-pipeline simulate --report``) simulates a season and
prints its per-beach Kolmogorov-Smirnov distances to the real data with the fault and gap rates.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import itertools
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from statistics import NormalDist, fmean, median

from sensor_pipeline.rules import validate_line

BEACHES: tuple[str, ...] = (
    "63rd Street Beach",
    "Calumet Beach",
    "Montrose Beach",
    "Ohio Street Beach",
    "Osterman Beach",
    "Rainbow Beach",
)
#: The simulated metrics, in line order (the fields of :class:`RealReading`).
METRICS: tuple[str, ...] = ("water_temperature", "turbidity", "battery")
#: A month needs this many real readings of a beach for its own distribution of values; sparser
#: months (Calumet Beach's one April reading, Rainbow Beach's two of May) join the nearest fuller one.
MIN_MONTH_READINGS = 100
#: A silence longer than this is a buoy out of the water (winter, repairs), not a missed reading.
MAX_GAP_HOURS = 48
#: The largest Kolmogorov-Smirnov distance to the real data a simulated season may have, per beach
#: and metric (:func:`fidelity_report`).
KS_LIMIT = 0.05
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class RealReading:
    timestamp: datetime
    beach: str
    water_temperature: float
    turbidity: float
    battery: float


@cache
def real_readings() -> tuple[RealReading, ...]:
    """The packaged real data set, sorted by time (36,405 readings)."""
    source = resources.files("sensor_pipeline") / "data" / "readings.csv.gz"
    with source.open("rb") as raw, gzip.open(raw, "rt", newline="") as handle:
        return tuple(
            RealReading(
                datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC),
                row["beach"],
                float(row["water_temperature"]),
                float(row["turbidity"]),
                float(row["battery"]),
            )
            for row in csv.DictReader(handle)
        )


def format_line(timestamp: datetime, temperature: float, turbidity: float, battery: float, beach: str, mid: int) -> str:
    """The raw line contract: ``<ts> <temp> <turbidity> <battery> <beach_with_underscores> <id>``."""
    stamp = timestamp.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    return f"{stamp} {temperature:.2f} {turbidity:.2f} {battery:.2f} {beach.replace(' ', '_')} {mid}"


def _real_line(reading: RealReading) -> str:
    return format_line(
        reading.timestamp,
        reading.water_temperature,
        reading.turbidity,
        reading.battery,
        reading.beach,
        replay_id(reading),
    )


@cache
def _real_faults() -> tuple[bool, ...]:
    """For each real reading: is it a fault (fails validation, or repeats a beach and time)?"""
    seen: set[tuple[str, datetime]] = set()
    faults = []
    for reading in real_readings():
        key = (reading.beach, reading.timestamp)
        faults.append(key in seen or not validate_line(_real_line(reading)).valid)
        seen.add(key)
    return tuple(faults)


def valid_real_readings() -> list[RealReading]:
    """The real readings that are not faults: what the models learn from."""
    return [r for r, fault in zip(real_readings(), _real_faults(), strict=True) if not fault]


def real_fault_rate() -> float:
    """Share of the real readings that are faults: they fail :func:`sensor_pipeline.rules.validate_line`
    or repeat an earlier reading's beach and time.

    0.0027 %: one reading of 36,405 (Calumet Beach, battery 0.0 V: ``out_of_range``); there are no
    repeats. (The city's raw file also has six empty rows, which the packaged copy leaves out.) Pass
    it as ``Simulator(fault_rate=...)`` to inject faults at the real rate; the default is none.
    """
    faults = _real_faults()
    return sum(faults) / len(faults)


def gap_counts(times: Sequence[datetime]) -> tuple[int, int]:
    """``(missing, expected)`` hourly readings of one beach, given its reading times in order.

    Each silence between two readings of up to :data:`MAX_GAP_HOURS` missing hours counts them all
    as missing; a longer one is the buoy out of the water and counts neither as missing nor as
    expected. The gap rate is ``missing / expected``.
    """
    missing = 0
    for before, after in itertools.pairwise(times):
        silent = round((after - before) / HOUR) - 1
        if 0 < silent <= MAX_GAP_HOURS:
            missing += silent
    return missing, missing + len(times)


@cache
def _real_gap_rates() -> tuple[tuple[str, float], ...]:
    rates = []
    for beach in BEACHES:
        missing, expected = gap_counts([r.timestamp for r in real_readings() if r.beach == beach])
        rates.append((beach, missing / expected))
    return tuple(rates)


def real_gap_rates() -> dict[str, float]:
    """Per beach, the share of expected hourly readings the real buoys missed (:func:`gap_counts`):
    6.0-15.4 %."""
    return dict(_real_gap_rates())


# --- per-beach models ----------------------------------------------------------------------------

_NORMAL = NormalDist()


def _dekad_centres(month_days: int) -> tuple[float, float, float]:
    """Middle of days 1-10, 11-20 and 21-end, in days since the start of the month."""
    return 5.0, 15.0, (20 + month_days) / 2


def _month_days(at: datetime) -> int:
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
        days = _month_days(at)
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


def _normal_scores(values: list[float]) -> list[float]:
    """Normal score of each value at its mid-rank among ``values`` (ties share one score)."""
    ordered = sorted(values)
    n = len(ordered)
    return [
        _NORMAL.inv_cdf((bisect.bisect_left(ordered, v) + bisect.bisect_right(ordered, v)) / (2 * n)) for v in values
    ]


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
    daily, hourly = _autocorrelation(residuals, 24), _autocorrelation(residuals, 1)
    phi = daily ** (1 / 24) if daily is not None and daily > 0 else max(hourly or 0.0, 0.0)
    phi = min(phi, 0.999)
    steps = [after - phi * before for before, after in _pairs(residuals, 1)] or list(residuals.values())
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


def _pairs(series: dict[datetime, float], lag: int) -> list[tuple[float, float]]:
    """The values ``lag`` hours apart in a series keyed by time."""
    apart = lag * HOUR
    return [(value, series[at + apart]) for at, value in series.items() if at + apart in series]


def _autocorrelation(series: dict[datetime, float], lag: int) -> float | None:
    """Autocorrelation ``lag`` hours apart of a zero-mean series (None from fewer than 10 pairs)."""
    pairs = _pairs(series, lag)
    if len(pairs) < 10:
        return None
    return sum(a * b for a, b in pairs) / max(sum(a * a for a, _ in pairs), 1e-12)


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


class SnowflakeIds:
    """Unique positive 63-bit ids: 41 bits of milliseconds, 10 bits of worker, 12 bits of sequence.

    Unique across restarts (time moves on) and across API replicas (distinct ``worker``), unlike the
    original design's random six-digit id, which collides after a few thousand readings.
    """

    EPOCH_MS = 1_577_836_800_000  # 2020-01-01

    def __init__(self, worker: int | None = None) -> None:
        self.worker = (random.SystemRandom().randrange(1024) if worker is None else worker) & 0x3FF
        self._last_ms = -1
        self._sequence = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            now = max(int(time.time() * 1000) - self.EPOCH_MS, self._last_ms)
            if now == self._last_ms:
                self._sequence = (self._sequence + 1) & 0xFFF
                if self._sequence == 0:  # 4096 ids in this millisecond: borrow the next one
                    now += 1
            else:
                self._sequence = 0
            self._last_ms = now
            return (now << 22) | (self.worker << 12) | self._sequence


def replay_id(reading: RealReading) -> int:
    """Deterministic id of a real reading: beach number then yyyymmddHHMM (e.g. 3_201308300800)."""
    number = BEACHES.index(reading.beach) + 1 if reading.beach in BEACHES else 9
    return number * 10**12 + int(reading.timestamp.strftime("%Y%m%d%H%M"))


# --- sources ----------------------------------------------------------------------------------------


@dataclass
class _BeachState:
    """Where one simulated beach stands: its latent AR(1) values, the rest of a silence, its month."""

    latent: list[float]
    silent_hours: int = 0
    month: tuple[int, int] = (0, 0)
    first: datetime = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))
    # one entry per hour of the month: the three values, or None while the buoy is silent
    hours: list[tuple[float, float, float] | None] = field(default_factory=list)


class Simulator:
    """Thread-safe source of raw lines. ``take(n)`` returns the next ``n`` lines.

    ``gaps=True`` makes the simulated buoys miss hours at the real data's rate (off by default).
    """

    FAULTS = ("malformed", "out_of_range", "not_a_number", "bad_timestamp", "future_timestamp", "duplicate")

    def __init__(
        self,
        mode: str = "simulate",
        seed: int | None = None,
        speed: float = 3600.0,
        fault_rate: float = 0.0,
        worker: int | None = None,
        start: datetime | None = None,
        *,
        gaps: bool = False,
    ) -> None:
        if mode not in ("simulate", "replay"):
            raise ValueError(f"mode must be 'simulate' or 'replay', not {mode!r}")
        self.mode = mode
        self.rng = random.Random(seed)
        self.speed = speed
        self.fault_rate = fault_rate
        self.gaps = gaps
        self.ids = SnowflakeIds(worker)
        self.models = fitted_models() if mode == "simulate" else {}
        self.sim_clock = (start or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
        self.state = {
            beach: _BeachState([self.rng.gauss(0.0, m.spread) for m in model.metrics])
            for beach, model in self.models.items()
        }
        #: The simulated hour and beach of the last simulated reading (faulty or not).
        self.last_slot: tuple[datetime, str] | None = None
        self._turn = 0
        self._replay: Iterator[RealReading] = iter(real_readings())
        self._recent: deque[str] = deque(maxlen=50)
        self._lock = threading.Lock()
        self._last_replayed: datetime | None = None
        self._pending: tuple[str, float] | None = None
        self._paced_since: float | None = None
        self._paced_data_seconds = 0.0
        self.served = 0

    def take(self, count: int) -> list[str]:
        """The next ``count`` lines at once (the caller sets the pace)."""
        with self._lock:
            lines = [self._pop()[0] for _ in range(count)]
            self.served += len(lines)
            return lines

    def take_due(self, limit: int = 10_000, now: float | None = None) -> list[str]:
        """The lines whose time has come at ``speed`` data-seconds per real second (streaming pace).

        Simulated beaches report hourly, so six beaches give 6 * speed / 3600 lines per second
        (fewer with ``gaps``). Replay keeps the real gaps between readings, capped at one hour so
        winters pass at once. ``now`` (monotonic seconds, default the real clock) lets a caller's
        clock set the pace.
        """
        with self._lock:
            now = time.monotonic() if now is None else now
            if self._paced_since is None:
                self._paced_since = now
            budget = (now - self._paced_since) * self.speed
            lines: list[str] = []
            while len(lines) < limit:
                line, gap = self._peek()
                if self._paced_data_seconds + gap > budget:
                    break
                self._pop()
                self._paced_data_seconds += gap
                lines.append(line)
            self.served += len(lines)
            return lines

    def _peek(self) -> tuple[str, float]:
        if self._pending is None:
            self._pending = self._next()
        return self._pending

    def _pop(self) -> tuple[str, float]:
        item = self._peek()
        self._pending = None
        return item

    def _next(self) -> tuple[str, float]:
        """The next line and the data time (s) since the previous reading."""
        if self.mode == "simulate":
            line, slots = self._simulated()
            gap = slots * 3600.0 / len(BEACHES)
        else:
            line, gap = self._replayed()
        if self.fault_rate and self.rng.random() < self.fault_rate:
            line = self._fault(line)
        self._recent.append(line)
        return line, gap

    def _simulated(self) -> tuple[str, int]:
        """The next simulated reading and how many beach-hours passed for it (more than one when
        beaches were silent)."""
        slots = 0
        while True:
            beach, at = BEACHES[self._turn % len(BEACHES)], self.sim_clock
            self._turn += 1
            if self._turn % len(BEACHES) == 0:
                self.sim_clock += HOUR
            slots += 1
            values = self._values(beach, at)
            if values is not None:
                break
        self.last_slot = (at, beach)
        temperature, turbidity, battery = values
        return format_line(datetime.now(UTC), temperature, turbidity, battery, beach, self.ids.next()), slots

    def _values(self, beach: str, at: datetime) -> tuple[float, float, float] | None:
        state = self.state[beach]
        if state.month != (at.year, at.month):
            self._simulate_month(beach, at)
        return state.hours[round((at - state.first) / HOUR)]

    def _simulate_month(self, beach: str, at: datetime) -> None:
        """Draw every hour of ``at``'s month for ``beach`` (see the module docstring)."""
        model, state, rng = self.models[beach], self.state[beach], self.rng
        first = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        times = [first + i * HOUR for i in range(_month_days(first) * 24)]
        reporting = []
        for _ in times:
            if state.silent_hours:
                state.silent_hours -= 1
                reporting.append(False)
                continue
            reporting.append(True)
            if self.gaps and rng.random() < model.gaps.start:
                state.silent_hours = rng.choice(model.gaps.lengths)
        columns = []
        for k, metric in enumerate(model.metrics):
            latent, value = [], state.latent[k]
            for t, reports in zip(times, reporting, strict=True):
                value = metric.phi * value + rng.choice(metric.innovations)
                if reports:
                    latent.append(metric.season(t) + value)
            state.latent[k] = value
            drawn = [0.0] * len(latent)
            for rank, i in enumerate(sorted(range(len(latent)), key=latent.__getitem__)):
                drawn[i] = metric.quantile(first.month, (rank + rng.random()) / len(latent))
            columns.append(drawn)
        rows = iter(zip(*columns, strict=True))
        state.hours = [next(rows) if reports else None for reports in reporting]
        state.month, state.first = (at.year, at.month), first

    def _replayed(self) -> tuple[str, float]:
        reading = next(self._replay, None)
        if reading is None:  # wrap around: the same ids again, which the store deduplicates
            self._replay = iter(real_readings())
            reading = next(self._replay)
        previous, self._last_replayed = self._last_replayed, reading.timestamp
        gap = 0.0 if previous is None else min(max((reading.timestamp - previous).total_seconds(), 0.0), 3600.0)
        return _real_line(reading), gap

    def _fault(self, line: str) -> str:
        fields = line.split()
        kind = self.rng.choice(self.FAULTS)
        if kind == "malformed":
            return " ".join(fields[: self.rng.randrange(1, 6)])
        if kind == "out_of_range":
            fields[1] = f"{self.rng.choice([-40.0, 99.9, 451.0]):.1f}"
        elif kind == "not_a_number":
            fields[self.rng.randrange(1, 4)] = self.rng.choice(["NaN", "n/a", "--", "1,5"])
        elif kind == "bad_timestamp":
            fields[0] = self.rng.choice(["yesterday", "2020-13-45T25:61:00", "17/02/2020"])
        elif kind == "future_timestamp":
            fields[0] = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
        elif kind == "duplicate" and self._recent:
            return self.rng.choice(self._recent)
        return " ".join(fields)


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


def ks_distance(sample: Sequence[float], reference: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Two-sample Kolmogorov-Smirnov distance ``sup_x |F(x) - G(x)|`` between the empirical
    distribution functions of ``sample`` (value ``i`` counting ``weights[i]``, default 1) and of
    ``reference``: 0 when both hold the same values in the same proportions, 1 when they do not overlap.
    """
    weighted = sorted(zip(sample, weights or [1.0] * len(sample), strict=True))
    weighted = [(value, weight) for value, weight in weighted if weight > 0]
    ordered = sorted(reference)
    total = math.fsum(weight for _, weight in weighted)
    if not weighted or not ordered or total <= 0:
        raise ValueError("both samples need at least one value (of positive weight)")
    i = j = 0
    below = distance = 0.0
    while i < len(weighted) or j < len(ordered):
        x = min(weighted[i][0] if i < len(weighted) else math.inf, ordered[j] if j < len(ordered) else math.inf)
        while i < len(weighted) and weighted[i][0] == x:
            below += weighted[i][1]
            i += 1
        while j < len(ordered) and ordered[j] == x:
            j += 1
        distance = max(distance, abs(below / total - j / len(ordered)))
    return min(distance, 1.0)


@dataclass(frozen=True)
class Fidelity:
    """How close a simulated season came to the real data (:func:`fidelity_report`)."""

    ks: dict[str, dict[str, float]]  # beach -> metric -> KS distance
    gap_rates: dict[str, tuple[float, float]]  # beach -> (real, simulated)
    faults: tuple[int, int]  # (real readings, simulated lines) that are faults
    readings: tuple[int, int]  # (real readings, simulated lines)
    season: tuple[datetime, datetime]  # the simulated hours: [start, end)

    @property
    def worst(self) -> float:
        return max(d for row in self.ks.values() for d in row.values())

    @property
    def fault_rates(self) -> tuple[float, float]:
        return self.faults[0] / self.readings[0], self.faults[1] / self.readings[1]

    def table(self) -> str:
        """The report as text: a row per beach, then the worst distance and the fault rates."""
        start, end = self.season
        width = max(len(b) for b in self.ks)
        header = ("temperature", "turbidity", "battery", "gaps real", "gaps sim")
        rows = [
            f"Simulated season {start:%Y-%m-%d} to {end - HOUR:%Y-%m-%d} (months and hours weighted as the real "
            f"buoys report them): {self.readings[1]:,} simulated, {self.readings[0]:,} real readings.",
            f"Kolmogorov-Smirnov distance to the real data per beach (limit {KS_LIMIT}), and gap rates:",
            "",
            f"{'beach':<{width}}  " + "  ".join(header),
        ]
        for beach, row in self.ks.items():
            cells = [f"{row[name]:.3f}" for name in METRICS] + [f"{rate:.1%}" for rate in self.gap_rates[beach]]
            rows.append(f"{beach:<{width}}  " + "  ".join(f"{c:>{len(h)}}" for c, h in zip(cells, header, strict=True)))
        real, simulated = self.fault_rates
        rows += [
            "",
            f"worst KS distance: {self.worst:.3f} ({'within' if self.worst <= KS_LIMIT else 'above'} {KS_LIMIT})",
            f"fault rate: real {real:.4%} ({self.faults[0]:,} of {self.readings[0]:,}), "
            f"simulated {simulated:.4%} ({self.faults[1]:,} of {self.readings[1]:,})",
        ]
        return "\n".join(rows)


def fidelity_report(seed: int = 1, year: int = 2015, fault_rate: float | None = None) -> Fidelity:
    """Simulate a season and compare it with the packaged real data, beach by beach (a few seconds).

    The season runs hourly through the months the real buoys report (May to October) of ``year``,
    with gaps (``Simulator(gaps=True)``) and faults at ``fault_rate`` (default :func:`real_fault_rate`).
    Each simulated reading at beach ``b`` in month ``m`` at hour ``h`` counts ``real(b, m, h) /
    simulated(b, m, h)`` in the distances, so the months and hours of day weigh as in the real data
    (a month without real readings of a beach counts nothing there).

    * KS distance: :func:`ks_distance` of water temperature, turbidity and battery between the valid,
      non-repeated simulated lines and the real readings that are not faults.
    * Fault rate: share of the lines (real: readings) that fail
      :func:`sensor_pipeline.rules.validate_line` or repeat an earlier line (real: beach and time).
    * Gap rate: share of expected hourly readings that are missing, per :func:`gap_counts`.
    """
    real = valid_real_readings()
    real_cells = Counter((r.beach, r.timestamp.month, r.timestamp.hour) for r in real)
    months = sorted({r.timestamp.month for r in real})
    start = datetime(year, months[0], 1, tzinfo=UTC)
    end = datetime(year + months[-1] // 12, months[-1] % 12 + 1, 1, tzinfo=UTC)
    simulator = Simulator(
        seed=seed, fault_rate=real_fault_rate() if fault_rate is None else fault_rate, worker=0, start=start, gaps=True
    )
    seen: set[str] = set()
    slots: dict[str, list[datetime]] = {beach: [] for beach in BEACHES}
    values: dict[str, list[tuple[int, int, tuple[float, float, float]]]] = {beach: [] for beach in BEACHES}
    lines = faults = 0
    while True:
        line = simulator.take(1)[0]
        assert simulator.last_slot is not None
        at, beach = simulator.last_slot
        if at >= end:
            break
        lines += 1
        slots[beach].append(at)
        verdict = validate_line(line)
        if not verdict.valid or line in seen:
            faults += 1
        else:
            record = verdict.record or {}
            reading = (record["WaterTemperature"], record["Turbidity"], record["BatteryLife"])
            values[beach].append((at.month, at.hour, reading))
        seen.add(line)

    ks: dict[str, dict[str, float]] = {}
    gap_rates: dict[str, tuple[float, float]] = {}
    real_gaps = real_gap_rates()
    for beach in BEACHES:
        simulated_cells = Counter((month, hour) for month, hour, _ in values[beach])
        weights = [real_cells[beach, m, h] / simulated_cells[m, h] for m, h, _ in values[beach]]
        ks[beach] = {
            name: ks_distance(
                [reading[k] for _, _, reading in values[beach]],
                [float(getattr(r, name)) for r in real if r.beach == beach],
                weights,
            )
            for k, name in enumerate(METRICS)
        }
        missing, expected = gap_counts(slots[beach])
        gap_rates[beach] = (real_gaps[beach], missing / expected)
    real_faults = sum(_real_faults())
    return Fidelity(ks, gap_rates, (real_faults, faults), (len(real_readings()), lines), (start, end))
