"""``GET /metrics`` of a real server in process, read with prometheus-client's own parser.

A UDP client (joined over HTTP), a ``/ws/movement`` client and two chat sockets connect; a
garbage datagram is sent; the scrape must then count the clients by transport, bytes and
snapshots for each transport used, the drop, the chat message and its delivery, and the tick
histograms, and the stats line must see the same bytes. WebRTC is checked the same way under
``aio_bridge.run`` (aiortc needs the asyncio host), where the stats line used to show no bytes
at all. Access: a peer in 127.0.0.0/8 gets the metrics over real HTTP; a non-loopback peer is
tried at the ASGI level with a made-up client address (every address a test can bind here is
loopback) and gets 403 unless ``server.metrics_public``. ``docs/grafana-dashboard.json`` is
checked against a real scrape. Waits are for conditions with deadlines, never timings.
"""

from __future__ import annotations

import json
import pathlib
import re
import socket

import httpx
import pytest
import trio
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.client import ClientConnection
from protocol.events import Connected, Received
from worldclient.chat_client import open_chat
from worldclient.client import open_client
from worldclient.join import join
from worldclient import aio_bridge
from worldclient.rtc_client import open_geckos
import worldserver
from worldserver.app import serve, stats_fields
from worldserver.config import load_config
from worldserver.stats import Samples

TIMEOUT = 10.0
ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"


def make_config(tmp_path, **overrides):
    values = {"udp.host": "127.0.0.1", "udp.port": "0", "http.host": "127.0.0.1", "http.port": "0",
              "server.stats_interval": "60", "gc.freeze_after_start": "false",
              "server.data_dir": str(tmp_path / "data"), "http.images_dir": str(tmp_path / "images"),
              "http.web_root": str(tmp_path / "dist"), "webrtc.enabled": "false", "worlds.hosted": "open"}
    values.update({k: str(v) for k, v in overrides.items()})
    return load_config(path=None, env={}, overrides=values)


