"""Starts and stops the whole server: one trio nursery tree from ``worldserver run`` down.

:func:`serve` builds the simulation and the transports (UDP; WebSocket and WebRTC on the HTTP
port), then runs, as children of one nursery, the datagram receive loop, the fixed-rate tick,
the keep-alive/timeout poll, the stats line and the HTTP server (one tick loop runs every hosted
world, worldserver/hosting.py); it reports the bound
addresses through ``task_status`` so tests can start it in-process. :func:`run_server` is the
CLI entry: it runs trio as a guest on an asyncio loop (for aiortc, see worldclient.aio_bridge) and adds
SIGINT/SIGTERM handling: Ctrl-C tells every client it is shutting down and exits with code
0; a SIGTERM drains first (worldserver/moderation.py: no one new, a notice, up to
``server.drain_grace`` seconds for the players to leave; a second SIGTERM stops at once), as
the admin API's drain does (worldserver/admin_api.py, served under ``/admin/api/``). Under a plain ``trio.run`` (tests) WebRTC is off: aiortc needs asyncio.
Before either starts anything, worldserver/startup.py's ``preflight`` checks ports, TLS files,
folders and the chat database (a :class:`~worldserver.startup.StartupError` naming the
setting), and holds the database's lock until the server stops.

Must not: contain simulation, protocol or transport logic (those live in their modules).
"""

from __future__ import annotations

import os
import signal
import time

import attrs
import trio

from worldclient import aio_bridge
from worldserver.admin_api import AdminApi, admin_token
from worldserver.calls.janus import serve_sfu
from worldserver.calls.service import CallService
from worldserver.chat.fanout import Fanout
from worldserver.chat.service import ChatService
from worldserver.config import Config
from worldserver.gctune import GcMonitor, keep_freed_memory
from worldserver.http_app import build_app
from worldserver.http_server import serve_http
from worldserver.identity import Identities
from worldserver.limits import AddressLimits, raise_open_files_limit
from worldserver.logs import get_logger
from worldserver.metrics import ServerMetrics, drop_counts, transport_bytes
from worldserver.moderation import Drain, Moderation
from worldserver.rtc_dispatch import RtcDispatcher
from worldserver.rtc_signaling import make_authorize
from worldserver.sample_images import ensure_sample_images
from worldserver.hosting import WorldHost
from worldserver.simulation import Simulation
from worldserver.startup import StartupHold, bind_error, preflight, startup_error_in
from worldserver.stats import Stats
from worldserver.stream_service import StreamService
from worldserver.tick import TickClock
from worldserver.udp_service import UdpService

log = get_logger("worldserver")
POLL_INTERVAL = 0.25
# The tick reads up to this many receive batches right before it runs: every input that came
# since the last drain (half a tick at the default coalescing: 500 datagrams at 1,000 clients),
# but not a whole flood's worth.
TICK_DRAIN_BATCHES = 8


@attrs.define
class RunningServer:
    """What :func:`serve` hands to ``task_status.started``: handles for tests and tools."""

    udp_address: tuple
    sim: Simulation
    udp: UdpService
    stats: Stats
    gc: GcMonitor
    ws: StreamService
    rtc_stream: StreamService
    identities: Identities
    http_port: int = 0
    config_freeze: bool = True  # gc.freeze_after_start
    rtc: object = None  # worldserver.rtc.RtcService when WebRTC runs
    clock: TickClock | None = None
    chat: object = None  # worldserver.chat.service.ChatService
    worlds: object = None  # worldserver.hosting.WorldHost: every hosted world (sim is the default)
    hatongsu: object = None  # worldserver.hatongsu.HatongsuService when WebRTC runs with it
    metrics: object = None  # worldserver.metrics.ServerMetrics: GET /metrics
    http_app: object = None  # the ASGI app of the HTTP port
    moderation: object = None  # worldserver.moderation.Moderation: kicks, bans, the drain gate
    drain: object = None  # worldserver.moderation.Drain (its start() stops the server gently)
    admin: object = None  # worldserver.admin_api.AdminApi: /admin/api/
    calls: object = None  # worldserver.calls.service.CallService: proximity calls


