"""worldserver.rtc and worldclient.rtc_client: real aiortc peers on loopback, no mocks.

A tiny HTTP/1.1 shim (below) serves the four geckos.io routes from an RtcService, so the
Python client does the same HTTP exchange a browser does. Tests are plain functions that call
``aio_bridge.run`` (aiortc needs the asyncio host; trio runs as its guest). aiortc's timers run
on the asyncio loop's real clock, so these tests wait for conditions and events (with generous
deadlines) and never assert how long something took; "no late event" is checked behind a
barrier (:func:`settled`), not after a sleep, and reaping is driven with an explicit ``now``.
"""

from __future__ import annotations

import json
import re
from functools import partial

import aioice.ice
import pytest
import trio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from worldclient.rtc_client import GeckosClosed, GeckosError, open_geckos
from worldclient import aio_bridge
from worldclient.aio_bridge import Inbox, aio
from worldclient.ice import ice_host_addresses
from worldserver import rtc
from worldserver.config import load_config

LOOPBACK = ["127.0.0.1"]
DEADLINE = 10.0  # seconds any one awaited condition may take (generous: a loaded 2-core machine)
MDNS_LINE = "a=candidate:3 1 udp 2122260223 4f0c2a9e-1d2b-4c3d-9e8f-0a1b2c3d4e5f.local 50123 typ host"


def config(**overrides):
    values = {"webrtc.host_addresses": "127.0.0.1"}
    values.update(overrides)
    return load_config(path=None, env={}, overrides=values)


class Recorder:
    """A handler that records every call (in trio context) and echoes binary messages."""

    def __init__(self, echo: bool = True) -> None:
        self.events: list[tuple] = []
        self.peers: list[rtc.RtcPeer] = []
        self.echo = echo

    def on_open(self, peer):
        assert trio.lowlevel.current_trio_token()  # called in trio context
        self.events.append(("open", peer.id))
        self.peers.append(peer)

    def on_binary(self, peer, data):
        assert isinstance(data, bytes)
        self.events.append(("binary", peer.id, data))
        if self.echo:
            peer.send(b"echo:" + data)

    def on_text(self, peer, text):
        assert isinstance(text, str)
        self.events.append(("text", peer.id, text))
        if self.echo:
            peer.send("echo:" + text)

    def on_close(self, peer, reason):
        self.events.append(("close", peer.id, reason))

    def of(self, kind):
        return [e for e in self.events if e[0] == kind]


async def wait_for(predicate, timeout=DEADLINE):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def settled(service: rtc.RtcService, *pcs: RTCPeerConnection) -> None:
    """Wait until aiortc has closed ``pcs`` and every event it queued for trio was handled:
    a callback submitted to the service's inbox now runs after all of them (the inbox is FIFO)."""
    await wait_for(lambda: all(pc.connectionState == "closed" for pc in pcs))
    barrier = trio.Event()
    service._inbox.submit(barrier.set)
    with trio.fail_after(DEADLINE):
        await barrier.wait()


# ------------------------------------------------------------------------------------------
# A minimal HTTP/1.1 server for the geckos routes (test scaffolding, keep-alive, no CORS).

ROUTE = re.compile(r"^/\.wrtc/v2/connections(?:/([^/]+)/(remote-description|additional-candidates|close))?$")


