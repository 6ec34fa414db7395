"""``GET /metrics``: the running server's figures in the Prometheus text format.

One :class:`ServerMetrics` per running server holds its own ``CollectorRegistry`` (never the
library's process-wide default, so several servers in one process -- the tests -- do not
clash) with one custom collector, :class:`ServerCollector`. It reads, at scrape time, the
numbers the server keeps anyway: the ``Stats`` counters, the running bucket totals of the tick,
GC and WebRTC sample windows (``worldserver.stats.Samples``), each transport's byte and
snapshot counts, the endpoints' drop counts, every hosted world's entities and ticks, the
chat's sockets. Nothing is updated per event for Prometheus, and nothing here runs in the tick.
The stats line (``worldserver.app.stats_fields``) takes its bytes and drops from the same
functions (:func:`transport_bytes`, :func:`drop_counts`), so both say the same.

A counter of ``Stats`` becomes a metric family with a label by the first rule of
:data:`COUNTER_FAMILIES` whose prefix it has (``drop.udp.bad_tag`` is
``worldserver_drops_total{reason="udp.bad_tag"}``), or one of :data:`SINGLE_COUNTERS`; a
counter no rule names is still exported, as ``worldserver_events_total{event="<name>"}``, so a
new counter is never missing. The metrics and their labels are listed in
docs/architecture.md ("Metrics").

Access (:func:`metrics_endpoint`): open to loopback peers only unless
``server.metrics_public``; anyone else gets 403 (counted as ``drop.metrics_forbidden``). The
peer is the TCP peer hypercorn reports, no forwarded header is read: behind a reverse proxy
on the same host every request comes from loopback, so block ``/metrics`` at the proxy.

Must not: change a counter, run in the tick, or do work per event of the hot paths.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from protocol.chat import CALL_LEFT_REASONS
from protocol.chat import KINDS as CHAT_KINDS
from worldserver import __version__
from worldserver.limits import Networks, parse_address
from worldserver.stats import Samples

__all__ = ["ServerMetrics", "drop_counts", "metrics_endpoint", "transport_bytes"]

# The transports whose bytes are counted, and those that carry clients of the world.
BYTE_TRANSPORTS = ("udp", "webrtc", "ws", "chat")
CLIENT_TRANSPORTS = ("udp", "webrtc", "ws", "hatongsu")
SNAPSHOT_TRANSPORTS = ("udp", "webrtc", "ws")
LOOPBACK = Networks(("127.0.0.0/8", "::1/128"))
FORBIDDEN = "GET /metrics answers loopback only; set server.metrics_public = true to open it to all\n"

# (counter prefix, family name, label, help, label values always shown): the first matching
# prefix wins; the label's value is the rest of the counter's name.
COUNTER_FAMILIES: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("drop.", "worldserver_drops", "reason",
     "Input dropped or refused, by reason (see docs/architecture.md, Counters).", ()),
    ("clients.joined.", "worldserver_clients_joined", "transport",
     "Native-protocol clients that joined a world, by transport.", ("udp", "webrtc", "ws")),
    ("clients.left.", "worldserver_clients_left", "reason", "Native-protocol clients that left, by reason.", ()),
    ("chat.messages.", "worldserver_chat_messages", "kind",
     "Chat messages committed and fanned out, by kind (the server's join and leave notices too).", CHAT_KINDS),
    ("chat.closed_", "worldserver_chat_sockets_closed", "reason", "Chat sockets closed by the server, by reason.", ()),
    ("rtc.closed.", "worldserver_webrtc_closed", "reason", "WebRTC peers closed, by reason.", ()),
    ("rtc.refused.", "worldserver_webrtc_refused", "reason", "WebRTC offers refused, by reason.", ()),
    ("rtc.bad_request.", "worldserver_webrtc_bad_requests", "reason", "Bad WebRTC signaling requests, by reason.", ()),
    ("recv_error.", "worldserver_udp_receive_errors", "error", "Errors reading the UDP socket, by errno name.", ()),
    ("identity.", "worldserver_identities", "event", "Names created, reclaimed with their secret, or claimed.", ()),
    ("hatongsu.messages_", "worldserver_hatongsu_messages", "direction",
     "Hatongsu JSON events received (in) and sent (out).", ("in", "out")),
    ("calls.left.", "worldserver_call_leaves", "reason", "Players told call.left, by reason.", CALL_LEFT_REASONS),
    ("calls.sfu_failed.", "worldserver_call_sfu_failures", "op",
     "SFU backend calls that failed (error or deadline), by operation.", ("open", "admit", "revoke", "close")),
)
# counter -> (family name, help): totals without a label
SINGLE_COUNTERS: dict[str, tuple[str, str]] = {
    "chat.deliveries": ("worldserver_chat_deliveries", "Chat message events delivered to sockets."),
    "snapshot.parts": ("worldserver_snapshot_parts", "Snapshot parts (packets) encoded for native clients."),
    "snapshot.entities_visible": ("worldserver_snapshot_entities_visible", "Entity-snapshots in clients' views."),
    "snapshot.entities_refreshed": ("worldserver_snapshot_entities_refreshed",
                                    "Entity-snapshots sent with the tick's own state."),
    "snapshot.shared_views": ("worldserver_snapshot_shared_views",
                              "Clients that took the view of another client in their interest.share_cell square."),
    "snapshots.rate_limited": ("worldserver_snapshots_rate_limited",
                               "Snapshots that held entities back for the client's byte allowance."),
    "snapshots.deferred": ("worldserver_snapshots_deferred", "Clients not served in a tick while the stage sheds load."),
    "inputs.caught_up": ("worldserver_inputs_caught_up", "Late inputs applied as catch-up."),
    "calls.joined": ("worldserver_call_joins", "call.joined events sent (a player joined a call, or its mode changed)."),
    "calls.signals": ("worldserver_call_signals", "Call signaling messages relayed between mesh members."),
}
_TRANSPORT_NAMES = {"rtc": "webrtc"}  # the counters' transport names -> the metrics' label values
# counters exported under another metric (bytes), or the sum of a family (clients.joined)
_ELSEWHERE = frozenset({"clients.joined", "chat.bytes_in", "chat.bytes_out"})


def transport_bytes(running) -> dict[str, tuple[int, int]]:
    """Bytes (received, sent) since start by transport: UDP datagrams, WebRTC data-channel
    messages (native and Hatongsu), ``/ws/movement`` messages, ``/ws/chat`` frames."""
    udp = running.udp.transport
    rtc = running.rtc if running.rtc is not None else running.rtc_stream
    stats = running.stats
    return {
        "udp": (udp.bytes_in, udp.bytes_out),
        "webrtc": (rtc.bytes_in, rtc.bytes_out),
        "ws": (running.ws.bytes_in, running.ws.bytes_out),
        "chat": (stats.get("chat.bytes_in"), stats.get("chat.bytes_out")),
    }


def drop_counts(running) -> dict[str, int]:
    """Every ``drop.*`` counter, with the native endpoints' own drops as
    ``drop.udp.<reason>``, ``drop.ws.<reason>`` and ``drop.rtc.<reason>``."""
    drops = {k: v for k, v in running.stats.counters.items() if k.startswith("drop.")}
    for kind, endpoint in (("udp", running.udp.endpoint), ("ws", running.ws.endpoint),
                           ("rtc", running.rtc_stream.endpoint)):
        for reason, count in endpoint.drops.items():
            key = f"drop.{kind}.{reason}"
            drops[key] = drops.get(key, 0) + count
    return drops


def _histogram(name: str, help_text: str, samples: Samples) -> HistogramMetricFamily:
    buckets = [(floatToGoString(bound), count) for bound, count in samples.cumulative()]
    return HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=samples.total)


class ServerCollector:
    """Reads a :class:`worldserver.app.RunningServer`'s figures at each scrape."""

    def __init__(self, running, started: float) -> None:
        self.running = running
        self.started = started  # Unix time the server started

    def collect(self) -> Iterator[Metric]:
        running = self.running
        stats = running.stats
        worlds = list(running.worlds.sims.items())
        clocks = getattr(running.worlds, "clocks", {})  # a WorldHost has them once started

        info = GaugeMetricFamily("worldserver_info", "The server's version (the value is 1).", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("worldserver_start_time_seconds", "When the server started (Unix time).",
                                value=self.started)

        clients = GaugeMetricFamily("worldserver_clients", "Connected clients by transport.", labels=["transport"])
        hatongsu = running.hatongsu
        counts = {
            "udp": len(running.udp.endpoint.connections),
            "webrtc": running.rtc_stream.count,
            "ws": running.ws.count,
            "hatongsu": len(hatongsu.clients) if hatongsu is not None else 0,
        }
        for transport in CLIENT_TRANSPORTS:
            clients.add_metric([transport], counts[transport])
        yield clients

        world_clients = GaugeMetricFamily("worldserver_world_clients", "Clients in each hosted world.",
                                          labels=["world"])
        entities = GaugeMetricFamily("worldserver_entities", "Live entities in each hosted world.", labels=["world"])
        ticks = CounterMetricFamily("worldserver_ticks", "Ticks run by each hosted world.", labels=["world"])
        skipped = CounterMetricFamily("worldserver_ticks_skipped",
                                      "Ticks each world skipped because it fell too far behind.", labels=["world"])
        stride = GaugeMetricFamily("worldserver_snapshot_stride",
                                   "Every how many ticks a client gets a snapshot (1 = every tick; more while "
                                   "the stage sheds load).", labels=["world"])
        for world_id, sim in worlds:
            world_clients.add_metric([world_id], len(sim.sessions))
            entities.add_metric([world_id], sim.world.count)
            ticks.add_metric([world_id], sim.tick)
            clock = clocks.get(world_id)
            skipped.add_metric([world_id], clock.skipped if clock is not None else 0)
            stride.add_metric([world_id], sim.snapshots.stride)
        yield from (world_clients, entities, ticks, skipped, stride)

        yield _histogram("worldserver_tick_duration_seconds",
                         "Wall-clock time of one world's tick (inputs, step, interest, snapshots, sends).",
                         stats.tick_duration)
        yield _histogram("worldserver_tick_lateness_seconds", "How long after its deadline a tick started.",
                         stats.tick_lateness)
        yield _histogram("worldserver_gc_pause_seconds", "Garbage-collector pauses.", running.gc.pauses)
        collections = CounterMetricFamily("worldserver_gc_collections", "Garbage collections by generation.",
                                          labels=["generation"])
        for generation, count in enumerate(running.gc.collections):
            collections.add_metric([str(generation)], count)
        yield collections
        rtc = running.rtc
        yield _histogram("worldserver_webrtc_connect_seconds",
                         "Time from a WebRTC offer request to its open data channel.",
                         rtc.connect_seconds if rtc is not None else Samples(1))

        received = CounterMetricFamily("worldserver_bytes_received", "Bytes received by transport (payloads).",
                                       labels=["transport"])
        sent = CounterMetricFamily("worldserver_bytes_sent", "Bytes sent by transport (payloads).",
                                   labels=["transport"])
        for transport, (bytes_in, bytes_out) in transport_bytes(running).items():
            received.add_metric([transport], bytes_in)
            sent.add_metric([transport], bytes_out)
        yield from (received, sent)
        udp = running.udp.transport
        yield CounterMetricFamily("worldserver_udp_datagrams_received", "UDP datagrams received.",
                                  value=udp.datagrams_in)
        yield CounterMetricFamily("worldserver_udp_datagrams_sent", "UDP datagrams sent.", value=udp.datagrams_out)
        snapshots = CounterMetricFamily("worldserver_snapshots_sent", "Snapshots sent to native clients, by transport.",
                                        labels=["transport"])
        for transport, service in zip(SNAPSHOT_TRANSPORTS, (running.udp, running.rtc_stream, running.ws)):
            snapshots.add_metric([transport], service.snapshots_sent)
        yield snapshots

        chat = running.chat
        yield GaugeMetricFamily("worldserver_chat_sockets", "Open /ws/chat sockets.",
                                value=len(chat.peers) if chat is not None else 0)
        yield GaugeMetricFamily("worldserver_chat_rooms_active", "Chat rooms with at least one open socket.",
                                value=len(chat.room_peers) if chat is not None else 0)
        calls = running.calls.census() if getattr(running, "calls", None) is not None else {}
        groups = GaugeMetricFamily("worldserver_call_groups", "Call groups now, by mode.", labels=["mode"])
        members = GaugeMetricFamily("worldserver_call_members", "Players in a call now, by mode.", labels=["mode"])
        for mode in ("mesh", "sfu"):
            groups.add_metric([mode], calls.get(f"groups_{mode}", 0))
            members.add_metric([mode], calls.get(f"members_{mode}", 0))
        yield from (groups, members)
        yield GaugeMetricFamily("worldserver_call_waiting", "Players in a call group without a place yet "
                                "(call.full, or waiting for their SFU ticket).", value=calls.get("waiting", 0))
        yield GaugeMetricFamily("worldserver_calls_enabled", "Players whose page enabled calls.",
                                value=calls.get("enabled", 0))

        yield from self._counters(running)

    def _counters(self, running) -> Iterator[Metric]:
        families = {}
        for prefix, name, label, help_text, shown in COUNTER_FAMILIES:
            family = CounterMetricFamily(name, help_text, labels=[label])
            families[prefix] = (family, dict.fromkeys(shown, 0))
        singles = {counter: 0 for counter in SINGLE_COUNTERS}
        events = CounterMetricFamily("worldserver_events", "Every other counter of the server, by its name.",
                                     labels=["event"])
        counters = {k: v for k, v in running.stats.counters.items() if not k.startswith("drop.")}
        counters.update(drop_counts(running))
        for counter, value in sorted(counters.items()):
            if counter in singles:
                singles[counter] = value
                continue
            if counter in _ELSEWHERE:
                continue
            for prefix, _, _, _, _ in COUNTER_FAMILIES:
                if counter.startswith(prefix):
                    values = families[prefix][1]
                    rest = counter[len(prefix):]
                    if prefix == "clients.joined.":
                        rest = _TRANSPORT_NAMES.get(rest, rest)
                    values[rest] = values.get(rest, 0) + value
                    break
            else:
                events.add_metric([counter], value)
        for family, values in families.values():
            for label_value, value in values.items():
                family.add_metric([label_value], value)
            yield family
        for counter, (name, help_text) in SINGLE_COUNTERS.items():
            yield CounterMetricFamily(name, help_text, value=singles[counter])
        yield events


class ServerMetrics:
    """The registry of one running server and who may read it."""

    def __init__(self, running, public: bool = False, started: float | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ServerCollector(running, time.time() if started is None else started))
        self.public = public
        self.stats = running.stats

    def allows(self, host: str | None) -> bool:
        """May a peer at ``host`` (an IP address text, None when unknown) read the metrics?"""
        return self.public or LOOPBACK.contains(parse_address(host))

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (the format the ``Accept`` header asks for; by default the Prometheus
        text format) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: 404 when the app has no metrics, 403 for a peer not allowed."""
    metrics: ServerMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is None:
        return PlainTextResponse("Not Found", status_code=404)
    client = request.client
    if not metrics.allows(client.host if client else None):
        metrics.stats.incr("drop.metrics_forbidden")
        return PlainTextResponse(FORBIDDEN, status_code=403)
    body, content_type = metrics.render(request.headers.get("accept"))
    return Response(body, media_type=None, headers={"Content-Type": content_type})
