"""The impairment relay itself (tools/netsim.py), against echo peers on loopback.

Only the relay and plain echo sockets run here, so trio's MockClock (autojump) drives the
delays: a loopback ``sendto`` is in the receiver's buffer before it returns, so the clock only
jumps when every datagram has been read. That makes delivery times exact and lets each test
replay the relay's seeded decisions (``Link.rng`` + ``Impairment.datagram_delays``) to predict
precisely which datagrams arrive, when, and how often.
"""

from __future__ import annotations

import json
import socket

import pytest
import trio
import trio.testing

from worldtools.netsim import Impairment, Link, TcpRelay, UdpRelay, check_loopback, main

SEND_INTERVAL = 0.01


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


async def udp_echo(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        task_status.started(sock.getsockname())
        while True:
            data, addr = await sock.recvfrom(65536)
            await sock.sendto(data, addr)


async def tcp_echo(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(listeners[0].socket.getsockname())


async def send_and_collect(relay_addr, count: int, quiet: float) -> tuple[float, list[tuple[int, float]]]:
    """Send ``count`` numbered datagrams SEND_INTERVAL apart through the relay; return the
    start time and every (number, arrival time) echoed back until ``quiet`` after the last."""
    got: list[tuple[int, float]] = []
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.connect(relay_addr)
        async with trio.open_nursery() as nursery:
            async def receive() -> None:
                while True:
                    data = await sock.recv(100)
                    got.append((int(data), trio.current_time()))

            nursery.start_soon(receive)
            start = trio.current_time()
            for i in range(count):
                await trio.sleep_until(start + i * SEND_INTERVAL)
                await sock.send(b"%d" % i)
            await trio.sleep(quiet)
            nursery.cancel_scope.cancel()
    return start, got


def predicted(link: Link, up: Impairment, down: Impairment, count: int, start: float):
    """What the relay must do with ``count`` datagrams through an echo, from its seed."""
    up_rng, down_rng = link.rng("udp", 0, "up"), link.rng("udp", 0, "down")
    at_echo = []
    for i in range(count):
        for delay in up.datagram_delays(up_rng):
            at_echo.append((start + i * SEND_INTERVAL + delay, i))
    at_echo.sort()  # the echo answers in arrival order, and each answer takes its own draws
    back = []
    for when, i in at_echo:
        for delay in down.datagram_delays(down_rng):
            back.append((i, when + delay))
    return back


async def test_udp_fates_follow_the_seed_exactly(autojump_clock, nursery):
    up = Impairment(loss=0.2, delay=0.1, jitter=0.03, reorder=0.25, duplicate=0.05)
    down = Impairment(loss=0.1, delay=0.05, jitter=0.01, reorder=0.1, reorder_delay=0.002, duplicate=0.1)
    link = Link(up, down, seed=7)
    echo = await nursery.start(udp_echo)
    relay = await nursery.start(UdpRelay(link, echo).run)
    start, got = await send_and_collect(relay, 500, quiet=1.0)

    expect = predicted(Link(seed=7), up, down, 500, start)
    expect.sort(key=lambda x: x[1])
    assert [n for n, _ in got] == [n for n, _ in expect]  # the same datagrams, in the same order
    assert [t for _, t in got] == pytest.approx([t for _, t in expect])  # at the same times
    c = link.counters
    assert c["udp.up.in"] == 500 and c["udp.up.lost"] + c["udp.up.sent"] - c["udp.up.duplicated"] == 500
    assert c["udp.down.in"] == c["udp.up.sent"]
    assert c["udp.down.sent"] == len(got)
    # the rates are roughly the configured ones, and order was really broken
    assert 0.12 < c["udp.up.lost"] / 500 < 0.28
    assert c["udp.up.duplicated"] > 5 and c["udp.up.reordered"] > 50 and c["udp.down.reordered"] > 5
    arrival_order = [n for n, _ in got]
    assert arrival_order != sorted(arrival_order)


async def test_udp_delay_is_exact_on_a_clean_link_and_clear_stops_it(autojump_clock, nursery):
    link = Link(Impairment(delay=0.1), Impairment(delay=0.05))
    echo = await nursery.start(udp_echo)
    relay = await nursery.start(UdpRelay(link, echo).run)
    start, got = await send_and_collect(relay, 20, quiet=0.5)
    assert [n for n, _ in got] == list(range(20))
    assert [t - start - n * SEND_INTERVAL for n, t in got] == pytest.approx([0.15] * 20)
    link.clear()
    start, got = await send_and_collect(relay, 5, quiet=0.1)
    assert [t - start - n * SEND_INTERVAL for n, t in got] == pytest.approx([0.0] * 5)
    assert link.counters["udp.flows"] == 2  # two client sockets, two flows


async def test_udp_outage_drops_both_directions_then_traffic_resumes(autojump_clock, nursery):
    link = Link(Impairment(delay=0.02), Impairment(delay=0.02))
    echo = await nursery.start(udp_echo)
    relay = await nursery.start(UdpRelay(link, echo).run)

    async def outage() -> None:
        await trio.sleep(0.5)
        await link.outage(1.0)

    nursery.start_soon(outage)
    start, got = await send_and_collect(relay, 300, quiet=0.5)
    sent_at = {n: start + n * SEND_INTERVAL for n in range(300)}
    back = {n for n, _ in got}
    # A datagram needs 0.02 s to the echo and 0.02 s back: those sent from 0.04 s before the
    # outage until it ends met the link down; every other one came back (5 ms margins).
    down_from, up_at = start + 0.5, start + 1.5
    assert [n for n in back if down_from - 0.035 <= sent_at[n] < up_at - 0.005] == []
    assert {n for n, t in sent_at.items() if t < down_from - 0.045 or t >= up_at + 0.005} <= back
    assert link.counters["outages"] == 1
    assert link.counters["udp.up.outage"] + link.counters["udp.down.outage"] >= 100
    assert not link.is_down


async def test_udp_bounds_flows_and_queues(autojump_clock, nursery):
    link = Link(Impairment(delay=1.0))
    echo = await nursery.start(udp_echo)
    relay = UdpRelay(link, echo, max_flows=2, queue_bound=10, flow_idle=2.0)
    addr = await nursery.start(relay.run)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
            for i in range(15):
                s.sendto(b"%d" % i, addr)
        await trio.sleep(0.1)
        assert len(relay.flows) == 2
        assert link.counters["udp.flows_full"] == 15  # the third address got no flow
        assert link.counters["udp.up.queue_full"] == 2 * 5  # 10 wait per flow, 5 dropped each
        assert relay.in_flight == 20
        await trio.sleep(5.0)  # idle flows are closed
        assert relay.flows == {} and link.counters["udp.flows_expired"] == 2
    finally:
        for s in socks:
            s.close()


async def test_tcp_keeps_order_under_delay_retransmits_and_a_stall(autojump_clock, nursery):
    imp = Impairment(loss=0.2, delay=0.1, jitter=0.03, retransmit_delay=0.2)
    link = Link(imp, imp, seed=3)
    echo = await nursery.start(tcp_echo)
    relay = await nursery.start(TcpRelay(link, echo, chunk_size=512, queue_chunks=4).run)
    stream = await trio.open_tcp_stream(*relay)
    payload = bytes(range(256)) * 400  # 100 KiB
    received = bytearray()
    async with stream:
        async def reader() -> None:
            while len(received) < len(payload):
                received.extend(await stream.receive_some(65536))

        async with trio.open_nursery() as inner:
            inner.start_soon(reader)
            for k in range(0, len(payload), 1000):
                await stream.send_all(payload[k : k + 1000])
                await trio.sleep(0.01)
                if k == 50_000:
                    link.take_down()
                    inner.start_soon(_bring_up_later, link, 2.0)
        began = trio.current_time()
        await stream.send_all(b"!")
        assert await stream.receive_some(10) == b"!"
        assert trio.current_time() - began >= 0.14  # both directions' delay, nothing skipped it
    assert bytes(received) == payload
    c = link.counters
    assert c["tcp.connections"] == 1
    assert c["tcp.up.retransmits"] > 0 and c["tcp.down.retransmits"] > 0
    assert c["tcp.up.stalled"] + c["tcp.down.stalled"] >= 1
    assert c["tcp.up.backpressure"] + c["tcp.down.backpressure"] >= 1  # 4 chunks held at most
    assert c["tcp.up.bytes"] == len(payload) + 1


async def _bring_up_later(link: Link, seconds: float) -> None:
    await trio.sleep(seconds)
    link.bring_up()


async def test_tcp_connection_bound_and_server_gone(autojump_clock, nursery):
    link = Link()
    echo = await nursery.start(tcp_echo)
    relay = await nursery.start(TcpRelay(link, echo, max_connections=1).run)
    first = await trio.open_tcp_stream(*relay)
    await first.send_all(b"x")
    assert await first.receive_some(10) == b"x"
    second = await trio.open_tcp_stream(*relay)
    assert await second.receive_some(10) == b""  # closed at once
    assert link.counters["tcp.refused"] == 1
    await first.aclose()
    await second.aclose()
    # a target where nothing listens: the client's connection is closed, counted
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead = probe.getsockname()
    probe.close()
    relay2 = await nursery.start(TcpRelay(link, dead).run)
    stream = await trio.open_tcp_stream(*relay2)
    assert await stream.receive_some(10) == b""
    assert link.counters["tcp.connect_failed"] == 1
    await stream.aclose()


def test_only_loopback_and_valid_models():
    with pytest.raises(ValueError, match="only loopback"):
        check_loopback(("10.0.0.1", 1), "udp target")
    with pytest.raises(ValueError, match="only loopback"):
        UdpRelay(Link(), ("127.0.0.1", 9), listen=("0.0.0.0", 0))
    with pytest.raises(ValueError, match="only loopback"):
        TcpRelay(Link(), ("example.org", 80))
    check_loopback(("::1", 1), "x")
    check_loopback(("127.0.0.2", 1), "x")
    with pytest.raises(ValueError, match="loss"):
        Impairment(loss=1.5)
    with pytest.raises(ValueError, match="delay"):
        Impairment(delay=-0.1)
    assert main(["--udp", "127.0.0.1:0=192.168.1.1:9300"]) == 2
    assert main(["--udp", "127.0.0.1:0=127.0.0.1:9300", "--loss", "2"]) == 2


def test_command_line_relays_and_reports_outages_as_json_lines(capsys):
    assert main(["--udp", "127.0.0.1:0=127.0.0.1:9", "--tcp", "127.0.0.1:0=127.0.0.1:9",
                 "--loss", "0.2", "--delay", "0.1", "--outage", "0.1:0.1", "--duration", "1.0",
                 "--stats-interval", "60"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["udp", "tcp", "outage", "restored", "end"]
    assert lines[0]["listen"].startswith("127.0.0.1:") and lines[0]["target"] == "127.0.0.1:9"
    assert lines[-1]["counters"] == {"outages": 1} and lines[-1]["down"] is False
