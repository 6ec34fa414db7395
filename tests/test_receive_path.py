"""The INPUT receive path: the Link's bitmask acknowledgements, the endpoint's fast path and
the UDP receive loop, each checked against a plain reference or the behaviour it replaced."""

from __future__ import annotations

import random
import socket

import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

import worldserver.udp as udp_module
from protocol import PROTOCOL_VERSION, packets as P
from protocol.client import ClientConnection
from protocol.events import ConnectRequest, Disconnected, Received
from protocol.link import HALF, MAX_UNACKED, WINDOW, Link
from protocol.messages import Input, encode_inputs
from protocol.server import ServerEndpoint
from worldserver.config import load_config
from worldserver.native import NativeSessions
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.udp import UdpTransport

SECRET = b"s" * 32


# ----------------------------------------------------------------------------- reference


class ReferenceLink(Link):
    """Acknowledgement bookkeeping as it was before the bitmask: a walk over every
    unacknowledged packet per ack. Sequence and replay handling are inherited unchanged."""

    __slots__ = ()

    def next_send(self, now):
        seq = self.local_seq
        self.local_seq = (seq + 1) & 0xFFFF
        self.unacked[seq] = now
        if len(self.unacked) > MAX_UNACKED:
            del self.unacked[next(iter(self.unacked))]
            self.packets_lost += 1
        self.last_send = now
        return seq, self.remote_seq & 0xFFFF, self.recv_bits

    def process_acks(self, ack, ack_bits, now):
        acked, lost = [], []
        for seq, sent in self.unacked.items():
            d = (ack - seq) & 0xFFFF
            if d == 0 or (d <= WINDOW and (ack_bits >> (d - 1)) & 1):
                acked.append(seq)
                if d == 0:  # only the newest acknowledged packet is a round-trip sample
                    sample = now - sent
                    self.rtt = sample if self.rtt == 0.0 else self.rtt + 0.1 * (sample - self.rtt)
            elif WINDOW < d < HALF:
                lost.append(seq)
        for seq in acked + lost:
            del self.unacked[seq]
        self.packets_lost += len(lost)
        return acked


def mask_of(link: Link) -> int:
    local = link.local_seq - 1
    mask = 0
    for seq in link.unacked:
        mask |= 1 << ((local - seq) & 0xFFFF)
    return mask


def assert_same(link: Link, ref: ReferenceLink) -> None:
    assert list(link.unacked.items()) == list(ref.unacked.items())
    assert link.packets_lost == ref.packets_lost
    assert link.rtt == ref.rtt  # the same samples in the same order: bit for bit
    assert link.pending == mask_of(link)  # the bitmask and the dict agree
    assert link.pending.bit_length() <= MAX_UNACKED + WINDOW + 1


# One step of a scenario: send some packets; the peer receives some of what is in flight
# (in any order) and answers with its real ack fields; or a raw ack of any value arrives.
step = st.one_of(
    st.tuples(st.just("send"), st.integers(1, 6)),
    st.tuples(st.just("peer"), st.floats(0.0, 1.0), st.randoms(use_true_random=False)),
    st.tuples(st.just("raw"), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("near"), st.integers(-40, 40), st.integers(0, 0xFFFFFFFF)),
)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 0xFFFF), st.lists(step, max_size=120))
def test_process_acks_equals_reference(start, steps):
    link, ref, peer = Link(0.0), ReferenceLink(0.0), Link(0.0)
    link.local_seq = ref.local_seq = start  # any starting point, so sequences wrap
    in_flight: list[int] = []
    now = 0.0
    for op in steps:
        now += 0.01
        if op[0] == "send":
            for _ in range(op[1]):
                seq = link.next_send(now)[0]
                assert ref.next_send(now)[0] == seq
                in_flight.append(seq)
        else:
            if op[0] == "peer":
                _, keep, rng = op
                rng.shuffle(in_flight)
                for seq in in_flight[: int(len(in_flight) * keep)]:
                    peer.accept(seq)
                in_flight.clear()
                _, ack, bits = peer.next_send(now)
            elif op[0] == "raw":
                _, ack, bits = op
            else:  # an ack near our newest sequence, on either side of it
                ack, bits = (link.local_seq - 1 + op[1]) & 0xFFFF, op[2]
            assert link.process_acks(ack, bits, now) == ref.process_acks(ack, bits, now)
        assert_same(link, ref)