async def serve(config: Config, *, task_status=trio.TASK_STATUS_IGNORED, hold: StartupHold | None = None) -> None:
    """Run the server until cancelled. ``hold``: what a :func:`preflight` already done by the
    caller keeps (the chat database's lock); None: check here (StartupError) and hold until the
    server stops."""
    if hold is None:
        with preflight(config) as hold:
            return await serve(config, task_status=task_status, hold=hold)
    stats = Stats()
    secret = config.server.secret_bytes or os.urandom(32)
    identities = Identities()
    worlds = WorldHost(config, stats)  # a Simulation per hosted world
    sim = worlds.default
    raise_open_files_limit()  # sockets are files: the soft limit up to the hard one, before the caps are derived
    limits = AddressLimits(config.limits)  # per-address admission, shared by every transport
    try:
        udp = UdpService(config, worlds, stats, secret, identities, limits)
    except OSError as exc:  # taken since the pre-flight check
        raise bind_error("udp", config.udp.host, config.udp.port, exc) from None
    ws = StreamService("ws", config, worlds, stats, identities)
    rtc_stream = StreamService("rtc", config, worlds, stats, identities)
    ensure_sample_images(config.http.images_dir)
    gcmon = GcMonitor()
    gcmon.install((config.gc.gen0_threshold, config.gc.gen1_threshold, config.gc.gen2_threshold))
    keep_freed_memory(config.gc.malloc_keep_mib)
    running = RunningServer(udp.transport.address, sim, udp, stats, gcmon, ws, rtc_stream, identities)
    running.config_freeze = config.gc.freeze_after_start
    running.worlds = worlds
    moderation = running.moderation = Moderation(identities, worlds, stats, limits)  # kicks, bans, drain
    for service in (udp, ws, rtc_stream):
        service.sessions.moderation = moderation
    chat = running.chat = ChatService.from_config(config, worlds, identities, stats, limits, moderation=moderation)
    calls = running.calls = CallService(config, chat, worlds, stats)  # call.* on the chat socket
    token = admin_token(config)  # server.admin_token, or a random one in <data_dir>/admin.token
    rtc = None
    polled = [udp, ws, rtc_stream]
    try:
        async with trio.open_nursery() as nursery:
            if config.webrtc.enabled and aio_bridge.in_guest_run():
                rtc, dispatcher = _start_rtc(config, sim, stats, identities, rtc_stream, limits)
                running.rtc = rtc
                running.hatongsu = dispatcher.hatongsu
                if dispatcher.hatongsu is not None:
                    dispatcher.hatongsu.moderation = moderation
                polled.append(dispatcher)
                await nursery.start(rtc.run)
            elif config.webrtc.enabled:
                log.warning("webrtc off: not running on an asyncio host loop (use worldserver run)")
            await nursery.start(chat.run)
            calls.backend = await nursery.start(serve_sfu, config, stats)  # None with calls.sfu = "none"
            await nursery.start(calls.run)
            fanout = Fanout(stats)
            await nursery.start(fanout.run)
            drain = running.drain = Drain(moderation, nursery.cancel_scope.cancel)  # stop: serve returns
            await nursery.start(drain.run)
            admin = running.admin = AdminApi(config, running, token=token, guard=chat.admin_failures,
                                             moderation=moderation, drain=drain)
            await nursery.start(admin.run)
            app = build_app(config=config, sim=sim, worlds=worlds, identities=identities, rtc=rtc, ws_movement=ws,
                            chat=chat, chat_fanout=fanout, limits=limits, connect_tokens=udp.admission,
                            admin=admin)
            running.metrics = app.state.metrics = ServerMetrics(running, config.server.metrics_public)
            running.http_app = app
            running.http_port = await nursery.start(serve_http, config, app)
            worlds.start(trio.current_time())
            running.clock = worlds.clocks[worlds.default_id]
            udp.transport.origin = running.clock.start  # coalesced drains share the tick's wakeups
            nursery.start_soon(udp.transport.receive_loop, udp.handle_datagram)
            nursery.start_soon(_tick_loop, worlds, stats, running)
            nursery.start_soon(_poll_loop, polled)
            nursery.start_soon(_stats_loop, config.server.stats_interval, running)
            if config.gc.freeze_after_start:
                GcMonitor.freeze()
            host, port = running.udp_address[:2]
            log.info("listening", udp=f"{host}:{port}", tick_rate=config.sim.tick_rate, worlds=",".join(worlds.sims))
            log.info("http listening", http=f"{config.http.host}:{running.http_port}", webrtc=rtc is not None)
            task_status.started(running)
    finally:
        now = trio.current_time()
        for service in (udp, ws, rtc_stream):
            service.shutdown(now)
        if rtc is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await rtc.aclose()
        udp.close()
        gcmon.uninstall()
        log.info("stopped", clients_served=stats.get("clients.joined"))


def _start_rtc(config: Config, sim: Simulation, stats: Stats, identities: Identities, stream: StreamService,
               limits: AddressLimits):
    """The WebRTC service, with geckos channels dispatched to the native or Hatongsu service."""
    from worldserver.hatongsu import HatongsuService  # imported here: only used with WebRTC
    from worldserver.rtc import RtcService

    hatongsu = HatongsuService(sim, stats) if config.webrtc.hatongsu else None
    dispatcher = RtcDispatcher(stream, hatongsu, stats)
    rtc = RtcService(
        config=config,
        inbox=aio_bridge.Inbox(),
        handler=dispatcher,
        authorize=make_authorize(config, identities),
        stats=stats,
        limits=limits,
    )
    return rtc, dispatcher


