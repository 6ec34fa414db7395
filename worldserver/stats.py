"""Counters and latency samples for the periodic stats line and for benchmarks.

Holds numbers only: counters by name (drops by reason, bytes in and out), and bounded sample
windows for tick duration and lateness from which p50/p99 are read. A window also keeps running
totals since start (count, sum, and a count per bucket of ``DURATION_BUCKETS``) that clearing
the window does not reset: ``GET /metrics`` reads them as histograms (worldserver/metrics.py).
It does no I/O and no timing of its own; callers record values.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np
import numpy.ma  # noqa: F401 -- np.percentile imports it at its first call, which fails if files ran out then (EMFILE)

# Upper bounds in seconds of the histogram buckets kept by Samples (a last one is +Inf): from a
# tenth of a millisecond (a quiet tick) to seconds (a WebRTC connection on a slow link).
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Samples:
    """A bounded window of float samples (newest kept) with percentiles, and running totals
    since start by bucket (``bounds``; () keeps none) that :meth:`clear` leaves alone."""

    def __init__(self, size: int = 4096, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self._buf = np.zeros(size, dtype=np.float64)
        self._n = 0
        self.bounds = tuple(bounds)
        self.bucket_counts = [0] * (len(self.bounds) + 1)  # not cumulative; the last is +Inf
        self.total = 0.0  # sum of every value added since start

    def add(self, value: float) -> None:
        self._buf[self._n % len(self._buf)] = value
        self._n += 1
        if self.bounds:
            self.bucket_counts[bisect_left(self.bounds, value)] += 1  # value <= bound
            self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """Since start: (upper bound, values <= it) per bucket, the last bound +Inf."""
        out, seen = [], 0
        for bound, count in zip(self.bounds + (float("inf"),), self.bucket_counts):
            seen += count
            out.append((bound, seen))
        return out

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
