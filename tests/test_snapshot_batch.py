"""protocol.snapshot_batch.encode_many gives every client exactly what encode_snapshot gives it.

For each client, ``encode_many(...)[c]`` must equal ``encode_snapshot`` run on the values the
client holds (``HeldView.values(history)``) with the integer priorities of
``priority_buckets`` and the allowance of its ``max_parts``: the same part bytes, a held view
whose values are the reference view, the same ``complete`` and the number of entities sent.
Worlds here are simulated tick by tick (moves, wide jumps, yaw wrapping, despawns and respawns
with a new generation) so that every held tick is a real past world state. Seeded numpy
generators only; no clock.
"""

from __future__ import annotations

import numpy as np
import pytest

from protocol.quantize import Quantizer
from protocol.snapshot import MIN_PART_BUDGET, NONE32, PartAssembler, encode_snapshot, read_header
from protocol.snapshot_batch import FORCED, TOP_BUCKET, HeldView, encode_many, priority_buckets

QZ = Quantizer((-100.0, 0.0, -100.0), (100.0, 20.0, 100.0), 0.01)  # 20000 x 2000 x 20000 steps
QZ4 = Quantizer((-5000.0, 0.0, -5000.0), (5000.0, 50.0, 5000.0), 0.01)  # u4 positions


def limits_of(layout) -> np.ndarray:
    if isinstance(layout, Quantizer):
        return np.array(layout.steps)
    return np.array((65535,) * 3 if layout == "<u2" else (2**31 - 1,) * 3)


class World:
    """A world of ``capacity`` slots simulated from tick ``first``: per tick the ids, the
    alive mask and the (capacity, 5) states (``hist``, the shared history)."""

    def __init__(self, rng, capacity: int, layout, first: int = 100) -> None:
        self.rng, self.capacity, self.hi = rng, capacity, limits_of(layout)
        self.gen = rng.integers(0, 65536, capacity)
        self.alive = rng.random(capacity) < 0.8
        q = np.empty((capacity, 5), dtype=np.int32)
        for a in range(3):
            q[:, a] = rng.integers(0, min(int(self.hi[a]), 10**6) + 1, capacity)
        q[:, 3] = rng.integers(0, 65536, capacity)
        q[:, 4] = rng.integers(0, 4, capacity)
        self.tick = first
        self.hist = {first: q}
        self.ids = {first: self._ids()}
        self.alive_at = {first: self.alive.copy()}

    def _ids(self) -> np.ndarray:
        return ((np.arange(self.capacity) << 16) | self.gen).astype(np.uint32)

    def step(self, moving: float = 0.7, churn: float = 0.03) -> None:
        rng, n = self.rng, self.capacity
        q = self.hist[self.tick].copy()
        move = rng.random(n) < moving
        step = rng.integers(-40, 41, (n, 3))
        jump = rng.random(n) < 0.05  # teleports: wide deltas
        step[jump] = rng.integers(-100000, 100001, (int(jump.sum()), 3))
        q[move, :3] = np.clip(q[move, :3] + step[move], 0, self.hi)
        q[move, 3] = (q[move, 3] + rng.integers(-3000, 3001, int(move.sum()))) % 65536  # wraps
        flip = rng.random(n) < 0.05
        q[flip, 4] = rng.integers(0, 256, int(flip.sum()))
        die = self.alive & (rng.random(n) < churn)
        born = ~self.alive & (rng.random(n) < 4 * churn)
        respawn = self.alive & (rng.random(n) < churn / 2)  # dies and comes back in one tick
        self.gen[born | respawn] = (self.gen[born | respawn] + 1) % 65536
        self.alive = (self.alive & ~die) | born
        fresh = born | respawn
        q[fresh, :3] = np.clip(rng.integers(0, 50000, (int(fresh.sum()), 3)), 0, self.hi)
        self.tick += 1
        self.hist[self.tick] = q
        self.ids[self.tick] = self._ids()
        self.alive_at[self.tick] = self.alive.copy()

    def history(self, h: int) -> np.ndarray:
        return self.hist[h]

    def held_view(self, rng, b_tick: int, slots: np.ndarray, back: int = 8) -> HeldView:
        """A view of the entities in ``slots`` alive at ``b_tick``, each held as of a random
        tick at most ``back`` older at which the same entity was alive in that slot."""
        slots = np.sort(slots[self.alive_at[b_tick][slots]])
        ids = self.ids[b_tick][slots]
        held = np.full(len(slots), b_tick, dtype=np.int64)
        for i, (s, e) in enumerate(zip(slots.tolist(), ids.tolist())):
            ok = [h for h in range(b_tick - back, b_tick + 1)
                  if h in self.hist and self.alive_at[h][s] and int(self.ids[h][s]) == e]  # fmt: skip
            held[i] = ok[int(rng.integers(0, len(ok)))]
        return HeldView(b_tick, ids, held, int(held.min()) if len(held) else b_tick)


