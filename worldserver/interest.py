"""Who sees whom: batched spatial interest over a uniform grid, with enter/leave hysteresis.

:meth:`InterestGrid.update` answers, for every observer at once, which alive entities it
sees: every alive entity within ``radius`` (XZ distance, the observer itself included), plus
every entity it saw at the previous update that is still within ``radius + leave_margin``.
The answer is a :class:`Visibility` in CSR form (one segment per observer, in the order the
observers were given, each segment sorted by slot).

The work is whole-array numpy with no Python loop over entities or observers: entities are
binned into grid cells and sorted by cell once; for every observer the rows of neighbouring
cells are contiguous runs of that sorted order, and the runs of all observers are expanded
into one candidate list (``np.repeat`` + ``arange``); distances are filtered in float64;
pairs in the leave ring are looked up in the previous update's packed (observer, entity)
keys (a direct-address table per block; binary search when that would be too big); one ``np.sort`` of packed 64-bit keys (observer index | slot | float32 distance
bits) yields segments, slots and distances together. The candidate pipeline runs in blocks
of a few hundred observers so its temporaries stay in cache (a loop over blocks, never over
observers). The cost grows with entities plus candidate pairs near the observers, never with
entities × observers (see :attr:`InterestGrid.last_candidates_examined`).

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
# Packed pair key, little-endian uint64. Low word: float32 squared distance bits. High word:
# observer index (position in the ``observers`` argument) << slot_bits | entity slot, where
# slot_bits = bits needed for capacity - 1. Sorting keys sorts pairs by (observer, slot).
_KEY = np.dtype("<u8")
_DROPPED = np.uint64(0xFFFF_FFFF_FFFF_FFFF)  # larger than any real key (float32 bits < 2**31)


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
    3×3 cells of leave-radius size (``cell_size=leave radius``) and is ~20 % faster overall.
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
        self._r2 = self.radius * self.radius
        self._l2 = leave * leave
        # Packed keys: slot in the low slot_bits of the high word, observer index above.
        slot_bits = max(1, (capacity - 1).bit_length())
        self._slot_mask = np.uint32((1 << slot_bits) - 1)
        self._obs_shift32 = np.uint32(slot_bits)
        self._obs_shift64 = np.uint64(32 + slot_bits)
        #: Largest number of observers one update accepts (observer indices are packed).
        self.max_observers = 1 << (32 - slot_bits)
        #: Target number of candidate pairs per block (keeps a block's temporaries in cache).
        self.block_candidates = 1 << 16
        #: Largest direct-address table (bytes) for the hysteresis lookup of one block;
        #: beyond it (or for very few lookups) a binary search is used instead.
        self.table_limit = 1 << 23

        # Hysteresis memory from the previous update.
        self._prev_high = _EMPTY_U32  # sorted (prev observer index << slot_bits | slot), uint32
        self._prev_index = np.full(capacity, -1, dtype=np.int64)  # observer slot -> prev index
        self._prev_observers = _EMPTY_I64
        self._prev_offsets = np.zeros(1, dtype=np.int64)
        self._prev_gen: np.ndarray | None = None
        self._forgot = False

        #: Number of (observer, entity) candidate pairs whose distance was computed by the
        #: last ``update`` (grows with entities near each observer, not entities × observers).
        self.last_candidates_examined = 0

    def forget(self, slot: int) -> None:
        """Drop the hysteresis memory of observer ``slot`` (call when its owner leaves)."""
        self._prev_index[int(slot)] = -1
        self._forgot = True

    def reset(self) -> None:
        """Drop all hysteresis memory."""
        self._prev_index.fill(-1)
        self._prev_high = _EMPTY_U32
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

        # --- bin alive entities and sort them by cell (entity-sized work)
        ent = np.flatnonzero(alive)
        ex = pos[ent, 0]
        ez = pos[ent, 2]
        ecell = self._cells(ex, ez)
        order = np.argsort(ecell)
        sorted_slot = ent[order].astype(np.uint32)
        spos = np.empty(len(ent), dtype=np.complex128)
        spos.real = ex[order]
        spos.imag = ez[order]

        # --- candidate runs: for each observer, 2*reach+1 rows of contiguous cells
        ox = pos[observers, 0]
        oz = pos[observers, 2]
        ocell = self._cells(ox, oz)
        ocpos = np.empty(k, dtype=np.complex128)
        ocpos.real = ox
        ocpos.imag = oz
        # A dense table of cell starts costs ~ncells cheap steps; binary searches cost ~30x
        # more each, two per row of cells per observer. Pick the cheaper.
        if self._ncells <= max(1 << 16, 16 * k * len(self._row_lo)):
            start = np.zeros(self._ncells + 1, dtype=np.int64)
            np.cumsum(np.bincount(ecell, minlength=self._ncells), out=start[1:])
            lo = start[ocell[:, None] + self._row_lo]
            lens = start[ocell[:, None] + self._row_hi]
        else:  # many more cells than entities: search the sorted cells instead
            sorted_cell = ecell[order]
            lo = np.searchsorted(sorted_cell, ocell[:, None] + self._row_lo)
            lens = np.searchsorted(sorted_cell, ocell[:, None] + self._row_hi)
        lens -= lo
        lens[~alive[observers]] = 0  # dead observers see nothing
        olen = lens.sum(axis=1)
        ocum = np.cumsum(olen)
        total = int(ocum[-1]) if k else 0
        self.last_candidates_examined = total

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
        ctx = (lo, lens, olen, ocpos, spos, sorted_slot, prev_idx, changed, identity)

        # --- pairs, in cache-sized blocks of whole observers (a loop over blocks, not over
        # observers: each block is hundreds of observers handled by whole-array calls).
        # Each block writes its sorted keys straight after the previous block's.
        out = np.empty(total, dtype=_KEY)  # upper bound: every candidate kept
        nblocks = max(1, -(-total // self.block_candidates))
        bounds = [0, k]
        if nblocks > 1:
            cuts = np.searchsorted(ocum, np.arange(1, nblocks) * (total / nblocks))
            bounds = [0, *np.unique(cuts).tolist(), k]
        used = 0
        with np.errstate(invalid="ignore"):  # inf - inf for non-finite positions
            for a, b in zip(bounds[:-1], bounds[1:]):
                if b > a:
                    used += self._block(a, b, ctx, out[used:])
        key = out[:used]

        # --- unpack the CSR answer and remember it for the next update
        offsets = np.empty(k + 1, dtype=np.int64)
        offsets[:k] = np.searchsorted(key, np.arange(k, dtype=_KEY) << self._obs_shift64)
        offsets[k] = len(key)
        high = key.view("<u4")[1::2]  # observer index << slot_bits | slot
        slots = np.bitwise_and(high, self._slot_mask, dtype=np.int64)
        dist2 = key.view("<f4")[0::2].copy()
        self._prev_index[self._prev_observers] = -1
        self._prev_index[observers] = np.arange(k)
        self._prev_observers = observers
        self._prev_high = high.copy()
        self._prev_offsets = offsets
        self._prev_gen = None if generation is None else np.array(generation, dtype=np.int64)
        self._forgot = False
        for arr in (observers, offsets, slots, dist2):
            arr.flags.writeable = False  # observers/offsets are also kept as memory
        return Visibility(observers=observers, offsets=offsets, slots=slots, dist2=dist2)

    def _block(self, a: int, b: int, ctx, out: np.ndarray) -> int:
        """Write the sorted packed keys of the pairs seen by observers a..b-1 to the start
        of ``out``; return how many."""
        lo, lens, olen, ocpos, spos, sorted_slot, prev_idx, changed, identity = ctx
        lo = lo[a:b].ravel()
        lens = lens[a:b].ravel()
        olen = olen[a:b]
        nonempty = np.flatnonzero(lens)
        lo = lo[nonempty]
        lens = lens[nonempty]
        ends = np.cumsum(lens)
        total = int(ends[-1]) if len(ends) else 0
        if total == 0:
            return 0
        # Range expansion: candidate j of run r is sorted entity lo[r] + (j - first[r]).
        idx = np.repeat(lo - (ends - lens), lens)
        idx += np.arange(total, dtype=np.int64)
        # Squared XZ distances, positions as complex numbers (one gather, one subtract).
        diff = spos[idx]
        diff -= np.repeat(ocpos[a:b], olen)
        re = diff.real
        im = diff.imag
        d2 = re * re
        im *= im
        d2 += im
        near = np.flatnonzero(d2 <= self._l2)
        d2 = d2[near]
        obits = np.repeat(np.arange(a, b, dtype=np.uint32) << self._obs_shift32, olen)[near]
        slot = sorted_slot[idx[near]]
        # Packed key: float32 distance bits | (observer index << slot_bits | slot) << 32.
        key = out[: len(near)]
        key.view("<f4")[0::2] = d2
        high = key.view("<u4")[1::2]
        np.bitwise_or(obits, slot, out=high)
        # Hysteresis: pairs in the leave ring survive only if they were seen last time.
        # Dropped pairs get the largest key, sort to the end and are cut off.
        ring = np.flatnonzero(d2 > self._r2)
        dropped = 0
        if len(ring):
            seen = self._seen_before(high[ring], slot[ring], prev_idx, changed, identity)
            drop = ring[~seen]
            dropped = len(drop)
            key[drop] = _DROPPED
        key.sort()
        return len(key) - dropped

    def _seen_before(self, high, slot, prev_idx, changed, identity) -> np.ndarray:
        """Were these pairs (packed ``observer index << slot_bits | slot``) seen last time?"""
        prev = self._prev_high
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
