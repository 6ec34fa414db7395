"""Benchmark of the per-tick hot path: ``World.step`` and ``InterestGrid.update``.

Two scenarios, each run for several entity counts N (every entity is an observer):

* ``world``: the default world. Entities uniform over ±110 m, radius 50 m, leave margin 5 m
  (N = 400, 1000, 2000 by default).
* ``crowd``: a gallery opening, everyone in view of everyone. Entities uniform in a 100 x 100 m
  square (``--square 50``, kept inside it), radius 150 m on the server's ±110 m grid
  (N = 200, 400, 1000 by default): N² pairs.
* ``dense`` (only when asked for): a crowd a little wider than the default radius 50 m,
  uniform in a 50 x 50 m square (N = 400, 1000): most, not all, in view of each other.

Entities get random movement intents; each iteration runs one ``step`` and one ``update``
(so entities move and hysteresis is exercised). Reported per update: median and best time
in ms, ns per pair found, pairs found, candidate pairs examined and observers whose whole
neighbourhood was certainly in view ("unfiltered", see ``InterestGrid``). The date, the command
and the machine are printed first (and put in the JSON).

    python tools/bench/interest_bench.py [--scenario crowd world] [--sizes N ...]
        [--iters 50] [--radius R] [--leave-margin M] [--extent E] [--square S]
        [--cell-size C] [--shuffle] [--json]

Flags given explicitly override the scenario's values (``--sizes`` applies to every
scenario given). This tool must not be imported by the server; it only reads the modules it
measures and writes its report to stdout.
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

try:
    import worldtools  # noqa: F401  (installed)
except ImportError:  # run from a checkout: tools/bench is on sys.path
    import _checkout  # noqa: F401

from worldserver.interest import InterestGrid  # noqa: E402
from worldserver.world import World  # noqa: E402
from worldtools.bench.server_load import header_lines, report_header  # noqa: E402

DT = 0.05

SCENARIOS = {
    "world": dict(sizes=[400, 1000, 2000], extent=110.0, square=None, radius=50.0,
                  leave_margin=5.0),
    "crowd": dict(sizes=[200, 400, 1000], extent=110.0, square=50.0, radius=150.0,
                  leave_margin=5.0),
    "dense": dict(sizes=[400, 1000], extent=110.0, square=25.0, radius=50.0,
                  leave_margin=5.0),
}


def bench_size(n: int, iters: int, extent: float, radius: float, leave_margin: float,
               cell_size: float | None, seed: int, square: float | None = None,
               shuffle: bool = False) -> dict:
    """Time ``iters`` updates of N entities (all observers) in a world of half extent
    ``extent``; entities live in ±``square`` (default: the whole world)."""
    square = extent if square is None else min(square, extent)
    rng = np.random.default_rng(seed)
    # The world keeps entities inside the square; the grid covers the whole world.
    world = World(capacity=n, half_extent=square, y_min=0.0, y_max=50.0, max_speed=6.0,
                  jump_speed=5.0, gravity=9.81, spawn_clearance=0.0, rng=rng)  # placed below
    for i in range(n):
        world.spawn(owner=i)
    slots = world.alive_slots()
    world.pos[slots, 0] = rng.uniform(-square, square, n)
    world.pos[slots, 2] = rng.uniform(-square, square, n)
    observers = rng.permutation(slots) if shuffle else slots
    grid = InterestGrid(half_extent=extent, radius=radius, leave_margin=leave_margin,
                        cell_size=cell_size, capacity=n)
    step_t, update_t, pairs, examined, unfiltered = [], [], [], [], []
    for it in range(iters + 2):
        if it % 20 == 0:  # new random intents now and then
            world.set_intents(slots, rng.uniform(-1, 1, (n, 2)), rng.uniform(0, 6.28, n),
                              rng.integers(0, 4, n), rng.random(n) < 0.05)
        t0 = time.perf_counter()
        world.step(DT)
        t1 = time.perf_counter()
        vis = grid.update(world.pos, world.alive, observers, generation=world.generation)
        t2 = time.perf_counter()
        if it >= 2:  # warm-up excluded
            step_t.append(t1 - t0)
            update_t.append(t2 - t1)
            pairs.append(vis.total)
            examined.append(grid.last_candidates_examined)
            unfiltered.append(getattr(grid, "last_unfiltered_observers", 0))
    median = statistics.median(update_t)
    mean_pairs = statistics.mean(pairs)
    return {
        "entities": n,
        "observers": n,
        "iters": iters,
        "step_us_median": statistics.median(step_t) * 1e6,
        "step_us_min": min(step_t) * 1e6,
        "update_ms_median": median * 1e3,
        "update_ms_min": min(update_t) * 1e3,
        "ns_per_pair": median * 1e9 / max(mean_pairs, 1),
        "pairs_found": mean_pairs,
        "pairs_per_observer": mean_pairs / n,
        "candidates_examined": statistics.mean(examined),
        "unfiltered_observers": statistics.mean(unfiltered),
        "cell_size": grid.cell_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", nargs="+", choices=sorted(SCENARIOS),
                        default=["crowd", "world"])
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="entity counts (default: per scenario)")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--extent", type=float, default=None, help="grid half extent (m)")
    parser.add_argument("--square", type=float, default=None,
                        help="entities live in ±square m (default: per scenario)")
    parser.add_argument("--radius", type=float, default=None)
    parser.add_argument("--leave-margin", type=float, default=None)
    parser.add_argument("--cell-size", type=float, default=None)
    parser.add_argument("--shuffle", action="store_true",
                        help="pass the observers in a random order instead of by slot")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    header = {**report_header("interest", "tools/bench/interest_bench.py", argv, numpy=np.__version__),
              "scenarios": []}
    for name in args.scenario:
        params = dict(SCENARIOS[name])
        for key in ("extent", "square", "radius", "leave_margin"):
            if getattr(args, key) is not None:
                params[key] = getattr(args, key)
        sizes = args.sizes or params.pop("sizes")
        params.pop("sizes", None)
        results = [bench_size(n, args.iters, params["extent"], params["radius"],
                              params["leave_margin"], args.cell_size, args.seed,
                              square=params["square"], shuffle=args.shuffle) for n in sizes]
        header["scenarios"].append(dict(scenario=name, **params, cell_size=args.cell_size,
                                        shuffle=args.shuffle, results=results))
    if args.json:
        print(json.dumps(header, indent=2))
        return 0
    print("\n".join(header_lines(header)))
    for sc in header["scenarios"]:
        square = sc["extent"] if sc["square"] is None else sc["square"]
        print(f"\n[{sc['scenario']}] radius {sc['radius']} m, leave margin "
              f"{sc['leave_margin']} m, grid ±{sc['extent']} m, entities in ±{square} m, "
              f"every entity observes{' (shuffled)' if sc['shuffle'] else ''}")
        print(f"{'entities':>8} {'step µs':>8} {'update ms':>10} {'(best)':>8} "
              f"{'ns/pair':>8} {'pairs':>9} {'per obs':>8} {'examined':>9} {'unfiltered':>10}")
        for r in sc["results"]:
            print(f"{r['entities']:>8} {r['step_us_median']:>8.0f} "
                  f"{r['update_ms_median']:>10.2f} {r['update_ms_min']:>8.2f} "
                  f"{r['ns_per_pair']:>8.1f} {r['pairs_found']:>9.0f} "
                  f"{r['pairs_per_observer']:>8.1f} {r['candidates_examined']:>9.0f} "
                  f"{r['unfiltered_observers']:>10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
