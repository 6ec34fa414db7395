"""Group formation for proximity calls (worldserver/calls/groups.py, docs/calls.md).

The fast path is checked against :class:`Reference`, a plain brute-force model of the contract
(every pair's distance, hysteresis from a set of linked pairs, components by depth-first
search, the stable-id rule with dictionaries), on seeded random walks where groups form,
merge, split and end, and on a recorded walk with its exact changes (tests/vectors). Readable
cases pin each rule of the contract on its own, and the world files' call zones are checked
(the ``call`` field, its error, the shipped worlds' zones).
"""

from __future__ import annotations

import json
import math
import pathlib
from collections import defaultdict

import numpy as np
import pytest

from worldserver.calls.groups import Change, GroupFormer, _candidate_pairs, _components
from worldserver.worldfile import WorldFileError, Zone, builtin_world, parse_world

DATA = pathlib.Path(__file__).parent / "vectors" / "call_groups_walk.json"
STAGE = Zone("stage", "rect", (10.0, 10.0), (4.0, 2.0), 0.0, True)
RING = Zone("ring", "circle", (-10.0, 0.0), (0.0, 0.0), 3.0, True)
PLAIN = Zone("hall", "rect", (0.0, 0.0), (100.0, 100.0), 0.0, False)  # not a call zone


def xy(*points) -> np.ndarray:
    return np.array(points, dtype=np.float32).reshape(-1, 2)


def ch(group, joined=(), left=(), members=()) -> Change:
    return Change(group, tuple(joined), tuple(left), tuple(members))


# -- the reference ---------------------------------------------------------------------------
class Reference:
    """The contract, written plainly: O(n^2) distances, a set of links, DFS, dictionaries."""

    def __init__(self, radius, leave_radius, zones=()):
        self.r2, self.l2 = radius * radius, leave_radius * leave_radius
        self.zones = [z for z in zones if z.call]
        self.links: set[tuple[int, int]] = set()
        self.groups: dict[str, set[int]] = {}
        self.next = 1
        self.removed: set[int] = set()
        self.pending: list[tuple[str, int]] = []

    def remove(self, eid):
        self.removed.add(eid)
        for name, members in self.groups.items():
            if eid in members:
                members.discard(eid)
                self.pending.append((name, eid))
        self.links = {link for link in self.links if eid not in link}

    def zone_of(self, x, z):
        for zone in self.zones:
            cx, cz = zone.center
            if zone.shape == "rect":
                inside = abs(x - cx) <= zone.size[0] / 2 and abs(z - cz) <= zone.size[1] / 2
            else:
                inside = (x - cx) ** 2 + (z - cz) ** 2 <= zone.radius ** 2
            if inside:
                return f"zone:{zone.id}"
        return None

    def update(self, ids, positions):
        pts = {}
        for eid, (x, z) in zip(np.asarray(ids).tolist(), np.asarray(positions, dtype=np.float64).tolist()):
            if eid not in self.removed and math.isfinite(x) and math.isfinite(z):
                pts[eid] = (x, z)
        self.removed = set()
        new: dict[str, set[int]] = defaultdict(set)
        free = []
        for eid in sorted(pts):
            zone = self.zone_of(*pts[eid])
            if zone is None:
                free.append(eid)
            else:
                new[zone].add(eid)
        # Every pair of free avatars (numpy only for the n x n distance table).
        fx = np.array([pts[e][0] for e in free])
        fz = np.array([pts[e][1] for e in free])
        d2 = (fx[:, None] - fx[None, :]) ** 2 + (fz[:, None] - fz[None, :]) ** 2
        links = set()
        adjacent = defaultdict(set)
        near_i, near_j = np.nonzero(np.triu(d2 <= self.l2, 1))  # every pair looked at; the near ones kept
        for i, j in zip(near_i.tolist(), near_j.tolist()):
            a, b = free[i], free[j]
            if d2[i, j] <= self.r2 or ((a, b) in self.links and d2[i, j] <= self.l2):
                    links.add((a, b))
                    adjacent[a].add(b)
                    adjacent[b].add(a)
        self.links = links
        comps, seen = [], set()
        for start in sorted(adjacent):
            if start in seen:
                continue
            comp, stack = set(), [start]
            while stack:
                node = stack.pop()
                if node not in comp:
                    comp.add(node)
                    stack.extend(adjacent[node] - comp)
            seen |= comp
            comps.append(comp)
        old = {name: members for name, members in self.groups.items() if name.startswith("p")}
        best = {}
        for ci, comp in enumerate(comps):
            shares = {name: len(comp & members) for name, members in old.items() if comp & members}
            if shares:
                name = min(shares, key=lambda nm: (-shares[nm], int(nm[1:])))
                best[ci] = (name, shares[name])
        claimed: dict[str, int] = {}
        for ci, (name, share) in best.items():
            other = claimed.get(name)
            if other is None or (share, -min(comps[ci])) > (best[other][1], -min(comps[other])):
                claimed[name] = ci
        names = {ci: name for name, ci in claimed.items()}
        for ci in sorted(range(len(comps)), key=lambda c: min(comps[c])):
            if ci not in names:
                names[ci] = f"p{self.next}"
                self.next += 1
        for ci, comp in enumerate(comps):
            new[names[ci]] = set(comp)
        left_now = defaultdict(set)
        for name, eid in self.pending:
            left_now[name].add(eid)
        changes = []
        for name in set(self.groups) | set(new) | set(left_now):
            before, after = self.groups.get(name, set()), new.get(name, set())
            joined, left = after - before, (before - after) | left_now[name]
            if joined or left:
                changes.append(Change(name, tuple(sorted(joined)), tuple(sorted(left)), tuple(sorted(after))))
        self.groups = {name: members for name, members in new.items() if members}
        self.pending = []
        return sorted(changes, key=lambda c: c.group)

    def snapshot(self):
        return {name: tuple(sorted(m)) for name, m in sorted(self.groups.items()) if m}