def test_process_acks_of_a_lossy_long_run_equals_reference():
    """Four snapshot parts per tick, 30 % loss each way, acks from a real peer Link, long
    enough to wrap the 16-bit sequence; loss counts and acknowledged packets agree."""
    rng = random.Random(7)
    link, ref, peer = Link(0.0), ReferenceLink(0.0), Link(0.0)
    delivered: list[int] = []
    total_acked = 0
    for tick in range(17000):
        now = tick * 0.05
        for _ in range(4):
            seq = link.next_send(now)[0]
            assert ref.next_send(now)[0] == seq
            if rng.random() > 0.3:
                delivered.append(seq)
        if tick % 3 == 0:
            rng.shuffle(delivered)
        for seq in delivered:
            peer.accept(seq)
        delivered.clear()
        _, ack, bits = peer.next_send(now)
        if rng.random() > 0.3:
            acked = link.process_acks(ack, bits, now + 0.03)
            assert acked == ref.process_acks(ack, bits, now + 0.03)
            total_acked += len(acked)
    assert_same(link, ref)
    assert link.local_seq == (17000 * 4) & 0xFFFF  # wrapped once
    assert link.packets_lost > 1000 and total_acked > 30000


def test_unacknowledged_overflow_is_counted_lost_once():
    link = Link(0.0)
    for i in range(MAX_UNACKED + 10):
        link.next_send(i * 0.01)
    assert len(link.unacked) == MAX_UNACKED and link.packets_lost == 10
    assert link.pending == mask_of(link)
    newest = link.local_seq - 1
    assert link.process_acks(newest, 0xFFFFFFFF, 1.0) == list(range(newest - WINDOW, newest + 1))
    assert link.packets_lost == 10 + MAX_UNACKED - (WINDOW + 1)
    assert link.unacked == {} and link.pending == 0


# ----------------------------------------------------------------------------- endpoint


def connect(server: ServerEndpoint, client: ClientConnection, addr: tuple, now: float = 0.0):
    server.receive_datagram(client.connect(now), addr, now)
    [(challenge, _)] = server.outbox
    server.outbox.clear()
    _, [connect_packet] = client.receive_datagram(challenge, now)
    events = server.receive_datagram(connect_packet, addr, now)
    request = events[-1]
    assert isinstance(request, ConnectRequest)
    conn = server.accept(request, b"\x90", now)
    [(accept, _)] = server.outbox
    server.outbox.clear()
    client.receive_datagram(accept, now)
    return conn


def reference_receive(server: ServerEndpoint, data: bytes, addr: tuple, now: float):
    """Connected packets as receive_datagram handled them before its fast path."""
    try:
        ptype = P.packet_type(data)
        if ptype not in P.CONNECTED_TYPES:
            return server.receive_datagram(data, addr, now)
        conn = server.connections.get(addr)
        if conn is None:
            server._drop("unknown_address", addr, now)
            return ()
        ptype, salt, seq, ack, ack_bits = P.decode_header(data)
    except Exception as exc:  # ProtocolError
        server._drop(exc.reason, addr, now)
        return ()
    if salt != conn.salt:
        server._drop("bad_salt", addr, now)
        return ()
    link = conn.link
    if not link.accept(seq):
        server._drop("duplicate_or_stale", addr, now)
        return ()
    link.last_recv = now
    acked = link.process_acks(ack, ack_bits, now)
    if ptype == P.DISCONNECT:
        server._close(conn)
        reason = data[P.HEADER_SIZE] if len(data) > P.HEADER_SIZE else P.DISCONNECT_CLIENT_LEFT
        return (Disconnected(conn, P.DISCONNECT_REASONS.get(reason, "client_left")),)
    return (Received(conn, ptype, seq, data[P.HEADER_SIZE :], acked),)


