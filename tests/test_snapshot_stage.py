"""The snapshot stage (worldserver/snapshots.py) end to end, sans-IO: a Simulation, fake sinks
that hand the parts to real client-side PartAssemblers, and acknowledgements the test controls.

Checks what a client ends up holding against the world's own quantized state, baselines moving
only on whole ticks, lost parts, the byte allowance (nearer entities refreshed more often, every
one eventually), load shedding, history and the sink contract. Must not: open sockets or time
anything (ticks are driven by hand).
"""

from __future__ import annotations

import numpy as np
import pytest

from protocol.messages import Input
from protocol.packets import HEADER_SIZE
from protocol.snapshot import PartAssembler, read_header
from worldserver import snapshots as stage_module
from worldserver.config import load_config
from worldserver.simulation import Simulation
from worldserver.stats import Stats


class Sink:
    """A client behind a perfect (or lossy, as told) network: decodes what it gets."""

    def __init__(self, sim: Simulation) -> None:
        self.seq = 0
        self.asm = PartAssembler(sim.quantizer)
        self.sent: list[int] = []
        self.parts: list[bytes] = []
        self.lose: set[int] = set()  # part indexes to drop on the next snapshot
        self.bytes = 0
        self.budget = sim.config.udp.datagram_budget

    def send_snapshot(self, session, parts, now):
        seqs = list(range(self.seq, self.seq + len(parts)))
        self.seq += len(parts)
        self.parts = list(parts)
        self.sent = []
        for i, (seq, part) in enumerate(zip(seqs, parts)):
            assert len(part) <= sim_budget(session) - HEADER_SIZE
            self.bytes += len(part) + HEADER_SIZE
            if i in self.lose:
                continue
            self.asm.add(part)
            self.sent.append(seq)
        self.lose = set()
        return seqs


def sim_budget(session) -> int:
    return session.sink.budget


class Viewer:
    def __init__(self) -> None:
        self.views = []

    def send_view(self, session, ids, q, now):
        self.views.append((ids.copy(), q.copy()))


def make_sim(**overrides) -> Simulation:
    base = {"sim.spawn_clearance": "0.5", "sim.half_extent": "50", "interest.radius": "150", "worlds.hosted": "open"}
    base.update(overrides)
    return Simulation(load_config(path=None, env={}, overrides=base), Stats(), rng=np.random.default_rng(1))


def join_clients(sim: Simulation, n: int) -> tuple[list[Sink], list]:
    """``n`` clients joined at time 0, each behind a Sink of its own: (sinks, sessions)."""
    sinks = [Sink(sim) for _ in range(n)]
    return sinks, [sim.join(k, 0.0) for k in sinks]


def spread(sim: Simulation, rng) -> None:
    """Place every avatar at random in the 100 x 100 m hall (they spawn near the centre)."""
    for s in sim.sessions:
        sim.world.pos[s.slot, [0, 2]] = rng.uniform(-45, 45, 2)


def walk(sim: Simulation, rng, tick: int) -> None:
    for s in sim.sessions:
        a = rng.uniform(0, 2 * np.pi)
        s.take_inputs([Input(tick, int(127 * np.cos(a)), int(127 * np.sin(a)), 0, 1, 0)], tick * 0.05, 1e6, 100, sim.stats)


def world_view(sim: Simulation):
    """ids and quantized state of every alive entity, by id."""
    slots = sim.world.alive_slots()
    q = sim.quantizer.quantize_state(sim.world.pos, sim.world.yaw, sim.world.anim)[slots]
    return sim.world.ids(slots), q


def test_every_client_holds_the_world_each_tick_when_all_fit():
    sim = make_sim()
    sinks, sessions = join_clients(sim, 30)
    rng = np.random.default_rng(2)
    for t in range(1, 40):
        walk(sim, rng, t)
        sim.run_tick(t * 0.05)
        ids, q = world_view(sim)
        for s, k in zip(sessions, sinks):
            assert k.asm.view.tick == sim.tick
            np.testing.assert_array_equal(k.asm.view.ids, ids)
            np.testing.assert_array_equal(k.asm.view.q, q)
            s.on_acked(k.sent)
    # After the first tick every snapshot is a delta against a recent whole tick.
    assert all(read_header(k.parts[0]).baseline_tick == sim.tick - 1 for k in sinks)
    assert sim.stats.get("snapshot.entities_refreshed") == sim.stats.get("snapshot.entities_visible")


