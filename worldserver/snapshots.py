"""The snapshot stage of the tick: schedule -> visible sets -> baselines -> encode -> deliver.

After the world has moved, :meth:`SnapshotStage.run` does, in this order:

1. **schedule**: which clients get a snapshot this tick. All of them, unless ticks have been
   starting late because of this stage: then only every ``stride``-th client (by slot,
   rotating with the tick), so an overloaded server lowers everyone's snapshot rate a little
   instead of ticking late (``adapt``: the stride grows by one after ``LATE_TICKS`` late
   ticks in a row while the stage takes more than ``HEAVY_FRACTION`` of a period of CPU, up to
   ``MAX_STRIDE``, and shrinks back after ``RECOVER_TICKS`` ticks on time; a late tick
   holds the recovery back only while the stage is heavy, so lateness from elsewhere cannot
   keep the stride up once the stage is light).
2. **visible sets**: one batched interest update; with ``interest.share_cell`` the clients
   standing in one square share the view of one of them (``visible_sets``).
3. **baselines**: ``baseline_for`` each native client: the newest tick it acknowledged whole,
   while the world history still holds every tick that view refers to; else a full snapshot.
4. **encode**: every native client at once with :func:`protocol.snapshot_batch.encode_many`
   (one record table per held tick, gathered into every client's parts). A client's byte
   allowance (``net.client_rate_limit`` per second) bounds its parts per tick; over it, the
   nearer and longer unsent entities go first (pair weights from the distance to the
   observer's PRIORITY_CELL square, so a crowd shares encodings even when held back).
5. **deliver**: each client's parts to its :class:`SnapshotSink`; the packet sequence numbers
   it returns tie acknowledgements to the view sent. Compatibility clients (Hatongsu) get the
   plain visible state through a :class:`ViewSink` instead.

This module knows no transport, socket or trio: sinks are the contract (``Protocol`` classes
below). It keeps the short history of quantized world states that held views refer to.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from protocol.packets import HEADER_SIZE
from protocol.tokens import TAG_SIZE
from protocol.quantize import Quantizer
from protocol.snapshot import max_parts_for
from protocol.snapshot_batch import HeldView, PairWeights, encode_many
from worldserver.config import Config
from worldserver.interest import InterestGrid
from worldserver.stats import Stats
from worldserver.world import World

if TYPE_CHECKING:
    from worldserver.sessions import Session

MAX_STRIDE = 4  # under load, at worst every fourth client is served per tick
LATE_FRACTION = 0.1  # a tick that starts later than this part of a period is late
LATE_TICKS = 3  # late ticks in a row before the stride grows
HEAVY_FRACTION = 0.25  # ... and only while the stage itself takes this part of a period
RECOVER_TICKS = 40  # ticks on time before the stride shrinks by one
DISTANCE_SCALE = 10.0  # metres: priority weight 4 / (1 + d / DISTANCE_SCALE)
PRIORITY_CELL = 16.0  # metres: distances for priorities are taken from the observer's cell


@runtime_checkable
class SnapshotSink(Protocol):
    """Delivers native snapshot parts to one client (UDP, WebRTC or WebSocket peer)."""

    def send_snapshot(self, session: "Session", parts: Sequence[bytes], now: float) -> list[int] | None:
        """Send the parts of one tick's snapshot, in order, one packet each; return the packet
        sequence numbers they went out with (so acknowledgements can move the baseline), or
        None if nothing was sent (the tick is then not a baseline)."""
        ...


@runtime_checkable
class ViewSink(Protocol):
    """Delivers a compatibility client's visible state (it speaks its own protocol)."""

    def send_view(self, session: "Session", ids: np.ndarray, q: np.ndarray, now: float) -> None:
        """ids: uint32 entity ids visible this tick (ascending); q: (n, 5) int32 quantized
        state (x, y, z, yaw, anim) of those entities, see SPEC.md section 5.1."""
        ...


