"""The fixed-rate clock of the simulation: deadlines that do not drift, and lateness.

Tick ``k`` is due at ``start + k / rate``. Waking late never shifts later deadlines (no drift);
if the loop falls more than ``max_catch_up`` ticks behind, the missed ticks are skipped and
counted rather than run in a burst. This module only decides when ticks are due; it does not
run them.
"""

from __future__ import annotations

import math


class TickClock:
    def __init__(self, rate: int, start: float, max_catch_up: int = 3) -> None:
        self.rate = rate
        self.dt = 1.0 / rate
        self.start = start
        self.tick = 0
        self.max_catch_up = max_catch_up
        self.skipped = 0

    def deadline(self) -> float:
        """When the current tick is due."""
        return self.start + self.tick * self.dt

    def advance(self, now: float) -> float:
        """Moves to the next tick after running one at ``now``; returns that tick's lateness."""
        lateness = now - self.deadline()
        self.tick += 1
        behind = math.floor((now - self.deadline()) / self.dt)
        if behind > self.max_catch_up:
            self.tick += behind
            self.skipped += behind
        return lateness
