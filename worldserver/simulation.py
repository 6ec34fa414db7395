"""The authoritative tick: apply inputs, integrate, find who sees what, encode snapshots.

:class:`Simulation` owns the world (numpy arrays), the interest grid and the sessions. Each
:meth:`Simulation.run_tick` applies one queued input per client (vectorized into the world),
steps the world, computes every observer's visible set in one batched grid pass, quantizes the
state of all entities once, then encodes one delta snapshot per client against the newest
snapshot that client acknowledged, and hands it to the client's transport.

It does not know transports: a session's ``sender`` is any object with
``send_snapshot(session, payload, now) -> packet sequence or None``. No sockets, no trio.
"""

from __future__ import annotations

import math
import time

import numpy as np

from protocol.messages import INPUT_AXIS_SCALE, FLAG_JUMP, Welcome
from protocol.packets import HEADER_SIZE
from protocol.quantize import Quantizer
from protocol.snapshot import encode_snapshot
from protocol.snapshot_batch import encode_batch
from worldserver.config import Config
from worldserver.interest import InterestGrid
from worldserver.sessions import Session
from worldserver.stats import Stats
from worldserver.world import World

YAW_SCALE = 2.0 * math.pi / 65536.0
ENCODE_CHUNK = 128  # clients per call of the batched snapshot encoder
ALLOWANCE_LATE_FRACTION = 0.1  # a tick that starts later than this part of a period is late
ALLOWANCE_FLOOR = 0.1  # the priority allowance never shrinks below this part of its maximum


