"""Admission and fairness per client address ([limits]), with real sockets on loopback.

Each test reproduces, small, a finding of the attack of issue 8, and checks that another
address is not hurt: on Linux all of 127.0.0.0/8 is loopback, so clients bind 127.0.0.1 (the
"attacker") and 127.0.0.2 (everyone else). The limits apply to loopback here because these
tests empty ``limits.trusted_networks`` (loopback is trusted by default).

* UDP: one address's handshakes on many ports no longer fill ``net.max_clients``; a full
  server refuses a HELLO before it makes a cookie; handshake packets over the address's bucket
  are dropped; UDP and /ws/movement connections count together.
* HTTP: joins per address (429); /ws/movement upgrades beyond the address's connections are
  refused before accept.
* Chat: messages limited per address, across all the names of that address.

No wall-clock sleeps: every wait is for a reply, and a reply to another client proves that the
server already handled whatever was sent to it before (one socket, handled in order).
"""

from __future__ import annotations

import itertools
import json
import socket

import httpx
import pytest
import trio
from trio_websocket import wrap_client_stream

from chat_support import start_chat_server
from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.client import ClientConnection
from protocol.events import Connected, Refused
from worldserver.app import serve
from worldserver.config import load_config
from worldserver.stats import Stats
from worldserver.simulation import Simulation
from worldserver.udp_service import UdpService

ATTACKER, OTHER = "127.0.0.1", "127.0.0.2"
TIMEOUT = 10.0
_nonces = itertools.count(0x5EED_0000)


def make_config(data_dir, **overrides):
    base = {"server.data_dir": str(data_dir), "udp.host": "127.0.0.1", "udp.port": "0", "http.host": "127.0.0.1", "http.port": "0",
            "server.stats_interval": "60", "gc.freeze_after_start": "false",
            "limits.trusted_networks": "",
            # anonymous UDP clients (an open server): these tests are about address limits
            "net.require_connect_token": "false"}
    base.update({k.replace("__", "."): str(v) for k, v in overrides.items()})
    return load_config(path=None, env={}, overrides=base)


class RawClient:
    """One UDP client on its own port of ``source``: the real handshake (protocol.client),
    a plain non-blocking socket and trio's readability wait."""

    def __init__(self, source: str, server: tuple) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.setblocking(False)
        self.conn = ClientConnection(version=PROTOCOL_VERSION, nonce=next(_nonces))
        self.first_reply: bytes | None = None

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    async def handshake(self) -> Connected | Refused:
        self.send(self.conn.connect(trio.current_time()))
        with trio.fail_after(TIMEOUT):
            while True:
                await trio.lowlevel.wait_readable(self.sock)
                data = self.sock.recv(2048)
                if self.first_reply is None:
                    self.first_reply = data
                events, out = self.conn.receive_datagram(data, trio.current_time())
                for packet in out:
                    self.send(packet)
                for event in events:
                    if isinstance(event, (Connected, Refused)):
                        return event

    def nothing_received(self) -> bool:
        try:
            self.sock.recv(2048)
        except BlockingIOError:
            return True
        return False

    def leave(self) -> None:
        self.send(self.conn.disconnect(trio.current_time()))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def clients():
    made: list[RawClient] = []

    def make(source: str, server: tuple) -> RawClient:
        made.append(RawClient(source, server))
        return made[-1]

    yield make
    for client in made:
        client.close()


async def test_one_address_on_many_ports_cannot_fill_the_server(nursery, clients, tmp_path):
    """Finding 1, small: 50 real handshakes from one address on 50 ports against
    max_clients=60 with a cap of 10 per address: 10 get in, 40 are refused with
    ``address_limit``, and a client from another address still gets in."""
    running = await nursery.start(serve, make_config(tmp_path,
        net__max_clients=60, limits__connections_per_address=10,
        limits__handshakes_per_second=1000, limits__handshake_burst=1000))
    server = running.udp_address[:2]
    results: list = []

    async def one() -> None:
        client = clients(ATTACKER, server)
        results.append((client, await client.handshake()))

    async with trio.open_nursery() as flood:
        for _ in range(50):
            flood.start_soon(one)
    connected = [c for c, r in results if isinstance(r, Connected)]
    refused = [r.reason for _, r in results if isinstance(r, Refused)]
    assert len(connected) == 10 and refused == ["address_limit"] * 40
    assert running.stats.get("drop.limit_udp_address_connections") == 40

    other = clients(OTHER, server)
    assert isinstance(await other.handshake(), Connected)
    assert len(running.sim.sessions) == 11
    limits = running.udp.limits
    assert limits.connections.get(limits.key(ATTACKER)) == 10

    # A connection that ends gives its place back to its address.
    connected[0].leave()
    assert isinstance(await clients(ATTACKER, server).handshake(), Connected)
    assert limits.connections.get(limits.key(ATTACKER)) == 10


