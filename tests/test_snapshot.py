"""Tests for protocol.snapshot (protocol version 2): parts, round trips, the allowance, strict
decoding, part assembly, fuzzing, size.

Must not depend on the test vectors (tests/test_snapshot_vectors.py checks those) or on any
code outside ``protocol``. Randomness comes from seeded numpy generators; no test reads a clock.
The expectations are written from protocol/SPEC.md section 5, with small independent helpers
(record lengths, the greedy cut, the part layout) rather than calls into the module under test.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from protocol.errors import ProtocolError
from protocol.quantize import Quantizer
from protocol.snapshot import (
    EMPTY_VIEW,
    MAX_ENTITIES,
    MAX_PARTS,
    MIN_PART_BUDGET,
    NONE32,
    PartAssembler,
    PartHeader,
    View,
    build_records,
    check_state,
    cut_parts,
    decode_part,
    encode_snapshot,
    max_parts_for,
    min_parts,
    read_header,
)

U2, U4 = "<u2", "<u4"
QZ = Quantizer((-100.0, 0.0, -100.0), (100.0, 20.0, 100.0), 0.01)  # 20000 x 2000 x 20000 steps
QZ4 = Quantizer((-5000.0, 0.0, -5000.0), (5000.0, 50.0, 5000.0), 0.01)  # u4 positions
LAYOUTS = [U2, U4, QZ, QZ4]
HEADER = struct.Struct("<IIIIBBIIHHH")


def limits_of(layout) -> tuple[int, int, int]:
    if isinstance(layout, Quantizer):
        return layout.steps
    return (65535,) * 3 if layout == U2 else (2**31 - 1,) * 3


def pbytes(layout) -> int:
    dt = layout.position_dtype if isinstance(layout, Quantizer) else layout
    return 2 if dt == U2 else 4


def eid(slot: int, gen: int = 0) -> int:
    return (slot << 16) | gen


def ids_of(*values) -> np.ndarray:
    return np.array(values, dtype=np.uint32)


def state(rows) -> np.ndarray:
    return np.array(rows, dtype=np.int32).reshape(-1, 5)


NO_IDS, NO_Q = ids_of(), state([])


def encode(tick, baseline, ids, q, *, part_budget=1187, allowance=None, priority=None, layout=U2,
           input_ack=7, self_id=eid(1)):  # fmt: skip
    return encode_snapshot(
        tick=tick, baseline=baseline, cand_ids=ids, cand_q=q, priority=priority,
        part_budget=part_budget, allowance=allowance, input_ack=input_ack, self_id=self_id,
        layout=layout, check=True,
    )  # fmt: skip


def assemble(parts, baseline: View | None, layout=U2, order=None) -> PartAssembler:
    asm = PartAssembler(layout)
    if baseline is not None:
        asm.views[baseline.tick] = baseline
    for i in range(len(parts)) if order is None else order:
        asm.add(parts[i])
    return asm


def random_state(rng, n, limits=(65535,) * 3) -> np.ndarray:
    q = np.empty((n, 5), dtype=np.int32)
    for a in range(3):
        q[:, a] = rng.integers(0, limits[a] + 1, n)
    q[:, 3] = rng.integers(0, 65536, n)
    q[:, 4] = rng.integers(0, 256, n)
    return q


def assert_valid_view(v: View, limits=(65535,) * 3) -> None:
    assert v.ids.dtype == np.uint32 and v.ids.ndim == 1
    assert v.q.dtype == np.int32 and v.q.shape == (len(v.ids), 5)
    assert len(v.ids) <= MAX_ENTITIES
    assert (np.diff(v.ids.astype(np.int64)) > 0).all()
    assert (v.q[:, :3] >= 0).all() and (v.q[:, :3] <= np.array(limits)).all()
    assert ((v.q[:, 3] >= 0) & (v.q[:, 3] <= 65535)).all()
    assert ((v.q[:, 4] >= 0) & (v.q[:, 4] <= 255)).all()


# ------------------------------------------------------------ independent SPEC helpers


def zz(d: int) -> int:
    return ((d << 1) ^ (d >> 31)) & 0xFFFFFFFF


def record(old, new) -> bytes:
    """SPEC 5.2 delta record of one entity (b"" when nothing changed)."""
    mask = wide = 0
    body = b""
    for f in range(5):
        d = int(new[f]) - int(old[f])
        if f == 3:
            d = ((d + 32768) % 65536) - 32768
        if d == 0:
            continue
        mask |= 1 << f
        z = zz(d)
        if z > 255:
            wide |= 1 << f
            body += struct.pack("<I", z)
        else:
            body += bytes([z])
    if not mask:
        return b""
    return bytes([mask | 0x20, wide]) + body if wide else bytes([mask]) + body


def item_bits(baseline: View | None, ids, q, layout) -> list[int]:
    """Bits of each item of the complete snapshot (no allowance), in id order (SPEC 5.4)."""
    base = {} if baseline is None else dict(zip(baseline.ids.tolist(), baseline.q.tolist()))
    cand = dict(zip(ids.tolist(), q.tolist()))
    items = []
    for i in sorted(set(base) | set(cand)):
        if i not in cand:
            items.append(32)
        elif i not in base:
            items.append(8 * (4 + 3 * pbytes(layout) + 3))
        else:
            items.append(1 + 8 * len(record(base[i], cand[i])))
    return items


def check_part_bytes(part: bytes, baseline: View | None, view: View, layout) -> None:
    """The part's sections, read per SPEC 5.2 with struct, are what its range of the view
    says: removed = baseline ids gone, added = new ids with their state, one upd bit per kept
    entity and the SPEC record of each changed one, in order, and nothing after."""
    first, last, r, a, k = HEADER.unpack_from(part)[6:]
    base = {} if baseline is None else dict(zip(baseline.ids.tolist(), baseline.q.tolist()))
    got = dict(zip(view.ids.tolist(), view.q.tolist()))
    in_range = lambda d: sorted(e for e in d if first <= e <= last)  # noqa: E731
    at = 32
    removed = list(struct.unpack_from(f"<{r}I", part, at))
    at += 4 * r
    assert removed == [e for e in in_range(base) if e not in got]
    p = pbytes(layout)
    fmt = "<I" + ("H" if p == 2 else "I") * 3 + "HB"
    added = [struct.unpack_from(fmt, part, at + i * (7 + 3 * p)) for i in range(a)]
    at += a * (7 + 3 * p)
    assert [(e, *got[e]) for e in in_range(got) if e not in base] == [tuple(x) for x in added]
    kept = [e for e in in_range(base) if e in got]
    assert k == len(kept)
    upd = [base[e] != got[e] for e in kept]
    assert part[at : at + (k + 7) // 8] == np.packbits(np.array(upd, dtype=bool), bitorder="little").tobytes()
    at += (k + 7) // 8
    assert part[at:] == b"".join(record(base[e], got[e]) for e in kept)


def check_sent(baseline: View | None, ids, q, view: View, sent) -> None:
    """``sent`` marks exactly the candidates added or updated; the rest keep what they had."""
    base = {} if baseline is None else dict(zip(baseline.ids.tolist(), baseline.q.tolist()))
    got = dict(zip(view.ids.tolist(), view.q.tolist()))
    assert sent.dtype == bool and sent.shape == ids.shape
    for i, (e, row) in enumerate(zip(ids.tolist(), q.tolist())):
        if sent[i]:
            assert got[e] == row and base.get(e) != row
        elif e in base:
            assert got[e] == base[e]  # unchanged, or an update not taken: baseline value
        else:
            assert e not in got  # an addition not taken stays out
    for e in set(got) - set(ids.tolist()):  # removals not sent keep their baseline value
        assert got[e] == base[e]


def check_parts(enc, tick, baseline, part_budget, allowance, input_ack, self_id) -> list[PartHeader]:
    nb = 0 if baseline is None else len(baseline)
    assert 1 <= len(enc.parts) <= max(max_parts_for(allowance, part_budget), min_parts(nb, part_budget))
    assert len(enc.parts) <= MAX_PARTS
    headers = [read_header(p) for p in enc.parts]
    for i, (h, p) in enumerate(zip(headers, enc.parts)):
        assert len(p) <= part_budget
        assert (h.tick, h.part, h.parts, h.input_ack, h.self_id) == (tick, i, len(enc.parts), input_ack, self_id)
        assert h.baseline_tick == (None if baseline is None else baseline.tick)
        assert h.first_id == (0 if i == 0 else headers[i - 1].last_id + 1)
    assert headers[-1].last_id == NONE32
    return headers


# ---------------------------------------------------------------------- layouts by hand


def test_full_snapshot_layout():
    ids = ids_of(eid(1), eid(2, 3), eid(65535, 65535))
    q = state([[1, 2, 3, 4, 5], [65535, 0, 300, 65535, 255], [0, 0, 0, 0, 0]])
    enc = encode(5, None, ids, q, input_ack=-1, self_id=eid(2, 3))
    assert enc.complete and enc.sent.all() and enc.view == View(5, ids, q)
    assert enc.view.ids is not ids and enc.view.q is not q
    (p,) = enc.parts
    assert p[:32] == HEADER.pack(5, NONE32, NONE32, eid(2, 3), 0, 1, 0, NONE32, 0, 3, 0)
    body = b"".join(struct.pack("<I3HHB", i, *row) for i, row in zip(ids.tolist(), q.tolist()))
    assert p[32:] == body and len(p) == 32 + 3 * 13
    h, v = decode_part(p, {}, U2)
    assert h == PartHeader(5, None, -1, eid(2, 3), 0, 1, 0, NONE32) and v == enc.view


def test_delta_layout():
    base = View(10, ids_of(eid(1), eid(2), eid(3), eid(4)), state([[100, 0, 100, 0, 1]] * 4))
    ids = ids_of(eid(1), eid(2, 1), eid(3), eid(4))  # slot 2 respawned
    q = state([[101, 0, 100, 0, 1], [5, 5, 5, 5, 5], [100, 0, 100, 0, 1], [100, 0, 400, 65535, 1]])
    enc = encode(12, base, ids, q, input_ack=9, self_id=eid(4))
    (p,) = enc.parts
    head = HEADER.pack(12, 10, 9, eid(4), 0, 1, 0, NONE32, 1, 1, 3)
    removed = struct.pack("<I", eid(2))
    added = struct.pack("<I3HHB", eid(2, 1), 5, 5, 5, 5, 5)
    upd = bytes([0b101])  # kept: 1, 3, 4; 1 and 4 updated
    recs = bytes([0x01, 2]) + bytes([0x2C, 0x04]) + struct.pack("<I", 600) + bytes([1])
    assert p == head + removed + added + upd + recs
    assert enc.sent.tolist() == [True, True, False, True] and enc.complete
    assert decode_part(p, {10: base}, U2)[1] == View(12, ids, q)


def test_unchanged_delta_is_the_bitmap_only():
    rng = np.random.default_rng(3)
    ids = np.unique(rng.integers(0, 2**32, 100, dtype=np.uint64)).astype(np.uint32)
    q = random_state(rng, len(ids))
    v1 = encode(1, None, ids, q).view
    enc = encode(2, v1, ids, q)
    assert not enc.sent.any() and enc.complete
    assert [len(p) for p in enc.parts] == [32 + (len(ids) + 7) // 8]
    assert enc.parts[0][32:] == bytes((len(ids) + 7) // 8)
    assert decode_part(enc.parts[0], {1: v1}, U2)[1] == View(2, ids, q)


def test_empty_snapshots():
    enc = encode(0, None, NO_IDS, NO_Q)
    assert enc.parts == [HEADER.pack(0, NONE32, 7, eid(1), 0, 1, 0, NONE32, 0, 0, 0)]
    assert enc.view == View(0, NO_IDS, NO_Q) and enc.complete and enc.sent.shape == (0,)
    assert decode_part(enc.parts[0], {}, U2)[1] == enc.view
    ids = ids_of(eid(3), eid(9))
    q = state([[1] * 5, [2] * 5])
    v1 = encode(1, View(0, NO_IDS, NO_Q), ids, q).view  # against an empty baseline
    enc = encode(2, v1, NO_IDS, NO_Q)  # everything removed
    assert enc.parts[0][32:] == struct.pack("<II", eid(3), eid(9))
    assert assemble(enc.parts, v1).view == View(2, NO_IDS, NO_Q)


def test_yaw_wraps_both_ways_and_half_turn():
    ids = ids_of(eid(1), eid(2), eid(3), eid(4))
    q1 = state([[0, 0, 0, 65535, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 32768, 0]])
    q2 = state([[0, 0, 0, 2, 0], [0, 0, 0, 65534, 0], [0, 0, 0, 32768, 0], [0, 0, 0, 0, 0]])
    v1 = encode(1, None, ids, q1).view
    enc = encode(2, v1, ids, q2)
    # deltas +3, -2, -32768 (wide), -32768 (wide: 32768 -> 0 is -32768 too)
    recs = bytes([0x08, 6, 0x08, 3, 0x28, 0x08]) + struct.pack("<I", 65535) + bytes([0x28, 0x08])
    recs += struct.pack("<I", 65535)
    assert enc.parts[0].endswith(bytes([0x0F]) + recs)
    assert decode_part(enc.parts[0], {1: v1}, U2)[1] == View(2, ids, q2)


@pytest.mark.parametrize("layout", [U4, QZ4])
def test_u4_positions(layout):
    rng = np.random.default_rng(5)
    hi = limits_of(layout)
    ids = np.arange(1, 21, dtype=np.uint32) << 16
    q = random_state(rng, 20, hi)
    q[0, :3] = 0
    q[1, :3] = hi
    enc = encode(1, None, ids, q, layout=layout)
    assert len(enc.parts[0]) == 32 + 20 * (4 + 12 + 3)
    assert assemble(enc.parts, None, layout).view == enc.view == View(1, ids, q)
    q2 = q.copy()
    q2[:, 0] = hi[0] - q2[:, 0]  # big (wide) deltas, up to the whole axis
    enc2 = encode(2, enc.view, ids, q2, layout=layout)
    assert decode_part(enc2.parts[0], {1: enc.view}, layout)[1] == View(2, ids, q2)
    with pytest.raises(ProtocolError):  # the same bytes read as u16 positions
        decode_part(enc.parts[0], {}, U2)


def test_u4_extremes_use_the_whole_int32_range():
    ids = ids_of(eid(1))
    lo, hi = state([[0, 0, 0, 0, 0]]), state([[2**31 - 1, 0, 2**31 - 1, 0, 0]])
    v1 = encode(1, None, ids, lo, layout=U4).view
    enc = encode(2, v1, ids, hi, layout=U4)
    assert decode_part(enc.parts[0], {1: v1}, U4)[1] == View(2, ids, hi)
    enc = encode(3, View(2, ids, hi), ids, lo, layout=U4)
    assert decode_part(enc.parts[0], {2: View(2, ids, hi)}, U4)[1] == View(3, ids, lo)


def test_quantizer_bounds_positions_in_decoder():
    qz = Quantizer((0, 0, 0), (10, 10, 10), 0.01)  # 1000 steps per axis
    ids = ids_of(eid(1))
    enc = encode(1, None, ids, state([[1001, 0, 0, 0, 0]]), layout=U2)
    with pytest.raises(ProtocolError) as info:
        decode_part(enc.parts[0], {}, qz)
    assert info.value.reason == "out_of_range"
    assert decode_part(enc.parts[0], {}, U2)[1] == enc.view
    with pytest.raises(ValueError):
        encode(1, None, ids, state([[1001, 0, 0, 0, 0]]), layout=qz)


# ------------------------------------------------------------------------ the helpers


def test_max_parts_for_and_min_parts():
    assert max_parts_for(None, 1187) == MAX_PARTS
    assert max_parts_for(1200, 1187) == 1 and max_parts_for(1199, 1187) == 1
    assert max_parts_for(2 * 1200, 1187) == 2 and max_parts_for(3 * 1200 - 1, 1187) == 2
    assert max_parts_for(10**9, 1187) == MAX_PARTS
    assert min_parts(0, 1187) == 1 and min_parts(1, 100) == 1
    per_part = 8 * (100 - 32) - (1 + 8 * 22)  # capacity less the largest item
    assert min_parts(per_part, 100) == 1 and min_parts(per_part + 1, 100) == 2


def test_cut_parts():
    cap = 8 * (100 - 32)  # bits: the ceil(K/8) rounding needs no slack (SPEC 5.4)
    assert cut_parts(np.zeros(0, np.int64), 100) == [0]
    assert cut_parts(np.array([cap]), 100) == [1]
    assert cut_parts(np.array([cap, 1]), 100) == [1, 2]
    assert cut_parts(np.array([32] * 40), 100) == [17, 34, 40]  # 17 x 4 bytes = 68 = 100 - 32
    with pytest.raises(ValueError):
        cut_parts(np.array([cap + 1]), 100)


def test_part_cut_follows_spec_greedy_rule():
    """SPEC 5.4: a part takes items while its size, with the ceil(K/8) rounding, fits.

    17 removals are 32 + 17 * 4 = 100 bytes: one part of budget 100; 4 added records (u2,
    13 bytes each) are 84 bytes: one part of budget 84.
    """
    base = View(1, np.arange(1, 18, dtype=np.uint32) << 16, np.zeros((17, 5), np.int32))
    enc = encode(2, base, NO_IDS, NO_Q, part_budget=100)
    assert [len(p) for p in enc.parts] == [100]
    ids = np.arange(1, 9, dtype=np.uint32) << 16
    enc = encode(2, None, ids, np.zeros((8, 5), np.int32), part_budget=84)
    assert [len(p) for p in enc.parts] == [84, 84]


@pytest.mark.parametrize(
    "kw",
    [
        dict(tick=-1), dict(tick=2**32 - 1), dict(tick=1.0), dict(input_ack=-2),
        dict(input_ack=2**32 - 1), dict(self_id=2**32), dict(self_id=-1),
        dict(part_budget=MIN_PART_BUDGET - 1), dict(part_budget=65536), dict(part_budget=100.0),
        dict(allowance=1186), dict(allowance=5000.0),
        dict(cand_ids=ids_of(3, 2)), dict(cand_ids=ids_of(2, 2)),
        dict(cand_ids=np.array([2, 3], np.int64)), dict(cand_ids=ids_of(2, 3).reshape(2, 1)),
        dict(cand_q=np.zeros((2, 5), np.int64)), dict(cand_q=np.zeros((3, 5), np.int32)),
        dict(cand_q=state([[0, 0, 0, 65536, 0], [0] * 5])),
        dict(cand_q=state([[0, 0, 0, 0, 256], [0] * 5])),
        dict(cand_q=state([[-1, 0, 0, 0, 0], [0] * 5])),
        dict(cand_q=state([[65536, 0, 0, 0, 0], [0] * 5])),
        dict(priority=np.zeros(3)), dict(layout="<u8"), dict(layout=np.int32), dict(baseline=1),
        dict(baseline=View(5, NO_IDS, NO_Q)), dict(baseline=EMPTY_VIEW),
    ],
)  # fmt: skip
def test_encode_rejects_bad_arguments(kw):
    args = dict(tick=5, baseline=None, cand_ids=ids_of(2, 3), cand_q=np.zeros((2, 5), np.int32),
                priority=None, part_budget=1187, allowance=None, input_ack=0, self_id=0, layout=U2,
                check=True)  # fmt: skip
    args.update(kw)
    with pytest.raises(ValueError):
        encode_snapshot(**args)


def test_check_state():
    check_state(ids_of(1, 2), state([[0, 0, 65535, 65535, 255], [0] * 5]), U2)
    check_state(ids_of(1), state([[2**31 - 1, 0, 0, 0, 0]]), U4)
    check_state(ids_of(1), state([[20000, 2000, 20000, 0, 0]]), QZ)
    for ids, q, layout in [
        (ids_of(1, 2), state([[0, 0, 65536, 0, 0], [0] * 5]), U2),
        (ids_of(2, 1), state([[0] * 5, [0] * 5]), U2),
        (ids_of(1), state([[0, 2001, 0, 0, 0]]), QZ),
        (ids_of(1), state([[0, 0, 0, -1, 0]]), U4),
    ]:
        with pytest.raises(ValueError):
            check_state(ids, q, layout)


# ------------------------------------------------------------ random crowds, round trips


def random_crowd(rng, layout, max_slots=150):
    """A baseline (or None) and candidates: kept entities with every kind of change, despawns,
    respawns (same slot, new generation) and new entities. Returns (baseline, ids, q)."""
    hi = np.array(limits_of(layout))
    n = int(rng.integers(0, max_slots + 1))
    slots = np.sort(rng.choice(65536, n, replace=False))
    if n and rng.random() < 0.2:
        slots[-1] = 65535  # the highest id range
    gens = rng.integers(0, 65536, n)
    old_q = random_state(rng, n, tuple(hi))
    has_base = rng.random(n) < 0.7 if rng.random() < 0.85 else None
    base_ids, base_rows, ids, rows = [], [], [], []
    for i in range(n):
        s, g, old = int(slots[i]), int(gens[i]), old_q[i].copy()
        new = old.copy()
        fate = rng.random()
        if has_base is None or not has_base[i]:
            if fate < 0.6:  # a new entity
                ids.append(eid(s, g))
                rows.append(new)
            continue
        if fate < 0.1:  # despawned
            pass
        elif fate < 0.2:  # respawned with another generation: removed and added
            ids.append(eid(s, (g + int(rng.integers(1, 65536))) % 65536))
            rows.append(random_state(rng, 1, tuple(hi))[0])
        else:
            kind = int(rng.integers(0, 7))
            if kind == 1:  # a small step
                new[:3] += rng.integers(-3, 4, 3)
                new[3] += rng.integers(-200, 201)
            elif kind == 2:  # wide deltas
                new[:3] += rng.integers(-5000, 5001, 3)
            elif kind == 3:  # yaw across 0, either way
                near_top = 65535 - int(rng.integers(0, 40))
                near_zero = int(rng.integers(0, 40))
                old[3], new[3] = (near_top, near_zero) if rng.random() < 0.5 else (near_zero, near_top)
            elif kind == 4:
                new[4] = int(rng.integers(0, 256))
            elif kind == 5:  # anything, extremes included
                new = random_state(rng, 1, tuple(hi))[0]
                new[:3] = np.where(rng.random(3) < 0.3, rng.choice([0, 1], 3) * hi, new[:3])
            elif kind == 6:  # half a turn
                new[3] = old[3] + 32768
            new[:3] = np.clip(new[:3], 0, hi)
            new[3] %= 65536
            ids.append(eid(s, g))
            rows.append(new)
        base_ids.append(eid(s, g))
        base_rows.append(old)
    baseline = None
    if has_base is not None:
        baseline = View(int(rng.integers(0, 1000)), np.array(base_ids, dtype=np.uint32),
                        np.array(base_rows, dtype=np.int32).reshape(-1, 5))  # fmt: skip
    ids = np.array(ids, dtype=np.uint32)
    q = np.array(rows, dtype=np.int32).reshape(-1, 5)
    order = np.argsort(ids, kind="stable")
    return baseline, ids[order], q[order]


def random_allowance(rng, part_budget):
    r = rng.random()
    if r < 0.25:
        return None
    if r < 0.7:
        return int(rng.integers(1, 8)) * (part_budget + 13)
    return int(rng.integers(part_budget, 12 * part_budget))


def random_priority(rng, n):
    r = rng.random()
    if r < 0.3:
        return None
    if r < 0.6:
        return rng.random(n)
    if r < 0.9:
        return rng.integers(0, 4, n).astype(np.float64)  # many ties
    return np.zeros(n)


def check_allowance_rules(enc, baseline, ids, q, priority, part_budget, allowance, layout):
    """SPEC 5.4: removals first in id order; additions/updates by priority, ties in id order;
    the allowance only bites when the complete snapshot does not fit."""
    base = {} if baseline is None else dict(zip(baseline.ids.tolist(), baseline.q.tolist()))
    cand = set(ids.tolist())
    in_view = set(enc.view.ids.tolist())
    removals = sorted(set(base) - cand)
    gone = [r not in in_view for r in removals]
    assert gone == sorted(gone, reverse=True)  # the removals sent are a prefix in id order
    wanting = [i for i, (e, row) in enumerate(zip(ids.tolist(), q.tolist())) if base.get(e) != row]
    prio = np.zeros(len(ids)) if priority is None else np.asarray(priority, dtype=np.float64)
    order = sorted(wanting, key=lambda i: (-prio[i], i))
    taken = [bool(enc.sent[i]) for i in order]
    assert taken == sorted(taken, reverse=True)  # a prefix of (priority desc, id asc)
    if not all(gone):  # removals come first: what was spent elsewhere could not pay for one
        spent = sum(len(record(base[e], q[i])) if e in base else 4 + 3 * pbytes(layout) + 3
                    for i, e in enumerate(ids.tolist()) if enc.sent[i])  # fmt: skip
        assert spent < 4
    full = cut_parts(np.array(item_bits(baseline, ids, q, layout)), part_budget)
    nb = 0 if baseline is None else len(baseline)
    if len(full) <= max(max_parts_for(allowance, part_budget), min_parts(nb, part_budget)):
        assert enc.complete  # it fits: nothing held back


@pytest.mark.parametrize("seed", range(12))
def test_random_crowds_round_trip(seed):
    rng = np.random.default_rng(1000 + seed)
    limited = 0
    for case in range(25):
        layout = LAYOUTS[int(rng.integers(0, len(LAYOUTS)))]
        baseline, ids, q = random_crowd(rng, layout, max_slots=int(rng.choice([10, 60, 250])))
        tick = (0 if baseline is None else baseline.tick) + int(rng.integers(1, 5))
        part_budget = int(rng.choice([MIN_PART_BUDGET, MIN_PART_BUDGET + 5, 100, 200, 600, 1187,
                                      int(rng.integers(MIN_PART_BUDGET, 1188))]))  # fmt: skip
        allowance = random_allowance(rng, part_budget)
        priority = random_priority(rng, len(ids))
        input_ack = int(rng.integers(-1, 2**32 - 1))
        self_id = int(rng.integers(0, 2**32))
        enc = encode(tick, baseline, ids, q, part_budget=part_budget, allowance=allowance,
                     priority=priority, layout=layout, input_ack=input_ack, self_id=self_id)  # fmt: skip
        headers = check_parts(enc, tick, baseline, part_budget, allowance, input_ack, self_id)
        assert_valid_view(enc.view, limits_of(layout))
        # Decoded in a random order (with duplicates) the parts give the encoder's view.
        order = list(rng.permutation(len(enc.parts))) + list(rng.integers(0, len(enc.parts), 2))
        asm = assemble(enc.parts, baseline, layout, order)
        assert asm.views[tick] == enc.view and asm.view == enc.view
        # Each part on its own gives the view of its range.
        stored = {} if baseline is None else {baseline.tick: baseline}
        for h, p in zip(headers, enc.parts):
            check_part_bytes(p, baseline, enc.view, layout)
            v = decode_part(p, stored, layout)[1]
            inr = (enc.view.ids >= h.first_id) & (enc.view.ids <= h.last_id)
            assert v == View(tick, enc.view.ids[inr], enc.view.q[inr])
        same = np.array_equal(enc.view.ids, ids) and np.array_equal(enc.view.q, q)
        assert enc.complete == same
        check_sent(baseline, ids, q, enc.view, enc.sent)
        check_allowance_rules(enc, baseline, ids, q, priority, part_budget, allowance, layout)
        limited += not enc.complete
    assert limited >= 2  # the allowance really was exercised


def test_random_crowds_use_many_parts():
    rng = np.random.default_rng(77)
    baseline, ids, q = random_crowd(rng, U2, max_slots=250)
    while len(ids) < 100:
        baseline, ids, q = random_crowd(rng, U2, max_slots=250)
    tick = (0 if baseline is None else baseline.tick) + 1
    enc = encode(tick, baseline, ids, q, part_budget=MIN_PART_BUDGET)
    assert len(enc.parts) > 10 and enc.complete
    check_parts(enc, tick, baseline, MIN_PART_BUDGET, None, 7, eid(1))
    assert assemble(enc.parts, baseline, U2, order=range(len(enc.parts) - 1, -1, -1)).view == enc.view


# --------------------------------------------------------------- allowance semantics


def one_part(part_budget):
    return part_budget + 13  # the allowance of exactly one part


def test_removals_first_in_id_order():
    ids = np.arange(100, 140, dtype=np.uint32) << 16
    base = View(1, ids, np.zeros((40, 5), np.int32))
    new = ids_of(eid(5), eid(6))  # two additions that would also like to go
    enc = encode(2, base, new, state([[1] * 5, [2] * 5]), part_budget=100, allowance=one_part(100),
                 priority=np.array([1e9, 1e9]))  # fmt: skip
    assert len(enc.parts) == 1 and not enc.complete
    h = read_header(enc.parts[0])
    r, a, k = HEADER.unpack_from(enc.parts[0])[8:]
    assert r > 0 and a == 0 and r + k == 40
    assert enc.parts[0][32 : 32 + 4 * r] == ids[:r].astype("<u4").tobytes()  # the lowest ids
    assert np.array_equal(enc.view.ids, ids[r:]) and np.array_equal(enc.view.q, base.q[r:])
    assert not enc.sent.any() and h.last_id == NONE32
    # Later snapshots remove the rest; then the additions come.
    view, tick = enc.view, 2
    while not enc.complete:
        tick += 1
        enc = encode(tick, view, new, state([[1] * 5, [2] * 5]), part_budget=100, allowance=one_part(100))
        view = assemble(enc.parts, view).view
        assert view == enc.view
    assert np.array_equal(view.ids, new) and tick < 8


def test_unchosen_updates_keep_baseline_values_and_additions_stay_out():
    ids = np.arange(1, 61, dtype=np.uint32) << 16
    q = np.zeros((60, 5), np.int32)
    q[:, 0] = np.arange(60)
    base = View(1, ids[:30], q[:30])
    q2 = q.copy()
    q2[:, 0] += 1000  # every kept entity changes by a wide delta
    enc = encode(2, base, ids, q2, part_budget=300, allowance=one_part(300))
    assert not enc.complete and 0 < enc.sent.sum() < 60
    got = dict(zip(enc.view.ids.tolist(), enc.view.q.tolist()))
    for i in range(60):
        if enc.sent[i]:
            assert got[int(ids[i])] == q2[i].tolist()
        elif i < 30:
            assert got[int(ids[i])] == q[i].tolist()  # baseline value
        else:
            assert int(ids[i]) not in got
    assert assemble(enc.parts, base).view == enc.view


def test_higher_priority_first_ties_in_id_order():
    ids = np.arange(1, 101, dtype=np.uint32) << 16
    q = np.zeros((100, 5), np.int32)
    base = View(1, ids, q)
    q2 = q.copy()
    q2[:, 0] = 1000  # 7-byte records
    prio = (np.arange(100) * 7) % 5  # five tie groups
    enc = encode(2, base, ids, q2, part_budget=200, allowance=one_part(200), priority=prio)
    k = int(enc.sent.sum())
    assert 0 < k < 100
    expected = sorted(range(100), key=lambda i: (-prio[i], i))[:k]
    assert sorted(np.flatnonzero(enc.sent).tolist()) == sorted(expected)
    # Without priority: id order.
    enc = encode(2, base, ids, q2, part_budget=200, allowance=one_part(200))
    assert np.flatnonzero(enc.sent).tolist() == list(range(int(enc.sent.sum())))
    # Reversed priority takes the other end.
    enc = encode(2, base, ids, q2, part_budget=200, allowance=one_part(200), priority=np.arange(100.0))
    assert np.flatnonzero(enc.sent).tolist() == list(range(100 - int(enc.sent.sum()), 100))


def test_unchanged_kept_entities_cost_only_their_bit():
    n = 9000  # 1125 bytes of bitmap: fits one part of 1187 bytes only at one bit each
    ids = np.arange(n, dtype=np.uint32)
    q = np.zeros((n, 5), np.int32)
    base = View(1, ids, q)
    q2 = q.copy()
    q2[17, 0] = 3  # one small update
    enc = encode(2, base, ids, q2, allowance=one_part(1187))
    assert len(enc.parts) == 1 and enc.complete
    assert len(enc.parts[0]) == 32 + n // 8 + 2
    assert enc.sent.tolist() == [i == 17 for i in range(n)]
    assert assemble(enc.parts, base).view == View(2, ids, q2)


def test_allowance_converges_with_accumulating_priority():
    rng = np.random.default_rng(11)
    ids = np.sort(rng.choice(2**32, 400, replace=False)).astype(np.uint32)
    q = random_state(rng, 400)
    view, prio = None, np.zeros(400)
    for tick in range(1, 40):
        enc = encode(tick, view, ids, q, part_budget=600, allowance=2 * one_part(600), priority=prio)
        assert len(enc.parts) <= 2
        view = assemble(enc.parts, view).view
        assert view == enc.view
        prio += 1
        prio[enc.sent] = 0
        if enc.complete:
            break
    assert enc.complete and view == View(tick, ids, q)
    assert 400 * 13 / (2 * 568) <= tick <= 400 * 13 / (2 * 500) + 2  # about 2 x 568 bytes a tick


# ---------------------------------------------------------------- decoder strictness

BASE = View(1, ids_of(eid(1), eid(2), eid(3)), state([[10, 10, 10, 100, 1]] * 3))
BASES = {1: BASE}


def u32(*values) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def rec_added(e, x, y, z, yaw, anim) -> bytes:
    return struct.pack("<I3HHB", e, x, y, z, yaw, anim)


def raw(*, tick=2, bt=1, ack=0, self_id=0, part=0, parts=1, first=0, last=NONE32, removed=(),
        added=b"", na=None, k=None, upd=b"", records=b"", r=None) -> bytes:  # fmt: skip
    """A part by hand: K defaults to the baseline's kept count in the range."""
    if k is None:
        inr = [i for i in BASE.ids.tolist() if first <= i <= last] if bt != NONE32 else []
        k = len(inr) - len(removed)
    na = len(added) // 13 if na is None else na
    r = len(removed) if r is None else r
    head = HEADER.pack(tick, bt, ack, self_id, part, parts, first, last, r, na, k)
    return head + u32(*removed) + added + upd + records


