"""Encode once, send to many: the snapshots of every client of a tick, together.

The delta record of entity E against the state the world had at tick H is the same bytes for
every client that holds E as of H (SPEC 5.2: records are self-contained). So the server does
not keep the *values* of what each client holds but, per entity of each sent view, the tick
whose world state the client holds (:class:`HeldView`); the values are in a short history of
world states that every client shares. :func:`encode_many` then encodes, per tick, one record
table per held tick in use (every slot of the world at once: a few thousand rows each), one
table of added records, and builds every client's parts by *gathering*: which entities a
client keeps, adds and removes is one vectorized match of (client, id) keys over all clients;
the bytes of its records are copied from the shared tables with one numpy gather; bit masks
are packed per part on byte boundaries, and every part of every client is assembled in one
gather. Python loops run over clients, never over entities.

Clients that see the same entities against the same baseline (a hall where everyone sees
everyone, or neighbours sharing a view) get the same bytes but for ``input_ack`` and
``self_id``: one of each group is encoded and the others' parts are copies with those two
header fields written in.

A client whose snapshot needs more parts than it may receive this tick (its byte allowance)
gets a selection, vectorized over all such clients: removals first, then additions and
updates by priority bucket, highest first, in id order within a bucket, as many as fit. The
priority of an entity is ``min(63, floor(age * weight))`` where ``age`` is how many ticks old
the client's state of it is (an added entity counts as ``max_age``) and ``weight`` the
server's per-pair weight (nearer: larger); an entity ``force_age`` ticks old or older gets
bucket 64 and goes first. Unchosen updates keep their held tick, unchosen additions stay out.
This is :func:`protocol.snapshot.encode_snapshot`'s rule with those integer priorities, and
the parts are byte for byte what it produces (tests hold the two together).

Stateless; no I/O. The caller keeps the history for every held tick it passes in.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Union

import numpy as np

from protocol.snapshot import (
    MAX_ITEM_BITS,
    HEADER_SIZE,
    NONE32,
    Layout,
    View,
    _frozen,
    _layout,
    added_records,
    build_records,
    part_capacity_bits,
    state_size,
    zigzag,
)

_PART_DTYPE = np.dtype([
    ("tick", "<u4"), ("baseline_tick", "<u4"), ("input_ack", "<u4"), ("self_id", "<u4"), ("part", "u1"),
    ("parts", "u1"), ("first_id", "<u4"), ("last_id", "<u4"), ("R", "<u2"), ("A", "<u2"), ("K", "<u2"),
])  # fmt: skip  # PART_HEADER as a packed numpy record (SPEC 5.2)
_ACK_SELF = struct.Struct("<II")  # input_ack and self_id, at offset 8 of a part
TOP_BUCKET = 63  # priorities are integer buckets 0..63; 64 is "forced" (too old to wait)
FORCED = TOP_BUCKET + 1


class HeldView:
    """What the server knows a client holds after a tick: ``ids`` (uint32, ascending) and, per
    id, ``held`` (int64): the tick whose world state the client holds for that entity;
    ``oldest`` is the smallest held tick (``tick`` when empty). Treated as immutable."""

    __slots__ = ("tick", "ids", "held", "oldest")

    def __init__(self, tick: int, ids: np.ndarray, held: np.ndarray, oldest: int) -> None:
        self.tick = tick
        self.ids = ids
        self.held = held
        self.oldest = oldest

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"HeldView(tick={self.tick}, n={len(self.ids)}, oldest={self.oldest})"

    @property
    def exact(self) -> bool:
        """Every entity is held as of ``tick``."""
        return self.oldest == self.tick

    def values(self, history: Callable[[int], np.ndarray]) -> View:
        """The View (state values) the client holds, read from the world history."""
        q = np.empty((len(self.ids), 5), dtype=np.int32)
        slots = (self.ids >> 16).astype(np.int64)
        for h in np.unique(self.held).tolist():
            m = self.held == h
            q[m] = history(h)[slots[m]]
        return View(self.tick, self.ids, q)


class PairWeights:
    """Priority weights of (client, entity) pairs as a table: the weight of entity slot ``s``
    for client ``c`` is ``table[rows[c], s]``. Clients with the same row that see the same
    entities against the same baseline get the same selection, so they can share one
    encoding even when their allowance holds entities back."""

    __slots__ = ("_table", "_make", "rows")

    def __init__(self, table: np.ndarray | Callable[[], np.ndarray], rows: Sequence[int]) -> None:
        """``table`` may be a callable that makes it: it is then made on first use only."""
        self._table = None if callable(table) else table
        self._make = table if callable(table) else None
        self.rows = list(rows)

    @property
    def table(self) -> np.ndarray:
        if self._table is None:
            self._table = self._make()
        return self._table

    def subset(self, clients: Sequence[int]) -> "PairWeights":
        sub = PairWeights(self._table if self._table is not None else self._make, [self.rows[c] for c in clients])
        return sub

    def pairs(self, cc: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return self.table[np.asarray(self.rows, dtype=np.int64).take(cc), slots]


Weights = Union[np.ndarray, PairWeights, None]


class Snapshot:
    """One client's result: ``parts`` (payloads in order), ``view`` (what it holds after all
    parts), ``complete`` (everything in view is current), ``sent`` (entities whose state was
    sent), ``refreshed`` (entities in the view whose state is this tick's)."""

    __slots__ = ("parts", "view", "complete", "sent", "refreshed")

    def __init__(self, parts: list[bytes], view: HeldView, complete: bool, sent: int, refreshed: int) -> None:
        self.parts = parts
        self.view = view
        self.complete = complete
        self.sent = sent
        self.refreshed = refreshed


def _excl_cumsum(a: np.ndarray) -> np.ndarray:
    out = np.zeros(len(a) + 1, dtype=np.int64)
    np.cumsum(a, out=out[1:])
    return out


def _segment_cumsum(values: np.ndarray, seg: np.ndarray, nseg: int) -> np.ndarray:
    """Inclusive running sum of ``values`` within each segment (``seg`` non-decreasing)."""
    cum = np.cumsum(values, dtype=np.int64)
    seg_total = np.bincount(seg, weights=values, minlength=nseg).astype(np.int64)
    before = _excl_cumsum(seg_total)[:-1]
    return cum - before.take(seg)


def _pack_segments(flags: np.ndarray, seg: np.ndarray, nseg: int) -> tuple[bytes, np.ndarray]:
    """One bit per row, LSB first, each segment on its own bytes (like per-segment packbits).

    ``seg`` (non-decreasing) is each row's segment. Returns the bytes and each segment's
    start byte (nseg + 1 entries; segment s is ``[start[s], start[s] + ceil(count/8))``).
    """
    counts = np.bincount(seg, minlength=nseg)
    padded = (counts + 7) & ~7
    pstart = _excl_cumsum(padded)
    dest = np.arange(len(flags), dtype=np.int64) + np.repeat(pstart[:-1] - _excl_cumsum(counts)[:-1], counts)
    grid = np.zeros(int(pstart[-1]), dtype=bool)
    grid[dest] = flags
    return np.packbits(grid, bitorder="little").tobytes(), pstart >> 3


def priority_buckets(age: np.ndarray, weight: np.ndarray, force_age: int) -> np.ndarray:
    """The selection's integer priorities (see the module docstring)."""
    b = np.minimum(np.floor(age * weight), TOP_BUCKET).astype(np.int64)
    b[age >= force_age] = FORCED
    return b


def _encode_each(
    *,
    tick: int,
    state_ids: np.ndarray,
    state_q: np.ndarray,
    history: Callable[[int], np.ndarray],
    slots: np.ndarray,
    offsets: np.ndarray,
    baselines: Sequence[HeldView | None],
    input_acks: Sequence[int],
    self_ids: Sequence[int],
    part_budget: int,
    max_parts: Sequence[int],
    weights: Weights,
    max_age: int,
    force_age: int,
    layout: Layout,
) -> list[Snapshot]:
    """The snapshots of C clients, each gathered on its own; the arguments are ``encode_many``'s."""
    pdt, _ = _layout(layout)
    add_bits = 8 * (4 + state_size(pdt))
    cap_bits = part_capacity_bits(part_budget)
    C = len(baselines)
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    slots = np.asarray(slots, dtype=np.int64)
    cand_ids = _frozen(state_ids.take(slots))
    T = len(slots)
    clients = np.arange(C, dtype=np.int64)
    cc = np.repeat(clients, counts)

    # Match every candidate with its client's baseline: equal sets (the steady state of a
    # crowd) are checked first; otherwise one search over (client, id) keys.
    nb = np.fromiter((0 if b is None else len(b.ids) for b in baselines), dtype=np.int64, count=C)
    present = [b for b in baselines if b is not None and len(b.ids)]
    if present:
        bids = np.concatenate([b.ids for b in present])
        bheld = np.concatenate([b.held for b in present])
    else:
        bids = np.zeros(0, dtype=np.uint32)
        bheld = np.zeros(0, dtype=np.int64)
    bc = np.repeat(clients, nb)
    if len(bids) == T and T and np.array_equal(nb, counts) and np.array_equal(bids, cand_ids):
        inb = np.ones(T, dtype=bool)
        removed = np.zeros(T, dtype=bool)
        held = bheld
    elif len(bids):
        # Clients whose ids equal their baseline's (same count, same ids in order) match row
        # for row; the others through one search over (client, id) keys.
        boff = _excl_cumsum(nb)
        pos = np.zeros(T, dtype=np.int64)
        inb = np.zeros(T, dtype=bool)
        removed = np.ones(len(bids), dtype=bool)
        eq = nb == counts
        if eq.any():
            crow, brow = np.repeat(eq, counts), np.repeat(eq, nb)
            miss = cand_ids[crow] != bids[brow]
            if miss.any():
                eq[cc[crow][miss]] = False
                crow, brow = np.repeat(eq, counts), np.repeat(eq, nb)
            rows = np.flatnonzero(crow)
            owner = cc.take(rows)
            pos[rows] = rows - offsets.take(owner) + boff.take(owner)
            inb[rows] = True
            removed[brow] = False
        if not eq.all() and (~eq & (nb > 0)).any():
            rows = np.flatnonzero(~np.repeat(eq, counts))
            brows = np.flatnonzero(~np.repeat(eq, nb))
            ckey = (cc.take(rows).astype(np.uint64) << np.uint64(32)) | cand_ids.take(rows).astype(np.uint64)
            bkey = (bc.take(brows).astype(np.uint64) << np.uint64(32)) | bids.take(brows).astype(np.uint64)
            p = bkey.searchsorted(ckey)
            hit = bkey.take(p, mode="clip") == ckey
            pos[rows] = brows.take(p, mode="clip")
            inb[rows] = hit
            removed[brows.take(p[hit])] = False
        held = np.where(inb, bheld.take(pos, mode="clip"), tick)
    else:
        inb = np.zeros(T, dtype=bool)
        removed = np.zeros(0, dtype=bool)
        held = np.full(T, tick, dtype=np.int64)
    any_removed = bool(removed.any())
    all_kept = bool(inb.all())

    # How old each kept entity's held state is, and one record table per age in use.
    age = tick - held
    ages_used = np.flatnonzero(np.bincount(age, minlength=1)) if T else np.zeros(0, np.int64)
    nslots = len(state_ids)
    n_ages = int(ages_used.max()) + 1 if len(ages_used) else 1
    rec_len = np.zeros((n_ages, nslots), dtype=np.int64)
    rec_src = np.zeros((n_ages, nslots), dtype=np.int64)
    bufs, base = [], 0
    for a in ages_used.tolist():
        if a == 0:
            continue  # held as of this tick (or added): no delta
        buf, ln = build_records(zigzag(state_q, history(tick - a)))
        rec_len[a] = ln
        rec_src[a] = _excl_cumsum(ln)[:-1] + base
        bufs.append(buf)
        base += len(buf)
    rec_table = np.concatenate(bufs) if bufs else np.zeros(0, dtype=np.uint8)
    flat = age * nslots + slots
    rlen = rec_len.ravel().take(flat)  # 0 for added candidates (age 0)
    src = rec_src.ravel().take(flat)

    # Item costs and each client's total; who needs a selection.
    n_rem = np.bincount(bc[removed], minlength=C) if any_removed else np.zeros(C, dtype=np.int64)
    cbits = 1 + 8 * rlen if all_kept else np.where(inb, 1 + 8 * rlen, add_bits)
    cum_c = _excl_cumsum(cbits)
    tot_bits = cum_c.take(offsets[1:]) - cum_c.take(offsets[:-1]) + 32 * n_rem
    cap_part = cap_bits - MAX_ITEM_BITS
    maxp = np.maximum(np.asarray(max_parts, dtype=np.int64), np.maximum(-(-nb // cap_part), 1))
    sure = tot_bits <= maxp * cap_part  # fits whatever the cut
    sel = None  # candidates in the new view with their state sent or current (None: all)
    sel_rem = None  # removals sent (None: all)
    limited = np.zeros(C, dtype=bool)

    def items(sel, sel_rem):
        """Items of every client in (client, id) order: ids, owner, kind (0 removed, 1 added,
        2 kept), record length and source, slot, held tick, and whether it is current (a kept
        entity that did not change)."""
        if sel is None:
            k_ids, k_own, k_rlen, k_src, k_slot, k_held = cand_ids, cc, rlen, src, slots, held
            k_kind = np.full(T, 2, dtype=np.int8) if all_kept else np.where(inb, 2, 1).astype(np.int8)
            k_cur = inb & (rlen == 0)
        else:
            keep_c = sel | inb
            k_ids, k_own, k_src, k_slot, k_held = cand_ids[keep_c], cc[keep_c], src[keep_c], slots[keep_c], held[keep_c]
            k_kind = np.where(inb[keep_c], 2, 1).astype(np.int8)
            k_rlen = np.where(sel[keep_c], rlen[keep_c], 0)
            k_cur = (inb & (rlen == 0))[keep_c]
        if any_removed:
            # Removals (sent: kind 0) and unsent removals (kept, unchanged: kind 2).
            r_ids, r_own = bids[removed], bc[removed]
            r_key = (r_own.astype(np.uint64) << np.uint64(32)) | r_ids.astype(np.uint64)
            r_kind = np.zeros(len(r_ids), dtype=np.int8) if sel_rem is None else np.where(sel_rem[removed], 0, 2).astype(np.int8)
            at = ((k_own.astype(np.uint64) << np.uint64(32)) | k_ids.astype(np.uint64)).searchsorted(r_key)
            k_ids = np.insert(k_ids, at, r_ids)
            k_own = np.insert(k_own, at, r_own)
            k_kind = np.insert(k_kind, at, r_kind)
            k_rlen = np.insert(k_rlen, at, 0)
            k_src = np.insert(k_src, at, 0)
            k_slot = np.insert(k_slot, at, (r_ids >> 16).astype(np.int64))
            k_held = np.insert(k_held, at, bheld[removed])
            k_cur = np.insert(k_cur, at, False)
        return k_ids, k_own, k_kind, k_rlen, k_src, k_slot, k_held, k_cur

    def cut(k_own, k_kind, k_rlen, check):
        """Greedy cut (as protocol.snapshot.cut_parts) of every client at once, one round per
        part. Returns (part ends in client order, client of each part, parts per client,
        clients over their limit)."""
        if all_kept and sel is None:
            bits = 1 + 8 * k_rlen
        else:
            bits = np.where(k_kind == 2, 1 + 8 * k_rlen, np.where(k_kind == 1, add_bits, 32))
        cum = _excl_cumsum(bits)
        ioff = _excl_cumsum(np.bincount(k_own, minlength=C))
        start, stop = ioff[:-1].copy(), ioff[1:]
        limit = np.where(check, maxp, 255)
        nparts = np.zeros(C, dtype=np.int64)
        over = np.zeros(C, dtype=bool)
        ends, owners, rounds = [], [], []
        active = np.flatnonzero(start < stop)
        r = 0
        while len(active):
            e = np.minimum(cum.searchsorted(cum.take(start.take(active)) + cap_bits, side="right") - 1, stop.take(active))
            ends.append(e)
            owners.append(active)
            rounds.append(np.full(len(active), r))
            nparts[active] += 1
            start[active] = e
            over |= nparts > limit
            active = active[(start.take(active) < stop.take(active)) & ~over.take(active)]
            r += 1
        empty = np.flatnonzero(stop == ioff[:-1])  # no items: one part, empty
        nparts[empty] = 1
        ends.append(stop.take(empty))
        owners.append(empty)
        rounds.append(np.zeros(len(empty), dtype=np.int64))
        ends_a, own_a, rnd_a = np.concatenate(ends), np.concatenate(owners), np.concatenate(rounds)
        ok = ~over.take(own_a)
        order = np.lexsort((rnd_a[ok], own_a[ok]))
        return ends_a[ok][order], own_a[ok][order], nparts, np.flatnonzero(over)

    k = items(sel, sel_rem)
    seg_end_arr, seg_client, nparts, over = cut(k[1], k[2], k[3], ~sure)
    if len(over):
        # Selection for the clients over their allowance, vectorized over all of them.
        limited[over] = True
        lim_c = limited.take(cc)
        # Every baseline entity costs its update bit (unsent removals stay kept); a removal
        # sent costs 31 bits more. Removals first, in id order, as many as fit.
        left = maxp * cap_part - nb
        if any_removed:
            lim_r = removed & limited.take(bc)
            r_rank = _segment_cumsum(lim_r.astype(np.int64), bc, C)  # 1-based among removals
            k_rem = np.minimum(n_rem, np.maximum(left, 0) // 31)
            sel_rem = ~lim_r | (r_rank <= k_rem.take(bc))
            left = left - 31 * k_rem
        left = np.maximum(left, 0)
        extra = np.where(inb, 8 * rlen, add_bits)
        wants = lim_c & (extra > 0)
        if weights is None:
            w = np.ones(T)
        elif isinstance(weights, PairWeights):
            w = weights.pairs(cc, slots)
        else:
            w = np.asarray(weights, dtype=np.float64)
        bucket = priority_buckets(np.where(inb, age, max_age), w, force_age)
        # Per (client, bucket) costs, highest bucket first: the threshold bucket per client.
        NBK = FORCED + 1
        wb = np.where(wants, FORCED - bucket, NBK)  # 0 = highest; NBK = not wanted
        grid = np.bincount(cc[wants] * NBK + wb[wants], weights=extra[wants], minlength=C * NBK)
        grid = grid.reshape(C, NBK).astype(np.int64)
        above = np.cumsum(grid, axis=1) - grid  # cost of higher buckets
        fits_whole = np.cumsum(grid, axis=1) <= left[:, None]
        thr = fits_whole.sum(axis=1)  # buckets (from the top) that fit whole; the next is partial
        room = left - np.take_along_axis(above, np.minimum(thr, NBK - 1)[:, None], axis=1)[:, 0]
        cthr = thr.take(cc)
        in_thr = wants & (wb == cthr)
        run = _segment_cumsum(np.where(in_thr, extra, 0), cc, C)
        chosen = wants & ((wb < cthr) | (in_thr & (run <= room.take(cc))))
        # (run grows along the bucket, so the chosen ones are a prefix in id order.)
        sel = np.where(lim_c, chosen | (inb & (rlen == 0)), True)
        k = items(sel, sel_rem)
        seg_end_arr, seg_client, nparts, over2 = cut(k[1], k[2], k[3], limited)
        if len(over2):  # cannot happen: the costs above are upper bounds
            raise RuntimeError(f"selection left {len(over2)} clients over their allowance")
    k_ids, k_own, k_kind, k_rlen, k_src, k_slot, k_held, k_cur = k

    S = len(seg_end_arr)
    seg_start_arr = np.concatenate(([0], seg_end_arr[:-1])) if S else seg_end_arr
    seg = np.repeat(np.arange(S, dtype=np.int64), seg_end_arr - seg_start_arr)
    ids = k_ids

    # Sections, each in item order, with per-part counts (all numpy arrays of S entries).
    arec = 4 + state_size(pdt)
    kept_only = all_kept and sel is None and not any_removed
    zeros = np.zeros(S, dtype=np.int64)
    if kept_only:
        rem_bytes = add_bytes = b""
        n_rem_s = n_add_s = zeros
        kept_s = seg_end_arr - seg_start_arr
        bitmap, bm_start = _pack_segments(k_rlen > 0, seg, S)
    else:
        is_rem, is_add, is_kept = k_kind == 0, k_kind == 1, k_kind == 2
        rem_bytes = ids[is_rem].astype("<u4").tobytes()
        n_rem_s = np.bincount(seg[is_rem], minlength=S)
        add_bytes = added_records(ids[is_add], state_q.take(k_slot[is_add], axis=0), pdt).tobytes()
        n_add_s = np.bincount(seg[is_add], minlength=S)
        kept_s = np.bincount(seg[is_kept], minlength=S)
        bitmap, bm_start = _pack_segments(k_rlen[is_kept] > 0, seg[is_kept], S)
    has_rec = k_rlen > 0
    run_len = k_rlen[has_rec]
    out_start = _excl_cumsum(run_len)
    total = int(out_start[-1])
    if total:
        idx = np.repeat(k_src[has_rec] - out_start[:-1], run_len)
        idx += np.arange(total, dtype=np.int64)
        rec_bytes = rec_table.take(idx).tobytes()
    else:
        rec_bytes = b""
    crl = _excl_cumsum(k_rlen)  # record bytes before each item; parts are item ranges
    rec_s = np.append(crl.take(seg_start_arr), crl[-1])

    # Every part at once: its header (a structured array), then its sections, gathered from
    # one buffer of [headers | removed | added | bitmaps | records] in five runs a part.
    part_of = np.arange(S, dtype=np.int64) - _excl_cumsum(nparts)[:-1].take(seg_client) if S else zeros
    last_part = part_of == nparts.take(seg_client) - 1 if S else np.zeros(0, dtype=bool)
    first_id = ids.take(np.minimum(seg_start_arr, len(ids) - 1)).astype(np.int64) if len(ids) else zeros
    head = np.zeros(S, dtype=_PART_DTYPE)
    head["tick"] = tick
    bt_c = np.fromiter((NONE32 if b is None else b.tick for b in baselines), dtype=np.int64, count=C)
    head["baseline_tick"] = bt_c.take(seg_client)
    head["input_ack"] = (np.asarray(input_acks, dtype=np.int64) & NONE32).take(seg_client)
    head["self_id"] = np.asarray(self_ids, dtype=np.int64).take(seg_client)
    head["part"] = part_of
    head["parts"] = nparts.take(seg_client)
    head["first_id"] = np.where(part_of == 0, 0, first_id)
    head["last_id"] = np.where(last_part, NONE32, np.append(first_id[1:], 0) - 1)
    head["R"], head["A"], head["K"] = n_rem_s, n_add_s, kept_s
    sizes = [HEADER_SIZE * S, len(rem_bytes), len(add_bytes), len(bitmap), len(rec_bytes)]
    base = np.cumsum([0] + sizes[:-1])
    src = np.frombuffer(b"".join((head.tobytes(), rem_bytes, add_bytes, bitmap, rec_bytes)), dtype=np.uint8)
    r_src = np.empty((S, 5), dtype=np.int64)
    r_len = np.empty((S, 5), dtype=np.int64)
    r_src[:, 0], r_len[:, 0] = base[0] + HEADER_SIZE * np.arange(S), HEADER_SIZE
    r_src[:, 1], r_len[:, 1] = base[1] + 4 * _excl_cumsum(n_rem_s)[:-1], 4 * n_rem_s
    r_src[:, 2], r_len[:, 2] = base[2] + arec * _excl_cumsum(n_add_s)[:-1], arec * n_add_s
    r_src[:, 3], r_len[:, 3] = base[3] + bm_start[:-1], (kept_s + 7) >> 3
    r_src[:, 4], r_len[:, 4] = base[4] + rec_s[:-1], np.diff(rec_s)
    r_src, r_len = r_src.ravel(), r_len.ravel()
    r_out = _excl_cumsum(r_len)
    gather = np.repeat(r_src - r_out[:-1], r_len)
    gather += np.arange(int(r_out[-1]), dtype=np.int64)
    blob = src.take(gather).tobytes()
    ends = r_out[5::5].tolist()
    starts = [0] + ends[:-1]
    all_parts = [blob[a:b] for a, b in zip(starts, ends)]

    # The new held views: items other than sent removals; held = tick where sent, added or
    # unchanged, else the held tick it had.
    if kept_only:
        v_owner, v_ids, v_kind, v_rlen, old_held, cur = k_own, ids, k_kind, k_rlen, k_held, k_cur
    else:
        in_view = k_kind != 0
        v_owner, v_ids, v_kind, v_rlen = k_own[in_view], ids[in_view], k_kind[in_view], k_rlen[in_view]
        old_held, cur = k_held[in_view], k_cur[in_view]
    fresh = (v_rlen > 0) | (v_kind == 1)
    v_held = _frozen(np.where(fresh | cur, tick, old_held).astype(np.int64))
    _frozen(v_ids)
    voff = _excl_cumsum(np.bincount(v_owner, minlength=C)).tolist()
    sent_per = np.bincount(v_owner[fresh], minlength=C).tolist()
    stale = v_held != tick
    refreshed_per = (np.diff(voff) - np.bincount(v_owner[stale], minlength=C)).tolist()
    oldest_arr = np.full(C, tick, dtype=np.int64)
    if stale.any():
        np.minimum.at(oldest_arr, v_owner[stale], v_held[stale])
    oldest = oldest_arr.tolist()
    counts_l = counts.tolist()

    out: list[Snapshot] = []
    pstart = _excl_cumsum(nparts).tolist()
    for c in range(C):
        a, b = voff[c], voff[c + 1]
        view = HeldView(tick, v_ids[a:b], v_held[a:b], oldest[c])
        complete = not limited[c] or (oldest[c] == tick and b - a == counts_l[c])
        out.append(Snapshot(all_parts[pstart[c] : pstart[c + 1]], view, complete, sent_per[c], refreshed_per[c]))
    return out


def _groups(slots: np.ndarray, offsets: np.ndarray, baselines, view_keys=None) -> list[list[int]]:
    """Clients whose snapshots are the same bytes but for ``input_ack`` and ``self_id`` when
    nothing is held back: the same visible set and the same baseline (the same tick, the same
    ids, each held as of the same tick). The same visible set is the same view key when keys
    are given, else that of the first client of the most common size. Groups of two or more,
    first member the representative."""
    counts = np.diff(offsets)
    if len(counts) < 2:
        return []
    if view_keys is not None:
        members = list(range(len(counts)))
        vkeys = view_keys
    else:
        n0 = int(counts.max())
        same_n = np.flatnonzero(counts == n0)
        if len(same_n) < 2 or n0 == 0:
            return []
        block = slots.take(offsets[same_n][:, None] + np.arange(n0))
        members = same_n[(block == block[0]).all(axis=1)].tolist()
        if len(members) < 2:
            return []
        vkeys = [0] * len(counts)
    by_key: dict = {}
    firsts: dict = {}
    digests: dict[int, int] = {}  # id(array) -> hash of its bytes (views share arrays)
    for c in members:
        b = baselines[c]
        if b is None:
            key = (vkeys[c], None)
        else:
            ih = digests.get(id(b.ids))
            if ih is None:
                ih = digests[id(b.ids)] = hash(b.ids.tobytes())
            hh = None
            if b.oldest != b.tick:
                hh = digests.get(id(b.held))
                if hh is None:
                    hh = digests[id(b.held)] = hash(b.held.tobytes())
            key = (vkeys[c], b.tick, ih, hh)
            first = firsts.setdefault(key, b)
            if first is not b and not (
                (first.ids is b.ids or np.array_equal(first.ids, b.ids))
                and (hh is None or first.held is b.held or np.array_equal(first.held, b.held))
            ):
                continue  # a hash collision: encode it alone
        by_key.setdefault(key, []).append(c)
    return [g for g in by_key.values() if len(g) >= 2]


def _weights_of(weights: Weights, clients: list[int], rows: np.ndarray) -> Weights:
    """The weights of a subset of clients (``rows``: their pairs' mask)."""
    if weights is None:
        return None
    if isinstance(weights, PairWeights):
        return weights.subset(clients)
    return weights[rows]


def encode_many(
    *,
    tick: int,
    state_ids: np.ndarray,
    state_q: np.ndarray,
    history: Callable[[int], np.ndarray],
    slots: np.ndarray,
    offsets: np.ndarray,
    baselines: Sequence[HeldView | None],
    input_acks: Sequence[int],
    self_ids: Sequence[int],
    part_budget: int,
    max_parts: Sequence[int],
    weights: Weights,
    max_age: int,
    force_age: int,
    layout: Layout,
    view_keys: Sequence[int] | None = None,
) -> list[Snapshot]:
    """The snapshots of C clients.

    ``state_ids`` (capacity,) uint32 and ``state_q`` (capacity, 5) int32: the world at
    ``tick``, by slot. ``history(h)``: the (capacity, 5) states of an earlier tick ``h`` (every
    tick held in ``baselines``). ``slots``/``offsets``: each client's visible slots (a CSR
    segment per client, ascending; ids ascend with slots). ``baselines``: what each client
    holds (its newest view acknowledged whole), or None (a full snapshot). ``max_parts``: per
    client, the parts its byte allowance takes this tick. ``weights``: the priority weight of
    each visible pair, as an array (one per pair) or a :class:`PairWeights` table (None: 1). ``max_age``: the age given to added entities.

    ``view_keys``: clients with the same key have the same visible slots (the caller says so;
    None: the encoder finds the clients that see what the first of the most common size sees).

    Clients that see the same entities against the same baseline (everyone in one hall), with
    the same weights when the allowance holds entities back, get the same bytes but for their
    header's ``input_ack`` and ``self_id``: one of them is encoded and the others' parts are
    copies with those two fields written in. The others are gathered from the shared record
    tables, each on its own.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    slots = np.asarray(slots, dtype=np.int64)
    shared_weights = isinstance(weights, PairWeights)
    groups = _groups(slots, offsets, baselines, view_keys)
    common = dict(tick=tick, state_ids=state_ids, state_q=state_q, history=history, part_budget=part_budget,
                  max_age=max_age, force_age=force_age, layout=layout)  # fmt: skip
    C = len(baselines)
    counts = np.diff(offsets)

    def encode(clients: list[int]) -> list[Snapshot]:
        if len(clients) == C:
            return _encode_each(slots=slots, offsets=offsets, baselines=baselines, input_acks=input_acks,
                                self_ids=self_ids, max_parts=max_parts, weights=weights, **common)  # fmt: skip
        pick = np.zeros(C, dtype=bool)
        pick[clients] = True
        rows = np.repeat(pick, counts)
        return _encode_each(
            slots=slots[rows], offsets=_excl_cumsum(counts[pick]), baselines=[baselines[c] for c in clients],
            input_acks=[input_acks[c] for c in clients], self_ids=[self_ids[c] for c in clients],
            max_parts=[max_parts[c] for c in clients], weights=_weights_of(weights, clients, rows), **common,
        )  # fmt: skip

    out: list[Snapshot | None] = [None] * C
    copies = {c for g in groups for c in g[1:]}
    own = [c for c in range(C) if c not in copies]
    for c, snap in zip(own, encode(own)):
        out[c] = snap
    pack = _ACK_SELF.pack

    def copy(rep: Snapshot, members: list[int]) -> None:
        for c in members:
            mine = pack(input_acks[c] & NONE32, self_ids[c])
            out[c] = Snapshot([p[:8] + mine + p[16:] for p in rep.parts], rep.view, rep.complete, rep.sent, rep.refreshed)

    # Groups whose representative got everything: every member gets the same. Otherwise the
    # selection depends on the allowance and the weights: members with the same of both (the
    # same weight row) share one encoding, the first of each such subgroup encoded alone.
    later: list[list[int]] = []
    for g in groups:
        rep = out[g[0]]
        same_allowance = all(max_parts[c] == max_parts[g[0]] for c in g[1:])
        if rep.complete and same_allowance:
            copy(rep, g[1:])
            continue
        if not shared_weights:
            later.extend([c] for c in g[1:])
            continue
        sub: dict = {}
        for c in g:
            sub.setdefault((weights.rows[c], max_parts[c]), []).append(c)
        for members in sub.values():
            if members[0] == g[0]:
                copy(rep, members[1:])
            else:
                later.append(members)
    if later:
        reps = sorted(m[0] for m in later)  # client order, as encode's rows
        for c, snap in zip(reps, encode(reps)):
            out[c] = snap
        for members in later:
            copy(out[members[0]], members[1:])
    return out  # type: ignore[return-value]
