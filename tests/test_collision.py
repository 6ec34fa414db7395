"""Walls for circles (worldserver.collision) and world files (worldserver.worldfile)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from worldserver.collision import WallSet
from worldserver.worldfile import WorldFileError, builtin_world, load_world, parse_world

GALLERY = builtin_world("gallery")
HALLS = builtin_world("halls")
STEP = 5.0 / 20  # full speed (5 m/s) for one tick at 20 Hz


def brute_penetration(segs, half, radius, x, z):
    """The plain reference: every circle against every capsule, no grid."""
    out = np.zeros(len(x))
    for (ax, az, bx, bz), h in zip(segs, half):
        dx, dz = bx - ax, bz - az
        l2 = dx * dx + dz * dz
        t = np.clip(((x - ax) * dx + (z - az) * dz) / l2, 0, 1) if l2 else np.zeros(len(x))
        d = np.hypot(x - (ax + t * dx), z - (az + t * dz))
        out = np.maximum(out, h + radius - d)
    return out


@pytest.mark.parametrize("spec", [GALLERY, HALLS], ids=["gallery", "halls"])
def test_grid_penetration_matches_brute_force(spec):
    walls = spec.wall_set()
    segs, half = spec.segments()
    rng = np.random.default_rng(5)
    x = rng.uniform(spec.floor_min[0], spec.floor_max[0], 20000)
    z = rng.uniform(spec.floor_min[1], spec.floor_max[1], 20000)
    expected = np.maximum(brute_penetration(segs, half, spec.entity_radius, x, z), 0.0)
    assert np.allclose(walls.penetration(x, z), expected, atol=1e-9)
    assert (expected > 0).any() and (expected == 0).any()


def test_circle_stops_at_a_wall_and_slides_along_it():
    walls = WallSet([(-10.0, 0.0, 10.0, 0.0)], 0.1, 0.3, (-20, -20), (20, 20))
    x, z = np.array([0.0]), np.array([-2.0])
    for _ in range(40):  # 45 degrees into the wall at full speed
        x, z = walls.move(x, z, [STEP / math.sqrt(2)], [STEP / math.sqrt(2)])
        assert walls.penetration(x, z)[0] <= 1e-6
    assert z[0] == pytest.approx(-0.4, abs=1e-5)  # touching: wall half 0.1 + radius 0.3
    assert x[0] == pytest.approx(40 * STEP / math.sqrt(2), abs=1e-6)  # the tangential part is kept
    x, z = walls.move(x, z, [0.0], [STEP])  # straight into it: no motion
    assert z[0] == pytest.approx(-0.4, abs=1e-5)


def test_no_tunnelling_at_any_speed():
    walls = WallSet([(-10.0, 0.0, 10.0, 0.0)], 0.0, 0.3, (-20, -20), (20, 20))
    for dz in (0.5, 1.0, 5.0, 19.0):
        x, z = walls.move([1.0], [-0.31], [0.0], [dz])
        assert z[0] < 0 and walls.penetration(x, z)[0] <= 1e-6


def test_a_corner_settles_and_a_dead_end_pocket_keeps_the_circle_out():
    # a concave corner: pushed by two walls, ends touching both
    walls = WallSet([(0.0, 0.0, 10.0, 0.0), (0.0, 0.0, 0.0, 10.0)], 0.1, 0.3, (-20, -20), (20, 20))
    x, z = np.array([3.0]), np.array([3.0])
    for _ in range(40):
        x, z = walls.move(x, z, [-STEP], [-STEP])
    assert x[0] == pytest.approx(0.4, abs=1e-5) and z[0] == pytest.approx(0.4, abs=1e-5)
    # a slot narrower than the circle: it never gets in
    slot = WallSet([(0.0, 0.0, 0.0, 5.0), (0.5, 0.0, 0.5, 5.0)], 0.0, 0.3, (-20, -20), (20, 20))
    x, z = np.array([0.25]), np.array([-1.0])
    for _ in range(40):
        x, z = slot.move(x, z, [0.0], [STEP])
        assert slot.penetration(x, z)[0] <= 1e-6
    assert z[0] < 0.0


def _wall_targets(spec, n_angles: int):
    """A point just inside reach in front of the middle of every wall segment, on both sides."""
    segs, half = spec.segments()
    out = []
    for (ax, az, bx, bz), h in zip(segs, half):
        length = math.hypot(bx - ax, bz - az)
        nx, nz = -(bz - az) / length, (bx - ax) / length
        mx, mz = (ax + bx) / 2, (az + bz) / 2
        for side in (1, -1):
            for k in range(n_angles):  # approach angles from -80 to 80 degrees off the normal
                a = math.radians(-80 + 160 * k / max(1, n_angles - 1))
                dirx = -side * (nx * math.cos(a) - nz * math.sin(a))
                dirz = -side * (nz * math.cos(a) + nx * math.sin(a))
                out.append((mx + side * nx * (h + spec.entity_radius + 1.0),
                            mz + side * nz * (h + spec.entity_radius + 1.0), dirx, dirz))
    return out


@pytest.mark.parametrize("spec", [GALLERY, HALLS], ids=["gallery", "halls"])
def test_walking_into_every_wall_at_every_angle_stops_and_slides(spec):
    """Both shipped worlds: a circle started 1 m in front of the middle of each wall segment
    (each side), walking at full speed at angles from -80 to 80 degrees off the wall's normal,
    never ends a tick inside a wall, and keeps moving along the wall when it is not head-on."""
    walls = spec.wall_set()
    targets = np.array(_wall_targets(spec, 9))
    x, z, dirx, dirz = targets.T.copy()
    start_ok = walls.clear(x, z)
    x, z, dirx, dirz = x[start_ok], z[start_ok], dirx[start_ok], dirz[start_ok]
    assert len(x) > 100
    moved = np.zeros(len(x))
    for _ in range(16):  # 4 m of walking: well into the wall and along it
        nx, nz = walls.move(x, z, dirx * STEP, dirz * STEP)
        moved += np.hypot(nx - x, nz - z)
        x, z = nx, nz
        assert walls.penetration(x, z).max() <= 1e-6
    # every circle made progress (sliding), not only those walking away from corners
    assert np.median(moved) > 1.5 and (moved > 0.2).mean() > 0.95


def test_doorways_pass():
    """A circle walking straight through the middle of each doorway of the halls reaches the
    other side."""
    walls = HALLS.wall_set()
    doors = [(-15.0, 3.0, 0, 1), (15.0, 3.0, 0, 1), (-15.0, -3.0, 0, -1), (15.0, -3.0, 0, -1),
             (0.0, 13.0, 1, 0), (0.0, -13.0, -1, 0)]
    for cx, cz, dx, dz in doors:
        x, z = np.array([cx - 2 * dx]), np.array([cz - 2 * dz])
        for _ in range(16):
            x, z = walls.move(x, z, [dx * STEP], [dz * STEP])
        assert (x[0] - cx) * dx + (z[0] - cz) * dz == pytest.approx(2.0, abs=1e-6), (cx, cz)


@pytest.mark.parametrize("spec", [GALLERY, HALLS], ids=["gallery", "halls"])
def test_a_thousand_random_walkers_never_end_a_tick_inside_a_wall(spec):
    walls = spec.wall_set()
    rng = np.random.default_rng(7)
    x = rng.uniform(spec.floor_min[0], spec.floor_max[0], 3000)
    z = rng.uniform(spec.floor_min[1], spec.floor_max[1], 3000)
    ok = walls.clear(x, z)
    x, z = x[ok][:1000], z[ok][:1000]
    heading = rng.uniform(0, 2 * math.pi, len(x))
    for _ in range(200):
        heading += rng.normal(0, 0.4, len(x))
        x, z = walls.move(x, z, np.cos(heading) * STEP, np.sin(heading) * STEP)
        assert walls.penetration(x, z).max() <= 1e-6
        assert (x >= spec.floor_min[0]).all() and (x <= spec.floor_max[0]).all()


@settings(max_examples=200, deadline=None)
@given(st.floats(-9.0, 9.0), st.floats(-9.0, 9.0), st.floats(0, 2 * math.pi), st.floats(0.0, 1.0))
def test_gallery_property_any_start_any_heading(x0, z0, heading, speed):
    walls = GALLERY.wall_set()
    if not walls.clear([x0], [z0])[0]:
        return
    x, z = np.array([x0]), np.array([z0])
    for _ in range(30):
        x, z = walls.move(x, z, [math.cos(heading) * STEP * speed], [math.sin(heading) * STEP * speed])
        assert walls.penetration(x, z)[0] <= 1e-6


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"id": "x", "floor": {"min": [0, 0], "max": [10, 10]}}, "spawns: at least one spawn area is required"),
        ({"id": "Bad Id", "floor": {"min": [0, 0], "max": [10, 10]}, "spawns": [{"center": [5, 5]}]}, "id: must match"),
        ({"id": "x", "spawns": [{"center": [5, 5]}]}, "floor: is required"),
        ({"id": "x", "floor": {"min": [0, 0], "max": [10, 10]}, "spawns": [{"center": [5, 5]}],
          "walls": [{"points": [[1, 1]]}]}, "walls[0].points: must be an array of 2 or more"),
        ({"id": "x", "floor": {"min": [0, 0], "max": [10, 10]}, "spawns": [{"center": [5, 5]}],
          "walls": [{"points": [[1, 1], [2, "a"]]}]}, "walls[0].points[1][1]: must be a finite number"),
        ({"id": "x", "floor": {"min": [0, 0], "max": [10, 10]}, "spawns": [{"center": [50, 5]}]},
         "spawns[0].center: (50, 5) is outside the floor"),
        ({"id": "x", "floor": {"min": [0, 0], "max": [10, 10]}, "spawns": [{"center": [5, 5]}],
          "walls": [{"points": [[0, 5], [10, 5]], "thickness": 1.0}]}, "spawns[0]: has no point clear of the walls"),
        ({"id": "x", "floor": {"min": [0, 0], "max": [10, 10]}, "spawns": [{"center": [5, 5]}], "colour": 1},
         "colour: unknown field"),
        ({"id": "x", "floor": {"min": [0, 0], "max": [10, 10]}, "spawns": [{"center": [5, 5]}],
          "pictures": [{"id": "p", "position": [0, 1, 0], "size": [1, 1], "image": "../etc/passwd"}]},
         "pictures[0].image: must be a file name"),
        ({"id": "x", "floor": {"min": [0, 0], "max": [10, 10]}, "spawns": [{"center": [5, 5]}],
          "pictures": [{"id": "p", "position": [0, 1, 0], "size": [1, 1], "title": "two\nlines"}]},
         "pictures[0].title: control character U+000A is not allowed"),
        ({"id": "x", "floor": {"min": [0, 0], "max": [10, 10]}, "spawns": [{"center": [5, 5]}],
          "pictures": [{"id": "p", "position": [0, 1, 0], "size": [1, 1], "title": "x" * 101}]},
         "pictures[0].title: longer than 100 characters"),
        ({"id": "x", "floor": {"min": [0, 0], "max": [10, 10]}, "spawns": [{"center": [5, 5]}],
          "zones": [{"id": "z", "shape": "circle", "center": [1, 1]}]}, "zones[0].radius: is required"),
    ],
)
def test_world_file_errors_are_one_clear_line(doc, message):
    with pytest.raises(WorldFileError) as info:
        parse_world(doc, "test.toml")
    text = str(info.value)
    assert "\n" not in text and text.startswith("world file test.toml: ") and message in text


def test_a_picture_of_a_file_may_have_a_title_on_its_plaque():
    doc = {"id": "x", "floor": {"min": [0, 0], "max": [10, 10]}, "spawns": [{"center": [5, 5]}],
           "pictures": [{"id": "p", "position": [0, 1, 0], "size": [1, 1], "image": "a.png",
                         "title": " Cafe\u0301 terrace "},
                        {"id": "q", "position": [2, 1, 0], "size": [1, 1], "image": "b.png"}]}
    spec = parse_world(doc, "test.toml")
    assert [p.title for p in spec.pictures] == ["Caf\u00e9 terrace", ""]  # NFC, stripped; none: ""
    assert [p["title"] for p in spec.to_json()["pictures"]] == ["Caf\u00e9 terrace", ""]
    hung = spec.with_images({"p": "hung-x-p-1.png"}, {})  # a picture hung without a title has none
    assert [(p.image, p.title) for p in hung.pictures] == [("hung-x-p-1.png", ""), ("b.png", "")]
    titled = spec.with_picture("q", "hung-x-q-2.png", "Night")
    assert [(p.image, p.title) for p in titled.pictures][1] == ("hung-x-q-2.png", "Night")
    assert titled.version == spec.version + 1


def test_load_world_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "x"\nfloor = [\n')
    with pytest.raises(WorldFileError, match=r"^world file .*bad.toml: not valid TOML"):
        load_world(bad)
    with pytest.raises(WorldFileError, match="cannot be read"):
        load_world(tmp_path / "missing.toml")
    deep = tmp_path / "deep.toml"
    deep.write_text('id = "x"\nfloor = ' + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(WorldFileError) as info:
        load_world(deep)
    assert str(info.value) == f"world file {deep}: not valid TOML: nested too deeply"


def test_shipped_worlds_and_their_json():
    for spec in (GALLERY, HALLS):
        doc = spec.to_json()
        assert doc["id"] == spec.id and doc["walls"] and doc["pictures"] and doc["spawns"]
        again = parse_world({k: v for k, v in doc.items()}, "json")  # the JSON is a valid world document
        assert again.segments() == spec.segments()
    assert len(HALLS.pictures) >= 30 and len({p.id for p in HALLS.pictures}) == len(HALLS.pictures)
    assert [o.kind for o in HALLS.obstacles].count("bench") == 4


# -- the simulation with a world file ---------------------------------------------------------
def _sim(world: str, **overrides):
    from worldserver.config import load_config
    from worldserver.simulation import Simulation
    from worldserver.stats import Stats

    values = {"worlds.hosted": world or "open", **overrides}
    return Simulation(load_config(None, {}, values), Stats(), np.random.default_rng(3))


class _Sink:
    def send_snapshot(self, session, parts, now):
        return list(range(len(parts)))


def test_a_crowd_fits_the_gallery_and_never_enters_its_walls():
    """The finding of issue 10: 150 bots in a world of the gallery's size were refused
    (server_full) for want of spawn clearance. In the gallery world all of them join (closer
    than the clearance when they must), none spawns inside a wall, and walking at full speed
    in random directions for 10 s none ever ends a tick inside one or leaves the floor."""
    sim = _sim("gallery")
    world, walls = sim.world, sim.world.walls
    sessions = [sim.join(_Sink(), 0.0) for _ in range(150)]
    slots = np.array([s.slot for s in sessions])
    assert walls.penetration(world.pos[slots, 0], world.pos[slots, 2]).max() <= 1e-9
    spread = np.unique(np.round(world.pos[slots][:, ::2], 3), axis=0)
    assert len(spread) == 150  # no two on the same point
    rng = np.random.default_rng(9)
    heading = rng.uniform(0, 2 * math.pi, len(slots))
    for tick in range(200):
        heading += rng.normal(0, 0.5, len(slots))
        world.set_intents(slots, np.c_[np.cos(heading), np.sin(heading)], np.zeros(len(slots)),
                          np.ones(len(slots)), np.zeros(len(slots), bool))
        world.step(sim.dt)
        assert walls.penetration(world.pos[slots, 0], world.pos[slots, 2]).max() <= 1e-6
        assert np.abs(world.pos[slots][:, ::2]).max() <= 10.0 - 0.15 - 0.35 + 1e-6  # inside the room


def test_catch_up_steps_respect_the_walls():
    sim = _sim("gallery")
    world = sim.world
    s = sim.join(_Sink(), 0.0)
    world.pos[s.slot, 0], world.pos[s.slot, 2] = 0.0, 9.0  # 0.5 m from the north wall's face
    for _ in range(10):
        world.catch_up([s.slot], [[0.0, 1.0]], sim.dt)
    assert world.pos[s.slot, 2] == pytest.approx(10.0 - 0.15 - 0.35, abs=1e-5)


def test_open_world_is_unchanged_and_served_as_a_world():
    sim = _sim("")
    assert sim.world.walls is None and sim.world.half_extent == 110.0
    doc = sim.world_spec.to_json()
    assert doc["id"] == "open" and doc["walls"] == [] and doc["floor"] == {"min": [-110.0, -110.0], "max": [110.0, 110.0]}
    halls = _sim("halls")
    assert halls.world.half_extent == 31.0 and halls.quantizer.maxs[0] == 31.0


def test_collision_vectors_are_what_the_generator_writes():
    """worldserver/worlds/collision_vectors.json (read by the web client's tests) is current."""
    import json

    from worldserver.worlds import make_collision_vectors as gen

    assert json.loads(gen.OUT.read_text()) == json.loads(json.dumps(gen.build()))