# -- random walks against the reference --------------------------------------------------------
def walk_against_reference(seed, n, half, steps, radius=2.5, leave=3.5, zones=(STAGE, RING), step_m=0.6):
    rng = np.random.default_rng(seed)
    fast, ref = GroupFormer(radius, leave, zones), Reference(radius, leave, zones)
    ids = rng.choice(10**9, size=n, replace=False).astype(np.int64)
    pos = rng.uniform(-half, half, (n, 2))
    heading = rng.uniform(0, 2 * math.pi, n)
    seen = defaultdict(int)
    for step in range(steps):
        heading += rng.normal(0, 0.6, n)
        pos[:, 0] += step_m * rng.random(n) * np.cos(heading)
        pos[:, 1] += step_m * rng.random(n) * np.sin(heading)
        np.clip(pos, -half, half, out=pos)
        present = rng.random(n) > 0.03  # a few are away (not calling) at each update
        order = rng.permutation(np.flatnonzero(present))
        if step % 7 == 3:  # some avatars are dropped at once (muted, kicked, left)
            for eid in rng.choice(ids, size=3, replace=False).tolist():
                fast.remove(eid)
                ref.remove(eid)
                assert fast.group_of(eid) is None
            assert fast.groups() == ref.snapshot()
        got = fast.update(ids[order], pos[order].astype(np.float32))
        want = ref.update(ids[order], pos[order].astype(np.float32))
        assert got == want, f"seed {seed}, step {step}"
        assert fast.groups() == ref.snapshot()
        for c in got:
            seen["joined" if c.joined else "no-join"] += 1
            seen["left" if c.left else "no-left"] += 1
            seen["ended" if not c.members else "alive"] += 1
            seen["zone" if c.group.startswith("zone:") else "proximity"] += 1
            if c.joined and c.left and c.members:
                seen["reshaped"] += 1
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_walks_match_the_reference(seed):
    seen = walk_against_reference(seed, n=260, half=20.0, steps=120)
    # The walk exercised every kind of change (so the comparison above meant something).
    for kind in ("joined", "left", "ended", "zone", "proximity", "reshaped"):
        assert seen[kind] > 0, kind


def test_a_dense_crowd_matches_the_reference():
    """Everyone within a few metres of many others: big components that merge and split."""
    seen = walk_against_reference(7, n=400, half=14.0, steps=40, step_m=1.0)
    assert seen["reshaped"] > 0


def test_a_few_avatars_match_the_reference():
    """Few avatars: the all-pairs path instead of the grid."""
    walk_against_reference(11, n=30, half=6.0, steps=150, zones=(Zone("c", "circle", (0.0, 0.0), (0.0, 0.0), 1.5, True),))