def test_handmade_valid_part():
    # remove entity 2, update entity 1 (x +1, anim -1), add entity 4; entity 3 unchanged.
    p = raw(removed=[eid(2)], added=rec_added(eid(4), 5, 6, 7, 8, 9), upd=b"\x01",
            records=bytes([0x11, 2, 1]))  # fmt: skip
    header, v = decode_part(p, BASES, U2)
    assert header == PartHeader(2, 1, 0, 0, 0, 1, 0, NONE32)
    assert v.ids.tolist() == [eid(1), eid(3), eid(4)]
    assert v.q.tolist() == [[11, 10, 10, 100, 0], [10, 10, 10, 100, 1], [5, 6, 7, 8, 9]]
    assert decode_part(p, BASES.get, U2)[1] == v  # baselines as a callable
    # A part of a range: entities 2 and 3 of the baseline, entity 2 updated.
    p = raw(part=1, parts=2, first=eid(1) + 1, upd=b"\x01", records=bytes([0x01, 4]))
    expected = View(2, ids_of(eid(2), eid(3)), state([[12, 10, 10, 100, 1], [10, 10, 10, 100, 1]]))
    assert decode_part(p, BASES, U2)[1] == expected
    # Valid extremes next to the rejected cases below.
    for recs, row in [
        (bytes([0x28, 0x08]) + u32(65535), [10, 10, 10, 32868, 1]),  # yaw -32768
        (bytes([0x28, 0x08]) + u32(65534), [10, 10, 10, 32867, 1]),  # yaw +32767
        (bytes([0x10, 254]), [10, 10, 10, 100, 128]),  # anim +127
        (bytes([0x30, 0x10]) + u32(508), [10, 10, 10, 100, 255]),  # anim +254 (wide)
        (bytes([0x01, 19]), [0, 10, 10, 100, 1]),  # x -10
        (bytes([0x21, 0x01]) + u32(2 * 65525), [65535, 10, 10, 100, 1]),  # x to the u16 top
    ]:
        v = decode_part(raw(upd=b"\x01", records=recs), BASES, U2)[1]
        assert v.q[0].tolist() == row