def test_a_tick_becomes_the_baseline_only_when_every_part_is_acknowledged():
    sim = make_sim(**{"udp.datagram_budget": "300"})  # 100 walkers need several parts
    sinks, sessions = join_clients(sim, 100)
    rng = np.random.default_rng(3)
    s, k = sessions[0], sinks[0]
    for t in range(1, 6):
        walk(sim, rng, t)
        sim.run_tick(t * 0.05)
        for ss, kk in zip(sessions, sinks):
            ss.on_acked(kk.sent)
    assert len(k.parts) >= 2
    good = sim.tick
    assert s.acked_tick == good
    k.lose = {1}  # the second part of the next tick is lost
    walk(sim, rng, 6)
    sim.run_tick(0.3)
    s.on_acked(k.sent)
    assert s.acked_tick == good  # not whole: still the old baseline
    assert k.asm.view.tick == good  # the client's mirror waits for a whole tick too
    walk(sim, rng, 7)
    sim.run_tick(0.35)
    assert read_header(k.parts[0]).baseline_tick == good
    s.on_acked(k.sent)
    assert s.acked_tick == sim.tick and k.asm.view.tick == sim.tick
    ids, q = world_view(sim)
    np.testing.assert_array_equal(k.asm.view.q, q)


def test_over_the_allowance_near_entities_refresh_more_often_and_none_starves():
    # 200 walkers all in view, 400-byte datagrams and 8,000 B/s: one datagram a tick, about
    # half of what a full view of moving entities takes.
    sim = make_sim(**{"net.client_rate_limit": "8000", "udp.datagram_budget": "400"})
    sinks, sessions = join_clients(sim, 200)
    rng = np.random.default_rng(4)
    spread(sim, rng)
    me, mine = sessions[0], sinks[0]
    fresh_ticks: dict[int, int] = {}
    near_hits = far_hits = 0
    worst_age = 0
    for t in range(1, 121):
        walk(sim, rng, t)
        sim.run_tick(t * 0.05)
        for s, k in zip(sessions, sinks):
            s.on_acked(k.sent)
            assert len(k.parts) == 1 and k.bytes <= t * 400  # never over the allowance
        if t <= 20:
            continue
        view = me.baseline
        held = dict(zip(view.ids.tolist(), view.held.tolist()))
        worst_age = max(worst_age, max(sim.tick - h for h in held.values()))
        pos = sim.world.pos[me.slot]
        for eid, h in held.items():
            slot = eid >> 16
            d = float(np.hypot(*(sim.world.pos[slot, [0, 2]] - pos[[0, 2]])))
            if h == sim.tick:
                if d < 15:
                    near_hits += 1
                elif d > 50:
                    far_hits += 1
            fresh_ticks[eid] = fresh_ticks.get(eid, 0) + (h == sim.tick)
    assert sim.stats.get("snapshots.rate_limited") > 0
    assert worst_age <= sim.snapshots.force_age + 2  # nobody waits past the forced age
    assert min(fresh_ticks.values()) > 0  # every entity was refreshed at some point
    assert near_hits > 0 and far_hits > 0
    assert mine.asm.view.tick == sim.tick


def test_allowance_prefers_near_entities_per_entity():
    sim = make_sim(**{"net.client_rate_limit": "8000", "udp.datagram_budget": "400"})
    sinks, sessions = join_clients(sim, 150)
    rng = np.random.default_rng(5)
    spread(sim, rng)
    counts: dict[str, list[int]] = {"near": [0, 0], "far": [0, 0]}  # [fresh, seen]
    me = sessions[0]
    for t in range(1, 101):
        walk(sim, rng, t)
        sim.run_tick(t * 0.05)
        for s, k in zip(sessions, sinks):
            s.on_acked(k.sent)
        if t <= 20:
            continue
        view = me.baseline
        pos = sim.world.pos[me.slot, [0, 2]]
        slots = (view.ids >> 16).astype(np.int64)
        d = np.hypot(*(sim.world.pos[slots][:, [0, 2]] - pos).T)
        fresh = view.held == view.tick
        for name, m in (("near", d < 15), ("far", d > 40)):
            counts[name][0] += int(np.count_nonzero(fresh & m))
            counts[name][1] += int(np.count_nonzero(m))
    near_rate = counts["near"][0] / counts["near"][1]
    far_rate = counts["far"][0] / counts["far"][1]
    assert near_rate > 1.5 * far_rate
    assert far_rate > 0


