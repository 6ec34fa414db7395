"""Group formation for proximity calls: positions and call zones in, groups and changes out.

:class:`GroupFormer` is the sans-IO core of docs/calls.md ("Group formation", the contract):
each :meth:`GroupFormer.update` takes the entity ids and floor positions (x, z) of the
avatars that may call now and returns the :class:`Change` of every group whose membership
changed since the last update, sorted by group id, each id tuple sorted.

* Two avatars are *linked* when at most ``radius`` apart, or when they were linked at the last
  update and are still at most ``leave_radius`` apart (hysteresis).
* A proximity group is a connected component of the links with two or more members; its id
  is ``p<n>`` (``n`` from a counter that only grows).
* An avatar inside a call zone (a world-file zone with ``call = true``, rectangle or circle,
  edges included; where call zones overlap, the first in the file) is in the group
  ``zone:<zone id>``, alone or not, and in no proximity group: links to it are ignored.
* Ids are stable: when components merge or split, each new component keeps the id of the old
  group it shares most members with (ties: the smaller ``n``, the older group) unless another
  component with a larger share of that group claimed it (equal shares: the component with
  the smallest member id); the others get new ids, in the order of their smallest member id.
* :meth:`GroupFormer.remove` drops an avatar at once (its group no longer lists it); the next
  update reports it as left and ignores it even if its id is given again (it can come back
  from the update after). Avatars simply missing from an update's ids have left too.
  Avatars whose position is not finite are in no group (as if not given).

The work is whole-array numpy over all avatars at once: a uniform grid of cell
``leave_radius`` (avatars sorted by cell key, each cell paired with itself and four of its
neighbours, the candidate pairs expanded with ``repeat``/``arange``), squared distances in one
array operation (float64), the hysteresis as a lookup of the ring's pairs among the previous
links (keys of sorted ranks), connected components by hooking and pointer jumping
(``np.minimum.at`` on labels, no loop over avatars), the id rule as two sorts of the
(component, old group) shares, and the changes as a diff of two sorted (id, group) arrays.
Python loops run only over the zones and over the groups that changed. Cost: see
``tools/bench/calls_bench.py`` and docs/benchmarks.md.

Must not: keep a clock, sleep, do I/O, log, import trio, mutate the arrays it is given, or know
about players, sessions, moderation or the network (the call service,
:mod:`worldserver.calls.service`, decides who may call and what to tell whom).
"""

from __future__ import annotations

import math
from typing import Iterable

import attrs
import numpy as np

__all__ = ["Change", "GroupFormer"]

_EMPTY = np.zeros(0, dtype=np.int64)
_CELL_OFF = 1 << 29  # cell coordinates are clipped to +-(2**29 - 2): a key is (cx+OFF) << 32 | (cz+OFF)
_SMALL = 48  # at most this many free avatars: every pair is a candidate (no grid)
# The cells a cell is paired with besides itself (each unordered pair of cells once).
_NEIGHBOURS = np.array([(1 << 32) - 1, 1 << 32, (1 << 32) + 1, 1], dtype=np.int64)  # (1,-1) (1,0) (1,1) (0,1)


@attrs.frozen
class Change:
    """One group's membership change: who came, who went and who is in it now (``members``
    empty: the group ended). Entity ids, each tuple sorted."""

    group: str
    joined: tuple[int, ...]
    left: tuple[int, ...]
    members: tuple[int, ...]


