"""WebRTC offers under a flood from one address: real aiortc on loopback, trio's MockClock.

Finding 4 of the attack of issue 8: 2,000 unanswered ``POST /.wrtc/v2/connections`` in 6 s
left 4,018 open files, and every further offer, real ones included, got 503 for about 15 s.
Here, small: one address gets at most ``limits.pending_offers_per_address`` offers not yet open
and every further one is refused before any RTCPeerConnection (or socket) exists, while other
addresses still get theirs; the table of unopened offers never holds more than
``limits.pending_offers``; unanswered offers are closed after ``limits.offer_timeout`` and the
file descriptors they held are given back (``/proc/self/fd``). The trio clock is a MockClock
that only moves when a test jumps it, so the expiry does not depend on the machine's speed.
The last test goes through the real HTTP app of a ``worldserver run`` process, whose client
address reaches the WebRTC service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import httpx
import trio
import trio.testing

from tests.test_server_process import start_server
from worldclient import aio_bridge
from worldclient.aio_bridge import Inbox, aio
from worldserver import rtc
from worldserver.config import load_config
from worldserver.limits import AddressLimits

ATTACKER, OTHER = "127.0.0.1", "127.0.0.2"


def config(**overrides):
    values = {"webrtc.host_addresses": "127.0.0.1", "limits.trusted_networks": ""}
    values.update({f"limits.{k}": str(v) for k, v in overrides.items()})
    return load_config(path=None, env={}, overrides=values)


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


class Handler:
    def on_open(self, peer): pass
    def on_binary(self, peer, data): pass
    def on_text(self, peer, text): pass
    def on_close(self, peer, reason): pass


def counting_peer_connections(monkeypatch) -> list:
    """Every RTCPeerConnection the service makes (real ones, counted)."""
    made = []

    class Counted(rtc.RTCPeerConnection):
        def __init__(self, *args, **kwargs) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(rtc, "RTCPeerConnection", Counted)
    return made


async def settle(service) -> None:
    """Let closes that were started finish, and asyncio run what they scheduled (a transport
    closes its socket in a callback after ``close()``)."""
    await trio.testing.wait_all_tasks_blocked()
    await service.wait_closes()
    for _ in range(3):
        await aio(asyncio.sleep(0))


@contextlib.contextmanager
def thawed_on_failure(clock):
    """A failing test must fail, not hang: if the block raises, the clock jumps by itself
    from then on, so the service's shutdown waits (in trio time) end."""
    try:
        yield
    except BaseException:
        clock.autojump_threshold = 0
        raise


async def close_all(service, nursery) -> None:
    """Close what is left and stop the service: with the clock frozen, its shutdown must not
    find peers to wait for (it gives their goodbyes a quarter of a second of trio time)."""
    for peer_id in list(service.peers):
        await service.close(peer_id)
    await settle(service)
    nursery.cancel_scope.cancel()


def test_one_address_cannot_take_the_offer_table(monkeypatch):
    made = counting_peer_connections(monkeypatch)
    clock = trio.testing.MockClock()  # rate 0: moves only when jumped
    settings = config(pending_offers_per_address=4, pending_offers=6, offer_timeout=3)

    async def main():
        service = rtc.RtcService(config=settings, inbox=Inbox(), handler=Handler())
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            with thawed_on_failure(clock):
                before = open_files()
                for _ in range(4):
                    status, offer, _ = await service.create_connection(None, ATTACKER)
                    assert status == 200 and offer["localDescription"]["type"] == "offer"
                holding = open_files()
                assert holding > before  # the offers hold sockets
                for _ in range(26):
                    assert (await service.create_connection(None, ATTACKER))[:2] == (503, "503")
                # refused before anything was made: no peer connection, not one more file
                assert len(made) == 4 and open_files() == holding
                assert service.stats.get("drop.limit_rtc_pending_address") == 26

                # Everyone else still connects while that address floods.
                assert (await service.create_connection(None, OTHER))[0] == 200
                assert (await service.create_connection(None, "127.0.0.3"))[0] == 200
                # The table as a whole is bounded too (6 here), whoever asks.
                assert (await service.create_connection(None, "127.0.0.4"))[0] == 503
                assert service.stats.get("drop.limit_rtc_pending_total") == 1
                assert len(made) == 6 and len(service.peers) == 6

                # Unanswered offers are closed after limits.offer_timeout, and give back their files.
                clock.jump(2.9)
                await settle(service)
                assert len(service.peers) == 6
                clock.jump(1.0)  # the reaper looks every offer_timeout / 4 seconds
                await settle(service)
                assert service.peers == {} and service.pending.total == 0
                assert service.stats.get("rtc.closed.offer_timeout") == 6
                assert open_files() <= before
                assert (await service.create_connection(None, ATTACKER))[0] == 200  # its place is back
                await close_all(service, nursery)

    aio_bridge.run(main, clock=clock)