def test_hatongsu_style_view_sinks_get_plain_views():
    sim = make_sim()
    viewer = Viewer()
    sink = Sink(sim)
    sim.join(sink, 0.0)
    v = sim.join(viewer, 0.0)
    assert v.wants_views
    sim.run_tick(0.05)
    ids, q = world_view(sim)
    np.testing.assert_array_equal(viewer.views[-1][0], ids)
    np.testing.assert_array_equal(viewer.views[-1][1], q)
    assert sink.asm.view.tick == sim.tick


def test_join_refuses_an_object_that_is_no_sink():
    sim = make_sim()
    with pytest.raises(TypeError):
        sim.join(object(), 0.0)


def test_history_forgets_old_ticks_and_baselines_fall_back_to_full():
    sim = make_sim(**{"net.snapshot_ring": "4"})
    sink = Sink(sim)
    s = sim.join(sink, 0.0)
    sim.run_tick(0.05)
    s.on_acked(sink.sent)
    first = sim.tick
    assert sim.snapshots.baseline_for(s, sim.tick + 1) is s.baseline
    for t in range(2, 9):  # the client stops acknowledging
        sim.run_tick(t * 0.05)
    with pytest.raises(KeyError):
        sim.snapshots.history(first)
    assert sim.snapshots.baseline_for(s, sim.tick + 1) is None
    sim.run_tick(0.5)
    assert read_header(sink.parts[0]).baseline_tick is None  # a full snapshot
    assert sink.asm.view.tick == sim.tick


def test_stride_grows_only_when_the_stage_is_heavy_and_recovers():
    sim = make_sim()
    stage = sim.snapshots
    late = 0.5 / sim.tick_rate
    stage.last_seconds = 0.0
    for _ in range(10):
        stage.adapt(late)  # late, but not because of the stage
    assert stage.stride == 1
    stage.last_seconds = 0.5 / sim.tick_rate
    for _ in range(stage_module.LATE_TICKS):
        stage.adapt(late)
    assert stage.stride == 2
    for _ in range(100):
        stage.adapt(late)
    assert stage.stride == stage_module.MAX_STRIDE
    for _ in range(stage_module.RECOVER_TICKS * stage_module.MAX_STRIDE):
        stage.adapt(0.0)
    assert stage.stride == 1


def test_a_light_stage_recovers_through_ticks_late_for_other_reasons():
    # Found in the crowd bench: the stride grew to MAX_STRIDE while 400 bots joined, and then
    # stayed there (5 snapshots a second) because every late tick -- a GC pass, a burst of
    # datagrams, the machine -- restarted the count of RECOVER_TICKS ticks on time, although
    # the stage, serving a quarter of the clients, was light.
    sim = make_sim()
    stage = sim.snapshots
    period = 1.0 / sim.tick_rate
    late = 0.3 * period
    stage.stride = stage_module.MAX_STRIDE
    stage.last_seconds = 0.1 * period  # light
    for tick in range(stage_module.RECOVER_TICKS * stage_module.MAX_STRIDE * 2):
        stage.adapt(late if tick % 10 == 9 else 0.0)  # one tick in ten late
    assert stage.stride == 1
    # ... but a late tick while the stage is heavy does hold it back.
    stage = make_sim().snapshots
    stage.stride = 2
    stage.last_seconds = 0.5 * period
    for tick in range(stage_module.RECOVER_TICKS * 4):
        stage.adapt(late if tick % 10 == 9 else 0.0)
    assert stage.stride == 2


