"""What the server's receive path costs per INPUT datagram, stage by stage and in total.

Job: build N clients connected (real cookie handshake, real :class:`protocol.client.ClientConnection`)
to a real :class:`worldserver.udp_service.UdpService` (its ServerEndpoint, NativeSessions and a
real Simulation), then run ticks as a server under load sees them: the simulation's tick sends
every client its snapshot(s); each client receives the snapshots sent ``--delay-ticks`` ticks
ago (a round trip), acknowledging them in its next packet, and sends one INPUT datagram per tick
holding its last 4 inputs (a random walk), as the swarm's bots do. ``--loss`` drops that
fraction of the datagrams in each direction. Every client connects with a connect token issued
by the service's own ``ConnectAdmission`` (as ``POST /api/join`` would give it), so every packet
both ways carries its tag (SPEC 3), as on a server's default configuration; ``--no-tags`` runs
anonymous clients on an open server instead (``net.require_connect_token = false``): no tags.

Two figures, each the median over the measured ticks of (this thread's CPU time for the tick's
datagrams / count), so that other processes on the machine do not inflate them:

* ``total``: every datagram through ``UdpService.handle_datagram``, the function the UDP
  receive loop calls, in process (no sockets: the service's sends are captured);
* stages: the same traffic (a second run with the same seed) taken apart: the endpoint's
  events API (``ServerEndpoint.receive_datagram``: header, salt, replay window, acks, the
  event), ``Session.on_acked``, ``new_inputs`` (the new inputs of the payload) and ``Session.take_inputs``, each timed over
  the whole tick's batch so that no timer runs per datagram.

``--socket`` adds a loopback run: N real client sockets send to the service's socket and the
real trio ``UdpTransport.receive_loop`` drains them (recvfrom, handler, checkpoints), plus the
bare cost of the ``recvfrom`` and ``recvfrom_into`` system calls for comparison.

``--flood RATE`` adds what a flooding address costs (``tools/attack/flood.py``'s mix, in
process): besides the clients' INPUTs, a stranger on 127.0.0.2 (``limits.trusted_networks``
is 127.0.0.1/32 here) with its own keyed session sends ``RATE / tick_rate`` datagrams a tick
through ``UdpService.handle_datagram``: 40% garbage (random bytes and length), 20% connected
packets with a wrong salt, 20% HELLOs and 20% INPUTs of its session. Reported: the median
CPU time per flood datagram and per client datagram over the measured ticks, with penalties
(``limits.udp_drops_per_second`` at its default) and without (0), and the drop counters.

Usage: ``python tools/bench/input_bench.py [--clients 400] [--ticks 200] [--warmup 20]
[--delay-ticks 2] [--loss 0.0] [--seed 1] [--no-tags] [--socket] [--flood 20000] [--json]``. Measures only; asserts
nothing. Traffic (``--socket`` only) goes to 127.0.0.1 and nowhere else.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import resource
import socket
import statistics
import sys
import time
from collections import deque
from datetime import datetime, timezone

try:
    import worldtools  # noqa: F401  (installed)
except ImportError:  # run from a checkout: tools/bench is on sys.path
    import _checkout  # noqa: F401

import numpy as np  # noqa: E402

from protocol import PROTOCOL_VERSION, packets as P  # noqa: E402
from protocol.client import CONNECTED, ClientConnection  # noqa: E402
from protocol.events import Received  # noqa: E402
from protocol.messages import Input, encode_inputs, new_inputs  # noqa: E402
from worldserver.config import load_config  # noqa: E402
from worldserver.identity import Identities  # noqa: E402
from worldserver.simulation import Simulation  # noqa: E402
from worldserver.stats import Stats  # noqa: E402
from worldserver.udp_service import UdpService  # noqa: E402
from worldtools.bench.server_load import machine_info  # noqa: E402

HOST = "127.0.0.1"
INPUTS_PER_PACKET = 4
SECRET = bytes(range(32))


class Client:
    """One simulated client: its sans-IO connection, address, inputs and packets in flight."""

    def __init__(self, index: int, addr: tuple, rng: random.Random, token: bytes = b"", key: bytes = b"") -> None:
        self.conn = ClientConnection(version=PROTOCOL_VERSION, nonce=index + 1, token=token, key=key)
        self.addr = addr
        self.rng = rng
        self.direction = rng.uniform(0.0, 2.0 * math.pi)
        self.input_seq = 0
        self.recent: deque[Input] = deque(maxlen=INPUTS_PER_PACKET)
        self.inbound: deque[tuple[int, bytes]] = deque()  # (deliver at tick, datagram)
        self.sock: socket.socket | None = None

    def next_input_packet(self, now: float) -> bytes:
        if self.rng.random() < 0.03:
            self.direction = self.rng.uniform(0.0, 2.0 * math.pi)
        self.input_seq += 1
        yaw = int(self.direction / (2.0 * math.pi) * 65536) % 65536
        self.recent.append(Input(self.input_seq, int(127 * math.cos(self.direction)), int(127 * math.sin(self.direction)), yaw, 1, 0))
        return self.conn.packet(P.INPUT, encode_inputs(list(self.recent)), now)

    def receive_due(self, tick: int, now: float) -> None:
        inbound = self.inbound
        while inbound and inbound[0][0] <= tick:
            self.conn.receive_datagram(inbound.popleft()[1], now)


class Harness:
    """A UdpService whose sends are captured and delivered to in-process clients."""

    def __init__(self, n: int, *, delay_ticks: int, loss: float, seed: int, sockets: bool = False,
                 tags: bool = True, overrides: dict | None = None) -> None:
        overrides = {
            "udp.host": HOST, "udp.port": "0", "sim.spawn_clearance": "0.5",
            "sim.max_entities": str(max(4096, n)), "net.max_clients": str(max(2000, n)),
            "net.require_connect_token": str(tags).lower(), "worlds.hosted": "open",
            **(overrides or {}),
        }
        self.config = load_config(path=None, env={}, overrides=overrides)
        self.stats = Stats()
        self.sim = Simulation(self.config, self.stats, rng=np.random.default_rng(seed))
        self.identities = Identities()
        self.service = UdpService(self.config, self.sim, self.stats, SECRET, self.identities)
        self.dt = 1.0 / self.config.sim.tick_rate
        self.delay = delay_ticks
        self.loss = 0.0  # none during the handshake
        self.rng = random.Random(seed)
        self.tick = 0
        self.sockets = sockets
        self.clients: list[Client] = []
        self.by_addr: dict[tuple, Client] = {}
        self.unacked_samples: list[int] = []
        self.packets_per_tick: list[int] = []
        if not sockets:
            self.service.transport.send = self._capture  # nothing leaves the process
        for i in range(n):
            token = key = b""
            if tags:  # a player who joined: a live join token, and a connect token from it
                self.identities.issue(i + 1, f"bench-{i}")
                issued = self.service.admission.issue(i + 1, 0.0)
                token, key = bytes.fromhex(issued["connect_token"]), bytes.fromhex(issued["connect_key"])
            client = Client(i, (HOST, 20000 + i), random.Random(seed * 100003 + i), token, key)
            if sockets:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                sock.bind((HOST, 0))
                sock.setblocking(False)
                client.sock = sock
                client.addr = sock.getsockname()
            self.clients.append(client)
            self.by_addr[client.addr] = client
        self._handshake()
        self.loss = loss
        world = self.sim.world
        spread = np.random.default_rng(seed + 1)
        for session in self.sim.sessions:  # uniform over the world, like tick_bench's default
            world.pos[session.slot, [0, 2]] = spread.uniform(-0.95 * world.half_extent, 0.95 * world.half_extent, 2)

    def _capture(self, data: bytes, addr: tuple) -> None:
        client = self.by_addr.get(addr)
        if client is not None and not (self.loss and self.rng.random() < self.loss):
            client.inbound.append((self.tick + self.delay, data))

    def _handshake(self, clients: list | None = None) -> None:
        now = 0.0
        service = self.service
        for client in self.clients if clients is None else clients:
            step = client.conn.connect(now)
            for _ in range(3):  # HELLO -> CHALLENGE, CONNECT -> ACCEPT
                if self.sockets:
                    client.sock.sendto(step, service.transport.address)
                    self._drain_server_blocking(1, now)
                    reply = self._recv_blocking(client.sock)
                else:
                    service.handle_datagram(step, client.addr, now)
                    reply = client.inbound.pop()[1]
                events, out = client.conn.receive_datagram(reply, now)
                if client.conn.state == CONNECTED:
                    break
                step = out[0]
            if client.conn.state != CONNECTED:
                raise RuntimeError(f"client {client.addr} did not connect: {client.conn.state}")

    def _drain_server_blocking(self, count: int, now: float) -> None:
        sock = self.service.transport.sock
        for _ in range(count):
            sock.settimeout(2.0)
            try:
                data, addr = sock.recvfrom(2048)
            finally:
                sock.setblocking(False)
            self.service.handle_datagram(data, addr, now)

    @staticmethod
    def _recv_blocking(sock: socket.socket) -> bytes:
        sock.settimeout(2.0)
        try:
            return sock.recv(2048)
        finally:
            sock.setblocking(False)

    def run_tick_and_make_inputs(self) -> tuple[float, list[tuple[bytes, tuple]]]:
        """One server tick (not measured), then every client's INPUT datagram of this tick."""
        self.tick += 1
        now = self.tick * self.dt
        self.sim.run_tick(now)
        self.service.flush()
        batch = []
        for client in self.clients:
            if self.sockets:
                for _ in range(64):
                    try:
                        client.conn.receive_datagram(client.sock.recv(2048), now)
                    except BlockingIOError:
                        break
            else:
                client.receive_due(self.tick, now)
            data = client.next_input_packet(now)
            if not (self.loss and self.rng.random() < self.loss):
                batch.append((data, client.addr))
        conns = self.service.endpoint.connections
        self.unacked_samples.append(sum(len(c.link.unacked) for c in conns.values()) / max(1, len(conns)))
        self.packets_per_tick.append(len(batch))
        return now + 0.5 * self.dt, batch

    def close(self) -> None:
        for client in self.clients:
            if client.sock is not None:
                client.sock.close()
        self.service.close()


