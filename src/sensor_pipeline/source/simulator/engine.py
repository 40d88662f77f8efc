"""The simulator itself: beaches taking turns, one reading per simulated hour each, and the replay."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sensor_pipeline.contract.schema import BEACHES
from sensor_pipeline.source.simulator.ids import SnowflakeIds
from sensor_pipeline.source.simulator.model import (
    fitted_models,
    month_days,
)
from sensor_pipeline.source.simulator.real import (
    HOUR,
    RealReading,
    format_line,
    real_line,
    real_readings,
)


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
        times = [first + i * HOUR for i in range(month_days(first) * 24)]
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
        return real_line(reading), gap

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
