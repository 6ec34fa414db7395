"""Times one server tick, phase by phase, with N clients in process (no sockets).

Builds a :class:`worldserver.simulation.Simulation` with N clients whose snapshot sinks
discard the parts (acknowledging each at once, like a client on loopback), places them
uniformly over the default world, uniformly over a world scaled with N (fixed density:
``scaled``), in one dense crowd, all in view of each other (``crowd``: 100 x 100 m,
interest radius 150 m), or over the shipped several-room world (``halls``: its walls, timed
as ``collision``), feeds every client a random-walk input each tick, and reports CPU
per tick for each phase: apply inputs, world step, interest, the shared encoder and
delivery. ``--compare`` also times the per-client reference encoder on alternate ticks of
the same run, as a ratio. Several ``--clients`` values give the cost ratio between them.

``--metrics on`` (the default) does in the tick what the server does for ``GET /metrics``
(worldserver/metrics.py): every sink counts its snapshots as the transports do, and the tick
duration and lateness go into windows that keep histogram bucket totals, fed once per tick
as ``app._tick_loop`` does; it also reports the CPU of one scrape's rendering over the
bench's simulation (not in the tick: the HTTP task runs it between ticks). ``--metrics off``
is the tick as it was before metrics: no snapshot counters, windows without bucket totals.

Usage: ``python tools/bench/tick_bench.py [--clients 1000[,2000]] [--scenario
uniform|scaled|dense|crowd|halls] [--ticks 60] [--compare] [--metrics on|off] [--malloc-keep-mib N] [--json]``.
Measures only; asserts nothing.
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
from protocol.snapshot_batch import PairWeights, Snapshot, priority_buckets  # noqa: E402
import worldserver.snapshots as snapshots_module  # noqa: E402
from worldserver.config import load_config  # noqa: E402
from worldserver.gctune import keep_freed_memory  # noqa: E402
from worldserver.simulation import Simulation  # noqa: E402
from worldserver.stats import Samples, Stats  # noqa: E402
from tools.bench.server_load import machine_info  # noqa: E402


class DiscardingSink:
    """Stands in for a client's transport: counts bytes, returns packet numbers."""

    def __init__(self) -> None:
        self.seq = 0
        self.bytes = 0
        self.sent: list[int] = []

    def send_snapshot(self, session, parts, now: float) -> list[int]:
        self.sent = list(range(self.seq + 1, self.seq + 1 + len(parts)))
        self.seq += len(parts)
        self.bytes += sum(map(len, parts))
        return self.sent


class Transport:
    """Stands in for a transport service's counters (``UdpService.snapshots_sent``)."""

    snapshots_sent = 0


class CountingSink(DiscardingSink):
    """A sink that also counts its snapshot on its service, as UdpPeer and StreamPeer do."""

    def __init__(self, service: Transport) -> None:
        super().__init__()
        self.service = service

    def send_snapshot(self, session, parts, now: float) -> list[int]:
        service = self.service
        sent = DiscardingSink.send_snapshot(self, session, parts, now)
        service.snapshots_sent += 1
        return sent


def per_client_encoder(*, tick, state_ids, state_q, history, slots, offsets, baselines, input_acks,
                       self_ids, part_budget, max_parts, weights, max_age, force_age, layout, view_keys=None):
    """encode_many's contract, done one client at a time with the reference (for --compare)."""
    from protocol.snapshot_batch import HeldView

    out = []
    off = offsets.tolist()
    if isinstance(weights, PairWeights):  # the server's table of weights, as one per pair
        weights = weights.pairs(np.repeat(np.arange(len(baselines)), np.diff(offsets)), slots)

    def hist(h):
        return state_q if h == tick else history(h)

    for c in range(len(baselines)):
        a, b = off[c], off[c + 1]
        sl = slots[a:b]
        base = baselines[c]
        ids = state_ids[sl]
        if base is None:
            view, age = None, np.full(b - a, max_age)
        else:
            view = base.values(hist)
            pos = base.ids.searchsorted(ids)
            inb = base.ids.take(pos, mode="clip") == ids
            age = np.where(inb, tick - base.held.take(pos, mode="clip"), max_age)
        enc = encode_snapshot(
            tick=tick, baseline=view, cand_ids=ids, cand_q=state_q[sl], part_budget=part_budget,
            priority=priority_buckets(age, weights[a:b], force_age),
            allowance=max_parts[c] * (part_budget + 13), input_ack=input_acks[c], self_id=self_ids[c],
            layout=layout,
        )
        held = np.full(len(enc.view), tick, dtype=np.int64)
        out.append(Snapshot(enc.parts, HeldView(tick, enc.view.ids, held, tick), enc.complete,
                            int(enc.sent.sum()), len(enc.view)))
    return out


