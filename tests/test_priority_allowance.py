"""Simulation.adapt_priority_allowance: the priority path's time per tick follows lateness.

Late ticks shrink the allowance multiplicatively down to its floor; ticks on time grow it
back additively up to net.priority_encode_ms, never beyond. Must not: time anything (the
controller is fed lateness values).
"""

from __future__ import annotations

import pytest

from worldserver import simulation
from worldserver.config import load_config
from worldserver.simulation import Simulation
from worldserver.stats import Stats


def make_sim(**overrides) -> Simulation:
    return Simulation(load_config(path=None, env={}, overrides=overrides), Stats())


def test_late_ticks_shrink_it_to_the_floor_and_on_time_ticks_restore_it() -> None:
    sim = make_sim(**{"net.priority_encode_ms": "20", "sim.tick_rate": "20"})
    top = 0.020
    assert sim.priority_encode_seconds == pytest.approx(top)
    late = 0.006  # over a tenth of the 50 ms period
    sim.adapt_priority_allowance(late)
    assert sim.priority_encode_seconds == pytest.approx(0.8 * top)
    for _ in range(100):
        sim.adapt_priority_allowance(late)
    assert sim.priority_encode_seconds == pytest.approx(simulation.ALLOWANCE_FLOOR * top)
    sim.adapt_priority_allowance(0.004)  # under a tenth of the period: on time
    assert sim.priority_encode_seconds == pytest.approx(simulation.ALLOWANCE_FLOOR * top + top / 50)
    for _ in range(49):
        sim.adapt_priority_allowance(0.0)
    assert sim.priority_encode_seconds == pytest.approx(top)  # back within 50 ticks
    sim.adapt_priority_allowance(-0.001)
    assert sim.priority_encode_seconds == pytest.approx(top)  # never above the setting


def test_the_threshold_follows_the_tick_rate() -> None:
    sim = make_sim(**{"sim.tick_rate": "60"})  # period 16.7 ms: 2 ms late is late
    before = sim.priority_encode_seconds
    sim.adapt_priority_allowance(0.002)
    assert sim.priority_encode_seconds < before
    sim = make_sim(**{"sim.tick_rate": "10"})  # period 100 ms: 2 ms late is on time
    sim.adapt_priority_allowance(0.002)
    assert sim.priority_encode_seconds == pytest.approx(sim.priority_encode_max)
