"""Tests for protocol.snapshot: round trips, the lossy-channel property, budgets, fuzzing, size.

Must not depend on the test vectors (tests/test_snapshot_vectors.py checks those) or on any
code outside ``protocol``.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.quantize import Quantizer
from protocol.snapshot import (
    EMPTY_VIEW,
    MAX_ENTITIES,
    SnapshotHeader,
    View,
    _int_size,
    check_state,
    decode_snapshot,
    encode_snapshot,
)

U2 = "<u2"
SLOTS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 255, 4096, 65535]


def make_ids(pairs) -> np.ndarray:
    """(slot, generation) pairs -> sorted unique uint32 ids."""
    return np.array(sorted({(s << 16) | g for s, g in pairs}), dtype=np.uint32)


def state(rows) -> np.ndarray:
    return np.array(rows, dtype=np.int32).reshape(-1, 5)


def encode(tick, baseline, ids, q, budget=65535, priority=None, layout=U2, **kw):
    return encode_snapshot(
        tick=tick,
        baseline=baseline,
        cand_ids=ids,
        cand_q=q,
        priority=priority,
        budget=budget,
        input_ack=kw.pop("input_ack", 7),
        self_id=kw.pop("self_id", 1 << 16),
        layout=layout,
        check=True,
        **kw,
    )


def random_state(rng, n, hi=65535) -> np.ndarray:
    q = np.empty((n, 5), dtype=np.int32)
    q[:, :3] = rng.integers(0, hi + 1, (n, 3))
    q[:, 3] = rng.integers(0, 65536, n)
    q[:, 4] = rng.integers(0, 256, n)
    return q


def random_ids(rng, n) -> np.ndarray:
    return np.sort(rng.choice(2**32, n, replace=False)).astype(np.uint32)


def assert_valid_view(v: View, limits=(65535, 65535, 65535)) -> None:
    assert v.ids.dtype == np.uint32 and v.ids.ndim == 1
    assert v.q.dtype == np.int32 and v.q.shape == (len(v.ids), 5)
    assert len(v.ids) <= MAX_ENTITIES
    assert (np.diff(v.ids.astype(np.int64)) > 0).all()
    assert (v.q[:, :3] >= 0).all() and (v.q[:, :3] <= np.array(limits)).all()
    assert ((v.q[:, 3] >= 0) & (v.q[:, 3] <= 65535)).all()
    assert ((v.q[:, 4] >= 0) & (v.q[:, 4] <= 255)).all()


# --------------------------------------------------------------------------- round trips


def test_full_snapshot_round_trip():
    rng = np.random.default_rng(1)
    ids, q = random_ids(rng, 40), random_state(rng, 40)
    payload, view, sent = encode(5, None, ids, q, input_ack=3, self_id=int(ids[0]))
    assert sent.all() and sent.shape == (40,)
    assert view == View(5, ids, q) and view.ids is not ids and view.q is not q
    header, got = decode_snapshot(payload, {}, U2)
    assert header == SnapshotHeader(5, None, 3, int(ids[0]))
    assert got == view
    # array header, 4 scalars, removed, added_ids, added_state, 4 empty bins.
    assert len(payload) == 1 + 1 + 1 + 1 + 5 + 2 + (2 + 40 * 4) + (3 + 40 * 9) + 4 * 2


def test_delta_round_trip_and_layout():
    rng = np.random.default_rng(2)
    ids, q = random_ids(rng, 30), random_state(rng, 30)
    _, v1, _ = encode(10, None, ids, q)
    q2 = q.copy()
    q2[::3, 0] = np.clip(q2[::3, 0] + 7, 0, 65535)
    q2[1::5, 3] = (q2[1::5, 3] + 40000) % 65536
    q2[2, 4] = 255 - q2[2, 4]
    keep = np.ones(30, dtype=bool)
    keep[[4, 17]] = False
    new_ids = np.sort(np.concatenate([ids[keep], random_ids(rng, 3)]))
    new_q = np.empty((len(new_ids), 5), dtype=np.int32)
    where = np.searchsorted(ids, new_ids)
    old = (where < 30) & (ids[np.minimum(where, 29)] == new_ids)
    new_q[old] = q2[where[old]]
    new_q[~old] = random_state(rng, int((~old).sum()))
    payload, v2, sent = encode(12, v1, new_ids, new_q)
    assert v2 == View(12, new_ids, new_q)
    assert sent[~old].all()
    changed = (new_q[old] != q[where[old]]).any(axis=1)
    assert np.array_equal(sent[old], changed)
    header, got = decode_snapshot(payload, {10: v1}.get, U2)
    assert header.baseline_tick == 10 and got == v2
    parts = msgpack.unpackb(payload)
    assert np.frombuffer(parts[4], "<u4").tolist() == ids[[4, 17]].tolist()
    assert len(parts[5]) == 12 and len(parts[6]) == 27


def test_unchanged_delta_is_small_and_shares_arrays():
    rng = np.random.default_rng(3)
    ids, q = random_ids(rng, 100), random_state(rng, 100)
    _, v1, _ = encode(1, None, ids, q)
    payload, v2, sent = encode(2, v1, ids, q)
    assert not sent.any()
    assert len(payload) == 9 + 2 * 6 + (2 + 13)  # header, 6 empty bins, upd_mask
    _, got = decode_snapshot(payload, {1: v1}, U2)
    assert got == v2 and got.ids is v1.ids and got.q is v1.q


def test_empty_cases():
    empty_ids, empty_q = np.zeros(0, np.uint32), np.zeros((0, 5), np.int32)
    payload, view, sent = encode(0, None, empty_ids, empty_q)
    assert view == View(0, empty_ids, empty_q) and sent.shape == (0,)
    assert decode_snapshot(payload, {}, U2)[1] == view
    rng = np.random.default_rng(4)
    ids, q = random_ids(rng, 5), random_state(rng, 5)
    _, v1, _ = encode(1, view, ids, q)  # against an empty (non-None) baseline
    payload, v2, _ = encode(2, v1, empty_ids, empty_q)  # everything removed
    _, got = decode_snapshot(payload, {1: v1}, U2)
    assert got == v2 and len(got) == 0


@pytest.mark.parametrize(
    "layout", ["<u4", Quantizer((-1000, -1000, -1000), (1000, 1000, 1000), 0.01)]
)
def test_u4_positions(layout):
    rng = np.random.default_rng(5)
    ids, q = random_ids(rng, 20), random_state(rng, 20, hi=200000)
    q[0, :3] = 0
    q[1, :3] = 200000
    payload, v1, _ = encode(1, None, ids, q, layout=layout)
    assert len(msgpack.unpackb(payload)[6]) == 20 * 15
    assert decode_snapshot(payload, {}, layout)[1] == v1
    q2 = q.copy()
    q2[:, 0] = 200000 - q2[:, 0]  # big (wide) deltas
    payload, v2, _ = encode(2, v1, ids, q2, layout=layout)
    assert decode_snapshot(payload, {1: v1}, layout)[1] == v2
    with pytest.raises(ProtocolError):  # positions beyond the u2 range
        decode_snapshot(payload, {1: v1}, U2)


def test_quantizer_bounds_positions_in_decoder():
    qz = Quantizer((0, 0, 0), (10, 10, 10), 0.01)  # 1000 steps per axis
    ids = make_ids([(1, 0)])
    payload, v, _ = encode(1, None, ids, state([[1001, 0, 0, 0, 0]]), layout=U2)
    with pytest.raises(ProtocolError, match="out_of_range"):
        decode_snapshot(payload, {}, qz)
    with pytest.raises(ValueError):
        encode(1, None, ids, state([[1001, 0, 0, 0, 0]]), layout=qz)


def test_yaw_wraps_both_ways():
    ids = make_ids([(1, 0), (2, 0), (3, 0)])
    q1 = state([[0, 0, 0, 65535, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    q2 = state([[0, 0, 0, 0, 0], [0, 0, 0, 65535, 0], [0, 0, 0, 32768, 0]])
    _, v1, _ = encode(1, None, ids, q1)
    payload, v2, _ = encode(2, v1, ids, q2)
    parts = msgpack.unpackb(payload)
    # deltas +1, -1, -32768 -> zigzag 2, 1, 65535 (wide)
    assert parts[9] == bytes([2, 1, 255]) and parts[10] == (65535).to_bytes(4, "little")
    assert decode_snapshot(payload, {1: v1}, U2)[1] == v2


def test_int_size_matches_msgpack():
    for v in [None, 0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, -1, -32, -33,
              -128, -129, -32768, -32769, -(2**31), -(2**31) - 1]:  # fmt: skip
        assert _int_size(v) == len(msgpack.packb(v)), v


@pytest.mark.parametrize(
    "kw",
    [
        dict(tick=-1),
        dict(tick=2**32),
        dict(tick=1.0),
        dict(input_ack=-2),
        dict(self_id=2**32),
        dict(budget=70000),
        dict(budget=10),
        dict(cand_ids=np.array([3, 2], np.uint32)),
        dict(cand_ids=np.array([2, 2], np.uint32)),
        dict(cand_ids=np.array([2, 3], np.int64)),
        dict(cand_q=np.zeros((2, 5), np.int64)),
        dict(cand_q=np.zeros((3, 5), np.int32)),
        dict(cand_q=state([[0, 0, 0, 65536, 0], [0] * 5])),
        dict(cand_q=state([[0, 0, 0, 0, 256], [0] * 5])),
        dict(cand_q=state([[-1, 0, 0, 0, 0], [0] * 5])),
        dict(priority=np.zeros(3)),
        dict(layout="<u8"),
        dict(baseline=View(5, np.zeros(0, np.uint32), np.zeros((0, 5), np.int32))),
        dict(baseline=EMPTY_VIEW),
    ],
)
def test_encode_rejects_bad_arguments(kw):
    args = dict(
        tick=5,
        baseline=None,
        cand_ids=np.array([2, 3], np.uint32),
        cand_q=np.zeros((2, 5), np.int32),
        priority=None,
        budget=1200,
        input_ack=0,
        self_id=0,
        layout=U2,
        check=True,
    )
    args.update(kw)
    with pytest.raises(ValueError):
        encode_snapshot(**args)


def test_check_state():
    check_state(np.array([1, 2], np.uint32), state([[0, 0, 65535, 65535, 255], [0] * 5]), U2)
    with pytest.raises(ValueError):
        check_state(np.array([1, 2], np.uint32), state([[0, 0, 65536, 0, 0], [0] * 5]), U2)


# ------------------------------------------------------------------- lossy channel property

position = st.one_of(st.sampled_from([0, 1, 127, 128, 300, 65535]), st.integers(0, 65535))
yaw = st.one_of(st.sampled_from([0, 1, 32767, 32768, 65535]), st.integers(0, 65535))
anim = st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(0, 255))
entity_state = st.tuples(position, st.sampled_from([0, 5, 65535]), position, yaw, anim)
field_value = st.one_of(st.integers(0, 300), st.sampled_from([32767, 32768, 65535]))
# One tick's changes to the world: per slot, despawn, (re)spawn with a generation and a full
# state, or change one field; slots not mentioned keep their entity unchanged.
world_step = st.dictionaries(
    st.sampled_from(SLOTS),
    st.one_of(
        st.just(("del",)),
        st.tuples(st.just("set"), st.integers(0, 2), entity_state),
        st.tuples(st.just("mod"), st.integers(0, 4), field_value),
    ),
    max_size=len(SLOTS),
)
worlds_strategy = st.lists(world_step, min_size=1, max_size=25)


def apply_steps(steps) -> list[dict]:
    """World states (slot -> (generation, state)) after each step."""
    w: dict = {}
    out = []
    for step in steps:
        w = dict(w)
        for slot, act in step.items():
            if act[0] == "del":
                w.pop(slot, None)
            elif act[0] == "set":
                w[slot] = (act[1], act[2])
            elif slot in w:
                gen, st_ = w[slot]
                st_ = list(st_)
                st_[act[1]] = act[2] & 0xFF if act[1] == 4 else act[2]
                w[slot] = (gen, tuple(st_))
        out.append(w)
    return out


def world_arrays(w: dict) -> tuple[np.ndarray, np.ndarray]:
    items = sorted(((slot << 16) | gen, s) for slot, (gen, s) in w.items())
    ids = np.array([i for i, _ in items], dtype=np.uint32)
    q = np.array([s for _, s in items], dtype=np.int32).reshape(-1, 5)
    return ids, q


def check_sent(baseline: View | None, ids, q, view: View, sent) -> None:
    """``sent`` marks exactly the candidates added or updated by the snapshot."""
    base = {} if baseline is None else dict(zip(baseline.ids.tolist(), baseline.q.tolist()))
    got = dict(zip(view.ids.tolist(), view.q.tolist()))
    for i, (eid, row) in enumerate(zip(ids.tolist(), q.tolist())):
        if sent[i]:
            assert got[eid] == row and base.get(eid) != row
        elif eid in base:
            assert got[eid] == base[eid]
        else:
            assert eid not in got
    for eid in set(got) - set(ids.tolist()):  # unsent removals keep their baseline value
        assert got[eid] == base[eid]


def run_channel(data, worlds, budget_of, priority_of, ample: bool) -> int:
    """Simulate a server and a client over a lossy, reordering, duplicating channel.

    Returns how many snapshots the client decoded.
    """
    ring: dict[int, View] = {}  # server: views sent, last 32 ticks
    acked: int | None = None  # server: newest tick the client acknowledged
    to_client: list[tuple[int, int, bytes]] = []  # (arrival, order, payload)
    to_server: list[tuple[int, int, int]] = []  # (arrival, order, acked tick)
    client: dict[int, View] = {}  # client: decoded views, newest 64 by tick
    sent_views: dict[int, View] = {}
    cands: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    decoded = 0
    delays = st.lists(st.integers(0, 4), max_size=2)  # [] lost, 2 entries duplicated
    last = len(worlds) + 6
    for t in range(1, last):
        if t <= len(worlds):
            ids, q = world_arrays(worlds[t - 1])
            cands[t] = (ids, q)
            baseline = ring.get(acked) if acked is not None else None
            budget = budget_of(t)
            payload, view, sent = encode(
                t, baseline, ids, q, budget=budget, priority=priority_of(len(ids)), input_ack=t
            )
            assert len(payload) <= budget
            assert sent.dtype == bool and sent.shape == ids.shape
            check_sent(baseline, ids, q, view, sent)
            ring[t] = sent_views[t] = view
            ring.pop(t - 32, None)
            for delay in data.draw(delays):
                to_client.append((t + delay, data.draw(st.integers(0, 3)), payload))
        arriving = sorted(p for p in to_client if p[0] == t)
        for _, _, payload in arriving:
            header, view = decode_snapshot(payload, client, U2)  # never unknown_baseline here
            decoded += 1
            assert view == sent_views[header.tick]
            assert header.input_ack == header.tick
            client[header.tick] = view
            if len(client) > 64:
                del client[min(client)]
            mirror = client[max(client)]
            assert mirror == sent_views[mirror.tick]
            if ample:
                ids, q = cands[header.tick]
                assert np.array_equal(view.ids, ids) and np.array_equal(view.q, q)
            for delay in data.draw(delays):
                to_server.append((t + delay, data.draw(st.integers(0, 3)), header.tick))
        for _, _, tick in sorted(a for a in to_server if a[0] == t):
            acked = tick if acked is None else max(acked, tick)
    return decoded


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), worlds_strategy)
def test_lossy_channel_ample_budget(data, steps):
    run_channel(data, apply_steps(steps), lambda t: 1200, lambda n: None, ample=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), worlds_strategy)
def test_lossy_channel_small_budget(data, steps):
    use_priority = data.draw(st.booleans())

    def budget_of(t):
        return data.draw(st.integers(64, 300))

    def priority_of(n):
        if not use_priority:
            return None
        return np.array(data.draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n)))

    run_channel(data, apply_steps(steps), budget_of, priority_of, ample=False)


def test_lossy_channel_reaches_mirror_of_every_kind():
    """The property test's simulator really exercises deltas, losses and full snapshots."""
    rng = np.random.default_rng(8)
    kinds = set()
    ring, acked = {}, None
    client = {}
    for t in range(1, 200):
        n = int(rng.integers(0, 30))
        ids = np.unique(rng.integers(0, 40, n).astype(np.uint32) << 16)
        q = random_state(rng, len(ids), hi=50)
        base = ring.get(acked) if acked is not None else None
        payload, view, _ = encode(t, base, ids, q)
        ring[t] = view
        if rng.random() < 0.3:
            continue
        header, got = decode_snapshot(payload, client, U2)
        assert got == view
        kinds.add("full" if header.baseline_tick is None else "delta")
        client[t] = got
        if rng.random() < 0.5:
            acked = t
    assert kinds == {"full", "delta"}


