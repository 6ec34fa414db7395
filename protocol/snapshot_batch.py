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
are packed per part on byte boundaries. Python loops run over parts (to cut and join them),
never over entities.

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

from collections.abc import Callable, Sequence

import attrs
import numpy as np

from protocol.snapshot import (
    MAX_ITEM_BITS,
    NONE32,
    Layout,
    View,
    _frozen,
    _layout,
    added_records,
    build_records,
    pack_header,
    part_capacity_bits,
    state_size,
    zigzag,
)

TOP_BUCKET = 63  # priorities are integer buckets 0..63; 64 is "forced" (too old to wait)
FORCED = TOP_BUCKET + 1


@attrs.frozen
class HeldView:
    """What the server knows a client holds after a tick: ``ids`` (uint32, ascending) and, per
    id, ``held`` (int64): the tick whose world state the client holds for that entity."""

    tick: int
    ids: np.ndarray
    held: np.ndarray
    oldest: int  # the smallest held tick (``tick`` when empty)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def exact(self) -> bool:
        return bool((self.held == self.tick).all())

    def values(self, history: Callable[[int], np.ndarray]) -> View:
        """The View (state values) the client holds, read from the world history."""
        q = np.empty((len(self.ids), 5), dtype=np.int32)
        slots = (self.ids >> 16).astype(np.int64)
        for h in np.unique(self.held).tolist():
            m = self.held == h
            q[m] = history(h)[slots[m]]
        return View(self.tick, self.ids, q)


