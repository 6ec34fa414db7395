"""Encode the snapshots of many clients at once: one numpy pass over every (client, entity) pair.

The server sends one snapshot per client per tick. Encoding them one by one costs a few dozen
numpy calls per client, which at 1,000 clients is most of a tick. :func:`encode_batch` does
the same work for all clients together: candidates and baselines of every client are
concatenated, matched with one ``searchsorted`` on (client, id) keys, and every bin of every
payload is cut from shared buffers (bit masks are packed per client on byte boundaries).

The payload of each client is byte for byte what :func:`protocol.snapshot.encode_snapshot`
would produce when everything fits its budget; a client whose snapshot would not fit gets
``None`` and the caller encodes it alone with priorities. Stateless; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgpack
import numpy as np

from protocol.snapshot import FIELDS, WIDE, Layout, View, _frozen, _layout



def _int_sizes(v: np.ndarray) -> np.ndarray:
    """msgpack sizes of non-negative ints (nil is passed as 0)."""
    return 1 + (v > 127) + (v > 0xFF) + 2 * (v > 0xFFFF) + 4 * (v > 0xFFFFFFFF)


def _bin_sizes(n: np.ndarray) -> np.ndarray:
    return n + 2 + (n > 0xFF) + 2 * (n > 0xFFFF)


def _segment_layout(counts: np.ndarray, seg_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Places each segment's rows on a grid padded to multiples of 8 rows per segment.

    Returns (destination row of every row, padded start row of every segment + the total).
    """
    padded = (counts + 7) & ~7
    pstart = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(padded, out=pstart[1:])
    shift = pstart[:-1] - np.cumsum(counts) + counts  # padded start - unpadded start
    dest = np.arange(len(seg_of))
    dest += np.repeat(shift, counts)  # segments are contiguous and in order
    return dest, pstart


def _pack_flags(flags: np.ndarray, seg_of: np.ndarray, counts: np.ndarray):
    """One bit per row, each segment on its own bytes: like per-segment ``packbits``."""
    dest, pstart = _segment_layout(counts, seg_of)
    grid = np.zeros(int(pstart[-1]), dtype=bool)
    grid[dest] = flags
    first = pstart[:-1] >> 3
    return np.packbits(grid, bitorder="little").tobytes(), first.tolist(), (first + ((counts + 7) >> 3)).tolist()


_GROUP_SHIFTS = np.arange(0, 40, 5, dtype=np.uint64)


def _pack_codes(codes: np.ndarray, seg_of: np.ndarray, counts: np.ndarray):
    """Five bits per row (``codes`` < 32), rows back to back, each segment on its own bytes.

    Eight rows of five bits are exactly five bytes, so segments padded to 8 rows stay
    byte-aligned: each group of 8 codes becomes one 40-bit little-endian number.
    """
    dest, pstart = _segment_layout(counts, seg_of)
    grid = np.zeros(int(pstart[-1]), dtype=np.uint64)
    grid[dest] = codes
    groups = (grid.reshape(-1, 8) << _GROUP_SHIFTS).sum(axis=1, dtype=np.uint64)
    buf = groups.view(np.uint8).reshape(-1, 8)[:, :5].tobytes()
    first = (pstart[:-1] * FIELDS) >> 3
    return buf, first.tolist(), (first + ((counts * FIELDS + 7) >> 3)).tolist()


_POPCOUNT5 = np.array([bin(i).count("1") for i in range(32)], dtype=np.int64)


