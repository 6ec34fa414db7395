"""Tests for worldserver.interest: the grid against a brute-force O(n²) reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worldserver.interest import InterestGrid, Visibility


class Reference:
    """Brute force: every observer against every entity, hysteresis by (observer, entity) sets."""

    def __init__(self, radius, leave_margin):
        self.r2 = radius * radius
        self.l2 = (radius + leave_margin) ** 2
        self.prev = {}  # observer slot -> set of slots seen at the previous update
        self.prev_gen = None

    def update(self, pos, alive, observers, generation=None):
        changed = None
        if generation is not None and self.prev_gen is not None:
            changed = generation != self.prev_gen
        out = []
        new_prev = {}
        for o in observers:
            o = int(o)
            if not alive[o]:
                out.append((np.zeros(0, np.int64), np.zeros(0)))
                new_prev[o] = set()
                continue
            old = self.prev.get(o, set())
            if changed is not None and changed[o]:
                old = set()
            d2 = (pos[:, 0] - pos[o, 0]) ** 2 + (pos[:, 2] - pos[o, 2]) ** 2
            seen = []
            for e in np.flatnonzero(alive):
                e = int(e)
                if d2[e] <= self.r2:
                    seen.append(e)
                elif d2[e] <= self.l2 and e in old and not (changed is not None and changed[e]):
                    seen.append(e)
            out.append((np.array(seen, dtype=np.int64), d2[seen]))
            new_prev[o] = set(seen)
        self.prev = new_prev
        self.prev_gen = None if generation is None else generation.copy()
        return out

    def forget(self, slot):
        self.prev.pop(int(slot), None)


def check_against(vis: Visibility, ref_out, observers):
    assert np.array_equal(vis.observers, observers)
    assert vis.offsets.shape == (len(observers) + 1,)
    assert vis.offsets[0] == 0 and vis.offsets[-1] == len(vis.slots) == len(vis.dist2)
    assert vis.slots.dtype == np.int64 and vis.dist2.dtype == np.float32
    assert vis.offsets.dtype == np.int64
    for i, (slots, d2) in enumerate(ref_out):
        got, gd2 = vis.of(i)
        assert np.array_equal(got, slots), (i, got, slots)
        np.testing.assert_allclose(gd2, d2.astype(np.float32), rtol=1e-6, atol=1e-6)


def random_world(rng, cap, n, extent):
    pos = np.zeros((cap, 3))
    pos[:, 0::2] = rng.uniform(-extent, extent, (cap, 2))
    pos[:, 1] = rng.uniform(0, 3, cap)
    alive = np.zeros(cap, dtype=bool)
    alive[rng.choice(cap, n, replace=False)] = True
    return pos, alive


def make_grid(cap, radius=10.0, margin=2.0, cell_size=None, half_extent=50.0, **tweaks):
    g = InterestGrid(half_extent=half_extent, radius=radius, leave_margin=margin,
                     cell_size=cell_size, capacity=cap)
    for name, value in tweaks.items():
        setattr(g, name, value)
    return g


def run_sequence(rng, grid, ref, pos, alive, observers_fn, steps, step_size, generation=None,
                 churn=0.0):
    cap = len(alive)
    for _ in range(steps):
        observers = observers_fn()
        vis = grid.update(pos, alive, observers, generation=generation)
        check_against(vis, ref.update(pos, alive, observers, generation), observers)
        pos[:, 0::2] += rng.normal(0, step_size, (cap, 2))
        if churn:
            flip = rng.random(cap) < churn
            alive ^= flip
            if generation is not None:
                respawned = flip & alive
                generation[respawned] += 1


@pytest.mark.parametrize("cell_size", [None, 12.0, 4.0, 7.3, 30.0])
def test_matches_brute_force_with_hysteresis(cell_size):
    rng = np.random.default_rng(7)
    cap = 300
    pos, alive = random_world(rng, cap, 220, 40.0)
    grid = make_grid(cap, cell_size=cell_size)
    ref = Reference(10.0, 2.0)
    observers = np.flatnonzero(alive)
    run_sequence(rng, grid, ref, pos, alive, lambda: observers, steps=8, step_size=0.8)


def test_multi_block_and_binary_search_paths():
    rng = np.random.default_rng(8)
    cap = 400
    pos, alive = random_world(rng, cap, 350, 30.0)
    grid = make_grid(cap, block_candidates=500, table_limit=64)
    ref = Reference(10.0, 2.0)
    observers = np.flatnonzero(alive)
    run_sequence(rng, grid, ref, pos, alive, lambda: observers, steps=6, step_size=0.8)


def test_changing_observer_sets_and_order():
    rng = np.random.default_rng(9)
    cap = 250
    pos, alive = random_world(rng, cap, 200, 30.0)
    grid = make_grid(cap, block_candidates=2000)
    ref = Reference(10.0, 2.0)

    def observers():  # a shuffled subset, sometimes including dead slots
        return rng.permutation(cap)[: rng.integers(1, cap)]

    run_sequence(rng, grid, ref, pos, alive, observers, steps=10, step_size=0.8)


def test_generation_churn_never_inherits_memory():
    rng = np.random.default_rng(10)
    cap = 200
    pos, alive = random_world(rng, cap, 150, 30.0)
    generation = np.ones(cap, dtype=np.uint16)
    grid = make_grid(cap)
    ref = Reference(10.0, 2.0)
    run_sequence(rng, grid, ref, pos, alive, lambda: np.arange(cap), steps=10, step_size=0.8,
                 generation=generation, churn=0.05)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 60),
    radius=st.floats(0.5, 20.0),
    margin=st.floats(0.0, 5.0),
    cell_frac=st.sampled_from([None, 1.0, 0.5, 0.33, 2.0]),
    extent=st.floats(1.0, 60.0),
    grid_extent=st.floats(5.0, 60.0),
    step_size=st.floats(0.0, 3.0),
)
def test_hypothesis_random_worlds(seed, n, radius, margin, cell_frac, extent, grid_extent,
                                  step_size):
    rng = np.random.default_rng(seed)
    cap = 64
    pos, alive = random_world(rng, cap, n, extent)  # may lie outside the grid's bounds
    # Snap some coordinates to a coarse lattice so exact-boundary distances occur.
    pos[::3, 0::2] = np.round(pos[::3, 0::2])
    cell = None if cell_frac is None else (radius + margin) * cell_frac
    grid = make_grid(cap, radius=radius, margin=margin, cell_size=cell, half_extent=grid_extent)
    ref = Reference(radius, margin)
    observers = rng.permutation(cap)[: rng.integers(0, cap + 1)]
    run_sequence(rng, grid, ref, pos, alive, lambda: observers, steps=4, step_size=step_size)


def test_hysteresis_entity_at_52m():
    cap = 4
    grid = make_grid(cap, radius=50.0, margin=5.0, half_extent=200.0)
    pos = np.zeros((cap, 3))
    alive = np.ones(cap, dtype=bool)
    pos[1, 0] = 49.0  # entity 1 starts inside the radius
    pos[2, 0] = 70.0  # entity 2 starts outside the leave radius
    pos[3, 2] = 120.0  # unrelated observer far away
    observers = np.array([0, 3])

    vis = grid.update(pos, alive, observers)
    assert vis.of(0)[0].tolist() == [0, 1]
    pos[1, 0] = 52.0  # leaves the radius but stays inside the leave radius
    pos[2, 0] = 52.0  # newly within the leave radius only
    vis = grid.update(pos, alive, observers)
    assert vis.of(0)[0].tolist() == [0, 1]
    assert vis.of(0)[1][1] == pytest.approx(52.0**2)
    vis = grid.update(pos, alive, observers)  # still remembered while inside 55 m
    assert vis.of(0)[0].tolist() == [0, 1]
    pos[1, 0] = 56.0  # beyond the leave radius: dropped
    vis = grid.update(pos, alive, observers)
    assert vis.of(0)[0].tolist() == [0]
    pos[1, 0] = 52.0  # back in the ring, but no longer remembered
    vis = grid.update(pos, alive, observers)
    assert vis.of(0)[0].tolist() == [0]
    pos[1, 0] = 50.0  # exactly at the radius counts as inside
    vis = grid.update(pos, alive, observers)
    assert vis.of(0)[0].tolist() == [0, 1]
    assert vis.of(1)[0].tolist() == [3]


def test_forget_and_new_generation_drop_observer_memory():
    cap = 3
    pos = np.zeros((cap, 3))
    pos[1, 0] = 49.0
    pos[2, 2] = 150.0
    alive = np.ones(cap, dtype=bool)
    gen = np.ones(cap, dtype=np.uint16)
    for how in ("forget", "generation", "observer_change"):
        grid = make_grid(cap, radius=50.0, margin=5.0, half_extent=200.0)
        pos[1, 0] = 49.0
        observers = np.array([0])
        assert grid.update(pos, alive, observers, generation=gen).of(0)[0].tolist() == [0, 1]
        pos[1, 0] = 52.0
        g2 = gen
        if how == "forget":
            grid.forget(0)
        elif how == "generation":
            g2 = gen.copy()
            g2[0] += 1  # slot 0 now belongs to someone else
        else:
            # Slot 0 is not an observer for one update: its memory lapses.
            grid.update(pos, alive, np.array([2]), generation=gen)
        assert grid.update(pos, alive, observers, generation=g2).of(0)[0].tolist() == [0]

    # An entity slot reused with a new generation is a new entity: not remembered.
    grid = make_grid(cap, radius=50.0, margin=5.0, half_extent=200.0)
    pos[1, 0] = 49.0
    assert grid.update(pos, alive, [0], generation=gen).of(0)[0].tolist() == [0, 1]
    pos[1, 0] = 52.0
    g2 = gen.copy()
    g2[1] += 1
    assert grid.update(pos, alive, [0], generation=g2).of(0)[0].tolist() == [0]


def test_observer_sees_itself_and_dead_are_invisible():
    rng = np.random.default_rng(3)
    cap = 100
    pos, alive = random_world(rng, cap, 60, 30.0)
    grid = make_grid(cap)
    everyone = np.arange(cap)
    vis = grid.update(pos, alive, everyone)
    for i, o in enumerate(everyone):
        slots, d2 = vis.of(i)
        if alive[o]:
            assert o in slots
            assert d2[np.searchsorted(slots, o)] == 0.0
        else:
            assert len(slots) == 0  # a dead observer sees nothing
        assert alive[slots].all()
        assert np.all(np.diff(slots) > 0)  # sorted ascending, no duplicates
    assert np.all(alive[vis.slots])


def test_empty_inputs():
    grid = make_grid(8)
    pos = np.zeros((8, 3))
    alive = np.zeros(8, dtype=bool)
    vis = grid.update(pos, alive, np.zeros(0, dtype=np.int64))
    assert vis.offsets.tolist() == [0] and len(vis.slots) == 0 and vis.total == 0
    vis = grid.update(pos, alive, [0, 1])
    assert vis.offsets.tolist() == [0, 0, 0]
    alive[3] = True
    vis = grid.update(pos, alive, np.zeros(0, dtype=np.int64))
    assert vis.offsets.tolist() == [0]


def test_results_are_read_only_views():
    grid = make_grid(8)
    pos = np.zeros((8, 3))
    alive = np.ones(8, dtype=bool)
    vis = grid.update(pos, alive, [0, 1])
    slots, d2 = vis.of(1)
    assert slots.base is not None and d2.base is not None  # views, not copies
    with pytest.raises(ValueError):
        vis.slots[0] = 5
    assert vis.counts().tolist() == [8, 8]


def test_does_not_mutate_inputs():
    rng = np.random.default_rng(4)
    pos, alive = random_world(rng, 50, 40, 20.0)
    observers = np.arange(50)
    copies = pos.copy(), alive.copy(), observers.copy()
    grid = make_grid(50)
    grid.update(pos, alive, observers)
    grid.update(pos, alive, observers)
    for a, b in zip((pos, alive, observers), copies):
        assert np.array_equal(a, b)
    observers[:] = observers[::-1]  # reusing the caller's buffer must not fool the memory
    ref = Reference(10.0, 2.0)
    ref.update(pos, alive, copies[2])
    check_against(grid.update(pos, alive, observers), ref.update(pos, alive, observers), observers)


def test_nonfinite_positions_are_never_seen():
    cap = 4
    pos = np.zeros((cap, 3))
    pos[1, 0] = np.nan
    pos[2, 2] = np.inf
    alive = np.ones(cap, dtype=bool)
    grid = make_grid(cap)
    vis = grid.update(pos, alive, np.arange(cap))
    assert vis.of(0)[0].tolist() == [0, 3]
    assert vis.of(1)[0].tolist() == []
    assert vis.of(2)[0].tolist() == []


def test_candidates_examined_grows_linearly_for_sparse_world():
    rng = np.random.default_rng(5)
    examined = {}
    for n in (1000, 2000, 4000):
        grid = InterestGrid(half_extent=1000.0, radius=5.0, leave_margin=1.0, capacity=n)
        pos = np.zeros((n, 3))
        pos[:, 0::2] = rng.uniform(-1000, 1000, (n, 2))
        alive = np.ones(n, dtype=bool)
        vis = grid.update(pos, alive, np.arange(n))
        examined[n] = grid.last_candidates_examined
        assert examined[n] < 5 * n  # n² would be millions
        assert vis.total >= n  # everyone at least sees itself
    # Doubling the entities at most ~quadruples the pairs in a world that gets twice as
    # dense (pairs ∝ n²/area), but here it stays tiny in absolute terms and far from n².
    assert examined[4000] < 0.002 * 4000**2
    # Default cell size examines fewer pairs than 3x3 cells of the leave radius.
    n = 2000
    pos = np.zeros((n, 3))
    pos[:, 0::2] = rng.uniform(-110, 110, (n, 2))
    alive = np.ones(n, dtype=bool)
    fine = InterestGrid(half_extent=110, radius=50, leave_margin=5, capacity=n)
    coarse = InterestGrid(half_extent=110, radius=50, leave_margin=5, capacity=n, cell_size=55)
    a = fine.update(pos, alive, np.arange(n))
    b = coarse.update(pos, alive, np.arange(n))
    assert np.array_equal(a.slots, b.slots) and np.array_equal(a.offsets, b.offsets)
    assert fine.last_candidates_examined < 0.7 * coarse.last_candidates_examined


def test_validation():
    with pytest.raises(ValueError):
        InterestGrid(half_extent=10, radius=1, leave_margin=0, capacity=0)
    with pytest.raises(ValueError):
        InterestGrid(half_extent=10, radius=-1, leave_margin=0, capacity=10)
    with pytest.raises(ValueError):
        InterestGrid(half_extent=10, radius=1, leave_margin=0, capacity=10, cell_size=0)
    grid = make_grid(10)
    with pytest.raises(IndexError):
        grid.update(np.zeros((10, 3)), np.ones(10, bool), [10])
    with pytest.raises(ValueError):
        grid.update(np.zeros((9, 3)), np.ones(9, bool), [0])


@pytest.mark.parametrize("cap", [1, 2, 65536])
def test_extreme_capacities_pack_keys_correctly(cap):
    rng = np.random.default_rng(cap)
    pos = np.zeros((cap, 3))
    alive = np.zeros(cap, dtype=bool)
    chosen = np.unique(np.r_[cap - 1, 0, rng.integers(0, cap, 30)])
    alive[chosen] = True
    pos[chosen, 0] = rng.uniform(-15, 15, len(chosen))
    grid = make_grid(cap)
    ref = Reference(10.0, 2.0)
    observers = chosen[::-1].copy()
    for _ in range(3):
        check_against(grid.update(pos, alive, observers), ref.update(pos, alive, observers),
                      observers)
        pos[chosen, 0] += rng.normal(0, 1.0, len(chosen))
    with pytest.raises(ValueError):
        InterestGrid(half_extent=10, radius=1, leave_margin=0, capacity=65537)


# --- crowd scale: all in view, full cells, and the boundaries between fast and filtered paths


def crowd_world(rng, cap, n, half_side, centre=(0.0, 0.0)):
    """n alive entities uniform in a square of half side ``half_side`` around ``centre``."""
    pos = np.zeros((cap, 3))
    pos[:, 0] = rng.uniform(-half_side, half_side, cap) + centre[0]
    pos[:, 2] = rng.uniform(-half_side, half_side, cap) + centre[1]
    alive = np.zeros(cap, dtype=bool)
    alive[rng.choice(cap, n, replace=False)] = True
    return pos, alive


@pytest.mark.parametrize("block_candidates", [1 << 16, 7])
def test_all_in_view_crowd_matches_brute_force(block_candidates):
    # 120 alive in a 20 x 20 m square, radius 30: everyone sees everyone (N² pairs). The
    # observers come shuffled, with dead slots among them; entities die and respawn.
    rng = np.random.default_rng(20)
    cap = 160
    pos, alive = crowd_world(rng, cap, 120, 10.0)
    generation = np.ones(cap, dtype=np.uint16)
    grid = make_grid(cap, radius=30.0, margin=3.0, block_candidates=block_candidates)
    ref = Reference(30.0, 3.0)
    for step in range(6):
        observers = rng.permutation(cap)[:140]
        vis = grid.update(pos, alive, observers, generation=generation)
        check_against(vis, ref.update(pos, alive, observers, generation), observers)
        live = alive[observers]
        assert grid.last_unfiltered_observers == live.sum()  # the all-in-view path ran
        assert vis.total == live.sum() * alive.sum()
        assert np.array_equal(vis.counts()[live], np.full(live.sum(), alive.sum()))
        pos[:, 0::2] = np.clip(pos[:, 0::2] + rng.normal(0, 0.5, (cap, 2)), -10, 10)
        flip = rng.random(cap) < 0.05
        alive ^= flip
        generation[flip & alive] += 1


@pytest.mark.parametrize("mask_factor", [0, 1 << 30])  # neighbourhood lists: sort / table
def test_mixed_full_and_filtered_cells_match_brute_force(mask_factor):
    # A compact crowd (diameter < radius) in a wide sparse world: the crowd's observers see
    # only candidates within the radius (no filter), the others are filtered, and people
    # walk between them.
    rng = np.random.default_rng(21)
    cap = 300
    pos, alive = random_world(rng, cap, 220, 45.0)
    crowd = np.flatnonzero(alive)[:120]
    pos[crowd, 0] = rng.uniform(-14, -10, len(crowd))
    pos[crowd, 2] = rng.uniform(10, 14, len(crowd))
    grid = make_grid(cap, radius=10.0, margin=2.0, cell_size=4.0, mask_factor=mask_factor,
                     block_candidates=1)  # blocks of one observer
    ref = Reference(10.0, 2.0)
    seen_mixed = False
    for step in range(8):
        observers = rng.permutation(cap)
        vis = grid.update(pos, alive, observers)
        check_against(vis, ref.update(pos, alive, observers), observers)
        seen_mixed |= 0 < grid.last_unfiltered_observers < alive.sum()
        pos[:, 0::2] += rng.normal(0, 0.6, (cap, 2))
    assert seen_mixed  # both paths were taken in the same update


def test_memory_from_an_unfiltered_block_serves_the_filtered_path():
    # Cell size 10, radius 10, margin 4, blocks of one observer. Observer 0 sees entity 1
    # at 9 m: all its candidates are within the radius (no filter). Entity 1 then steps to
    # 12 m, into the ring: observer 0 is filtered now and must remember entity 1.
    # Observers 2, 3 (and 5, alone) stay unfiltered.
    cap = 6
    grid = make_grid(cap, radius=10.0, margin=4.0, cell_size=10.0, half_extent=100.0,
                     block_candidates=1)
    ref = Reference(10.0, 4.0)
    pos = np.zeros((cap, 3))
    alive = np.ones(cap, dtype=bool)
    pos[0, 0], pos[1, 0] = -55.0, -46.0
    pos[2, 0], pos[3, 0], pos[4, 0] = 55.0, 56.0, 57.0
    pos[5, 2] = 90.0
    observers = np.array([3, 0, 5, 2])
    vis = grid.update(pos, alive, observers)
    check_against(vis, ref.update(pos, alive, observers), observers)
    assert vis.of(1)[0].tolist() == [0, 1]
    assert vis.of(0)[0].tolist() == [2, 3, 4] and vis.of(3)[0].tolist() == [2, 3, 4]
    assert grid.last_unfiltered_observers == 4
    for x1, expected in ((-43.0, [0, 1]), (-42.0, [0, 1]), (-40.0, [0]), (-43.0, [0])):
        pos[1, 0] = x1  # 12 m and 13 m: remembered; 15 m: gone; 12 m again: not remembered
        vis = grid.update(pos, alive, observers)
        check_against(vis, ref.update(pos, alive, observers), observers)
        assert vis.of(1)[0].tolist() == expected, x1
        assert grid.last_unfiltered_observers == 3


def test_hysteresis_across_all_in_view_and_filtered_updates():
    # Memory written by the all-in-view path must serve the filtered path next time, and
    # the other way round, with the observers in the same or in another order.
    cap = 5
    grid = make_grid(cap, radius=50.0, margin=5.0, half_extent=200.0)
    ref = Reference(50.0, 5.0)
    pos = np.zeros((cap, 3))
    alive = np.ones(cap, dtype=bool)
    pos[:, 0] = [0.0, 10.0, 20.0, 30.0, 40.0]
    orders = [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [0, 1, 2, 3, 4]]
    xs4 = [40.0, 52.0, 48.0, 53.0, 54.0, 56.0, 52.0, 45.0, 52.0]
    # Does observer 0 see entity 4? 52 remembered, 56 gone, then 52 not remembered, ...
    sees = [True, True, True, True, True, False, False, True, True]
    for step, (x4, expected) in enumerate(zip(xs4, sees)):
        pos[4, 0] = x4  # entity 4 walks in and out of observer 0's ring
        observers = np.array(orders[step % len(orders)])
        vis = grid.update(pos, alive, observers)
        check_against(vis, ref.update(pos, alive, observers), observers)
        assert (4 in vis.of(orders[step % len(orders)].index(0))[0]) == expected, step
        assert (grid.last_unfiltered_observers == cap) == (x4 <= 50.0), step


def test_generation_change_in_crowd_drops_memory():
    # A crowd all in view; slot 1 is reused (new generation) as it steps into the ring of
    # observer 0: the new entity was never seen, so it is not kept, and as an observer it
    # has no memory either. Likewise when observer 0's slot changes hands.
    cap = 4
    grid = make_grid(cap, radius=50.0, margin=5.0, half_extent=200.0)
    gen = np.ones(cap, dtype=np.uint16)
    pos = np.zeros((cap, 3))
    alive = np.ones(cap, dtype=bool)
    pos[:, 0] = [0.0, 30.0, 10.0, 20.0]
    observers = np.array([0, 1, 2, 3])
    vis = grid.update(pos, alive, observers, generation=gen)
    assert grid.last_unfiltered_observers == 4 and vis.total == 16
    pos[1, 0] = 52.0  # ring of observer 0 (and only of 0)
    g2 = gen.copy()
    g2[1] += 1
    vis = grid.update(pos, alive, observers, generation=g2)
    assert vis.of(0)[0].tolist() == [0, 2, 3]
    assert vis.of(1)[0].tolist() == [1, 2, 3]  # and the new owner of slot 1 forgot 0
    # Back in the crowd, then observer 0's slot changes hands while entity 1 is in its ring.
    pos[1, 0] = 30.0
    grid.update(pos, alive, observers, generation=g2)
    pos[1, 0] = 52.0
    g3 = g2.copy()
    g3[0] += 1
    assert grid.update(pos, alive, observers, generation=g3).of(0)[0].tolist() == [0, 2, 3]
    pos[1, 0] = 30.0
    grid.update(pos, alive, observers, generation=g3)
    pos[1, 0] = 52.0  # same generations: remembered
    assert grid.update(pos, alive, observers, generation=g3).of(0)[0].tolist() == [0, 1, 2, 3]


def test_dead_observers_and_empty_worlds_on_the_fast_path():
    cap = 6
    grid = make_grid(cap, radius=50.0, margin=5.0, half_extent=200.0)
    pos = np.zeros((cap, 3))
    pos[:, 0] = np.arange(cap)
    alive = np.zeros(cap, dtype=bool)
    vis = grid.update(pos, alive, [3, 1, 0])  # nobody alive
    assert vis.offsets.tolist() == [0, 0, 0, 0] and vis.slots.dtype == np.int64
    assert vis.dist2.dtype == np.float32 and grid.last_unfiltered_observers == 0
    alive[[1, 4]] = True
    vis = grid.update(pos, alive, [3, 1, 0, 4])  # dead observers between live ones
    assert vis.offsets.tolist() == [0, 0, 2, 2, 4]
    assert vis.slots.tolist() == [1, 4, 1, 4]
    np.testing.assert_array_equal(vis.dist2, np.array([0, 9, 9, 0], dtype=np.float32))
    assert grid.last_unfiltered_observers == 2
    vis = grid.update(pos, alive, [])  # no observers
    assert vis.offsets.tolist() == [0] and vis.total == 0
    alive[:] = False
    alive[2] = True
    vis = grid.update(pos, alive, [2])  # a lone observer sees itself
    assert vis.slots.tolist() == [2] and vis.dist2.tolist() == [0.0]


def test_non_finite_position_in_a_crowd_turns_the_fast_path_off():
    cap = 5
    grid = make_grid(cap, radius=50.0, margin=5.0, half_extent=200.0)
    pos = np.zeros((cap, 3))
    pos[:, 0] = np.arange(cap)
    alive = np.ones(cap, dtype=bool)
    for bad in (np.nan, np.inf, -np.inf):
        pos[2, 2] = bad
        vis = grid.update(pos, alive, np.arange(cap))
        assert vis.of(0)[0].tolist() == [0, 1, 3, 4]
        assert vis.of(2)[0].tolist() == []
        assert grid.last_unfiltered_observers < cap
    pos[2, 2] = 0.0
    assert grid.update(pos, alive, np.arange(cap)).total == cap * cap


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 60),
    radius=st.floats(1.0, 20.0),
    margin=st.floats(0.0, 5.0),
    cell_frac=st.sampled_from([None, 1.0, 0.5, 0.25]),
    spread=st.floats(0.05, 1.5),
    step_size=st.floats(0.0, 3.0),
)
def test_hypothesis_crowds_around_the_radius(seed, n, radius, margin, cell_frac, spread,
                                             step_size):
    # Crowds whose size is about the radius (spread x radius), so updates flip between
    # all in view, full cells and filtered cells, with hysteresis and churn.
    rng = np.random.default_rng(seed)
    cap = 64
    half = spread * radius / 2
    pos, alive = crowd_world(rng, cap, n, half, centre=tuple(rng.uniform(-20, 20, 2)))
    pos[::4, 0::2] = np.round(pos[::4, 0::2])  # exact-boundary distances
    generation = np.ones(cap, dtype=np.uint16)
    cell = None if cell_frac is None else (radius + margin) * cell_frac
    grid = make_grid(cap, radius=radius, margin=margin, cell_size=cell, half_extent=40.0,
                     block_candidates=int(rng.integers(1, 400)),
                     mask_factor=int(rng.choice([0, 8, 1 << 30])))
    ref = Reference(radius, margin)
    for _ in range(5):
        observers = rng.permutation(cap)[: rng.integers(0, cap + 1)]
        vis = grid.update(pos, alive, observers, generation=generation)
        check_against(vis, ref.update(pos, alive, observers, generation), observers)
        pos[:, 0::2] += rng.normal(0, step_size, (cap, 2))
        flip = rng.random(cap) < 0.05
        alive ^= flip
        generation[flip & alive] += 1


def test_float32_positions_give_float64_distances():
    # Distances are computed in float64 whatever the dtype of ``pos``, on both paths. In
    # float32, 10.1f - 0.1f rounds to exactly 10.0 (within radius 10); in float64 the same
    # two float32 values are 10.00000038 apart (outside).
    cap = 3
    pos = np.zeros((cap, 3), dtype=np.float32)
    pos[:, 0] = [0.1, 10.1, 5.0]
    alive = np.ones(cap, dtype=bool)
    grid = make_grid(cap, radius=10.0, margin=2.0)
    ref = Reference(10.0, 2.0)
    vis = grid.update(pos, alive, [0, 1, 2])
    check_against(vis, ref.update(pos.astype(np.float64), alive, [0, 1, 2]), [0, 1, 2])
    assert vis.of(0)[0].tolist() == [0, 2]
    rng = np.random.default_rng(22)
    cap = 80
    for half in (5.0, 30.0):  # all in view / filtered
        pos, alive = crowd_world(rng, cap, 70, half)
        pos32 = pos.astype(np.float32)
        grid = make_grid(cap, radius=10.0, margin=2.0)
        ref = Reference(10.0, 2.0)
        observers = rng.permutation(cap)
        vis = grid.update(pos32, alive, observers)
        check_against(vis, ref.update(pos32.astype(np.float64), alive, observers), observers)