def reference(world: World, tick, vis_slots, baseline, weight, *, part_budget, max_parts, max_age,
              force_age, layout, input_ack, self_id):  # fmt: skip
    """encode_snapshot on what the client holds, with priority_buckets priorities."""
    cand_ids = world.ids[tick][vis_slots]
    cand_q = world.hist[tick][vis_slots]
    if baseline is None:
        base_view, inb, held = None, np.zeros(len(cand_ids), bool), np.zeros(len(cand_ids), np.int64)
    else:
        base_view = baseline.values(world.history)
        held_of = dict(zip(baseline.ids.tolist(), baseline.held.tolist()))
        inb = np.array([e in held_of for e in cand_ids.tolist()], dtype=bool)
        held = np.array([held_of.get(e, 0) for e in cand_ids.tolist()], dtype=np.int64)
    age = np.where(inb, tick - held, max_age)
    prio = priority_buckets(age, np.ones(len(cand_ids)) if weight is None else weight, force_age)
    return encode_snapshot(
        tick=tick, baseline=base_view, cand_ids=cand_ids, cand_q=cand_q, priority=prio,
        part_budget=part_budget, allowance=None if max_parts == 255 else max_parts * (part_budget + 13),
        input_ack=input_ack, self_id=self_id, layout=layout, check=True,
    )  # fmt: skip


def run_and_compare(world: World, rng, clients, *, part_budget, layout, use_weights=True,
                    max_age=30, force_age=20) -> list:  # fmt: skip
    """clients: list of (visible slots, baseline HeldView or None, max_parts). Runs encode_many
    and checks every client against the reference; returns the results."""
    tick = world.tick
    vis = [np.sort(np.asarray(v, dtype=np.int64)) for v, _, _ in clients]
    offsets = np.concatenate(([0], np.cumsum([len(v) for v in vis]))).astype(np.int64)
    slots = np.concatenate(vis) if vis else np.zeros(0, np.int64)
    weights = rng.uniform(0, 3, len(slots)) if use_weights else None
    acks = [int(rng.integers(-1, 2**32 - 1)) for _ in clients]
    selfs = [int(rng.integers(0, 2**32)) for _ in clients]
    out = encode_many(
        tick=tick, state_ids=world.ids[tick], state_q=world.hist[tick], history=world.history,
        slots=slots, offsets=offsets, baselines=[b for _, b, _ in clients], input_acks=acks,
        self_ids=selfs, part_budget=part_budget, max_parts=[m for _, _, m in clients],
        weights=weights, max_age=max_age, force_age=force_age, layout=layout,
    )  # fmt: skip
    assert len(out) == len(clients)
    for c, ((_, baseline, max_parts), snap) in enumerate(zip(clients, out)):
        w = None if weights is None else weights[offsets[c] : offsets[c + 1]]
        ref = reference(world, tick, vis[c], baseline, w, part_budget=part_budget, max_parts=max_parts,
                        max_age=max_age, force_age=force_age, layout=layout, input_ack=acks[c],
                        self_id=selfs[c])  # fmt: skip
        assert snap.parts == ref.parts, f"client {c}"
        assert snap.view.values(world.history) == ref.view, f"client {c}"
        assert snap.complete == ref.complete, f"client {c}"
        assert snap.sent == int(ref.sent.sum()), f"client {c}"
        assert snap.refreshed == int((snap.view.held == tick).sum()), f"client {c}"
        assert snap.view.exact == bool((snap.view.held == tick).all())
        check_held_view(world, tick, snap.view, baseline, ref, world.ids[tick][vis[c]])
    return out