def test_a_stride_serves_every_client_in_turn():
    sim = make_sim()
    sinks, _ = join_clients(sim, 12)
    sim.snapshots.stride = 3
    for t in range(1, 4):
        sim.run_tick(t * 0.05)
    served = [k.seq > 0 for k in sinks]
    assert all(served)
    assert all(k.seq == 1 for k in sinks)  # once each in three ticks (one part each)
    assert sim.stats.get("snapshots.deferred") == 24


def test_clients_in_one_share_cell_share_one_view_and_one_encoding():
    sim = make_sim(**{"interest.share_cell": "8", "interest.radius": "20", "sim.half_extent": "100"})
    sinks, sessions = join_clients(sim, 6)
    # Three in one 8 m square, two in another, one far away on its own.
    for s, (x, z) in zip(sessions, [(1, 1), (2, 5), (7, 3), (-5, -5), (-3, -2), (60, 60)]):
        sim.world.pos[s.slot, [0, 2]] = (x, z)
    sim.run_tick(0.05)
    for s, k in zip(sessions, sinks):
        s.on_acked(k.sent)
    sim.run_tick(0.1)
    views = [k.asm.view for k in sinks]
    assert views[0] == views[1] == views[2]
    assert views[3] == views[4]
    assert set(views[5].ids.tolist()) == {sessions[5].entity_id}  # alone: sees only itself
    # One encoding per square: the parts differ only in input_ack and self_id (bytes 8-16).
    assert all(p[:8] + p[16:] == q[:8] + q[16:] for p, q in zip(sinks[0].parts, sinks[1].parts))
    assert sim.stats.get("snapshot.shared_views") == 2 * 3  # 3 clients reuse a view, per tick
    # The two near squares see the same five avatars: one view key for all five clients.
    assert set(views[0].ids.tolist()) == set(views[3].ids.tolist())
    _, _, keys = sim.snapshots.visible_sets(sessions)
    assert keys[0] == keys[1] == keys[2] == keys[3] == keys[4] != keys[5]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shared_views_give_each_client_its_representatives_view(seed):
    # visible_sets against a plain reference: every client's segment is exactly what the
    # interest grid gives the lowest slot of its share square, observing alone.
    sim = make_sim(**{"interest.share_cell": "8", "interest.radius": "6", "interest.leave_margin": "0",
                      "sim.half_extent": "100"})
    _, sessions = join_clients(sim, 60)
    rng = np.random.default_rng(seed)
    for s in sessions:  # clusters, so that squares hold several clients
        sim.world.pos[s.slot, [0, 2]] = rng.choice([-40.0, 0.0, 30.0]) + rng.uniform(-6, 6, 2)
    sim.run_tick(0.05)
    served = sessions[::-1]  # not in slot order
    slots, offsets, keys = sim.snapshots.visible_sets(served)
    assert len(offsets) == len(served) + 1 and len(keys) == len(served)
    world = sim.world
    square = {s.slot: tuple(np.floor(world.pos[s.slot, [0, 2]] / 8.0).astype(int)) for s in served}
    for i, s in enumerate(served):
        rep = min(o.slot for o in served if square[o.slot] == square[s.slot])
        alone = sim.interest.update(world.pos, world.alive, np.array([rep]), generation=None)
        assert slots[offsets[i] : offsets[i + 1]].tolist() == alone.slots.tolist()
        assert slots.dtype == alone.slots.dtype


def test_without_share_cell_every_client_sees_from_where_it_stands():
    sim = make_sim(**{"interest.share_cell": "0", "interest.radius": "5", "interest.leave_margin": "0",
                      "sim.half_extent": "100"})
    sinks, sessions = join_clients(sim, 3)
    for s, (x, z) in zip(sessions, [(0, 0), (4, 0), (8, 0)]):
        sim.world.pos[s.slot, [0, 2]] = (x, z)
    sim.run_tick(0.05)
    ids = [set(k.asm.view.ids.tolist()) for k in sinks]
    a, b, c = (s.entity_id for s in sessions)
    assert ids == [{a, b}, {a, b, c}, {b, c}]
