"""Who sees whom: batched spatial interest over a uniform grid, with enter/leave hysteresis.

:meth:`InterestGrid.update` answers, for every observer at once, which alive entities it
sees: every alive entity within ``radius`` (XZ distance, the observer itself included), plus
every entity it saw at the previous update that is still within ``radius + leave_margin``.
The answer is a :class:`Visibility` in CSR form (one segment per observer, in the order the
observers were given, each segment sorted by slot).

The work is whole-array numpy with no Python loop over entities or observers:

* **All in view** (a gallery opening: a few hundred people in one hall). When every alive
  entity is within ``radius`` of every alive observer, every alive observer sees every
  alive entity; hysteresis cannot change that. The test compares the bounding boxes of the
  entities and of the observers, and is exact for the per-pair test (float64 subtraction,
  squares and sum are monotone, NaN and infinities fail it). The segments are then one
  sorted slot array tiled, and the distances one broadcast subtraction per block of rows:
  no cells, no sort, no hysteresis lookup.
* **Otherwise** alive entities are binned into grid cells and the alive observers grouped
  by cell. The observers of one cell share a candidate list: the alive entities of the
  cell's neighbourhood (``2*reach+1`` rows of cells, each trimmed to what a disc of the
  leave radius can reach), sorted by slot once per cell, from an (observer cell × entity)
  membership table of the neighbourhood's stencil while that table is small against the
  lists, else from one sort of packed (cell, rank) keys. Each observer's candidates are its
  cell's list expanded in place (``np.repeat`` + ``arange``), in cache-sized blocks of a
  few hundred observers (a loop over blocks, never over observers); squared distances are
  filtered in float64, and pairs in the leave ring are looked up in the previous answer
  (packed ``observer index << slot_bits | slot`` keys: a direct-address table per block,
  or a binary search when that would be too big). Filtering keeps the list order, so the
  segments come out sorted with no sort of pairs. A block whose candidates are all within
  ``radius`` (a crowd that is all in view cell by cell) skips the filter and the
  hysteresis lookup.

The previous answer is kept as it was returned (slots and offsets) and packed into keys
only when an update has pairs in a leave ring. The cost grows with entities plus candidate
pairs near the observers, never with entities × observers unless they all see each other,
when that is the size of the answer (see :attr:`InterestGrid.last_candidates_examined`).

This module must not do I/O, must not log per-entity events, must not import trio, and must
not mutate the arrays it is given; it knows nothing about the world's rules or the network.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

__all__ = ["InterestGrid", "Visibility"]

_MAX_SLOTS = 1 << 16  # slots are packed into at most 16 bits of a key
_EMPTY_I64 = np.zeros(0, dtype=np.int64)
_EMPTY_U32 = np.zeros(0, dtype=np.uint32)
# Packed pair key (hysteresis memory), uint32: observer index (position in the ``observers``
# argument) << slot_bits | entity slot, where slot_bits = bits needed for capacity - 1.
# Sorting keys sorts pairs by (observer, slot).


@attrs.frozen(eq=False)
class Visibility:
    """What every observer sees, as CSR over observers (in the order given to ``update``).

    ``observers`` (k,) int64 slots; ``offsets`` (k+1,) int64; ``slots`` (total,) int64, each
    observer's segment ``slots[offsets[i]:offsets[i+1]]`` sorted ascending; ``dist2``
    (total,) float32 squared XZ distance from the observer, aligned with ``slots``.
    The arrays are read-only.
    """

    observers: np.ndarray
    offsets: np.ndarray
    slots: np.ndarray
    dist2: np.ndarray

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(slots, dist2) seen by the i-th observer (index into ``observers``); views, no copy."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.slots[a:b], self.dist2[a:b]

    @property
    def total(self) -> int:
        """Total number of (observer, entity) pairs."""
        return int(self.offsets[-1])

    def counts(self) -> np.ndarray:
        """Number of entities seen by each observer (k,) int64."""
        return np.diff(self.offsets)


class InterestGrid:
    """Uniform-grid interest management for up to ``capacity`` slots.

    ``cell_size`` defaults to a quarter of the leave radius (``radius + leave_margin``): an
    observer's candidates are then ``2*reach+1 = 9`` rows of cells, each row trimmed to the
    columns a disc of the leave radius can reach, which examines ~40 % fewer pairs than the
    3×3 cells of leave-radius size (``cell_size=leave radius``) and is 15-25 % faster overall.
    Any cell size is exact; ``reach = ceil(leave_radius / cell_size)``. Positions outside
    ``±half_extent`` are binned into the border cells (still exact, only slower). Non-finite
    positions are never seen and see nothing.

    Hysteresis memory is keyed by observer slot and entity slot. A slot that changes hands
    between two updates must not inherit that memory; the grid handles this two ways:

    * pass ``generation=`` (the world's per-slot generation array) to ``update``: any slot
      whose generation changed since the previous update starts with no memory, both as an
      observer and as a seen entity (recommended: ``generation=world.generation``);
    * or call :meth:`forget` for an observer slot when its owner goes away.

    An observer that was not among the previous update's observers starts with no memory.
    The grid does not keep references to the caller's arrays.
    """

    def __init__(self, *, half_extent: float, radius: float, leave_margin: float,
                 cell_size: float | None = None, capacity: int) -> None:
        capacity = int(capacity)
        if not 1 <= capacity <= _MAX_SLOTS:
            raise ValueError(f"capacity must be in 1..{_MAX_SLOTS}, got {capacity}")
        for name, value in (("half_extent", half_extent), ("radius", radius),
                            ("leave_margin", leave_margin)):
            if not math.isfinite(float(value)) or float(value) < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if half_extent <= 0:
            raise ValueError("half_extent must be > 0")
        self.capacity = capacity
        self.half_extent = float(half_extent)
        self.radius = float(radius)
        self.leave_margin = float(leave_margin)
        self.leave_radius = self.radius + self.leave_margin
        leave = self.leave_radius
        if cell_size is None:
            cell_size = leave / 4 if leave > 0 else 1.0
        cell_size = float(cell_size)
        if not math.isfinite(cell_size) or cell_size <= 0:
            raise ValueError("cell_size must be finite and > 0")
        # reach = rows/columns of neighbouring cells on each side. Guarantee reach * cell
        # >= leave radius with a relative margin that covers rounding in the binning; if the
        # given cell size is a hair too small, grow it by that hair rather than add a row.
        reach = max(1, math.ceil(leave / cell_size - 1e-9))
        if reach * cell_size < leave * (1 + 1e-9):
            cell_size = leave * (1 + 1e-9) / reach
        self.cell_size = cell_size
        self.reach = reach
        self.cells_per_axis = max(1, math.ceil(2.0 * self.half_extent / cell_size))
        width = self.cells_per_axis + 2 * reach  # padded so neighbour rows never leave the grid
        if width > 1 << 30:
            raise ValueError("cell_size is too small for half_extent")
        self._width = width
        self._ncells = width * width
        self._inv_cell = 1.0 / cell_size
        # Rows of neighbouring cells: row m (|m| <= reach) is the contiguous run of cells
        # [c + m*width - xr[m], c + m*width + xr[m]] around the observer's cell c. Cells in
        # row m are at least (|m|-1) cells away in z, so the run is trimmed to the columns
        # a disc of the leave radius can still reach (with a safety margin for rounding).
        m = np.arange(-reach, reach + 1, dtype=np.int64)
        gap = np.maximum(np.abs(m) - 1, 0) * cell_size
        half_chord = np.sqrt(np.maximum(leave * leave - gap * gap, 0.0))
        xr = np.minimum(np.ceil(half_chord / cell_size * (1 + 1e-7)), reach).astype(np.int64)
        self._row_lo = m * width - xr  # first cell of the run
        self._row_hi = m * width + xr + 1  # one past the last cell (index into cumulative starts)
        # The same neighbourhood as a stencil over cell offsets in (-ncells, ncells).
        self._stencil = None
        if self._ncells <= 1 << 22:
            self._stencil = np.zeros(2 * self._ncells + 1, dtype=bool)
            for lo_, hi_ in zip(self._row_lo.tolist(), self._row_hi.tolist()):
                self._stencil[self._ncells + lo_ : self._ncells + hi_] = True
        self._r2 = self.radius * self.radius
        self._l2 = leave * leave
        # Packed keys of the hysteresis memory: slot in the low slot_bits, observer index above.
        slot_bits = max(1, (capacity - 1).bit_length())
        self._obs_shift32 = np.uint32(slot_bits)
        #: Largest number of observers one update accepts (observer indices are packed).
        self.max_observers = 1 << (32 - slot_bits)
        #: Target number of candidate pairs per block (keeps a block's temporaries in cache).
        self.block_candidates = 1 << 16
        #: Largest direct-address table (bytes) for the hysteresis lookup of one block;
        #: beyond it (or for very few lookups) a binary search is used instead.
        self.table_limit = 1 << 23
        #: The neighbourhood lists of observer cells come from an (observer cell x entity)
        #: membership table when its size is at most this many times the lists' total
        #: length (few cells, dense); otherwise from one sort.
        self.mask_factor = 8

        # Hysteresis memory from the previous update.
        self._prev_slots = _EMPTY_I64  # the previous answer's slots (CSR over its observers)
        self._prev_high = _EMPTY_U32  # sorted (prev observer index << slot_bits | slot), uint32
        self._prev_index = np.full(capacity, -1, dtype=np.int64)  # observer slot -> prev index
        self._prev_observers = _EMPTY_I64
        self._prev_offsets = np.zeros(1, dtype=np.int64)
        self._prev_gen: np.ndarray | None = None
        self._forgot = False

        #: Number of (observer, entity) candidate pairs whose distance was computed by the
        #: last ``update`` (grows with entities near each observer, not entities × observers;
        #: when all are in view of all, it is entities × observers, the size of the answer).
        self.last_candidates_examined = 0
        #: Number of observers the last ``update`` answered with no distance filter and no
        #: hysteresis lookup: everyone when all are in view of all, else the observers of
        #: blocks whose candidates were all within ``radius``.
        self.last_unfiltered_observers = 0

    def forget(self, slot: int) -> None:
        """Drop the hysteresis memory of observer ``slot`` (call when its owner leaves)."""
        self._prev_index[int(slot)] = -1
        self._forgot = True

    def reset(self) -> None:
        """Drop all hysteresis memory."""
        self._prev_index.fill(-1)
        self._prev_high = _EMPTY_U32
        self._prev_slots = _EMPTY_I64
        self._prev_observers = _EMPTY_I64
        self._prev_offsets = np.zeros(1, dtype=np.int64)
        self._prev_gen = None

    def _cells(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Padded cell index of each (x, z); out-of-bounds goes to the border cells."""
        top = self.cells_per_axis - 1
        reach = self.reach
        # fmax/fmin (unlike clip) turn NaN into a valid cell; such entities fail every
        # distance test anyway.
        cx = (x + self.half_extent) * self._inv_cell
        np.fmin(np.fmax(cx, 0.0, out=cx), top, out=cx)
        cz = (z + self.half_extent) * self._inv_cell
        np.fmin(np.fmax(cz, 0.0, out=cz), top, out=cz)
        ix = cx.astype(np.int64)
        iz = cz.astype(np.int64)
        iz += reach
        iz *= self._width
        ix += reach
        iz += ix
        return iz

    def update(self, pos: np.ndarray, alive: np.ndarray, observers, *,
               generation: np.ndarray | None = None) -> Visibility:
        """Compute visibility for ``observers`` (slots, unique) and remember it for hysteresis.

        ``pos`` (capacity, 3) positions (x, y, z; only x and z matter), ``alive`` (capacity,)
        bool. Dead observers get an empty segment; dead entities are never seen.
        ``generation`` (capacity,) optional, see the class docstring.
        """
        cap = self.capacity
        observers = np.array(observers, dtype=np.int64).reshape(-1)  # own copy
        k = len(observers)
        if k > self.max_observers:
            raise ValueError(f"at most {self.max_observers} observers")
        if k and (observers.min() < 0 or observers.max() >= cap):
            raise IndexError("observer slot out of range")
        if pos.shape[0] != cap or alive.shape[0] != cap:
            raise ValueError("pos and alive must have length capacity")

        # --- hysteresis: previous index of each observer (-1: no memory)
        prev_idx = self._prev_index[observers]
        changed = None
        if generation is not None and self._prev_gen is not None:
            changed = generation != self._prev_gen
            if changed.any():
                prev_idx[changed[observers]] = -1
            else:
                changed = None
        identity = (not self._forgot and changed is None
                    and np.array_equal(observers, self._prev_observers))

        # --- alive entities, by rank (rank order is slot order), binned into cells
        ent = np.flatnonzero(alive)
        n = len(ent)
        live = np.flatnonzero(alive[observers])  # output indices of the alive observers
        counts = np.zeros(k, dtype=np.int64)
        self.last_candidates_examined = 0
        self.last_unfiltered_observers = 0
        if n and len(live):
            ex = pos[ent, 0].astype(np.float64, copy=False)  # distances in float64
            ez = pos[ent, 2].astype(np.float64, copy=False)
            orank = np.searchsorted(ent, observers[live])  # an alive observer is an entity
            with np.errstate(invalid="ignore"):  # inf - inf for non-finite positions
                every = self._everyone(ent, ex, ez, orank)
                if every is not None:  # everyone sees everyone: one list, tiled
                    slots, dist2 = every
                    counts[live] = n
                else:
                    lists = self._cell_lists(ex, ez, orank)
                    slots, dist2, counts[live] = self._filtered(
                        lists, ent, live, ex, ez, orank, prev_idx, changed, identity)
        else:
            slots = np.zeros(0, dtype=np.int64)
            dist2 = np.zeros(0, dtype=np.float32)

        # --- the CSR answer; remember it for the next update
        offsets = np.zeros(k + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        self._prev_index[self._prev_observers] = -1
        self._prev_index[observers] = np.arange(k)
        self._prev_observers = observers
        self._prev_slots = slots
        self._prev_high = None  # packed from slots when the next update needs it
        self._prev_offsets = offsets
        self._prev_gen = None if generation is None else np.array(generation, dtype=np.int64)
        self._forgot = False
        for arr in (observers, offsets, slots, dist2):
            arr.flags.writeable = False  # observers/offsets/slots are also kept as memory
        return Visibility(observers=observers, offsets=offsets, slots=slots, dist2=dist2)

    def _box_within(self, lxmin, lxmax, lzmin, lzmax, oxmin, oxmax, ozmin, ozmax):
        """Is every point of box l within ``radius`` of every point of box o?

        Exact for the per-pair test: the float64 subtraction, squaring and sum are monotone,
        so a pair's computed squared distance never exceeds the one of the box corners.
        NaN or infinite bounds answer False (np.maximum propagates NaN).
        """
        dx = np.maximum(lxmax - oxmin, oxmax - lxmin)
        dz = np.maximum(lzmax - ozmin, ozmax - lzmin)
        dx *= dx
        dz *= dz
        dx += dz
        return dx <= self._r2

    def _everyone(self, ent, ex, ez, orank):
        """Every alive observer sees every alive entity: (slots, dist2) of all pairs, or None
        unless every entity is within ``radius`` of every observer."""
        ox = ex[orank]
        oz = ez[orank]
        if not self._box_within(ex.min(), ex.max(), ez.min(), ez.max(),
                                ox.min(), ox.max(), oz.min(), oz.max()):
            return None
        k, n = len(orank), len(ent)
        self.last_candidates_examined = k * n
        self.last_unfiltered_observers = k
        slots = np.tile(ent, k)
        dist2 = np.empty((k, n), dtype=np.float32)
        rows = max(1, self.block_candidates // n)  # rows of the distance table per step
        tx = np.empty((min(rows, k), n))
        tz = np.empty_like(tx)
        for a in range(0, k, rows):
            b = min(a + rows, k)
            dx = tx[: b - a]
            dz = tz[: b - a]
            np.subtract(ex, ox[a:b, None], out=dx)
            dx *= dx
            np.subtract(ez, oz[a:b, None], out=dz)
            dz *= dz
            np.add(dx, dz, out=dist2[a:b])
        return slots, dist2.reshape(-1)

    def _cell_lists(self, ex, ez, orank):
        """Group the alive observers by cell; for each such cell, the alive entities of its
        neighbourhood sorted by slot (as ranks, with their positions as complex numbers)."""
        n = len(ex)
        ecell = self._cells(ex, ez)
        ucell, uinv = np.unique(ecell[orank], return_inverse=True)
        ncell = len(ucell)
        # A dense table of cell starts costs ~ncells cheap steps; binary searches cost ~30x
        # more each, two per row of cells per observer cell. Pick the cheaper.
        order = None
        if self._ncells <= max(1 << 16, 16 * ncell * len(self._row_lo)):
            start = np.zeros(self._ncells + 1, dtype=np.int64)
            np.cumsum(np.bincount(ecell, minlength=self._ncells), out=start[1:])
            lo = start[ucell[:, None] + self._row_lo]
            lens = start[ucell[:, None] + self._row_hi]
        else:  # many more cells than entities: search the sorted cells instead
            order = np.argsort(ecell)
            sorted_cell = ecell[order]
            lo = np.searchsorted(sorted_cell, ucell[:, None] + self._row_lo)
            lens = np.searchsorted(sorted_cell, ucell[:, None] + self._row_hi)
        lens -= lo
        size = lens.sum(axis=1)  # >= 1: an observer's own cell holds at least itself
        total = int(size.sum())
        if self._stencil is not None and ncell * n <= self.mask_factor * total:
            # Few cells, dense: an (observer cell x entity) membership table from the
            # neighbourhood's stencil of cell offsets; its nonzeros are the lists, already
            # in (observer cell, rank) order.
            # In chunks of observer cells: the table's temporaries stay small (and in cache).
            rank = np.empty(total, dtype=np.int64)
            shifted = ecell + self._ncells
            step = max(1, self.block_candidates // n)
            done = 0
            for a in range(0, ncell, step):
                b = min(a + step, ncell)
                offset = shifted[None, :] - ucell[a:b, None]
                hit = np.flatnonzero(self._stencil[offset])
                hit -= np.repeat(np.arange(0, (b - a) * n, n, dtype=np.int64), size[a:b])
                rank[done : done + len(hit)] = hit
                done += len(hit)
        else:
            # Range expansion of the runs (cell-sorted order), then one sort by (cell, rank).
            if order is None:
                order = np.argsort(ecell)
            lo = lo.ravel()
            lens = lens.ravel()
            ends = np.cumsum(lens)
            rank = np.repeat(lo - (ends - lens), lens)
            rank += np.arange(total, dtype=np.int64)
            rank = order[rank]
            rbits = max(1, (n - 1).bit_length())
            dt = np.uint32 if ncell << rbits <= 1 << 32 else np.uint64
            key = np.repeat(np.arange(ncell, dtype=dt) << dt(rbits), size)
            np.bitwise_or(key, rank, out=key, casting="unsafe")
            key.sort()
            rank = np.bitwise_and(key, dt((1 << rbits) - 1), dtype=np.int64, casting="unsafe")
        first = np.cumsum(size) - size
        lpos = np.empty(total, dtype=np.complex128)
        lpos.real = ex[rank]
        lpos.imag = ez[rank]
        return uinv, size, first, lpos, rank

    def _filtered(self, lists, ent, live, ex, ez, orank, prev_idx, changed, identity):
        """(slots, dist2, counts) of the alive observers ``live`` (output indices), each
        filtering its cell's list, in cache-sized blocks of whole observers."""
        uinv, size, first, lpos, lrank = lists
        olen = size[uinv]
        ofirst = first[uinv]
        opos = np.empty(len(live), dtype=np.complex128)
        opos.real = ex[orank]
        opos.imag = ez[orank]
        lslot = ent[lrank]
        ocum = np.cumsum(olen)
        total = int(ocum[-1])
        self.last_candidates_examined = total
        nlive = len(live)
        nblocks = max(1, -(-total // self.block_candidates))
        bounds = [0, nlive]
        if nblocks > 1:
            cuts = np.searchsorted(ocum, np.arange(1, nblocks) * (total / nblocks))
            bounds = [0, *np.unique(cuts).tolist(), nlive]
        out_slots = np.empty(total, dtype=np.int64)  # upper bound: every candidate kept
        out_d2 = np.empty(total, dtype=np.float32)
        counts = np.empty(nlive, dtype=np.int64)
        ctx = (olen, ofirst, opos, lpos, lslot, live, prev_idx, changed, identity)
        used = 0
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b > a:
                used += self._block(a, b, ctx, out_slots[used:], out_d2[used:], counts[a:b])
        return out_slots[:used], out_d2[:used], counts

    def _block(self, a, b, ctx, out_slots, out_d2, counts) -> int:
        """Write the pairs seen by alive observers a..b-1 (indices into ``live``) to the
        start of ``out_slots``/``out_d2`` and their counts to ``counts``; return how many."""
        olen, ofirst, opos, lpos, lslot, live, prev_idx, changed, identity = ctx
        lens = olen[a:b]
        ends = np.cumsum(lens)
        starts = ends - lens
        total = int(ends[-1])
        # Range expansion: candidate j of observer i is list entry ofirst[i] + (j - starts[i]).
        idx = np.repeat(ofirst[a:b] - starts, lens)
        idx += np.arange(total, dtype=np.int64)
        # Squared XZ distances, positions as complex numbers (one gather, one subtract).
        diff = lpos[idx]
        diff -= np.repeat(opos[a:b], lens)
        re = diff.real
        im = diff.imag
        d2 = re * re
        im *= im
        d2 += im
        slot = lslot[idx]
        if d2.max() <= self._r2:  # every candidate within the radius: all seen (NaN: no)
            out_slots[:total] = slot
            out_d2[:total] = d2
            counts[:] = lens
            self.last_unfiltered_observers += b - a
            return total
        keep = d2 <= self._l2
        # Hysteresis: pairs in the leave ring survive only if they were seen last time.
        ring = d2 > self._r2
        ring &= keep
        ring = np.flatnonzero(ring)
        if len(ring):
            who = live[a + np.searchsorted(ends, ring, side="right")]
            rslot = slot[ring].astype(np.uint32)
            high = who.astype(np.uint32) << self._obs_shift32
            high |= rslot
            seen = self._seen_before(high, rslot, prev_idx, changed, identity)
            keep[ring[~seen]] = False
        kept = np.flatnonzero(keep)  # one scan, then two gathers (cheaper than two masks)
        m = len(kept)
        np.take(slot, kept, out=out_slots[:m])
        np.take(d2, kept, out=out_d2[:m])
        counts[:] = np.add.reduceat(keep, starts, dtype=np.int64)
        return m

    def _prev_high_words(self) -> np.ndarray:
        """The previous update's pairs as sorted packed ``observer index << slot_bits | slot``
        (uint32), built from its slots on first use."""
        if self._prev_high is None:
            counts = np.diff(self._prev_offsets)
            high = np.repeat(np.arange(len(counts), dtype=np.uint32) << self._obs_shift32,
                             counts)
            np.bitwise_or(high, self._prev_slots, out=high, casting="unsafe")
            self._prev_high = high
        return self._prev_high

    def _seen_before(self, high, slot, prev_idx, changed, identity) -> np.ndarray:
        """Were these pairs (packed ``observer index << slot_bits | slot``) seen last time?"""
        prev = self._prev_high_words()
        if len(prev) == 0:
            return np.zeros(len(high), dtype=bool)
        sb = self._obs_shift32
        if identity:  # same observers in the same order: the packed keys compare directly
            query = high
            ask = None
            pi = high >> sb
        else:
            pi = prev_idx[high >> sb]
            ask = np.flatnonzero(pi >= 0)
            pi = pi[ask]
            query = pi.astype(np.uint32) << sb
            query |= slot[ask]
        found = np.zeros(len(query), dtype=bool)
        if len(query):
            # Only the previous keys of the previous observers involved are needed.
            pmin, pmax = int(pi.min()), int(pi.max())
            first = int(self._prev_offsets[pmin])
            last = int(self._prev_offsets[pmax + 1])
            if last > first:
                prev = prev[first:last]
                base = np.uint32(pmin) << sb
                size = (pmax - pmin + 1) << int(sb)
                if size <= self.table_limit and size <= 512 * len(query):
                    # Direct-address table: one scatter and one gather, no binary search.
                    table = np.zeros(size, dtype=bool)
                    table[prev - base] = True
                    found = table[query - base]
                else:
                    at = np.searchsorted(prev, query)
                    np.minimum(at, len(prev) - 1, out=at)
                    found = prev[at] == query
            if changed is not None:
                found &= ~changed[slot if ask is None else slot[ask]]
        if ask is None:
            return found
        hit = np.zeros(len(high), dtype=bool)
        hit[ask] = found
        return hit