async def test_loopback_is_trusted_by_default(nursery, clients, tmp_path):
    """The project's swarms run from one loopback address: with the default
    ``limits.trusted_networks`` 100 handshakes from 127.0.0.1 at once all get in (above the
    default cap of 64 and the burst of 40), as 1,000 swarm bots do."""
    config = make_config(tmp_path, limits__trusted_networks="127.0.0.0/8,::1/128")
    assert config.limits.trusted_networks == load_config(path=None, env={}).limits.trusted_networks
    running = await nursery.start(serve, config)
    server = running.udp_address[:2]
    results: list = []

    async def one() -> None:
        results.append(await clients(ATTACKER, server).handshake())

    async with trio.open_nursery() as crowd:
        for _ in range(100):
            crowd.start_soon(one)
    assert all(isinstance(r, Connected) for r in results) and len(results) == 100
    assert running.stats.get("drop.limit_udp_handshake_rate") == 0


async def test_a_full_server_refuses_a_hello_before_making_a_cookie(nursery, clients, tmp_path):
    running = await nursery.start(serve, make_config(tmp_path, net__max_clients=3))
    server = running.udp_address[:2]
    for _ in range(3):
        assert isinstance(await clients(ATTACKER, server).handshake(), Connected)
    endpoint = running.udp.endpoint
    unproven_in, unproven_out = endpoint.bytes_in_unproven, endpoint.bytes_out_unproven
    late = clients(OTHER, server)
    refused = await late.handshake()
    assert isinstance(refused, Refused) and refused.reason == "server_full"
    assert late.first_reply[0] == P.REFUSE and len(late.first_reply) <= P.HANDSHAKE_SIZE  # no CHALLENGE
    # The HELLO never reached the endpoint: no cookie was computed, nothing else was spent.
    assert (endpoint.bytes_in_unproven, endpoint.bytes_out_unproven) == (unproven_in, unproven_out)
    assert running.stats.get("drop.limit_udp_server_full") == 1
    assert len(running.sim.sessions) == 3


async def test_handshakes_over_the_address_bucket_are_dropped(nursery, clients, tmp_path):
    # Burst 6, no refill worth speaking of: three handshakes (HELLO + CONNECT each).
    running = await nursery.start(serve, make_config(tmp_path,
        limits__handshakes_per_second=0.001, limits__handshake_burst=6))
    server = running.udp_address[:2]
    for _ in range(3):
        assert isinstance(await clients(ATTACKER, server).handshake(), Connected)
    flooder = clients(ATTACKER, server)
    flooder.send(flooder.conn.connect(trio.current_time()))
    # The other address's handshake proves the server handled the flooder's HELLO before it.
    assert isinstance(await clients(OTHER, server).handshake(), Connected)
    assert flooder.nothing_received()  # dropped silently, not even a REFUSE
    assert running.stats.get("drop.limit_udp_handshake_rate") == 1
    # Connected packets never take handshake tokens: the first three keep playing.
    assert len(running.sim.sessions) == 4


async def test_handshake_bucket_refills_at_its_rate(tmp_path) -> None:
    """The same bucket driven with explicit ``now`` values through ``handle_datagram``."""
    config = make_config(tmp_path, limits__handshakes_per_second=1, limits__handshake_burst=2)
    stats = Stats()
    service = UdpService(config, Simulation(config, stats), stats, b"k" * 32)
    try:
        hello = P.encode_hello(PROTOCOL_VERSION, 7)
        addr = ("127.0.0.1", 9)  # the discard port: CHALLENGEs sent there go nowhere

        def handled(now: float) -> bool:
            before = service.endpoint.bytes_in_unproven
            service.handle_datagram(hello, addr, now)
            return service.endpoint.bytes_in_unproven > before

        assert [handled(0.0), handled(0.0), handled(0.0), handled(0.5)] == [True, True, False, False]
        assert handled(1.0) and not handled(1.0)
        assert stats.get("drop.limit_udp_handshake_rate") == 3
    finally:
        service.close()


async def test_udp_and_websocket_connections_count_together(nursery, clients, tmp_path):
    running = await nursery.start(serve, make_config(tmp_path, limits__connections_per_address=2))
    server = running.udp_address[:2]
    assert isinstance(await clients(ATTACKER, server).handshake(), Connected)
    async with open_ws_from(ATTACKER, running.http_port, "/ws/movement"):
        refused = await clients(ATTACKER, server).handshake()
        assert isinstance(refused, Refused) and refused.reason == "address_limit"
        assert await upgrade_status(ATTACKER, running.http_port, "/ws/movement") == 403
        assert running.stats.get("drop.limit_ws_address_connections") == 1
        async with open_ws_from(OTHER, running.http_port, "/ws/movement"):
            pass
    # The WebSocket ended: its place is free again.
    assert isinstance(await clients(ATTACKER, server).handshake(), Connected)


