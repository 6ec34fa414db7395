"""worldserver.sctp_acks on real aiortc peers (server: RtcService; client: stock aiortc).

The client sends a message every 50 ms and the server echoes each one, as inputs and
snapshots go: with delayed acknowledgements the server's SACK rides in the echo's packet, so
the server sends about one datagram per exchange instead of two; every echo still arrives, and
both sides' sent queues drain (every DATA chunk was acknowledged correctly). Must not: reach
any address but 127.0.0.1 or wait without a deadline.
"""

from __future__ import annotations

import trio

from test_rtc import LOOPBACK, config, run_with_service, wait_for
from worldclient.rtc_client import open_geckos
from worldserver import sctp_acks

EXCHANGES = 30


def exchange(delayed: bool) -> dict:
    """Run EXCHANGES echo round trips; count the datagrams the server's DTLS layer sent."""

    async def body(service, base_url, handler):
        channel = await open_geckos(base_url, host_addresses=LOOPBACK, timeout=5)
        await wait_for(lambda: handler.of("open"))
        peer = service.peers[channel.id]
        server_sctp = peer.pc.sctp
        dtls = server_sctp.transport
        sent = {"packets": 0}
        original = dtls._send_data

        async def counting(data: bytes) -> None:
            sent["packets"] += 1
            await original(data)

        dtls._send_data = counting
        before = dict(sctp_acks.ACK_COUNTS)
        echoes = []
        for i in range(EXCHANGES):
            assert channel.send_binary(b"input %d" % i)
            echoes.append(await channel.receive(timeout=3))
            await trio.sleep(0.05)
        await trio.sleep(3 * sctp_acks.ACK_DELAY)  # the last acknowledgements go out
        await wait_for(lambda: not server_sctp._sent_queue and not channel.pc.sctp._sent_queue)
        counts = {k: sctp_acks.ACK_COUNTS[k] - before.get(k, 0) for k in ("bundled", "delayed", "immediate", "timer")}
        await channel.close()
        return {"packets": sent["packets"], "echoes": echoes, "counts": counts,
                "patched": "_send_sack" in vars(server_sctp),
                "client_patched": "_send_sack" in vars(channel.pc.sctp)}

    _, result = run_with_service(body, config=config(**{"webrtc.delayed_acks": str(delayed).lower()}))
    assert result["echoes"] == [b"echo:input %d" % i for i in range(EXCHANGES)]
    assert not result["client_patched"]  # only the server's peers change
    return result


def test_acknowledgements_ride_with_the_echo() -> None:
    delayed = exchange(True)
    stock = exchange(False)
    assert delayed["patched"] and not stock["patched"]
    assert stock["packets"] >= 1.8 * EXCHANGES  # echo + SACK for every input
    assert delayed["packets"] <= 1.3 * EXCHANGES  # the SACK inside the echo's packet
    assert delayed["counts"]["bundled"] >= 0.8 * EXCHANGES
    assert stock["counts"] == {"bundled": 0, "delayed": 0, "immediate": 0, "timer": 0}


def test_a_lone_acknowledgement_goes_out_after_the_delay() -> None:
    """Data that is not answered is still acknowledged, within ACK_DELAY (the timer)."""

    class Silent:
        def __init__(self):
            self.events = []

        def on_open(self, peer):
            self.events.append(("open", peer.id))

        def on_binary(self, peer, data):
            self.events.append(("binary", peer.id, data))

        def on_text(self, peer, text):
            pass

        def on_close(self, peer, reason):
            pass

        def of(self, kind):
            return [e for e in self.events if e[0] == kind]

    async def body(service, base_url, handler):
        channel = await open_geckos(base_url, host_addresses=LOOPBACK, timeout=5)
        await wait_for(lambda: handler.of("open"))
        before = sctp_acks.ACK_COUNTS["timer"]
        assert channel.send_binary(b"no answer")
        await wait_for(lambda: handler.of("binary"))
        client_sctp = channel.pc.sctp
        with trio.fail_after(5 * sctp_acks.ACK_DELAY + 1):
            while client_sctp._sent_queue:
                await trio.sleep(0.01)
        assert sctp_acks.ACK_COUNTS["timer"] == before + 1
        await channel.close()
        return True

    run_with_service(body, handler=Silent())
