"""Walls for circles: keeps every entity (a circle of radius ``radius`` in the x,z plane) out
of a world's walls, vectorised over all entities at once.

A wall is a *capsule*: a 2D segment with a half thickness, so that its ends are round and a
circle slides around them instead of catching on a corner. Doorways are simply gaps between
walls. :class:`WallSet` holds the segments and a broad-phase grid (for each cell, the walls
that a circle whose centre is in that cell can touch), built once per world.

:meth:`WallSet.move` is the narrow phase of a tick: it moves the given centres by their
displacements and resolves contacts. The motion is cut into sub-steps shorter than the
thinnest ``radius + half thickness`` (the reach), so no circle can pass through a wall at any
speed (no tunnelling: a sub-step ends less than a reach deep, on the side it came from); after each sub-step, a few relaxation passes push each
circle out of the wall it overlaps most, along the shortest direction, which keeps the motion
along the wall (sliding) and settles corners where two walls push. A circle that is still
overlapping a wall after the passes (a pathological pocket narrower than the circle) goes
back to where it was before that sub-step, so a circle that starts a tick outside every wall
ends it outside every wall. :meth:`WallSet.penetration` measures how deep each circle is in
its worst wall, for tests and for spawn checks (:meth:`WallSet.clear`).

Pure numpy: no I/O, no clocks, no knowledge of entities, sessions or the network.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["WallSet", "RELAX_PASSES", "SLACK"]

#: Relaxation passes per sub-step (each resolves the deepest contact of every circle: a corner
#: of two walls settles in 2; 4 leaves margin for three).
RELAX_PASSES = 4
#: Circles are pushed this much further than touching, so that rounding never leaves them a
#: hair inside (and the next tick's contact test is not a coin toss).
SLACK = 1e-6
_FAR = 1e9  # padding walls sit here: never within reach


class WallSet:
    """Capsule walls ``(ax, az) -> (bx, bz)`` with half thickness ``half``, for circles of
    radius ``radius``, inside the floor rectangle ``lo`` .. ``hi`` (x, z; circles are clamped
    to it so that their centres stay at least ``radius`` inside).

    ``segments``: array (W, 4) of ax, az, bx, bz; ``half``: array (W,) or a scalar.
    ``cell``: broad-phase cell size in metres (default: about two circle diameters).
    """

    def __init__(self, segments, half, radius: float, lo, hi, cell: float | None = None) -> None:
        seg = np.asarray(segments, dtype=np.float64).reshape(-1, 4)
        if not np.all(np.isfinite(seg)):
            raise ValueError("wall coordinates must be finite")
        half_arr = np.broadcast_to(np.asarray(half, dtype=np.float64), (len(seg),)).copy()
        if np.any(half_arr < 0) or not np.all(np.isfinite(half_arr)):
            raise ValueError("wall half thickness must be finite and >= 0")
        radius = float(radius)
        if not radius > 0 or not math.isfinite(radius):
            raise ValueError("radius must be finite and > 0")
        self.radius = radius
        self.lo = np.asarray(lo, dtype=np.float64).reshape(2)
        self.hi = np.asarray(hi, dtype=np.float64).reshape(2)
        if not np.all(self.hi - self.lo > 2 * radius):
            raise ValueError("the floor must be wider and deeper than an entity")
        self.count = len(seg)
        # Padding wall W: a point far away, so that gathers need no masks.
        self.ax = np.append(seg[:, 0], _FAR)
        self.az = np.append(seg[:, 1], _FAR)
        self.dx = np.append(seg[:, 2] - seg[:, 0], 0.0)
        self.dz = np.append(seg[:, 3] - seg[:, 1], 0.0)
        self.len2 = self.dx * self.dx + self.dz * self.dz
        self.inv_len2 = np.divide(1.0, self.len2, out=np.zeros_like(self.len2), where=self.len2 > 0)
        self.reach = np.append(half_arr + radius, 0.0)  # centre-to-segment distance at contact
        # A unit normal per wall, for a centre exactly on the segment (no direction to push).
        length = np.sqrt(self.len2)
        nx = np.divide(-self.dz, length, out=np.ones_like(length), where=length > 0)
        nz = np.divide(self.dx, length, out=np.zeros_like(length), where=length > 0)
        self.nx, self.nz = nx, nz
        # A sub-step shorter than the thinnest reach cannot carry a centre past a segment's
        # line: it ends less than a reach deep, on the side it came from, and is pushed back
        # out to that side.
        thinnest = float(self.reach[:-1].min()) if self.count else radius
        self.max_step = 0.9 * thinnest
        self._build_grid(seg, half_arr, cell if cell is not None else max(4.0 * radius, 1.0))

    def _build_grid(self, seg: np.ndarray, half: np.ndarray, cell: float) -> None:
        """For each cell of the floor (plus a one-cell border), the walls whose capsule,
        grown by the radius and by one maximal sub-step, overlaps the cell; padded with the
        far wall to the largest count."""
        self.cell = float(cell)
        self.origin = self.lo - self.cell
        span = self.hi - self.lo
        self.nx_cells = int(math.ceil(span[0] / self.cell)) + 3
        self.nz_cells = int(math.ceil(span[1] / self.cell)) + 3
        ncells = self.nx_cells * self.nz_cells
        per_cell: list[list[int]] = [[] for _ in range(ncells)]
        for w in range(self.count):
            grow = half[w] + self.radius + self.max_step + 1e-9
            x0, z0, x1, z1 = seg[w]
            lo_x = int(math.floor((min(x0, x1) - grow - self.origin[0]) / self.cell))
            hi_x = int(math.floor((max(x0, x1) + grow - self.origin[0]) / self.cell))
            lo_z = int(math.floor((min(z0, z1) - grow - self.origin[1]) / self.cell))
            hi_z = int(math.floor((max(z0, z1) + grow - self.origin[1]) / self.cell))
            for ix in range(max(lo_x, 0), min(hi_x, self.nx_cells - 1) + 1):
                for iz in range(max(lo_z, 0), min(hi_z, self.nz_cells - 1) + 1):
                    # keep the cell only if the grown capsule reaches the cell's square
                    cx0 = self.origin[0] + ix * self.cell
                    cz0 = self.origin[1] + iz * self.cell
                    if _segment_box_distance(x0, z0, x1, z1, cx0, cz0, self.cell) <= grow:
                        per_cell[ix * self.nz_cells + iz].append(w)
        width = max(1, max((len(c) for c in per_cell), default=1))
        table = np.full((ncells, width), self.count, dtype=np.int64)  # padding: the far wall
        for i, walls in enumerate(per_cell):
            table[i, : len(walls)] = walls
        self.cell_walls = table

    # -- queries --------------------------------------------------------------------------
    def _candidates(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        ix = np.clip(((x - self.origin[0]) / self.cell).astype(np.int64), 0, self.nx_cells - 1)
        iz = np.clip(((z - self.origin[1]) / self.cell).astype(np.int64), 0, self.nz_cells - 1)
        return self.cell_walls[ix * self.nz_cells + iz]  # (n, K)

    def _closest(self, x: np.ndarray, z: np.ndarray, w: np.ndarray):
        """Offsets from the closest point of each candidate wall to the centres, and their
        squared lengths: (ox, oz, d2), each (n, K)."""
        px = x[:, None] - self.ax[w]
        pz = z[:, None] - self.az[w]
        dx, dz = self.dx[w], self.dz[w]
        t = np.clip((px * dx + pz * dz) * self.inv_len2[w], 0.0, 1.0)
        ox = px - t * dx
        oz = pz - t * dz
        return ox, oz, ox * ox + oz * oz

    def penetration(self, x, z) -> np.ndarray:
        """How deep each circle is inside its worst wall (0 when it touches none), metres."""
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        if self.count == 0 or len(x) == 0:
            return np.zeros(len(x))
        w = self._candidates(x, z)
        _, _, d2 = self._closest(x, z, w)
        depth = self.reach[w] - np.sqrt(d2)
        return np.maximum(depth.max(axis=1), 0.0)

    def clear(self, x, z, margin: float = 0.0) -> np.ndarray:
        """True where a circle centred at (x, z) touches no wall and lies on the floor with
        ``margin`` metres to spare."""
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        r = self.radius + margin
        inside = (x >= self.lo[0] + r) & (x <= self.hi[0] - r) & (z >= self.lo[1] + r) & (z <= self.hi[1] - r)
        if self.count == 0 or len(x) == 0:
            return inside
        w = self._candidates(x, z)
        _, _, d2 = self._closest(x, z, w)
        return inside & ((np.sqrt(d2) - self.reach[w]).min(axis=1) >= margin)

    def nearest_clear(self, x, z, max_side: int = 257) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each centre (x, z), the nearest point where a circle is :meth:`clear` (touches no
        wall, lies on the floor), on a grid half a radius apart around it: a square window of
        four radii first, doubled until one has a clear point or it covers the floor (a large
        window's grid is coarser: at most ``max_side`` points a side, so the cost is bounded).
        Returns (x, z, found); where nothing is clear, found is False and the centre stays."""
        x = np.array(x, dtype=np.float64).reshape(-1)
        z = np.array(z, dtype=np.float64).reshape(-1)
        found = np.zeros(len(x), dtype=bool)
        span = float(np.max(self.hi - self.lo))
        for i in range(len(x)):
            half = 2.0 * self.radius
            while True:
                step = max(self.radius / 2, 2 * half / (max_side - 1))
                n = int(half / step)
                offsets = np.arange(-n, n + 1) * step  # 0 exactly: the centre itself is a candidate
                gx, gz = np.meshgrid(x[i] + offsets, z[i] + offsets, indexing="ij")
                gx, gz = gx.ravel(), gz.ravel()
                ok = np.flatnonzero(self.clear(gx, gz))
                if len(ok):
                    best = ok[np.argmin((gx[ok] - x[i]) ** 2 + (gz[ok] - z[i]) ** 2)]
                    x[i], z[i], found[i] = gx[best], gz[best], True
                    break
                if half >= span:
                    break
                half *= 2
        return x, z, found

    # -- motion ---------------------------------------------------------------------------
    def _clamp(self, x: np.ndarray, z: np.ndarray) -> None:
        r = self.radius
        np.clip(x, self.lo[0] + r, self.hi[0] - r, out=x)
        np.clip(z, self.lo[1] + r, self.hi[1] - r, out=z)

    def _relax(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """One pass: every circle pushed out of the wall it overlaps most, along the shortest
        way out; returns the indices of the circles it pushed. One wall a pass, not the sum of
        all: two segments meeting in a straight line would otherwise both push a circle at
        their joint and throw it twice as far; a corner of two walls settles over the passes."""
        w = self._candidates(x, z)
        ox, oz, d2 = self._closest(x, z, w)
        reach = self.reach[w]
        depth = reach - np.sqrt(d2)
        worst = depth.argmax(axis=1)
        deepest = depth[np.arange(len(x)), worst]
        rows = np.flatnonzero(deepest > 0.0)
        if not len(rows):
            return rows
        k = worst[rows]
        wall = w[rows, k]
        d = reach[rows, k] - deepest[rows]
        push = deepest[rows] + SLACK
        safe = d > 1e-12
        ux = np.where(safe, ox[rows, k] / np.where(safe, d, 1.0), self.nx[wall])
        uz = np.where(safe, oz[rows, k] / np.where(safe, d, 1.0), self.nz[wall])
        x[rows] += ux * push
        z[rows] += uz * push
        return rows

    def move(self, x, z, dx, dz) -> tuple[np.ndarray, np.ndarray]:
        """New centres after moving each circle by (dx, dz) against the walls; inputs are
        arrays of one length, not changed. Circles are kept on the floor (clamped)."""
        x = np.array(x, dtype=np.float64)
        z = np.array(z, dtype=np.float64)
        dx = np.asarray(dx, dtype=np.float64)
        dz = np.asarray(dz, dtype=np.float64)
        if len(x) == 0:
            return x, z
        if self.count == 0:
            x += dx
            z += dz
            self._clamp(x, z)
            return x, z
        moving = np.flatnonzero((dx != 0.0) | (dz != 0.0))
        if len(moving) == 0:
            return x, z
        # Each circle's own number of sub-steps, as if it moved alone (the client's prediction
        # moves one circle with the same rule and must land on the same point).
        length = np.sqrt(dx[moving] ** 2 + dz[moving] ** 2)
        steps = np.maximum(1, np.ceil(length / self.max_step)).astype(np.int64)
        mx, mz = x[moving], z[moving]
        sx, sz = dx[moving] / steps, dz[moving] / steps
        for k in range(int(steps.max())):
            going = np.flatnonzero(steps > k)  # the circles that still have this sub-step
            before_x, before_z = mx[going], mz[going]
            gx, gz = before_x + sx[going], before_z + sz[going]
            self._clamp(gx, gz)
            active = np.arange(len(gx))  # the circles still in contact after the last pass
            for _ in range(RELAX_PASSES):
                ax, az = gx[active], gz[active]
                pushed = self._relax(ax, az)
                if not len(pushed):
                    active = pushed
                    break
                self._clamp(ax, az)
                gx[active], gz[active] = ax, az
                active = active[pushed]
            if len(active):  # pushed in the last pass: are they out now?
                stuck = active[self.penetration(gx[active], gz[active]) > 1e-6]
                # a pocket it cannot settle in: this sub-step does not happen for it
                gx[stuck] = before_x[stuck]
                gz[stuck] = before_z[stuck]
            mx[going], mz[going] = gx, gz
        x[moving] = mx
        z[moving] = mz
        return x, z


def _segment_box_distance(x0, z0, x1, z1, bx, bz, size) -> float:
    """Distance between a segment and an axis-aligned square (0 if they meet): the minimum
    over the segment's ends against the square, the square's corners against the segment, and
    0 if the segment crosses the square (found by sampling its length finely enough)."""
    def point_box(px, pz):
        cx = min(max(px, bx), bx + size)
        cz = min(max(pz, bz), bz + size)
        return math.hypot(px - cx, pz - cz)

    def point_seg(px, pz):
        dx, dz = x1 - x0, z1 - z0
        l2 = dx * dx + dz * dz
        t = 0.0 if l2 == 0 else min(max(((px - x0) * dx + (pz - z0) * dz) / l2, 0.0), 1.0)
        return math.hypot(px - (x0 + t * dx), pz - (z0 + t * dz))

    best = min(point_box(x0, z0), point_box(x1, z1))
    for cx, cz in ((bx, bz), (bx + size, bz), (bx, bz + size), (bx + size, bz + size)):
        best = min(best, point_seg(cx, cz))
    length = math.hypot(x1 - x0, z1 - z0)
    n = max(2, int(math.ceil(length / (size / 4))) + 1)
    for k in range(n):
        t = k / (n - 1)
        best = min(best, point_box(x0 + t * (x1 - x0), z0 + t * (z1 - z0)))
    return best