def mangle(rng: random.Random, data: bytes) -> bytes:
    kind = rng.randrange(9)
    if kind == 0:
        return data[: rng.randrange(P.HEADER_SIZE)]  # truncated (or empty)
    if kind == 1:
        return data + bytes(P.MAX_DATAGRAM)  # oversized
    if kind == 2:
        return bytes([data[0], data[1] ^ 0x5A]) + data[2:]  # wrong salt
    if kind == 3:
        return bytes([rng.choice([0x00, 0x06, 0x15, 0xFF])]) + data[1:]  # unknown type
    return data


@pytest.mark.parametrize("seed", range(6))
def test_fast_path_decides_as_the_reference(seed):
    """Random traffic of several clients (losses, duplicates, reordering, replays, mangled
    packets, unknown addresses, DISCONNECTs, the server's own packets in between) through the
    fast path, with and without on_received, and through the pre-fast-path reference: the
    same events, the same drops by reason, the same link state."""
    rng = random.Random(seed)
    servers = [ServerEndpoint(secret=SECRET, version=PROTOCOL_VERSION, random_bytes=lambda n: b"\x07" * n)
               for _ in range(3)]
    fast, callback, ref = servers
    calls = []
    callback.on_received = lambda conn, ptype, seq, payload, acked, now: calls.append(
        (conn.addr, ptype, seq, payload, list(acked), now))
    addrs = [("10.0.0.%d" % i, 4000 + i) for i in range(4)]  # the last one never connects
    clients = {}

    def join(addr, now):
        nonce = rng.getrandbits(32)
        client = ClientConnection(version=PROTOCOL_VERSION, nonce=nonce)
        conns = [connect(fast, client, addr, now)]
        conns += [connect(s, ClientConnection(version=PROTOCOL_VERSION, nonce=nonce), addr, now) for s in servers[1:]]
        assert len({c.salt for c in conns}) == 1  # the same salt everywhere: one client's packets fit all
        conns[2].link.__class__ = ReferenceLink
        clients[addr] = (client, conns)

    for addr in addrs[:3]:
        join(addr, 0.0)
    closed_conns = []
    history: list[tuple[bytes, tuple]] = []
    now = 0.0
    for _ in range(1500):
        now += 0.005
        addr = rng.choice(addrs)
        if addr not in clients:  # never connected
            data = bytes([P.INPUT]) + bytes(20)
        else:
            client, conns = clients[addr]
            if client.state != "connected" and rng.random() < 0.2:  # comes back
                closed_conns.append(conns)
                join(addr, now)
                client, conns = clients[addr]
            if rng.random() < 0.3:  # the server sends this client something first
                for s, c in zip(servers, conns):
                    if not c.closed:
                        s.packet(c, P.SNAPSHOT, b"snap", now)
                if not conns[0].closed:
                    seq = conns[0].link.local_seq - 1
                    if rng.random() < 0.8:  # the client got it (maybe late)
                        client.link.accept(seq)
            r = rng.random()
            if r < 0.15 and history:
                data, addr = rng.choice(history)  # a replay, or a late duplicate
            elif r < 0.16 and client.state == "connected":
                data = client.disconnect(now)
            elif client.state == "connected":
                ptype = rng.choice([P.INPUT, P.INPUT, P.KEEPALIVE, P.MESSAGE])
                data = client.packet(ptype, encode_inputs([Input(1, 0, 0, 0, 0)]) if ptype == P.INPUT else b"", now)
            else:
                data = bytes([P.INPUT]) + bytes(20)
            if rng.random() < 0.1:
                data = mangle(rng, data)
            if rng.random() < 0.1:  # lost on the way, maybe delivered later as a "replay"
                history.append((data, addr))
                continue
            history.append((data, addr))
        n_calls = len(calls)
        got_fast = fast.receive_datagram(data, addr, now)
        got_callback = callback.receive_datagram(data, addr, now)
        got_ref = reference_receive(ref, data, addr, now)
        assert summarize(got_fast) == summarize(got_ref)
        via_callback = [e for e in summarize(got_ref) if e[0] == "received"]
        assert [("received",) + c[:5] for c in calls[n_calls:]] == via_callback
        assert [e for e in summarize(got_callback)] == [e for e in summarize(got_ref) if e[0] != "received"]
        for s in servers:
            s.outbox.clear()
    for s in (fast, callback):
        assert s.drops == ref.drops
        assert s.connections.keys() == ref.connections.keys()
    assert ref.drops.get("duplicate_or_stale", 0) > 50 and ref.drops.get("bad_salt", 0) > 0
    assert ref.drops.get("truncated", 0) + ref.drops.get("empty", 0) > 0 and ref.drops.get("unknown_address", 0) > 0
    for conns in closed_conns + [conns for _, conns in clients.values()]:
        for c in conns[:2]:
            assert c.link.packets_lost == conns[2].link.packets_lost
            assert c.link.rtt == conns[2].link.rtt
            assert list(c.link.unacked) == list(conns[2].link.unacked)


