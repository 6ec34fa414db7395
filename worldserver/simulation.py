"""The authoritative tick: apply inputs, integrate, then the snapshot stage.

:class:`Simulation` owns the world (numpy arrays), the interest grid and the sessions. Each
:meth:`Simulation.run_tick` applies one queued input per client (vectorized into the world),
steps the world, and runs the :class:`worldserver.snapshots.SnapshotStage` (schedule ->
visible sets -> baselines -> encode -> deliver), which hands every client's snapshot to its
sink.

Its world is one of ``worlds.hosted`` (a world file: floor, walls, spawn areas; see
worldserver/worldfile.py), or the open square of ``sim.half_extent``; ``world_spec`` is what
``GET /api/worlds/{id}`` serves. A server hosting several worlds has one Simulation each
(worldserver/hosting.py).

It does not know transports: a session's sink is a ``SnapshotSink`` or a ``ViewSink``
(worldserver/snapshots.py). No sockets, no trio.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from protocol.messages import INPUT_AXIS_SCALE, FLAG_JUMP, Welcome
from protocol.quantize import Quantizer
from worldserver.config import Config
from worldserver.interest import InterestGrid
from worldserver.sessions import Session
from worldserver.snapshots import SnapshotSink, SnapshotStage, ViewSink
from worldserver.stats import Stats
from worldserver.world import World
from worldserver.worldfile import WorldSpec

YAW_SCALE = 2.0 * math.pi / 65536.0


class Simulation:
    def __init__(self, config: Config, stats: Stats, rng: np.random.Generator | None = None,
                 spec: WorldSpec | None = None) -> None:
        """``spec``: the world to simulate (default: the first of ``worlds.hosted``)."""
        sim = config.sim
        self.config = config
        self.stats = stats
        self.tick_rate = sim.tick_rate
        self.dt = 1.0 / sim.tick_rate
        if spec is None:
            spec = config.worlds.specs(sim)[0]
        self.world_spec = spec
        self.world_id = spec.id
        walls = spawn_points = None
        he = sim.half_extent
        if spec.id != "open" or spec.walls or spec.obstacles:  # a world file: its floor, walls, spawns
            he = float(np.ceil(max(abs(v) for v in (*spec.floor_min, *spec.floor_max))))
            walls = spec.wall_set()
            spawn_points = spec.spawn_points()
        self.world = World(
            capacity=sim.max_entities,
            half_extent=he,
            y_min=sim.y_min,
            y_max=sim.y_max,
            max_speed=sim.max_speed,
            jump_speed=sim.jump_speed,
            gravity=sim.gravity,
            spawn_point=tuple(sim.spawn_point) if walls is None else (0.0, sim.spawn_point[1], 0.0),
            spawn_clearance=sim.spawn_clearance,
            rng=rng,
            walls=walls,
            spawn_areas=spawn_points,
        )
        self.interest = InterestGrid(
            half_extent=he,
            radius=config.interest.radius,
            leave_margin=config.interest.leave_margin,
            cell_size=config.interest.effective_cell_size,
            capacity=sim.max_entities,
        )
        self.quantizer = Quantizer(mins=(-he, sim.y_min, -he), maxs=(he, sim.y_max, he), step=sim.position_step)
        self.snapshots = SnapshotStage(config, self.world, self.interest, self.quantizer, stats)
        self.sessions: list[Session] = []
        self._joined = 0  # clients ever joined; numbers the avatars' owners
        self.tick = 0
        # Set when the operator closes this world (worldserver/world_admin.py): the text the
        # sessions' DISCONNECT world_closed carries.
        self.closed_reason = ""

    # -- the world's document -------------------------------------------------------------
    @staticmethod
    def prepare_spec(spec: WorldSpec):
        """The costly part of :meth:`apply_spec` (walls, spawn points), pure: may run in a
        worker thread while the world ticks on."""
        return spec.wall_set(), spec.spawn_points()

    def apply_spec(self, spec: WorldSpec, prepared=None) -> np.ndarray:
        """A new version of this world's file (a reload): its walls, obstacles, spawn areas and
        pictures apply at once, the players stay; avatars that the new walls overlap move to
        the nearest clear point (:meth:`World.set_walls`). The document's version is the old
        one's plus one. Returns the slots moved. ValueError for a world without a file (the
        open square), another id, or a floor beyond this world's bounds (clients' positions
        are quantized to them, so they cannot grow while clients are connected)."""
        if self.world.walls is None:
            raise ValueError("the open world has no walls to change")
        if spec.id != self.world_id:
            raise ValueError(f"the file is of world {spec.id!r}, not {self.world_id!r}")
        reach = max(abs(v) for v in (*spec.floor_min, *spec.floor_max))
        if reach > self.world.half_extent:
            raise ValueError(f"the new floor reaches {reach:g} m from the origin, beyond this world's"
                             f" bounds ({self.world.half_extent:g} m); close and open the world instead")
        walls, spawn_points = prepared if prepared is not None else self.prepare_spec(spec)
        moved = self.world.set_walls(walls, spawn_points)
        self.world_spec = attrs.evolve(spec, version=self.world_spec.version + 1)
        return moved

    # -- membership -----------------------------------------------------------------------
    def join(self, sink: SnapshotSink | ViewSink, now: float, *, name: str = "", session_cls: type = Session) -> Session:
        """Spawns an avatar for a new client; raises WorldFull when no slot or spot is free.

        ``sink`` delivers this client's snapshots, or its plain view when it is a ``ViewSink``
        (see worldserver/snapshots.py); ``name`` is the player's nickname ("" for none);
        ``session_cls`` lets a compatibility mode bring its own Session subclass (its own
        ``next_inputs``).
        """
        wants_views = isinstance(sink, ViewSink)
        if not wants_views and not isinstance(sink, SnapshotSink):
            raise TypeError(f"{type(sink).__name__} is neither a SnapshotSink nor a ViewSink")
        self._joined += 1
        entity_id = self.world.spawn(owner=self._joined)
        session = session_cls(sink, entity_id, entity_id >> 16, now, wants_views=wants_views)
        session.join_tick = self.tick
        session.name = name
        session.sim = self
        self.sessions.append(session)
        return session

    def names(self) -> list[tuple[int, str]]:
        """(entity id, player name) of every avatar."""
        return [(s.entity_id, s.name) for s in self.sessions]

    def leave(self, session: Session) -> None:
        """Despawns the client's avatar; other clients see it go in their next snapshot."""
        if session in self.sessions:
            self.sessions.remove(session)
            self.world.despawn(session.entity_id)
            self.interest.forget(session.slot)

    def welcome(self, session: Session) -> Welcome:
        q = self.quantizer
        return Welcome(
            entity_id=session.entity_id,
            tick_rate=self.tick_rate,
            tick=self.tick,
            mins=tuple(float(v) for v in q.mins),
            maxs=tuple(float(v) for v in q.maxs),
            position_step=float(q.step),
            max_speed=self.world.max_speed,
            interest_radius=self.config.interest.radius,
            keepalive_interval=self.config.net.keepalive_interval,
            timeout=self.config.net.timeout,
        )

    # -- the tick -------------------------------------------------------------------------
    def apply_inputs(self) -> None:
        """Applies this tick's inputs of every client to the world, vectorized.

        A client with no input stands still this tick; a client catching up a late input
        gets an extra horizontal step first (see Session.next_inputs).
        """
        sessions = self.sessions
        if not sessions:
            return
        tick = self.tick
        n = len(sessions)
        slots = np.empty(n, dtype=np.int64)
        cols = np.zeros((n, 5), dtype=np.float64)  # move_x, move_z, yaw, anim, jump
        keep_yaw = np.ones(n, dtype=bool)
        late_slots, late_moves = [], []
        for i, s in enumerate(sessions):
            slots[i] = s.slot
            late, inp = s.next_inputs(tick)
            if inp is not None:
                cols[i] = (inp.move_x, inp.move_z, inp.yaw, inp.anim, (inp.flags | (late.flags if late else 0)) & FLAG_JUMP)
                keep_yaw[i] = False
                if late is not None:
                    late_slots.append(s.slot)
                    late_moves.append((late.move_x, late.move_z))
        world = self.world
        if late_slots:
            self.stats.incr("inputs.caught_up", len(late_slots))
            world.catch_up(late_slots, np.asarray(late_moves, dtype=np.float64) / INPUT_AXIS_SCALE, self.dt)
        yaw = np.where(keep_yaw, world.yaw[slots], cols[:, 2] * YAW_SCALE)
        anim = np.where(keep_yaw, world.requested_anim[slots], cols[:, 3])
        world.set_intents(slots, cols[:, :2] / INPUT_AXIS_SCALE, yaw, anim, cols[:, 4] != 0)

    def run_tick(self, now: float) -> None:
        self.tick += 1
        self.apply_inputs()
        self.world.step(self.dt)
        self.snapshots.run(self.tick, self.sessions, now)

    def adapt(self, lateness: float) -> None:
        """Tell the snapshot stage how late this tick started (it sheds load when late)."""
        self.snapshots.adapt(lateness)
