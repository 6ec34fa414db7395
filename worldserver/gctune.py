"""Garbage-collector settings for a real-time loop.

Full collections of a large heap stall the tick (100-260 ms measured at 400 peers). After
start-up the long-lived objects are moved to the permanent generation (``gc.freeze()``) and
thresholds are raised so that young collections stay rare and cheap. Collection pauses are
measured with ``gc.callbacks`` and exposed for the stats line. Nothing else lives here.
"""

from __future__ import annotations

import gc
import time

from worldserver.stats import Samples


class GcMonitor:
    def __init__(self) -> None:
        self.pauses = Samples(1024)
        self.collections = [0, 0, 0]
        self.frozen_at_clients = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.add(time.perf_counter() - self._started)
            self.collections[info.get("generation", 0)] += 1

    def install(self, thresholds: tuple[int, int, int]) -> None:
        gc.set_threshold(*thresholds)
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    @staticmethod
    def freeze() -> None:
        """Collect once, then exempt every object alive now from future collections."""
        gc.collect()
        gc.freeze()

    def refreeze_if_grown(self, clients: int) -> bool:
        """Freezes again once the number of clients has grown by a quarter since the last time.

        Peers (aiortc's above all) bring many long-lived objects; left in generation 2 they
        make full collections take tens of milliseconds. Freezing keeps only cyclic garbage of
        objects alive at that moment (refcounting still frees the rest), and it happens a
        bounded number of times (each at 1.25x the clients of the previous one).
        """
        if clients < 20 or clients < 1.25 * self.frozen_at_clients:
            return False
        self.frozen_at_clients = clients
        self.freeze()
        return True