async def _handle_http(service: rtc.RtcService, stream: trio.SocketStream) -> None:
    buffer = b""
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buffer += chunk
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
            length = int(headers.get("content-length", "0"))
            while len(buffer) < length:
                buffer += await stream.receive_some(65536)
            body, buffer = buffer[:length], buffer[length:]
            status, payload, out_headers = await _route(service, method, path, headers, body)
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            out_headers = {"content-type": "application/json", **out_headers}
            response = f"HTTP/1.1 {status} X\r\ncontent-length: {len(data)}\r\n"
            response += "".join(f"{k}: {v}\r\n" for k, v in out_headers.items()) + "\r\n"
            await stream.send_all(response.encode() + data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _route(service, method, path, headers, body):
    match = ROUTE.match(path)
    if match is None:
        return 404, "404: Not Found", {}
    conn_id, action = match.groups()
    if action is None and method == "POST":
        return await service.create_connection(headers.get("authorization"))
    if action == "remote-description" and method == "POST":
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        return await service.remote_description(conn_id, parsed)
    if action == "additional-candidates" and method == "GET":
        return await service.additional_candidates(conn_id)
    if action == "close" and method == "POST":
        return await service.close(conn_id)
    return 404, "404: Not Found", {}


async def serve_http(service, *, task_status=trio.TASK_STATUS_IGNORED):
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        task_status.started(f"http://127.0.0.1:{port}")
        await trio.serve_listeners(partial(_handle_http, service), listeners, handler_nursery=nursery)


def run_with_service(body, *, handler=None, authorize=None, **service_kwargs):
    """Run ``body(service, base_url, handler)`` with a running RtcService and HTTP shim."""
    handler = handler if handler is not None else Recorder()

    async def main():
        service = rtc.RtcService(config=service_kwargs.pop("config", None) or config(),
                                 inbox=Inbox(), handler=handler, authorize=authorize, **service_kwargs)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            base_url = await nursery.start(serve_http, service)
            with trio.fail_after(6 * DEADLINE):
                result = await body(service, base_url, handler)
            nursery.cancel_scope.cancel()
        return service, result

    return aio_bridge.run(main)


# ------------------------------------------------------------------------------------------


def test_open_send_both_ways_and_close():
    async def body(service, base_url, handler):
        channel = await open_geckos(base_url, host_addresses=LOOPBACK, timeout=DEADLINE)
        assert len(channel.id) == 24 and channel.id.isalnum()
        assert channel.user_data == {}
        assert channel.label == "geckos.io"
        assert channel.ordered is False
        assert channel.max_retransmits == 0
        await wait_for(lambda: handler.of("open"))
        assert handler.of("open") == [("open", channel.id)]
        peer = service.peers[channel.id]
        assert peer.opened and peer.user_data == {}
        assert peer.channel.ordered is False and peer.channel.maxRetransmits == 0

        assert channel.send_binary(b"\x01\x02hello")
        assert channel.send_text("héllo")
        replies = {await channel.receive(timeout=DEADLINE), await channel.receive(timeout=DEADLINE)}
        assert replies == {b"echo:\x01\x02hello", "echo:héllo"}
        assert ("binary", channel.id, b"\x01\x02hello") in handler.events
        assert ("text", channel.id, "héllo") in handler.events

        assert peer.send(b"\x00raw") and peer.send('{"chat":"hi"}')
        got = {await channel.receive(timeout=DEADLINE), await channel.receive(timeout=DEADLINE)}
        assert got == {b"\x00raw", '{"chat":"hi"}'}
        assert isinstance(peer.buffered_amount(), int)

        await channel.close()
        await wait_for(lambda: not service.peers and handler.of("close"))
        await settled(service, peer.pc)  # late aiortc events must not cause a second on_close
        assert handler.of("close") == [("close", channel.id, "client_close")]
        assert peer.closed and not peer.send(b"late")
        return True

    service, _ = run_with_service(body)
    assert service.peers == {}
    assert service.stats.get("rtc.closed.client_close") == 1
    assert service.stats.get("drop.rtc_send_not_open") == 1


def test_mdns_candidates_are_stripped_from_the_answer():
    def add_mdns(sdp: str) -> str:
        lines = sdp.split("\r\n")
        at = next(i for i, line in enumerate(lines) if line.startswith("a=candidate:"))
        lines.insert(at, MDNS_LINE)
        assert MDNS_LINE in "\r\n".join(lines)
        return "\r\n".join(lines)

    async def body(service, base_url, handler):
        channel = await open_geckos(base_url, host_addresses=LOOPBACK, answer_filter=add_mdns, timeout=DEADLINE)
        peer = service.peers[channel.id]
        remote_sdp = peer.pc.remoteDescription.sdp
        assert ".local" not in remote_sdp
        assert "a=candidate:" in remote_sdp  # the real candidates are kept
        assert channel.send_binary(b"x")
        assert await channel.receive(timeout=DEADLINE) == b"echo:x"
        await channel.close()
        return True

    service, _ = run_with_service(body)
    assert service.stats.get("rtc.mdns_candidates_stripped") == 1


def test_authorization_outcomes():
    seen = []

    def hook(value):
        seen.append(value)
        if value == "raise":
            raise RuntimeError("hook failed")
        return {"true": True, "false": False, "403": 403, "999": 999, "none": None,
                "dict": {"name": "ada"}, "text": "not user data"}[value]

    async def async_hook(value):
        await trio.sleep(0)
        return hook(value)

    expected = {"true": (200, {}), "false": (401, None), "403": (403, None), "999": (500, None),
                "none": (500, None), "raise": (500, None), "dict": (200, {"name": "ada"}),
                "text": (500, None)}

    async def body(service, base_url, handler):
        for value, (status, user_data) in expected.items():
            got_status, got_body, headers = await service.create_connection(value)
            assert got_status == status, value
            if status == 200:
                assert got_body["userData"] == user_data
                assert got_body["localDescription"]["type"] == "offer"
                assert "a=candidate:" in got_body["localDescription"]["sdp"]
                assert re.fullmatch(r"[A-Za-z0-9]{24}", got_body["id"])
                await service.close(got_body["id"])
            else:
                assert isinstance(got_body, str) and got_body.startswith(str(status))
                assert headers["content-type"] == "text/plain"
        # the same hook as a coroutine function
        service._authorize = async_hook
        status, got_body, _ = await service.create_connection("dict")
        assert status == 200 and got_body["userData"] == {"name": "ada"}
        await service.close(got_body["id"])
        # over HTTP with the real client: the header arrives as it is, user data comes back
        channel = await open_geckos(base_url, authorization="dict", host_addresses=LOOPBACK, timeout=DEADLINE)
        assert channel.user_data == {"name": "ada"}
        await wait_for(lambda: handler.peers)
        assert handler.peers[0].user_data == {"name": "ada"}
        await channel.close()
        with pytest.raises(GeckosError) as refused:
            await open_geckos(base_url, authorization="403", host_addresses=LOOPBACK, timeout=DEADLINE)
        assert refused.value.status == 403
        return True

    service, _ = run_with_service(body, authorize=hook)
    assert seen[: len(expected)] == list(expected)
    assert seen[-1] == "403"
    assert service.stats.get("rtc.refused.401") == 1
    assert service.stats.get("rtc.refused.403") == 2
    assert service.stats.get("rtc.refused.500") == 4
    assert service.peers == {}


def test_unknown_ids_and_malformed_bodies():
    async def body(service, base_url, handler):
        unknown = "A" * 24
        assert (await service.remote_description(unknown, {"sdp": "v=0", "type": "answer"}))[0] == 404
        assert (await service.additional_candidates(unknown))[0] == 404
        assert (await service.close(unknown))[:2] == (200, "200: OK")
        assert (await service.remote_description(None, None))[0] == 404

        status, offer, _ = await service.create_connection(None)
        conn_id = offer["id"]
        assert await service.additional_candidates(conn_id) == (200, [], {"content-type": "application/json"})
        for bad in (None, [], "text", {"type": "answer"}, {"sdp": 5, "type": "answer"},
                    {"sdp": "v=0", "type": "offer"}, {"sdp": "v=0"}):
            status, text, _ = await service.remote_description(conn_id, bad)
            assert (status, text) == (400, "400: Bad Request"), bad
        status, _, _ = await service.remote_description(conn_id, {"sdp": "garbage", "type": "answer"})
        assert status == 400
        assert conn_id in service.peers  # a bad answer does not kill the connection
        await service.close(conn_id)
        assert service.peers == {}
        return True

    service, _ = run_with_service(body)
    assert service.stats.get("rtc.bad_request.malformed") == 7
    assert service.stats.get("rtc.bad_request.bad_answer") == 1
    assert service.stats.get("rtc.bad_request.unknown_id") == 3
    assert service.stats.get("rtc.dropped_unopened") == 1


def test_server_side_close_and_vanished_client():
    async def body(service, base_url, handler):
        first = await open_geckos(base_url, host_addresses=LOOPBACK, timeout=DEADLINE)
        second = await open_geckos(base_url, host_addresses=LOOPBACK, timeout=DEADLINE)
        await wait_for(lambda: len(handler.of("open")) == 2)
        # the server closes the first peer: on_close at once, the client notices
        server_pcs = [service.peers[first.id].pc, service.peers[second.id].pc]
        service.peers[first.id].close()
        assert ("close", first.id, "server_close") in handler.events
        with pytest.raises(GeckosClosed):
            with trio.fail_after(5):
                while True:
                    await first.receive()
        # the second client's peer connection goes away without POST /close
        await aio(second.pc.close())
        await wait_for(lambda: len(handler.of("close")) == 2)
        await settled(service, *server_pcs)
        assert len(handler.of("close")) == 2  # once each, late aiortc events included
        await first.close()
        await second.close()
        return True

    service, _ = run_with_service(body)
    closes = [e for e in service.stats.counters if e.startswith("rtc.closed.")]
    assert service.peers == {}
    assert service.stats.get("rtc.closed.server_close") == 1
    assert len(closes) == 2, service.stats.counters  # the vanished one, by state or channel


def test_unopened_peer_is_reaped_without_on_close():
    open_timeout = 60.0  # longer than the test: only the explicit reap() below closes it

    async def body(service, base_url, handler):
        status, offer, _ = await service.create_connection(None)
        assert status == 200 and offer["id"] in service.peers
        peer = service.peers[offer["id"]]
        assert peer.send(b"too early") is False
        assert service.reap(peer.created_at + open_timeout - 1) == 0
        assert offer["id"] in service.peers
        assert service.reap(peer.created_at + open_timeout + 1) == 1
        assert not service.peers
        await settled(service, peer.pc)
        return peer

    service, peer = run_with_service(body, open_timeout=open_timeout, offer_timeout=open_timeout)
    assert peer.closed and peer.close_reason == "open_timeout"
    assert service.stats.get("rtc.closed.open_timeout") == 1
    assert service.stats.get("drop.rtc_send_not_open") == 1


def test_shutdown_closes_every_peer_once():
    handler = Recorder()
    ids = []

    async def body(service, base_url, handler):
        channel = await open_geckos(base_url, host_addresses=LOOPBACK, timeout=DEADLINE)
        ids.append(channel.id)
        await wait_for(lambda: handler.of("open"))
        return channel

    service, channel = run_with_service(body, handler=handler)
    assert service.peers == {}
    assert handler.of("close") == [("close", ids[0], "server_shutdown")]


def test_goodbye_from_on_close_goes_out_and_reentrant_close_is_ignored():
    class Goodbye(Recorder):
        def on_close(self, peer, reason):
            super().on_close(peer, reason)
            assert peer.send(b"bye:" + reason.encode())  # still open during on_close
            peer.close("again")  # re-entrant: ignored

    async def body(service, base_url, handler):
        channel = await open_geckos(base_url, host_addresses=LOOPBACK, timeout=DEADLINE)
        await wait_for(lambda: handler.of("open"))
        await service.aclose()
        assert await channel.receive(timeout=DEADLINE) == b"bye:server_shutdown"
        status, text, _ = await service.create_connection(None)
        assert status == 503  # refused once closing
        await channel.close()
        return channel.id

    service, conn_id = run_with_service(body, handler=Goodbye())
    assert service.stats.get("rtc.closed.again") == 0
    assert service.stats.get("rtc.closed.server_shutdown") == 1


def test_full_service_refuses_with_503():
    async def body(service, base_url, handler):
        status, offer, _ = await service.create_connection(None)
        assert status == 200
        status, text, _ = await service.create_connection(None)
        assert (status, text) == (503, "503")
        return True

    service, _ = run_with_service(body, max_peers=1)
    assert service.stats.get("rtc.refused.full") == 1


# -- pure functions and the host-address hook ------------------------------------------------


def test_strip_mdns_and_announce_address():
    sdp = ("v=0\r\nc=IN IP4 10.0.0.5\r\n"
           "a=candidate:1 1 udp 2122260223 10.0.0.5 40000 typ host\r\n"
           f"{MDNS_LINE}\r\n"
           "a=candidate:2 1 udp 1686052607 203.0.113.9 40000 typ srflx raddr 10.0.0.5 rport 40000\r\n"
           "a=candidate:4 1 udp 2122262783 fd00::5 40001 typ host\r\n"
           "a=end-of-candidates\r\n")
    stripped, removed = rtc.strip_mdns_candidates(sdp)
    assert removed == 1 and ".local" not in stripped and stripped.count("a=candidate:") == 3
    assert rtc.strip_mdns_candidates(stripped) == (stripped, 0)

    announced = rtc.announce_address(stripped, "198.51.100.7")
    assert "a=candidate:1 1 udp 2122260223 198.51.100.7 40000 typ host\r\n" in announced
    assert "203.0.113.9 40000 typ srflx" in announced  # only host candidates are rewritten
    assert "fd00::5 40001 typ host" in announced  # ... of the announced address's family
    assert "c=IN IP4 198.51.100.7\r\n" in announced
    assert announced.count("\r\n") == stripped.count("\r\n")


def test_host_address_hook_is_scoped_to_the_offer():
    async def body(service, base_url, handler):
        status, offer, _ = await service.create_connection(None)
        sdp = offer["localDescription"]["sdp"]
        addresses = {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}
        assert addresses == {"127.0.0.1"}
        # outside an offer, aioice behaves as usual (no loopback)
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
        with ice_host_addresses(["127.0.0.1"]):
            assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
        await service.close(offer["id"])
        return True

    run_with_service(body)


def test_announced_address_is_in_the_offer():
    async def body(service, base_url, handler):
        status, offer, _ = await service.create_connection(None)
        sdp = offer["localDescription"]["sdp"]
        hosts = {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}
        assert hosts == {"192.0.2.10"}
        await service.close(offer["id"])
        return True

    run_with_service(body, config=config(**{"webrtc.announced_address": "192.0.2.10"}))


# -- repeated setups ----------------------------------------------------------------------


def test_repeated_setups_open_echo_and_close_cleanly():
    """Eight channels one after another over HTTP, and eight offers answered by bare aiortc
    peers without HTTP: each opens, carries a message, closes once, and leaves nothing behind
    (this used to print setup times; the benchmark tools measure those)."""
    rounds = 8

    async def over_http(service, base_url, handler):
        ids = []
        for i in range(rounds):
            channel = await open_geckos(base_url, host_addresses=LOOPBACK, timeout=DEADLINE)
            ids.append(channel.id)
            await wait_for(lambda: len(handler.of("open")) == i + 1)
            assert channel.send_binary(b"round %d" % i)
            assert await channel.receive(timeout=DEADLINE) == b"echo:round %d" % i
            pc = service.peers[channel.id].pc
            await channel.close()
            await wait_for(lambda: channel.id not in service.peers)
            await settled(service, pc)
        return ids

    async def bare(service, base_url, handler):
        ids = []
        for i in range(rounds):
            status, offer, _ = await service.create_connection(None)
            assert status == 200
            ids.append(offer["id"])
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            answer = await aio(rtc.make_answer(pc, RTCSessionDescription(**offer["localDescription"]), LOOPBACK))
            status, _, _ = await service.remote_description(offer["id"], {"sdp": answer.sdp, "type": "answer"})
            assert status == 200
            await wait_for(lambda: len(handler.of("open")) == i + 1)
            server_pc = service.peers[offer["id"]].pc
            await service.close(offer["id"])
            await aio(pc.close())
            await settled(service, server_pc)
        return ids

    for body in (over_http, bare):
        handler = Recorder()
        service, ids = run_with_service(body, handler=handler)
        assert len(set(ids)) == rounds
        assert [e[1] for e in handler.of("open")] == ids
        assert handler.of("close") == [("close", i, "client_close") for i in ids]
        assert service.peers == {}
        assert service.stats.get("rtc.offers") == rounds
        assert service.stats.get("rtc.opened") == rounds
        assert service.stats.get("rtc.closed.client_close") == rounds
        assert service._inbox.errors == 0
