"""Delta snapshots in parts (protocol version 2): encode a client's visible set, decode parts.

The job of this module: given the View of the newest tick a client acknowledged whole (the
baseline) and the entities that client should see this tick, build the snapshot as one or more
size-bounded **parts** (``encode_snapshot``); on the client, decode one part against its stored
Views (``decode_part``) and put the parts of a tick together (``PartAssembler``). The wire
layout is in protocol/SPEC.md section 5; the building blocks that the server's shared encoder
(``protocol/snapshot_batch.py``) must produce byte for byte the same way live here too: the
delta records (``build_records``), the greedy part cut (``cut_parts``) and the part header.

``encode_snapshot`` is the plain reference, one client at a time, and the general path of the
server (baselines that are not exact, rate-limited clients, priorities). It must not do I/O,
read clocks, or keep state between calls: the per-client ring of sent Views lives with the
server, the decoded Views with the client. No Python loop runs over entities in the encoder;
the decoder follows the chain of variable-length records in one tight loop and does the rest
vectorized. Decoding is strict and bounded, and raises only :class:`ProtocolError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import NamedTuple, Union

import attrs
import numpy as np

from protocol.errors import ProtocolError
from protocol.quantize import Quantizer

MAX_ENTITIES = 65536  # entities in one View
MAX_PAYLOAD = 65535  # bytes; part budgets and decodable parts are at most this
MAX_TICK = 2**32 - 1
MAX_PARTS = 255
# Incomplete ticks a client holds at least: a packet is accepted up to 32 behind the newest
# (SPEC 3), so a tick's last part may still arrive and be acknowledged that late.
MIN_PENDING = 34
NONE32 = 0xFFFFFFFF  # baseline_tick "none" and input_ack "none yet"
FIELDS = 5  # x, y, z, yaw, anim
WIDE_FLAG = 0x20  # record mask bit: a wide-field byte follows
PACKED = 0x45  # record mask of a packed walk: x and z changed, both zigzags in 1..15, one byte
PACKED_MAX = 15
PART_HEADER = struct.Struct("<IIIIBBIIHHH")
HEADER_SIZE = PART_HEADER.size  # 32
# The largest item of a part, in bits: a kept entity's update bit plus a record with every
# field wide (1 + 1 + 5*4 bytes); an added record is smaller (4 + 3*4 + 3 bytes at most).
MAX_ITEM_BITS = 1 + 8 * (2 + 4 * FIELDS)
MIN_PART_BUDGET = HEADER_SIZE + 2 * (MAX_ITEM_BITS // 8 + 1)

_BIT = np.array([1 << f for f in range(FIELDS)], dtype=np.uint8)
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)

Layout = Union[Quantizer, str]
Baselines = Union[Callable[[int], "View | None"], Mapping[int, "View"]]


def _arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


@attrs.frozen
class View:
    """What a client's mirror holds for one tick (or for one part's id range of it).

    ``ids``: uint32, sorted ascending, unique. ``q``: int32 of shape (len(ids), 5) with the
    columns x, y, z, yaw, anim. Views are treated as immutable: nobody writes into the arrays.
    """

    tick: int
    ids: np.ndarray = attrs.field(eq=attrs.cmp_using(eq=_arrays_equal))
    q: np.ndarray = attrs.field(eq=attrs.cmp_using(eq=_arrays_equal))

    def __len__(self) -> int:
        return len(self.ids)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


EMPTY_VIEW = View(
    -1, _frozen(np.zeros(0, dtype=np.uint32)), _frozen(np.zeros((0, FIELDS), dtype=np.int32))
)


@attrs.frozen
class PartHeader:
    """The fixed fields of a part. ``baseline_tick`` None: full; ``input_ack`` -1: none yet."""

    tick: int
    baseline_tick: int | None
    input_ack: int
    self_id: int
    part: int
    parts: int
    first_id: int
    last_id: int


class Encoded(NamedTuple):
    """What ``encode_snapshot`` returns.

    ``parts``: the part payloads in order. ``view``: what the client holds once it has every
    part. ``sent``: per candidate, whether its state was sent (added or updated).
    ``complete``: the view equals the candidates (nothing held back by the allowance).
    """

    parts: list[bytes]
    view: View
    sent: np.ndarray
    complete: bool


def _layout(layout: Layout) -> tuple[np.dtype, tuple[int, int, int]]:
    """Position dtype and the largest valid quantized value per axis."""
    if isinstance(layout, Quantizer):
        return np.dtype(layout.position_dtype), layout.steps
    dt = np.dtype(layout)
    if dt == np.dtype("<u2"):
        return np.dtype("<u2"), (0xFFFF,) * 3
    if dt == np.dtype("<u4"):
        return np.dtype("<u4"), (2**31 - 1,) * 3  # state columns are int32
    raise ValueError(f"position dtype must be '<u2' or '<u4', not {layout!r}")


def state_size(pdt: np.dtype) -> int:
    """Bytes of one absolute state (x, y, z, yaw, anim)."""
    return 3 * pdt.itemsize + 3


def added_records(ids: np.ndarray, q: np.ndarray, pdt: np.dtype) -> np.ndarray:
    """Added records (id, then absolute state) of the rows, as a (n, 4 + state) uint8 array."""
    rec = np.empty(len(ids), dtype=[("id", "<u4"), ("p", pdt, (3,)), ("yaw", "<u2"), ("anim", "u1")])
    rec["id"] = ids
    rec["p"] = q[:, :3]
    rec["yaw"] = q[:, 3]
    rec["anim"] = q[:, 4]
    return rec.view(np.uint8).reshape(len(ids), 4 + state_size(pdt))


def zigzag(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Zigzag deltas (n, 5) uint32 of int32 states; the yaw delta is wrapped to 16 bits."""
    d = new - old
    d[:, 3] = d[:, 3].astype(np.int16)
    zz = d << 1
    d >>= 31
    zz ^= d
    return zz.view(np.uint32)


