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

The work is whole-array numpy over all avatars at once, with no Python loop over avatars or
pairs: a uniform grid of cell ``leave_radius`` (avatars sorted by cell key; each one's
candidates are two runs of that order, its own column's cells ``cz .. cz+1`` and the next
column's ``cz-1 .. cz+1``, expanded with ``repeat``/``arange``), so the pairs come out sorted;
squared distances in one array operation (float64); the hysteresis as a binary search of the
ring's pairs among the last update's links, translated into that update's grid order, where
they are already sorted (no sort of pairs); connected components by hooking and pointer
jumping; the id rule as sorts of the (component, old group) shares; and the changes as a
diff of each avatar's group code before and now. Python loops run only over the zones and
the groups that changed. Cost: ``tools/bench/calls_bench.py`` and docs/benchmarks.md.

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
_COLUMN = 1 << 32  # cell key step from column cx to cx + 1


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
        # The last update: its avatars (sorted ids), each one's group code (-1: none; a removal
        # sets it to -1) and its place in the order the grid sorted the free avatars in (-1:
        # not free), and the links as keys a * m + b of places (a < b, m free avatars), sorted
        # as the grid made them.
        self._sid = _EMPTY
        self._code = _EMPTY
        self._place = _EMPTY
        self._link_keys = _EMPTY
        self._link_m = 1
        self._last_in = _EMPTY  # the last ids given, and the order that sorts them
        self._last_order = _EMPTY
        self._removed: set[int] = set()
        self._pending_left: list[tuple[int, int]] = []  # (code, id) of removed avatars

    # -- reading the state --------------------------------------------------------------------
    def _name(self, code: int) -> str:
        return f"zone:{self.zones[code].id}" if code < self._nz else f"p{code - self._nz}"

    def groups(self) -> dict[str, tuple[int, ...]]:
        """Every group now (after the last update and any removal since): id -> members."""
        grouped = self._code >= 0
        by_code = _by_code(self._code[grouped], self._sid[grouped])
        return dict(sorted((self._name(c), members) for c, members in by_code.items()))

    def group_of(self, entity_id: int) -> str | None:
        """The group ``entity_id`` is in now, or None."""
        i = int(np.searchsorted(self._sid, entity_id))
        if i < len(self._sid) and self._sid[i] == entity_id and self._code[i] >= 0:
            return self._name(int(self._code[i]))
        return None

    # -- changing it ----------------------------------------------------------------------------
    def remove(self, entity_id: int) -> None:
        """Drops ``entity_id`` at once (left the world, muted, kicked): it is in no group and
        has no links now, the next update reports it as left and ignores it if given."""
        eid = int(entity_id)
        self._removed.add(eid)
        r = int(np.searchsorted(self._sid, eid))
        if r == len(self._sid) or self._sid[r] != eid:
            return
        if self._code[r] >= 0:
            self._pending_left.append((int(self._code[r]), eid))
            self._code = self._code.copy()  # it may be shared with the last update's arrays
            self._code[r] = -1
        place = int(self._place[r])
        if place >= 0 and len(self._link_keys):
            keys, m = self._link_keys, self._link_m
            self._link_keys = keys[(keys // m != place) & (keys % m != place)]

    @property
    def link_count(self) -> int:
        """How many pairs are linked now (for benchmarks and tests)."""
        return len(self._link_keys)

    def update(self, ids, xy) -> list[Change]:
        """The groups of these avatars now: ``ids`` int64 ``(n,)`` (unique, any order), ``xy``
        float ``(n, 2)`` metres (x, z). Returns the changes since the last update.
        ValueError for arrays of the wrong shape or type, or an id given twice."""
        sid, x, z = self._input(ids, xy)
        n = len(sid)
        same = n == len(self._sid) and np.array_equal(sid, self._sid)  # the same avatars as last time
        if same:
            before_code, before_place = self._code, self._place
        else:  # each avatar's code and place last time (-1: not there)
            pn = len(self._sid)
            i = np.searchsorted(self._sid, sid)
            i[i == pn] = 0
            there = self._sid[i] == sid if pn else np.zeros(n, dtype=bool)
            before_code = np.where(there, self._code[i] if pn else -1, -1)
            before_place = np.where(there, self._place[i] if pn else -1, -1)
        code = np.full(n, -1, dtype=np.int64)
        free = self._zone_codes(x, z, code)
        lo, hi, place = self._links(n, x, z, free, before_place)
        if len(lo):
            label = _components(n, lo, hi)
            linked = np.zeros(n, dtype=bool)
            linked[lo] = True
            linked[hi] = True
            nodes = np.flatnonzero(linked)
            code[nodes] = self._proximity_codes(linked, nodes, label, before_code[nodes])
        changes = self._diff(sid, code, before_code, same)
        self._sid, self._code, self._place = sid, code, place
        return changes

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
        if len(ids) == len(self._last_in) and np.array_equal(ids, self._last_in):
            order = self._last_order  # the same ids in the same order as last time (checked then)
            sid = ids[order]
        else:
            order = np.argsort(ids, kind="stable")
            sid = ids[order]
            dup = np.flatnonzero(sid[1:] == sid[:-1])
            if len(dup):
                raise ValueError(f"ids: entity id {int(sid[dup[0]])} is given twice")
            self._last_in, self._last_order = ids.copy(), order
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

    def _links(self, n, x, z, free, before_place) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The links among the ``free`` avatars of ``n`` as two arrays of ranks (indices into
        the sorted input), and each avatar's place in the grid's order now (-1: not free);
        stores the links for the next update's hysteresis.

        Pairs come from :func:`_near_pairs` as places in the grid's order, sorted. A pair in
        the ring (farther than ``radius``) is looked up among the last update's links by its
        places in *that* update's order (``before_place``), where those links are already
        sorted: no sort of pairs at any update."""
        m = len(free)
        place_rank, a, b, d2 = _near_pairs(x[free] if m < n else x, z[free] if m < n else z,
                                           self._inv_cell, self._l2)
        if m < n:
            place_rank = free[place_rank]
        linked = d2 <= self._r2
        if len(self._link_keys) and not linked.all():
            ring = np.flatnonzero(~linked)
            was = before_place[place_rank]  # each place's place last time
            pa, pb = was[a[ring]], was[b[ring]]
            query = np.minimum(pa, pb) * self._link_m + np.maximum(pa, pb)
            j = np.searchsorted(self._link_keys, query)
            j[j == len(self._link_keys)] = 0
            linked[ring] = (self._link_keys[j] == query) & (pa >= 0) & (pb >= 0)
        keep = np.flatnonzero(linked)
        a, b = a[keep], b[keep]
        place = np.full(n, -1, dtype=np.int64)
        place[place_rank] = np.arange(m)
        self._link_keys, self._link_m = a * max(m, 1) + b, max(m, 1)
        return place_rank[a], place_rank[b], place

    def _proximity_codes(self, linked, nodes, label, old) -> np.ndarray:
        """Group codes for the linked avatars ``nodes`` (ranks; ``label``: each avatar's
        component as the rank of its smallest member; ``old``: their codes last time), by the
        stable-id rule."""
        root = linked & (label == np.arange(len(linked)))
        comp = (np.cumsum(root) - 1)[label[nodes]]  # components numbered by their smallest member
        ncomp = int(root.sum())
        comp_code = np.full(ncomp, -1, dtype=np.int64)
        had = np.flatnonzero(old >= self._nz)
        if len(had) == len(nodes) and ncomp:
            # The usual case first: every member was in a proximity group, each component's
            # members in one and the same, and no two components in the same one. Then each
            # component keeps its group (its only share, claimed by nobody else).
            low = np.full(ncomp, np.iinfo(np.int64).max)
            high = np.full(ncomp, -1)
            np.minimum.at(low, comp, old)
            np.maximum.at(high, comp, old)
            if np.array_equal(low, high):
                kept = np.sort(low)
                if (kept[1:] != kept[:-1]).all():
                    return low[comp]
        if len(had):
            # Shares: how many members of component c were in old group o (runs of sorted pairs).
            pair_c, pair_o = comp[had], old[had] - self._nz
            span = self._next
            if ncomp * span < 2**62:
                key = np.sort(pair_c * span + pair_o)
                starts = _run_starts(key)
                pc, po = key[starts] // span, key[starts] % span
            else:  # a counter too large to pack (never in practice)
                order = np.lexsort((pair_o, pair_c))
                pair_c, pair_o = pair_c[order], pair_o[order]
                starts = _run_starts(pair_c, pair_o)
                pc, po = pair_c[starts], pair_o[starts]
            share = np.diff(np.append(starts, len(pair_c)))
            # Each component's best old group: the largest share, then the smaller number.
            order = np.lexsort((po, -share, pc))
            pc, po, share = pc[order], po[order], share[order]
            best = _run_starts(pc)
            pc, po, share = pc[best], po[best], share[best]
            # Each old group goes to the component with the largest share, then the smaller one.
            order = np.lexsort((pc, -share, po))
            pc, po = pc[order], po[order]
            win = _run_starts(po)
            comp_code[pc[win]] = po[win] + self._nz
        fresh = np.flatnonzero(comp_code < 0)
        comp_code[fresh] = self._nz + self._next + np.arange(len(fresh))
        self._next += len(fresh)
        return comp_code[comp]

    def _diff(self, sid, code, before, same) -> list[Change]:
        """The changes from the last update (``before``: each avatar's code then) to this one
        (``code``), with the removals since and the avatars no longer given."""
        pending, self._pending_left = self._pending_left, []
        self._removed.clear()
        moved = np.flatnonzero(before != code)
        join_c, join_id = code[moved], sid[moved]
        came = join_c >= 0
        went = before[moved] >= 0
        left_c, left_id = [before[moved][went]], [sid[moved][went]]
        if not same and len(self._sid):  # avatars in a group last time and not given now
            i = np.searchsorted(sid, self._sid)
            i[i == len(sid)] = 0
            gone = (self._code >= 0) & ((sid[i] != self._sid) if len(sid) else True)
            left_c.append(self._code[gone])
            left_id.append(self._sid[gone])
        if pending:
            left_c.append(np.array([c for c, _ in pending], dtype=np.int64))
            left_id.append(np.array([e for _, e in pending], dtype=np.int64))
        joined = _by_code(join_c[came], join_id[came])
        left = _by_code(np.concatenate(left_c), np.concatenate(left_id))
        if not joined and not left:
            return []
        affected = sorted(set(joined) | set(left))
        if len(affected) <= 4:
            members = {c: tuple(sid[code == c].tolist()) for c in affected}
        else:
            mine = np.isin(code, np.array(affected, dtype=np.int64))
            members = _by_code(code[mine], sid[mine])
        changes = [Change(self._name(c), joined.get(c, ()), left.get(c, ()), members.get(c, ())) for c in affected]
        changes.sort(key=lambda ch: ch.group)
        return changes


def _by_code(codes: np.ndarray, ids: np.ndarray) -> dict[int, tuple[int, ...]]:
    """code -> sorted ids, from (code, id) pairs."""
    if not len(codes):
        return {}
    order = np.lexsort((ids, codes))
    codes, ids = codes[order], ids[order]
    starts = _run_starts(codes)
    bounds = np.append(starts, len(codes)).tolist()
    id_list = ids.tolist()
    return {c: tuple(id_list[s:e]) for c, s, e in zip(codes[starts].tolist(), bounds, bounds[1:])}


def _run_starts(*keys: np.ndarray) -> np.ndarray:
    """Where each run of equal values (of all ``keys`` together) begins in sorted arrays."""
    first = np.empty(len(keys[0]), dtype=bool)
    if len(first):
        first[0] = True
        np.not_equal(keys[0][1:], keys[0][:-1], out=first[1:])
        for k in keys[1:]:
            first[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(first)


def _near_pairs(x: np.ndarray, z: np.ndarray, inv_cell: float, limit2: float):
    """The pairs of points at most ``sqrt(limit2)`` apart (``inv_cell`` at most its inverse).
    Returns ``order`` (the points in grid order: each place's index into x), the pairs as
    places ``a < b``, sorted by (a, b), and their squared distances. Few points: every pair is
    looked at; else the grid of :func:`_candidate_pairs`. Distances in float64 (the points as
    complex numbers: one gather a side)."""
    m = len(x)
    p = np.empty(m, dtype=np.complex128)
    p.real, p.imag = x, z
    if m <= _SMALL:
        order = np.arange(m)
        a, b = np.triu_indices(m, 1)
    else:
        order, a, b = _candidate_pairs(x, z, inv_cell)
        p = p[order]
    # In place where it can be: fewer fresh pages per update (each one a page fault).
    d = p[a]
    d -= p[b]
    sq = d.real
    np.multiply(sq, sq, out=sq)
    np.multiply(d.imag, d.imag, out=d.imag)
    d2 = np.add(sq, d.imag, out=sq)  # dx*dx + dz*dz, as the reference computes it
    near = np.flatnonzero(d2 <= limit2)
    return order, a[near], b[near], d2[near]


def _candidate_pairs(x: np.ndarray, z: np.ndarray, inv_cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points sorted by grid cell (``order``) and the pairs (``a < b``, positions in that
    order, sorted by (a, b)) in the same or neighbouring cells, each unordered pair once. Cells are keyed
    ``cx << 32 | cz`` and sorted, so a point's candidates are two runs of the sorted points:
    the rest of its cell with the next cell of its column (cz + 1), and the three cells
    cz - 1 .. cz + 1 of the next column (cx + 1)."""
    m = len(x)
    lim = float(_CELL_OFF - 2)
    cx = np.clip(np.floor(x * inv_cell), -lim, lim).astype(np.int64)
    cz = np.clip(np.floor(z * inv_cell), -lim, lim).astype(np.int64)
    key = ((cx + _CELL_OFF) << 32) | (cz + _CELL_OFF)
    order = np.argsort(key, kind="stable")
    skey = key[order]
    starts = _run_starts(skey)
    cells = skey[starts]
    bounds = np.append(starts, m)  # cell c holds sorted points bounds[c] .. bounds[c + 1]
    # Per cell: where its own run ends (after the next cell of the column, if there is one),
    # and the run of the next column.
    nxt = np.append(cells[1:] == cells[:-1] + 1, False)
    own_end = np.where(nxt, np.append(bounds[2:], m), bounds[1:])
    j0 = np.searchsorted(cells, cells + (_COLUMN - 1))
    j1 = np.searchsorted(cells, cells + (_COLUMN + 1), side="right")
    cell_of = np.repeat(np.arange(len(cells)), np.diff(bounds))
    pos = np.arange(m)
    begin = np.empty((m, 2), dtype=np.int64)
    count = np.empty((m, 2), dtype=np.int64)
    begin[:, 0] = pos + 1
    count[:, 0] = own_end[cell_of] - begin[:, 0]
    begin[:, 1] = bounds[j0][cell_of]
    count[:, 1] = bounds[j1][cell_of] - begin[:, 1]
    count = count.ravel()
    per_point = count[0::2] + count[1::2]
    total = int(per_point.sum())
    a = np.repeat(pos, per_point)
    skip = np.cumsum(count) - count - begin.ravel()  # run k starts at output index skip + begin
    b = np.arange(total)
    b -= np.repeat(skip, count)
    return order, a, b


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` nodes and edges (a, b): each node's label is the smallest
    node of its component. Rounds of hooking (the larger root of every edge between two trees
    pointed at the smaller one; of several, any) and pointer jumping until every tree is a
    star, whole arrays. A label only ever points to a smaller node of its component, so it
    ends; an edge inside one tree stays inside, so it is dropped from the later rounds."""
    label = np.arange(n)
    while True:
        la, lb = label[a], label[b]
        differ = np.flatnonzero(la != lb)
        if not len(differ):
            return label
        a, b, la, lb = a[differ], b[differ], la[differ], lb[differ]
        label[np.maximum(la, lb)] = np.minimum(la, lb)
        while True:
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