def _gc_like_the_server(config) -> None:
    gc.collect()
    gc.set_threshold(config.gc.gen0_threshold, config.gc.gen1_threshold, config.gc.gen2_threshold)
    gc.freeze()


def run_total(args) -> dict:
    """Every datagram through UdpService.handle_datagram, as the receive loop calls it."""
    h = Harness(args.clients, delay_ticks=args.delay_ticks, loss=args.loss, seed=args.seed, tags=args.tags)
    try:
        _gc_like_the_server(h.config)
        handle = h.service.handle_datagram
        per_tick = []
        clock = time.thread_time_ns  # CPU time of this thread: other processes do not count
        for t in range(args.warmup + args.ticks):
            now, batch = h.run_tick_and_make_inputs()
            started = clock()
            for data, addr in batch:
                handle(data, addr, now)
            elapsed = clock() - started
            if t >= args.warmup and batch:
                per_tick.append(elapsed / 1000.0 / len(batch))
        endpoint = h.service.endpoint
        links = [c.link for c in endpoint.connections.values()]
        return dict(
            us_per_datagram=statistics.median(per_tick),
            us_per_datagram_mean=statistics.fmean(per_tick),
            mean_unacked_per_client=statistics.fmean(h.unacked_samples[args.warmup:]),
            packets_lost_per_client=statistics.fmean(link.packets_lost for link in links),
            drops=dict(endpoint.drops),
            stat_drops={k: v for k, v in h.stats.counters.items() if k.startswith("drop.")},
            inputs_applied=sum(s.applied for s in h.sim.sessions),
        )
    finally:
        h.close()
        gc.unfreeze()