# ------------------------------------------------------------------------------ budgets


def simulate_lossless(ids, q, budget, priority_mode, start: View | None = None, limit=100):
    """Static world, instant acks; returns the number of snapshots until mirror == world."""
    base = start
    prio = np.zeros(len(ids))
    tick = 0 if start is None else start.tick + 1
    for k in range(limit):
        payload, view, sent = encode(
            tick, base, ids, q, budget=budget, priority=None if priority_mode is None else prio
        )
        assert len(payload) <= budget
        _, got = decode_snapshot(payload, {} if base is None else {base.tick: base}, U2)
        assert got == view
        prio += 1
        prio[sent] = 0
        if np.array_equal(view.ids, ids) and np.array_equal(view.q, q):
            return k + 1
        base = view
        tick += 1
    raise AssertionError("did not converge")


@pytest.mark.parametrize("mode", [None, "accumulate"])
@pytest.mark.parametrize("n, budget", [(1000, 1200), (1500, 1387), (300, 200), (40, 80)])
def test_full_snapshot_over_budget_converges(n, budget, mode):
    rng = np.random.default_rng(n)
    ids, q = random_ids(rng, n), random_state(rng, n)
    rounds = simulate_lossless(ids, q, budget, mode)
    per_round = max(1, (budget - 45 - n // 8) // 13)  # header, bin headers, upd_mask of the view
    assert rounds <= math.ceil(n / per_round) + 2


@pytest.mark.parametrize("mode", [None, "accumulate"])
def test_delta_over_budget_converges(mode):
    rng = np.random.default_rng(11)
    ids, q = random_ids(rng, 400), random_state(rng, 400)
    _, v1, _ = encode(1, None, ids, q)
    keep = rng.random(400) < 0.7
    ids2 = np.sort(np.concatenate([ids[keep], random_ids(rng, 200)]))
    q2 = random_state(rng, len(ids2))  # everyone changed, wide deltas
    rounds = simulate_lossless(ids2, q2, 300, mode, start=v1)
    assert rounds > 5


def test_removals_are_bounded():
    rng = np.random.default_rng(12)
    ids, q = random_ids(rng, 500), random_state(rng, 500)
    _, v1, _ = encode(1, None, ids, q)
    empty_ids, empty_q = np.zeros(0, np.uint32), np.zeros((0, 5), np.int32)
    payload, v2, _ = encode(2, v1, empty_ids, empty_q, budget=300)
    assert len(payload) <= 300
    removed = len(msgpack.unpackb(payload)[4]) // 4
    assert 50 < removed < 75
    assert np.array_equal(v2.ids, ids[removed:]) and np.array_equal(v2.q, q[removed:])
    assert decode_snapshot(payload, {1: v1}, U2)[1] == v2
    assert simulate_lossless(empty_ids, empty_q, 300, None, start=v2) <= 8


def test_priority_order_and_stale_values():
    ids = make_ids([(s, 0) for s in range(100)])
    q = state([[s, 0, 0, 0, 0] for s in range(100)])
    _, v1, _ = encode(1, None, ids, q)
    q2 = q.copy()
    q2[:, 0] += 1000  # every entity changes x by a wide delta: 5 bits + 1 + 4 bytes each
    prio = np.arange(100, dtype=np.float64) % 7
    payload, v2, sent = encode(2, v1, ids, q2, budget=200, priority=prio)
    k = int(sent.sum())
    assert 0 < k < 100
    order = np.argsort(-prio, kind="stable")
    assert set(np.flatnonzero(sent)) == set(order[:k])
    assert np.array_equal(v2.q[sent], q2[sent]) and np.array_equal(v2.q[~sent], q[~sent])
    assert decode_snapshot(payload, {1: v1}, U2)[1] == v2
    # Without priority, candidates are taken in order.
    _, v3, sent = encode(2, v1, ids, q2, budget=200)
    assert np.array_equal(np.flatnonzero(sent), np.arange(int(sent.sum())))


def test_unchosen_additions_stay_out():
    rng = np.random.default_rng(13)
    ids, q = random_ids(rng, 200), random_state(rng, 200)
    payload, v, sent = encode(1, None, ids, q, budget=500)
    assert len(payload) <= 500 and 0 < sent.sum() < 200
    assert np.array_equal(v.ids, ids[sent]) and np.array_equal(v.q, q[sent])


def test_budget_never_exceeded_random():
    rng = np.random.default_rng(14)
    base = None
    for t in range(1, 300):
        n = int(rng.integers(0, 1200))
        ids = np.unique(rng.integers(0, 1500, n).astype(np.uint32))
        q = random_state(rng, len(ids), hi=int(rng.choice([10, 300, 65535])))
        budget = int(rng.integers(200, 1400))
        prio = rng.random(len(ids)) if t % 3 else None
        payload, view, _ = encode(t, base, ids, q, budget=budget, priority=prio)
        assert len(payload) <= budget
        _, got = decode_snapshot(payload, {} if base is None else {base.tick: base}, U2)
        assert got == view
        base = view if rng.random() < 0.8 else None


# ---------------------------------------------------------------------------- decoding


def raw(tick=2, bt=1, ack=0, self_id=0, removed=b"", added=b"", added_state=b"",
        upd=b"", fields=b"", small=b"", wide=b""):  # fmt: skip
    return msgpack.packb(
        [tick, bt, ack, self_id, removed, added, added_state, upd, fields, small, wide]
    )


def u32(*values) -> bytes:
    return np.array(values, dtype="<u4").tobytes()


BASE = View(1, make_ids([(1, 0), (2, 0), (3, 0)]), state([[10, 10, 10, 100, 1]] * 3))
BASES = {1: BASE}


def test_handmade_valid_payload():
    # remove entity 2, update entity 1 (x +1, anim -1), add entity 4.
    added_state = u32()[:0] + np.array([5, 6, 7], "<u2").tobytes() + b"\x08\x00\x09"
    p = raw(removed=u32(2 << 16), added=u32(4 << 16), added_state=added_state,
            upd=bytes([0b01]), fields=bytes([0b10001]), small=bytes([2, 1]))  # fmt: skip
    header, v = decode_snapshot(p, BASES, U2)
    assert header == SnapshotHeader(2, 1, 0, 0)
    assert v.ids.tolist() == [1 << 16, 3 << 16, 4 << 16]
    assert v.q.tolist() == [[11, 10, 10, 100, 0], [10, 10, 10, 100, 1], [5, 6, 7, 8, 9]]


REJECTS = [
        (raw(tick=20, bt=9), "unknown_baseline"),
        (raw(bt=2), "bad_field"),  # baseline not older than tick
        (raw(tick=-1), "bad_field"),
        (raw(tick=2**32, bt=None), "bad_field"),
        (raw(ack=-2), "bad_field"),
        (raw(self_id=2**32), "bad_field"),
        (raw(tick=True), "bad_field"),
        (raw(bt=1.0), "bad_field"),
        (raw(), "bad_length"),  # upd_mask missing for 3 kept entities
        (raw(upd=b"\x00\x00"), "bad_length"),
        (raw(upd=b"\x08"), "bad_padding"),
        (raw(upd=b"\x01"), "bad_length"),  # field mask missing
        (raw(upd=b"\x01", fields=b"\x00"), "bad_field_mask"),
        (raw(upd=b"\x01", fields=b"\x21"), "bad_padding"),
        (raw(upd=b"\x01", fields=b"\x01"), "bad_length"),  # small missing
        (raw(upd=b"\x01", fields=b"\x01", small=b"\x00"), "bad_delta"),
        (raw(upd=b"\x01", fields=b"\x01", small=b"\xff"), "bad_length"),
        (raw(upd=b"\x01", fields=b"\x01", small=b"\xff", wide=u32(3)), "bad_delta"),
        (raw(upd=b"\x01", fields=b"\x01", small=b"\xff", wide=u32(2**32 - 1)), "out_of_range"),
        (raw(upd=b"\x01", fields=b"\x01", small=b"\x15"), "out_of_range"),  # x: 10 - 11 < 0
        (raw(upd=b"\x01", fields=b"\x08", small=b"\xff", wide=u32(65536)), "bad_delta"),
        (raw(upd=b"\x01", fields=b"\x10", small=b"\xff", wide=u32(510)), "out_of_range"),
        (raw(upd=b"\x01", fields=b"\x10", small=b"\x03"), "out_of_range"),  # anim 1 - 2
        (raw(upd=b"\x01", fields=b"\x10", small=b"\xfe"), None),  # anim 1 + 127: valid
        (raw(upd=b"\x00", small=b"\x01"), "bad_length"),
        (raw(upd=b"\x00", wide=u32(300)), "bad_length"),
        (raw(upd=b"\x00", wide=b"\x00"), "bad_length"),
        (raw(removed=u32(5), upd=b"\x00"), "bad_removed"),
        (raw(removed=u32(2 << 16, 1 << 16), upd=b"\x00"), "unsorted_ids"),
        (raw(removed=u32(1 << 16, 1 << 16), upd=b"\x00"), "unsorted_ids"),
        (raw(removed=b"\x00\x00\x01"), "bad_length"),
        (raw(added=u32(1 << 16), added_state=bytes(9), upd=b"\x00"), "bad_added"),
        (raw(added=u32(9, 8), added_state=bytes(18), upd=b"\x00"), "unsorted_ids"),
        (raw(added=u32(9), added_state=bytes(8), upd=b"\x00"), "bad_length"),
        (raw(bt=None, removed=u32(1)), "bad_removed"),
        (raw(bt=None, upd=b"\x00"), "bad_length"),
        (raw(upd="x"), "bad_msgpack"),  # no strings at all
        (raw(upd=5), "bad_field"),
        (raw(removed=[]), "bad_field"),
        (msgpack.packb([1, None, 0, 0]), "bad_shape"),
        (msgpack.packb({"a": 1}), "bad_msgpack"),
        (msgpack.packb(5), "bad_shape"),
        (raw() + b"\x00", "bad_msgpack"),
        (raw()[:-1], "bad_msgpack"),
        (b"", "bad_msgpack"),
        (bytes(70000), "oversized"),
]  # fmt: skip


@pytest.mark.parametrize(
    "payload, reason", REJECTS, ids=[f"{i}-{r}" for i, (_, r) in enumerate(REJECTS)]
)
def test_decode_rejects(payload, reason):
    if reason is None:  # a control case next to its rejected neighbours
        decode_snapshot(payload, BASES, U2)
        return
    with pytest.raises(ProtocolError) as info:
        decode_snapshot(payload, BASES, U2)
    assert info.value.reason == reason


def test_decode_rejects_non_bytes_and_checks_baseline_tick():
    with pytest.raises(ProtocolError):
        decode_snapshot("abc", BASES, U2)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="unknown_baseline"):
        decode_snapshot(raw(upd=b"\x00"), {1: View(0, BASE.ids, BASE.q)}, U2)
    with pytest.raises(ProtocolError, match="unknown_baseline"):
        decode_snapshot(raw(upd=b"\x00"), lambda t: None, U2)
    assert decode_snapshot(raw(upd=b"\x00"), lambda t: BASE, U2)[1] == View(2, BASE.ids, BASE.q)


def test_decode_entity_limit():
    big = View(1, np.arange(MAX_ENTITIES, dtype=np.uint32), np.zeros((MAX_ENTITIES, 5), np.int32))
    p = raw(added=u32(MAX_ENTITIES), added_state=bytes(9), upd=bytes(MAX_ENTITIES // 8))
    with pytest.raises(ProtocolError, match="too_many_entities"):
        decode_snapshot(p, {1: big}, U2)


# -------------------------------------------------------------------------------- fuzzing


def _valid_payloads():
    rng = np.random.default_rng(21)
    out = []
    ids, q = random_ids(rng, 12), random_state(rng, 12, hi=400)
    p, v1, _ = encode(1, None, ids, q)
    out.append(p)
    keep = rng.random(12) < 0.7
    ids2 = np.sort(np.concatenate([ids[keep], random_ids(rng, 4)]))
    q2 = random_state(rng, len(ids2), hi=400)
    q2[: len(ids2) // 2] = np.clip(q2[: len(ids2) // 2], 0, 400)
    p, v2, _ = encode(2, v1, ids2, q2)
    out.append(p)
    ids3 = ids2
    q3 = q2.copy()
    q3[:, 0] = np.clip(q3[:, 0] + rng.integers(-3, 4, len(ids3)), 0, 400)
    q3[::2, 3] = (q3[::2, 3] + 30000) % 65536
    p, v3, _ = encode(3, v2, ids3, q3)
    out.append(p)
    return out, {1: v1, 2: v2, 3: v3}


VALID, VIEWS = _valid_payloads()


def decode_or_protocol_error(payload):
    try:
        _, v = decode_snapshot(payload, VIEWS, U2)
    except ProtocolError:
        return None
    assert_valid_view(v)
    return v


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data):
    decode_or_protocol_error(data)


msgpack_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.binary(max_size=40) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=12),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(msgpack_value)
def test_fuzz_random_msgpack(value):
    decode_or_protocol_error(msgpack.packb(value))


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(range(len(VALID))),
    st.lists(
        st.tuples(st.sampled_from(["flip", "set", "insert", "delete"]), st.integers(0, 10**6),
                  st.integers(0, 255)),
        min_size=1, max_size=4,
    ),
)  # fmt: skip
def test_fuzz_mutated_bytes(which, mutations):
    data = bytearray(VALID[which])
    for op, where, byte in mutations:
        i = where % (len(data) + 1)
        if op == "insert":
            data.insert(i, byte)
        elif data and i < len(data):
            if op == "flip":
                data[i] ^= 1 << (byte & 7)
            elif op == "set":
                data[i] = byte
            else:
                del data[i]
    decode_or_protocol_error(bytes(data))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(range(len(VALID))), st.data())