class GroupFormer:
    """Call groups from positions (docs/calls.md, "Group formation"); see the module docstring.

    ``zones``: world-file zones (:class:`worldserver.worldfile.Zone` or anything with ``id``,
    ``shape``, ``center``, ``size``, ``radius`` and ``call``); only those with ``call`` true are
    used, so a world's ``spec.zones`` can be passed as they are.
    """

    def __init__(self, radius: float, leave_radius: float, zones: Iterable = ()) -> None:
        radius, leave_radius = float(radius), float(leave_radius)
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
        if not (math.isfinite(leave_radius) and leave_radius >= radius):
            raise ValueError(f"leave_radius must be a finite number >= radius ({radius:g}), got {leave_radius!r}")
        self.radius = radius
        self.leave_radius = leave_radius
        self._r2 = radius * radius
        self._l2 = leave_radius * leave_radius
        self._inv_cell = 1.0 / leave_radius
        self.zones = tuple(z for z in zones if getattr(z, "call", False))
        ids = [z.id for z in self.zones]
        if len(set(ids)) != len(ids):
            raise ValueError("call zones: a zone id is used twice")
        for z in self.zones:
            if z.shape not in ("rect", "circle"):
                raise ValueError(f"call zone {z.id!r}: shape must be rect or circle, got {z.shape!r}")
        self._nz = len(self.zones)
        # Group codes: zone k is code k, proximity group p<n> is code nz + n; -1 is no group.
        self._next = 1  # n of the next new proximity group
        # The last update's answer: ids (sorted) of the avatars in a group and their codes.
        self._ids = _EMPTY
        self._codes = _EMPTY
        # The last update's links as id pairs, a < b.
        self._link_a = _EMPTY
        self._link_b = _EMPTY
        self._removed: set[int] = set()
        self._pending_left: list[tuple[int, int]] = []  # (code, id) of removed avatars

    # -- reading the state --------------------------------------------------------------------
    def name(self, code: int) -> str:
        return f"zone:{self.zones[code].id}" if code < self._nz else f"p{code - self._nz}"

    def groups(self) -> dict[str, tuple[int, ...]]:
        """Every group now (after the last update and any removal since): id -> members."""
        out: dict[str, tuple[int, ...]] = {}
        if len(self._ids):
            order = np.argsort(self._codes, kind="stable")
            codes, ids = self._codes[order], self._ids[order]
            starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
            for s, e in zip(starts.tolist(), np.r_[starts[1:], len(codes)].tolist()):
                out[self.name(int(codes[s]))] = tuple(ids[s:e].tolist())
        return dict(sorted(out.items()))

    def group_of(self, entity_id: int) -> str | None:
        """The group ``entity_id`` is in now, or None."""
        i = int(np.searchsorted(self._ids, entity_id))
        if i < len(self._ids) and self._ids[i] == entity_id:
            return self.name(int(self._codes[i]))
        return None

    # -- changing it ----------------------------------------------------------------------------
    def remove(self, entity_id: int) -> None:
        """Drops ``entity_id`` at once (left the world, muted, kicked): it is in no group and
        has no links now, the next update reports it as left and ignores it if given."""
        eid = int(entity_id)
        self._removed.add(eid)
        i = int(np.searchsorted(self._ids, eid))
        if i < len(self._ids) and self._ids[i] == eid:
            self._pending_left.append((int(self._codes[i]), eid))
            self._ids = np.delete(self._ids, i)
            self._codes = np.delete(self._codes, i)
        if len(self._link_a):
            keep = (self._link_a != eid) & (self._link_b != eid)
            self._link_a, self._link_b = self._link_a[keep], self._link_b[keep]

    def update(self, ids, xy) -> list[Change]:
        """The groups of these avatars now: ``ids`` int64 ``(n,)`` (unique, any order), ``xy``
        float ``(n, 2)`` metres (x, z). Returns the changes since the last update.
        ValueError for arrays of the wrong shape or type, or an id given twice."""
        sid, x, z = self._input(ids, xy)
        n = len(sid)
        code = np.full(n, -1, dtype=np.int64)
        free = self._zone_codes(x, z, code)
        lo, hi = self._links(sid, x, z, free)
        self._link_a, self._link_b = sid[lo], sid[hi]
        if len(lo):
            label = _components(n, lo, hi)
            nodes = np.unique(np.concatenate((lo, hi)))
            code[nodes] = self._proximity_codes(sid[nodes], label[nodes])
        grouped = code >= 0
        return self._diff(sid[grouped], code[grouped])

    # -- the steps ------------------------------------------------------------------------------
    def _input(self, ids, xy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checked input sorted by id, without removed avatars and non-finite positions."""
        ids = np.asarray(ids)
        xy = np.asarray(xy)
        if ids.ndim != 1:
            raise ValueError(f"ids must have shape (n,), got {ids.shape}")
        n = len(ids)
        if xy.shape != (n, 2) and not (n == 0 and xy.size == 0):
            raise ValueError(f"xy must have shape ({n}, 2) like ids, got {xy.shape}")
        if n == 0:
            return _EMPTY, np.zeros(0), np.zeros(0)
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be integers, got {ids.dtype}")
        if not (np.issubdtype(xy.dtype, np.floating) or np.issubdtype(xy.dtype, np.integer)):
            raise ValueError(f"xy must be numbers, got {xy.dtype}")
        ids = ids.astype(np.int64, copy=False)
        order = np.argsort(ids, kind="stable")
        sid = ids[order]
        dup = np.flatnonzero(sid[1:] == sid[:-1])
        if len(dup):
            raise ValueError(f"ids: entity id {int(sid[dup[0]])} is given twice")
        x = xy[order, 0].astype(np.float64)
        z = xy[order, 1].astype(np.float64)
        keep = np.isfinite(x) & np.isfinite(z)
        if self._removed:
            keep &= ~np.isin(sid, np.fromiter(self._removed, dtype=np.int64, count=len(self._removed)))
        if not keep.all():
            sid, x, z = sid[keep], x[keep], z[keep]
        return sid, x, z

    def _zone_codes(self, x: np.ndarray, z: np.ndarray, code: np.ndarray) -> np.ndarray:
        """Sets ``code`` of the avatars in a call zone (the first zone that holds them); returns
        the indices of the others."""
        if not self._nz or not len(x):
            return np.arange(len(x))
        taken = np.zeros(len(x), dtype=bool)
        for k, zone in enumerate(self.zones):
            cx, cz = float(zone.center[0]), float(zone.center[1])
            if zone.shape == "rect":
                inside = (np.abs(x - cx) <= zone.size[0] / 2) & (np.abs(z - cz) <= zone.size[1] / 2)
            else:
                inside = (x - cx) ** 2 + (z - cz) ** 2 <= float(zone.radius) ** 2
            inside &= ~taken
            code[inside] = k
            taken |= inside
        return np.flatnonzero(~taken)

    def _links(self, sid, x, z, free) -> tuple[np.ndarray, np.ndarray]:
        """The links among the ``free`` avatars: index pairs (lo < hi) into the sorted input."""
        a, b = _candidate_pairs(x[free], z[free], self._inv_cell)
        if not len(a):
            return _EMPTY, _EMPTY
        a, b = free[a], free[b]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        d2 = (x[lo] - x[hi]) ** 2 + (z[lo] - z[hi]) ** 2
        linked = d2 <= self._r2
        ring = np.flatnonzero(~linked & (d2 <= self._l2))
        if len(ring) and len(self._link_a):
            n = len(sid)
            ra = np.searchsorted(sid, self._link_a)
            rb = np.searchsorted(sid, self._link_b)
            ok = (ra < n) & (rb < n)
            ra, rb = ra[ok], rb[ok]
            ok = (sid[ra] == self._link_a[ok]) & (sid[rb] == self._link_b[ok])
            if ok.any():
                prev = ra[ok] * n + rb[ok]  # ids ascending, so ranks ascending: ra < rb
                linked[ring] = np.isin(lo[ring] * n + hi[ring], prev)
        return lo[linked], hi[linked]

    def _proximity_codes(self, node_ids: np.ndarray, node_label: np.ndarray) -> np.ndarray:
        """Group codes for the linked avatars (sorted ids, component labels = the rank of the
        component's smallest member), by the stable-id rule."""
        roots, comp = np.unique(node_label, return_inverse=True)  # components by smallest member id
        ncomp = len(roots)
        comp_code = np.full(ncomp, -1, dtype=np.int64)
        i = np.searchsorted(self._ids, node_ids)
        i[i >= len(self._ids)] = 0
        old = np.full(len(node_ids), -1, dtype=np.int64)
        if len(self._ids):
            hit = (self._ids[i] == node_ids) & (self._codes[i] >= self._nz)
            old[hit] = self._codes[i[hit]]
        had = old >= 0
        if had.any():
            # Shares: members of component c that were in old group o.
            pair_c, pair_o = comp[had], old[had]
            order = np.lexsort((pair_o, pair_c))
            pair_c, pair_o = pair_c[order], pair_o[order]
            first = np.r_[True, (pair_c[1:] != pair_c[:-1]) | (pair_o[1:] != pair_o[:-1])]
            starts = np.flatnonzero(first)
            share = np.diff(np.r_[starts, len(pair_c)])
            pc, po = pair_c[starts], pair_o[starts]
            # Each component's best old group: the largest share, then the smaller code.
            order = np.lexsort((po, -share, pc))
            pc, po, share = pc[order], po[order], share[order]
            best = np.r_[True, pc[1:] != pc[:-1]]
            pc, po, share = pc[best], po[best], share[best]
            # Each old group goes to the component with the largest share, then the smaller one.
            order = np.lexsort((pc, -share, po))
            pc, po = pc[order], po[order]
            win = np.r_[True, po[1:] != po[:-1]]
            comp_code[pc[win]] = po[win]
        fresh = np.flatnonzero(comp_code < 0)
        comp_code[fresh] = self._nz + self._next + np.arange(len(fresh))
        self._next += len(fresh)
        return comp_code[comp]

    def _diff(self, new_ids: np.ndarray, new_codes: np.ndarray) -> list[Change]:
        """The changes from the stored answer to this one (and the removals), then stores it."""
        old_ids, old_codes = self._ids, self._codes
        self._ids, self._codes = new_ids, new_codes
        pending, self._pending_left = self._pending_left, []
        self._removed.clear()
        # Each new member's old code (-1: was in none).
        before = np.full(len(new_ids), -1, dtype=np.int64)
        if len(old_ids) and len(new_ids):
            i = np.searchsorted(old_ids, new_ids)
            i[i >= len(old_ids)] = 0
            hit = old_ids[i] == new_ids
            before[hit] = old_codes[i[hit]]
        moved = before != new_codes
        gone = np.ones(len(old_ids), dtype=bool)
        if len(old_ids) and len(new_ids):
            j = np.searchsorted(new_ids, old_ids)
            j[j >= len(new_ids)] = 0
            gone = new_ids[j] != old_ids
        left_from = before[moved] >= 0
        join_c, join_id = new_codes[moved], new_ids[moved]
        left_c = np.concatenate((before[moved][left_from], old_codes[gone],
                                 np.array([c for c, _ in pending], dtype=np.int64)))
        left_id = np.concatenate((new_ids[moved][left_from], old_ids[gone],
                                  np.array([e for _, e in pending], dtype=np.int64)))
        if not len(join_c) and not len(left_c):
            return []
        joined = _by_code(join_c, join_id)
        left = _by_code(left_c, left_id)
        member_order = np.argsort(new_codes, kind="stable")  # ids stay sorted within a code
        mcodes, mids = new_codes[member_order], new_ids[member_order]
        changes = []
        for c in sorted(set(joined) | set(left)):
            s, e = np.searchsorted(mcodes, c), np.searchsorted(mcodes, c, side="right")
            changes.append(Change(self.name(c), joined.get(c, ()), left.get(c, ()), tuple(mids[s:e].tolist())))
        changes.sort(key=lambda ch: ch.group)
        return changes


def _by_code(codes: np.ndarray, ids: np.ndarray) -> dict[int, tuple[int, ...]]:
    """code -> sorted ids, for a few (code, id) pairs."""
    if not len(codes):
        return {}
    order = np.lexsort((ids, codes))
    codes, ids = codes[order], ids[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    return {int(codes[s]): tuple(ids[s:e].tolist()) for s, e in zip(starts.tolist(), ends.tolist())}


def _candidate_pairs(x: np.ndarray, z: np.ndarray, inv_cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (each unordered pair once) of points that may be within one cell of each
    other: same or neighbouring grid cells. Few points: every pair."""
    m = len(x)
    if m < 2:
        return _EMPTY, _EMPTY
    if m <= _SMALL:
        a, b = np.triu_indices(m, 1)
        return a.astype(np.int64), b.astype(np.int64)
    lim = float(_CELL_OFF - 2)
    cx = np.clip(np.floor(x * inv_cell), -lim, lim).astype(np.int64)
    cz = np.clip(np.floor(z * inv_cell), -lim, lim).astype(np.int64)
    key = ((cx + _CELL_OFF) << 32) | (cz + _CELL_OFF)
    order = np.argsort(key, kind="stable")
    skey = key[order]
    new_cell = np.r_[True, skey[1:] != skey[:-1]]
    starts = np.flatnonzero(new_cell)
    cells = skey[starts]
    ends = np.r_[starts[1:], m]
    cell_of = np.cumsum(new_cell) - 1  # each sorted point's cell
    # Per sorted point and per stencil entry: where its candidates begin and how many.
    begin = np.empty((5, m), dtype=np.int64)
    count = np.empty((5, m), dtype=np.int64)
    pos = np.arange(m)
    begin[0] = pos + 1  # the rest of its own cell
    count[0] = ends[cell_of] - pos - 1
    ncells = len(cells)
    for k, off in enumerate(_NEIGHBOURS, start=1):
        want = cells + off
        j = np.searchsorted(cells, want)
        j[j >= ncells] = ncells - 1
        found = cells[j] == want
        begin[k] = starts[j][cell_of]
        count[k] = np.where(found, ends[j] - starts[j], 0)[cell_of]
    count = count.ravel()
    total = int(count.sum())
    if not total:
        return _EMPTY, _EMPTY
    src = np.repeat(np.tile(pos, 5), count)
    first = np.cumsum(count) - count
    dst = np.arange(total) - np.repeat(first - begin.ravel(), count)
    return order[src], order[dst]


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` nodes and edges (a, b): each node's label is the smallest
    node of its component. Hooking (every root to the smallest root across its edges) and
    pointer jumping, whole arrays; labels only decrease, so it ends."""
    label = np.arange(n)
    while True:
        la, lb = label[a], label[b]
        differ = la != lb
        if not differ.any():
            return label
        la, lb = la[differ], lb[differ]
        low = np.minimum(la, lb)
        np.minimum.at(label, la, low)
        np.minimum.at(label, lb, low)
        while True:
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