TOO_LONG = raw(added=bytes(13) * 5042, upd=b"\x00")  # 65,578 bytes

REJECTS = [
    (raw(upd=b"\x00")[:31], "truncated"),
    (b"", "truncated"),
    (TOO_LONG, "oversized"),
    (raw(tick=NONE32, upd=b"\x00"), "bad_field"),
    (raw(tick=1, bt=1, upd=b"\x00"), "bad_field"),  # baseline_tick not older than tick
    (raw(tick=1, bt=5, upd=b"\x00"), "bad_field"),
    (raw(part=1, parts=1, upd=b"\x00"), "bad_range"),
    (raw(part=3, parts=2, upd=b"\x00"), "bad_range"),
    (raw(parts=0, upd=b"\x00"), "bad_range"),
    (raw(first=5, last=4, part=1, parts=3, upd=b"\x00"), "bad_range"),
    (raw(first=1, upd=b"\x00"), "bad_range"),  # part 0 must start at 0
    (raw(last=NONE32 - 1, upd=b"\x00"), "bad_range"),  # the last part must end at 0xFFFFFFFF
    (raw(part=0, parts=2, last=0, first=1, upd=b"\x00"), "bad_range"),
    (raw(), "bad_length"),  # upd missing for 3 kept entities
    (raw(removed=[eid(2)], r=2, upd=b"\x00"), "bad_length"),  # R says more than there is
    (raw(added=rec_added(eid(9), 0, 0, 0, 0, 0)[:12], na=1, upd=b"\x00"), "bad_length"),
    (raw(removed=[eid(3), eid(2)], upd=b"\x00"), "unsorted_ids"),
    (raw(removed=[eid(2), eid(2)], k=1, upd=b"\x00"), "unsorted_ids"),
    (raw(added=rec_added(eid(9), 0, 0, 0, 0, 0) + rec_added(eid(8), 0, 0, 0, 0, 0), upd=b"\x00"), "unsorted_ids"),
    (raw(added=rec_added(eid(9), 0, 0, 0, 0, 0) * 2, upd=b"\x00"), "unsorted_ids"),
    (raw(part=0, parts=2, last=eid(2) - 1, removed=[eid(2)], k=0, upd=b""), "bad_range"),
    (raw(part=1, parts=2, first=eid(2), removed=[eid(1)], k=1, upd=b"\x00"), "bad_range"),
    (raw(part=0, parts=2, last=eid(2) - 1, added=rec_added(eid(5), 0, 0, 0, 0, 0), upd=b"\x00"), "bad_range"),
    (raw(removed=[eid(4)], k=3, upd=b"\x00"), "bad_removed"),
    (raw(bt=NONE32, removed=[eid(1)], k=0), "bad_removed"),
    (raw(added=rec_added(eid(2), 0, 0, 0, 0, 0), upd=b"\x00"), "bad_added"),
    (raw(removed=[eid(2)], added=rec_added(eid(2), 0, 0, 0, 0, 0), upd=b"\x00"), "bad_added"),
    (raw(k=2, upd=b"\x00"), "bad_kept_count"),
    (raw(k=4, upd=b"\x00"), "bad_kept_count"),
    (raw(bt=NONE32, k=1, upd=b"\x00"), "bad_kept_count"),
    (raw(upd=b"\x08"), "bad_padding"),
    (raw(upd=b"\x81"), "bad_padding"),
    (raw(upd=b"\x01", records=b"\x00"), "bad_mask"),  # zero mask
    (raw(upd=b"\x01", records=b"\x20\x01\x90\x01\x00"), "bad_mask"),  # wide flag only: no field
    (raw(upd=b"\x01", records=b"\x41\x02"), "bad_mask"),  # bit 6
    (raw(upd=b"\x01", records=b"\x81\x02"), "bad_mask"),  # bit 7
    (raw(upd=b"\x01", records=b"\x21\x00\x02"), "bad_mask"),  # wide byte zero
    (raw(upd=b"\x01", records=b"\x21\x02" + u32(400)), "bad_mask"),  # wide not a subset
    (raw(upd=b"\x01", records=b"\x21\x41" + u32(400)), "bad_mask"),  # wide bit 6
    (raw(upd=b"\x01", records=b"\x21\x81" + u32(400)), "bad_mask"),  # wide bit 7
    (raw(upd=b"\x01", records=b"\x21\x21" + u32(400)), "bad_mask"),  # wide bit 5
    (raw(upd=b"\x01", records=b"\x01\x01" + u32(400)), "bad_length"),  # wide byte without bit 5
    (raw(upd=b"\x01", records=b"\x01\x00"), "bad_delta"),  # zero delta
    (raw(upd=b"\x01", records=b"\x11\x02\x00"), "bad_delta"),
    (raw(upd=b"\x01", records=b"\x21\x01" + u32(255)), "bad_delta"),  # wide value < 256
    (raw(upd=b"\x01", records=b"\x21\x01" + u32(0)), "bad_delta"),
    (raw(upd=b"\x01", records=b"\x28\x08" + u32(65536)), "bad_delta"),  # yaw +32768
    (raw(upd=b"\x01", records=b"\x28\x08" + u32(65537)), "bad_delta"),  # yaw -32769
    (raw(upd=b"\x01", records=b"\x28\x08" + u32(NONE32)), "bad_delta"),
    (raw(upd=b"\x01", records=b"\x01\x15"), "out_of_range"),  # x: 10 - 11 < 0
    (raw(upd=b"\x01", records=b"\x21\x01" + u32(2 * 65526)), "out_of_range"),  # x: 65536
    (raw(upd=b"\x01", records=b"\x10\x03"), "out_of_range"),  # anim 1 - 2
    (raw(upd=b"\x01", records=b"\x30\x10" + u32(510)), "out_of_range"),  # anim 1 + 255
    (raw(upd=b"\x01", records=b"\x21\x01" + u32(NONE32 - 1)), "out_of_range"),  # x + 2**31 - 1
    (raw(upd=b"\x01", records=b"\x01\x02\x00"), "bad_length"),  # trailing byte
    (raw(upd=b"\x00", records=b"\x01\x02"), "bad_length"),  # records without updates
    (raw(upd=b"\x00\x00"), "bad_length"),  # a bitmap byte too many
    (raw(upd=b"\x03", records=b"\x01\x02"), "bad_length"),  # two updated, one record
    (raw(upd=b"\x01", records=b"\x05\x02"), "bad_length"),  # record shorter than its mask
    (raw(upd=b"\x01", records=b"\x21\x01\x90\x01"), "bad_length"),  # wide value cut short
    (raw(upd=b"\x01", records=b"\x21"), "bad_length"),
    (raw(tick=20, bt=9, upd=b"\x00"), "unknown_baseline"),
]  # fmt: skip


