"""The batched encoder produces exactly the bytes and views of the per-client encoder."""

import numpy as np
from hypothesis import given, settings, strategies as st

from protocol.quantize import Quantizer
from protocol.snapshot import View, decode_snapshot, encode_snapshot
from protocol.snapshot_batch import encode_batch

Q = Quantizer(mins=(-110.0, -10.0, -110.0), maxs=(110.0, 50.0, 110.0), step=0.01)
LIMITS = np.array(Q.steps)


def random_state(rng, ids):
    n = len(ids)
    q = np.empty((n, 5), dtype=np.int32)
    q[:, :3] = rng.integers(0, LIMITS + 1, size=(n, 3))
    q[:, 3] = rng.integers(0, 65536, n)
    q[:, 4] = rng.integers(0, 4, n)
    return q


def moved(rng, q, scale):
    out = q.copy()
    step = rng.integers(-scale, scale + 1, size=(len(q), 5))
    step[:, 4] = 0
    step[rng.random(len(q)) < 0.5] = 0
    out[:, :3] = np.clip(out[:, :3] + step[:, :3], 0, LIMITS)
    out[:, 3] = (out[:, 3] + step[:, 3]) % 65536
    out[rng.random(len(q)) < 0.05, 4] = 2
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.sampled_from([3, 40, 2000]), st.sampled_from([300, 1187]))
def test_batch_equals_single(seed, n_clients, scale, budget):
    rng = np.random.default_rng(seed)
    universe = np.unique(rng.integers(0, 2**32, 80, dtype=np.uint64).astype(np.uint32))
    world_q = random_state(rng, universe)
    tick = int(rng.integers(5, 10**6))
    baselines, cands_i, cands_q, acks, selfs = [], [], [], [], []
    for c in range(n_clients):
        mode = rng.integers(0, 3)
        if mode == 0:
            baselines.append(None)
        else:
            keep = np.sort(rng.choice(len(universe), size=int(rng.integers(0, 40)), replace=False))
            bq = world_q[keep] if mode == 1 else random_state(rng, universe[keep])
            baselines.append(View(tick - int(rng.integers(1, 5)), universe[keep], bq))
        sel = np.sort(rng.choice(len(universe), size=int(rng.integers(0, 60)), replace=False))
        cands_i.append(universe[sel])
        cands_q.append(moved(rng, world_q[sel], scale))
        acks.append(int(rng.integers(-1, 70000)))
        selfs.append(int(universe[0]))
    offsets = np.concatenate(([0], np.cumsum([len(x) for x in cands_i])))
    payloads, views = encode_batch(
        tick=tick, offsets=offsets, cand_ids=np.concatenate(cands_i), cand_q=np.concatenate(cands_q),
        baselines=baselines, input_acks=acks, self_ids=selfs, budget=budget, layout=Q,
    )
    fitted = 0
    for c in range(n_clients):
        single, view, _ = encode_snapshot(
            tick=tick, baseline=baselines[c], cand_ids=cands_i[c], cand_q=cands_q[c],
            budget=budget, input_ack=acks[c], self_id=selfs[c], layout=Q,
        )
        if payloads[c] is None:
            assert len(view) < len(cands_i[c]) or not np.array_equal(view.q, cands_q[c])
            continue
        fitted += 1
        assert payloads[c] == single
        assert views[c] == view
        stored = {} if baselines[c] is None else {baselines[c].tick: baselines[c]}
        _, decoded = decode_snapshot(payloads[c], stored, Q)
        assert decoded == view


def test_batch_deterministic_case_is_compared():
    rng = np.random.default_rng(7)
    ids = np.arange(1, 30, dtype=np.uint32) << 16
    q0 = random_state(rng, ids)
    base = View(9, ids[:20], q0[:20])
    cand_ids, cand_q = ids[5:], moved(rng, q0[5:], 30)
    payloads, views = encode_batch(
        tick=10, offsets=np.array([0, len(cand_ids), len(cand_ids)]), cand_ids=cand_ids.copy(),
        cand_q=cand_q.copy(), baselines=[base, None], input_acks=[3, 0], self_ids=[int(ids[5]), 0],
        budget=1187, layout=Q,
    )
    single, view, _ = encode_snapshot(tick=10, baseline=base, cand_ids=cand_ids, cand_q=cand_q,
                                      budget=1187, input_ack=3, self_id=int(ids[5]), layout=Q)
    assert payloads[0] == single and views[0] == view
    assert payloads[1] == encode_snapshot(tick=10, baseline=None, cand_ids=cand_ids[:0], cand_q=cand_q[:0],
                                          budget=1187, input_ack=0, self_id=0, layout=Q)[0]