async def _tick_loop(worlds: WorldHost, stats: Stats, running: RunningServer) -> None:
    """Every hosted world's tick on its own deadline (see worldserver/hosting.py), one loop."""
    while True:
        await trio.sleep_until(worlds.next_deadline())
        now = trio.current_time()
        started = time.perf_counter()
        udp = running.udp  # inputs that came during the receive loop's coalescing sleep
        udp.transport.drain(udp.handle_datagram, now, TICK_DRAIN_BATCHES * udp.transport.recv_batch)
        calls = running.calls
        for sim, clock in worlds.due(now):
            sim.run_tick(now)
            if calls is not None:
                calls.on_tick(sim, now)  # every calls.interval_ticks ticks: the call groups
            ended = time.perf_counter()
            stats.tick_duration.add(ended - started)
            started = ended
            lateness = clock.advance(now)
            stats.tick_lateness.add(lateness)
            sim.adapt(lateness)


async def _poll_loop(services) -> None:
    while True:
        await trio.sleep(POLL_INTERVAL)
        now = trio.current_time()
        for service in services:
            service.poll(now)


def stats_fields(running: RunningServer, interval: float, previous: dict) -> dict:
    """The numbers of one stats line (also used by benchmarks); updates ``previous``."""
    stats = running.stats
    tick_p50, tick_p99 = running.stats.tick_duration.percentiles(50, 99)
    late_p50, late_p99 = running.stats.tick_lateness.percentiles(50, 99)
    drops = drop_counts(running)  # the same figures as GET /metrics (worldserver/metrics.py)
    moved = transport_bytes(running)
    bytes_in = sum(received for received, _ in moved.values())
    bytes_out = sum(sent for _, sent in moved.values())
    before = previous.get("by", {})
    by_transport = {}  # transports with traffic in the interval: [in, out] bytes per second
    for name, (received, sent) in moved.items():
        was_in, was_out = before.get(name, (0, 0))
        if received != was_in or sent != was_out:
            by_transport[name] = [round((received - was_in) / interval), round((sent - was_out) / interval)]
    fields = dict(
        clients=running.worlds.session_count if running.worlds else len(running.sim.sessions),
        clients_ws=running.ws.count,
        clients_rtc=running.rtc_stream.count,
        entities=running.worlds.entity_count if running.worlds else running.sim.world.count,
        tick=running.sim.tick,
        tick_ms_p50=round(tick_p50 * 1000, 2),
        tick_ms_p99=round(tick_p99 * 1000, 2),
        late_ms_p50=round(late_p50 * 1000, 2),
        late_ms_p99=round(late_p99 * 1000, 2),
        bytes_in_s=round((bytes_in - previous.get("in", 0)) / interval),
        bytes_out_s=round((bytes_out - previous.get("out", 0)) / interval),
        bytes_s=by_transport,
        gc_pause_ms_max=round(max(running.gc.pauses.values(), default=0.0) * 1000, 2),
        ticks_skipped=running.worlds.skipped if running.worlds else 0,
        stride=max(sim.snapshots.stride for sim in running.worlds) if running.worlds else running.sim.snapshots.stride,
        # Totals since start: parts sent, entity-snapshots in view and refreshed (their ratio
        # is the refreshed share), snapshots held back by the allowance, clients deferred.
        snapshot=dict(
            parts=stats.get("snapshot.parts"),
            entities_visible=stats.get("snapshot.entities_visible"),
            entities_refreshed=stats.get("snapshot.entities_refreshed"),
            rate_limited=stats.get("snapshots.rate_limited"),
            deferred=stats.get("snapshots.deferred"),
        ),
        drops=drops,
    )
    previous["in"], previous["out"], previous["by"] = bytes_in, bytes_out, moved
    return fields


async def _stats_loop(interval: float, running: RunningServer) -> None:
    previous: dict = {}
    while True:
        await trio.sleep(interval)
        clients = running.worlds.session_count if running.worlds else len(running.sim.sessions)
        if running.config_freeze and running.gc.refreeze_if_grown(clients):
            log.debug("gc frozen again", clients=clients)
        log.info("stats", **stats_fields(running, interval, previous))
        running.stats.tick_duration.clear()
        running.stats.tick_lateness.clear()
        running.gc.pauses.clear()


async def _main(config: Config, hold: StartupHold) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def serve_until_stopped(task_status=trio.TASK_STATUS_IGNORED) -> None:
                await serve(config, task_status=task_status, hold=hold)
                nursery.cancel_scope.cancel()  # a drain ended the server: the process ends too

            running = await nursery.start(serve_until_stopped)

            async def watch_signals() -> None:
                grace = config.server.drain_grace
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGTERM and grace > 0 and not running.drain.active:
                        log.info("draining", signal=name, grace=grace)  # a second SIGTERM stops at once
                        running.drain.start(grace, trio.current_time())
                        continue
                    log.info("shutting down", signal=name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch_signals)


def run_server(config: Config) -> int:
    """The ``worldserver run`` entry point: serves until SIGINT or SIGTERM; returns 0.

    Raises :class:`~worldserver.startup.StartupError` when the machine cannot run this
    configuration (a port in use, ...): found before anything started, or, for a port taken
    in the moment since, after what had started was stopped again."""
    with preflight(config) as hold:
        try:
            aio_bridge.run(_main, config, hold)
        except BaseExceptionGroup as group:
            error = startup_error_in(group)
            if error is None:
                raise
            raise error from None
    return 0
