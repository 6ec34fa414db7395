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
beyond the session's input allowance as ``drop.input_rate`` (with penalties off, so that every
datagram reaches the check that counts its kind).

Penalties (``limits.udp_drops_per_second``, ``limits.udp_penalty``, on by default): the same
flood on the default configuration is mostly dropped unread (``drop.udp_penalty``) once its
address's drops pass the threshold, except its session's connected packets; a session that
itself sends INPUTs far over its rate has every datagram dropped unread for the penalty, then
is served again, while another session on the same address (a player behind the same NAT)
plays on; garbage sent from a player's own address and port (as someone spoofing it would)
costs that player nothing; a trusted network is never penalized.
"""

from __future__ import annotations

import random
import socket

import pytest
import trio

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.client import ClientConnection
from protocol.events import Connected, Received
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


def _config(tmp_path, **extra):
    return load_config(None, env={}, overrides={
        "udp.port": "0", "udp.host": "127.0.0.1", "http.port": "0", "http.host": "127.0.0.1",
        "server.data_dir": str(tmp_path),
        "limits.trusted_networks": "127.0.0.1/32",  # the normal bots; the flooder is a stranger
        **extra,
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


THRESHOLD = 500  # limits.udp_drops_per_second, the default (checked below)
COUNTERS = ("drop.limit_udp_handshake_rate", "drop.input_rate", "drop.udp_penalty", "udp.penalties")


def _counts(running) -> dict:
    """The endpoint's drops by reason and the server's counters in COUNTERS, in one dict."""
    return {**running.udp.endpoint.drops, **{k: running.stats.get(k) for k in COUNTERS}}


def _delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items()}


async def _flood_beside_bots(config) -> tuple[dict, dict, dict]:
    """A real server on ``config``; the stranger's flood (``_flood``) from before six normal bots
    start until 1 s after they stop (they play for DURATION). Returns the swarm's report, what
    the flood sent, and how ``_counts`` changed over the run (the last datagrams read)."""
    sent: dict = {}
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, config)
        host, port = running.udp_address[:2]
        before = _counts(running)
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
        got = _delta(_counts(running), before)
        nursery.cancel_scope.cancel()
    return report, sent, got


async def test_a_flooding_stranger_does_not_hurt_the_players(autojump_clock, tmp_path):
    autojump_clock.jump(1.0)  # the swarm's times must be above 0
    # Every datagram is parsed (no penalties); an open world: the gallery's walls would turn a
    # latency probe into a slide along a wall, which is not the network's doing.
    config = _config(tmp_path, **{"limits.udp_drops_per_second": "0", "worlds.hosted": "open"})
    report, sent, got = await _flood_beside_bots(config)

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
    assert got.get("bad_type", 0) == sent["garbage"]
    assert got.get("bad_tag", 0) == sent["wrong_salt"]
    lim = config.limits
    hello_allowance = lim.handshake_burst + lim.handshakes_per_second * elapsed
    assert sent["hello"] - hello_allowance <= got["drop.limit_udp_handshake_rate"] <= sent["hello"]
    input_allowance = config.sim.input_burst + config.sim.input_rate_limit * elapsed
    assert sent["input"] - input_allowance <= got["drop.input_rate"] <= sent["input"]


# ------------------------------------------------------------------------------ penalties


def _socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def _input(conn: ClientConnection, seq: int) -> bytes:
    return conn.packet(P.INPUT, encode_inputs([Input(seq, 127, 0, 0, 1)]), trio.current_time())


async def _player(sock: socket.socket, server: tuple, ticket: tuple, until: float, result: dict,
                  extra=None, period: float = 0.01) -> None:
    """A well-behaved client: one INPUT every 50 ms (a tick; within its rate) until ``until``,
    counting the snapshots it gets (``result["snapshots"]``, from ``result["start"]``);
    ``extra(conn, rng)``, if given, gives datagrams to send from the same socket every
    ``period`` seconds besides (counted in ``result["extra"]``)."""
    rng = random.Random(3)
    conn = await _connect(sock, server, ticket)
    result.update(conn=conn, addr=sock.getsockname(), start=trio.current_time(), snapshots=0, extra=0, seq=0)
    next_input = trio.current_time()
    while trio.current_time() < until:
        if trio.current_time() >= next_input:
            result["seq"] += 1
            sock.sendto(_input(conn, result["seq"]), server)
            next_input += 0.05
        for data in extra(conn, rng) if extra is not None else ():
            sock.sendto(data, server)
            result["extra"] += 1
        while True:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                break
            events, out = conn.receive_datagram(data, trio.current_time())
            result["snapshots"] += sum(1 for e in events if isinstance(e, Received) and e.ptype == P.SNAPSHOT)
        await trio.sleep(period)
    result["end"] = trio.current_time()


def _wrong_tag(packet: bytes) -> bytes:
    return packet[:-1] + bytes([packet[-1] ^ 0xFF])


def _served_every_tick(result: dict, tick_rate: int) -> bool:
    return result["snapshots"] >= 0.9 * tick_rate * (result["end"] - result["start"])


def _session(running, addr: tuple):
    return running.udp.endpoint.connections[addr].user


async def test_the_default_configuration_drops_the_flood_unread_but_its_sessions_packets(autojump_clock, tmp_path):
    """The flood of the first test on the default configuration: once its address's drops pass
    the threshold, its garbage and HELLOs are dropped first thing; its session's connected
    packets are still checked (a wrong tag proves nothing about who sent it)."""
    autojump_clock.jump(1.0)
    config = _config(tmp_path)
    assert config.limits.udp_drops_per_second == THRESHOLD and config.limits.udp_penalty > DURATION + 1.0
    report, sent, got = await _flood_beside_bots(config)

    assert report["connected"] == 6 and report["failures"] == 0, report["failure_reasons"]
    assert report["snapshots_per_bot_s"] == pytest.approx(config.sim.tick_rate, rel=0.1)
    assert report["packet_loss"] == 0.0
    elapsed = sent["end"] - sent["start"]
    hello_allowance = config.limits.handshake_burst + config.limits.handshakes_per_second * elapsed
    unread = sent["garbage"] + sent["hello"]  # kinds that are no connected packet
    # One penalty, started after THRESHOLD drops and more, lasting the whole flood.
    assert got["udp.penalties"] == 1
    assert got["bad_type"] + got["bad_tag"] + got["drop.limit_udp_handshake_rate"] > THRESHOLD
    # Garbage and HELLOs: counted by kind until then, dropped unread since (nearly all of them).
    assert got["bad_type"] + got["drop.limit_udp_handshake_rate"] + got["drop.udp_penalty"] <= unread
    assert got["drop.udp_penalty"] >= unread - 2 * THRESHOLD - hello_allowance
    # The session's connected packets: every wrong-salt one checked and counted, none unread.
    assert got["bad_tag"] == sent["wrong_salt"]
    input_allowance = config.sim.input_burst + config.sim.input_rate_limit * elapsed
    assert sent["input"] - input_allowance <= got["drop.input_rate"] <= sent["input"]


async def test_a_session_far_over_its_input_rate_is_ignored_for_the_penalty_then_served(autojump_clock, tmp_path):
    """A session sending 1,000 INPUTs a second (its rate: 40) from 127.0.0.2 for 2 s: its drops
    pass the threshold, then every datagram from its address and port is dropped unread for
    ``limits.udp_penalty`` (1 s here), then it is served again. A player on the same address
    (behind the same NAT) plays on throughout."""
    autojump_clock.jump(1.0)
    config = _config(tmp_path, **{"limits.udp_penalty": "1.0"})
    tick_rate = config.sim.tick_rate
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, config)
        server = running.udp_address[:2]
        flooder_ticket, neighbour_ticket = mint_tickets(running, 2)
        fsock, nsock = _socket(FLOOD_ADDR), _socket(FLOOD_ADDR)
        conn = await _connect(fsock, server, flooder_ticket)
        neighbour: dict = {}
        t0 = trio.current_time()
        nursery.start_soon(_player, nsock, server, neighbour_ticket, t0 + 4.5, neighbour)
        before = _counts(running)
        seq = flooded = 0
        while trio.current_time() < t0 + 2.0:  # 20 INPUTs every 20 ms
            for _ in range(20):
                seq += 1
                fsock.sendto(_input(conn, seq), server)
                flooded += 1
            await trio.sleep(0.02)
        await trio.sleep(0.1)
        during = _delta(_counts(running), before)
        session = _session(running, fsock.getsockname())
        applied_by_flood = session.last_received_seq
        await trio.sleep_until(t0 + 3.5)  # the penalty is over
        middle = _counts(running)
        for _ in range(5):  # within its rate again: every one taken
            seq += 1
            fsock.sendto(_input(conn, seq), server)
            await trio.sleep(0.1)
        after = _delta(_counts(running), middle)
        taken_after = session.last_received_seq
        await trio.sleep_until(t0 + 4.7)  # the neighbour has stopped, its last input applied
        neighbour_applied = _session(running, neighbour["addr"]).applied
        nursery.cancel_scope.cancel()

    assert during["udp.penalties"] == 1
    # Its INPUTs: taken within the rate, then dropped over it until THRESHOLD drops and more, then
    # unread for the penalty; every one is accounted for.
    assert during["drop.input_rate"] > THRESHOLD and during["drop.udp_penalty"] > 0
    taken = flooded - during["drop.input_rate"] - during["drop.udp_penalty"]
    assert 0 < taken <= config.sim.input_burst + config.sim.input_rate_limit * 2.1
    assert applied_by_flood < flooded  # its last INPUTs were not read
    # After the penalty: served again, nothing dropped.
    assert taken_after == seq
    assert after["drop.udp_penalty"] == after["drop.input_rate"] == after["udp.penalties"] == 0
    # The neighbour on the same address: a snapshot every tick, its inputs applied.
    assert _served_every_tick(neighbour, tick_rate)
    assert neighbour_applied >= 0.9 * neighbour["seq"] - 2


async def test_garbage_from_a_players_own_address_and_port_costs_that_player_nothing(autojump_clock, tmp_path):
    """A player on 127.0.0.2 whose own address and port also send 1,000 garbage datagrams and
    1,000 connected packets with a wrong tag a second (as someone spoofing it would): the
    garbage is dropped unread once the address is penalized, the wrong-tag packets are all
    checked and counted, and the player gets every snapshot and has every input applied."""
    autojump_clock.jump(1.0)
    config = _config(tmp_path)
    tick_rate = config.sim.tick_rate

    def spoofed(conn: ClientConnection, rng: random.Random) -> list[bytes]:
        garbage = [bytes([rng.choice(UNKNOWN_TYPES)]) + rng.randbytes(rng.randrange(0, 100)) for _ in range(10)]
        wrong_tag = [_wrong_tag(_input(conn, rng.getrandbits(16))) for _ in range(10)]
        return garbage + wrong_tag

    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, config)
        server = running.udp_address[:2]
        (ticket,) = mint_tickets(running, 1)
        before = _counts(running)
        player: dict = {}
        sock = _socket(FLOOD_ADDR)
        await _player(sock, server, ticket, trio.current_time() + 3.0, player, extra=spoofed)
        await trio.sleep(0.1)
        got = _delta(_counts(running), before)
        applied = _session(running, player["addr"]).applied
        nursery.cancel_scope.cancel()

    garbage = wrong_tag = player["extra"] // 2
    assert got["udp.penalties"] == 1
    assert got["bad_type"] + got["drop.udp_penalty"] == garbage
    assert got["drop.udp_penalty"] >= garbage - 2 * THRESHOLD
    assert got["bad_tag"] == wrong_tag  # a connection's connected packets are never dropped unread
    assert got["drop.input_rate"] == 0
    assert _served_every_tick(player, tick_rate)
    assert applied >= 0.9 * player["seq"] - 2


@pytest.mark.parametrize("trusted", [False, True])
async def test_an_address_sending_garbage_from_many_ports_is_ignored_unless_trusted(autojump_clock, tmp_path, trusted):
    """2,000 garbage datagrams a second from 127.0.0.2, each batch from another of 20 ports, for
    1 s: penalized together (the address, not the port), and after ``limits.udp_penalty`` (1 s
    here) a HELLO from the address gets its CHALLENGE. From a trusted network: never."""
    autojump_clock.jump(1.0)
    nets = "127.0.0.0/8" if trusted else "127.0.0.1/32"
    config = _config(tmp_path, **{"limits.trusted_networks": nets, "limits.udp_penalty": "1.0"})
    rng = random.Random(4)
    socks = [_socket(FLOOD_ADDR) for _ in range(20)]
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, config)
        server = running.udp_address[:2]
        before = _counts(running)
        t0 = trio.current_time()
        sent = 0
        for batch in range(100):
            sock = socks[batch % len(socks)]
            for _ in range(20):
                sock.sendto(bytes([rng.choice(UNKNOWN_TYPES)]) + rng.randbytes(rng.randrange(0, 100)), server)
                sent += 1
            await trio.sleep(0.01)
        await trio.sleep(0.1)
        got = _delta(_counts(running), before)
        await trio.sleep_until(t0 + 2.5)  # any penalty is over
        hello = socks[0]
        hello.sendto(P.encode_hello(PROTOCOL_VERSION, 7), server)
        with trio.fail_after(1.0):
            await trio.lowlevel.wait_readable(hello)
        reply = hello.recv(2048)
        nursery.cancel_scope.cancel()
    for sock in socks:
        sock.close()

    assert got["bad_type"] + got["drop.udp_penalty"] == sent
    if trusted:
        assert got["bad_type"] == sent and got["udp.penalties"] == 0
    else:
        assert got["udp.penalties"] == 1
        assert THRESHOLD < got["bad_type"] <= 2 * THRESHOLD
    assert P.packet_type(reply) == P.CHALLENGE