def summarize(events) -> list[tuple]:
    out = []
    for ev in events:
        if isinstance(ev, Received):
            out.append(("received", ev.conn.addr, ev.ptype, ev.seq, ev.payload, list(ev.acked)))
        elif isinstance(ev, Disconnected):
            out.append(("disconnected", ev.conn.addr, ev.reason))
        else:
            out.append((type(ev).__name__,))
    return out


# ----------------------------------------------------------------------------- sessions


class Sink:
    """A session's snapshot sink that sends nothing (no snapshots are needed here)."""

    def send_snapshot(self, session, parts, now):
        return None


def native_setup():
    config = load_config(path=None, env={}, overrides={})
    stats = Stats()
    sim = Simulation(config, stats)
    endpoint = ServerEndpoint(secret=SECRET, version=PROTOCOL_VERSION)
    sessions = NativeSessions(kind="udp", config=config, endpoint=endpoint, sim=sim, stats=stats,
                              make_sender=lambda addr: Sink())
    return sim, stats, endpoint, sessions


def native_connect(endpoint, sessions, addr, nonce, now=0.0):
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=nonce)
    endpoint.receive_datagram(client.connect(now), addr, now)
    [(challenge, _)] = endpoint.outbox
    endpoint.outbox.clear()
    _, [connect_packet] = client.receive_datagram(challenge, now)
    sessions.handle(endpoint.receive_datagram(connect_packet, addr, now), now)
    [(accept, _)] = endpoint.outbox
    endpoint.outbox.clear()
    client.receive_datagram(accept, now)
    return client, endpoint.connections[addr].user


def test_native_sessions_take_inputs_once_and_count_bad_ones(monkeypatch):
    sim, stats, endpoint, sessions = native_setup()
    assert endpoint.on_received == sessions.on_received
    addr = ("127.0.0.1", 5555)
    client, session = native_connect(endpoint, sessions, addr, 1)
    good = client.packet(P.INPUT, encode_inputs([Input(1, 127, 0, 0, 1), Input(2, 127, 0, 0, 1)]), 0.05)
    assert endpoint.receive_datagram(good, addr, 0.05) == ()
    assert [i.seq for i in session.pending] == [1, 2]
    assert endpoint.receive_datagram(good, addr, 0.06) == ()  # the same datagram again
    assert endpoint.drops == {"duplicate_or_stale": 1} and [i.seq for i in session.pending] == [1, 2]
    bad = client.packet(P.INPUT, b"\x01" + bytes(9), 0.1)  # a record one byte short
    endpoint.receive_datagram(bad, addr, 0.1)
    assert stats.get("drop.bad_input.bad_message") == 1
    assert endpoint.connections[addr].link.remote_seq == 1  # accepted (and acknowledged) all the same
    # acknowledgements reach the session as newly acked sequence numbers
    seen = []
    monkeypatch.setattr(type(session), "on_acked", lambda self, seqs: seen.append(list(seqs)))
    conn = endpoint.connections[addr]
    for _ in range(3):
        client.link.accept(P.decode_header(endpoint.packet(conn, P.SNAPSHOT, b"", 0.2))[2])  # seq 0, 1, 2
    endpoint.receive_datagram(client.packet(P.KEEPALIVE, b"", 0.25), addr, 0.25)
    endpoint.receive_datagram(client.packet(P.KEEPALIVE, b"", 0.3), addr, 0.3)  # nothing new
    assert seen == [[0, 1, 2]]