def run_stages(args) -> dict:
    """The same traffic, each stage over the whole tick's batch (no per-datagram timers)."""
    h = Harness(args.clients, delay_ticks=args.delay_ticks, loss=args.loss, seed=args.seed, tags=args.tags)
    names = ("endpoint.receive_datagram", "session.on_acked", "new_inputs", "session.take_inputs")
    per_tick = {name: [] for name in names}
    try:
        _gc_like_the_server(h.config)
        endpoint = h.service.endpoint
        endpoint.on_received = None  # events, whatever NativeSessions installed: stage by stage
        receive = endpoint.receive_datagram
        rate, burst, stats = h.service.sessions.input_rate, h.service.sessions.input_burst, h.stats
        clock = time.thread_time_ns  # CPU time of this thread: other processes do not count
        for t in range(args.warmup + args.ticks):
            now, batch = h.run_tick_and_make_inputs()
            n = len(batch)
            t0 = clock()
            results = [receive(data, addr, now) for data, addr in batch]
            t1 = clock()
            events = [ev[0] for ev in results if ev and type(ev[0]) is Received]
            endpoint.outbox.clear()
            t2 = clock()
            for ev in events:
                if ev.acked:
                    ev.conn.user.on_acked(ev.acked)
            t3 = clock()
            decoded = [new_inputs(ev.payload, ev.conn.user.last_received_seq) for ev in events]
            t4 = clock()
            for ev, inputs in zip(events, decoded):
                ev.conn.user.take_inputs(inputs, now, rate, burst, stats)
            t5 = clock()
            if t >= args.warmup and n:
                for name, ns in zip(names, (t1 - t0, t3 - t2, t4 - t3, t5 - t4)):
                    per_tick[name].append(ns / 1000.0 / n)
        return {name: statistics.median(v) for name, v in per_tick.items()}
    finally:
        h.close()
        gc.unfreeze()