@pytest.mark.parametrize("payload, reason", REJECTS, ids=[f"{i}-{r}" for i, (_, r) in enumerate(REJECTS)])
def test_decode_rejects(payload, reason):
    with pytest.raises(ProtocolError) as info:
        decode_part(payload, BASES, U2)
    assert info.value.reason == reason
    asm = PartAssembler(U2)
    asm.views[1] = BASE
    with pytest.raises(ProtocolError) as info:
        asm.add(payload)
    assert info.value.reason == reason
    assert asm.views == {1: BASE} and asm.view is EMPTY_VIEW and asm.header is None


def test_decode_rejects_non_bytes_and_bad_baselines():
    for bad in ["abc", 5, None, [1, 2]]:
        with pytest.raises(ProtocolError) as info:
            decode_part(bad, BASES, U2)  # type: ignore[arg-type]
        assert info.value.reason == "bad_type"
    ok = raw(upd=b"\x00")
    assert decode_part(bytearray(ok), BASES, U2)[1] == decode_part(memoryview(ok), BASES, U2)[1]
    for stored in [{}, {1: View(0, BASE.ids, BASE.q)}, (lambda t: None), {2: BASE}]:
        with pytest.raises(ProtocolError) as info:
            decode_part(ok, stored, U2)
        assert info.value.reason == "unknown_baseline"
    # A full part needs no baseline at all.
    assert decode_part(raw(bt=NONE32, k=0), {}, U2)[1] == View(2, NO_IDS, NO_Q)


