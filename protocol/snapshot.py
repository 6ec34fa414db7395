"""Delta snapshots (Quake-3 model): encode a client's visible entity set against a baseline.

The job of this module: given the View of the newest snapshot a client acknowledged (the
baseline) and the entities that client should see this tick, build one size-bounded snapshot
payload (``encode_snapshot``), and on the client turn a payload plus its own stored Views
back into the new View (``decode_snapshot``). The wire layout is in protocol/SPEC.md section 5.

It must not do I/O, read clocks, or keep state between calls: the per-client ring of sent
Views lives with the caller (server), the decoded Views with the client. Encoding runs per
client per tick, so it is vectorized over all entities with as few numpy calls as possible;
no Python loop runs over entities. Decoding is strict and bounded, and raises only
:class:`ProtocolError` for malformed input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Union

import attrs
import msgpack
import numpy as np

from protocol.errors import ProtocolError
from protocol.quantize import Quantizer

MAX_ENTITIES = 65536  # entities in one View
MAX_PAYLOAD = 65535  # bytes; budgets and decodable payloads are at most this
MAX_TICK = 2**32 - 1
FIELDS = 5  # x, y, z, yaw, anim
WIDE = 255  # small-byte value that escapes to a 4-byte wide value
# Bytes reserved for rounding up the two bit masks in the over-budget path.
_MASK_SLACK = 2
_ONES5 = np.ones(FIELDS, dtype=bool)
_ONES5_U8 = np.ones(FIELDS, dtype=np.uint8)

_UNPACK_LIMITS = dict(
    raw=False,
    strict_map_key=True,
    use_list=True,
    max_str_len=0,
    max_bin_len=MAX_PAYLOAD,
    max_array_len=11,
    max_map_len=0,
    max_ext_len=0,
)

Layout = Union[Quantizer, str]
Baselines = Union[Callable[[int], "View | None"], Mapping[int, "View"]]


def _arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


@attrs.frozen
class View:
    """What a client's mirror holds after applying the snapshot of ``tick``.

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
class SnapshotHeader:
    """The scalar fields of a snapshot."""

    tick: int
    baseline_tick: int | None
    input_ack: int
    self_id: int


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


def _int_size(v: int | None) -> int:
    """Bytes msgpack uses for an int (or nil)."""
    if v is None or -32 <= v <= 127:
        return 1
    if v > 0:
        return 2 if v <= 0xFF else 3 if v <= 0xFFFF else 5 if v <= 0xFFFFFFFF else 9
    return 2 if v >= -128 else 3 if v >= -32768 else 5 if v >= -(2**31) else 9


def _bin_size(n: int) -> int:
    """Bytes msgpack uses for a bin of n bytes, header included."""
    return n + (2 if n <= 0xFF else 3 if n <= 0xFFFF else 5)


def _state_bytes(q: np.ndarray, pdt: np.dtype) -> bytes:
    """Absolute state, column-major: x, y, z (pdt), yaw <u2, anim u1."""
    return (
        q[:, :3].T.astype(pdt).tobytes()
        + q[:, 3].astype("<u2").tobytes()
        + q[:, 4].astype(np.uint8).tobytes()
    )


def _check_args(tick, baseline, cand_ids, cand_q, priority, budget, input_ack, self_id) -> None:
    if type(tick) is not int or not 0 <= tick <= MAX_TICK:
        raise ValueError("tick must be an int in [0, 2**32)")
    if baseline is not None and not (isinstance(baseline, View) and 0 <= baseline.tick < tick):
        raise ValueError("baseline must be a View with 0 <= baseline.tick < tick")
    if type(input_ack) is not int or not -1 <= input_ack <= MAX_TICK:
        raise ValueError("input_ack must be an int in [-1, 2**32)")
    if type(self_id) is not int or not 0 <= self_id <= 0xFFFFFFFF:
        raise ValueError("self_id must be a uint32")
    if type(budget) is not int or budget > MAX_PAYLOAD:
        raise ValueError(f"budget must be an int <= {MAX_PAYLOAD}")
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

    ``encode_snapshot`` assumes this of its candidates (checking it per client per tick
    would cost more than the rest); call it once per tick on the world state, or pass
    ``check=True``.
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