class open_ws_from:
    """A WebSocket from ``source`` (trio_websocket over a socket bound to that address)."""

    def __init__(self, source: str, port: int, resource: str) -> None:
        self.source, self.port, self.resource = source, port, resource

    async def __aenter__(self):
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        try:
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            await sock.bind((self.source, 0))
            with trio.fail_after(TIMEOUT):
                await sock.connect(("127.0.0.1", self.port))
                self.ws = await wrap_client_stream(nursery, trio.SocketStream(sock), "127.0.0.1",
                                                   self.resource)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await self._nursery_manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self.ws

    async def __aexit__(self, *exc):
        with trio.move_on_after(TIMEOUT):
            await self.ws.aclose()
        return await self._nursery_manager.__aexit__(*exc)


async def upgrade_status(source: str, port: int, resource: str) -> int:
    """The HTTP status of a WebSocket upgrade request from ``source`` (101: accepted)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((source, 0))
    with trio.fail_after(TIMEOUT):
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        async with stream:
            await stream.send_all(
                f"GET {resource} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head:
                chunk = await stream.receive_some(1024)
                assert chunk, "closed without a status line"
                head += chunk
    return int(head.split(b" ", 2)[1])


def http_from(source: str, port: int) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", transport=transport, timeout=TIMEOUT)


async def test_joins_are_limited_per_address(nursery, tmp_path):
    """Finding 2's tool: 100,100 anonymous joins in 73 s. Now an address gets
    ``limits.join_burst`` at once, then ``limits.joins_per_second``; others are not affected."""
    running = await nursery.start(serve, make_config(tmp_path, limits__joins_per_second=0.001, limits__join_burst=3))
    async with http_from(ATTACKER, running.http_port) as attacker, http_from(OTHER, running.http_port) as other:
        for i in range(3):
            assert (await attacker.post("/api/join", json={"name": f"flood{i}"})).status_code == 200
        refused = await attacker.post("/api/join", json={"name": "flood3"})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1 and "retry_after" in refused.json()
        ok = await other.post("/api/join", json={"name": "visitor"})
        assert ok.status_code == 200 and ok.json()["name"] == "visitor"
    assert running.stats.get("drop.limit_join_rate") == 1


class RawChat:
    """A chat socket from one source address, speaking SPEC section 7 frames."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def request(self, op: str, **fields) -> dict:
        rid = next(self.ids)
        await self.ws.send_message(json.dumps({"id": rid, "op": op, **fields}))
        with trio.fail_after(TIMEOUT):
            while True:
                frame = json.loads(await self.ws.get_message())
                if frame.get("re") == rid:
                    return frame


async def test_chat_messages_are_limited_per_address_across_names(nursery, tmp_path):
    """Finding 8, small: many names from one address each spending their own burst. The
    address's bucket (burst 5 here) holds for all of them together; another address's
    acknowledgements keep coming."""
    server = await start_chat_server(nursery, tmp_path, **{
        "limits.trusted_networks": [], "limits.chat_burst": 5,
        "limits.chat_messages_per_second": 0.001, "chat.burst": 10})
    names = [f"name{i}" for i in range(3)]
    tokens = {name: await server.join(name) for name in names + ["bystander"]}
    sent = refused = 0
    async with open_ws_from(ATTACKER, server.port, "/ws/chat") as w0, \
            open_ws_from(ATTACKER, server.port, "/ws/chat") as w1, \
            open_ws_from(ATTACKER, server.port, "/ws/chat") as w2, \
            open_ws_from(OTHER, server.port, "/ws/chat") as w3:
        socks = [RawChat(w) for w in (w0, w1, w2)]
        rooms = []
        for chat, name in zip(socks, names):
            hello = await chat.request("hello", token=tokens[name])
            assert hello["ok"], hello
            rooms.append(hello["public_room"])
        for round_ in range(3):  # each name could send 10 on its own; the address may send 5
            for chat, room in zip(socks, rooms):
                reply = await chat.request("msg.send", room=room, kind="text", text=f"spam {round_}")
                if reply["ok"]:
                    sent += 1
                else:
                    assert reply["error"]["code"] == "rate_limited" and reply["error"]["retry_after"] > 0
                    refused += 1
        bystander = RawChat(w3)
        hello = await bystander.request("hello", token=tokens["bystander"])
        reply = await bystander.request("msg.send", room=hello["public_room"], kind="text", text="hi")
        assert reply["ok"], reply
    assert (sent, refused) == (5, 4)
    assert server.stats.get("drop.limit_chat_address_rate") == 4
    assert server.stats.get("drop.chat_rate_limited") == 0  # no name reached its own limit