def build_records(zz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Delta records of the rows of ``zz`` ((n, 5) uint32 zigzag deltas).

    Returns ``(buf, length)``: the records of all rows back to back (uint8; a row whose
    deltas are all zero has no record, length 0) and each row's record length in bytes.
    """
    n = len(zz)
    ch = zz != 0
    wd = zz > 0xFF
    mask = (ch.view(np.uint8) * _BIT).sum(axis=1, dtype=np.uint8) if n else np.zeros(0, np.uint8)
    # A walk (x and z changed a little, nothing else) packs both deltas into one byte.
    packed = (mask == 0x05) & (zz[:, 0] <= PACKED_MAX) & (zz[:, 2] <= PACKED_MAX) if n else mask != 0
    if packed.any():
        zz = zz.copy()
        zz[packed, 0] |= zz[packed, 2] << 4
        ch = ch.copy()
        ch[packed, 2] = False
        mask = np.where(packed, PACKED, mask).astype(np.uint8)
    wide = (wd.view(np.uint8) * _BIT).sum(axis=1, dtype=np.uint8) if n else np.zeros(0, np.uint8)
    has_w = wide != 0
    width = ch.view(np.uint8) + 3 * wd.view(np.uint8)  # bytes per field: 0, 1 or 4
    head = (mask != 0).astype(np.int64) + has_w  # 0, 1 or 2 leading bytes
    length = head + width.sum(axis=1, dtype=np.int64)
    start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(length, out=start[1:])
    buf = np.empty(int(start[-1]), dtype=np.uint8)
    s = start[:-1]
    upd = mask != 0
    buf[s[upd]] = mask[upd] | np.where(has_w[upd], WIDE_FLAG, 0).astype(np.uint8)  # PACKED has no wide
    buf[s[has_w] + 1] = wide[has_w]
    # Each changed field's position: record start + head + the widths of earlier fields.
    off = np.cumsum(width, axis=1, dtype=np.int64) - width + (s + head)[:, None]
    narrow = ch & ~wd
    buf[off[narrow]] = zz[narrow].astype(np.uint8)
    if wd.any():
        at, val = off[wd], zz[wd]
        for k in range(4):
            buf[at + k] = (val >> (8 * k)).astype(np.uint8)
    return buf, length


def part_capacity_bits(part_budget: int) -> int:
    """Bits of items a part may hold: the budget less the header, in bits. Items cost whole
    bytes except a kept entity's update bit, so ``8·bytes + K <= 8·room`` is exactly
    ``bytes + ceil(K/8) <= room``: the bitmap's rounding needs no slack."""
    return 8 * (part_budget - HEADER_SIZE)


def cut_parts(bits: np.ndarray, part_budget: int) -> list[int]:
    """Greedy cut of items (in id order, ``bits`` each) into parts; returns each part's end.

    A part takes items while their bits fit ``part_capacity_bits``. Identical in every
    encoder (the server's shared path must cut exactly like the reference).
    """
    cap = part_capacity_bits(part_budget)
    n = len(bits)
    if n == 0:
        return [0]
    cum = np.cumsum(bits, dtype=np.int64)
    ends = []
    start, base = 0, 0
    while start < n:
        end = int(cum.searchsorted(base + cap, side="right"))
        if end == start:
            raise ValueError(f"part budget {part_budget} cannot hold one entity")
        ends.append(end)
        start, base = end, int(cum[end - 1])
    return ends


def part_ranges(first_ids: list[int]) -> list[tuple[int, int]]:
    """(first_id, last_id) of each part, given the id of each part's first item (part 0: 0)."""
    firsts = [0] + first_ids[1:]
    lasts = [f - 1 for f in firsts[1:]] + [NONE32]
    return list(zip(firsts, lasts))


def pack_header(tick: int, baseline_tick: int | None, input_ack: int, self_id: int,
                part: int, parts: int, first: int, last: int, r: int, a: int, k: int) -> bytes:
    return PART_HEADER.pack(
        tick, NONE32 if baseline_tick is None else baseline_tick, input_ack & NONE32, self_id,
        part, parts, first, last, r, a, k,
    )  # fmt: skip


def _check_args(tick, baseline, cand_ids, cand_q, priority, part_budget, allowance, input_ack, self_id) -> None:
    if type(tick) is not int or not 0 <= tick < NONE32:
        raise ValueError("tick must be an int in [0, 2**32 - 1)")
    if baseline is not None and not (isinstance(baseline, View) and 0 <= baseline.tick < tick):
        raise ValueError("baseline must be a View with 0 <= baseline.tick < tick")
    if type(input_ack) is not int or not -1 <= input_ack < NONE32:
        raise ValueError("input_ack must be an int in [-1, 2**32 - 1)")
    if type(self_id) is not int or not 0 <= self_id <= NONE32:
        raise ValueError("self_id must be a uint32")
    if type(part_budget) is not int or not MIN_PART_BUDGET <= part_budget <= MAX_PAYLOAD:
        raise ValueError(f"part_budget must be an int in [{MIN_PART_BUDGET}, {MAX_PAYLOAD}]")
    if allowance is not None and (type(allowance) is not int or allowance < part_budget):
        raise ValueError("allowance must be None or an int >= part_budget")
    if not (
        isinstance(cand_ids, np.ndarray)
        and cand_ids.dtype == np.uint32
        and cand_ids.ndim == 1
        and isinstance(cand_q, np.ndarray)
        and cand_q.dtype == np.int32
        and cand_q.shape == (len(cand_ids), FIELDS)
    ):
        raise ValueError("cand_ids must be uint32 (n,), cand_q int32 (n, 5)")
    if len(cand_ids) > MAX_ENTITIES:
        raise ValueError(f"more than {MAX_ENTITIES} candidates")
    if priority is not None and np.shape(priority) != (len(cand_ids),):
        raise ValueError("priority must have one value per candidate")


def check_state(ids: np.ndarray, q: np.ndarray, layout: Layout) -> None:
    """Raise ValueError unless ids are sorted/unique and every q value is in range.

    The encoders assume this of their candidates (checking it per client per tick would cost
    more than the rest); call it once per tick on the world state, or pass ``check=True``.
    """
    _, limits = _layout(layout)
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise ValueError("ids must be sorted ascending and unique")
    if len(q) and not (
        bool(np.all(q[:, :3] >= 0))
        and bool(np.all(q[:, :3] <= np.array(limits)))
        and bool(np.all((q[:, 3:] >= 0) & (q[:, 3:] <= (0xFFFF, 0xFF))))
    ):
        raise ValueError("state out of range (positions, yaw 0..65535, anim 0..255)")


def max_parts_for(allowance: int | None, part_budget: int) -> int:
    """How many parts fit a tick's byte allowance (each costs its budget plus a 13-byte
    packet header); None: no allowance, up to MAX_PARTS."""
    if allowance is None:
        return MAX_PARTS
    return max(1, min(MAX_PARTS, allowance // (part_budget + 13)))


def min_parts(n_baseline: int, part_budget: int) -> int:
    """The fewest parts any snapshot against a baseline of ``n_baseline`` entities may take
    (each baseline entity costs at least its bit): an allowance never goes below it."""
    return -(-n_baseline // (part_capacity_bits(part_budget) - MAX_ITEM_BITS)) or 1


def encode_snapshot(
    *,
    tick: int,
    baseline: View | None,
    cand_ids: np.ndarray,
    cand_q: np.ndarray,
    priority: np.ndarray | None = None,
    part_budget: int,
    allowance: int | None = None,
    input_ack: int,
    self_id: int,
    layout: Layout,
    check: bool = False,
) -> Encoded:
    """Encode the candidates of ``tick`` against ``baseline`` (None: a full snapshot).

    Every part is at most ``part_budget`` bytes. ``allowance`` bounds the bytes of the whole
    tick (parts times their budget plus packet headers, see ``max_parts_for``); when the
    snapshot would need more parts than that, removals go first (in id order, as many as fit),
    then added/updated candidates by descending ``priority`` (None: in candidate order): an
    unchosen added entity stays out of the view, an unchosen update keeps its baseline value,
    an unsent removal stays in the view (SPEC 5.4).

    Preconditions (see ``check_state``; verified only with ``check=True``): cand_ids sorted
    and unique, cand_q in range for ``layout``. ValueError if the arguments are invalid.
    """
    _check_args(tick, baseline, cand_ids, cand_q, priority, part_budget, allowance, input_ack, self_id)
    pdt, _ = _layout(layout)
    if check:
        check_state(cand_ids, cand_q, layout)
    base = EMPTY_VIEW if baseline is None else baseline
    bids = base.ids
    n, nb = len(cand_ids), len(bids)
    add_bits = 8 * (4 + state_size(pdt))

    # Match candidates with the baseline (both sorted).
    if nb:
        pos = bids.searchsorted(cand_ids)
        inb = bids.take(pos, mode="clip") == cand_ids
    else:
        pos = np.zeros(n, dtype=np.int64)
        inb = np.zeros(n, dtype=bool)
    in_cand = np.zeros(nb, dtype=bool)
    in_cand[pos[inb]] = True
    rem = (~in_cand).nonzero()[0]  # baseline indices of removals
    zz = np.zeros((n, FIELDS), dtype=np.uint32)
    if nb:
        zz[inb] = zigzag(cand_q[inb], base.q.take(pos[inb], axis=0))
    _, rec_len = build_records(zz)  # per candidate; only kept rows have deltas

    # Item costs in bits: removed 32; added 8*(4+state); kept 1 + 8*record.
    cost = np.where(inb, 1 + 8 * rec_len, add_bits)
    max_parts = max(max_parts_for(allowance, part_budget), min_parts(nb, part_budget))
    sel_rem = np.ones(len(rem), dtype=bool)
    sel = np.ones(n, dtype=bool)  # candidates whose state is sent (or kept as is)
    total_bits = 32 * len(rem) + int(cost.sum())
    cap = part_capacity_bits(part_budget)
    if total_bits > max_parts * (cap - MAX_ITEM_BITS) and len(
        cut_parts(_item_bits(bids[rem], cand_ids, cost), part_budget)
    ) > max_parts:
        # Every baseline entity costs its update bit (unsent removals stay kept); a removal
        # sent costs 31 bits more. Removals first, in id order, as many as fit.
        left = max_parts * (cap - MAX_ITEM_BITS) - nb
        k_rem = min(len(rem), max(left, 0) // 31)
        sel_rem[k_rem:] = False
        left -= 31 * k_rem
        extra = np.where(inb, 8 * rec_len, add_bits)
        cand = extra.nonzero()[0]
        if priority is not None:
            prio = np.asarray(priority, dtype=np.float64).take(cand)
            cand = cand.take((-prio).argsort(kind="stable"))
        k = int(extra.take(cand).cumsum().searchsorted(max(left, 0), side="right"))
        sel = np.zeros(n, dtype=bool)
        sel[cand[:k]] = True
        sel |= inb & (rec_len == 0)  # unchanged kept entities are current anyway
    complete = bool(sel.all()) and bool(sel_rem.all())

    # The client's view: kept (new value if chosen, else baseline), chosen added, unsent
    # removals at their baseline value.
    view_sel = sel | inb
    new_q = cand_q.copy()
    stale = inb & ~sel
    if stale.any():
        new_q[stale] = base.q.take(pos[stale], axis=0)
    ids, q = cand_ids.compress(view_sel), new_q.compress(view_sel, axis=0)
    stay = rem[~sel_rem]
    if len(stay):
        ids = np.concatenate([ids, bids.take(stay)])
        q = np.concatenate([q, base.q.take(stay, axis=0)])
        order = ids.argsort(kind="stable")
        ids, q = ids.take(order), q.take(order, axis=0)
    view = View(tick, _frozen(ids), _frozen(q))

    # What goes on the wire: removals chosen, candidates in the view (kept: record if chosen
    # and changed; added: record if chosen), and unsent removals as kept-unchanged entities.
    sent_rec = sel & inb & (rec_len > 0)
    zz_sent = np.where(sent_rec[:, None], zz, 0).astype(np.uint32)
    rec_buf, rec_len_sent = build_records(zz_sent)
    parts = _assemble(
        tick, None if baseline is None else baseline.tick, input_ack, self_id, part_budget, pdt,
        rem_ids=bids.take(rem[sel_rem]), stay_ids=bids.take(stay),
        cand_ids=cand_ids, cand_q=cand_q, kept=inb, added=sel & ~inb,
        rec_buf=rec_buf, rec_len=rec_len_sent,
    )  # fmt: skip
    if len(parts) > max_parts:  # cannot happen: the costs above are upper bounds
        raise RuntimeError(f"snapshot of {len(parts)} parts exceeds {max_parts}")
    return Encoded(parts, view, sel & (~inb | (rec_len > 0)), complete)


def _item_bits(rem_ids: np.ndarray, cand_ids: np.ndarray, cand_cost: np.ndarray) -> np.ndarray:
    """Item costs (bits) in id order, removals and candidates merged."""
    ids = np.concatenate([rem_ids, cand_ids])
    bits = np.concatenate([np.full(len(rem_ids), 32, dtype=np.int64), cand_cost.astype(np.int64)])
    return bits.take(ids.argsort(kind="stable"))


def _assemble(tick, baseline_tick, input_ack, self_id, part_budget, pdt, *, rem_ids, stay_ids,
              cand_ids, cand_q, kept, added, rec_buf, rec_len) -> list[bytes]:
    """Cut the items into parts and write each part (header, removed, added, bitmap, records)."""
    in_view = kept | added
    v_ids = cand_ids.compress(in_view)
    v_kept = kept.compress(in_view)
    v_rec = rec_len.compress(in_view)
    add_bits = 8 * (4 + state_size(pdt))
    # Items: removals (R), in-view candidates, unsent removals (kept, unchanged).
    ids = np.concatenate([rem_ids, v_ids, stay_ids])
    kind = np.concatenate([
        np.zeros(len(rem_ids), np.int8), np.where(v_kept, 2, 1).astype(np.int8), np.full(len(stay_ids), 2, np.int8)
    ])  # fmt: skip
    rlen = np.concatenate([np.zeros(len(rem_ids), np.int64), v_rec, np.zeros(len(stay_ids), np.int64)])
    order = ids.argsort(kind="stable")
    ids, kind, rlen = ids.take(order), kind.take(order), rlen.take(order)
    bits = np.where(kind == 0, 32, np.where(kind == 1, add_bits, 1 + 8 * rlen))
    ends = cut_parts(bits, part_budget)
    starts = [0] + ends[:-1]
    ranges = part_ranges([int(ids[s]) if s < len(ids) else 0 for s in starts])

    add_mask = added.compress(in_view)
    add_rows = added_records(v_ids.compress(add_mask), cand_q.compress(in_view, axis=0).compress(add_mask, axis=0), pdt)
    rec_start = np.zeros(len(rlen) + 1, dtype=np.int64)
    np.cumsum(rlen, out=rec_start[1:])  # records in item order (kept items only have any)
    is_add = kind == 1
    add_before = np.concatenate(([0], np.cumsum(is_add)))
    rec_bytes = rec_buf.tobytes()
    parts = []
    nparts = len(ends)
    for p, (s, e) in enumerate(zip(starts, ends)):
        k = kind[s:e]
        rem = ids[s:e][k == 0].astype("<u4").tobytes()
        kk = k == 2
        upd = np.packbits(rlen[s:e][kk] > 0, bitorder="little").tobytes()
        head = pack_header(tick, baseline_tick, input_ack, self_id, p, nparts, ranges[p][0], ranges[p][1],
                           len(rem) // 4, int(add_before[e] - add_before[s]), int(np.count_nonzero(kk)))  # fmt: skip
        parts.append(
            head + rem + add_rows[add_before[s] : add_before[e]].tobytes() + upd
            + rec_bytes[rec_start[s] : rec_start[e]]
        )  # fmt: skip
    return parts


# ----------------------------------------------------------------------------- decoding


def _ids(data: np.ndarray, name: str, first: int, last: int) -> np.ndarray:
    ids = data.view("<u4").astype(np.uint32)
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
        raise ProtocolError("unsorted_ids", f"{name} must be strictly ascending")
    if len(ids) and (int(ids[0]) < first or int(ids[-1]) > last):
        raise ProtocolError("bad_range", f"{name} outside the part's id range")
    return ids


def read_header(payload) -> PartHeader:
    """The header of a part, validated on its own (ProtocolError if malformed)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ProtocolError("bad_type", "payload must be bytes")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("oversized", f"snapshot part of {len(payload)} bytes")
    if len(payload) < HEADER_SIZE:
        raise ProtocolError("truncated", f"snapshot part of {len(payload)} bytes")
    tick, bt, ack, self_id, part, parts, first, last, _, _, _ = PART_HEADER.unpack_from(payload)
    if tick == NONE32:
        raise ProtocolError("bad_field", "tick 0xFFFFFFFF")
    if bt != NONE32 and bt >= tick:
        raise ProtocolError("bad_field", "baseline_tick must be older than tick")
    if parts == 0 or part >= parts:
        raise ProtocolError("bad_range", f"part {part} of {parts}")
    if first > last or (part == 0 and first != 0) or (part == parts - 1 and last != NONE32):
        raise ProtocolError("bad_range", f"part {part} of {parts} covers [{first}, {last}]")
    return PartHeader(tick, None if bt == NONE32 else bt, -1 if ack == NONE32 else ack, self_id,
                      part, parts, first, last)  # fmt: skip


def decode_part(payload, baselines: Baselines, position_dtype: Layout) -> tuple[PartHeader, View]:
    """Decode one part into its header and the View of its id range.

    ``baselines`` gives the client's stored (complete) Views by tick (a Mapping or a callable
    returning None when unknown). ``position_dtype`` is '<u2'/'<u4' or the Quantizer (which
    also bounds positions to its steps). Raises only ProtocolError; ``reason`` is
    "unknown_baseline" when the baseline is not stored (drop the part).
    """
    pdt, limits = _layout(position_dtype)
    hi = np.array((*limits, 0xFFFF, 0xFF), dtype=np.int64)
    header = read_header(payload)
    buf = np.frombuffer(payload, dtype=np.uint8)
    nr, na, nk = PART_HEADER.unpack_from(payload)[8:]
    first, last = header.first_id, header.last_id
    ssz = state_size(pdt)
    at = HEADER_SIZE
    end_fixed = at + 4 * nr + na * (4 + ssz) + ((nk + 7) >> 3)
    if len(buf) < end_fixed:
        raise ProtocolError("bad_length", "part shorter than its counts")
    removed = _ids(buf[at : at + 4 * nr], "removed", first, last)
    at += 4 * nr
    arec = buf[at : at + na * (4 + ssz)].reshape(na, 4 + ssz)
    added = _ids(np.ascontiguousarray(arec[:, :4]).reshape(-1), "added", first, last)
    at += na * (4 + ssz)
    upd_raw = buf[at : at + ((nk + 7) >> 3)]
    at += (nk + 7) >> 3
    if nk & 7 and upd_raw[-1] >> (nk & 7):
        raise ProtocolError("bad_padding", "upd has nonzero padding bits")
    upd = np.unpackbits(upd_raw, count=nk, bitorder="little").astype(bool)

    bt = header.baseline_tick
    if bt is None:
        base = EMPTY_VIEW
    else:
        base = baselines.get(bt) if isinstance(baselines, Mapping) else baselines(bt)
        if base is None or base.tick != bt:
            raise ProtocolError("unknown_baseline", f"baseline tick {bt}")
    a, b = int(base.ids.searchsorted(first)), int(base.ids.searchsorted(last, side="right"))
    bids, bq = base.ids[a:b], base.q[a:b]
    nb = len(bids)

    keep_b = None
    if nr:
        rpos = bids.searchsorted(removed)
        if nb == 0 or not (bids.take(rpos, mode="clip") == removed).all():
            raise ProtocolError("bad_removed", "removed id not in baseline")
        keep_b = np.ones(nb, dtype=bool)
        keep_b[rpos] = False
    if nb - nr != nk:
        raise ProtocolError("bad_kept_count", f"K is {nk}, the baseline keeps {nb - nr}")
    if nk + na > MAX_ENTITIES:
        raise ProtocolError("too_many_entities", f"{nk + na} entities")
    kept_ids = bids if keep_b is None else bids.compress(keep_b)
    kept_q = bq if keep_b is None else bq.compress(keep_b, axis=0)

    # Records: follow the chain of lengths (each known from its first two bytes).
    nu = int(np.count_nonzero(upd))
    rec = buf[at:]
    if nu:
        m = len(rec)
        r16 = np.zeros(m + 1, dtype=np.int64)
        r16[:m] = rec
        hw = (r16[:m] & WIDE_FLAG) != 0
        wnext = np.where(hw, r16[1 : m + 1], 0)
        lens = 1 + hw + _POPCOUNT.take(r16[:m] & 0x1F) + 3 * _POPCOUNT.take(wnext & 0x1F)
        lens = np.where(r16[:m] & 0x40, 2, lens).tolist()  # a packed walk: mask and one byte
        starts = []
        p = 0
        for _ in range(nu):
            if p >= m:
                raise ProtocolError("bad_length", "records shorter than the updated entities")
            starts.append(p)
            p += lens[p]
        if p != m:
            raise ProtocolError("bad_length", f"records end at {p}, part at {m}")
        st = np.array(starts, dtype=np.int64)
        mask = r16.take(st)
        pk = mask == PACKED
        has_w = ((mask & WIDE_FLAG) != 0) & ~pk
        wide = np.where(has_w, r16.take(st + 1), 0)
        if ((mask & 0x1F) == 0).any() or (mask & 0x80).any() or (((mask & 0x40) != 0) & ~pk).any() or (
            has_w & (wide == 0)
        ).any() or (wide & ~(mask & 0x1F)).any():  # wide: a subset of the changed fields
            raise ProtocolError("bad_mask", "invalid record mask")
        if pk.any():  # unpack walks into the ordinary layout: x and z narrow
            nib = r16.take(st[pk] + 1)
            if ((nib & 0x0F) == 0).any() or ((nib >> 4) == 0).any():
                raise ProtocolError("bad_delta", "zero delta in a packed walk")
            mask = np.where(pk, 0x05, mask)
        bits = ((mask[:, None] >> np.arange(FIELDS)) & 1).astype(bool)
        wbits = ((wide[:, None] >> np.arange(FIELDS)) & 1).astype(bool)
        width = bits.astype(np.int64) + 3 * wbits
        off = np.cumsum(width, axis=1) - width + (st + 1 + has_w)[:, None]
        zz = np.zeros((nu, FIELDS), dtype=np.int64)
        narrow = bits & ~wbits
        if pk.any():
            narrow_u = narrow.copy()
            narrow_u[pk] = False
            zz[narrow_u] = r16.take(off[narrow_u])
            zz[pk, 0] = nib & 0x0F
            zz[pk, 2] = nib >> 4
        else:
            zz[narrow] = r16.take(off[narrow])
        walk = ~pk & (mask == 0x05) & (zz[:, 0] <= PACKED_MAX) & (zz[:, 2] <= PACKED_MAX)
        if walk.any():
            raise ProtocolError("bad_delta", "a small walk not packed (the encoding is canonical)")
        if wbits.any():
            wo = off[wbits]
            zz[wbits] = r16.take(wo) | (r16.take(wo + 1) << 8) | (r16.take(wo + 2) << 16) | (r16.take(wo + 3) << 24)
            if (zz[wbits] < 256).any():
                raise ProtocolError("bad_delta", "wide value below 256")
        if (zz[narrow] == 0).any():
            raise ProtocolError("bad_delta", "zero delta for a changed field")
        delta = (zz >> 1) ^ -(zz & 1)
        dy = delta[:, 3]
        if not ((dy >= -32768) & (dy <= 32767)).all():
            raise ProtocolError("bad_delta", "yaw delta out of [-32768, 32767]")
        new = kept_q.compress(upd, axis=0).astype(np.int64) + delta
        new[:, 3] &= 0xFFFF
        _check_ranges(new, hi)
        kept_q = kept_q.copy()
        kept_q[upd] = new.astype(np.int32)
    elif len(rec):
        raise ProtocolError("bad_length", "records without updated entities")

    if na:
        if nb:
            apos = bids.searchsorted(added)
            if (bids.take(apos, mode="clip") == added).any():
                raise ProtocolError("bad_added", "added id already in baseline")
        st_rows = np.ascontiguousarray(arec[:, 4:])
        rows = st_rows.view([("p", pdt, (3,)), ("yaw", "<u2"), ("anim", "u1")]).reshape(na)
        aq = np.empty((na, FIELDS), dtype=np.int64)
        aq[:, :3] = rows["p"]
        aq[:, 3] = rows["yaw"]
        aq[:, 4] = rows["anim"]
        _check_ranges(aq, hi)
        ids = np.concatenate([kept_ids, added])
        q = np.concatenate([kept_q, aq.astype(np.int32)])
        order = ids.argsort(kind="stable")
        ids, q = ids.take(order), q.take(order, axis=0)
    else:
        ids, q = kept_ids, kept_q
    return header, View(header.tick, _frozen(np.array(ids)), _frozen(np.array(q)))


def _check_ranges(q: np.ndarray, hi: np.ndarray) -> None:
    """q is int64 (m, 5); every value must be in [0, hi] (hi: one bound per column)."""
    if len(q) and (q.min() < 0 or not (q <= hi).all()):
        raise ProtocolError("out_of_range", "position or anim out of range")


class PartAssembler:
    """A client's decoded views: parts collected per tick, complete ticks stored by tick.

    ``add(payload)`` decodes a part against the stored views and returns its header; when
    the tick has all its parts, its view is stored (the newest ``keep`` ticks) and, if newer,
    becomes ``view`` (the mirror). Malformed or mismatching parts (another baseline, part
    count, input_ack or self_id than the tick's earlier parts, or an id range that does not
    follow theirs) raise ProtocolError and change nothing. Incomplete ticks are held while
    their missing parts may still arrive and be acknowledged (SPEC 5.3: at least
    ``MIN_PENDING``); older incomplete ticks are forgotten once a newer tick completes.
    """

    def __init__(self, layout: Layout, keep: int = 64, max_pending: int = MIN_PENDING) -> None:
        self.layout = layout
        self.keep = keep
        self.max_pending = max_pending
        self.views: dict[int, View] = {}
        self.view: View = EMPTY_VIEW
        self.header: PartHeader | None = None  # a header of the mirror's tick
        # tick -> (first part's header, {part: (first_id, last_id, view)})
        self._pending: dict[int, tuple[PartHeader, dict[int, tuple[int, int, View]]]] = {}

    def add(self, payload) -> tuple[PartHeader, bool]:
        """Decode one part; returns (header, whether this part completed its tick)."""
        header = read_header(payload)
        tick = header.tick
        if tick in self.views:
            return header, False  # already complete: a duplicate
        pend = self._pending.get(tick)
        if pend is not None:
            h0, got = pend
            if (h0.baseline_tick, h0.parts, h0.input_ack, h0.self_id) != (
                header.baseline_tick, header.parts, header.input_ack, header.self_id
            ):
                raise ProtocolError("part_mismatch", "part disagrees with its tick's other parts")
            if header.part in got:
                return header, False
            before, after = got.get(header.part - 1), got.get(header.part + 1)
            if (before is not None and before[1] + 1 != header.first_id) or (
                after is not None and header.last_id + 1 != after[0]
            ):
                raise ProtocolError("part_mismatch", "the part's id range does not follow its neighbours'")
            if any(
                (p < header.part and r[1] >= header.first_id) or (p > header.part and r[0] <= header.last_id)
                for p, r in got.items()
            ):
                raise ProtocolError("part_mismatch", "the part's id range overlaps another part's")
        elif len(self._pending) >= self.max_pending and tick < min(self._pending):
            raise ProtocolError("stale_part", "older than every tick held")
        _, view = decode_part(payload, self.views, self.layout)
        if pend is None:
            if len(self._pending) >= self.max_pending:
                del self._pending[min(self._pending)]
            pend = self._pending[tick] = (header, {})
        got = pend[1]
        got[header.part] = (header.first_id, header.last_id, view)
        if len(got) < header.parts:
            return header, False
        del self._pending[tick]
        if header.parts == 1:
            full = view
        else:
            pieces = [got[p][2] for p in range(header.parts)]
            full = View(tick, _frozen(np.concatenate([v.ids for v in pieces])),
                        _frozen(np.concatenate([v.q for v in pieces])))  # fmt: skip
        views = self.views
        views[tick] = full
        if len(views) > self.keep:
            for t in sorted(views)[: len(views) - self.keep]:
                del views[t]
        if tick > self.view.tick:
            self.view = full
            self.header = header
            for t in [t for t in self._pending if t < tick]:
                del self._pending[t]
        return header, True