def check_held_view(world: World, tick, hv: HeldView, baseline, ref, cand_ids) -> None:
    """The held ticks: the tick itself where the state was sent or is current, else the
    baseline's held tick (an update not taken, a removal not sent)."""
    assert hv.tick == tick and hv.ids.dtype == np.uint32 and len(hv.held) == len(hv.ids)
    assert hv.oldest == (int(hv.held.min()) if len(hv.held) else tick)
    base_held = {} if baseline is None else dict(zip(baseline.ids.tolist(), baseline.held.tolist()))
    alive = world.alive_at[tick]
    now = dict(zip(world.ids[tick][alive].tolist(), world.hist[tick][alive].tolist()))
    values = dict(zip(ref.view.ids.tolist(), ref.view.q.tolist()))
    sent = set(cand_ids[ref.sent].tolist())
    cands = set(cand_ids.tolist())
    for e, h in zip(hv.ids.tolist(), hv.held.tolist()):
        if h == tick:
            assert now.get(e) == values[e]
        else:
            assert e not in sent and h == base_held[e] and h < tick
            assert not (e in cands and now[e] == values[e])  # a current candidate is held now


def random_clients(world: World, rng, n_clients: int, *, full_share=0.15, keep=0.85):
    tick = world.tick
    alive_slots = np.flatnonzero(world.alive_at[tick])
    clients = []
    for _ in range(n_clients):
        r = rng.random()
        vis = alive_slots[rng.random(len(alive_slots)) < rng.uniform(0.1, 1.0)] if r > 0.05 else alive_slots[:0]
        if rng.random() < full_share:
            baseline = None
        else:
            b_tick = tick - int(rng.integers(1, 6))
            # Mostly the slots in view now (enter/leave at the edges), plus a few others.
            pick = np.union1d(vis[rng.random(len(vis)) < keep],
                              np.flatnonzero(rng.random(world.capacity) < 0.05))  # fmt: skip
            baseline = world.held_view(rng, b_tick, pick.astype(np.int64))
        max_parts = int(rng.choice([1, 1, 2, 3, 5, 255, int(rng.integers(1, 256))]))
        clients.append((vis, baseline, max_parts))
    return clients


LAYOUTS = ["<u2", "<u4", QZ, QZ4]


@pytest.mark.parametrize("seed", range(8))
def test_encode_many_equals_encode_snapshot(seed):
    rng = np.random.default_rng(500 + seed)
    layout = LAYOUTS[seed % len(LAYOUTS)]
    world = World(rng, int(rng.choice([40, 150, 400])), layout)
    for _ in range(12):
        world.step()
    limited = 0
    for _ in range(5):
        world.step()
        part_budget = int(rng.choice([MIN_PART_BUDGET, 100, 300, 1187]))
        clients = random_clients(world, rng, int(rng.integers(1, 13)))
        out = run_and_compare(world, rng, clients, part_budget=part_budget, layout=layout,
                              use_weights=bool(rng.random() < 0.8), max_age=int(rng.choice([0, 5, 30])),
                              force_age=int(rng.choice([1, 3, 10, 100])))  # fmt: skip
        limited += sum(not s.complete for s in out)
    assert limited > 0  # the selection ran


def test_encode_many_over_ticks_with_its_own_held_views():
    """The server's loop: each client's baseline is a view encode_many returned earlier (held
    ticks drift apart under the allowance), acknowledged a few ticks later."""
    rng = np.random.default_rng(42)
    world = World(rng, 120, QZ)
    sent_views: dict[int, list[HeldView]] = {}
    n_clients = 6
    vis_all = [np.flatnonzero(rng.random(120) < 0.7) for _ in range(n_clients)]
    max_parts = [1, 1, 2, 3, 255, 1]
    acked = [None] * n_clients
    older = 0
    for _ in range(25):
        world.step()
        tick = world.tick
        alive = world.alive_at[tick]
        clients = []
        for c in range(n_clients):
            if rng.random() < 0.1:  # enter / leave
                vis_all[c] = np.flatnonzero(rng.random(120) < 0.7)
            base = None if acked[c] is None else sent_views[acked[c]][c]
            clients.append((vis_all[c][alive[vis_all[c]]], base, max_parts[c]))
        out = run_and_compare(world, rng, clients, part_budget=200, layout=QZ, force_age=8)
        sent_views[tick] = [s.view for s in out]
        for c in range(n_clients):
            if rng.random() < 0.7:  # this tick arrives whole, or an older one does
                acked[c] = tick - int(rng.integers(0, 3)) if tick - 2 in sent_views else tick
        older += sum(int((s.view.held < tick).sum()) for s in out)
    assert older > 0  # held ticks really vary