SCENARIOS = ("uniform", "scaled", "dense", "crowd", "halls")


def build(n: int, scenario: str, seed: int, metrics: bool = True) -> tuple[Simulation, list[DiscardingSink]]:
    overrides = {"sim.spawn_clearance": "0.5", "sim.max_entities": str(max(4096, n)),
                 "net.max_clients": str(max(2000, n)), "udp.host": "127.0.0.1", "udp.port": "0",
                 "worlds.hosted": "open"}  # the open square (halls below: the shipped several-room world)
    if scenario == "crowd":
        overrides.update({"sim.half_extent": "50", "interest.radius": "150"})
    elif scenario == "scaled":  # the default world's density at 1000 clients
        overrides["sim.half_extent"] = str(round(110.0 * (n / 1000) ** 0.5, 2))
    elif scenario == "halls":  # the shipped several-room gallery: walls and collision
        overrides["worlds.hosted"] = "halls"
    config = load_config(path=None, env={}, overrides=overrides)
    stats = Stats()
    if not metrics:  # the windows as they were: no histogram bucket totals
        stats.tick_duration, stats.tick_lateness = Samples(bounds=()), Samples(bounds=())
    sim = Simulation(config, stats, rng=np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    he = config.sim.half_extent - 5
    sinks = []
    transport = Transport()
    for _ in range(n):
        sink = CountingSink(transport) if metrics else DiscardingSink()
        session = sim.join(sink, 0.0)
        sinks.append(sink)
        if scenario == "dense":
            r, a = 36.0 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            sim.world.pos[session.slot, [0, 2]] = (r * np.cos(a), r * np.sin(a))
        elif scenario == "halls":  # anywhere on the floor clear of the walls
            walls = sim.world.walls
            while True:
                x, z = rng.uniform(walls.lo, walls.hi)
                if walls.clear([x], [z])[0]:
                    break
            sim.world.pos[session.slot, [0, 2]] = (x, z)
        else:
            sim.world.pos[session.slot, [0, 2]] = rng.uniform(-he, he, 2)
    return sim, sinks


def scrape_ms(sim: Simulation, repeat: int = 20) -> float:
    """CPU milliseconds of rendering one GET /metrics over ``sim`` (real services, no traffic)."""
    from worldserver.app import RunningServer
    from worldserver.gctune import GcMonitor
    from worldserver.hosting import as_host
    from worldserver.identity import Identities
    from worldserver.metrics import ServerMetrics
    from worldserver.stream_service import StreamService
    from worldserver.udp_service import UdpService

    config, stats, identities = sim.config, sim.stats, Identities()
    udp = UdpService(config, sim, stats, b"\0" * 32, identities)
    try:
        running = RunningServer(udp.transport.address, sim, udp, stats, GcMonitor(),
                                StreamService("ws", config, sim, stats, identities),
                                StreamService("rtc", config, sim, stats, identities), identities)
        running.worlds = as_host(sim)
        metrics = ServerMetrics(running)
        metrics.render()
        started = time.process_time()
        for _ in range(repeat):
            metrics.render()
        return 1000 * (time.process_time() - started) / repeat
    finally:
        udp.close()


def run(n: int, scenario: str, ticks: int, warmup: int, compare: bool, seed: int, metrics: bool = True) -> dict:
    sim, sinks = build(n, scenario, seed, metrics)
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

    shared_encoder = snapshots_module.encode_many
    sim.apply_inputs = timed("apply inputs", sim.apply_inputs)
    sim.world.step = timed("world step", sim.world.step)
    sim.interest.update = timed("interest", sim.interest.update)
    if sim.world.walls is not None:  # part of "world step"
        sim.world.walls.move = timed("collision (in world step)", sim.world.walls.move)
    timed_shared = timed("encode (shared)", shared_encoder)
    timed_single = timed("encode (per client)", per_client_encoder)
    for sink in sinks:
        sink.send_snapshot = timed("deliver", sink.send_snapshot)
    directions = rng.uniform(0, 2 * np.pi, n)
    totals = {"shared": 0.0, "single": 0.0}
    counted = {"shared": 0, "single": 0}
    try:
        for t in range(warmup + ticks):
            now = t / sim.tick_rate
            for i, session in enumerate(sim.sessions):
                if rng.random() < 0.03:
                    directions[i] = rng.uniform(0, 2 * np.pi)
                inp = Input(t + 1, int(127 * np.cos(directions[i])), int(127 * np.sin(directions[i])), 0, 1, 0)
                session.take_inputs([inp], now, 1000.0, 100, sim.stats)
                if sinks[i].sent:
                    session.on_acked(sinks[i].sent)
            mode = "single" if compare and t % 2 == 0 else "shared"
            snapshots_module.encode_many = timed_single if mode == "single" else timed_shared
            if t == warmup:
                phases.clear()
            started = time.process_time()
            wall = time.perf_counter()
            sim.run_tick(now)
            sim.stats.tick_duration.add(time.perf_counter() - wall)  # as app._tick_loop does
            sim.stats.tick_lateness.add(0.0)
            if t >= warmup:
                totals[mode] += time.process_time() - started
                counted[mode] += 1
    finally:
        snapshots_module.encode_many = shared_encoder
    measured = counted["shared"] + counted["single"]
    stats = sim.stats.counters
    result = {
        "clients": n,
        "scenario": scenario,
        "metrics": metrics,
        "ticks": measured,
        "tick_ms": round(1000 * totals["shared"] / max(1, counted["shared"]), 2),
        "phases_ms": {k: round(1000 * v / measured, 2) for k, v in sorted(phases.items())},
        "bytes_per_client_tick": round(sum(s.bytes for s in sinks) / n / (warmup + ticks), 1),
        "refreshed_share": round(stats.get("snapshot.entities_refreshed", 0) / max(1, stats.get("snapshot.entities_visible", 0)), 3),
        "counters": dict(stats),
    }
    vis = sim.interest.update(sim.world.pos, sim.world.alive, np.array([s.slot for s in sim.sessions]))
    result["mean_in_view"] = round(len(vis.slots) / n, 1)
    if metrics:
        result["scrape_ms"] = round(scrape_ms(sim), 2)
    if compare:
        result["tick_ms_per_client_encoder"] = round(1000 * totals["single"] / max(1, counted["single"]), 2)
        result["shared_speedup"] = round(result["tick_ms_per_client_encoder"] / max(result["tick_ms"], 1e-9), 2)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1000", help="one count or several, comma-separated")
    parser.add_argument("--scenario", choices=SCENARIOS, default="uniform")
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--compare", action="store_true", help="also time the per-client encoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics", choices=("on", "off"), default="on",
                        help="what GET /metrics adds to the tick (on, as the server runs) or not (off)")
    parser.add_argument("--malloc-keep-mib", type=int, default=None,
                        help="freed memory the C heap keeps, as the server's gc.malloc_keep_mib "
                             "(default: the server's default; 0: malloc's defaults)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    keep = load_config(path=None, env={}).gc.malloc_keep_mib if args.malloc_keep_mib is None else args.malloc_keep_mib
    keep_freed_memory(keep)  # as worldserver/app.py does at start
    counts = [int(c) for c in str(args.clients).split(",")]
    results = [run(n, args.scenario, args.ticks, args.warmup, args.compare, args.seed, args.metrics == "on")
               for n in counts]
    if args.json:
        print(json.dumps({"machine": machine_info(), "command": " ".join(sys.argv), "malloc_keep_mib": keep,
                          "results": results}))
        return 0
    print(f"# {' '.join(sys.argv)}  ({time.strftime('%Y-%m-%d')}; {machine_info()}; malloc_keep_mib {keep})")
    for result in results:
        print(f"{result['clients']} clients, {result['scenario']}, {result['mean_in_view']} entities in view on average")
        print(f"tick: {result['tick_ms']} ms CPU (mean of {result['ticks']} ticks; phases are per measured tick; "
              f"metrics {'on' if result['metrics'] else 'off'})")
        for name, ms in result["phases_ms"].items():
            print(f"  {name:22s} {ms:8.2f} ms")
        print(f"  {result['bytes_per_client_tick']} bytes per client per tick; refreshed share {result['refreshed_share']}")
        if "scrape_ms" in result:
            print(f"one GET /metrics rendering: {result['scrape_ms']} ms CPU (between ticks, not in them)")
        if args.compare:
            print(f"per-client encoder instead: {result['tick_ms_per_client_encoder']} ms per tick "
                  f"(shared is {result['shared_speedup']}x faster)")
    for a, b in zip(results, results[1:]):
        print(f"{a['clients']} -> {b['clients']}: tick cost x{b['tick_ms'] / max(a['tick_ms'], 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