def test_decode_added_state_ranges():
    p = raw(bt=NONE32, k=0, added=rec_added(eid(1), 20001, 0, 0, 0, 0))
    assert decode_part(p, {}, U2)[1].q.tolist() == [[20001, 0, 0, 0, 0]]
    with pytest.raises(ProtocolError) as info:
        decode_part(p, {}, QZ)  # beyond the Quantizer's 20000 steps
    assert info.value.reason == "out_of_range"
    p4 = HEADER.pack(2, NONE32, 0, 0, 0, 1, 0, NONE32, 0, 1, 0) + struct.pack("<I3IHB", eid(1), 2**31, 0, 0, 0, 0)
    with pytest.raises(ProtocolError) as info:
        decode_part(p4, {}, U4)  # u4 positions are at most 2**31 - 1
    assert info.value.reason == "out_of_range"
    p4 = HEADER.pack(2, NONE32, 0, 0, 0, 1, 0, NONE32, 0, 1, 0) + struct.pack("<I3IHB", eid(1), 2**31 - 1, 0, 0, 0, 0)
    assert decode_part(p4, {}, U4)[1].q.tolist() == [[2**31 - 1, 0, 0, 0, 0]]


def test_decode_entity_limit():
    # K is a u16, so a part of more than 65536 entities keeps 65535 and adds two.
    big = View(1, 2 * np.arange(MAX_ENTITIES, dtype=np.uint32), np.zeros((MAX_ENTITIES, 5), np.int32))
    last = 2 * (MAX_ENTITIES - 2)  # part 0 of 2 keeps all but the last baseline entity
    bitmap = bytes((MAX_ENTITIES - 1 + 7) // 8)
    p = HEADER.pack(2, 1, 0, 0, 0, 2, 0, last, 0, 2, MAX_ENTITIES - 1)
    p += rec_added(1, 0, 0, 0, 0, 0) + rec_added(3, 0, 0, 0, 0, 0) + bitmap
    with pytest.raises(ProtocolError) as info:
        decode_part(p, {1: big}, U2)
    assert info.value.reason == "too_many_entities"
    p = HEADER.pack(2, 1, 0, 0, 0, 2, 0, last, 0, 1, MAX_ENTITIES - 1) + rec_added(1, 0, 0, 0, 0, 0) + bitmap
    assert len(decode_part(p, {1: big}, U2)[1]) == MAX_ENTITIES


# ------------------------------------------------------------------------------ fuzzing


def _valid_parts():
    rng = np.random.default_rng(21)
    out = []
    for layout in (U2, U4, QZ):
        for _ in range(6):
            baseline, ids, q = random_crowd(rng, layout, max_slots=40)
            tick = (0 if baseline is None else baseline.tick) + 1
            enc = encode(tick, baseline, ids, q, part_budget=int(rng.choice([MIN_PART_BUDGET, 200, 1187])),
                         layout=layout)  # fmt: skip
            stored = {} if baseline is None else {baseline.tick: baseline}
            out += [(p, stored, layout) for p in enc.parts]
    return out


VALID = _valid_parts()


def decode_or_protocol_error(payload, stored, layout):
    try:
        _, v = decode_part(payload, stored, layout)
    except ProtocolError:
        return None
    assert_valid_view(v, limits_of(layout))
    return v


def test_fuzz_valid_parts_decode():
    assert len(VALID) >= 20
    for p, stored, layout in VALID:
        assert decode_or_protocol_error(p, stored, layout) is not None


def test_fuzz_mutated_parts_raise_only_protocol_error():
    rng = np.random.default_rng(99)
    outcomes = {"decoded": 0, "rejected": 0}
    for _ in range(4000):
        p, stored, layout = VALID[int(rng.integers(0, len(VALID)))]
        data = bytearray(p)
        for _ in range(int(rng.integers(1, 4))):
            op = rng.random()
            i = int(rng.integers(0, len(data) + 1))
            if op < 0.4 and i < len(data):
                data[i] ^= 1 << int(rng.integers(0, 8))
            elif op < 0.6 and i < len(data):
                data[i] = int(rng.integers(0, 256))
            elif op < 0.75:
                del data[i:]
            elif op < 0.85:
                data[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 5))).astype(np.uint8))
            elif i < len(data):
                del data[i]
        v = decode_or_protocol_error(bytes(data), stored, layout)
        outcomes["decoded" if v is not None else "rejected"] += 1
        asm = PartAssembler(layout)
        asm.views.update(stored)
        try:
            asm.add(bytes(data))
        except ProtocolError:
            assert v is None  # the assembler rejects exactly what the decoder rejects
        else:
            assert v is not None or read_header(bytes(data)).tick in stored  # (a "duplicate")
    assert outcomes["decoded"] > 50 and outcomes["rejected"] > 1000