def test_respawned_slot_between_held_tick_and_now():
    """Slot 5 holds entity (5, g) at tick 101; at 102 it despawns and (5, g + 1) spawns there.
    At 104 clients that hold (5, g) as of 101 see (5, g + 1): the removal and the addition of
    one slot in one snapshot. With a tight allowance the removal stays: the client keeps the
    old entity at its tick-101 value (not the slot's later state)."""
    rng = np.random.default_rng(3)
    world = World(rng, 200, "<u2")
    world.alive[:] = True
    world.alive_at[100][:] = True
    world.step(churn=0)  # 101
    world.gen[5] = (world.gen[5] + 1) % 65536
    world.step(churn=0)  # 102: slot 5 respawned
    world.hist[102][5] = [7, 7, 7, 7, 7]
    world.step(churn=0)  # 103
    world.step(churn=0)  # 104
    old_id, new_id = int(world.ids[101][5]), int(world.ids[104][5])
    assert old_id != new_id and old_id >> 16 == new_id >> 16 == 5
    assert not np.array_equal(world.hist[101][5], world.hist[104][5])

    def holding(n_slots, held_new):
        ids = world.ids[103][:n_slots].copy()
        held = rng.integers(101, 104, n_slots).astype(np.int64)
        if held_new:
            held[5] = max(int(held[5]), 102)  # (5, g + 1) exists from 102 on
        else:
            ids[5], held[5] = old_id, 101
        return HeldView(103, ids, held, int(held.min()))

    everyone = np.arange(200)
    old200, old164, new200 = holding(200, False), holding(164, False), holding(200, True)
    clients = [(everyone, old200, 255), (everyone, old200, 1), (everyone, new200, 255),
               (everyone[everyone != 5], old200, 255), (everyone, old200, 2),
               (everyone, old164, 1)]  # fmt: skip
    out = run_and_compare(world, rng, clients, part_budget=MIN_PART_BUDGET, layout="<u2")
    v0 = out[0].view
    assert new_id in v0.ids.tolist() and old_id not in v0.ids.tolist() and out[0].complete
    assert new_id not in out[3].view.ids.tolist() and old_id not in out[3].view.ids.tolist()
    # 164 held entities leave 20 bits in one part of 78 bytes: the removal (31 more) stays.
    stay = out[5].view
    at = stay.ids.tolist().index(old_id)
    assert int(stay.held[at]) == 101 and new_id not in stay.ids.tolist()
    assert stay.values(world.history).q[at].tolist() == world.hist[101][5].tolist()
    # The parts decode against the values the client holds.
    for c in (0, 1, 4, 5):
        asm = PartAssembler("<u2")
        asm.views[103] = clients[c][1].values(world.history)
        for p in out[c].parts:
            asm.add(p)
        assert asm.view == out[c].view.values(world.history)


def test_empty_clients_and_clients_without_baseline():
    rng = np.random.default_rng(4)
    world = World(rng, 50, "<u2")
    for _ in range(6):
        world.step()
    tick = world.tick
    alive = np.flatnonzero(world.alive_at[tick])
    nothing = alive[:0]
    empty_held = HeldView(tick - 1, np.zeros(0, np.uint32), np.zeros(0, np.int64), tick - 1)
    full = world.held_view(rng, tick - 2, alive)
    clients = [
        (nothing, None, 1),  # nothing visible, no baseline
        (nothing, empty_held, 255),  # nothing visible, an empty baseline
        (nothing, full, 1),  # everything left the view: removals only
        (alive, None, 255),  # a full snapshot
        (alive, None, 1),  # a full snapshot over the allowance
        (alive, empty_held, 2),
    ]
    out = run_and_compare(world, rng, clients, part_budget=300, layout="<u2")
    for snap in out[:2]:
        (p,) = snap.parts
        h = read_header(p)
        assert (h.first_id, h.last_id, h.parts) == (0, NONE32, 1) and len(p) == 32
        assert len(snap.view) == 0 and snap.complete and snap.sent == 0 and snap.view.oldest == tick
    assert read_header(out[0].parts[0]).baseline_tick is None
    assert read_header(out[1].parts[0]).baseline_tick == tick - 1
    assert not out[4].complete and out[3].complete and out[3].sent == len(alive)


