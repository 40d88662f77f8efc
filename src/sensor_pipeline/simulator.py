"""Realistic readings for six Chicago beaches, learnt from the real 2013-2018 data; and its replay.

**Simulate.** Each beach is a small stochastic model fitted at start-up from the packaged real data
(:mod:`sensor_pipeline.data`): water temperature = the beach's monthly mean + the diurnal profile +
an AR(1) residual; turbidity = a log-normal AR(1) around the beach's median (so calm water with rare
storms of several hundred NTU, as in the data); battery = an AR(1) around the beach's median level.
AR(1) coefficients are the lag-1 autocorrelations measured on consecutive hourly readings. Beaches
take turns, one reading per simulated hour each; ``speed`` simulated seconds pass per real second.
Each reading is stamped with the wall-clock time it is served (UTC), so validation and end-to-end
latency are real; the simulated hour only drives the values (season and time of day).

**Replay.** Serves the real readings in time order with their original timestamps and
deterministic ids, so replaying twice stores nothing twice.

**Faults.** With probability ``fault_rate`` a reading is replaced by a malformed line, an
out-of-range or non-numeric value, a bad or future timestamp, or a duplicate of a recent line.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import math
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from statistics import fmean, median, pstdev

BEACHES: tuple[str, ...] = (
    "63rd Street Beach",
    "Calumet Beach",
    "Montrose Beach",
    "Ohio Street Beach",
    "Osterman Beach",
    "Rainbow Beach",
)


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


# --- per-beach models ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AR1:
    """x_t = mean + phi * (x_{t-1} - mean) + N(0, sigma)."""

    mean: float
    phi: float
    sigma: float

    def step(self, previous: float, rng: random.Random, mean: float | None = None) -> float:
        centre = self.mean if mean is None else mean
        return centre + self.phi * (previous - centre) + rng.gauss(0.0, self.sigma)


def _fit_ar1(series: list[tuple[datetime, float]]) -> AR1:
    values = [v for _, v in series]
    mean, std = fmean(values), pstdev(values) or 1e-6
    pairs = [(a - mean, b - mean) for (t0, a), (t1, b) in itertools.pairwise(series) if t1 - t0 == timedelta(hours=1)]
    if len(pairs) < 10:
        return AR1(mean, 0.0, std)
    phi = sum(x * y for x, y in pairs) / max(sum(x * x for x, _ in pairs), 1e-9)
    phi = min(max(phi, 0.0), 0.995)
    return AR1(mean, phi, std * math.sqrt(1 - phi * phi))


@dataclass(frozen=True)
class BeachModel:
    beach: str
    monthly_temperature: dict[int, float]
    diurnal: dict[int, float]
    temperature: AR1  # residual after month + hour
    log_turbidity: AR1
    battery: AR1
    battery_range: tuple[float, float]

    def temperature_mean(self, at: datetime) -> float:
        month = (
            at.month
            if at.month in self.monthly_temperature
            else min(self.monthly_temperature, key=lambda m: abs(m - at.month))
        )
        return self.monthly_temperature[month] + self.diurnal.get(at.hour, 0.0)


@cache
def fitted_models() -> dict[str, BeachModel]:
    """One model per beach, fitted from the packaged real data (about 0.3 s)."""
    readings = real_readings()
    by_beach: dict[str, list[RealReading]] = {b: [] for b in BEACHES}
    for reading in readings:
        by_beach.setdefault(reading.beach, []).append(reading)
    hour_offsets: dict[int, list[float]] = {h: [] for h in range(24)}
    models = {}
    for beach, rows in by_beach.items():
        months: dict[int, list[float]] = {}
        for r in rows:
            months.setdefault(r.timestamp.month, []).append(r.water_temperature)
        monthly = {m: fmean(v) for m, v in months.items() if len(v) >= 24}
        for r in rows:
            if r.timestamp.month in monthly:
                hour_offsets[r.timestamp.hour].append(r.water_temperature - monthly[r.timestamp.month])
        models[beach] = (rows, monthly)
    diurnal = {h: fmean(v) if v else 0.0 for h, v in hour_offsets.items()}
    fitted = {}
    for beach, (rows, monthly) in models.items():
        residuals = [
            (r.timestamp, r.water_temperature - monthly[r.timestamp.month] - diurnal[r.timestamp.hour])
            for r in rows
            if r.timestamp.month in monthly
        ]
        log_turbidity = [(r.timestamp, math.log(max(r.turbidity, 0.01))) for r in rows]
        battery = [(r.timestamp, r.battery) for r in rows if r.battery > 0]
        levels = sorted(v for _, v in battery)
        fitted[beach] = BeachModel(
            beach=beach,
            monthly_temperature=monthly,
            diurnal=diurnal,
            temperature=_fit_ar1(residuals),
            log_turbidity=_fit_ar1(log_turbidity),
            battery=_fit_ar1(battery),
            battery_range=(levels[len(levels) // 200], levels[-1]),
        )
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


class Simulator:
    """Thread-safe source of raw lines. ``take(n)`` returns the next ``n`` lines."""

    FAULTS = ("malformed", "out_of_range", "not_a_number", "bad_timestamp", "future_timestamp", "duplicate")

    def __init__(
        self,
        mode: str = "simulate",
        seed: int | None = None,
        speed: float = 3600.0,
        fault_rate: float = 0.0,
        worker: int | None = None,
        start: datetime | None = None,
    ) -> None:
        if mode not in ("simulate", "replay"):
            raise ValueError(f"mode must be 'simulate' or 'replay', not {mode!r}")
        self.mode = mode
        self.rng = random.Random(seed)
        self.speed = speed
        self.fault_rate = fault_rate
        self.ids = SnowflakeIds(worker)
        self.models = fitted_models() if mode == "simulate" else {}
        self.sim_clock = (start or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
        self.state = {
            beach: {"temp": 0.0, "log_turb": m.log_turbidity.mean, "battery": m.battery.mean}
            for beach, m in self.models.items()
        }
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

        Simulated beaches report hourly, so six beaches give 6 * speed / 3600 lines per second.
        Replay keeps the real gaps between readings, capped at one hour so winters pass at once.
        ``now`` (monotonic seconds, default the real clock) lets a caller's clock set the pace.
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
            line, gap = self._simulated(), 3600.0 / len(BEACHES)
        else:
            line, gap = self._replayed()
        if self.fault_rate and self.rng.random() < self.fault_rate:
            line = self._fault(line)
        self._recent.append(line)
        return line, gap

    def _simulated(self) -> str:
        beach = BEACHES[self._turn % len(BEACHES)]
        self._turn += 1
        if self._turn % len(BEACHES) == 0:
            self.sim_clock += timedelta(hours=1)
        model, state, rng = self.models[beach], self.state[beach], self.rng
        state["temp"] = model.temperature.step(state["temp"], rng, mean=0.0)
        state["log_turb"] = model.log_turbidity.step(state["log_turb"], rng)
        state["battery"] = model.battery.step(state["battery"], rng)
        low, high = model.battery_range
        temperature = min(max(model.temperature_mean(self.sim_clock) + state["temp"], 0.0), 32.0)
        turbidity = min(math.exp(state["log_turb"]), 1700.0)
        battery = min(max(state["battery"], low), high)
        return format_line(datetime.now(UTC), temperature, turbidity, battery, beach, self.ids.next())

    def _replayed(self) -> tuple[str, float]:
        reading = next(self._replay, None)
        if reading is None:  # wrap around: the same ids again, which the store deduplicates
            self._replay = iter(real_readings())
            reading = next(self._replay)
        previous, self._last_replayed = self._last_replayed, reading.timestamp
        gap = 0.0 if previous is None else min(max((reading.timestamp - previous).total_seconds(), 0.0), 3600.0)
        line = format_line(
            reading.timestamp,
            reading.water_temperature,
            reading.turbidity,
            reading.battery,
            reading.beach,
            replay_id(reading),
        )
        return line, gap

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
    return {
        beach: {
            "temperature_summer_mean": round(median(m.monthly_temperature.values()), 2),
            "temperature_ar1_phi": round(m.temperature.phi, 3),
            "turbidity_median": round(math.exp(m.log_turbidity.mean), 2),
            "turbidity_ar1_phi": round(m.log_turbidity.phi, 3),
            "battery_mean": round(m.battery.mean, 2),
        }
        for beach, m in fitted_models().items()
    }