class Simulation:
    def __init__(self, config: Config, stats: Stats, rng: np.random.Generator | None = None) -> None:
        sim = config.sim
        self.config = config
        self.stats = stats
        self.tick_rate = sim.tick_rate
        self.dt = 1.0 / sim.tick_rate
        self.world = World(
            capacity=sim.max_entities,
            half_extent=sim.half_extent,
            y_min=sim.y_min,
            y_max=sim.y_max,
            max_speed=sim.max_speed,
            jump_speed=sim.jump_speed,
            gravity=sim.gravity,
            spawn_point=tuple(sim.spawn_point),
            spawn_clearance=sim.spawn_clearance,
            rng=rng,
        )
        self.interest = InterestGrid(
            half_extent=sim.half_extent,
            radius=config.interest.radius,
            leave_margin=config.interest.leave_margin,
            cell_size=config.interest.effective_cell_size,
            capacity=sim.max_entities,
        )
        he = sim.half_extent
        self.quantizer = Quantizer(mins=(-he, sim.y_min, -he), maxs=(he, sim.y_max, he), step=sim.position_step)
        self.snapshot_budget = config.udp.datagram_budget - HEADER_SIZE
        self.ring = config.net.snapshot_ring
        self.sessions: list[Session] = []
        self._joined = 0  # clients ever joined; numbers the avatars' owners
        self.tick = 0
        self.encode_seconds = 0.0  # CPU spent in snapshot encoding (for benchmarks)
        # The per-tick allowance of the priority path: at most net.priority_encode_ms, less
        # while ticks start late (see adapt_priority_allowance).
        self.priority_encode_max = config.net.priority_encode_ms / 1000.0
        self.priority_encode_seconds = self.priority_encode_max
        self._priority_cost = 1e-4  # seconds per snapshot on the priority path (moving average)

    # -- membership -----------------------------------------------------------------------
    def join(self, sender: object, now: float, *, name: str = "", session_cls: type = Session) -> Session:
        """Spawns an avatar for a new client; raises WorldFull when no slot or spot is free.

        ``sender`` delivers this client's snapshots (see docs/architecture.md); ``name`` is
        the player's nickname ("" for none); ``session_cls`` lets a compatibility mode bring
        its own Session subclass (``native = False``, its own ``next_inputs``).
        """
        self._joined += 1
        entity_id = self.world.spawn(owner=self._joined)
        session = session_cls(sender, entity_id, entity_id >> 16, now)
        session.join_tick = self.tick
        session.name = name
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
        world = self.world
        world.step(self.dt)
        if not self.sessions:
            return
        served = self._choose_served()
        observers = np.fromiter((s.slot for s in served), dtype=np.int64, count=len(served))
        vis = self.interest.update(world.pos, world.alive, observers, generation=world.generation)
        qstate = self.quantizer.quantize_state(world.pos, world.yaw, world.anim, on_nan="min")
        all_ids = world.ids(np.arange(world.capacity))
        started = time.process_time()
        self.send_snapshots(served, vis, qstate, all_ids, now)
        self.encode_seconds += time.process_time() - started

    def adapt_priority_allowance(self, lateness: float) -> None:
        """Steer the priority path's time allowance by how late this tick started (AIMD).

        Snapshots over the datagram budget are the one part of a tick that can wait; when
        ticks start late (the machine is short of CPU: a dense crowd, a flood of inputs),
        the allowance shrinks by a fifth per late tick down to a tenth of its maximum, and
        grows back by a fiftieth of the maximum per tick on time. A crowd then gets fewer
        snapshots a second instead of everyone getting late ones.
        """
        top = self.priority_encode_max
        if lateness > ALLOWANCE_LATE_FRACTION / self.tick_rate:
            self.priority_encode_seconds = max(top * ALLOWANCE_FLOOR, self.priority_encode_seconds * 0.8)
        elif self.priority_encode_seconds < top:
            self.priority_encode_seconds = min(top, self.priority_encode_seconds + top / 50.0)

    def _choose_served(self) -> list[Session]:
        """The clients that get a snapshot this tick.

        A client whose snapshot fits the datagram budget gets one every tick. Clients whose
        snapshots did not fit (a dense crowd) share the per-tick priority allowance: those
        that waited longest first, as many as the measured cost says fit; the others wait a
        tick and cost nothing, not even interest.
        """
        sessions = self.sessions
        over = [s for s in sessions if s.over_budget]
        if not over:
            return sessions
        capacity = int(self.priority_encode_seconds / self._priority_cost) + 1
        if capacity >= len(over):
            return sessions
        over.sort(key=lambda s: s.last_snapshot_tick)
        waiting = {id(s) for s in over[capacity:]}
        self.stats.incr("snapshots.deferred", len(waiting))
        return [s for s in sessions if id(s) not in waiting]

    def send_snapshots(self, served: list[Session], vis, qstate: np.ndarray, all_ids: np.ndarray, now: float) -> None:
        """Encodes the snapshots of ``served`` (in ``vis`` order): in batches, or alone by priority.

        A client whose snapshot did not fit last tick, and whose view has not shrunk by a
        tenth since, goes straight to the priority path, so a dense crowd wastes no batch work.
        """
        tick = self.tick
        ring = self.ring
        cand_ids = all_ids[vis.slots]
        cand_q = qstate[vis.slots]
        counts = np.diff(vis.offsets)
        counts_l = counts.tolist()
        baselines = [s.baseline if tick - s.acked_tick <= ring else None for s in served]
        foreign = [i for i, s in enumerate(served) if not s.native]
        if foreign:  # compatibility clients take plain views and speak their own protocol
            offsets = vis.offsets
            for i in foreign:
                a, b = int(offsets[i]), int(offsets[i + 1])
                served[i].conn.send_view(served[i], cand_ids[a:b], cand_q[a:b], now)
                served[i].last_snapshot_tick = tick
        direct = [s.native and s.over_budget and counts_l[i] * 10 >= s.over_budget_count * 9 for i, s in enumerate(served)]
        over = [i for i, d in enumerate(direct) if d]
        batch = [i for i, d in enumerate(direct) if not d and served[i].native]
        if len(batch) < len(served):
            in_batch = np.zeros(len(served), dtype=bool)
            in_batch[batch] = True
            rows = np.repeat(in_batch, counts)
            b_ids, b_q = cand_ids[rows], cand_q[rows]
            b_counts = counts[batch]
        else:
            b_ids, b_q, b_counts = cand_ids, cand_q, counts
        b_off = np.zeros(len(batch) + 1, dtype=np.int64)
        np.cumsum(b_counts, out=b_off[1:])
        # Chunks of clients keep the encoder's temporaries in cache (about 2x faster at 1000).
        for a in range(0, len(batch), ENCODE_CHUNK):
            chunk = batch[a : a + ENCODE_CHUNK]
            lo, hi = int(b_off[a]), int(b_off[a + len(chunk)])
            payloads, views = encode_batch(
                tick=tick,
                offsets=b_off[a : a + len(chunk) + 1] - lo,
                cand_ids=b_ids[lo:hi],
                cand_q=b_q[lo:hi],
                baselines=[baselines[i] for i in chunk],
                input_acks=[served[i].last_applied_seq for i in chunk],
                self_ids=[served[i].entity_id for i in chunk],
                budget=self.snapshot_budget,
                layout=self.quantizer,
            )
            for i, payload, view in zip(chunk, payloads, views):
                session = served[i]
                if payload is None:
                    over.append(i)
                    continue
                session.over_budget = False
                session.last_full_tick = tick
                self._send(session, payload, view, now)
        if over:
            self._send_prioritized(served, over, vis, cand_ids, cand_q, baselines, now)

    def _send(self, session: Session, payload: bytes, view, now: float) -> None:
        session.last_snapshot_tick = self.tick
        seq = session.conn.send_snapshot(session, payload, now)
        if seq is not None:
            session.record_sent(self.tick, seq, view, self.ring)

    def _send_prioritized(self, served, over: list[int], vis, cand_ids, cand_q, baselines, now: float) -> None:
        """Snapshots that exceed the budget, each chosen by priority, within a time allowance.

        Clients that waited longest go first; those left when the allowance is spent get no
        snapshot this tick (counted) and are first in line next tick. So a crowd that is too
        dense lowers its snapshot rate instead of making ticks late.
        """
        over.sort(key=lambda i: served[i].last_snapshot_tick)
        started = time.perf_counter()
        deadline = started + self.priority_encode_seconds
        counts = vis.offsets
        done = 0
        for i in over:
            if done and time.perf_counter() > deadline:
                break
            session = served[i]
            session.over_budget = True
            session.over_budget_count = int(counts[i + 1] - counts[i])
            payload, view = self._encode_prioritized(session, vis, i, vis.offsets, cand_ids, cand_q, baselines[i])
            self._send(session, payload, view, now)
            done += 1
        if done < len(over):
            self.stats.incr("snapshots.deferred", len(over) - done)
            for i in over[done:]:
                served[i].over_budget = True
        cost = (time.perf_counter() - started) / done
        self._priority_cost += 0.2 * (cost - self._priority_cost)

    def _encode_prioritized(self, session, vis, i, offsets, cand_ids, cand_q, baseline):
        self.stats.incr("snapshots.over_budget")
        a, b = int(offsets[i]), int(offsets[i + 1])
        slots = vis.slots[a:b]
        payload, view, sent = encode_snapshot(
            tick=self.tick,
            baseline=baseline,
            cand_ids=cand_ids[a:b],
            cand_q=cand_q[a:b],
            priority=self._priority(session, slots, vis.dist2[a:b]),
            budget=self.snapshot_budget,
            input_ack=session.last_applied_seq,
            self_id=session.entity_id,
            layout=self.quantizer,
        )
        if sent.all():
            session.last_full_tick = self.tick
            session.over_budget = False
        else:
            session.last_sent[slots[sent]] = self.tick
        return payload, view

    def _priority(self, session: Session, slots: np.ndarray, dist2: np.ndarray) -> np.ndarray:
        if session.last_sent is None:
            session.last_sent = np.full(self.world.capacity, -1, dtype=np.int64)
        last = np.maximum(session.last_sent[slots], session.last_full_tick)
        staleness = (self.tick - last).astype(np.float32)
        return staleness / (1.0 + np.sqrt(dist2) * 0.1)
