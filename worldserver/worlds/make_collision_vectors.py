"""Writes collision_vectors.json: moves of one circle against the walls of the shipped worlds,
computed by worldserver/collision.py, which the web client's prediction
(clients/web/src/world/walls.js) must reproduce (clients/web/test/walls.test.mjs).

Each case: a world (its JSON document is included once per world), a start point clear of
the walls and a list of moves; ``expected`` is the centre after each move. The moves walk at
full speed (5 m/s for 1/20 s) or twice that (a catch-up tick), in random headings with some
straight at walls, into corners and through doorways, so sliding, corners and sub-steps are
all exercised. Run: ``python worldserver/worlds/make_collision_vectors.py`` (tests check
that the file is what this script writes).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from worldserver.worldfile import builtin_world  # noqa: E402

OUT = Path(__file__).with_name("collision_vectors.json")


def build() -> dict:
    rng = np.random.default_rng(20261206)
    worlds, cases = {}, []
    for world_id in ("gallery", "halls"):
        spec = builtin_world(world_id)
        worlds[world_id] = spec.to_json()
        walls = spec.wall_set()
        n = 0
        while n < 24:
            x0 = float(rng.uniform(spec.floor_min[0], spec.floor_max[0]))
            z0 = float(rng.uniform(spec.floor_min[1], spec.floor_max[1]))
            if not walls.clear([x0], [z0])[0]:
                continue
            heading = float(rng.uniform(0, 2 * math.pi))
            moves, expected = [], []
            x, z = np.array([x0]), np.array([z0])
            for _ in range(60):
                heading += float(rng.normal(0, 0.25))
                speed = 0.25 * (2.0 if rng.random() < 0.1 else 1.0) * (1.0 if rng.random() < 0.9 else float(rng.uniform(0, 1)))
                dx, dz = speed * math.cos(heading), speed * math.sin(heading)
                x, z = walls.move(x, z, [dx], [dz])
                moves.append([dx, dz])
                expected.append([float(x[0]), float(z[0])])
            cases.append({"world": world_id, "start": [x0, z0], "moves": moves, "expected": expected})
            n += 1
    return {"about": "moves of one circle against the walls; see make_collision_vectors.py",
            "tolerance": 1e-9, "worlds": worlds, "cases": cases}


def main() -> int:
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