FLOOD_HOST = "127.0.0.2"


def _flood_datagram(kind: str, rng: random.Random, flooder: Client, now: float) -> bytes:
    """One datagram of tools/attack/flood.py's mix."""
    if kind == "garbage":
        return rng.randbytes(rng.randrange(1, P.MAX_DATAGRAM + 1))
    if kind == "wrong_salt":
        return P.encode_header(rng.choice((P.INPUT, P.KEEPALIVE, P.DISCONNECT)), rng.getrandbits(32),
                               rng.getrandbits(16), 0, 0) + rng.randbytes(rng.randrange(0, 90))
    if kind == "hello":
        return P.encode_hello(PROTOCOL_VERSION, rng.getrandbits(64))
    return flooder.next_input_packet(now)


def run_flood(args, penalties: bool) -> dict:
    """The clients' INPUTs and ``args.flood`` datagrams a second from a flooding stranger."""
    overrides = {"limits.trusted_networks": f"{HOST}/32"}
    if not penalties:
        overrides["limits.udp_drops_per_second"] = "0"
    h = Harness(args.clients, delay_ticks=args.delay_ticks, loss=args.loss, seed=args.seed, tags=args.tags,
                overrides=overrides)
    try:
        service = h.service
        token = key = b""
        if args.tags:
            h.identities.issue(10**6, "flooder")
            issued = service.admission.issue(10**6, 0.0)
            token, key = bytes.fromhex(issued["connect_token"]), bytes.fromhex(issued["connect_key"])
        flooder = Client(10**6, (FLOOD_HOST, 40000), random.Random(args.seed + 7), token, key)
        h.by_addr[flooder.addr] = flooder
        h._handshake([flooder])
        rng = random.Random(args.seed + 8)
        per_tick_count = max(1, round(args.flood / h.config.sim.tick_rate))
        _gc_like_the_server(h.config)
        handle = service.handle_datagram
        flood_us, client_us = [], []
        clock = time.thread_time_ns
        for t in range(args.warmup + args.ticks):
            now, batch = h.run_tick_and_make_inputs()
            flooder.inbound.clear()  # what the server sent it: not read
            kinds = rng.choices(("garbage", "wrong_salt", "hello", "input"), (0.4, 0.2, 0.2, 0.2), k=per_tick_count)
            flood = [_flood_datagram(kind, rng, flooder, now) for kind in kinds]
            started = clock()
            for data in flood:
                handle(data, flooder.addr, now)
            middle = clock()
            for data, addr in batch:
                handle(data, addr, now)
            ended = clock()
            if t >= args.warmup:
                flood_us.append((middle - started) / 1000.0 / len(flood))
                if batch:
                    client_us.append((ended - middle) / 1000.0 / len(batch))
        return dict(
            penalties=penalties, flood_per_second=per_tick_count * h.config.sim.tick_rate,
            us_per_flood_datagram=statistics.median(flood_us),
            us_per_client_datagram=statistics.median(client_us),
            drops=dict(service.endpoint.drops),
            stat_drops={k: v for k, v in h.stats.counters.items() if k.startswith("drop.") or k == "udp.penalties"},
        )
    finally:
        h.close()
        gc.unfreeze()


