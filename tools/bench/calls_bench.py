"""Benchmark of call group formation: ``GroupFormer.update`` (worldserver/calls/groups.py).

N bots in a world (default ``halls``, with its zones: the ``stage`` call zone among them;
``--world open``: the open square of ±110 m, where a crowd is sparse)
random-walk at walking speed against the walls (``WallSet.move``: they stay in the rooms and
go through the doorways), starting at random clear points of the floor. Groups are recomputed
every ``--interval`` seconds of simulated time (the server's default: every 2 ticks at 20 Hz,
0.1 s), and only ``update`` is timed, never the walking. Reported per N: p50, p99 and the
worst wall time per update in µs, the p50 of its CPU time (the thread's: on a shared machine
the wall time also holds the waits for a core), the minor page faults per update (on a VM
each costs microseconds: ``MALLOC_TOP_PAD_=16777216`` in the environment keeps freed heap
for reuse), and on average the links, proximity groups, avatars in a group and changes per
update. The date, the command and the machine are printed first (and put in
the JSON). Target (docs/calls.md): under 0.5 ms a tick at 1,000 avatars.

    python tools/bench/calls_bench.py [--world halls|gallery|open] [--sizes 1000 2000] [--updates 600]
        [--speed 1.4] [--interval 0.1] [--radius 2.5] [--leave-radius 3.5] [--seed 1] [--json]

This tool must not be imported by the server; it only reads the modules it measures and
writes its report to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import pathlib
import resource
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

try:
    import worldtools  # noqa: F401  (installed)
except ImportError:  # run from a checkout: tools/bench is on sys.path
    import _checkout  # noqa: F401

from worldserver.calls.groups import GroupFormer  # noqa: E402
from worldserver.worldfile import load_named  # noqa: E402
from worldtools.bench.server_load import header_lines, report_header  # noqa: E402

WARMUP = 20  # updates not timed: the first ones form every group at once


def clear_points(spec, walls, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random points of the floor where an avatar touches no wall."""
    xs, zs = [], []
    while sum(map(len, xs)) < n:
        x = rng.uniform(spec.floor_min[0], spec.floor_max[0], 4 * n)
        z = rng.uniform(spec.floor_min[1], spec.floor_max[1], 4 * n)
        ok = walls.clear(x, z)
        xs.append(x[ok])
        zs.append(z[ok])
    return np.concatenate(xs)[:n], np.concatenate(zs)[:n]


def bench_size(spec, n: int, updates: int, speed: float, interval: float, radius: float,
               leave_radius: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    walls = spec.wall_set()
    x, z = clear_points(spec, walls, n, rng)
    ids = rng.choice(1 << 31, size=n, replace=False).astype(np.int64)  # entity ids, not in order
    heading = rng.uniform(0, 2 * math.pi, n)
    former = GroupFormer(radius, leave_radius, spec.zones)
    times, cpu, faults, links, groups, grouped, changes = [], [], [], [], [], [], []
    step = speed * interval
    gc.collect()
    for it in range(WARMUP + updates):
        heading += rng.normal(0, 0.35, n)  # a wandering walk
        x, z = walls.move(x, z, step * np.cos(heading), step * np.sin(heading))
        xy = np.c_[x, z].astype(np.float32)
        f0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        c0 = time.thread_time()
        t0 = time.perf_counter()
        out = former.update(ids, xy)
        t1 = time.perf_counter()
        c1 = time.thread_time()
        f1 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        if it >= WARMUP:
            times.append(t1 - t0)
            cpu.append(c1 - c0)
            faults.append(f1 - f0)
            links.append(former.link_count)
            now = former.groups()
            groups.append(sum(1 for g in now if g.startswith("p")))
            grouped.append(sum(len(m) for m in now.values()))
            changes.append(len(out))
    us = np.array(times) * 1e6
    return {
        "avatars": n,
        "updates": updates,
        "update_us_p50": float(np.percentile(us, 50)),
        "update_us_p99": float(np.percentile(us, 99)),
        "update_us_max": float(us.max()),
        "cpu_us_p50": float(np.percentile(cpu, 50) * 1e6),
        "page_faults_per_update": float(np.mean(faults)),
        "links": float(np.mean(links)),
        "proximity_groups": float(np.mean(groups)),
        "avatars_in_a_group": float(np.mean(grouped)),
        "changes_per_update": float(np.mean(changes)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="halls",
                        help="a built-in world, or open (the open square of ±110 m, no zones); default: halls")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--updates", type=int, default=600, help="timed updates per size")
    parser.add_argument("--speed", type=float, default=1.4, help="walking speed, m/s")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between updates")
    parser.add_argument("--radius", type=float, default=2.5)
    parser.add_argument("--leave-radius", type=float, default=3.5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    spec = load_named(args.world, 110.0)
    env_pad = os.environ.get("MALLOC_TOP_PAD_", "")
    report = {
        **report_header("calls", "tools/bench/calls_bench.py", argv, numpy=np.__version__),
        "malloc_top_pad": env_pad,
        "world": args.world,
        "call_zones": [z.id for z in spec.zones if z.call],
        "speed": args.speed, "interval": args.interval, "radius": args.radius,
        "leave_radius": args.leave_radius,
        "results": [bench_size(spec, n, args.updates, args.speed, args.interval, args.radius,
                               args.leave_radius, args.seed) for n in args.sizes],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("\n".join(header_lines(report, f" (MALLOC_TOP_PAD_={env_pad})" if env_pad else "")))
    print(f"\n[{args.world}] call zones {', '.join(report['call_zones']) or 'none'}; radius {args.radius} m, "
          f"leave radius {args.leave_radius} m; walking {args.speed} m/s, an update every {args.interval} s")
    print(f"{'avatars':>8} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>8} {'cpu p50':>8} {'faults':>7} "
          f"{'links':>7} {'groups':>7} {'in one':>7} {'changes':>8}")
    for r in report["results"]:
        print(f"{r['avatars']:>8} {r['update_us_p50']:>8.0f} {r['update_us_p99']:>8.0f} {r['update_us_max']:>8.0f} "
              f"{r['cpu_us_p50']:>8.0f} {r['page_faults_per_update']:>7.1f} "
              f"{r['links']:>7.0f} {r['proximity_groups']:>7.1f} {r['avatars_in_a_group']:>7.0f} "
              f"{r['changes_per_update']:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
