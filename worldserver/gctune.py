"""Garbage-collector settings for a real-time loop.

Full collections of a large heap stall the tick (100-260 ms measured at 400 peers). After
start-up the long-lived objects are moved to the permanent generation (``gc.freeze()``) and
thresholds are raised so that young collections stay rare and cheap. Collection pauses are
measured with ``gc.callbacks`` and exposed for the stats line.

The C heap gets the same treatment (:func:`keep_freed_memory`): the tick allocates and frees
numpy arrays of up to a few MiB every tick, and glibc's defaults give freed memory back to the
kernel at once (arrays over its mmap threshold are unmapped, the top of the heap is trimmed), so
the next tick faults the same pages in again: about 200,000 page faults for 60 ticks at 1,000
clients, some 3 ms a tick on this kind of VM. Keeping up to ``gc.malloc_keep_mib`` of freed
memory in the heap costs that much RSS at most, once.

Must not: change anything but the collector's and the allocator's settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
import time

from worldserver.stats import Samples


_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_TOP_PAD = 16 << 20  # each growth of the heap asks the kernel for this much more


def keep_freed_memory(keep_mib: int) -> bool:
    """Let glibc's malloc keep up to ``keep_mib`` MiB of freed memory instead of returning it
    (and serve blocks below that size from the heap, not from fresh mappings). 0 leaves
    malloc's defaults. Returns whether the settings were applied (False off glibc)."""
    if keep_mib <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    keep = keep_mib << 20
    # the mmap threshold at most 32 MiB (glibc's own cap for its dynamic threshold)
    results = (mallopt(_M_MMAP_THRESHOLD, min(keep, 32 << 20)), mallopt(_M_TRIM_THRESHOLD, keep),
               mallopt(_M_TOP_PAD, min(keep, _TOP_PAD)))
    return all(r == 1 for r in results)


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