def test_all_clients_unchanged():
    """Every client holds exactly the entities it sees (the path where nobody's view changed),
    with held ticks that differ per entity; then again with a world that did not move."""
    rng = np.random.default_rng(5)
    world = World(rng, 200, "<u2")
    for _ in range(10):
        world.step(churn=0)
    tick = world.tick
    alive = np.flatnonzero(world.alive_at[tick])
    clients = []
    for c in range(8):
        vis = alive[rng.random(len(alive)) < 0.6]
        clients.append((vis, world.held_view(rng, tick - 1, vis), [1, 255, 2, 1, 3, 255, 1, 1][c]))
    out = run_and_compare(world, rng, clients, part_budget=200, layout="<u2")
    assert any(not s.complete for s in out) and any(s.complete for s in out)
    # As many held entities as visible ones for everyone, but one client holds another id.
    vis, base, m = clients[3]
    ids = base.ids.copy()
    ids[len(ids) // 2] ^= 1
    odd = [(v, b, mp) if c != 3 else (vis, HeldView(base.tick, ids, base.held, base.oldest), m)
           for c, (v, b, mp) in enumerate(clients)]  # fmt: skip
    run_and_compare(world, rng, odd, part_budget=200, layout="<u2")
    # A world that stands still: every part is only the bitmap, everything current.
    q = world.hist[tick].copy()
    world.tick += 1
    world.hist[world.tick] = q
    world.ids[world.tick] = world.ids[tick]
    world.alive_at[world.tick] = world.alive_at[tick]
    still = [(vis, HeldView(tick, world.ids[tick][vis], np.full(len(vis), tick, np.int64), tick), m)
             for vis, _, m in clients]  # fmt: skip
    out = run_and_compare(world, rng, still, part_budget=200, layout="<u2")
    for snap in out:
        assert snap.complete and snap.sent == 0 and (snap.view.held == world.tick).all()
        for p in snap.parts:  # header and the all-zero bitmap of its K kept entities
            k = int.from_bytes(p[30:32], "little")
            assert p[32:] == bytes((k + 7) // 8)


def test_clients_with_the_same_view_and_baseline():
    """A hall where everyone sees everyone: clients with the same visible set and the same
    exact baseline get the same parts but for input_ack and self_id (encoded once and copied),
    unless the allowance bites (then each gets its own selection by its own weights)."""
    rng = np.random.default_rng(6)
    world = World(rng, 150, "<u2")
    for _ in range(6):
        world.step(churn=0)
    tick = world.tick
    hall = np.flatnonzero(world.alive_at[tick])

    def exact(b_tick, copy=True):
        ids = world.ids[b_tick][hall]
        return HeldView(b_tick, ids.copy() if copy else ids, np.full(len(hall), b_tick, np.int64), b_tick)

    e1, e2 = exact(tick - 1, copy=False), exact(tick - 2)
    mixed = world.held_view(rng, tick - 1, hall)
    other_ids = world.ids[tick - 1][hall].copy()
    other_ids[0] ^= 1  # the same slot with another generation
    other = HeldView(tick - 1, other_ids, np.full(len(hall), tick - 1, np.int64), tick - 1)
    assert not mixed.exact
    clients = [
        (hall, e1, 255), (hall, e1, 255), (hall, exact(tick - 1), 255), (hall, e1, 255),  # copies
        (hall, e2, 1), (hall, e2, 1), (hall, exact(tick - 2), 1),  # limited: each its own
        (hall, None, 255), (hall, None, 255), (hall, None, 3),  # full; one with another allowance
        (hall, mixed, 255),  # same view, baseline not exact
        (hall[:-1], e1, 255),  # another view
        (hall, exact(tick - 3), 255),  # a group of one
        (hall, other, 255),  # exact, as many ids, not the same ids
    ]
    out = run_and_compare(world, rng, clients, part_budget=300, layout="<u2")
    assert all(s.complete for s in out[:4]) and not any(s.complete for s in out[4:7])
    assert not out[9].complete and out[7].complete
    for c in (1, 2, 3):  # the same bytes as client 0 but for input_ack and self_id
        assert len(out[c].parts) == len(out[0].parts) > 1
        for p, q in zip(out[c].parts, out[0].parts):
            assert p[:8] == q[:8] and p[16:] == q[16:]
            assert read_header(p).self_id != read_header(q).self_id
    assert not np.array_equal(out[4].view.held, out[5].view.held)  # own weights, own selection


def test_priority_buckets():
    age = np.array([0, 1, 2, 10, 100, 5, 5])
    weight = np.array([1.0, 0.5, 0.49, 3.0, 1.0, 0.0, 100.0])
    b = priority_buckets(age, weight, force_age=50)
    assert b.tolist() == [0, 0, 0, 30, FORCED, 0, TOP_BUCKET]
    assert b.dtype == np.int64
    assert priority_buckets(np.array([3]), np.array([1.0]), force_age=3).tolist() == [FORCED]
