"""Benchmark of delta snapshot encoding on a random-walk world (``protocol.snapshot``).

Job: for several numbers of entities in one client's view, simulate entities walking at
5 m/s (25 cm per 20 Hz tick, 1 cm quantization, a new random heading every 1-3 s), encode the
client's snapshot every tick against a baseline 1-2 ticks old (as acks arrive), and report
bytes per visible moving entity per snapshot, the fraction of entities updated per snapshot
and the encode CPU time per client-tick (``time.process_time`` over replayed encode calls).
Must not: open sockets, start a server, or change anything on disk.

Usage: ``python tools/bench/snapshot_bench.py [--entities 50,200,1000] [--budget 1187]
[--ticks 400] [--repeat 5] [--json]``
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from protocol.quantize import Quantizer  # noqa: E402
from protocol.snapshot import View, encode_snapshot  # noqa: E402

QUANTIZER = Quantizer((-300.0, 0.0, -300.0), (300.0, 50.0, 300.0), 0.01)
TICK_RATE = 20
SPEED = 5.0  # m/s: 25 cm per tick
WARMUP = 10  # ticks excluded from the byte counts (the first, full, snapshots)


def walk(n: int, ticks: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Quantized state (n, 5) of n walking entities for each tick."""
    dt = 1.0 / TICK_RATE
    pos = rng.uniform((-250, 0, -250), (250, 0, 250), (n, 3))
    heading = rng.uniform(0, 2 * math.pi, n)
    turn_at = rng.integers(TICK_RATE, 3 * TICK_RATE + 1, n)
    anim = np.full(n, 2)  # run
    out = []
    for t in range(ticks):
        turn = turn_at <= t
        k = int(turn.sum())
        heading[turn] = rng.uniform(0, 2 * math.pi, k)
        turn_at[turn] = t + rng.integers(TICK_RATE, 3 * TICK_RATE + 1, k)
        pos = pos + SPEED * dt * np.stack([np.cos(heading), np.zeros(n), np.sin(heading)], 1)
        heading[(np.abs(pos[:, [0, 2]]) > 290).any(axis=1)] += math.pi  # turn back at edges
        out.append(QUANTIZER.quantize_state(pos, heading, anim))
    return out


# The server's default: udp.datagram_budget (1200) minus the 13-byte packet header.
DEFAULT_BUDGET = 1200 - 13


def run(n: int, ticks: int, budget: int, repeat: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    states = walk(n, ticks, rng)
    ids = np.sort(rng.choice(2**32, n, replace=False)).astype(np.uint32)
    self_id = int(ids[0])
    views: dict[int, View] = {}
    priority = np.zeros(n)
    calls = []
    total_bytes = updated = full = 0
    for t, q in enumerate(states):
        lag = int(rng.integers(1, 3))  # the newest acked snapshot is 1-2 ticks old
        baseline = views.get(t - lag)
        args = dict(
            tick=t, baseline=baseline, cand_ids=ids, cand_q=q, priority=priority.copy(),
            budget=budget, input_ack=t, self_id=self_id, layout=QUANTIZER,
        )  # fmt: skip
        payload, view, sent = encode_snapshot(**args)
        calls.append(args)
        views[t] = view
        views.pop(t - 40, None)
        priority += 1.0
        priority[sent] = 0.0
        if t >= WARMUP:
            total_bytes += len(payload)
            updated += int(sent.sum())
            full += baseline is None
    best = math.inf
    for _ in range(repeat):
        start = time.process_time()
        for args in calls:
            encode_snapshot(**args)
        best = min(best, time.process_time() - start)
    measured = ticks - WARMUP
    return {
        "entities": n,
        "budget": budget,
        "bytes_per_entity": total_bytes / (measured * n),
        "bytes_per_snapshot": total_bytes / measured,
        "updated_fraction": updated / (measured * n),
        "encode_us": best / len(calls) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", default="50,200,1000", help="comma-separated view sizes")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                        help="snapshot payload budget, bytes (default: the server's, 1200 - 13 header)")
    parser.add_argument("--ticks", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5, help="timing runs (best is kept)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.entities.split(",") if s]
    results = [run(n, args.ticks, args.budget, args.repeat, args.seed) for n in sizes]
    if args.json:
        print(json.dumps({"snapshot_bench": results}, indent=2))
        return 0
    print(f"random walk, {SPEED:g} m/s at {TICK_RATE} Hz, step {QUANTIZER.step:g} m, "
          f"baseline 1-2 ticks old, budget {args.budget} B")  # fmt: skip
    print(f"{'entities':>8} {'B/entity':>9} {'B/snapshot':>11} {'updated':>8} {'encode µs':>10}")
    for r in results:
        print(
            f"{r['entities']:>8} {r['bytes_per_entity']:>9.2f} {r['bytes_per_snapshot']:>11.0f} "
            f"{r['updated_fraction']:>8.1%} {r['encode_us']:>10.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
