"""Server-side aggregation: whatever the reading rate, a browser gets a few hundred points per beach.

:class:`Downsampler` keeps, per beach, the count, mean, minimum and maximum of each metric in time
buckets at several widths (1 s to a week), at most ``KEEP`` buckets per width: updating it costs a few
vectorised numpy calls per poll of the clean topic, and memory is bounded whatever the rate or the
span of the readings' timestamps. A view of a time range takes the finest width that draws it in at
most ``MAX_POINTS`` buckets.

:class:`DelayWindow` keeps histograms of the end-to-end delay per second of the last minute.

Times are the readings' own timestamps (seconds since the epoch). Where a range ends is the hub's
choice: the present while readings arrive live, the newest reading for a replay of 2013 data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Bucket widths in seconds, finest first.
LEVELS: tuple[int, ...] = (1, 10, 60, 600, 3_600, 21_600, 86_400, 604_800)
#: Buckets kept per beach and width: the finest spans 12 minutes, the coarsest 13 years.
KEEP = 720
#: At most this many buckets per beach in a view.
MAX_POINTS = 400
#: The time-range selector's choices: (label, seconds); None = everything kept.
RANGES: tuple[tuple[str, float | None], ...] = (
    ("5 min", 300.0),
    ("1 h", 3_600.0),
    ("6 h", 21_600.0),
    ("24 h", 86_400.0),
    ("7 d", 604_800.0),
    ("all", None),
)

# One bucket's cells: [count, sum x M, min x M, max x M] for M metrics.


@dataclass(frozen=True)
class View:
    """One beach's buckets in a range: bucket centres (epoch ms) and per-metric mean/min/max."""

    width: int
    time: NDArray[np.float64]
    count: NDArray[np.float64]
    mean: NDArray[np.float64]  # shape (buckets, metrics)
    low: NDArray[np.float64]
    high: NDArray[np.float64]


class Downsampler:
    """Multi-width bucket aggregates of ``metrics`` values per beach (not thread-safe: the hub locks)."""

    def __init__(self, metrics: int, levels: Sequence[int] = LEVELS, keep: int = KEEP) -> None:
        self.metrics = metrics
        self.levels = tuple(levels)
        self.keep = keep
        self.beaches: list[str] = []
        self._index: dict[str, int] = {}
        #: level -> beach index -> bucket number -> cells
        self._buckets: dict[int, list[dict[int, NDArray[np.float64]]]] = {level: [] for level in self.levels}
        self.newest = -math.inf
        self.oldest = math.inf

    def beach_index(self, beach: str) -> int:
        index = self._index.get(beach)
        if index is None:
            index = self._index[beach] = len(self.beaches)
            self.beaches.append(beach)
            for per_beach in self._buckets.values():
                per_beach.append({})
        return index

    def add(self, beaches: Sequence[str], times: NDArray[np.float64], values: NDArray[np.float64]) -> None:
        """Add readings: ``beaches[i]`` at ``times[i]`` (epoch seconds) measured ``values[i]``."""
        if not len(times):
            return
        beach = np.fromiter((self.beach_index(b) for b in beaches), dtype=np.int64, count=len(beaches))
        at = np.asarray(times, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64).reshape(len(at), self.metrics)
        self.newest = max(self.newest, float(at.max()))
        self.oldest = min(self.oldest, float(at.min()))
        m = self.metrics
        for level in self.levels:
            bucket = np.floor_divide(at, level).astype(np.int64)
            # One key per (beach, bucket); beach indexes are small, buckets fit in 40 bits (1 s: 34 000 years).
            keys, inverse = np.unique(beach << 40 | (bucket - bucket.min()), return_inverse=True)
            groups = len(keys)
            cells = np.empty((groups, 1 + 3 * m))
            cells[:, 0] = np.bincount(inverse, minlength=groups)
            for j in range(m):
                cells[:, 1 + j] = np.bincount(inverse, weights=values[:, j], minlength=groups)
            low = np.full((groups, m), np.inf)
            high = np.full((groups, m), -np.inf)
            np.minimum.at(low, inverse, values)
            np.maximum.at(high, inverse, values)
            cells[:, 1 + m : 1 + 2 * m] = low
            cells[:, 1 + 2 * m :] = high
            first = np.zeros(groups, dtype=np.int64)
            first[inverse[::-1]] = np.arange(len(inverse))[::-1]  # a row of each group
            per_beach = self._buckets[level]
            for g in range(groups):
                row = first[g]
                self._merge(per_beach[beach[row]], int(bucket[row]), cells[g])
            for index in set(beach[first].tolist()):
                self._trim(per_beach[index])

    def _merge(self, buckets: dict[int, NDArray[np.float64]], number: int, cells: NDArray[np.float64]) -> None:
        current = buckets.get(number)
        if current is None:
            buckets[number] = cells.copy()
            return
        m = self.metrics
        current[: 1 + m] += cells[: 1 + m]
        np.minimum(current[1 + m : 1 + 2 * m], cells[1 + m : 1 + 2 * m], out=current[1 + m : 1 + 2 * m])
        np.maximum(current[1 + 2 * m :], cells[1 + 2 * m :], out=current[1 + 2 * m :])

    def _trim(self, buckets: dict[int, NDArray[np.float64]]) -> None:
        if len(buckets) > self.keep + self.keep // 4:  # trim in steps, not on every add
            for number in sorted(buckets)[: len(buckets) - self.keep]:
                del buckets[number]

    def width_for(self, seconds: float | None) -> int:
        """The finest bucket width that draws ``seconds`` (None: all kept) in at most MAX_POINTS buckets
        and still keeps that far back."""
        span = seconds if seconds is not None else max(self.newest - self.oldest, 1.0)
        for level in self.levels:
            if span / level <= MAX_POINTS and level * self.keep >= span:
                return level
        return self.levels[-1]

    def view(self, seconds: float | None, end: float | None = None) -> dict[str, View]:
        """Each beach's buckets in the ``seconds`` before ``end`` (epoch seconds; default the newest
        reading), None: all kept; buckets after ``end`` too (a clock a little ahead)."""
        if not self.beaches:
            return {}
        width = self.width_for(seconds)
        start = -math.inf if seconds is None else (self.newest if end is None else end) - seconds
        m = self.metrics
        views = {}
        for beach, buckets in zip(self.beaches, self._buckets[width], strict=True):
            numbers = sorted(n for n in buckets if (n + 1) * width > start)[-MAX_POINTS:]
            cells = np.array([buckets[n] for n in numbers]).reshape(len(numbers), 1 + 3 * m)
            count = cells[:, 0]
            views[beach] = View(
                width=width,
                time=(np.array(numbers, dtype=np.float64) + 0.5) * width * 1000.0,
                count=count,
                mean=cells[:, 1 : 1 + m] / np.maximum(count, 1)[:, None],
                low=cells[:, 1 + m : 1 + 2 * m],
                high=cells[:, 1 + 2 * m :],
            )
        return views