def test_native_sessions_still_take_received_events():
    """A driver that calls handle() with Received events (an endpoint without on_received)."""
    sim, stats, endpoint, sessions = native_setup()
    addr = ("127.0.0.1", 5556)
    client, session = native_connect(endpoint, sessions, addr, 2)
    endpoint.on_received = None
    events = endpoint.receive_datagram(client.packet(P.INPUT, encode_inputs([Input(5, 0, 127, 0, 1)]), 0.05), addr, 0.05)
    assert [type(e) for e in events] == [Received]
    sessions.handle(events, 0.05)
    assert [i.seq for i in session.pending] == [5]


def test_timeout_sends_disconnect_and_despawns():
    sim, stats, endpoint, sessions = native_setup()
    addr = ("127.0.0.1", 5557)
    client, session = native_connect(endpoint, sessions, addr, 3)
    assert len(sim.sessions) == 1
    sessions.poll(endpoint.timeout + 0.5)
    assert sim.sessions == [] and stats.get("clients.left.timeout") == 1
    [(data, to)] = endpoint.outbox
    assert to == addr and data[0] == P.DISCONNECT and data[P.HEADER_SIZE:] == bytes([P.DISCONNECT_TIMEOUT])
    [event], _ = client.receive_datagram(data, endpoint.timeout + 0.5)
    assert isinstance(event, Disconnected) and event.reason == "timeout"


# ----------------------------------------------------------------------------- receive loop


def loopback_pair(stats, **kw):
    transport = UdpTransport("127.0.0.1", 0, stats, **kw)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    return transport, sender


async def test_receive_loop_batches_and_lets_others_run(autojump_clock):
    """A flood is read in batches of recv_batch with a checkpoint between them (other tasks
    run), every datagram once, in order, with the counters right."""
    stats = Stats()
    transport, sender = loopback_pair(stats, recv_batch=4, coalesce=0.0)
    other_ran = 0
    got = []
    done = trio.Event()

    def handle(data, addr, now):
        got.append((data, other_ran))
        if len(got) == 30:
            done.set()

    async def other():
        nonlocal other_ran
        while not done.is_set() and other_ran < 1000:
            other_ran += 1
            await trio.lowlevel.checkpoint()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.receive_loop, handle)
            await trio.testing.wait_all_tasks_blocked()  # the loop waits for readability
            for i in range(30):
                sender.sendto(b"d%02d" % i, transport.address)
            nursery.start_soon(other)
            await done.wait()
            nursery.cancel_scope.cancel()
    finally:
        transport.close()
        sender.close()
    assert [d for d, _ in got] == [b"d%02d" % i for i in range(30)]
    runs = [r for _, r in got]
    # other ran only between batches (trio orders each round of tasks at random, so not
    # necessarily between every two), and kept running while the flood was read
    assert all(i % 4 == 0 for i in range(1, 30) if runs[i] != runs[i - 1])
    assert runs[-1] - runs[0] >= 3
    assert transport.datagrams_in == 30 and transport.bytes_in == 90