def encode_snapshot(
    *,
    tick: int,
    baseline: View | None,
    cand_ids: np.ndarray,
    cand_q: np.ndarray,
    priority: np.ndarray | None = None,
    budget: int,
    input_ack: int,
    self_id: int,
    layout: Layout,
    check: bool = False,
) -> tuple[bytes, View, np.ndarray]:
    """Encode the candidates of ``tick`` against ``baseline`` (None: a full snapshot).

    Returns ``(payload, view, sent)``: the payload (at most ``budget`` bytes), the View the
    client will hold after applying it (store it in the ring under ``tick``), and a bool
    mask over candidates of those whose state was sent (added or updated).

    When everything fits, the view equals the candidate set. Otherwise removals go first
    (as many as fit), then added/updated candidates by descending ``priority`` (None: in
    candidate order) as long as the running total fits; an unchosen added entity stays out of
    the view, an unchosen update keeps its baseline value, an unsent removal stays in the view.

    Preconditions (see ``check_state``; verified only with ``check=True``): cand_ids sorted
    and unique, cand_q in range for ``layout``. ValueError if the arguments are invalid or
    ``budget`` cannot hold even an empty delta against this baseline.
    """
    _check_args(tick, baseline, cand_ids, cand_q, priority, budget, input_ack, self_id)
    pdt, _ = _layout(layout)
    if check:
        check_state(cand_ids, cand_q, layout)
    base = EMPTY_VIEW if baseline is None else baseline
    base_tick = None if baseline is None else baseline.tick
    bids = base.ids
    n, nb = len(cand_ids), len(bids)
    state_size = 3 * pdt.itemsize + 3

    # Match candidates with the baseline (both sorted): pos[i] is where cand i sits in bids.
    # (Array methods rather than np.* functions: they skip the dispatch overhead.)
    if nb:
        pos = bids.searchsorted(cand_ids)
        inb = bids.take(pos, mode="clip") == cand_ids
        n_in = int(np.count_nonzero(inb))
    else:
        pos = inb = None
        n_in = 0

    rem = None  # indices into bids of entities to remove
    if n_in < nb:
        keep_b = np.ones(nb, dtype=bool)
        keep_b[pos.compress(inb)] = False
        rem = keep_b.nonzero()[0]
    nr = nb - n_in

    # Deltas of the candidates that are in the baseline (kept), in baseline order.
    if n_in:
        if n_in == n:
            kept_pos, cand_k = pos, cand_q
        else:
            kept_pos, cand_k = pos.compress(inb), cand_q.compress(inb, axis=0)
        base_k = base.q.take(kept_pos, axis=0)
        d = cand_k - base_k
        d[:, 3] = d[:, 3].astype(np.int16)  # yaw delta wrapped to [-32768, 32767]
        zz = d << 1  # zigzag: (d << 1) ^ (d >> 31)
        d >>= 31
        zz ^= d
        zz = zz.view(np.uint32)
        ch = zz != 0
        vals = zz.compress(ch.ravel())  # row-major
        upd = ch @ _ONES5  # bool matmul: any changed field per row
        n_upd = int(np.count_nonzero(upd))
        wm = vals >= WIDE
        n_wide = int(np.count_nonzero(wm))
        n_vals = len(vals)
    else:
        n_upd = n_wide = n_vals = 0
    na = n - n_in

    size = (
        1
        + _int_size(tick)
        + _int_size(base_tick)
        + _int_size(input_ack)
        + _int_size(self_id)
        + _bin_size(4 * nr)
        + _bin_size(4 * na)
        + _bin_size(state_size * na)
        + _bin_size((n_in + 7) >> 3)
        + _bin_size((FIELDS * n_upd + 7) >> 3)
        + _bin_size(n_vals)
        + _bin_size(4 * n_wide)
    )
    if size > budget:
        kept = (kept_pos, cand_k, base_k, ch, zz, upd) if n_in else None
        return _encode_over_budget(
            tick, base, base_tick, cand_ids, cand_q, priority, budget, input_ack, self_id,
            pdt, pos, inb, n_in, rem, kept, n_wide,
        )  # fmt: skip

    # Everything fits: send it all; the new view is the candidate set.
    removed = bids.take(rem).astype("<u4").tobytes() if nr else b""
    if na == n:
        added_ids = cand_ids.astype("<u4").tobytes()
        added_state = _state_bytes(cand_q, pdt)
    elif na:
        addm = ~inb
        added_ids = cand_ids.compress(addm).astype("<u4").tobytes()
        added_state = _state_bytes(cand_q.compress(addm, axis=0), pdt)
    else:
        added_ids = added_state = b""
    if n_in:
        upd_mask = np.packbits(upd, bitorder="little").tobytes()
        field_mask = np.packbits(ch.compress(upd, axis=0), bitorder="little").tobytes()
        small = vals.astype(np.uint8)
        if n_wide:
            small[wm] = WIDE
            wide = vals.compress(wm).astype("<u4").tobytes()
        else:
            wide = b""
        small = small.tobytes()
        if n_in == n:
            sent = upd
        else:
            sent = ~inb
            sent[inb] = upd
    else:
        upd_mask = field_mask = small = wide = b""
        sent = np.ones(n, dtype=bool)
    payload = msgpack.packb(
        [tick, base_tick, input_ack, self_id, removed, added_ids, added_state,
         upd_mask, field_mask, small, wide]
    )  # fmt: skip
    view = View(tick, _frozen(cand_ids.copy()), _frozen(cand_q.copy()))
    return payload, view, sent


