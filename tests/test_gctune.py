"""The allocator setting of worldserver/gctune.py: freed memory kept for the next tick.

Each case runs in its own interpreter (mallopt changes the whole process) and counts page
faults, which do not depend on the machine's speed: the same work with malloc's defaults
faults its arrays' pages in again on every round; with ``keep_freed_memory`` it does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from worldserver.config import Config
from worldserver.gctune import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]

# arrays of 4 and 8 MB made and freed 50 times, as a tick makes and frees its work arrays
WORK = """
import resource, sys
import numpy as np
from worldserver.gctune import keep_freed_memory
applied = keep_freed_memory(int(sys.argv[1]))
def work():
    a = np.ones((1000, 1000), dtype=np.float32)
    b = (a * 2).astype(np.float64)
    c = np.concatenate([a.ravel(), b.ravel().astype(np.float32)])
    return float(c[::4096].sum())
work()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    work()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep_mib: int) -> tuple[bool, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env = {k: v for k, v in env.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", WORK, str(keep_mib)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_kept_memory_is_not_faulted_in_again():
    applied, kept = _faults(64)
    default_applied, default = _faults(0)
    assert applied and not default_applied
    # 50 rounds of 16 MB: with the defaults every round maps its pages again (about 160,000
    # faults here); kept, the heap serves them from memory it already has
    assert default > 50 * 1000
    assert kept < default / 20, (kept, default)
    # the server's default keeps less: this workload's peak (about 28 MB, and the top pad)
    # goes over it and part is trimmed each round, still far fewer faults (37,050 here)
    applied, kept_default = _faults(Config().gc.malloc_keep_mib)
    assert applied and kept <= kept_default < default / 2, (kept_default, default)


def test_zero_leaves_malloc_alone_and_the_default_keeps_16_mib():
    assert keep_freed_memory(0) is False
    assert Config().gc.malloc_keep_mib == 16