def test_grid_finds_every_pair_on_cell_edges():
    """Points on a lattice of exactly the cell size (distances exactly ``leave_radius``,
    across cell edges, around the origin where floor() changes sign)."""
    cell = 3.5
    g = np.arange(-6, 7) * cell
    x, z = [a.ravel() for a in np.meshgrid(g, g + 0.25 * cell)]
    order, a, b = _candidate_pairs(x, z, 1.0 / cell)
    assert (a < b).all() and (np.diff(a * len(x) + b) > 0).all()  # sorted by (a, b): hysteresis relies on it
    a, b = order[a], order[b]
    found = {(min(i, j), max(i, j)) for i, j in zip(a.tolist(), b.tolist())}
    assert len(found) == len(a)  # each pair once
    d2 = (x[:, None] - x[None, :]) ** 2 + (z[:, None] - z[None, :]) ** 2
    want = {(i, j) for i, j in zip(*np.nonzero(d2 <= cell * cell)) if i < j}
    assert want <= found
    former = GroupFormer(cell, cell)
    (change,) = former.update(np.arange(len(x)), np.c_[x, z].astype(np.float32))
    assert change.members == tuple(range(len(x)))  # the whole lattice is one group


def test_components_of_long_paths_and_random_graphs():
    """Labels are each component's smallest node, also for long paths numbered at random
    (many rounds of hooking) and for nodes without edges."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 60, 700):
        for trial in range(4):
            perm = rng.permutation(n)
            a, b = perm[:-1], perm[1:]  # one long path ...
            cut = rng.random(len(a)) < (0.02 if trial % 2 else 0.3)  # ... cut into pieces
            extra = rng.integers(0, n, (n // 10, 2))  # and a few random edges
            a = np.r_[a[~cut], extra[:, 0]].astype(np.int64)
            b = np.r_[b[~cut], extra[:, 1]].astype(np.int64)
            adjacent = defaultdict(set)
            for u, v in zip(a.tolist(), b.tolist()):
                adjacent[u].add(v)
                adjacent[v].add(u)
            want = list(range(n))
            for start in range(n):  # DFS from each node in order: its component's smallest
                if want[start] != start:
                    continue
                stack, seen = [start], {start}
                while stack:
                    for v in adjacent[stack.pop()] - seen:
                        seen.add(v)
                        want[v] = start
                        stack.append(v)
            assert _components(n, a, b).tolist() == want


def test_far_and_huge_coordinates_do_not_break_the_grid():
    rng = np.random.default_rng(5)
    pts = np.r_[rng.uniform(-1, 1, (60, 2)), [[1e30, 1e30], [1e30 + 1e15, 1e30], [-3e38, 3e38]]]
    fast, ref = GroupFormer(2.5, 3.5), Reference(2.5, 3.5)
    ids = np.arange(len(pts))
    assert fast.update(ids, pts.astype(np.float32)) == ref.update(ids, pts.astype(np.float32))


# -- a recorded walk -------------------------------------------------------------------------
def test_recorded_walk_gives_the_recorded_changes():
    """tests/vectors/call_groups_walk.json: ten avatars in a small room with two call zones, the
    changes at each update as recorded (and read through once by hand)."""
    data = json.loads(DATA.read_text())
    zones = [Zone(z["id"], z["shape"], tuple(z["center"]), tuple(z.get("size", (0, 0))), z.get("radius", 0.0), True)
             for z in data["zones"]]
    former = GroupFormer(data["radius"], data["leave_radius"], zones)
    kinds = set()
    for k, frame in enumerate(data["frames"]):
        for eid in frame.get("remove", []):
            former.remove(eid)
        got = former.update(np.array(frame["ids"], dtype=np.int64), np.array(frame["xy"], dtype=np.float32))
        want = [Change(c["group"], tuple(c["joined"]), tuple(c["left"]), tuple(c["members"]))
                for c in frame["changes"]]
        assert got == want, f"frame {k}"
        kinds |= {c.group[0] for c in got}
    assert kinds == {"p", "z"}


# -- the rules one by one --------------------------------------------------------------------
def test_two_avatars_approach_and_form_a_group():
    f = GroupFormer(2.5, 3.5)
    assert f.update([1, 2], xy((0, 0), (6, 0))) == []
    assert f.update([1, 2], xy((0, 0), (4, 0))) == []  # within leave_radius but never linked
    assert f.update([1, 2], xy((0, 0), (2.5, 0))) == [ch("p1", (1, 2), (), (1, 2))]  # radius included
    assert f.update([1, 2], xy((0, 0), (2.4, 0))) == []
    assert f.groups() == {"p1": (1, 2)}
    assert f.group_of(1) == f.group_of(2) == "p1" and f.group_of(3) is None


def test_stepping_back_and_forth_at_the_edge_does_not_flap():
    f = GroupFormer(2.5, 3.5)
    assert f.update([1, 2], xy((0, 0), (2, 0))) == [ch("p1", (1, 2), (), (1, 2))]
    for d in (3.0, 2.4, 3.4, 2.6, 3.5, 3.1):  # between radius and leave_radius, or closer
        assert f.update([1, 2], xy((0, 0), (0, d))) == []
    assert f.update([1, 2], xy((0, 0), (3.6, 0))) == [ch("p1", (), (1, 2), ())]  # beyond leave_radius
    assert f.update([1, 2], xy((0, 0), (3.0, 0))) == []  # not linked now: 3 m is not close enough
    assert f.update([1, 2], xy((0, 0), (2.0, 0))) == [ch("p2", (1, 2), (), (1, 2))]  # a new group


def test_a_chain_is_one_group_and_the_larger_part_keeps_its_id_when_it_splits():
    f = GroupFormer(2.5, 3.5)
    line = [(2 * i, 0) for i in range(6)]  # 10-11-12-13-14-15, 2 m apart
    ids = [10, 11, 12, 13, 14, 15]
    assert f.update(ids, xy(*line)) == [ch("p1", ids, (), ids)]
    line[2] = (4, 20)  # 12 walks away: {10, 11} and {13, 14, 15}
    assert f.update(ids, xy(*line)) == [ch("p1", (), (10, 11, 12), (13, 14, 15)), ch("p2", (10, 11), (), (10, 11))]
    line[2] = (4, 0)  # back: one chain again; p1 shares 3, p2 shares 2
    assert f.update(ids, xy(*line)) == [ch("p1", (10, 11, 12), (), ids), ch("p2", (), (10, 11), ())]


def test_a_split_of_equal_halves_keeps_the_id_on_the_half_with_the_smallest_member():
    f = GroupFormer(2.5, 3.5)
    ids = [5, 6, 7, 8, 9]
    f.update(ids, xy((0, 0), (2, 0), (4, 0), (6, 0), (8, 0)))
    # 7 (the middle) leaves: {5, 6} and {8, 9} share 2 each with p1; 5 < 8.
    assert f.update([9, 8, 6, 5], xy((8, 0), (6, 0), (2, 0), (0, 0))) == [
        ch("p1", (), (7, 8, 9), (5, 6)), ch("p2", (8, 9), (), (8, 9))]


def test_two_groups_merge_and_the_bigger_keeps_its_id():
    f = GroupFormer(2.5, 3.5)
    assert f.update([1, 2, 3, 4, 5], xy((0, 0), (1, 0), (20, 0), (21, 0), (22, 0))) == [
        ch("p1", (1, 2), (), (1, 2)), ch("p2", (3, 4, 5), (), (3, 4, 5))]
    assert f.update([1, 2, 3, 4, 5], xy((17, 0), (18, 0), (20, 0), (21, 0), (22, 0))) == [
        ch("p1", (), (1, 2), ()), ch("p2", (1, 2), (), (1, 2, 3, 4, 5))]


def test_equal_groups_merge_into_the_older_id():
    f = GroupFormer(2.5, 3.5)
    f.update([3, 4], xy((20, 0), (21, 0)))  # p1
    f.update([1, 2, 3, 4], xy((0, 0), (1, 0), (20, 0), (21, 0)))  # p2 = {1, 2}
    assert f.groups() == {"p1": (3, 4), "p2": (1, 2)}
    assert f.update([1, 2, 3, 4], xy((18, 0), (19, 0), (20, 0), (21, 0))) == [
        ch("p1", (1, 2), (), (1, 2, 3, 4)), ch("p2", (), (1, 2), ())]


def test_ids_count_up_and_changes_sort_by_group_id_as_text():
    f = GroupFormer(2.5, 3.5)
    for k in range(8):  # eight short-lived groups: p1 .. p8
        assert f.update([1, 2], xy((0, 0), (1, 0))) == [ch(f"p{k + 1}", (1, 2), (), (1, 2))]
        f.update([1, 2], xy((0, 0), (9, 0)))
    assert f.update([1, 2, 3, 4], xy((0, 0), (1, 0), (50, 0), (51, 0))) == [
        ch("p10", (3, 4), (), (3, 4)), ch("p9", (1, 2), (), (1, 2))]


def test_zones_hold_their_avatars_alone_or_not():
    f = GroupFormer(2.5, 3.5, [STAGE, RING, PLAIN])
    assert [z.id for z in f.zones] == ["stage", "ring"]  # only call zones count
    # 1 alone on the stage (its corner: edges included); 2 and 3 in the ring.
    assert f.update([1, 2, 3], xy((12, 11), (-10, 2.9), (-11, -1))) == [
        ch("zone:ring", (2, 3), (), (2, 3)), ch("zone:stage", (1,), (), (1,))]
    # 4 stands just outside the stage, a metre from 1: not linked to it, in no group.
    assert f.update([1, 2, 3, 4], xy((12, 11), (-10, 2.9), (-11, -1), (13, 11))) == []
    assert f.group_of(4) is None
    # 5 next to 4 (outside): a proximity group of two; 1 still alone in its zone.
    assert f.update([1, 2, 3, 4, 5], xy((12, 11), (-10, 2.9), (-11, -1), (13, 11), (14, 11))) == [
        ch("p1", (4, 5), (), (4, 5))]
    # 4 steps onto the stage: p1 ends (5 is alone), the stage has two.
    assert f.update([1, 2, 3, 4, 5], xy((12, 11), (-10, 2.9), (-11, -1), (11.5, 10.5), (14, 11))) == [
        ch("p1", (), (4, 5), ()), ch("zone:stage", (4,), (), (1, 4))]
    # Everybody leaves the zones: the zone groups end.
    assert f.update([1, 2, 3, 4, 5], xy((30, 30), (-10, 3.1), (-30, -30), (40, 40), (50, 50))) == [
        ch("zone:ring", (), (2, 3), ()), ch("zone:stage", (), (1, 4), ())]


def test_overlapping_call_zones_take_the_first():
    a = Zone("a", "circle", (0.0, 0.0), (0.0, 0.0), 2.0, True)
    b = Zone("b", "rect", (1.0, 0.0), (4.0, 4.0), 0.0, True)
    f = GroupFormer(2.5, 3.5, [a, b])
    assert f.update([1, 2], xy((1, 0), (2.9, 0))) == [ch("zone:a", (1,), (), (1,)), ch("zone:b", (2,), (), (2,))]


def test_remove_reports_left_at_the_next_update():
    f = GroupFormer(2.5, 3.5, [STAGE])
    ids, pts = [1, 2, 3, 4], xy((0, 0), (1, 0), (2, 0), (10, 10))
    f.update(ids, pts)
    f.remove(2)
    f.remove(4)
    f.remove(99)  # in no group: nothing to report
    assert f.group_of(2) is None and f.groups() == {"p1": (1, 3)}
    # Given again at once, 2 and 4 are still out for this update.
    assert f.update(ids, pts) == [ch("p1", (), (2,), (1, 3)), ch("zone:stage", (), (4,), ())]
    assert f.update(ids, pts) == [ch("p1", (2,), (), (1, 2, 3)), ch("zone:stage", (4,), (), (4,))]
    # Removing the member that held a pair together ends the group.
    f.update([1, 2], xy((0, 0), (1, 0)))
    f.remove(1)
    assert f.update([2], xy((1, 0))) == [ch("p1", (), (1, 2), ())]


def test_missing_avatars_and_empty_input():
    f = GroupFormer(2.5, 3.5)
    assert f.update([], np.zeros((0, 2), np.float32)) == []
    assert f.update(np.zeros(0, np.int64), []) == []
    f.update([1, 2, 3], xy((0, 0), (1, 0), (2, 0)))
    assert f.update([1, 3], xy((0, 0), (2, 0))) == [ch("p1", (), (2,), (1, 3))]
    assert f.update([], np.zeros((0, 2), np.float32)) == [ch("p1", (), (1, 3), ())]
    assert f.groups() == {}


def test_ids_in_any_order_and_of_any_size():
    big = [2**62, 7, 2**40, -5]
    pts = [(0, 0), (50, 0), (1, 0), (51, 0)]
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        f = GroupFormer(2.5, 3.5)
        out = f.update(np.array([big[i] for i in order]), xy(*[pts[i] for i in order]))
        # New ids go in the order of the groups' smallest member ids.
        assert out == [ch("p1", (-5, 7), (), (-5, 7)), ch("p2", (2**40, 2**62), (), (2**40, 2**62))]
        assert all(type(e) is int for c in out for e in c.members)


def test_non_finite_positions_are_in_no_group():
    f = GroupFormer(2.5, 3.5)
    out = f.update([1, 2, 3, 4], xy((0, 0), (math.nan, 0), (1, math.inf), (1, 0)))
    assert out == [ch("p1", (1, 4), (), (1, 4))]


@pytest.mark.parametrize("ids, pts, message", [
    ([1, 1], [(0, 0), (1, 0)], "entity id 1 is given twice"),
    ([1, 2], [(0, 0)], "xy must have shape (2, 2)"),
    ([[1, 2]], [(0, 0), (1, 0)], "ids must have shape (n,)"),
    ([1.5, 2.0], [(0, 0), (1, 0)], "ids must be integers"),
    ([1, 2], [("a", "b"), ("c", "d")], "xy must be numbers"),
])
def test_bad_input_is_a_clear_error(ids, pts, message):
    f = GroupFormer(2.5, 3.5)
    with pytest.raises(ValueError) as err:
        f.update(np.array(ids), np.array(pts))
    assert message in str(err.value)


@pytest.mark.parametrize("radius, leave, message", [
    (0, 3.5, "radius must be"), (math.nan, 3.5, "radius must be"), (3, 2, "leave_radius must be"),
    (2, math.inf, "leave_radius must be"),
])
def test_bad_radii_are_a_clear_error(radius, leave, message):
    with pytest.raises(ValueError, match=message):
        GroupFormer(radius, leave)


# -- call zones in world files ---------------------------------------------------------------
def world_doc(**zone):
    return {"id": "w", "floor": {"min": [-10, -10], "max": [10, 10]}, "spawns": [{"center": [0, 0]}],
            "zones": [dict({"id": "z", "shape": "circle", "center": [1, 1], "radius": 2}, **zone)]}


def test_world_file_call_zones():
    assert parse_world(world_doc()).zones[0].call is False
    spec = parse_world(world_doc(call=True))
    assert spec.zones[0].call is True
    assert spec.to_json()["zones"][0]["call"] is True
    with pytest.raises(WorldFileError, match=r"zones\[0\]\.call: must be true or false, got 1$"):
        parse_world(world_doc(call=1))


@pytest.mark.parametrize("world, zone_id", [("gallery", "corner"), ("halls", "stage")])
def test_shipped_worlds_have_a_call_zone_on_clear_floor_away_from_the_spawns(world, zone_id):
    spec = builtin_world(world)
    (zone,) = [z for z in spec.zones if z.call]
    assert zone.id == zone_id
    f = GroupFormer(2.5, 3.5, spec.zones)
    # A grid of points over the zone: those inside are clear of walls, and none is in a spawn area.
    xs = np.linspace(zone.center[0] - 6, zone.center[0] + 6, 49)
    zs = np.linspace(zone.center[1] - 6, zone.center[1] + 6, 49)
    gx, gz = [a.ravel() for a in np.meshgrid(xs, zs)]
    f.update(np.arange(len(gx)), np.c_[gx, gz].astype(np.float32))
    inside = np.isin(np.arange(len(gx)), f.groups()[f"zone:{zone_id}"])
    assert inside.sum() > 20
    assert spec.wall_set().clear(gx[inside], gz[inside]).all()
    for sp in spec.spawns:
        near = (np.abs(gx[inside] - sp.center[0]) <= sp.size[0] / 2 + 1) & (np.abs(gz[inside] - sp.center[1]) <= sp.size[1] / 2 + 1)
        assert not near.any()