class Snapshot:
    """One client's result: ``parts`` (payloads in order), ``view`` (what it holds after all
    parts), ``complete`` (everything in view is current), ``sent`` (entities sent)."""

    __slots__ = ("parts", "view", "complete", "sent")

    def __init__(self, parts: list[bytes], view: HeldView, complete: bool, sent: int) -> None:
        self.parts = parts
        self.view = view
        self.complete = complete
        self.sent = sent


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
    weights: np.ndarray | None,
    max_age: int,
    force_age: int,
    layout: Layout,
) -> list[Snapshot]:
    """The snapshots of C clients.

    ``state_ids`` (capacity,) uint32 and ``state_q`` (capacity, 5) int32: the world at
    ``tick``, by slot. ``history(h)``: the (capacity, 5) states of an earlier tick ``h`` (every
    tick held in ``baselines``). ``slots``/``offsets``: each client's visible slots (a CSR
    segment per client, ascending; ids ascend with slots). ``baselines``: what each client
    holds (its newest view acknowledged whole), or None (a full snapshot). ``max_parts``: per
    client, the parts its byte allowance takes this tick. ``weights``: per visible pair, the
    priority weight (None: 1). ``max_age``: the age given to added entities.
    """
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

    # Match every candidate with its client's baseline on (client, id) keys.
    nb = np.fromiter((0 if b is None else len(b.ids) for b in baselines), dtype=np.int64, count=C)
    present = [b for b in baselines if b is not None and len(b.ids)]
    if present:
        bids = np.concatenate([b.ids for b in present])
        bheld = np.concatenate([b.held for b in present])
    else:
        bids = np.zeros(0, dtype=np.uint32)
        bheld = np.zeros(0, dtype=np.int64)
    bc = np.repeat(clients, nb)
    ckey = (cc.astype(np.uint64) << np.uint64(32)) | cand_ids.astype(np.uint64)
    bkey = (bc.astype(np.uint64) << np.uint64(32)) | bids.astype(np.uint64)
    if len(bkey) == T and np.array_equal(bkey, ckey):  # nobody's view changed: all kept
        inb = np.ones(T, dtype=bool)
        pos = np.arange(T, dtype=np.int64)
        removed = np.zeros(T, dtype=bool)
    elif len(bkey):
        pos = bkey.searchsorted(ckey)
        inb = bkey.take(pos, mode="clip") == ckey
        removed = np.ones(len(bkey), dtype=bool)
        removed[pos[inb]] = False
    else:
        pos = np.zeros(T, dtype=np.int64)
        inb = np.zeros(T, dtype=bool)
        removed = np.zeros(0, dtype=bool)

    # How old each kept entity's held state is, and one record table per age in use.
    held = np.where(inb, bheld.take(pos, mode="clip") if len(bheld) else 0, tick)
    age = tick - held
    ages_used = np.flatnonzero(np.bincount(age.compress(inb), minlength=1)) if inb.any() else np.zeros(0, np.int64)
    nslots = len(state_ids)
    n_ages = int(ages_used.max()) + 1 if len(ages_used) else 1
    rec_len = np.zeros((n_ages, nslots), dtype=np.int64)
    rec_src = np.zeros((n_ages, nslots), dtype=np.int64)
    bufs, base = [], 0
    for a in ages_used.tolist():
        if a == 0:
            continue  # held as of this tick: nothing changed
        buf, ln = build_records(zigzag(state_q, history(tick - a)))
        rec_len[a] = ln
        rec_src[a] = _excl_cumsum(ln)[:-1] + base
        bufs.append(buf)
        base += len(buf)
    rec_table = np.concatenate(bufs) if bufs else np.zeros(0, dtype=np.uint8)
    rlen = np.where(inb, rec_len[age, slots], 0)
    src = rec_src[age, slots]

    # Item costs and each client's total; who needs a selection.
    n_rem = np.bincount(bc[removed], minlength=C) if len(bc) else np.zeros(C, dtype=np.int64)
    cbits = np.where(inb, 1 + 8 * rlen, add_bits)
    tot_bits = np.bincount(cc, weights=cbits, minlength=C).astype(np.int64) + 32 * n_rem
    cap_part = cap_bits - MAX_ITEM_BITS
    maxp = np.maximum(np.asarray(max_parts, dtype=np.int64), np.maximum(-(-nb // cap_part), 1))
    sure = tot_bits <= maxp * (cap_bits - MAX_ITEM_BITS)  # fits whatever the cut
    # Clients not sure to fit are cut below; those that then need too many parts select.
    sel = np.ones(T, dtype=bool)  # candidates in the new view with their state sent/current
    sel_rem = np.ones(len(bkey), dtype=bool)
    limited = np.zeros(C, dtype=bool)

    def items(sel, sel_rem):
        """Items of every client in (client, id) order: kind 0 removed, 1 added, 2 kept."""
        keep_c = sel | inb
        k_key, k_kind = ckey[keep_c], np.where(inb[keep_c], 2, 1).astype(np.int8)
        k_rlen = np.where(sel[keep_c], rlen[keep_c], 0)
        k_src, k_slot = src[keep_c], slots[keep_c]
        k_cand = np.flatnonzero(keep_c)
        if len(sel_rem) and (removed.any()):
            # Removals (sent: kind 0) and unsent removals (kept, unchanged: kind 2).
            rm = removed
            r_key = bkey[rm]
            r_kind = np.where(sel_rem[rm], 0, 2).astype(np.int8)
            at = k_key.searchsorted(r_key)
            k_key = np.insert(k_key, at, r_key)
            k_kind = np.insert(k_kind, at, r_kind)
            k_rlen = np.insert(k_rlen, at, 0)
            k_src = np.insert(k_src, at, 0)
            k_slot = np.insert(k_slot, at, (bids[rm] >> 16).astype(np.int64))
            k_cand = np.insert(k_cand, at, -1 - np.flatnonzero(rm))
        return k_key, k_kind, k_rlen, k_src, k_slot, k_cand

    def cut(k_key, k_kind, k_rlen, check):
        bits = np.where(k_kind == 2, 1 + 8 * k_rlen, np.where(k_kind == 1, add_bits, 32))
        owner = (k_key >> np.uint64(32)).astype(np.int64)
        n_items = np.bincount(owner, minlength=C)
        ioff = _excl_cumsum(n_items).tolist()
        cum = np.cumsum(bits, dtype=np.int64)
        cum_l = cum.tolist()
        seg_ends, seg_client = [], []
        nparts = [0] * C
        over = []
        maxp_l = maxp.tolist()
        for c in range(C):
            a, b = ioff[c], ioff[c + 1]
            if a == b:
                seg_ends.append(b)
                seg_client.append(c)
                nparts[c] = 1
                continue
            start, ends = a, []
            limit = maxp_l[c] if check[c] else 255
            while start < b and len(ends) <= limit:
                end = min(int(cum.searchsorted((cum_l[start - 1] if start else 0) + cap_bits, side="right")), b)
                ends.append(end)
                start = end
            if len(ends) > limit:
                over.append(c)
                continue
            seg_ends.extend(ends)
            seg_client.extend([c] * len(ends))
            nparts[c] = len(ends)
        return seg_ends, seg_client, nparts, over

    k = items(sel, sel_rem)
    seg_ends, seg_client, nparts, over = cut(k[0], k[1], k[2], ~sure)
    if over:
        # Selection for the clients over their allowance, vectorized over all of them.
        limited[over] = True
        lim_c = limited.take(cc)
        # Removals first, in id order, as many as fit.
        # Every baseline entity costs its update bit (unsent removals stay kept); a removal
        # sent costs 31 bits more. Removals first, in id order, as many as fit.
        left = maxp * (cap_bits - MAX_ITEM_BITS) - nb
        if len(bkey):
            lim_r = removed & limited.take(bc)
            r_rank = _segment_cumsum(lim_r.astype(np.int64), bc, C)  # 1-based among removals
            k_rem = np.minimum(n_rem, np.maximum(left, 0) // 31)
            sel_rem = ~lim_r | (r_rank <= k_rem.take(bc))
            left = left - 31 * k_rem
        left = np.maximum(left, 0)
        extra = np.where(inb, 8 * rlen, add_bits)
        wants = lim_c & (extra > 0)
        w = np.ones(T) if weights is None else np.asarray(weights, dtype=np.float64)
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
        seg_ends, seg_client, nparts, over2 = cut(k[0], k[1], k[2], limited)
        if over2:  # cannot happen: the costs above are upper bounds
            raise RuntimeError(f"selection left {len(over2)} clients over their allowance")
    k_key, k_kind, k_rlen, k_src, k_slot, k_cand = k

    S = len(seg_ends)
    seg_end_arr = np.asarray(seg_ends, dtype=np.int64)
    seg_start_arr = np.concatenate(([0], seg_end_arr[:-1])) if S else seg_end_arr
    seg = np.repeat(np.arange(S, dtype=np.int64), seg_end_arr - seg_start_arr)
    ids = (k_key & np.uint64(0xFFFFFFFF)).astype(np.uint32)

    # Sections, each in item order, with per-part byte offsets.
    is_rem, is_add, is_kept = k_kind == 0, k_kind == 1, k_kind == 2
    rem_bytes = ids[is_rem].astype("<u4").tobytes()
    rem_off = (_excl_cumsum(np.bincount(seg[is_rem], minlength=S)) * 4).tolist()
    arec = 4 + state_size(pdt)
    add_bytes = added_records(ids[is_add], state_q.take(k_slot[is_add], axis=0), pdt).tobytes()
    add_cnt = _excl_cumsum(np.bincount(seg[is_add], minlength=S))
    add_off = (add_cnt * arec).tolist()
    kept_cnt = np.bincount(seg[is_kept], minlength=S).tolist()
    bitmap, bm_start = _pack_segments(k_rlen[is_kept] > 0, seg[is_kept], S)
    bm_start = bm_start.tolist()
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
    rec_off = _excl_cumsum(np.bincount(seg[has_rec], weights=run_len, minlength=S).astype(np.int64)).tolist()
    first_ids = ids.take(np.minimum(seg_start_arr, len(ids) - 1)).tolist() if len(ids) else [0] * S
    add_cnt_l = add_cnt.tolist()

    # The new held views: items other than sent removals; held = tick where sent or current.
    in_view = ~is_rem
    v_owner = (k_key[in_view] >> np.uint64(32)).astype(np.int64)
    v_ids = _frozen(ids[in_view])
    vc = k_cand[in_view]
    fresh = (k_rlen[in_view] > 0) | (k_kind[in_view] == 1)
    old_held = np.where(vc >= 0, held.take(np.maximum(vc, 0)), bheld.take(np.maximum(-1 - vc, 0)) if len(bheld) else 0)
    cur = (vc >= 0) & (rlen.take(np.maximum(vc, 0)) == 0) & inb.take(np.maximum(vc, 0))
    v_held = _frozen(np.where(fresh | cur, tick, old_held).astype(np.int64))
    voff = _excl_cumsum(np.bincount(v_owner, minlength=C)).tolist()
    sent_per = np.bincount(v_owner[fresh], minlength=C).tolist()
    oldest_arr = np.full(C, tick, dtype=np.int64)
    np.minimum.at(oldest_arr, v_owner, v_held)
    oldest = oldest_arr.tolist()

    out: list[Snapshot] = []
    s = 0
    for c in range(C):
        k_ = nparts[c]
        bt = None if baselines[c] is None else baselines[c].tick
        ack, me = input_acks[c], self_ids[c]
        parts = []
        for p in range(k_):
            first = 0 if p == 0 else first_ids[s]
            last = NONE32 if p == k_ - 1 else first_ids[s + 1] - 1
            r0, r1 = rem_off[s], rem_off[s + 1]
            parts.append(
                pack_header(tick, bt, ack, me, p, k_, first, last, (r1 - r0) >> 2,
                            add_cnt_l[s + 1] - add_cnt_l[s], kept_cnt[s])
                + rem_bytes[r0:r1]
                + add_bytes[add_off[s] : add_off[s + 1]]
                + bitmap[bm_start[s] : bm_start[s] + ((kept_cnt[s] + 7) >> 3)]
                + rec_bytes[rec_off[s] : rec_off[s + 1]]
            )  # fmt: skip
            s += 1
        a, b = voff[c], voff[c + 1]
        view = HeldView(tick, v_ids[a:b], v_held[a:b], oldest[c])
        complete = not limited[c] or bool((v_held[a:b] == tick).all() and b - a == counts[c])
        out.append(Snapshot(parts, view, complete, sent_per[c]))
    return out
