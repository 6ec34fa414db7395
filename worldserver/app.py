"""Starts and stops the whole server: one trio nursery tree from ``worldserver run`` down.

:func:`serve` builds the simulation and the UDP service, then runs, as children of one nursery,
the datagram receive loop, the fixed-rate tick, the keep-alive/timeout poll and the stats line;
it reports the bound address through ``task_status`` so tests can start it in-process.
:func:`run_server` is the CLI entry: it adds SIGINT/SIGTERM handling, so that Ctrl-C or a
SIGTERM tells every client it is shutting down and exits with code 0.

Must not: contain simulation, protocol or transport logic (those live in their modules).
"""

from __future__ import annotations

import os
import signal
import time

import attrs
import trio

from worldserver.config import Config
from worldserver.gctune import GcMonitor
from worldserver.logs import get_logger
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.tick import TickClock
from worldserver.udp_service import UdpService

log = get_logger("worldserver")
POLL_INTERVAL = 0.25


@attrs.define
class RunningServer:
    """What :func:`serve` hands to ``task_status.started``: handles for tests and tools."""

    udp_address: tuple
    sim: Simulation
    udp: UdpService
    stats: Stats
    gc: GcMonitor
    clock: TickClock | None = None


async def serve(config: Config, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    stats = Stats()
    secret = config.server.secret_bytes or os.urandom(32)
    sim = Simulation(config, stats)
    udp = UdpService(config, sim, stats, secret)
    gcmon = GcMonitor()
    gcmon.install((config.gc.gen0_threshold, config.gc.gen1_threshold, config.gc.gen2_threshold))
    running = RunningServer(udp.transport.address, sim, udp, stats, gcmon)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(udp.transport.receive_loop, udp.handle_datagram)
            nursery.start_soon(_tick_loop, sim, stats, running)
            nursery.start_soon(_poll_loop, udp)
            nursery.start_soon(_stats_loop, config.server.stats_interval, running)
            if config.gc.freeze_after_start:
                GcMonitor.freeze()
            host, port = running.udp_address[:2]
            log.info("listening", udp=f"{host}:{port}", tick_rate=config.sim.tick_rate)
            task_status.started(running)
    finally:
        udp.shutdown(trio.current_time())
        udp.close()
        gcmon.uninstall()
        log.info("stopped", clients_served=stats.get("clients.joined"))


async def _tick_loop(sim: Simulation, stats: Stats, running: RunningServer) -> None:
    clock = TickClock(sim.tick_rate, trio.current_time())
    running.clock = clock
    while True:
        await trio.sleep_until(clock.deadline())
        now = trio.current_time()
        started = time.perf_counter()
        sim.run_tick(now)
        stats.tick_duration.add(time.perf_counter() - started)
        stats.tick_lateness.add(clock.advance(now))


async def _poll_loop(udp: UdpService) -> None:
    while True:
        await trio.sleep(POLL_INTERVAL)
        udp.poll(trio.current_time())


def stats_fields(running: RunningServer, interval: float, previous: dict) -> dict:
    """The numbers of one stats line (also used by benchmarks); updates ``previous``."""
    stats, transport = running.stats, running.udp.transport
    tick_p50, tick_p99 = running.stats.tick_duration.percentiles(50, 99)
    late_p50, late_p99 = running.stats.tick_lateness.percentiles(50, 99)
    drops = {k: v for k, v in stats.counters.items() if k.startswith("drop.")}
    drops.update({f"drop.{k}": v for k, v in running.udp.endpoint.drops.items()})
    fields = dict(
        clients=len(running.sim.sessions),
        entities=running.sim.world.count,
        tick=running.sim.tick,
        tick_ms_p50=round(tick_p50 * 1000, 2),
        tick_ms_p99=round(tick_p99 * 1000, 2),
        late_ms_p50=round(late_p50 * 1000, 2),
        late_ms_p99=round(late_p99 * 1000, 2),
        bytes_in_s=round((transport.bytes_in - previous.get("in", 0)) / interval),
        bytes_out_s=round((transport.bytes_out - previous.get("out", 0)) / interval),
        gc_pause_ms_max=round(max(running.gc.pauses.values(), default=0.0) * 1000, 2),
        ticks_skipped=running.clock.skipped if running.clock else 0,
        drops=drops,
    )
    previous["in"], previous["out"] = transport.bytes_in, transport.bytes_out
    return fields


async def _stats_loop(interval: float, running: RunningServer) -> None:
    previous: dict = {}
    while True:
        await trio.sleep(interval)
        log.info("stats", **stats_fields(running, interval, previous))
        running.stats.tick_duration.clear()
        running.stats.tick_lateness.clear()
        running.gc.pauses.clear()


async def _main(config: Config) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, config)

            async def watch_signals() -> None:
                async for signum in signals:
                    log.info("shutting down", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch_signals)


def run_server(config: Config) -> int:
    """The ``worldserver run`` entry point: serves until SIGINT or SIGTERM; returns 0."""
    trio.run(_main, config)
    return 0