def test_fuzz_random_bytes():
    rng = np.random.default_rng(5)
    for _ in range(1500):
        n = int(rng.choice([0, 31, 32, 33, 40, 64, 200]))
        data = bytes(rng.integers(0, 256, n).astype(np.uint8))
        if n >= 32 and rng.random() < 0.7:  # a plausible header, random counts and body
            data = HEADER.pack(2, 1, 0, 0, 0, 1, 0, NONE32, *rng.integers(0, 4, 3).tolist()) + data[32:]
        decode_or_protocol_error(data, BASES, U2)


# ------------------------------------------------------------------------ part assembly


def multi_part(tick=3, base=None, n=40, part_budget=100):
    ids = np.arange(1, n + 1, dtype=np.uint32) << 16
    q = np.zeros((n, 5), np.int32)
    q[:, 0] = np.arange(n) + tick
    enc = encode(tick, base, ids, q, part_budget=part_budget)
    assert len(enc.parts) >= 3
    return enc


def test_assembler_duplicates_are_harmless():
    enc = multi_part()
    asm = PartAssembler(U2)
    for i, p in enumerate(enc.parts):
        assert asm.add(p) == (read_header(p), i == len(enc.parts) - 1)
        if i < len(enc.parts) - 1:
            assert asm.add(p) == (read_header(p), False)  # again while pending
    for p in enc.parts:
        assert asm.add(p)[1] is False  # after completion
    assert asm.view == enc.view and list(asm.views) == [3]


