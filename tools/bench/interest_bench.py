"""Benchmark of the per-tick hot path: ``World.step`` and ``InterestGrid.update``.

For each world size, entities are spawned, scattered uniformly over ±110 m, given random
movement intents, and every entity is an observer (radius 50 m by default). Each iteration
runs one ``step`` and one ``update`` (so entities move and hysteresis is exercised) and
the median and best time per call are reported in µs, with the pairs found per update.

    python tools/bench/interest_bench.py [--sizes 100 400 1000 2000] [--iters 50] [--json]

This tool must not be imported by the server; it only reads the modules it measures and
writes its report to stdout.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from worldserver.interest import InterestGrid  # noqa: E402
from worldserver.world import World  # noqa: E402

DT = 0.05


def bench_size(n: int, iters: int, extent: float, radius: float, leave_margin: float,
               cell_size: float | None, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    world = World(capacity=n, half_extent=extent, y_min=0.0, y_max=50.0, max_speed=6.0,
                  jump_speed=5.0, gravity=9.81, spawn_clearance=2.0, rng=rng)
    for i in range(n):
        world.spawn(owner=i)
    slots = world.alive_slots()
    world.pos[slots, 0] = rng.uniform(-extent, extent, n)
    world.pos[slots, 2] = rng.uniform(-extent, extent, n)
    grid = InterestGrid(half_extent=extent, radius=radius, leave_margin=leave_margin,
                        cell_size=cell_size, capacity=n)
    step_t, update_t, pairs, examined = [], [], [], []
    for it in range(iters + 2):
        if it % 20 == 0:  # new random intents now and then
            world.set_intents(slots, rng.uniform(-1, 1, (n, 2)), rng.uniform(0, 6.28, n),
                              rng.integers(0, 4, n), rng.random(n) < 0.05)
        t0 = time.perf_counter()
        world.step(DT)
        t1 = time.perf_counter()
        vis = grid.update(world.pos, world.alive, slots, generation=world.generation)
        t2 = time.perf_counter()
        if it >= 2:  # warm-up excluded
            step_t.append(t1 - t0)
            update_t.append(t2 - t1)
            pairs.append(vis.total)
            examined.append(grid.last_candidates_examined)
    return {
        "entities": n,
        "observers": n,
        "iters": iters,
        "step_us_median": statistics.median(step_t) * 1e6,
        "step_us_min": min(step_t) * 1e6,
        "update_us_median": statistics.median(update_t) * 1e6,
        "update_us_min": min(update_t) * 1e6,
        "pairs_found": statistics.mean(pairs),
        "pairs_per_observer": statistics.mean(pairs) / n,
        "candidates_examined": statistics.mean(examined),
        "cell_size": grid.cell_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400, 1000, 2000])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--extent", type=float, default=110.0, help="half extent (m)")
    parser.add_argument("--radius", type=float, default=50.0)
    parser.add_argument("--leave-margin", type=float, default=5.0)
    parser.add_argument("--cell-size", type=float, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    results = [bench_size(n, args.iters, args.extent, args.radius, args.leave_margin,
                          args.cell_size, args.seed) for n in args.sizes]
    if args.json:
        print(json.dumps({"benchmark": "interest", "radius": args.radius,
                          "leave_margin": args.leave_margin, "half_extent": args.extent,
                          "results": results}, indent=2))
        return 0
    print(f"radius {args.radius} m, leave margin {args.leave_margin} m, ±{args.extent} m, "
          f"every entity observes")
    print(f"{'entities':>8} {'step µs':>9} {'update µs':>10} {'(best)':>9} {'pairs':>9} "
          f"{'per obs':>8} {'examined':>9}")
    for r in results:
        print(f"{r['entities']:>8} {r['step_us_median']:>9.1f} {r['update_us_median']:>10.0f} "
              f"{r['update_us_min']:>9.0f} {r['pairs_found']:>9.0f} "
              f"{r['pairs_per_observer']:>8.1f} {r['candidates_examined']:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
