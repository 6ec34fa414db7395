"""The worlds one server hosts: a :class:`~worldserver.simulation.Simulation` per world.

:class:`WorldHost` builds one simulation per entry of ``worlds.hosted`` (each with its own
world state, interest grid, entity ids and snapshot stage), finds a world by id for a joining
client (the first hosted world for a client that names none), and says which worlds' ticks are
due. Every world ticks at ``sim.tick_rate`` on its own deadlines: world ``k`` of ``n`` is
offset by ``k / n`` of a tick, so that the worlds' ticks spread over the period instead of
all landing on the same instant. One loop (``worldserver.app``) runs them all.

A client's session belongs to exactly one world (``session.sim``): leaving, inputs and
snapshots go to that world only, so two worlds never see each other's entities. The operator
may open and close worlds while the server runs (:meth:`WorldHost.add`, :meth:`WorldHost.remove`,
driven by worldserver/world_admin.py); the default world stays.

Must not: do I/O, read clocks (``now`` is passed in), or know about transports.
"""

from __future__ import annotations

import numpy as np

from worldserver.config import Config
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.tick import TickClock

__all__ = ["WorldHost"]


class _Worlds:
    """What finding worlds needs: ``sims`` (id -> Simulation) and ``default_id``."""

    sims: dict[str, Simulation]
    default_id: str

    @property
    def default(self) -> Simulation:
        """The world of clients that name none (the first of ``worlds.hosted``)."""
        return self.sims[self.default_id]

    def get(self, world_id: str | None) -> Simulation | None:
        """The world named ``world_id`` ("" or None: the default), or None if none has it."""
        if not world_id:
            return self.default
        return self.sims.get(world_id)

    def __iter__(self):
        return iter(self.sims.values())

    def __len__(self) -> int:
        return len(self.sims)


class WorldHost(_Worlds):
    def __init__(self, config: Config, stats: Stats, rng: np.random.Generator | None = None) -> None:
        specs = config.worlds.specs(config.sim)
        self.sims: dict[str, Simulation] = {}
        for spec in specs:
            self.sims[spec.id] = Simulation(config, stats, rng, spec=spec)
        self.default_id = specs[0].id
        self.clocks: dict[str, TickClock] = {}
        self.started = False

    # -- opening and closing (worldserver/world_admin.py) -------------------------------------
    def add(self, sim: Simulation, now: float) -> None:
        """Hosts one more world; once the host has started it ticks on its own deadlines, the
        first half a tick after the next tick already due (none runs late for it)."""
        if sim.world_id in self.sims:
            raise ValueError(f"a world with the id {sim.world_id!r} is hosted already")
        self.sims[sim.world_id] = sim
        if self.started:
            start = max(now, self.next_deadline()) + sim.dt / 2
            self.clocks[sim.world_id] = TickClock(sim.tick_rate, start)

    def remove(self, world_id: str) -> Simulation:
        """Stops hosting ``world_id`` (KeyError if not hosted; ValueError for the default world,
        where clients that name no world go). Its sessions are the caller's to end."""
        if world_id == self.default_id:
            raise ValueError("the default world cannot be removed")
        sim = self.sims.pop(world_id)
        self.clocks.pop(world_id, None)
        return sim

    # -- counts -----------------------------------------------------------------------------
    @property
    def session_count(self) -> int:
        return sum(len(sim.sessions) for sim in self.sims.values())

    @property
    def entity_count(self) -> int:
        return sum(sim.world.count for sim in self.sims.values())

    # -- ticking ----------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Starts every world's tick clock at ``now``, world k offset by k/n of a tick."""
        n = len(self.sims)
        for k, (world_id, sim) in enumerate(self.sims.items()):
            self.clocks[world_id] = TickClock(sim.tick_rate, now + k * sim.dt / n)
        self.started = True

    def next_deadline(self) -> float:
        """When the next world's tick is due."""
        return min(clock.deadline() for clock in self.clocks.values())

    def due(self, now: float) -> list[tuple[Simulation, TickClock]]:
        """The worlds whose tick is due at ``now``, earliest deadline first."""
        due = [(clock.deadline(), world_id) for world_id, clock in self.clocks.items() if clock.deadline() <= now]
        due.sort()
        return [(self.sims[world_id], self.clocks[world_id]) for _, world_id in due]

    @property
    def skipped(self) -> int:
        """Ticks skipped by every world's clock together (see TickClock)."""
        return sum(clock.skipped for clock in self.clocks.values())


class _OneWorld(_Worlds):
    """A single Simulation seen as a host (tools and tests that build one world by hand)."""

    def __init__(self, sim: Simulation) -> None:
        self.sims = {getattr(sim, "world_id", "open"): sim}
        self.default_id = next(iter(self.sims))


def as_host(worlds) -> "WorldHost | _OneWorld":
    """``worlds`` if it is a host, else the one Simulation it is, as a host."""
    return worlds if hasattr(worlds, "sims") else _OneWorld(worlds)