def test_assembler_part_mismatch():
    enc = multi_part()
    h = read_header(enc.parts[1])
    for field, value in [(1, 2), (1, 1), (5, h.parts + 1), (2, 99), (3, 5)]:
        forged = bytearray(enc.parts[1])
        struct.pack_into("<I" if field < 4 else "<B", forged, {1: 4, 2: 8, 3: 12, 5: 17}[field], value)
        asm = PartAssembler(U2)
        asm.views.update({1: View(1, NO_IDS, NO_Q), 2: View(2, NO_IDS, NO_Q)})  # known baselines
        asm.add(enc.parts[0])
        with pytest.raises(ProtocolError) as info:
            asm.add(bytes(forged))
        assert info.value.reason == "part_mismatch"
        for p in enc.parts[1:]:  # the tick still completes with the right parts
            asm.add(p)
        assert asm.view == enc.view


def test_assembler_ranges_must_follow_each_other():
    enc = multi_part()
    forged = bytearray(enc.parts[-1])
    h = read_header(enc.parts[-1])
    struct.pack_into("<I", forged, 18, h.first_id - 1)  # still a valid part on its own
    decode_part(bytes(forged), {}, U2)
    asm = PartAssembler(U2)
    for p in enc.parts[:-1]:
        asm.add(p)
    with pytest.raises(ProtocolError) as info:
        asm.add(bytes(forged))
    assert info.value.reason == "part_mismatch"
    assert 3 not in asm.views and asm.view is EMPTY_VIEW


def test_assembler_rejected_part_changes_nothing():
    """SPEC 5.2: a part that disagrees with its tick's other parts is dropped, "without
    changing any state": the parts already held still complete the tick with the right one."""
    enc = multi_part()
    forged = bytearray(enc.parts[-1])
    struct.pack_into("<I", forged, 18, read_header(enc.parts[-1]).first_id - 1)
    asm = PartAssembler(U2)
    for p in enc.parts[:-1]:
        asm.add(p)
    with pytest.raises(ProtocolError):
        asm.add(bytes(forged))
    assert asm.add(enc.parts[-1])[1] is True
    assert asm.view == enc.view


def test_assembler_overlapping_part_is_rejected_on_arrival():
    """SPEC 5.2: a part whose range overlaps an earlier part of its tick is dropped
    (part_mismatch), and does not spoil the tick's good parts."""
    enc = multi_part()
    forged = bytearray(enc.parts[2])
    struct.pack_into("<I", forged, 18, 5)  # part 2 claims [5, ...]: overlaps part 0
    decode_part(bytes(forged), {}, U2)  # valid on its own
    asm = PartAssembler(U2)
    asm.add(enc.parts[0])
    with pytest.raises(ProtocolError) as info:
        asm.add(bytes(forged))
    assert info.value.reason == "part_mismatch"
    for p in enc.parts[1:]:
        asm.add(p)
    assert asm.view == enc.view


def test_assembler_unknown_baseline_changes_nothing():
    base = View(1, ids_of(eid(1)), state([[0] * 5]))
    enc = multi_part(tick=3, base=base)
    asm = PartAssembler(U2)
    with pytest.raises(ProtocolError) as info:
        asm.add(enc.parts[0])
    assert info.value.reason == "unknown_baseline"
    asm.views[1] = base
    for p in enc.parts:
        asm.add(p)
    assert asm.view == enc.view


def test_assembler_older_tick_late_is_stored_not_mirrored():
    e5, e6 = multi_part(tick=5), multi_part(tick=6)
    asm = PartAssembler(U2)
    for p in e6.parts:
        asm.add(p)
    for p in e5.parts:
        asm.add(p)
    assert asm.views[5] == e5.view and asm.views[6] == e6.view
    assert asm.view == e6.view and asm.header.tick == 6
    # A delta against the late tick decodes (it is a baseline now).
    e7 = encode(7, e5.view, e6.view.ids, e6.view.q, part_budget=100)
    for p in e7.parts:
        asm.add(p)
    assert asm.view == e7.view


def test_assembler_discards_older_incomplete_ticks():
    e5, e6 = multi_part(tick=5), multi_part(tick=6)
    asm = PartAssembler(U2)
    asm.add(e5.parts[0])
    for p in e6.parts:
        asm.add(p)
    for p in e5.parts[1:]:  # tick 5 lost its first part when tick 6 completed
        assert asm.add(p)[1] is False
    assert 5 not in asm.views and asm.view == e6.view


def test_assembler_keeps_incomplete_newer_ticks():
    e5, e6 = multi_part(tick=5), multi_part(tick=6)
    asm = PartAssembler(U2)
    asm.add(e6.parts[0])
    for p in e5.parts:
        asm.add(p)
    for p in e6.parts[1:]:
        asm.add(p)
    assert asm.view == e6.view and asm.views[5] == e5.view


def test_assembler_bounds_pending_ticks():
    encs = {t: multi_part(tick=t) for t in (3, 4, 5)}
    asm = PartAssembler(U2, max_pending=2)
    for t in (3, 4, 5):
        asm.add(encs[t].parts[0])
    for p in encs[3].parts[1:]:  # tick 3, the oldest, was dropped for tick 5: its late
        with pytest.raises(ProtocolError) as info:  # parts are refused, not held again
            asm.add(p)
        assert info.value.reason == "stale_part"
    assert 3 not in asm.views
    asm2 = PartAssembler(U2, max_pending=2)
    for t in (3, 4, 5):
        asm2.add(encs[t].parts[0])
    for t in (4, 5):
        for p in encs[t].parts[1:]:
            asm2.add(p)
        assert asm2.views[t] == encs[t].view


def test_assembler_keeps_the_newest_views():
    asm = PartAssembler(U2, keep=3)
    for t in range(1, 8):
        enc = encode(t, None, ids_of(eid(1)), state([[t, 0, 0, 0, 0]]))
        asm.add(enc.parts[0])
    assert sorted(asm.views) == [5, 6, 7] and asm.view.tick == 7


# --------------------------------------------------- a lossy channel, server and client


class PacketLayer:
    """SPEC 3 on the client's side: which packet sequences it accepted, and the ack it sends
    (the newest sequence and the 32 before it)."""

    def __init__(self) -> None:
        self.newest: int | None = None
        self.accepted: set[int] = set()

    def accept(self, seq: int) -> bool:
        if self.newest is None or seq > self.newest:
            self.newest = seq
        elif self.newest - seq > 32 or seq in self.accepted:
            return False  # too old, or a duplicate
        self.accepted.add(seq)
        return True

    def ack(self) -> set[int]:
        if self.newest is None:
            return set()
        return {s for s in self.accepted if self.newest - 32 <= s <= self.newest}