def test_fuzz_mutated_fields(which, data):
    parts = msgpack.unpackb(VALID[which])
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, 10))
        old = parts[i]
        choices = [
            st.none(),
            st.booleans(),
            st.integers(-5, 5),
            st.integers(0, 2**32 + 5),
            st.binary(max_size=30),
            st.floats(),
            st.text(max_size=3),
        ]
        if isinstance(old, bytes):
            choices += [
                st.integers(0, len(old)).map(lambda k, o=old: o[:k]),
                st.binary(min_size=1, max_size=8).map(lambda b, o=old: o + b),
                st.tuples(st.integers(0, max(0, len(old) - 1)), st.integers(0, 255)).map(
                    lambda t, o=old: o[: t[0]] + bytes([t[1]]) + o[t[0] + 1 :] if o else o
                ),
            ]
        elif isinstance(old, int):
            choices.append(st.integers(-3, 3).map(lambda k, o=old: o + k))
        parts[i] = data.draw(st.one_of(choices))
    if data.draw(st.booleans()):
        parts = parts[: data.draw(st.integers(0, 12))] + [None] * data.draw(st.integers(0, 1))
    decode_or_protocol_error(msgpack.packb(parts))


def test_fuzz_valid_payloads_decode():
    for p in VALID:
        assert decode_or_protocol_error(p) is not None


