"""worldserver.sctp_acks on real aiortc peers (server: RtcService; client: stock aiortc).

The client sends a message every 50 ms and the server echoes each one, as inputs and
snapshots go: with delayed acknowledgements the server's SACK rides in the echo's packet, so
the server sends about one datagram per exchange instead of two; every echo still arrives, and
both sides' sent queues drain (every DATA chunk was acknowledged correctly). aiortc's timers
run on the asyncio loop's real clock: the bundling test makes the acknowledgement delay far
longer than any echo takes (so the count of datagrams does not depend on the machine's
speed), and the timer test waits for the lone acknowledgement with a generous deadline instead
of asserting how soon it came. Must not: reach any address but 127.0.0.1 or wait without a
deadline.
"""

from __future__ import annotations

import trio

from test_rtc import DEADLINE, LOOPBACK, config, run_with_service, wait_for
from worldclient.rtc_client import open_geckos
from worldserver import sctp_acks

EXCHANGES = 30
LONG_DELAY = 60.0  # an acknowledgement delay no echo round trip comes near


def exchange(delayed: bool) -> dict:
    """Run EXCHANGES echo round trips; count the datagrams the server's DTLS layer sent."""

    async def body(service, base_url, handler):
        channel = await open_geckos(base_url, host_addresses=LOOPBACK, timeout=DEADLINE)
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
            echoes.append(await channel.receive(timeout=DEADLINE))
        # every DATA chunk of both sides is acknowledged (the last input's SACK rode with its echo)
        await wait_for(lambda: not server_sctp._sent_queue and not channel.pc.sctp._sent_queue)
        counts = {k: sctp_acks.ACK_COUNTS[k] - before.get(k, 0) for k in ("bundled", "delayed", "immediate", "timer")}
        packets = sent["packets"]  # before the close (its stream reset has packets of its own)
        await channel.close()
        return {"packets": packets, "echoes": echoes, "counts": counts,
                "patched": "_send_sack" in vars(server_sctp),
                "client_patched": "_send_sack" in vars(channel.pc.sctp)}

    _, result = run_with_service(body, config=config(**{"webrtc.delayed_acks": str(delayed).lower()}))
    assert result["echoes"] == [b"echo:input %d" % i for i in range(EXCHANGES)]
    assert not result["client_patched"]  # only the server's peers change
    return result


def test_acknowledgements_ride_with_the_echo(monkeypatch) -> None:
    monkeypatch.setattr(sctp_acks, "ACK_DELAY", LONG_DELAY)
    delayed = exchange(True)
    stock = exchange(False)
    assert delayed["patched"] and not stock["patched"]
    assert stock["packets"] == 2 * EXCHANGES  # echo + SACK for every input
    assert delayed["packets"] == EXCHANGES  # the SACK inside the echo's packet, nothing else
    assert delayed["counts"] == {"bundled": EXCHANGES, "delayed": EXCHANGES, "immediate": 0, "timer": 0}
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
        channel = await open_geckos(base_url, host_addresses=LOOPBACK, timeout=DEADLINE)
        await wait_for(lambda: handler.of("open"))
        before = sctp_acks.ACK_COUNTS["timer"]
        assert channel.send_binary(b"no answer")
        await wait_for(lambda: handler.of("binary"))
        client_sctp = channel.pc.sctp
        await wait_for(lambda: not client_sctp._sent_queue)  # acknowledged by the timer alone
        assert sctp_acks.ACK_COUNTS["timer"] == before + 1
        await channel.close()
        return True

    run_with_service(body, handler=Silent())