def run_channel(seed: int, *, max_pending: int, ticks: int = 120, calm_from: int = 90):
    """Parts lost, duplicated, reordered and late; the client acknowledges every packet it
    accepts (SPEC 3, cumulative acks on its own packets, which are lost and late too); the
    server takes as baseline the newest tick all of whose parts were acknowledged (SPEC 5.3).
    Checks: the client never lacks a baseline, every view it completes is the one the server
    sent, and once the losses stop it catches up with the world."""
    rng = np.random.default_rng(seed)
    slots = np.arange(60)
    gen = np.zeros(60, dtype=np.int64)
    alive = rng.random(60) < 0.6
    world = random_state(rng, 60, (2000, 2000, 2000))
    ring: dict[int, View] = {}  # server: views sent, by tick (the newest 32)
    seq_part: dict[int, tuple[int, int]] = {}  # server: packet sequence -> (tick, part)
    parts_left: dict[int, set[int]] = {}
    baseline_tick = None
    seq = 0
    asm = PartAssembler(U2, max_pending=max_pending)
    link = PacketLayer()
    in_flight: list[tuple[int, int, int, bytes]] = []  # (arrival tick, order, seq, part)
    acks: list[tuple[int, int, frozenset]] = []  # (arrival tick, order, acked sequences)
    decoded = kinds = 0
    for t in range(1, ticks):
        lossy = t < calm_from
        if t < calm_from + 10:  # the world moves, despawns and respawns
            world[:, :3] = np.clip(world[:, :3] + rng.integers(-30, 31, (60, 3)), 0, 2000)
            world[:, 3] = (world[:, 3] + rng.integers(-500, 501, 60)) % 65536
            flip = rng.random(60) < 0.05
            gen[flip & alive] += 1
            alive ^= flip
        ids = ((slots[alive] << 16) | gen[alive]).astype(np.uint32)
        q = world[alive].copy()
        base = ring.get(baseline_tick) if baseline_tick is not None else None
        enc = encode(t, base, ids, q, part_budget=int(rng.choice([100, 300])),
                     allowance=int(rng.choice([1, 2, 4, 255])) * 313, input_ack=t)  # fmt: skip
        kinds |= 1 << (base is not None)
        ring[t] = enc.view
        ring.pop(t - 32, None)
        parts_left[t] = set(range(len(enc.parts)))
        for i, p in enumerate(enc.parts):
            seq_part[seq] = (t, i)
            copies = int(rng.choice([0, 1, 1, 1, 2])) if lossy else 1
            for _ in range(copies):
                in_flight.append((t + (int(rng.integers(0, 4)) if lossy else 0), int(rng.integers(0, 9)), seq, p))
            seq += 1
        for _, _, s, p in sorted(x for x in in_flight if x[0] == t):
            if not link.accept(s):
                continue
            header, done = asm.add(p)  # never unknown_baseline, never malformed
            decoded += 1
            if done:
                assert asm.views[header.tick] == ring[header.tick]
        in_flight = [x for x in in_flight if x[0] > t]
        if asm.view.tick >= 0:
            assert asm.view.tick in asm.views and asm.view == ring.get(asm.view.tick, asm.view)
        if not lossy or rng.random() < 0.8:  # the client's packet of this tick, with its ack
            acks.append((t + (int(rng.integers(0, 3)) if lossy else 0), int(rng.integers(0, 9)), frozenset(link.ack())))
        for _, _, acked in sorted((a for a in acks if a[0] == t), key=lambda a: a[:2]):
            for s in acked:
                tk, part = seq_part.get(s, (None, None))
                if tk in parts_left:
                    parts_left[tk].discard(part)
                    if not parts_left[tk] and tk in ring and (baseline_tick is None or tk > baseline_tick):
                        baseline_tick = tk
        acks = [a for a in acks if a[0] > t]
        if baseline_tick is not None and baseline_tick not in ring:
            baseline_tick = None
    assert kinds == 3 and decoded > 200
    assert asm.view.tick == ticks - 1 and asm.view == View(ticks - 1, ids, q)


@pytest.mark.parametrize("seed", [2024, 7, 8])
def test_lossy_channel(seed):
    run_channel(seed, max_pending=64)


def test_lossy_channel_default_assembler():
    run_channel(2024, max_pending=8)


def test_assembler_holds_a_tick_the_server_may_take_as_baseline():
    """SPEC 5.3: the server takes as baseline the newest tick all of whose parts the client
    acknowledged, i.e. accepted (section 3: within 32 packets of the newest). So a tick whose
    parts the client all accepted must be stored, unless a newer tick completed (then the
    server has a newer baseline).

    2-part snapshots of ticks 3..12 (packets 0..19); part 1 of ticks 4..12 is lost, part 1 of
    tick 3 (packet 1) arrives after part 0 of tick 12 (packet 18): 17 packets late, inside
    the window, so it is accepted and acknowledged, and tick 3 is the newest tick the server
    sees acknowledged whole. Its next snapshot is a delta against tick 3.
    """
    ids = np.arange(1, 11, dtype=np.uint32) << 16
    encs = {}
    for t in range(3, 13):
        q = np.zeros((10, 5), np.int32)
        q[:, 0] = t
        encs[t] = encode(t, None, ids, q, part_budget=100)
        assert len(encs[t].parts) == 2
    asm = PartAssembler(U2)  # the clients' settings (worldclient.mirror, the web client)
    for t in range(3, 13):
        asm.add(encs[t].parts[0])
    asm.add(encs[3].parts[1])
    assert asm.views.get(3) == encs[3].view
    q = np.zeros((10, 5), np.int32)
    e13 = encode(13, encs[3].view, ids, q, part_budget=100)
    for p in e13.parts:
        asm.add(p)
    assert asm.view == e13.view


# ------------------------------------------------------------------------------- size


def test_random_walk_size():
    """Bytes per moving entity per snapshot on a random walk (baselines 1-2 ticks old)."""
    rng = np.random.default_rng(0)
    n, ticks = 150, 200
    qz = Quantizer((-300.0, 0.0, -300.0), (300.0, 50.0, 300.0), 0.01)
    pos = rng.uniform((-200, 0, -200), (200, 0, 200), (n, 3))
    heading = rng.uniform(0, 2 * math.pi, n)
    turn_at = rng.integers(20, 61, n)
    ids = np.sort(rng.choice(2**32, n, replace=False)).astype(np.uint32)
    views: dict[int, View] = {}
    total = updated = 0
    for t in range(ticks):
        turn = turn_at <= t
        heading[turn] = rng.uniform(0, 2 * math.pi, int(turn.sum()))
        turn_at[turn] = t + rng.integers(20, 61, int(turn.sum()))
        pos = pos + 0.25 * np.stack([np.cos(heading), np.zeros(n), np.sin(heading)], axis=1)
        heading[(np.abs(pos[:, [0, 2]]) > 290).any(axis=1)] += math.pi
        q = qz.quantize_state(pos, heading, np.full(n, 2))
        base = views.get(t - int(rng.integers(1, 3))) if t > 2 else None
        enc = encode(t, base, ids, q, layout=qz, input_ack=t, self_id=int(ids[0]))
        views[t] = enc.view
        assert assemble(enc.parts, base, qz).view == enc.view
        if t >= 10:
            total += sum(len(p) for p in enc.parts)
            updated += int(enc.sent.sum())
    measured = ticks - 10
    assert updated / (measured * n) > 0.95
    assert total / (measured * n) <= 5.0


def test_packed_walks_one_byte_for_x_and_z():
    """SPEC 5.2: a record whose changed fields are exactly x and z, both zigzags in 1..15, is
    the mask 0x45 and one byte (x in the low nibble, z in the high one); the encoding is
    canonical, so the long form of such a walk is refused."""
    zz = np.array([[14, 0, 5, 0, 0], [15, 0, 16, 0, 0], [1, 0, 1, 2, 0], [3, 0, 0, 0, 0]], np.uint32)
    buf, length = build_records(zz)
    assert buf.tobytes().hex() == "455e" + "050f10" + "0d010102" + "0103"
    assert length.tolist() == [2, 3, 4, 2]
    # x +7 (zigzag 14), z -3 (zigzag 5) on the first of three kept entities.
    got = decode_part(raw(upd=b"\x01", records=b"\x45\x5e"), BASES, U2)[1]
    assert got.q[0].tolist() == [17, 10, 7, 100, 1]
    for records, reason in [
        (b"\x45\x50", "bad_delta"),  # x nibble zero
        (b"\x45\x0e", "bad_delta"),  # z nibble zero
        (b"\x05\x0e\x05", "bad_delta"),  # a small walk in the long form
        (b"\x65\x5e", "bad_mask"),  # packed with the wide flag
        (b"\x47\x5e", "bad_mask"),  # packed with y too
    ]:
        with pytest.raises(ProtocolError) as info:
            decode_part(raw(upd=b"\x01", records=records), BASES, U2)
        assert info.value.reason == reason, records.hex()
