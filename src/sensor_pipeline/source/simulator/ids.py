"""Reading ids: unique across producers and restarts when simulated, deterministic when replayed."""

from __future__ import annotations

import random
import threading
import time


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
