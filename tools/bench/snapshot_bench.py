"""Benchmark of snapshot encoding for a crowd: the per-client reference against the shared encoder.

Job: N entities that all move one small step per tick (a random walk at 5 m/s, 25 cm per
20 Hz tick, 1 cm quantization), C clients that all see all N (a hall), every client's
baseline one tick old and exact (everything acknowledged). Per tick, time
``protocol.snapshot.encode_snapshot`` called once per client and
``protocol.snapshot_batch.encode_many`` called once for all C clients, and report CPU per
client (the median tick, ``time.process_time``) and the ratio. Both produce the same parts;
the first measured tick checks it byte for byte. Two scenarios:

* ``same``: every client sees the same N entities (it is one of them) against the same
  baseline tick; encode_many encodes one client and copies its parts to the others with
  their own ``input_ack`` and ``self_id``.
* ``distinct``: every client sees everyone but itself, so no two views are equal; encode_many
  builds one record table and gathers every client's parts from it.

``--allowance`` (bytes of packets per client per tick, e.g. 3276 for the server's default
65,536 B/s at 20 Hz) limits the parts a client may receive; then both encoders select by the
same priorities. The date, the command and the machine are printed first (and put in the JSON).
Must not: open sockets, start a server, or change anything on disk.

Usage: ``python tools/bench/snapshot_bench.py [--sizes 200 400 1000] [--clients C]
[--scenario same distinct] [--ticks 10] [--budget 1179] [--allowance BYTES] [--json]``
(``--clients`` defaults to N: C = N).
"""

from __future__ import annotations

import argparse
import json
import math
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

from protocol.packets import HEADER_SIZE  # noqa: E402
from protocol.quantize import Quantizer  # noqa: E402
from protocol.snapshot import View, encode_snapshot, max_parts_for  # noqa: E402
from protocol.snapshot_batch import HeldView, encode_many, priority_buckets  # noqa: E402
from protocol.tokens import TAG_SIZE  # noqa: E402
from worldtools.bench.server_load import header_lines, report_header  # noqa: E402

QUANTIZER = Quantizer((-300.0, 0.0, -300.0), (300.0, 50.0, 300.0), 0.01)
TICK_RATE = 20
SPEED = 5.0  # m/s: 25 cm per tick
# The server's default: udp.datagram_budget (1200) minus the packet header and the session tag,
# as worldserver/snapshots.py computes it (1,179 bytes since protocol 2; 1,187 before the tag).
DEFAULT_BUDGET = 1200 - HEADER_SIZE - TAG_SIZE
MAX_AGE = 30  # the age of an added entity in the priority (the server uses its ring)
FORCE_AGE = 28


