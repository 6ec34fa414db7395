"""Authoritative world state as a numpy structure-of-arrays, and its fixed-step integrator.

Every entity lives in a *slot* (an index into arrays of length ``capacity``). Entities are
named outside this module by an id ``(slot << 16) | generation``; the generation of a slot
is bumped each time the slot is reused, so an id held by someone after a despawn can never
address the entity that later took over the same slot.

:meth:`World.step` advances every alive entity at once with whole-array numpy operations
(no Python loop over entities). Client input enters only through :meth:`World.set_intents`,
which sanitises it; the integrator then enforces the speed limit and the world bounds, so
whatever a client sends, nothing moves faster than ``max_speed`` horizontally and nothing
leaves the box (positions are clamped, never wrapped). A world built from a world file also
has walls (``walls``, a :class:`worldserver.collision.WallSet`): every horizontal move then
goes through them, so no entity crosses or ends a tick inside a wall, and new entities appear
in the file's spawn areas, clear of the walls.

This module must not do I/O, must not log per-entity events, must not import trio and must
not know about the network protocol or about players/sessions beyond the opaque ``owner``
integer it stores.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["World", "WorldFull", "ANIM_AIRBORNE", "GROUND_EPS"]

#: Animation code forced by :meth:`World.step` while an entity is airborne (jumping or falling).
ANIM_AIRBORNE = 3
#: An entity whose height is within this distance of the floor counts as standing on it.
GROUND_EPS = 1e-6

_TWO_PI = 2.0 * math.pi
_GEN_MASK = 0xFFFF
_SLOT_SHIFT = 16
_MAX_CAPACITY = 1 << 16
SPAWN_HALVINGS = 4  # a crowded world spawns down to 1/16 of spawn_clearance apart, then stacks


class WorldFull(RuntimeError):
    """No entity can be spawned: every slot is taken."""


class World:
    """All entities of one world, stored as parallel numpy arrays of length ``capacity``.

    Public arrays (index = slot; contents of dead slots are meaningless):

    ``pos`` (cap,3) float64, ``vel`` (cap,3) float64, ``yaw`` (cap,) float64 radians in
    [0, 2π), ``anim`` (cap,) uint8, ``owner`` (cap,) int32 (-1 = none), ``alive`` (cap,)
    bool, ``generation`` (cap,) uint16, ``intent`` (cap,2) float32 movement intent in x,z
    with length <= 1, ``jump`` (cap,) bool (pending jump request, consumed by ``step``).

    The vertical axis is y. The floor is ``max(y_min, 0)``; ``anim`` is what the client last
    set, except that ``step`` reports :data:`ANIM_AIRBORNE` while an entity is above the floor
    (the client's value comes back as soon as it lands).

    Callers may read the arrays freely but should change entity state only through the
    methods, which keep the sanitising and generation guarantees.

    ``rng`` (a ``numpy.random.Generator``) only picks the phase of the spawn-search rings;
    pass a seeded one for reproducible spawn positions. :class:`WorldFull` is raised only
    when all slots are taken: a crowded world spawns closer than ``spawn_clearance``.
    """

    def __init__(
        self,
        *,
        capacity: int,
        half_extent: float,
        y_min: float,
        y_max: float,
        max_speed: float,
        jump_speed: float,
        gravity: float,
        spawn_point=(0.0, 0.0, 0.0),
        spawn_clearance: float = 2.0,
        rng=None,
        walls=None,
        spawn_areas=None,
    ) -> None:
        """``walls``: a :class:`worldserver.collision.WallSet` (None: the open box);
        ``spawn_areas``: (x, z) points clear of the walls where entities may appear (with
        walls, required); see :meth:`spawn`."""
        capacity = int(capacity)
        if not 1 <= capacity <= _MAX_CAPACITY:
            raise ValueError(f"capacity must be in 1..{_MAX_CAPACITY}, got {capacity}")
        values = dict(half_extent=half_extent, y_min=y_min, y_max=y_max, max_speed=max_speed,
                      jump_speed=jump_speed, gravity=gravity, spawn_clearance=spawn_clearance)
        for name, value in values.items():
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if half_extent <= 0:
            raise ValueError("half_extent must be > 0")
        if max_speed < 0 or jump_speed < 0 or gravity < 0 or spawn_clearance < 0:
            raise ValueError("max_speed, jump_speed, gravity and spawn_clearance must be >= 0")
        floor = max(float(y_min), 0.0)
        if float(y_max) < floor:
            raise ValueError("y_max must be >= max(y_min, 0)")

        self.capacity = capacity
        self.half_extent = float(half_extent)
        self.y_min = float(y_min)
        self.y_max = float(y_max)
        self.floor = floor
        self.max_speed = float(max_speed)
        self.jump_speed = float(jump_speed)
        self.gravity = float(gravity)
        self.spawn_clearance = float(spawn_clearance)
        sp = np.asarray(spawn_point, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(sp)):
            raise ValueError("spawn_point must be finite")
        he = self.half_extent
        self.spawn_point = np.array([np.clip(sp[0], -he, he), np.clip(sp[1], floor, self.y_max),
                                     np.clip(sp[2], -he, he)])
        self.rng = rng if rng is not None else np.random.default_rng()
        self.walls = walls
        self.spawn_candidates = self._spawn_points(spawn_areas) if walls is not None else None

        self.pos = np.zeros((capacity, 3), dtype=np.float64)
        self.pos[:, 1] = floor
        self.vel = np.zeros((capacity, 3), dtype=np.float64)
        self.yaw = np.zeros(capacity, dtype=np.float64)
        self.anim = np.zeros(capacity, dtype=np.uint8)
        self.owner = np.full(capacity, -1, dtype=np.int32)
        self.alive = np.zeros(capacity, dtype=bool)
        self.generation = np.zeros(capacity, dtype=np.uint16)
        self.intent = np.zeros((capacity, 2), dtype=np.float32)
        self.jump = np.zeros(capacity, dtype=bool)
        # The animation the client asked for; ``anim`` is derived from it each step.
        self._anim_req = np.zeros(capacity, dtype=np.uint8)
        self._count = 0
        self._spawn_hint = 0  # first ring worth trying (see _find_spawn_xz)
        # Scratch buffers for step(), allocated once.
        self._tmp3 = np.empty((capacity, 3), dtype=np.float64)
        self._mask = np.empty(capacity, dtype=bool)
        self._mask2 = np.empty(capacity, dtype=bool)

    def _spawn_points(self, spawn_areas) -> np.ndarray:
        pts = np.asarray(spawn_areas, dtype=np.float64).reshape(-1, 2)
        if not len(pts):
            raise ValueError("a world with walls needs spawn points")
        if np.any(np.abs(pts) > self.half_extent):
            raise ValueError("spawn points must lie within half_extent")
        return pts

    def set_walls(self, walls, spawn_areas) -> np.ndarray:
        """New walls and spawn points for a running world (a reloaded world file): every alive
        entity that the new walls overlap, or that is off the new floor, moves to the nearest
        point clear of them (:meth:`WallSet.nearest_clear`; where none is found, the freest
        spawn point) and stops there. Returns the slots that moved. The walls' floor must lie
        within ``half_extent`` (ValueError)."""
        if walls is None:
            raise ValueError("a world's walls cannot be taken away")
        if np.any(np.abs(np.concatenate([walls.lo, walls.hi])) > self.half_extent + 1e-9):
            raise ValueError("the floor must lie within half_extent")
        candidates = self._spawn_points(spawn_areas)
        self.walls, self.spawn_candidates = walls, candidates
        self._spawn_hint = 0
        slots = np.flatnonzero(self.alive)
        stuck = slots[~walls.clear(self.pos[slots, 0], self.pos[slots, 2])]
        if not len(stuck):
            return stuck
        x, z, found = walls.nearest_clear(self.pos[stuck, 0], self.pos[stuck, 2])
        self.pos[stuck, 0] = x
        self.pos[stuck, 2] = z
        self.vel[stuck, 0] = 0.0
        self.vel[stuck, 2] = 0.0
        for slot in stuck[~found]:  # no clear point near it at all: a spawn point
            self.alive[slot] = False  # not its own neighbour in the freest-point search
            self.pos[slot, 0], self.pos[slot, 2] = self._freest_spawn_xz()
            self.alive[slot] = True
        return stuck

    # ------------------------------------------------------------------ ids and slots

    @property
    def count(self) -> int:
        """Number of alive entities."""
        return self._count

    def alive_slots(self) -> np.ndarray:
        """Slots of all alive entities, ascending (int64)."""
        return np.flatnonzero(self.alive)

    def ids(self, slots) -> np.ndarray:
        """Entity ids (uint32) for an array of slots."""
        slots = np.asarray(slots, dtype=np.int64)
        ids = slots.astype(np.uint32) << np.uint32(_SLOT_SHIFT)
        ids |= self.generation[slots]
        return ids

    def slot_of(self, entity_id: int) -> int | None:
        """Slot of the alive entity named by ``entity_id``, or None if it is stale or unknown."""
        try:
            entity_id = int(entity_id)
        except (TypeError, ValueError):
            return None
        if entity_id < 0 or entity_id > 0xFFFFFFFF:
            return None
        slot = entity_id >> _SLOT_SHIFT
        if slot >= self.capacity or not self.alive[slot]:
            return None
        if int(self.generation[slot]) != entity_id & _GEN_MASK:
            return None
        return slot

    # ------------------------------------------------------------------ spawn / despawn

    def spawn(self, owner: int) -> int:
        """Create an entity near the spawn point and return its id.

        The lowest free slot is used; its generation is incremented (wrapping, never 0).
        The position is the spawn point if nothing alive is within ``spawn_clearance`` of it
        (XZ plane), else the first free point on rings of growing radius around it, inside
        the bounds (in a crowd too dense for that, closer; in a world with walls, the freest
        point of its spawn areas). Raises :class:`WorldFull` only when no slot is left.
        """
        if self._count >= self.capacity:
            raise WorldFull(f"all {self.capacity} slots are in use")
        slot = int(np.argmin(self.alive))  # first False
        x, z = self._find_spawn_xz() if self.spawn_candidates is None else self._freest_spawn_xz()
        gen = (int(self.generation[slot]) + 1) & _GEN_MASK
        if gen == 0:
            gen = 1
        self.generation[slot] = gen
        self.pos[slot] = (x, self.spawn_point[1], z)
        self.vel[slot] = 0.0
        self.yaw[slot] = 0.0
        self.anim[slot] = 0
        self._anim_req[slot] = 0
        self.owner[slot] = owner
        self.intent[slot] = 0.0
        self.jump[slot] = False
        self.alive[slot] = True
        self._count += 1
        return (slot << _SLOT_SHIFT) | gen

    def despawn(self, entity_id: int) -> bool:
        """Remove the entity; False (and nothing changes) if the id is stale or unknown."""
        slot = self.slot_of(entity_id)
        if slot is None:
            return False
        self.alive[slot] = False
        self.owner[slot] = -1
        # Leave the dead slot inert: step() then keeps it exactly where it is.
        self.vel[slot] = 0.0
        self.intent[slot] = 0.0
        self.jump[slot] = False
        self.pos[slot, 1] = self.floor
        self._count -= 1
        self._spawn_hint = 0
        return True

    def _find_spawn_xz(self) -> tuple[float, float]:
        """First free XZ point: the spawn point, then rings of growing radius (vectorised).

        Candidates lie on rings spaced half a clearance apart (points half a clearance apart
        on each ring, random phase per ring), generated a batch of rings at a time. Each
        batch is checked against the alive entities with a hash grid of clearance-sized
        cells: a candidate only meets the entities of its 3x3 cells, so one batch costs
        O(candidates + entities) whatever the crowd. Within one tick nothing moves or
        disappears between spawns, so the search resumes at the ring where the previous
        spawn found room (``step`` and ``despawn`` reset that hint to the spawn point).
        """
        sx, sz = float(self.spawn_point[0]), float(self.spawn_point[2])
        others = self.pos[self.alive][:, ::2]
        if len(others) == 0 or self.spawn_clearance <= 0:
            return sx, sz
        # A crowded world never refuses a join for want of room: with no point at the full
        # clearance, it looks again at half of it, and so on; at the end, the spawn point.
        clearance = self.spawn_clearance
        for attempt in range(SPAWN_HALVINGS + 1):
            found = self._ring_search(others, clearance)
            if found is not None:
                return found
            self._spawn_hint = 0  # the rings of a smaller clearance are numbered differently
            clearance /= 2
        return sx, sz

    def _ring_search(self, others: np.ndarray, clearance: float) -> tuple[float, float] | None:
        """The ring search of :meth:`_find_spawn_xz` for one clearance; None if no point of
        the box has that much room."""
        sx, sz = float(self.spawn_point[0]), float(self.spawn_point[2])
        he = self.half_extent
        c2 = clearance * clearance
        cell = clearance * (1 + 1e-9)
        ncell = int(math.ceil(2 * he / cell)) + 3  # +1 border on each side, +1 rounding

        def cells(x, z):
            ix = np.clip(np.floor((x + he) / cell).astype(np.int64) + 1, 0, ncell - 1)
            iz = np.clip(np.floor((z + he) / cell).astype(np.int64) + 1, 0, ncell - 1)
            return ix, iz

        oix, oiz = cells(others[:, 0], others[:, 1])
        okey = oix * ncell + oiz
        order = np.argsort(okey)
        okey = okey[order]
        ox, oz = others[order, 0], others[order, 1]
        if ncell * ncell <= 1 << 22:  # dense table of where each cell's run starts
            start = np.zeros(ncell * ncell + 1, dtype=np.int64)
            np.cumsum(np.bincount(okey, minlength=ncell * ncell), out=start[1:])

            def first_at_or_after(keys):
                return start[keys]
        else:
            def first_at_or_after(keys):
                return np.searchsorted(okey, keys)

        step = clearance / 2
        reach = math.hypot(he + abs(sx), he + abs(sz))  # every corner of the box
        max_ring = int(math.ceil(reach / step)) + 1
        first, batch = min(self._spawn_hint, max_ring), 8
        while first <= max_ring:
            last = min(max_ring, first + batch - 1)
            radius = np.arange(first, last + 1) * step
            npts = np.maximum(1, np.ceil(_TWO_PI * radius / step)).astype(np.int64)
            ring_of = np.repeat(np.arange(len(radius)), npts)
            within = np.arange(len(ring_of)) - np.repeat(np.cumsum(npts) - npts, npts)
            phase = self.rng.uniform(0.0, _TWO_PI, size=len(radius))
            ang = phase[ring_of] + _TWO_PI * within / npts[ring_of]
            cx = sx + radius[ring_of] * np.cos(ang)
            cz = sz + radius[ring_of] * np.sin(ang)
            inside = np.flatnonzero((np.abs(cx) <= he) & (np.abs(cz) <= he))
            cx, cz = cx[inside], cz[inside]
            if len(cx):
                cix, ciz = cells(cx, cz)
                # Row dx of a candidate's 3x3 cells is the key run [row - 1, row + 1].
                rows = (cix[:, None] + np.array([-1, 0, 1])) * ncell + ciz[:, None]
                lo = first_at_or_after(rows - 1).ravel()
                lens = first_at_or_after(rows + 2).ravel() - lo
                total = int(lens.sum())
                blocked = np.zeros(len(cx), dtype=bool)
                if total:
                    idx = np.repeat(lo - (np.cumsum(lens) - lens), lens) + np.arange(total)
                    cand = np.repeat(np.arange(len(cx)), lens.reshape(-1, 3).sum(axis=1))
                    d2 = (ox[idx] - cx[cand]) ** 2 + (oz[idx] - cz[cand]) ** 2
                    blocked[cand[d2 < c2]] = True
                free = np.flatnonzero(~blocked)
                if len(free):
                    i = free[0]
                    self._spawn_hint = first + int(ring_of[inside[i]])
                    return float(cx[i]), float(cz[i])
            first = last + 1
            batch = min(2 * batch, 32)
        return None

    def _freest_spawn_xz(self, sample: int = 256) -> tuple[float, float]:
        """A world's spawn: a spawn point with ``spawn_clearance`` free around it if one of a
        random sample has it, else the freest of the sample (the farthest from everyone):
        a crowded world never refuses a join for want of space, it spawns closer."""
        cand = self.spawn_candidates
        if len(cand) > sample:
            cand = cand[self.rng.choice(len(cand), size=sample, replace=False)]
        else:
            cand = cand[self.rng.permutation(len(cand))]
        others = self.pos[self.alive][:, ::2]
        if not len(others):
            return float(cand[0, 0]), float(cand[0, 1])
        nearest = np.full(len(cand), np.inf)
        for start in range(0, len(others), 1024):  # bounded memory: candidates x 1024 at a time
            block = others[start : start + 1024]
            d2 = (cand[:, None, 0] - block[None, :, 0]) ** 2 + (cand[:, None, 1] - block[None, :, 1]) ** 2
            np.minimum(nearest, d2.min(axis=1), out=nearest)
        roomy = np.flatnonzero(nearest >= self.spawn_clearance ** 2)
        i = int(roomy[0]) if len(roomy) else int(np.argmax(nearest))
        return float(cand[i, 0]), float(cand[i, 1])

    # ------------------------------------------------------------------ input

    def set_intents(self, slots, move_xz, yaw, anim, jump) -> None:
        """Store client input for ``slots`` (all arrays of length k), vectorised.

        NaN/inf components become 0, intent vectors longer than 1 are scaled to length 1,
        yaw is wrapped into [0, 2π) (non-finite yaw becomes 0), anim is clipped to 0..255.
        A jump request stays pending until the next ``step``. Dead slots are ignored.
        Duplicate slots: the last occurrence wins.
        """
        slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        move = np.array(move_xz, dtype=np.float64).reshape(len(slots), 2)
        yaw = np.array(yaw, dtype=np.float64).reshape(len(slots))
        anim = np.array(anim, dtype=np.float64).reshape(len(slots))
        jump = np.asarray(jump, dtype=bool).reshape(len(slots))
        if len(slots) and (slots.min() < 0 or slots.max() >= self.capacity):
            raise IndexError("slot out of range")
        live = self.alive[slots]
        if not live.all():
            slots, move, yaw = slots[live], move[live], yaw[live]
            anim, jump = anim[live], jump[live]

        move[~np.isfinite(move)] = 0.0
        n2 = np.einsum("ij,ij->i", move, move)
        long = n2 > 1.0
        if long.any():
            move[long] /= np.sqrt(n2[long])[:, None]
        intent = move.astype(np.float32)
        # Rounding to float32 may leave a unit vector a hair longer than 1: shave an ulp.
        for _ in range(4):
            i64 = intent.astype(np.float64)
            over = np.einsum("ij,ij->i", i64, i64) > 1.0
            if not over.any():
                break
            intent[over] = np.nextafter(intent[over], np.float32(0.0))

        yaw[~np.isfinite(yaw)] = 0.0
        yaw = np.mod(yaw, _TWO_PI)
        yaw[yaw >= _TWO_PI] = 0.0  # mod of a tiny negative number can round up to 2π

        anim = np.nan_to_num(anim, nan=0.0, posinf=255.0, neginf=0.0)
        anim = np.clip(anim, 0, 255).astype(np.uint8)

        self.intent[slots] = intent
        self.yaw[slots] = yaw
        self._anim_req[slots] = anim
        airborne = self.pos[slots, 1] > self.floor + GROUND_EPS
        self.anim[slots] = np.where(airborne, ANIM_AIRBORNE, anim)
        self.jump[slots] = jump

    # ------------------------------------------------------------------ simulation

    @property
    def requested_anim(self) -> np.ndarray:
        """The animation each client last asked for (``anim`` shows 3 while airborne)."""
        return self._anim_req

    def catch_up(self, slots, move_xz, dt: float) -> None:
        """One extra horizontal step for ``slots`` (inputs that arrived late), vectorised.

        The intents are sanitised as in :meth:`set_intents` and stored, the entities move by
        ``intent * max_speed * dt`` and are clamped to the bounds. Vertical motion, yaw and
        animation are left to the regular :meth:`step`. The caller limits how often this
        happens (sessions allow it only to catch up inputs the client really sent in time).
        """
        slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        if not len(slots):
            return
        self.set_intents(slots, move_xz, self.yaw[slots], self._anim_req[slots], self.jump[slots])
        live = slots[self.alive[slots]]
        move = self.intent[live].astype(np.float64) * (self.max_speed * float(dt))
        if self.walls is not None:
            x, z = self.walls.move(self.pos[live, 0], self.pos[live, 2], move[:, 0], move[:, 1])
            self.pos[live, 0] = x
            self.pos[live, 2] = z
            return
        xz = self.pos[live][:, ::2] + move
        np.clip(xz, -self.half_extent, self.half_extent, out=xz)
        self.pos[live, 0] = xz[:, 0]
        self.pos[live, 2] = xz[:, 1]

    def step(self, dt: float) -> None:
        """Advance every alive entity by ``dt`` seconds (whole-array numpy, no entity loop).

        Horizontal velocity is ``intent * max_speed``. A pending jump on the floor sets
        vy = jump_speed. Gravity is integrated exactly for constant acceleration. Positions
        are clamped to |x|,|z| <= half_extent and floor <= y <= y_max; landing (or hitting
        the ceiling) zeroes the vertical velocity. Jump requests are consumed.

        Dead slots are inert (zero intent and velocity, on the floor) so they are integrated
        along with the rest and stay unchanged, which is cheaper than masking.
        """
        dt = float(dt)
        if not dt >= 0.0 or math.isinf(dt):
            raise ValueError(f"dt must be finite and >= 0, got {dt!r}")
        self._spawn_hint = 0
        pos, vel, tmp = self.pos, self.vel, self._tmp3
        y, vy = pos[:, 1], vel[:, 1]
        floor, on_floor, flag = self.floor, self._mask, self._mask2
        half_g_dt2 = 0.5 * self.gravity * dt * dt

        np.multiply(self.intent, self.max_speed, out=vel[:, ::2], dtype=np.float64)
        walled = None
        if self.walls is not None:  # horizontal motion goes through the walls (below)
            walled = np.flatnonzero(self.alive)
            start_x, start_z = pos[walled, 0], pos[walled, 2]
        np.less_equal(y, floor + GROUND_EPS, out=on_floor)
        np.logical_and(self.jump, on_floor, out=flag)
        np.copyto(vy, self.jump_speed, where=flag)
        np.multiply(vel, dt, out=tmp)
        pos += tmp
        y -= half_g_dt2
        vy -= self.gravity * dt
        np.clip(pos[:, ::2], -self.half_extent, self.half_extent, out=pos[:, ::2])
        if walled is not None and len(walled):
            x, z = self.walls.move(start_x, start_z, vel[walled, 0] * dt, vel[walled, 2] * dt)
            pos[walled, 0] = x
            pos[walled, 2] = z
        np.clip(y, floor, self.y_max, out=y)
        # Landed: on the floor and moving down -> stop. At the ceiling moving up -> stop.
        np.less_equal(y, floor + GROUND_EPS, out=on_floor)
        np.less(vy, 0.0, out=flag)
        flag &= on_floor
        np.copyto(vy, 0.0, where=flag)
        np.greater_equal(y, self.y_max, out=flag)
        flag &= vy > 0.0
        np.copyto(vy, 0.0, where=flag)
        # anim: the client's value, except airborne.
        np.copyto(self.anim, self._anim_req)
        np.logical_not(on_floor, out=flag)
        np.copyto(self.anim, ANIM_AIRBORNE, where=flag)
        self.jump.fill(False)
