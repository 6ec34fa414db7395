"""Counters and latency samples for the periodic stats line and for benchmarks.

Holds numbers only: counters by name (drops by reason, bytes in and out), and bounded sample
windows for tick duration and lateness from which p50/p99 are read. It does no I/O and no
timing of its own; callers record values.
"""

from __future__ import annotations

import numpy as np


class Samples:
    """A bounded window of float samples (newest kept) with percentiles."""

    def __init__(self, size: int = 4096) -> None:
        self._buf = np.zeros(size, dtype=np.float64)
        self._n = 0

    def add(self, value: float) -> None:
        self._buf[self._n % len(self._buf)] = value
        self._n += 1

    def __len__(self) -> int:
        return min(self._n, len(self._buf))

    def percentiles(self, *qs: float) -> list[float]:
        n = len(self)
        if n == 0:
            return [0.0 for _ in qs]
        return [float(v) for v in np.percentile(self._buf[:n], qs)]

    def values(self) -> np.ndarray:
        return self._buf[: len(self)].copy()

    def clear(self) -> None:
        self._n = 0


class Stats:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.tick_duration = Samples()
        self.tick_lateness = Samples()

    def incr(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counters)