class Walkers:
    """N entities in slots 0..N-1 (generation 0) walking in a 100 x 100 m hall."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n, self.rng = n, rng
        self.pos = rng.uniform((-50, 0, -50), (50, 0, 50), (n, 3))
        self.heading = rng.uniform(0, 2 * math.pi, n)
        self.ids = (np.arange(n, dtype=np.uint32) << 16).astype(np.uint32)

    def step(self) -> np.ndarray:
        """One tick: everyone moves 25 cm and turns a little; the quantized (n, 5) state."""
        self.heading += self.rng.normal(0, 0.2, self.n)
        d = SPEED / TICK_RATE * np.stack([np.cos(self.heading), np.zeros(self.n), np.sin(self.heading)], 1)
        self.pos += d
        out = (np.abs(self.pos[:, [0, 2]]) > 50).any(axis=1)
        self.pos[out] -= 2 * d[out]  # step back inside and turn around
        self.heading[out] += math.pi
        return QUANTIZER.quantize_state(self.pos, self.heading, np.full(self.n, 2))


def visible_slots(n: int, c: int, scenario: str) -> list[np.ndarray]:
    everyone = np.arange(n, dtype=np.int64)
    if scenario == "same":
        return [everyone] * c
    return [np.delete(everyone, i % n) for i in range(c)]  # everyone but oneself


def run(n: int, c: int, scenario: str, ticks: int, budget: int, allowance: int | None, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    walkers = Walkers(n, rng)
    vis = visible_slots(n, c, scenario)
    offsets = np.concatenate(([0], np.cumsum([len(v) for v in vis]))).astype(np.int64)
    slots = np.concatenate(vis)
    weights = rng.uniform(0.5, 4.0, len(slots))  # per pair (nearer: larger)
    max_parts = max_parts_for(allowance, budget)
    self_ids = [int(walkers.ids[i % n]) for i in range(c)]
    prev = walkers.step()
    batch_t, ref_t, parts_n, nbytes = [], [], [], []
    for t in range(1, ticks + 2):  # the first tick warms up and checks
        q = walkers.step()
        history = {t - 1: prev, t: q}
        acks = [t - 1] * c
        baselines = [HeldView(t - 1, walkers.ids[v], np.full(len(v), t - 1, np.int64), t - 1) for v in vis]

        start = time.process_time()
        snaps = encode_many(
            tick=t, state_ids=walkers.ids, state_q=q, history=history.__getitem__, slots=slots,
            offsets=offsets, baselines=baselines, input_acks=acks, self_ids=self_ids,
            part_budget=budget, max_parts=[max_parts] * c, weights=weights, max_age=MAX_AGE,
            force_age=FORCE_AGE, layout=QUANTIZER,
        )  # fmt: skip
        batch = time.process_time() - start

        start = time.process_time()
        ref = []
        for k, v in enumerate(vis):
            priority = None
            if allowance is not None:  # the per-client path computes its priorities too
                priority = priority_buckets(np.ones(len(v)), weights[offsets[k] : offsets[k + 1]], FORCE_AGE)
            ref.append(encode_snapshot(
                tick=t, baseline=View(t - 1, walkers.ids[v], prev[v]), cand_ids=walkers.ids[v],
                cand_q=q[v], priority=priority, part_budget=budget, allowance=allowance,
                input_ack=acks[k], self_id=self_ids[k], layout=QUANTIZER,
            ))  # fmt: skip
        single = time.process_time() - start

        prev = q
        if t == 1:
            for k in range(c):
                if snaps[k].parts != ref[k].parts:
                    raise AssertionError(f"client {k}: encode_many and encode_snapshot differ")
            continue
        batch_t.append(batch)
        ref_t.append(single)
        parts_n.append(sum(len(s.parts) for s in snaps) / c)
        nbytes.append(sum(sum(map(len, s.parts)) for s in snaps) / c)
    batch_us = statistics.median(batch_t) / c * 1e6
    ref_us = statistics.median(ref_t) / c * 1e6
    return {
        "scenario": scenario,
        "entities": n,
        "clients": c,
        "budget": budget,
        "allowance": allowance,
        "ticks": ticks,
        "encode_snapshot_us_per_client": ref_us,
        "encode_many_us_per_client": batch_us,
        "ratio": ref_us / batch_us if batch_us else math.inf,
        "encode_many_ms_per_tick": statistics.median(batch_t) * 1e3,
        "parts_per_client": statistics.mean(parts_n),
        "bytes_per_client": statistics.mean(nbytes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 400, 1000], help="entity counts N")
    parser.add_argument("--clients", type=int, default=None, help="clients C (default: N)")
    parser.add_argument("--scenario", nargs="+", choices=["same", "distinct"], default=["same", "distinct"])
    parser.add_argument("--ticks", type=int, default=10, help="measured ticks (the median is kept)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                        help="part budget, bytes (default: the server's, 1200 - 13 header - 8 tag)")
    parser.add_argument("--allowance", type=int, default=None,
                        help="bytes of packets per client per tick (default: none, up to 255 parts)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    report = {**report_header("snapshot", "tools/bench/snapshot_bench.py", argv, numpy=np.__version__),
              "results": []}
    for scenario in args.scenario:
        for n in args.sizes:
            c = n if args.clients is None else args.clients
            report["results"].append(run(n, c, scenario, args.ticks, args.budget, args.allowance, args.seed))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("\n".join(header_lines(report)))
    print(f"\neveryone in view, everyone moving {SPEED / TICK_RATE * 100:g} cm per tick, baselines one tick old; "
          f"part budget {args.budget} B, allowance "
          f"{'none' if args.allowance is None else f'{args.allowance} B per tick'}; CPU, median of {args.ticks} ticks")
    print(f"{'scenario':>8} {'N':>5} {'C':>5} {'per client µs':>14} {'shared µs':>10} {'ratio':>6} "
          f"{'shared ms/tick':>15} {'parts':>6} {'bytes':>6}")  # fmt: skip
    for r in report["results"]:
        print(f"{r['scenario']:>8} {r['entities']:>5} {r['clients']:>5} "
              f"{r['encode_snapshot_us_per_client']:>14.1f} {r['encode_many_us_per_client']:>10.1f} "
              f"{r['ratio']:>6.1f} {r['encode_many_ms_per_tick']:>15.2f} "
              f"{r['parts_per_client']:>6.1f} {r['bytes_per_client']:>6.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
