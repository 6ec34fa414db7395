"""World files: one TOML document per world, read, checked and turned into a :class:`WorldSpec`.

A world file says what a world *is*: its id and title, the walkable floor (a rectangle in the
x,z plane), the walls (polylines with a thickness and a height; doorways are the gaps between
them), obstacles such as benches (rotated rectangles that block like walls), spawn areas,
picture slots, named zones, a style preset for the looks and the radius of an entity. The
format is documented field by field in ``docs/worlds.md``; :data:`SCHEMA` below is the same
list in code, and every error names the file, the field path and what is wrong, in one line
(:class:`WorldFileError`), like the config's errors.

From a spec the server builds the collision layer (:meth:`WorldSpec.wall_set`, capsules for
:mod:`worldserver.collision`), and clients get the same document as JSON
(:meth:`WorldSpec.to_json`, ``GET /api/worlds/{id}``) to build their scene and their own
prediction's walls from.

Must not: do I/O beyond reading the one file it is given, hold server state, or know about
sessions and the network.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from worldserver.collision import WallSet


__all__ = ["WorldFileError", "WorldSpec", "load_named", "load_world", "open_world", "parse_world", "BUILTIN_DIR",
           "builtin_world"]

FORMAT = 1
BUILTIN_DIR = Path(__file__).resolve().parent / "worlds"
ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
STYLE_PRESETS = ("gallery", "museum", "night")
MAX_ITEMS = 4096  # walls, obstacles, pictures, zones, spawns: each list at most this long
MAX_EXTENT = 10_000.0  # metres from the origin
MAX_PICTURE_TITLE = 100  # characters of a picture's title (a file's, or one hung with a title)


class WorldFileError(ValueError):
    """A world file that cannot be used; the message is one line naming the file and field."""


@attrs.frozen
class Wall:
    points: tuple[tuple[float, float], ...]
    thickness: float
    height: float


@attrs.frozen
class Obstacle:
    kind: str
    center: tuple[float, float]
    size: tuple[float, float]
    rotation: float  # degrees, counter-clockwise seen from above (+y)
    height: float

    def corners(self) -> list[tuple[float, float]]:
        c, s = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        hx, hz = self.size[0] / 2, self.size[1] / 2
        return [(self.center[0] + c * px - s * pz, self.center[1] + s * px + c * pz)
                for px, pz in ((-hx, -hz), (hx, -hz), (hx, hz), (-hx, hz))]


@attrs.frozen
class Spawn:
    center: tuple[float, float]
    size: tuple[float, float]  # (0, 0): a point


@attrs.frozen
class Picture:
    id: str
    position: tuple[float, float, float]
    facing: float  # degrees: the direction the picture faces, as a yaw (0 = +z)
    size: tuple[float, float]
    image: str
    # The title on its plaque: the file's ``title``, or the one a curator gave the picture hung
    # here (worldserver/world_admin.py); "" for none: clients make the plaque's text from the
    # image's file name, or show none for a picture hung without a title.
    title: str = ""


@attrs.frozen
class Zone:
    id: str
    shape: str  # "rect" or "circle"
    center: tuple[float, float]
    size: tuple[float, float]  # rect
    radius: float  # circle
    call: bool = False  # a call zone: everyone inside is in one call (docs/calls.md)


@attrs.frozen
class WorldSpec:
    id: str
    title: str
    floor_min: tuple[float, float]
    floor_max: tuple[float, float]
    entity_radius: float
    style: str
    walls: tuple[Wall, ...]
    obstacles: tuple[Obstacle, ...]
    spawns: tuple[Spawn, ...]
    pictures: tuple[Picture, ...]
    zones: tuple[Zone, ...]
    source: str = ""  # the file it was read from ("" for the open world): what a reload reads
    # The served document's revision (not a field of the file): it changes with every picture
    # hung or taken down and every reload (worldserver/world_admin.py), so clients that hold
    # the document know when to fetch it again.
    version: int = 1

    def with_picture(self, slot: str, image: str, title: str = "") -> "WorldSpec":
        """This spec with picture slot ``slot`` showing ``image`` ("" for an empty frame) under
        ``title`` and the next version; KeyError for no such slot."""
        if not any(p.id == slot for p in self.pictures):
            raise KeyError(slot)
        pictures = tuple(attrs.evolve(p, image=image, title=title) if p.id == slot else p for p in self.pictures)
        return attrs.evolve(self, pictures=pictures, version=self.version + 1)

    def with_images(self, images: dict[str, str], titles: dict[str, str] | None = None) -> "WorldSpec":
        """This spec with the slots named in ``images`` (slot id -> image file name) showing those
        images, under their ``titles`` (slot id -> title; "" for a slot it does not name); slots
        it does not have are ignored. Same version."""
        titles = titles or {}
        pictures = tuple(attrs.evolve(p, image=images[p.id], title=titles.get(p.id, "")) if p.id in images else p
                         for p in self.pictures)
        return attrs.evolve(self, pictures=pictures)

    def segments(self) -> tuple[list[tuple[float, float, float, float]], list[float]]:
        """The collision layer as capsules: (segments ax, az, bx, bz) and half thicknesses.
        Walls give one capsule per polyline segment, obstacles their four edges (half 0)."""
        segs: list[tuple[float, float, float, float]] = []
        half: list[float] = []
        for wall in self.walls:
            for (ax, az), (bx, bz) in zip(wall.points, wall.points[1:]):
                segs.append((ax, az, bx, bz))
                half.append(wall.thickness / 2)
        for ob in self.obstacles:
            pts = ob.corners()
            for a, b in zip(pts, pts[1:] + pts[:1]):
                segs.append((a[0], a[1], b[0], b[1]))
                half.append(0.0)
        return segs, half

    def spawn_points(self):
        """Every point of the spawn areas (a grid of half a radius) where an entity touches no
        wall: the candidates the world spawns at (an array (n, 2) of x, z)."""
        import numpy as np

        walls = self.wall_set()
        pts = [p for sp in self.spawns for p in _spawn_candidates(self, walls, sp, 0.0)]
        return np.array(pts, dtype=np.float64).reshape(-1, 2)

    def wall_set(self) -> "WallSet":
        from worldserver.collision import WallSet  # numpy: not imported by config checks of the open world

        segs, half = self.segments()
        return WallSet(segs, half, self.entity_radius, self.floor_min, self.floor_max)

    def to_json(self) -> dict[str, Any]:
        """The document clients get (``GET /api/worlds/{id}``): every field, plain JSON."""
        return {
            "format": FORMAT,
            "version": self.version,
            "id": self.id,
            "title": self.title,
            "entity_radius": self.entity_radius,
            "style": {"preset": self.style},
            "floor": {"min": list(self.floor_min), "max": list(self.floor_max)},
            "walls": [{"points": [list(p) for p in w.points], "thickness": w.thickness, "height": w.height}
                      for w in self.walls],
            "obstacles": [{"kind": o.kind, "center": list(o.center), "size": list(o.size),
                           "rotation": o.rotation, "height": o.height} for o in self.obstacles],
            "spawns": [{"center": list(s.center), "size": list(s.size)} for s in self.spawns],
            "pictures": [{"id": p.id, "position": list(p.position), "facing": p.facing, "size": list(p.size),
                          "image": p.image, "title": p.title} for p in self.pictures],
            "zones": [{"id": z.id, "shape": z.shape, "center": list(z.center), "size": list(z.size),
                       "radius": z.radius, "call": z.call} for z in self.zones],
        }


# -- reading ---------------------------------------------------------------------------------
class _Reader:
    """Typed access to a parsed TOML table; every error names ``source`` and the field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, what: str) -> WorldFileError:
        return WorldFileError(f"world file {self.source}: {path}: {what}")

    def table(self, obj: Any, path: str, allowed: set[str]) -> dict:
        if not isinstance(obj, dict):
            raise self.fail(path, "must be a table")
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise self.fail(f"{path}.{unknown[0]}" if path else unknown[0],
                            f"unknown field (known: {', '.join(sorted(allowed))})")
        return obj

    def check_number(self, value: Any, where: str, *, lo: float = -MAX_EXTENT, hi: float = MAX_EXTENT,
                     positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where, f"must be a finite number, got {value!r}")
        value = float(value)
        if positive and not value > 0:
            raise self.fail(where, f"must be > 0, got {value:g}")
        if not lo <= value <= hi:
            raise self.fail(where, f"must be in [{lo:g}, {hi:g}], got {value:g}")
        return value

    def number(self, obj: dict, key: str, path: str, *, default: float | None = None,
               lo: float = -MAX_EXTENT, hi: float = MAX_EXTENT, positive: bool = False) -> float:
        if key not in obj:
            if default is None:
                raise self.fail(f"{path}{key}", "is required")
            return default
        return self.check_number(obj[key], f"{path}{key}", lo=lo, hi=hi, positive=positive)

    def check_vector(self, value: Any, where: str, n: int, *, positive: bool = False) -> tuple[float, ...]:
        if not isinstance(value, list) or len(value) != n:
            raise self.fail(where, f"must be an array of {n} numbers, got {value!r}")
        return tuple(self.check_number(v, f"{where}[{i}]", positive=positive) for i, v in enumerate(value))

    def vector(self, obj: dict, key: str, path: str, n: int, *, default: tuple | None = None,
               positive: bool = False) -> tuple[float, ...]:
        if key not in obj:
            if default is None:
                raise self.fail(f"{path}{key}", "is required")
            return default
        return self.check_vector(obj[key], f"{path}{key}", n, positive=positive)

    def text(self, obj: dict, key: str, path: str, *, default: str | None = None, pattern=None,
             choices: tuple[str, ...] | None = None, max_len: int = 200) -> str:
        if key not in obj:
            if default is None:
                raise self.fail(f"{path}{key}", "is required")
            return default
        value = obj[key]
        if not isinstance(value, str) or len(value) > max_len:
            raise self.fail(f"{path}{key}", f"must be a string of at most {max_len} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(f"{path}{key}", f"must match {pattern.pattern}, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(f"{path}{key}", f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def picture_title(self, obj: dict, path: str) -> str:
        """A picture's ``title``, checked as a hung picture's is (one line of text, no control
        characters, NFC, stripped, at most MAX_PICTURE_TITLE characters); "" when none."""
        if "title" not in obj:
            return ""  # (and protocol.chat, which brings numpy, stays unimported for `worldserver config`)
        from protocol.chat import ChatProtocolError, check_line

        try:
            return check_line(obj.get("title", ""), "title", MAX_PICTURE_TITLE)
        except ChatProtocolError as exc:
            raise self.fail(f"{path}title", exc.message.removeprefix("title: ")) from None

    def items(self, doc: dict, key: str) -> list:
        value = doc.get(key, [])
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            raise self.fail(key, f"must be an array of at most {MAX_ITEMS} tables")
        return value


def parse_world(doc: dict, source: str = "<memory>") -> WorldSpec:
    """Checks a parsed world document and returns its spec; raises WorldFileError."""
    r = _Reader(source)
    r.table(doc, "", {"format", "version", "id", "title", "entity_radius", "floor", "style", "walls", "obstacles",
                      "spawns", "pictures", "zones"})
    fmt = doc.get("format", FORMAT)
    if fmt != FORMAT:
        raise r.fail("format", f"must be {FORMAT}, got {fmt!r}")
    version = doc.get("version", 1)  # the served document's revision; a file leaves it out
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**53:
        raise r.fail("version", f"must be a whole number from 1, got {version!r}")
    world_id = r.text(doc, "id", "", pattern=ID_RE)
    if world_id == "open":
        raise r.fail("id", '"open" names the world without a file (worlds.hosted); choose another id')
    title = r.text(doc, "title", "", default=world_id)
    radius = r.number(doc, "entity_radius", "", default=0.35, lo=0.05, hi=5.0)
    if "floor" not in doc:
        raise r.fail("floor", "is required")
    floor = r.table(doc["floor"], "floor", {"min", "max"})
    fmin = r.vector(floor, "min", "floor.", 2)
    fmax = r.vector(floor, "max", "floor.", 2)
    if not all(b - a > 4 * radius for a, b in zip(fmin, fmax)):
        raise r.fail("floor", "max must exceed min by more than two entity diameters on both axes")
    style_tbl = r.table(doc.get("style", {}), "style", {"preset"})
    style = r.text(style_tbl, "preset", "style.", default="gallery", choices=STYLE_PRESETS)

    def on_floor(p: tuple[float, float], path: str) -> None:
        if not (fmin[0] <= p[0] <= fmax[0] and fmin[1] <= p[1] <= fmax[1]):
            raise r.fail(path, f"({p[0]:g}, {p[1]:g}) is outside the floor")

    walls = []
    for i, item in enumerate(r.items(doc, "walls")):
        path = f"walls[{i}]."
        r.table(item, f"walls[{i}]", {"points", "thickness", "height"})
        raw = item.get("points")
        if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_ITEMS:
            raise r.fail(f"{path}points", "must be an array of 2 or more [x, z] points")
        pts = tuple(r.check_vector(p, f"{path}points[{k}]", 2) for k, p in enumerate(raw))
        for k, (a, b) in enumerate(zip(pts, pts[1:])):
            if a == b:
                raise r.fail(f"{path}points[{k + 1}]", "repeats the point before it")
        thickness = r.number(item, "thickness", path, default=0.2, lo=0.0, hi=10.0)
        height = r.number(item, "height", path, default=4.0, positive=True, hi=1000.0)
        walls.append(Wall(pts, thickness, height))
    obstacles = []
    for i, item in enumerate(r.items(doc, "obstacles")):
        path = f"obstacles[{i}]."
        r.table(item, f"obstacles[{i}]", {"kind", "center", "size", "rotation", "height"})
        ob = Obstacle(
            kind=r.text(item, "kind", path, default="bench", pattern=ID_RE),
            center=r.vector(item, "center", path, 2),
            size=r.vector(item, "size", path, 2, positive=True),
            rotation=r.number(item, "rotation", path, default=0.0, lo=-360.0, hi=360.0),
            height=r.number(item, "height", path, default=0.45, positive=True, hi=1000.0),
        )
        on_floor(ob.center, f"{path}center")
        obstacles.append(ob)
    spawns = []
    for i, item in enumerate(r.items(doc, "spawns")):
        path = f"spawns[{i}]."
        r.table(item, f"spawns[{i}]", {"center", "size"})
        sp = Spawn(r.vector(item, "center", path, 2), r.vector(item, "size", path, 2, default=(0.0, 0.0)))
        if min(sp.size) < 0:
            raise r.fail(f"{path}size", "must not be negative")
        on_floor(sp.center, f"{path}center")
        spawns.append(sp)
    if not spawns:
        raise r.fail("spawns", "at least one spawn area is required")
    pictures, seen = [], set()
    for i, item in enumerate(r.items(doc, "pictures")):
        path = f"pictures[{i}]."
        r.table(item, f"pictures[{i}]", {"id", "position", "facing", "size", "image", "title"})
        pic = Picture(
            id=r.text(item, "id", path, pattern=ID_RE),
            position=r.vector(item, "position", path, 3),
            facing=r.number(item, "facing", path, default=0.0, lo=-360.0, hi=360.0),
            size=r.vector(item, "size", path, 2, positive=True),
            image=r.text(item, "image", path, default="", max_len=200),
            title=r.picture_title(item, path),
        )
        if pic.id in seen:
            raise r.fail(f"{path}id", f"{pic.id!r} is used twice")
        seen.add(pic.id)
        if "/" in pic.image or "\\" in pic.image or pic.image.startswith("."):
            raise r.fail(f"{path}image", "must be a file name in the images directory, not a path")
        pictures.append(pic)
    zones, seen = [], set()
    for i, item in enumerate(r.items(doc, "zones")):
        path = f"zones[{i}]."
        r.table(item, f"zones[{i}]", {"id", "shape", "center", "size", "radius", "call"})
        shape = r.text(item, "shape", path, default="rect", choices=("rect", "circle"))
        call = item.get("call", False)
        if not isinstance(call, bool):
            raise r.fail(f"{path}call", f"must be true or false, got {call!r}")
        zone = Zone(
            id=r.text(item, "id", path, pattern=ID_RE),
            shape=shape,
            center=r.vector(item, "center", path, 2),
            size=r.vector(item, "size", path, 2, positive=True) if shape == "rect" else (0.0, 0.0),
            radius=r.number(item, "radius", path, positive=True) if shape == "circle" else 0.0,
            call=call,
        )
        if zone.id in seen:
            raise r.fail(f"{path}id", f"{zone.id!r} is used twice")
        seen.add(zone.id)
        zones.append(zone)
    spec = WorldSpec(world_id, title, fmin, fmax, radius, style, tuple(walls), tuple(obstacles), tuple(spawns),
                     tuple(pictures), tuple(zones), source, version)
    for i, sp in enumerate(spec.spawns):  # a spawn area must have room for someone
        if not _has_clear_point(spec, sp):
            raise r.fail(f"spawns[{i}]", "has no point clear of the walls for an entity")
    return spec


def load_world(path: str | Path) -> WorldSpec:
    """Reads and checks one world file; raises WorldFileError with a one-line message."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WorldFileError(f"world file {path}: cannot be read: {exc.strerror or exc}") from None
    if len(data) > 4 * 1024 * 1024:
        raise WorldFileError(f"world file {path}: larger than 4 MiB")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise WorldFileError(f"world file {path}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise WorldFileError(f"world file {path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise WorldFileError(f"world file {path}: not valid TOML: nested too deeply") from None
    return parse_world(doc, str(path))


def builtin_world(world_id: str) -> WorldSpec:
    """One of the worlds shipped in ``worldserver/worlds`` (``gallery``, ``halls``)."""
    if not ID_RE.fullmatch(world_id):
        raise WorldFileError(f"no built-in world {world_id!r}")
    path = BUILTIN_DIR / f"{world_id}.toml"
    if not path.is_file():
        raise WorldFileError(f"no built-in world {world_id!r}")
    return load_world(path)


def load_named(name: str, half_extent: float, spawn_point=(0.0, 0.0)) -> WorldSpec:
    """A world as ``worlds.hosted`` names it: ``open`` (see :func:`open_world`), a built-in id
    (no ``/``, not ending in ``.toml``), or the path of a world file; raises WorldFileError."""
    if name == "open":
        return open_world(half_extent, spawn_point)
    if "/" not in name and not name.endswith(".toml"):
        return builtin_world(name)
    return load_world(name)


def open_world(half_extent: float, spawn_point=(0.0, 0.0), radius: float = 0.35) -> WorldSpec:
    """The world without a file (``sim.world = ""``): an open square of ``half_extent``, no
    walls, spawning around ``spawn_point`` (x, z). Served as JSON like any other world."""
    he = float(half_extent)
    return WorldSpec("open", "Open ground", (-he, -he), (he, he), radius, "gallery", (), (),
                     (Spawn((float(spawn_point[0]), float(spawn_point[1])), (0.0, 0.0)),), (), (), "")


def _has_clear_point(spec: WorldSpec, spawn: Spawn) -> bool:
    """Whether a spawn area has a point (on the same grid as :func:`_spawn_candidates`) where
    an entity touches no wall and stays on the floor. Plain Python with an early exit, so that
    checking a configuration imports no numpy."""
    segs, half = spec.segments()
    r = spec.entity_radius
    step = r / 2
    nx = max(1, int(spawn.size[0] / step) + 1)
    nz = max(1, int(spawn.size[1] / step) + 1)
    (x0, z0), (x1, z1) = spec.floor_min, spec.floor_max

    def clear(px: float, pz: float) -> bool:
        if not (x0 + r <= px <= x1 - r and z0 + r <= pz <= z1 - r):
            return False
        for (ax, az, bx, bz), h in zip(segs, half):
            dx, dz = bx - ax, bz - az
            l2 = dx * dx + dz * dz
            t = 0.0 if l2 == 0 else min(max(((px - ax) * dx + (pz - az) * dz) / l2, 0.0), 1.0)
            if math.hypot(px - (ax + t * dx), pz - (az + t * dz)) < h + r:
                return False
        return True

    for i in range(nx):
        px = spawn.center[0] + (-spawn.size[0] / 2 + (spawn.size[0] * i / (nx - 1) if nx > 1 else spawn.size[0] / 2))
        for k in range(nz):
            pz = spawn.center[1] + (-spawn.size[1] / 2 + (spawn.size[1] * k / (nz - 1) if nz > 1 else spawn.size[1] / 2))
            if clear(px, pz):
                return True
    return False


def _spawn_candidates(spec: WorldSpec, walls: WallSet, spawn: Spawn, margin: float):
    """Points of a spawn area clear of every wall (a grid of half-radius spacing)."""
    import numpy as np

    step = spec.entity_radius / 2
    nx = max(1, int(spawn.size[0] / step) + 1)
    nz = max(1, int(spawn.size[1] / step) + 1)
    xs = spawn.center[0] + np.linspace(-spawn.size[0] / 2, spawn.size[0] / 2, nx)
    zs = spawn.center[1] + np.linspace(-spawn.size[1] / 2, spawn.size[1] / 2, nz)
    gx, gz = np.meshgrid(xs, zs, indexing="ij")
    gx, gz = gx.ravel(), gz.ravel()
    ok = walls.clear(gx, gz, margin)
    return list(zip(gx[ok].tolist(), gz[ok].tolist()))