def encode_batch(
    *,
    tick: int,
    offsets: np.ndarray,
    cand_ids: np.ndarray,
    cand_q: np.ndarray,
    baselines: Sequence[View | None],
    input_acks: Sequence[int],
    self_ids: Sequence[int],
    budget: int,
    layout: Layout,
) -> tuple[list[bytes | None], list[View | None]]:
    """Snapshots for C clients.

    ``offsets`` (C+1) delimit each client's candidates in ``cand_ids`` (uint32, sorted within
    each segment) and ``cand_q`` ((T,5) int32). Returns (payloads, views), with None for
    clients whose snapshot does not fit ``budget`` (encode those with ``encode_snapshot``).
    """
    pdt, _ = _layout(layout)
    _frozen(cand_ids)  # the views returned are slices of these arrays
    _frozen(cand_q)
    state_size = 3 * pdt.itemsize + 3
    C = len(baselines)
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    clients = np.arange(C, dtype=np.int64)
    cc = np.repeat(clients, counts)  # client of each candidate
    T = len(cand_ids)

    # Baselines, concatenated in client order.
    nb = np.fromiter((0 if b is None else len(b.ids) for b in baselines), dtype=np.int64, count=C)
    present = [b for b in baselines if b is not None and len(b.ids)]
    if present:
        bids = np.concatenate([b.ids for b in present])
        bq = np.concatenate([b.q for b in present])
    else:
        bids = np.zeros(0, dtype=np.uint32)
        bq = np.zeros((0, FIELDS), dtype=np.int32)
    bc = np.repeat(clients, nb)
    NB = len(bids)

    # Match every candidate with its client's baseline on (client, id) keys.
    ckey = (cc.astype(np.uint64) << np.uint64(32)) | cand_ids.astype(np.uint64)
    if NB:
        bkey = (bc.astype(np.uint64) << np.uint64(32)) | bids.astype(np.uint64)
        pos = bkey.searchsorted(ckey)
        inb = bkey.take(pos, mode="clip") == ckey
        matched = np.zeros(NB, dtype=bool)
        matched[pos[inb]] = True
        removed = ~matched
    else:
        pos = np.zeros(T, dtype=np.int64)
        inb = np.zeros(T, dtype=bool)
        removed = np.zeros(0, dtype=bool)

    # Deltas for every candidate row against its baseline row (rows not in the baseline get
    # garbage, masked out below): cheaper than gathering the kept rows first.
    d = cand_q - bq.take(pos, axis=0, mode="clip") if NB else np.zeros_like(cand_q)
    d[:, 3] = d[:, 3].astype(np.int16)  # yaw delta wrapped to [-32768, 32767]
    zz = (d << 1) ^ (d >> 31)
    zz = zz.view(np.uint32)
    ch = zz != 0
    ch &= inb[:, None]
    code = ch[:, 0].view(np.uint8).copy()  # bit f set when field f changed
    for f in range(1, FIELDS):
        code |= ch[:, f].view(np.uint8) << f
    upd = code != 0  # false for rows not in the baseline
    vals = zz.ravel().compress(ch.ravel())
    nch = _POPCOUNT5.take(code)
    wm = vals >= WIDE
    kc = cc.compress(inb)  # client of each kept row

    # Per-client counts and payload sizes.
    n_rem = np.bincount(bc[removed], minlength=C)
    n_kept = np.bincount(kc, minlength=C)
    n_add = counts - n_kept
    n_upd = np.bincount(cc[upd], minlength=C)
    n_vals = np.bincount(cc, weights=nch, minlength=C).astype(np.int64)
    val_client = np.repeat(cc, nch)
    n_wide = np.bincount(val_client[wm], minlength=C)
    base_ticks = [None if b is None else b.tick for b in baselines]
    bt_arr = np.fromiter((0 if t is None else t for t in base_ticks), dtype=np.int64, count=C)
    acks = np.asarray(input_acks, dtype=np.int64)
    selfs = np.asarray(self_ids, dtype=np.int64)
    size = (
        1
        + _int_sizes(np.int64(tick))
        + _int_sizes(bt_arr)
        + _int_sizes(acks)
        + _int_sizes(selfs)
        + _bin_sizes(4 * n_rem)
        + _bin_sizes(4 * n_add)
        + _bin_sizes(state_size * n_add)
        + _bin_sizes((n_kept + 7) >> 3)
        + _bin_sizes((FIELDS * n_upd + 7) >> 3)
        + _bin_sizes(n_vals)
        + _bin_sizes(4 * n_wide)
    )
    fits = (size <= budget).tolist()

    # Shared buffers, with per-client byte ranges.
    rem_buf = bids[removed].astype("<u4").tobytes()
    rem_off = np.concatenate(([0], np.cumsum(4 * n_rem))).tolist()
    addm = ~inb
    add_ids = cand_ids[addm]
    add_q = cand_q[addm]
    addid_buf = add_ids.astype("<u4").tobytes()
    add_off = np.concatenate(([0], np.cumsum(n_add))).tolist()
    cols = [add_q[:, 0].astype(pdt).tobytes(), add_q[:, 1].astype(pdt).tobytes(), add_q[:, 2].astype(pdt).tobytes(),
            add_q[:, 3].astype("<u2").tobytes(), add_q[:, 4].astype(np.uint8).tobytes()]
    widths = (pdt.itemsize, pdt.itemsize, pdt.itemsize, 2, 1)

    upd_buf, upd_a, upd_b = _pack_flags(upd.compress(inb), kc, n_kept)
    fld_buf, fld_a, fld_b = _pack_codes(code[upd], cc[upd], n_upd)
    small_buf = np.minimum(vals, WIDE).astype(np.uint8).tobytes()
    small_off = np.concatenate(([0], np.cumsum(n_vals))).tolist()
    wide_buf = vals[wm].astype("<u4").tobytes()
    wide_off = np.concatenate(([0], np.cumsum(4 * n_wide))).tolist()

    packb = msgpack.packb
    off = offsets.tolist()
    n_add_l = n_add.tolist()
    payloads: list[bytes | None] = []
    views: list[View | None] = []
    acks_l = acks.tolist()
    selfs_l = selfs.tolist()
    for c in range(C):
        if not fits[c]:
            payloads.append(None)
            views.append(None)
            continue
        a0, a1 = add_off[c], add_off[c + 1]
        if n_add_l[c]:
            state = b"".join(col[a0 * w : a1 * w] for col, w in zip(cols, widths))
        else:
            state = b""
        payloads.append(
            packb(
                [tick, base_ticks[c], acks_l[c], selfs_l[c],
                 rem_buf[rem_off[c] : rem_off[c + 1]],
                 addid_buf[4 * a0 : 4 * a1],
                 state,
                 upd_buf[upd_a[c] : upd_b[c]],
                 fld_buf[fld_a[c] : fld_b[c]],
                 small_buf[small_off[c] : small_off[c + 1]],
                 wide_buf[wide_off[c] : wide_off[c + 1]]]
            )  # fmt: skip
        )
        views.append(View(tick, cand_ids[off[c] : off[c + 1]], cand_q[off[c] : off[c + 1]]))
    return payloads, views
