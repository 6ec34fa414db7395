"""A flooding client does not hurt the others: protocol facts, bounded (tools/attack/flood.py
measures the latency figures against a real process).

A real server in process on loopback on its default configuration (connect tokens required,
minted in process as the join would give them), trio's autojump MockClock (the swarm measures
on trio's clock, so nothing here depends on the machine's speed). Six normal bots on 127.0.0.1
play for 3 s while one stranger on 127.0.0.2 (not a trusted network) with its own keyed session
sends, every 10 ms, garbage datagrams of unknown types, connected packets with a wrong salt,
HELLOs, and valid INPUT packets of its session: 2,400 datagrams a second, bounded. The normal
bots get a snapshot every tick with nothing lost and see each other's turns within a few
ticks; every flood datagram is counted: each garbage datagram as ``bad_type``, each
wrong-salt packet as ``bad_tag`` (the session's tag is checked before the salt), the HELLOs
beyond the address's handshake allowance as ``drop.limit_udp_handshake_rate``, the INPUTs
beyond the session's input allowance as ``drop.input_rate``.
"""

from __future__ import annotations

import random
import socket

import pytest
import trio

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.client import ClientConnection
from protocol.events import Connected
from protocol.messages import Input, encode_inputs
from udp_support import mint_tickets
from worldserver.app import serve
from worldserver.config import load_config
from worldtools import swarm

FLOOD_ADDR = "127.0.0.2"
DURATION = 3.0
BATCH_EVERY = 0.01
PER_KIND = 6  # datagrams of each kind per batch
_CONNECTED_OR_HANDSHAKE = P.CONNECTED_TYPES | {P.HELLO, P.CONNECT, P.CHALLENGE, P.ACCEPT, P.REFUSE}
UNKNOWN_TYPES = [t for t in range(256) if t not in _CONNECTED_OR_HANDSHAKE]


def _config(tmp_path):
    return load_config(None, env={}, overrides={
        "udp.port": "0", "udp.host": "127.0.0.1", "http.port": "0", "http.host": "127.0.0.1",
        "server.data_dir": str(tmp_path),
        "limits.trusted_networks": "127.0.0.1/32",  # the normal bots; the flooder is a stranger
    })


async def _connect(sock: socket.socket, server: tuple, ticket: tuple[bytes, bytes]) -> ClientConnection:
    token, key = ticket
    conn = ClientConnection(version=PROTOCOL_VERSION, nonce=random.getrandbits(64), token=token, key=key)
    sock.sendto(conn.connect(trio.current_time()), server)
    with trio.fail_after(2.0):
        while True:
            await trio.lowlevel.wait_readable(sock)
            events, out = conn.receive_datagram(sock.recv(2048), trio.current_time())
            for d in out:
                sock.sendto(d, server)
            if any(isinstance(e, Connected) for e in events):
                return conn


async def _flood(server: tuple, ticket: tuple, until: float, sent: dict, started: trio.Event) -> None:
    rng = random.Random(8)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((FLOOD_ADDR, 0))
    sock.setblocking(False)
    conn = await _connect(sock, server, ticket)
    sent["start"] = trio.current_time()
    started.set()
    seq = 0
    while trio.current_time() < until:
        batch = []
        for _ in range(PER_KIND):
            batch.append(("garbage", bytes([rng.choice(UNKNOWN_TYPES)]) + rng.randbytes(rng.randrange(0, 200))))
            batch.append(("wrong_salt", P.encode_header(P.INPUT, conn.salt ^ 0x5A5A5A5A, rng.getrandbits(16), 0, 0)
                          + encode_inputs([Input(1, 0, 0, 0, 0)])))
            batch.append(("hello", P.encode_hello(PROTOCOL_VERSION, rng.getrandbits(64))))
            seq += 1
            batch.append(("input", conn.packet(P.INPUT, encode_inputs([Input(seq, 127, 0, 0, 1)]), trio.current_time())))
        for kind, data in batch:
            sock.sendto(data, server)
            sent[kind] = sent.get(kind, 0) + 1
        while True:  # what the server answers its session: read, ignored
            try:
                sock.recv(2048)
            except BlockingIOError:
                break
        await trio.sleep(BATCH_EVERY)
    sent["end"] = trio.current_time()
    sock.close()


async def test_a_flooding_stranger_does_not_hurt_the_players(autojump_clock, tmp_path):
    autojump_clock.jump(1.0)  # the swarm's times must be above 0
    config = _config(tmp_path)
    sent: dict = {}
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, config)
        host, port = running.udp_address[:2]
        endpoint, stats = running.udp.endpoint, running.stats
        before = dict(endpoint.drops), {k: stats.get(k) for k in ("drop.limit_udp_handshake_rate", "drop.input_rate")}
        started = trio.Event()
        flooder, *players = mint_tickets(running, 7)
        nursery.start_soon(_flood, (host, port), flooder, trio.current_time() + DURATION + 1.0, sent, started)
        await started.wait()
        report = await swarm.run_bots(host, port, bots=6, duration=DURATION, observers=3, seed=5,
                                      clock=trio.current_time, tickets=players)
        with trio.fail_after(3.0):
            while "end" not in sent:
                await trio.sleep(0.05)
        await trio.sleep(0.2)  # the last datagrams are read
        drops = {k: v - before[0].get(k, 0) for k, v in endpoint.drops.items()}
        limited = {k: stats.get(k) - v for k, v in before[1].items()}
        nursery.cancel_scope.cancel()

    tick_rate = config.sim.tick_rate
    # The players: every tick's snapshot, nothing lost, turns seen within a few ticks.
    assert report["connected"] == 6 and report["failures"] == 0, report["failure_reasons"]
    assert report["snapshots_per_bot_s"] == pytest.approx(tick_rate, rel=0.1)
    assert report["packet_loss"] == 0.0
    assert report["latency_samples"] >= 1 and report["latency_ms_p99"] <= 4 * 1000 / tick_rate
    # The flood was real: 2,400 datagrams a second through the whole run.
    elapsed = sent["end"] - sent["start"]
    assert elapsed >= DURATION and sent["garbage"] >= PER_KIND * DURATION / BATCH_EVERY
    # Every one of them is accounted for.
    assert drops.get("bad_type", 0) == sent["garbage"]
    assert drops.get("bad_tag", 0) == sent["wrong_salt"]
    lim = config.limits
    hello_allowance = lim.handshake_burst + lim.handshakes_per_second * elapsed
    assert sent["hello"] - hello_allowance <= limited["drop.limit_udp_handshake_rate"] <= sent["hello"]
    input_allowance = config.sim.input_burst + config.sim.input_rate_limit * elapsed
    assert sent["input"] - input_allowance <= limited["drop.input_rate"] <= sent["input"]