#: Delay histogram bin edges in seconds: 10 ms to a day, 20 per decade; the last bin is "a day or more".
DELAY_EDGES: NDArray[np.float64] = np.concatenate(([0.0], np.logspace(-2, math.log10(86_400), 140), [np.inf]))


class DelayWindow:
    """Histograms of delays per second of the last ``seconds``, for percentiles over that window."""

    def __init__(self, seconds: int = 60) -> None:
        self.seconds = seconds
        self._hist = np.zeros((seconds, len(DELAY_EDGES) - 1))
        self._second = np.full(seconds, -1, dtype=np.int64)  # which epoch second each row holds

    def add(self, at: NDArray[np.float64], delays: NDArray[np.float64]) -> None:
        """Delays (seconds) observed at epoch seconds ``at``; negative delays (clock skew) count as 0."""
        if not len(at):
            return
        seconds = np.floor(at).astype(np.int64)
        bins = np.searchsorted(DELAY_EDGES, np.maximum(delays, 0.0), side="right") - 1
        for second in np.unique(seconds):
            row = second % self.seconds
            if self._second[row] != second:
                if self._second[row] > second:
                    continue  # older than the window
                self._second[row] = second
                self._hist[row] = 0
            np.add.at(self._hist[row], bins[seconds == second], 1)

    def percentiles(self, now: float, quantiles: Sequence[float]) -> tuple[int, list[float | None]]:
        """(how many delays, their ``quantiles``) over the window ending at ``now``; None when empty.
        A quantile is the upper edge of its histogram bin (within 12% of the true value)."""
        recent = (self._second > now - self.seconds) & (self._second <= now)
        hist = self._hist[recent].sum(axis=0)
        total = int(hist.sum())
        if total == 0:
            return 0, [None for _ in quantiles]
        cumulative = np.cumsum(hist)
        result: list[float | None] = []
        for q in quantiles:
            index = int(np.searchsorted(cumulative, q * total, side="left"))
            result.append(float(DELAY_EDGES[min(index + 1, len(DELAY_EDGES) - 1)]))
        return total, result