def test_offer_requests_over_the_address_bucket_get_429(monkeypatch):
    made = counting_peer_connections(monkeypatch)
    settings = config(handshakes_per_second=0.001, handshake_burst=2)

    async def main():
        service = rtc.RtcService(config=settings, inbox=Inbox(), handler=Handler())
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            assert [(await service.create_connection(None, ATTACKER))[0] for _ in range(3)] == [200, 200, 429]
            assert len(made) == 2 and service.stats.get("drop.limit_rtc_handshake_rate") == 1
            assert (await service.create_connection(None, OTHER))[0] == 200
            nursery.cancel_scope.cancel()

    aio_bridge.run(main)


def test_offers_count_among_the_address_connections(monkeypatch):
    """One pool per address for every transport: a UDP connection (counted in the shared
    AddressLimits) and an offer fill a cap of 2; the offer's end gives its place back."""
    made = counting_peer_connections(monkeypatch)
    settings = config(connections_per_address=2)
    limits = AddressLimits(settings.limits)
    key = limits.key(ATTACKER)
    assert limits.connect(key)  # as NativeSessions does for a UDP client of that address

    async def main():
        service = rtc.RtcService(config=settings, inbox=Inbox(), handler=Handler(), limits=limits)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            status, offer, _ = await service.create_connection(None, ATTACKER)
            assert status == 200 and limits.connections.get(key) == 2
            assert (await service.create_connection(None, ATTACKER))[0] == 503
            assert len(made) == 1 and service.stats.get("drop.limit_rtc_address_connections") == 1
            await service.close(offer["id"])
            assert limits.connections.get(key) == 1
            assert (await service.create_connection(None, ATTACKER))[0] == 200
            for peer_id in list(service.peers):
                await service.close(peer_id)
            assert limits.connections.get(key) == 1 and service.pending.total == 0
            nursery.cancel_scope.cancel()

    aio_bridge.run(main)


def test_an_answered_offer_is_not_expired_as_unanswered(monkeypatch):
    """Only unanswered offers go after offer_timeout; an answered one has open_timeout."""
    clock = trio.testing.MockClock()
    settings = config(offer_timeout=2)

    async def main():
        service = rtc.RtcService(config=settings, inbox=Inbox(), handler=Handler(), open_timeout=10)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            with thawed_on_failure(clock):
                _, offer, _ = await service.create_connection(None, ATTACKER)
                _, waiting, _ = await service.create_connection(None, ATTACKER)
                pc = rtc.RTCPeerConnection()
                answer = await aio(rtc.make_answer(
                    pc, rtc.RTCSessionDescription(**offer["localDescription"]), ["127.0.0.1"]))
                assert (await service.remote_description(offer["id"], {"sdp": answer.sdp, "type": "answer"}))[0] == 200
                await aio(pc.close())  # the browser went away after answering: never opens
                clock.jump(2.5)
                await settle(service)
                assert offer["id"] in service.peers and waiting["id"] not in service.peers
                clock.jump(8.0)
                await settle(service)
                assert offer["id"] not in service.peers  # but it did not open within open_timeout
                await close_all(service, nursery)
        return service

    service = aio_bridge.run(main, clock=clock)
    assert service.stats.get("rtc.closed.offer_timeout") == 1
    assert service.stats.get("rtc.closed.open_timeout") == 1


async def test_the_http_route_passes_the_client_address(tmp_path):
    proc, _udp, http = await start_server(
        "--data-dir", str(tmp_path), "--set", "webrtc.host_addresses=127.0.0.1",
        "--set", "limits.trusted_networks=", "--set", "limits.pending_offers_per_address=2")
    try:
        def client(source: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}", timeout=10,
                                     transport=httpx.AsyncHTTPTransport(local_address=source))

        async with client(ATTACKER) as attacker, client(OTHER) as other:
            statuses = [(await attacker.post("/.wrtc/v2/connections")).status_code for _ in range(5)]
            assert statuses == [200, 200, 503, 503, 503]
            refused = await attacker.post("/.wrtc/v2/connections")
            assert refused.headers["access-control-allow-origin"] == "*"  # geckos' CORS on it too
            assert (await other.post("/.wrtc/v2/connections")).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