def _run_trio(main, guest: bool) -> None:
    """As the server runs: trio as a guest on an asyncio loop (``worldclient.aio_bridge``)."""
    import trio

    if guest:
        from worldclient import aio_bridge

        aio_bridge.run(main)
    else:
        trio.run(main)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def run_socket_burst(args) -> dict:
    """Loopback, each tick's datagrams sent at once: the real receive loop drains them in
    batches (with the real snapshots and their acknowledgements, as in process)."""
    import trio

    h = Harness(args.clients, delay_ticks=0, loss=0.0, seed=args.seed, sockets=True, tags=args.tags)
    transport = h.service.transport
    if args.coalesce is not None:
        transport.coalesce = args.coalesce
    result: dict = {}

    async def main() -> None:
        per_tick = []
        missing = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.receive_loop, h.service.handle_datagram)
            await trio.sleep(0.01)
            clock = time.perf_counter_ns
            for t in range(args.warmup + args.ticks):
                _, batch = h.run_tick_and_make_inputs()
                target = transport.datagrams_in + len(batch)
                for data, addr in batch:
                    h.by_addr[addr].sock.sendto(data, transport.address)
                started = clock()
                with trio.move_on_after(2.0):
                    while transport.datagrams_in < target:
                        await trio.sleep(0)
                elapsed = clock() - started
                missing += max(0, target - transport.datagrams_in)
                if t >= args.warmup and batch:
                    per_tick.append(elapsed / 1000.0 / len(batch))
            nursery.cancel_scope.cancel()
        result["us_per_datagram"] = statistics.median(per_tick)
        result["datagrams_missing"] = missing

    try:
        _gc_like_the_server(h.config)
        _run_trio(main, args.guest)
        # The bare system calls, on a tick's worth of datagrams (the server's state is untouched).
        sock = transport.sock
        buf = bytearray(2048)
        for name in ("recvfrom", "recvfrom_into"):
            per_round = []
            for _ in range(max(1, args.ticks // 4)):
                for client in h.clients:
                    client.sock.sendto(b"\x11" + bytes(60), transport.address)
                got = 0
                started = time.perf_counter_ns()
                call, arg = (sock.recvfrom, 2048) if name == "recvfrom" else (sock.recvfrom_into, buf)
                for _ in range(len(h.clients) + 1):
                    try:
                        call(arg)
                    except BlockingIOError:
                        break
                    got += 1
                if got:
                    per_round.append((time.perf_counter_ns() - started) / 1000.0 / got)
            result[f"bare_{name}_us"] = statistics.median(per_round)
        return result
    finally:
        h.close()
        gc.unfreeze()


def _paced_sender(socks: list, datagrams: list, server: tuple, rate: float) -> None:
    """Child process: sends ``datagrams`` ((bytes, client index)) at ``rate`` a second."""
    start = time.perf_counter() + 0.05
    step = 1.0 / rate
    for i, (data, idx) in enumerate(datagrams):
        delay = start + i * step - time.perf_counter()
        if delay > 0.0002:
            time.sleep(delay)
        socks[idx].sendto(data, server)


def run_socket_paced(args) -> dict:
    """Loopback at the real arrival rate: a child process sends every client's INPUT datagram
    spread over each tick (``--rate``, default 20 per client per second) for ``--seconds``;
    this process runs only the receive loop and reports its CPU time per datagram (all
    threads: with trio as a guest, its I/O wait runs in a thread of its own). No snapshots are
    sent, so there are no acknowledgements to process; a task empties the input queues every
    tick as the simulation would."""
    import multiprocessing

    import trio

    h = Harness(args.clients, delay_ticks=0, loss=0.0, seed=args.seed, sockets=True, tags=args.tags)
    transport = h.service.transport
    if args.coalesce is not None:
        transport.coalesce = args.coalesce
    index = {c.addr: i for i, c in enumerate(h.clients)}
    datagrams = []
    ticks = int(args.seconds * h.config.sim.tick_rate)
    for t in range(ticks):
        now = 1.0 + t * h.dt
        for client in h.clients:
            datagrams.append((client.next_input_packet(now), index[client.addr]))
    rate = args.rate or args.clients * h.config.sim.tick_rate
    result: dict = {"rate_per_second": rate}
    sessions = list(h.sim.sessions)

    async def main() -> None:
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=_paced_sender, args=([c.sock for c in h.clients], datagrams, transport.address, rate))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.receive_loop, h.service.handle_datagram)

            async def consume_inputs() -> None:
                while True:
                    await trio.sleep(h.dt)
                    for session in sessions:
                        session.pending.clear()

            nursery.start_soon(consume_inputs)
            await trio.sleep(0.01)
            first = transport.datagrams_in
            cpu0, wall0 = _cpu_seconds(), time.perf_counter()
            child.start()
            try:
                with trio.move_on_after(len(datagrams) / rate + 5.0):
                    while transport.datagrams_in - first < len(datagrams):
                        await trio.sleep(0.05)
                cpu1, wall1 = _cpu_seconds(), time.perf_counter()
            finally:
                child.join(5.0)
                if child.is_alive():
                    child.kill()
                    child.join(1.0)
            got = transport.datagrams_in - first
            nursery.cancel_scope.cancel()
        result["coalesce"] = getattr(transport, "coalesce", None)
        result["us_cpu_per_datagram"] = (cpu1 - cpu0) * 1e6 / max(1, got)
        result["cpu_percent_of_one_core"] = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
        result["datagrams"] = got
        result["datagrams_missing"] = len(datagrams) - got

    try:
        _gc_like_the_server(h.config)
        _run_trio(main, args.guest)
        return result
    finally:
        h.close()
        gc.unfreeze()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=400)
    parser.add_argument("--ticks", type=int, default=200, help="measured ticks (default 200)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--delay-ticks", type=int, default=2, help="ticks a snapshot takes to be acknowledged")
    parser.add_argument("--loss", type=float, default=0.0, help="fraction of datagrams lost each way")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-tags", dest="tags", action="store_false",
                        help="anonymous clients on an open server: packets without tags (the cost before tags)")
    parser.add_argument("--socket", action="store_true", help="also the loopback runs with the real receive loop")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the paced loopback run")
    parser.add_argument("--rate", type=float, default=0.0, help="datagrams a second of the paced run (0: 20 per client)")
    parser.add_argument("--coalesce", type=float, default=None,
                        help="UdpTransport.coalesce in seconds for the loopback runs (default: the transport's own)")
    parser.add_argument("--plain-trio", dest="guest", action="store_false",
                        help="loopback runs under trio.run instead of as a guest on asyncio (as the server runs)")
    parser.add_argument("--flood", type=float, default=0.0, metavar="RATE",
                        help="also the cost of a flooding stranger sending RATE datagrams a second, "
                             "with penalties and without")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    report = dict(
        command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        machine=machine_info(),
        clients=args.clients, ticks=args.ticks, delay_ticks=args.delay_ticks, loss=args.loss,
        tags=args.tags,
    )
    report["total"] = run_total(args)
    report["stages"] = run_stages(args)
    if args.socket:
        report["socket_burst"] = run_socket_burst(args)
        report["socket_paced"] = run_socket_paced(args)
    if args.flood > 0:
        report["flood"] = [run_flood(args, penalties=False), run_flood(args, penalties=True)]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine"]
    print(f"command: {report['command']}")
    print(f"date:    {report['date']}")
    print(f"machine: {m['cpu_model']}, {m['nproc']} cpus, {m['implementation']} {m['python']}, "
          f"load at start {m['loadavg_at_start']}")
    print(f"{args.clients} clients, {args.ticks} measured ticks, snapshots acknowledged after "
          f"{args.delay_ticks} ticks, loss {args.loss:.1%} each way, "
          f"{'tagged packets (connect tokens)' if args.tags else 'no tags (open server)'}")
    total = report["total"]
    print(f"  total (UdpService.handle_datagram)   {total['us_per_datagram']:7.2f} µs/datagram "
          f"(mean {total['us_per_datagram_mean']:.2f})")
    for name, us in report["stages"].items():
        print(f"    {name:<34} {us:7.2f} µs")
    print(f"    {'(sum of stages)':<34} {sum(report['stages'].values()):7.2f} µs")
    print(f"  unacked packets per client at receive time: {total['mean_unacked_per_client']:.1f}; "
          f"lost per client: {total['packets_lost_per_client']:.1f}; inputs applied: {total['inputs_applied']}")
    if total["drops"] or total["stat_drops"]:
        print(f"  drops: {total['drops']} {total['stat_drops']}")
    for f in report.get("flood", ()):
        print(f"  flood of {f['flood_per_second']:.0f}/s from {FLOOD_HOST}, penalties {'on' if f['penalties'] else 'off'}: "
              f"{f['us_per_flood_datagram']:.2f} µs per flood datagram, {f['us_per_client_datagram']:.2f} µs per client datagram")
        print(f"    drops: {f['drops']} {f['stat_drops']}")
    if "socket_burst" in report:
        b, p = report["socket_burst"], report["socket_paced"]
        mode = "trio guest on asyncio" if args.guest else "trio.run"
        print(f"  loopback, {mode}:")
        print(f"    burst: a tick's datagrams at once  {b['us_per_datagram']:7.2f} µs/datagram (wall; {b['datagrams_missing']} missing)")
        print(f"      bare recvfrom {b['bare_recvfrom_us']:.2f} µs, bare recvfrom_into {b['bare_recvfrom_into_us']:.2f} µs")
        print(f"    paced: {p['rate_per_second']:.0f}/s spread out      {p['us_cpu_per_datagram']:7.2f} µs CPU/datagram "
              f"(coalesce {p['coalesce']}; "
              f"{p['cpu_percent_of_one_core']:.1f}% of a core; {p['datagrams_missing']} of {p['datagrams'] + p['datagrams_missing']} missing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