class SnapshotStage:
    def __init__(self, config: Config, world: World, interest: InterestGrid, quantizer: Quantizer, stats: Stats) -> None:
        self.world = world
        self.interest = interest
        self.quantizer = quantizer
        self.stats = stats
        self.tick_rate = config.sim.tick_rate
        self.ring = config.net.snapshot_ring
        # room for the packet header and, on a keyed UDP connection, the tag (SPEC 3)
        self.part_budget = config.udp.datagram_budget - HEADER_SIZE - TAG_SIZE
        self.allowance = int(config.net.client_rate_limit / config.sim.tick_rate)
        self.max_parts = max_parts_for(self.allowance, self.part_budget)
        self.force_age = max(2, self.ring - 2)  # refreshed before the history forgets it
        self.share_cell = config.interest.share_cell
        cap = world.capacity
        self._hist = np.zeros((self.ring + 1, cap, 5), dtype=np.int32)
        self._hist_tick = np.full(self.ring + 1, -1, dtype=np.int64)
        self._top = 0  # slots in use this tick (up to the highest alive one)
        self.stride = 1
        self._on_time = 0
        self._late = 0
        self.last_seconds = 0.0  # CPU time of the last run (this thread's: a busy machine's other work does not make the stage look heavy)

    # -- load shedding ----------------------------------------------------------------------
    def adapt(self, lateness: float) -> None:
        """Steer the stride by how late this tick started (see the module docstring). Only a
        late tick while the stage is heavy holds the recovery back: once the stride has made
        the stage light, ticks late for other reasons (a GC pass, a burst of datagrams, the
        machine) must not keep every client at a quarter of the snapshot rate for good."""
        period = 1.0 / self.tick_rate
        if lateness > LATE_FRACTION * period:
            self._late += 1
            if self.last_seconds > HEAVY_FRACTION * period:
                self._on_time = 0
                if self._late >= LATE_TICKS:
                    self.stride = min(MAX_STRIDE, self.stride + 1)
                    self._late = 0
        else:
            self._late = 0
            self._on_time += 1
            if self._on_time >= RECOVER_TICKS and self.stride > 1:
                self.stride -= 1
                self._on_time = 0

    def schedule(self, tick: int, sessions: list["Session"]) -> list["Session"]:
        if self.stride == 1:
            return sessions
        served = [s for s in sessions if (s.slot + tick) % self.stride == 0]
        self.stats.incr("snapshots.deferred", len(sessions) - len(served))
        return served

    # -- history ----------------------------------------------------------------------------
    def history(self, tick: int) -> np.ndarray:
        """The quantized world state of an earlier tick, as rows of this tick's slots in use
        (KeyError once it is forgotten). The encoder compares it row by row with this tick's
        state, so it has this tick's length: a row above the slots in use back then holds a
        stale value, which no client's view refers to (an entity held as of tick H was alive
        at H). Rows above this tick's slots in use are not returned."""
        i = tick % (self.ring + 1)
        if self._hist_tick[i] != tick:
            raise KeyError(tick)
        return self._hist[i, : self._top]

    def baseline_for(self, session: "Session", tick: int) -> HeldView | None:
        """The view to encode ``session``'s snapshot against, or None for a full snapshot."""
        base = session.baseline
        if base is None or tick - base.tick > self.ring or base.oldest < tick - self.ring:
            return None
        return base

    # -- the stage --------------------------------------------------------------------------
    def run(self, tick: int, sessions: list["Session"], now: float) -> None:
        started = time.thread_time()
        served = self.schedule(tick, sessions)
        world = self.world
        # Only the slots up to the highest alive one: a world of 400 in 4096 slots does a
        # tenth of the work. The history keeps those rows; rows above them are never read for
        # that tick (no entity there was in anybody's view then).
        alive = np.flatnonzero(world.alive)
        top = int(alive[-1]) + 1 if len(alive) else 0
        self._top = top
        qstate = self.quantizer.quantize_state(world.pos[:top], world.yaw[:top], world.anim[:top], on_nan="min")
        if served:
            slots, offsets, view_keys = self.visible_sets(served)
            state_ids = world.ids(np.arange(top))
            self._send(tick, served, slots, offsets, view_keys, state_ids, qstate, now)
        i = tick % (self.ring + 1)
        self._hist[i, :top] = qstate
        self._hist_tick[i] = tick
        self.last_seconds = time.thread_time() - started

    def visible_sets(self, served: list["Session"]) -> tuple[np.ndarray, np.ndarray, list[int] | None]:
        """Each served client's visible slots (CSR: slots, offsets) and its view key.

        With ``interest.share_cell`` > 0, the clients standing in one square of that size share
        the view of one of them (the one with the lowest slot, so it stays the same while it
        is there): the interest grid runs for those representatives only, and clients with the
        same view key see the same entities, which lets the encoder encode them once. Without
        it, every client is an observer of its own (view keys None).
        """
        world = self.world
        observers = np.fromiter((s.slot for s in served), dtype=np.int64, count=len(served))
        if self.share_cell <= 0.0:
            vis = self.interest.update(world.pos, world.alive, observers, generation=world.generation)
            return vis.slots, vis.offsets, None
        cell = np.floor(world.pos[observers][:, [0, 2]] / self.share_cell).astype(np.int64)
        key = cell[:, 0] * 1_000_003 + cell[:, 1]
        order = np.lexsort((observers, key))
        skey = key.take(order)
        head = np.ones(len(order), dtype=bool)
        head[1:] = skey[1:] != skey[:-1]
        reps = observers.take(order[head])  # the lowest slot of each square
        rep_of = np.empty(len(order), dtype=np.int64)
        rep_of[order] = np.cumsum(head) - 1
        vis = self.interest.update(world.pos, world.alive, reps, generation=world.generation)
        # Squares whose representatives see the same entities (a hall where everyone sees
        # everyone) get one view key, so the encoder groups all of their clients.
        rcount = np.diff(vis.offsets)
        rep_key = np.arange(len(reps), dtype=np.int64)  # each square its own view, unless...
        if len(reps) > 1 and (rcount == rcount[0]).all() and rcount[0] and (
            vis.slots.reshape(len(reps), -1) == vis.slots[: rcount[0]]
        ).all():
            rep_key[:] = 0  # everyone sees the same entities
        else:  # ... another square sees the same: only views of a size seen twice can match
            sizes, inverse, times = np.unique(rcount, return_inverse=True, return_counts=True)
            voff = vis.offsets.tolist()
            firsts: dict[int, int] = {}
            for r in np.flatnonzero((times.take(inverse) > 1) & (rcount > 0)).tolist():
                seg = vis.slots[voff[r] : voff[r + 1]]
                first = firsts.setdefault(hash(seg.tobytes()), r)
                if first != r and np.array_equal(seg, vis.slots[voff[first] : voff[first + 1]]):
                    rep_key[r] = first  # (a hash collision keeps a view of its own)
        counts = np.diff(vis.offsets).take(rep_of)
        offsets = np.zeros(len(served) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        # Each client's slots are its representative's segment: one copy of each segment into
        # place (a crowd of 1,000 that all see 1,000 is a million slots; index arithmetic over
        # them, a repeat, an arange and a gather, cost 4x this one pass).
        bounds = vis.offsets.tolist()
        slots = vis.slots
        segments = [slots[bounds[r] : bounds[r + 1]] for r in rep_of.tolist()]
        self.stats.incr("snapshot.shared_views", len(served) - len(reps))
        out = np.concatenate(segments) if segments else slots[:0].copy()
        return out, offsets, rep_key.take(rep_of).tolist()

    def _weights(self, clients: list["Session"]) -> PairWeights:
        """Priority weights ``4 / (1 + d / DISTANCE_SCALE)``, with ``d`` measured from the
        centre of the observer's PRIORITY_CELL square: observers in one square share the
        weights, so a crowd held back by its allowance still shares its encodings. The table
        (one row per square in use, one column per slot) is only made when a client needs it.
        """
        pos = self.world.pos
        obs = np.fromiter((s.slot for s in clients), dtype=np.int64, count=len(clients))
        cell = np.floor(pos[obs][:, [0, 2]] / PRIORITY_CELL).astype(np.int64)
        keys, rows = np.unique(cell[:, 0] * 1_000_003 + cell[:, 1], return_inverse=True)
        first = np.zeros(len(keys), dtype=np.int64)
        first[rows[::-1]] = np.arange(len(rows))[::-1]
        centres = (cell[first] + 0.5) * PRIORITY_CELL

        def table() -> np.ndarray:
            dx = pos[:, 0][None, :] - centres[:, 0][:, None]
            dz = pos[:, 2][None, :] - centres[:, 1][:, None]
            return 4.0 / (1.0 + np.sqrt(dx * dx + dz * dz) / DISTANCE_SCALE)

        return PairWeights(table, rows.tolist())

    def _send(self, tick: int, served: list["Session"], slots: np.ndarray, offsets: np.ndarray,
              view_keys: list[int] | None, state_ids: np.ndarray, qstate: np.ndarray, now: float) -> None:
        native = [i for i, s in enumerate(served) if not s.wants_views]
        if len(native) < len(served):
            for i, s in enumerate(served):
                if s.wants_views:
                    sl = slots[offsets[i] : offsets[i + 1]]
                    s.sink.send_view(s, state_ids[sl], qstate[sl], now)
            if not native:
                return
            keep = np.zeros(len(served), dtype=bool)
            keep[native] = True
            counts = np.diff(offsets)
            rows = np.repeat(keep, counts)
            slots = slots[rows]
            offsets = np.concatenate(([0], np.cumsum(counts[native])))
            clients = [served[i] for i in native]
            if view_keys is not None:
                view_keys = [view_keys[i] for i in native]
        else:
            clients = served
        self.stats.incr("snapshot.entities_visible", len(slots))
        weights = self._weights(clients)
        snaps = encode_many(
            tick=tick,
            state_ids=state_ids,
            state_q=qstate,
            history=self.history,
            slots=slots,
            offsets=offsets,
            baselines=[self.baseline_for(s, tick) for s in clients],
            input_acks=[s.last_applied_seq for s in clients],
            self_ids=[s.entity_id for s in clients],
            part_budget=self.part_budget,
            max_parts=[self.max_parts] * len(clients),
            weights=weights,
            view_keys=view_keys,
            max_age=self.ring,
            force_age=self.force_age,
            layout=self.quantizer,
        )
        ring = self.ring
        parts_n = refreshed = limited = 0
        for session, snap in zip(clients, snaps):
            parts_n += len(snap.parts)
            refreshed += snap.refreshed
            limited += not snap.complete
            seqs = session.sink.send_snapshot(session, snap.parts, now)
            if seqs is not None:
                session.record_sent(tick, seqs, snap.view, ring)
                session.bytes_out += sum(map(len, snap.parts)) + HEADER_SIZE * len(seqs)  # the admin API's figure
        self.stats.incr("snapshot.parts", parts_n)
        self.stats.incr("snapshot.entities_refreshed", refreshed)
        if limited:
            self.stats.incr("snapshots.rate_limited", limited)