# ---------------------------------------------------------------------------- size


def random_walk_bytes(n=150, ticks=400, seed=0) -> tuple[float, float]:
    """Average payload bytes per moving entity per snapshot, and fraction updated."""
    rng = np.random.default_rng(seed)
    qz = Quantizer((-300.0, 0.0, -300.0), (300.0, 50.0, 300.0), 0.01)
    dt, speed = 0.05, 5.0  # 20 Hz, 25 cm per tick
    pos = rng.uniform((-200, 0, -200), (200, 0, 200), (n, 3))
    heading = rng.uniform(0, 2 * math.pi, n)
    turn_at = rng.integers(20, 61, n)
    ids = random_ids(rng, n)
    anim = np.full(n, 2)
    views: dict[int, View] = {}
    total = updated = 0
    for t in range(ticks):
        turn = turn_at <= t
        heading[turn] = rng.uniform(0, 2 * math.pi, int(turn.sum()))
        turn_at[turn] = t + rng.integers(20, 61, int(turn.sum()))
        step = speed * dt * np.stack([np.cos(heading), np.zeros(n), np.sin(heading)], axis=1)
        pos = pos + step
        out = np.abs(pos[:, [0, 2]]) > 290  # turn back at the edges
        heading[out.any(axis=1)] += math.pi
        q = qz.quantize_state(pos, heading, anim)
        base = views.get(t - int(rng.integers(1, 3))) if t > 2 else None
        payload, view, sent = encode_snapshot(
            tick=t, baseline=base, cand_ids=ids, cand_q=q, budget=1387, input_ack=t,
            self_id=int(ids[0]), layout=qz,
        )  # fmt: skip
        views[t] = view
        assert decode_snapshot(payload, views, qz)[1] == view
        if t >= 10:
            total += len(payload)
            updated += int(sent.sum())
    measured = ticks - 10
    return total / (measured * n), updated / (measured * n)


def test_random_walk_size():
    per_entity, frac_updated = random_walk_bytes()
    print(f"random walk: {per_entity:.2f} bytes per moving entity per snapshot")
    assert frac_updated > 0.95
    assert per_entity <= 5.0
