"""Times one server tick, phase by phase, with N clients in process (no sockets).

Builds a :class:`worldserver.simulation.Simulation` with N clients whose snapshot senders
discard the payloads (acknowledging each at once, like a client on loopback), places them
either uniformly over the world or in one dense crowd, feeds every client a random-walk input
each tick, and reports CPU per tick for each phase: apply inputs, world step, interest,
quantize, batched snapshot encoding, the priority path and packet sending. ``--compare``
also times the per-client encoder on alternate ticks of the same run, as a ratio.

Usage: ``python tools/bench/tick_bench.py [--clients 1000] [--scenario uniform|dense]
[--ticks 60] [--compare] [--json]``. Measures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

if __package__ in (None, ""):  # run as a script from a checkout: make the packages importable
    _root = pathlib.Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(_root), str(_root / "clients" / "python")]

from protocol.messages import Input  # noqa: E402
from protocol.snapshot import encode_snapshot  # noqa: E402
import worldserver.simulation as simulation_module  # noqa: E402
from worldserver.config import load_config  # noqa: E402
from worldserver.simulation import Simulation  # noqa: E402
from worldserver.stats import Stats  # noqa: E402


class DiscardingSender:
    """Stands in for a client's transport: counts bytes, returns packet numbers."""

    def __init__(self) -> None:
        self.seq = 0
        self.bytes = 0

    def send_snapshot(self, session, payload: bytes, now: float) -> int:
        self.seq += 1
        self.bytes += len(payload)
        return self.seq


def per_client_encoder(*, tick, offsets, cand_ids, cand_q, baselines, input_acks, self_ids, budget, layout):
    """The batch encoder's contract, done one client at a time (for --compare)."""
    payloads, views = [], []
    off = offsets.tolist()
    for c in range(len(baselines)):
        a, b = off[c], off[c + 1]
        payload, view, sent = encode_snapshot(
            tick=tick, baseline=baselines[c], cand_ids=cand_ids[a:b], cand_q=cand_q[a:b], budget=budget,
            input_ack=input_acks[c], self_id=self_ids[c], layout=layout,
        )
        if not sent.all() or len(view) != b - a:
            payload = view = None
        payloads.append(payload)
        views.append(view)
    return payloads, views


def build(n: int, scenario: str, seed: int) -> tuple[Simulation, list[DiscardingSender]]:
    config = load_config(path=None, env={}, overrides={"sim.spawn_clearance": "0.5", "sim.max_entities": str(max(4096, n))})
    sim = Simulation(config, Stats(), rng=np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    senders = []
    for _ in range(n):
        sender = DiscardingSender()
        session = sim.join(sender, 0.0)
        senders.append(sender)
        if scenario == "dense":
            r, a = 36.0 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            sim.world.pos[session.slot, [0, 2]] = (r * np.cos(a), r * np.sin(a))
        else:
            sim.world.pos[session.slot, [0, 2]] = rng.uniform(-105, 105, 2)
    return sim, senders


def run(n: int, scenario: str, ticks: int, warmup: int, compare: bool, seed: int) -> dict:
    sim, senders = build(n, scenario, seed)
    rng = np.random.default_rng(seed + 2)
    phases: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            started = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.process_time() - started
        return wrapper

    batch_encoder = simulation_module.encode_batch
    sim.apply_inputs = timed("apply inputs", sim.apply_inputs)
    sim.world.step = timed("world step", sim.world.step)
    sim.interest.update = timed("interest", sim.interest.update)
    sim._send_prioritized = timed("priority path", sim._send_prioritized)
    sim._send = timed("send packets", sim._send)
    timed_batch = timed("batched encoding", batch_encoder)
    timed_single = timed("per-client encoding", per_client_encoder)
    directions = rng.uniform(0, 2 * np.pi, n)
    totals = {"batch": 0.0, "single": 0.0}
    counted = {"batch": 0, "single": 0}
    try:
        for t in range(warmup + ticks):
            now = t / sim.tick_rate
            for i, session in enumerate(sim.sessions):
                if rng.random() < 0.03:
                    directions[i] = rng.uniform(0, 2 * np.pi)
                inp = Input(t + 1, int(127 * np.cos(directions[i])), int(127 * np.sin(directions[i])), 0, 1, 0)
                session.take_inputs([inp], now, 1000.0, 100, sim.stats)
                if senders[i].seq:
                    session.on_acked([senders[i].seq])
            mode = "single" if compare and t % 2 == 0 else "batch"
            simulation_module.encode_batch = timed_single if mode == "single" else timed_batch
            if t == warmup:
                phases.clear()
            started = time.process_time()
            sim.run_tick(now)
            if t >= warmup:
                totals[mode] += time.process_time() - started
                counted[mode] += 1
    finally:
        simulation_module.encode_batch = batch_encoder
    measured = counted["batch"] + counted["single"]
    result = {
        "clients": n,
        "scenario": scenario,
        "ticks": measured,
        "tick_ms": round(1000 * totals["batch"] / max(1, counted["batch"]), 2),
        "phases_ms": {k: round(1000 * v / measured, 2) for k, v in sorted(phases.items())},
        "counters": dict(sim.stats.counters),
    }
    vis = sim.interest.update(sim.world.pos, sim.world.alive, np.array([s.slot for s in sim.sessions]))
    result["mean_in_view"] = round(len(vis.slots) / n, 1)
    if compare:
        result["tick_ms_per_client_encoder"] = round(1000 * totals["single"] / max(1, counted["single"]), 2)
        result["batch_speedup"] = round(result["tick_ms_per_client_encoder"] / max(result["tick_ms"], 1e-9), 2)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--scenario", choices=("uniform", "dense"), default="uniform")
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--compare", action="store_true", help="also time the per-client encoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.clients, args.scenario, args.ticks, args.warmup, args.compare, args.seed)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['clients']} clients, {result['scenario']}, {result['mean_in_view']} entities in view on average")
    print(f"tick: {result['tick_ms']} ms CPU (mean of {result['ticks']} ticks; phases are per measured tick)")
    for name, ms in result["phases_ms"].items():
        print(f"  {name:22s} {ms:8.2f} ms")
    if args.compare:
        print(f"per-client encoder instead: {result['tick_ms_per_client_encoder']} ms per tick "
              f"(batched is {result['batch_speedup']}x faster)")
    print(f"counters: {result['counters']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