async def test_receive_loop_coalesces_dense_traffic_and_goes_back_to_waiting(autojump_clock, monkeypatch):
    """Datagrams closer together than ``coalesce`` are read at the multiples of ``coalesce``
    counted from ``origin`` (several per wakeup, none later than ``coalesce``); when traffic
    stops the loop waits for readability again instead of waking every ``coalesce``. Sparse
    datagrams are read on arrival."""
    coalesce = 0.0125
    stats = Stats()
    transport, sender = loopback_pair(stats, recv_batch=64, coalesce=coalesce)
    transport.origin = 0.5 + coalesce / 3  # drains fall on 0.5 + coalesce / 3 + k * coalesce
    deadlines = []
    real_sleep, real_sleep_until = trio.sleep, trio.sleep_until

    async def counting_sleep_until(deadline):
        deadlines.append(deadline)
        await real_sleep_until(deadline)

    monkeypatch.setattr(udp_module.trio, "sleep_until", counting_sleep_until)
    got = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.receive_loop, lambda data, addr, now: got.append((data, now)))
            await real_sleep(1.0)
            start = trio.current_time()
            sent_at = {}
            for i in range(100):  # dense: one every 2 ms for 0.2 s
                sender.sendto(b"%03d" % i, transport.address)
                sent_at[b"%03d" % i] = trio.current_time()
                await real_sleep(0.002)
            await real_sleep(2.0)  # idle
            dense_sleeps = len(deadlines)
            for i in range(100, 105):  # sparse: one every 0.5 s
                sender.sendto(b"%03d" % i, transport.address)
                sent_at[b"%03d" % i] = trio.current_time()
                await real_sleep(0.5)
            nursery.cancel_scope.cancel()
    finally:
        transport.close()
        sender.close()
    assert [d for d, _ in got] == [b"%03d" % i for i in range(105)]
    delays = {d: now - sent_at[d] for d, now in got}
    assert max(delays.values()) <= coalesce + 1e-9
    wakeups = len({now for _, now in got[:100]})
    assert wakeups <= 0.2 / coalesce + 3  # about one drain per coalesce interval, not 100
    assert dense_sleeps <= wakeups + 2 and all(t < start + 0.2 + 2 * coalesce for t in deadlines)
    for deadline in deadlines:  # every coalesced drain falls on origin + k * coalesce
        k = (deadline - transport.origin) / coalesce
        assert abs(k - round(k)) < 1e-6
    assert len(deadlines) == dense_sleeps  # sparse datagrams never start the coalescing sleeps
    assert all(delays[b"%03d" % i] == 0.0 for i in range(100, 105))


def test_bench_runs():
    """tools/bench/input_bench.py's in-process figures on a handful of clients (no sockets)."""
    import json
    import contextlib
    import io

    from worldtools.bench import input_bench

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert input_bench.main(["--clients", "6", "--ticks", "4", "--warmup", "2", "--loss", "0.1", "--json"]) == 0
    report = json.loads(out.getvalue())
    assert report["total"]["us_per_datagram"] > 0 and report["total"]["inputs_applied"] > 0
    assert set(report["stages"]) == {"endpoint.receive_datagram", "session.on_acked", "new_inputs", "session.take_inputs"}


def test_drain_reads_what_waits_up_to_a_limit_without_blocking():
    """The tick drains the socket right before it runs (worldserver/app.py), so inputs that
    came during the receive loop's coalescing sleep are applied in their tick."""
    stats = Stats()
    transport = UdpTransport("127.0.0.1", 0, stats)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(5):
            sender.sendto(bytes([i]) * 10, transport.address)
        got = []
        assert transport.drain(lambda data, addr, now: got.append((data[0], now)), 1.5, 3) == 3
        assert transport.drain(lambda data, addr, now: got.append((data[0], now)), 2.5, 3) == 2
        assert transport.drain(lambda data, addr, now: got.append((data[0], now)), 3.5, 3) == 0
        assert got == [(0, 1.5), (1, 1.5), (2, 1.5), (3, 2.5), (4, 2.5)]
        assert transport.datagrams_in == 5 and transport.bytes_in == 50
    finally:
        sender.close()
        transport.close()


def test_next_drain_is_the_next_boundary_after_now():
    """Coalesced drains fall on ``origin + k * coalesce``: strictly after ``now``, never more
    than ``coalesce`` later, and never ``now`` again when ``now`` is itself a boundary."""
    transport, sender = loopback_pair(Stats(), recv_batch=4, coalesce=0.025)
    try:
        transport.origin = 100.0
        assert transport.next_drain(100.0) == pytest.approx(100.025)
        assert transport.next_drain(100.0 + 3 * 0.025) == pytest.approx(100.1)
        assert transport.next_drain(100.01) == pytest.approx(100.025)
        assert transport.next_drain(99.99) == pytest.approx(100.0)
        for now in (100.0 + 0.001 * i for i in range(200)):
            due = transport.next_drain(now)
            assert now < due <= now + 0.025 + 1e-9
            k = (due - 100.0) / 0.025
            assert abs(k - round(k)) < 1e-6
    finally:
        transport.close()
        sender.close()