async def scrape(running, local_address: str | None = None) -> dict:
    """``{sample name: {frozenset(labels): value}}`` of one GET /metrics over HTTP."""
    transport = httpx.AsyncHTTPTransport(local_address=local_address) if local_address else None
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as http:
        response = await http.get(f"http://127.0.0.1:{running.http_port}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples_of(text_string_to_metric_families(response.text))


def samples_of(families) -> dict:
    out: dict = {}
    for family in families:
        out.setdefault(family.name, {})  # the family, even without samples
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples[name][frozenset(labels.items())]


async def wait_for(condition, timeout: float = TIMEOUT) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


class NativeOverMessages:
    """A native client driven by hand over a message transport (trusted HELLO with the join
    token): ``send`` and ``receive`` are the transport's."""

    def __init__(self, send, receive, token: str) -> None:
        self.send, self.receive = send, receive
        self.conn = ClientConnection(version=PROTOCOL_VERSION, nonce=7, token=token.encode(), trusted=True)
        self.events: list = []

    async def _pump(self) -> None:
        data = await self.receive()
        events, replies = self.conn.receive_datagram(bytes(data), trio.current_time())
        self.events += events
        for reply in replies:
            await self.send(reply)

    async def connect_and_get_a_snapshot(self) -> None:
        await self.send(self.conn.connect(trio.current_time()))
        with trio.fail_after(TIMEOUT):
            while not any(isinstance(e, Connected) for e in self.events):
                await self._pump()
            while not any(isinstance(e, Received) and e.ptype == P.SNAPSHOT for e in self.events):
                await self._pump()


async def test_a_scrape_counts_clients_bytes_snapshots_drops_and_chat(nursery, tmp_path) -> None:
    running = await nursery.start(serve, make_config(tmp_path))
    http = f"http://127.0.0.1:{running.http_port}"
    first = await scrape(running)
    assert value(first, "worldserver_clients", transport="udp") == 0
    assert value(first, "worldserver_info", version=worldserver.__version__) == 1
    host, port = running.udp_address[:2]
    async with open_client(host, port, http=http, name="ann") as ann, \
            open_websocket_url(f"ws://127.0.0.1:{running.http_port}/ws/movement") as ws:
        assert await ann.wait_until(lambda c: c.mirror.tick > 0, TIMEOUT)
        bob = NativeOverMessages(ws.send_message, ws.get_message, (await join(http, "bob")).token)
        await bob.connect_and_get_a_snapshot()
        # chat: cleo writes, dora gets it
        cleo, dora = (await join(http, "cleo")).token, (await join(http, "dora")).token
        async with open_chat(http, cleo) as cleo_chat, open_chat(http, dora) as dora_chat:
            await cleo_chat.send(cleo_chat.public_room, "hello gallery")
            await dora_chat.wait_for(lambda e: e.name == "message", TIMEOUT)
            # garbage from an unknown address: dropped and counted by the UDP endpoint
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
                raw.sendto(b"\xffgarbage", (host, port))
            await wait_for(lambda: running.udp.endpoint.drops.get("bad_type"))
            got = await scrape(running, local_address="127.0.0.2")  # any 127/8 peer is loopback

            assert value(got, "worldserver_clients", transport="udp") == 1
            assert value(got, "worldserver_clients", transport="ws") == 1
            assert value(got, "worldserver_clients", transport="webrtc") == 0
            assert value(got, "worldserver_clients", transport="hatongsu") == 0
            assert value(got, "worldserver_world_clients", world="open") == 2
            assert value(got, "worldserver_entities", world="open") == 2
            assert value(got, "worldserver_clients_joined_total", transport="udp") == 1
            assert value(got, "worldserver_clients_joined_total", transport="ws") == 1
            for transport in ("udp", "ws", "chat"):
                assert value(got, "worldserver_bytes_received_total", transport=transport) > 0, transport
                assert value(got, "worldserver_bytes_sent_total", transport=transport) > 0, transport
            assert value(got, "worldserver_bytes_received_total", transport="webrtc") == 0
            assert value(got, "worldserver_snapshots_sent_total", transport="udp") >= 1
            assert value(got, "worldserver_snapshots_sent_total", transport="ws") >= 1
            assert value(got, "worldserver_udp_datagrams_received_total") >= 2
            assert value(got, "worldserver_drops_total", reason="udp.bad_type") == 1
            assert value(got, "worldserver_chat_messages_total", kind="text") == 1
            assert value(got, "worldserver_chat_deliveries_total") >= 1  # dora (cleo gets the reply)
            assert value(got, "worldserver_chat_sockets") == 2
            ticks = value(got, "worldserver_ticks_total", world="open")
            assert ticks > value(first, "worldserver_ticks_total", world="open")
            count = value(got, "worldserver_tick_duration_seconds_count")
            assert count >= ticks  # every tick was observed (the scrape may come between two)
            assert value(got, "worldserver_tick_duration_seconds_bucket", le="+Inf") == count
            assert value(got, "worldserver_tick_duration_seconds_sum") > 0
            assert value(got, "worldserver_tick_lateness_seconds_count") == count
            assert value(got, "worldserver_snapshot_parts_total") >= 2
            assert "worldserver_events_total" in got and value(got, "worldserver_events_total", event="chat.hellos") == 2
            # the stats line reads the same counters: every transport's bytes, not UDP's only
            fields = stats_fields(running, 1.0, {})
            assert set(fields["bytes_s"]) >= {"udp", "ws", "chat"}
            assert fields["bytes_out_s"] == sum(out for _, out in fields["bytes_s"].values())
            assert fields["bytes_in_s"] > running.udp.transport.bytes_in
            assert fields["drops"]["drop.udp.bad_type"] == 1


def test_webrtc_clients_bytes_and_connect_time(tmp_path) -> None:
    """Over a real data channel (aiortc on loopback): the metrics and the stats line count it."""

    async def main():
        config = make_config(tmp_path, **{"webrtc.enabled": "true", "webrtc.host_addresses": "127.0.0.1"})
        async with trio.open_nursery() as nursery:
            running = await nursery.start(serve, config)
            http = f"http://127.0.0.1:{running.http_port}"
            token = (await join(http, "eve")).token
            channel = await open_geckos(http, host_addresses=["127.0.0.1"], timeout=TIMEOUT)
            try:
                async def send(data: bytes) -> None:
                    assert channel.send_binary(data)

                eve = NativeOverMessages(send, lambda: channel.receive(timeout=TIMEOUT), token)
                await eve.connect_and_get_a_snapshot()
                got = await scrape(running)
                fields = stats_fields(running, 1.0, {})
            finally:
                await channel.close()
            nursery.cancel_scope.cancel()
        return got, fields

    got, fields = aio_bridge.run(main)
    assert value(got, "worldserver_clients", transport="webrtc") == 1
    assert value(got, "worldserver_clients_joined_total", transport="webrtc") == 1
    assert value(got, "worldserver_bytes_received_total", transport="webrtc") > 0
    assert value(got, "worldserver_bytes_sent_total", transport="webrtc") > 0
    assert value(got, "worldserver_snapshots_sent_total", transport="webrtc") >= 1
    assert value(got, "worldserver_webrtc_connect_seconds_count") == 1
    assert value(got, "worldserver_webrtc_connect_seconds_sum") > 0
    assert fields["bytes_in_s"] > 0 and fields["bytes_out_s"] > 0  # was 0 = UDP only
    assert set(fields["bytes_s"]) == {"webrtc"}


async def asgi_get(app, path: str, client: tuple | None, accept: str | None = None) -> tuple[int, dict, bytes]:
    """One GET through the server's ASGI app as if from ``client`` (host, port)."""
    headers = [(b"host", b"worldserver")] + ([(b"accept", accept.encode())] if accept else [])
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": headers, "client": client, "server": ("127.0.0.1", 8080)}
    sent: list = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


async def test_metrics_answer_loopback_only_by_default(nursery, tmp_path) -> None:
    running = await nursery.start(serve, make_config(tmp_path))
    app = running.http_app
    for client in (("127.0.0.1", 5000), ("127.9.8.7", 5000), ("::1", 5000), ("::ffff:127.0.0.1", 5000)):
        status, _, body = await asgi_get(app, "/metrics", client)
        assert status == 200, client
        assert b"worldserver_clients" in body
    for client in (("203.0.113.7", 5000), ("10.0.0.2", 5000), ("2001:db8::1", 5000), ("::ffff:192.0.2.1", 1), None):
        status, _, body = await asgi_get(app, "/metrics", client)
        assert status == 403, client
        assert b"server.metrics_public" in body and b"worldserver_" not in body
    assert running.stats.get("drop.metrics_forbidden") == 5
    # the refusals are metrics too
    status, _, body = await asgi_get(app, "/metrics", ("127.0.0.1", 5000))
    assert value(samples_of(text_string_to_metric_families(body.decode())),
                 "worldserver_drops_total", reason="metrics_forbidden") == 5


async def test_metrics_public_opens_them_to_every_address(nursery, tmp_path) -> None:
    running = await nursery.start(serve, make_config(tmp_path, **{"server.metrics_public": "true"}))
    status, headers, body = await asgi_get(running.http_app, "/metrics", ("203.0.113.7", 5000))
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert value(samples_of(text_string_to_metric_families(body.decode())), "worldserver_clients",
                 transport="udp") == 0
    assert running.stats.get("drop.metrics_forbidden") == 0


async def test_openmetrics_when_the_scraper_asks_for_it(nursery, tmp_path) -> None:
    running = await nursery.start(serve, make_config(tmp_path))
    status, headers, body = await asgi_get(running.http_app, "/metrics", ("127.0.0.1", 5000),
                                           accept="application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(body.decode())}
    assert families["worldserver_tick_duration_seconds"].type == "histogram"
    assert families["worldserver_bytes_sent"].type == "counter"


def test_samples_keep_bucket_totals_across_clear() -> None:
    samples = Samples(4, bounds=(0.001, 0.01))
    for v in (0.0005, 0.001, 0.002, 0.5, 0.003):  # a bound is inclusive (le)
        samples.add(v)
    assert samples.cumulative() == [(0.001, 2), (0.01, 4), (float("inf"), 5)]
    assert samples.total == pytest.approx(0.5065)
    assert len(samples) == 4  # the window keeps the newest 4 ...
    samples.clear()
    assert len(samples) == 0 and samples.percentiles(50) == [0.0]
    assert samples.cumulative()[-1] == (float("inf"), 5)  # ... the totals everything since start
    untracked = Samples(4, bounds=())
    untracked.add(1.0)
    assert untracked.cumulative() == [(float("inf"), 0)] and untracked.total == 0.0


def dashboard_metric_names(dashboard: dict) -> set[str]:
    names = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names.update(re.findall(r"\bworldserver_[a-z0-9_]+", target["expr"]))
    return names


async def test_the_grafana_dashboard_queries_only_metrics_that_exist(nursery, tmp_path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert dashboard.get("id") is None  # imported as a new dashboard
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dashboard["templating"]["list"])
    panels = dashboard["panels"]
    assert len(panels) >= 10
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
    running = await nursery.start(serve, make_config(tmp_path))
    host, port = running.udp_address[:2]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:  # so that a drop exists
        raw.sendto(b"\xffgarbage", (host, port))
    await wait_for(lambda: running.udp.endpoint.drops.get("bad_type"))
    exposed = {name for name, series in (await scrape(running)).items() if series}
    queried = dashboard_metric_names(dashboard)
    assert len(queried) >= 12
    assert queried <= exposed, sorted(queried - exposed)
    for required in ("worldserver_clients", "worldserver_entities", "worldserver_tick_duration_seconds_bucket",
                     "worldserver_tick_lateness_seconds_bucket", "worldserver_bytes_sent_total",
                     "worldserver_bytes_received_total", "worldserver_snapshots_sent_total",
                     "worldserver_drops_total", "worldserver_gc_pause_seconds_bucket",
                     "worldserver_chat_messages_total", "worldserver_chat_deliveries_total",
                     "worldserver_webrtc_connect_seconds_bucket"):
        assert required in queried, required