def _encode_over_budget(
    tick, base, base_tick, cand_ids, cand_q, priority, budget, input_ack, self_id,
    pdt, pos, inb, n_in, rem, kept, n_wide,
) -> tuple[bytes, View, np.ndarray]:  # fmt: skip
    """The rare path: choose what to send by priority with conservative per-item costs.

    ``kept`` is None (no candidate in the baseline) or, over the kept candidates in baseline
    order: their baseline positions, candidate rows, baseline rows, changed-field mask,
    zigzag deltas and updated mask.
    """
    n, nb = len(cand_ids), len(base.ids)
    state_size = 3 * pdt.itemsize + 3
    hdr = 3  # bin header bytes; every bin is <= budget <= 65535 bytes
    overhead = (
        1
        + _int_size(tick)
        + _int_size(base_tick)
        + _int_size(input_ack)
        + _int_size(self_id)
        + 7 * hdr
        + _MASK_SLACK
        + ((nb + 7) >> 3)  # upd_mask bits for every baseline entity, an upper bound
    )
    left = budget - overhead
    if left < 0:
        raise ValueError(f"budget {budget} cannot hold a snapshot against this baseline")

    # Removals first: as many as fit, in baseline order.
    nr = 0 if rem is None else len(rem)
    k_rem = min(nr, left // 4)
    left -= 4 * k_rem

    # Per-candidate costs in bits: added 8*(4+state), updated 5 + 8/field + 32/wide, unchanged
    # kept 0. Row sums as uint8 matmuls (cheaper than sum(axis=1)); at most 5+40+160 < 256.
    if kept is not None:
        kept_pos, cand_k, base_k, ch, zz, upd = kept
        kept_cost = (ch.view(np.uint8) @ _ONES5_U8) * np.uint8(8) + np.uint8(FIELDS)
        if n_wide:
            kept_cost += ((zz >= WIDE).view(np.uint8) @ _ONES5_U8) * np.uint8(32)
        kept_cost *= upd
        if n_in == n:
            cost = kept_cost
        else:
            cost = np.full(n, 8 * (4 + state_size), dtype=np.int64)
            cost[inb] = kept_cost
        cand = cost.nonzero()[0]
    else:
        cost = np.full(n, 8 * (4 + state_size), dtype=np.int64)
        cand = np.arange(n)
    if priority is not None:
        prio = np.asarray(priority, dtype=np.float64).take(cand)
        cand = cand.take((-prio).argsort(kind="stable"))
    k = int(cost.take(cand).cumsum(dtype=np.int64).searchsorted(8 * left, side="right"))
    sel = np.zeros(n, dtype=bool)
    sel[cand[:k]] = True

    removed = base.ids.take(rem[:k_rem]).astype("<u4").tobytes() if k_rem else b""
    addm = sel if inb is None else sel & ~inb
    added_ids = cand_ids.compress(addm).astype("<u4").tobytes()
    added_state = _state_bytes(cand_q.compress(addm, axis=0), pdt)

    if kept is not None:
        # Kept candidates: sent ones at their new value, the others at their baseline value
        # (the same for unchanged ones).
        sel_k = sel if n_in == n else sel.compress(inb)
        upd_sel = upd & sel_k
        new_k = base_k  # a fresh array (take), not used elsewhere: update it in place
        np.copyto(new_k, cand_k, where=sel_k[:, None])
        if nr == k_rem:  # every baseline entity not removed is a kept candidate
            upd_bits = upd_sel
        else:  # unsent removals are kept too (never updated): spread to baseline order
            keep_b = np.ones(nb, dtype=bool)
            keep_b[rem[:k_rem]] = False
            upd_b = np.zeros(nb, dtype=bool)
            upd_b[kept_pos.compress(upd_sel)] = True
            upd_bits = upd_b.compress(keep_b)
        upd_mask = np.packbits(upd_bits, bitorder="little").tobytes()
        rows_ch = ch.compress(upd_sel, axis=0)
        field_mask = np.packbits(rows_ch, bitorder="little").tobytes()
        vals = zz.compress(upd_sel, axis=0).compress(rows_ch.ravel())
        wm = vals >= WIDE
        small = vals.astype(np.uint8)
        small[wm] = WIDE
        small = small.tobytes()
        wide = vals.compress(wm).astype("<u4").tobytes()
        if n_in == n:
            new_q = new_k
            in_view = None
        else:
            new_q = cand_q.copy()
            new_q[inb] = new_k
            in_view = inb | addm
    else:
        upd_mask = bytes((nb - k_rem + 7) >> 3)  # kept = unsent removals, none updated
        field_mask = small = wide = b""
        new_q = cand_q
        in_view = addm
    if in_view is None:
        ids, q = cand_ids.copy(), new_q
    else:
        ids, q = cand_ids.compress(in_view), new_q.compress(in_view, axis=0)
    if k_rem < nr:
        stay = rem[k_rem:]
        ids = np.concatenate([ids, base.ids.take(stay)])
        q = np.concatenate([q, base.q.take(stay, axis=0)])
        order = ids.argsort(kind="stable")
        ids, q = ids.take(order), q.take(order, axis=0)
    payload = msgpack.packb(
        [tick, base_tick, input_ack, self_id, removed, added_ids, added_state,
         upd_mask, field_mask, small, wide]
    )  # fmt: skip
    if len(payload) > budget:  # cannot happen: the costs above are upper bounds
        raise RuntimeError(f"snapshot of {len(payload)} bytes exceeds budget {budget}")
    return payload, View(tick, _frozen(ids), _frozen(q)), sel


# ----------------------------------------------------------------------------- decoding


def _uint(value: object, name: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolError("bad_field", f"{name} must be an integer in [{lo}, {hi}]")
    return value


def _bin(value: object, name: str, unit: int = 1) -> bytes:
    if type(value) is not bytes:
        raise ProtocolError("bad_field", f"{name} must be bin")
    if len(value) % unit:
        raise ProtocolError("bad_length", f"{name} length {len(value)} not a multiple of {unit}")
    return value


def _bits(data: bytes, count: int, name: str) -> np.ndarray:
    """Unpack exactly ``count`` little-endian-ordered bits; length and padding are checked."""
    if len(data) != (count + 7) >> 3:
        raise ProtocolError("bad_length", f"{name} has {len(data)} bytes for {count} bits")
    if count & 7 and data[-1] >> (count & 7):
        raise ProtocolError("bad_padding", f"{name} has nonzero padding bits")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count, bitorder="little")


def _ids(data: bytes, name: str) -> np.ndarray:
    ids = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
        raise ProtocolError("unsorted_ids", f"{name} must be strictly ascending")
    return ids


def decode_snapshot(
    payload: bytes, baselines: Baselines, position_dtype: Layout
) -> tuple[SnapshotHeader, View]:
    """Decode a snapshot payload into its header and the new View.

    ``baselines`` gives the client's stored Views by tick (a Mapping or a callable returning
    None when unknown). ``position_dtype`` is '<u2'/'<u4' or the Quantizer (which also bounds
    positions to its steps). Raises only ProtocolError; ``reason`` is "unknown_baseline" when
    the baseline is not stored (drop the snapshot).
    """
    pdt, limits = _layout(position_dtype)
    hi = np.array((*limits, 0xFFFF, 0xFF), dtype=np.int64)
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ProtocolError("bad_type", "payload must be bytes")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("oversized", f"snapshot of {len(payload)} bytes")
    try:
        msg = msgpack.unpackb(payload, **_UNPACK_LIMITS)
    except Exception as exc:  # msgpack raises many types (ValueError, ExtraData, ...)
        raise ProtocolError("bad_msgpack", type(exc).__name__) from None
    if type(msg) is not list or len(msg) != 11:
        raise ProtocolError("bad_shape", "snapshot must be an array of 11 elements")
    tick = _uint(msg[0], "tick", 0, MAX_TICK)
    bt = msg[1]
    if bt is not None:
        bt = _uint(bt, "baseline_tick", 0, tick - 1)
    input_ack = _uint(msg[2], "input_ack", -1, MAX_TICK)
    self_id = _uint(msg[3], "self_id", 0, 0xFFFFFFFF)
    header = SnapshotHeader(tick, bt, input_ack, self_id)
    state_size = 3 * pdt.itemsize + 3
    removed = _ids(_bin(msg[4], "removed", 4), "removed")
    added = _ids(_bin(msg[5], "added_ids", 4), "added_ids")
    na = len(added)
    added_state = _bin(msg[6], "added_state")
    if len(added_state) != na * state_size:
        raise ProtocolError("bad_length", "added_state does not match added_ids")
    upd_raw, field_raw = _bin(msg[7], "upd_mask"), _bin(msg[8], "field_mask")
    small_raw, wide_raw = _bin(msg[9], "small"), _bin(msg[10], "wide", 4)

    if bt is None:
        base = EMPTY_VIEW
    else:
        base = baselines.get(bt) if isinstance(baselines, Mapping) else baselines(bt)
        if base is None or base.tick != bt:
            raise ProtocolError("unknown_baseline", f"baseline tick {bt}")
    bids, nb = base.ids, len(base.ids)

    # Removals: each must be in the baseline.
    keep_b = None
    if len(removed):
        rpos = bids.searchsorted(removed)
        if nb == 0 or not (bids.take(rpos, mode="clip") == removed).all():
            raise ProtocolError("bad_removed", "removed id not in baseline")
        keep_b = np.ones(nb, dtype=bool)
        keep_b[rpos] = False
    nk = nb - len(removed)
    if nk + na > MAX_ENTITIES:
        raise ProtocolError("too_many_entities", f"{nk + na} entities")

    # Kept entities and their updates.
    upd = _bits(upd_raw, nk, "upd_mask").astype(bool)
    nu = int(np.count_nonzero(upd))
    fields = _bits(field_raw, FIELDS * nu, "field_mask").astype(bool).reshape(nu, FIELDS)
    if nu and not (fields @ _ONES5).all():
        raise ProtocolError("bad_field_mask", "updated entity with no changed field")
    n_vals = int(np.count_nonzero(fields))
    if len(small_raw) != n_vals:
        raise ProtocolError("bad_length", f"small has {len(small_raw)} bytes for {n_vals}")
    small = np.frombuffer(small_raw, dtype=np.uint8)
    esc = small == WIDE
    n_wide = int(np.count_nonzero(esc))
    if len(wide_raw) != 4 * n_wide:
        raise ProtocolError("bad_length", f"wide has {len(wide_raw)} bytes for {n_wide}")
    kept_ids = bids if keep_b is None else bids.compress(keep_b)
    kept_q = base.q if keep_b is None else base.q.compress(keep_b, axis=0)
    if nu:
        zz = small.astype(np.int64)
        if n_wide:
            wide = np.frombuffer(wide_raw, dtype="<u4").astype(np.int64)
            if not (wide >= WIDE).all():
                raise ProtocolError("bad_delta", "wide value below 255")
            zz[esc] = wide
        if not zz.all():
            raise ProtocolError("bad_delta", "zero delta for a changed field")
        delta = np.zeros((nu, FIELDS), dtype=np.int64)
        delta[fields] = (zz >> 1) ^ -(zz & 1)
        dy = delta[:, 3]
        if not ((dy >= -32768) & (dy <= 32767)).all():
            raise ProtocolError("bad_delta", "yaw delta out of [-32768, 32767]")
        new = kept_q.compress(upd, axis=0).astype(np.int64) + delta
        new[:, 3] &= 0xFFFF
        _check_ranges(new, hi)
        kept_q = kept_q.copy()
        kept_q[upd] = new.astype(np.int32)
    elif n_wide or len(small_raw):
        raise ProtocolError("bad_length", "deltas without updated entities")

    # Additions: absolute state, must not collide with the baseline.
    if na:
        if nb:
            apos = bids.searchsorted(added)
            if (bids.take(apos, mode="clip") == added).any():
                raise ProtocolError("bad_added", "added id already in baseline")
        aq = np.empty((na, FIELDS), dtype=np.int64)
        p = 3 * na * pdt.itemsize
        aq[:, :3] = np.frombuffer(added_state, dtype=pdt, count=3 * na).reshape(3, na).T
        aq[:, 3] = np.frombuffer(added_state, dtype="<u2", count=na, offset=p)
        aq[:, 4] = np.frombuffer(added_state, dtype=np.uint8, count=na, offset=p + 2 * na)
        _check_ranges(aq, hi)
        ids = np.concatenate([kept_ids, added])
        q = np.concatenate([kept_q, aq.astype(np.int32)])
        order = ids.argsort(kind="stable")
        ids, q = ids.take(order), q.take(order, axis=0)
    else:
        ids, q = kept_ids, kept_q
    # Arrays taken unchanged from the baseline are shared, not copied (Views are immutable).
    return header, View(
        tick, ids if ids is bids else _frozen(ids), q if q is base.q else _frozen(q)
    )


def _check_ranges(q: np.ndarray, hi: np.ndarray) -> None:
    """q is int64 (m, 5); every value must be in [0, hi] (hi: one bound per column)."""
    if len(q) and (q.min() < 0 or not (q <= hi).all()):
        raise ProtocolError("out_of_range", "position or anim out of range")
