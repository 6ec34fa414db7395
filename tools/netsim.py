"""A seeded user-space network impairment relay for loopback tests (netem without the kernel).

Job: stand between clients and a server on loopback and impair the traffic the way a bad
network would, reproducibly. The kernel of the development machine has no netem, so this is
done in user space, in trio:

* :class:`Impairment` -- one direction's model: ``loss``, ``delay`` with uniform ``jitter``
  (+-), ``reorder`` (as netem: that share of datagrams skips the delay and goes after
  ``reorder_delay`` instead, overtaking the ones in flight), ``duplicate`` (a second copy with
  its own delay) and, for streams, ``retransmit_delay`` (a "lost" chunk of a TCP stream is
  not lost -- TCP would resend it -- it costs this extra wait, and everything behind it waits
  too, as head-of-line blocking does).
* :class:`Link` -- the shared state of one impaired path: the model of each direction (``up``
  is client -> server, ``down`` server -> client; :meth:`Link.impair` changes them at any
  time, :meth:`Link.clear` stops the impairment), timed outages (:meth:`Link.outage`,
  :meth:`Link.take_down` / :meth:`Link.bring_up`; a scheduled list for the command line), the
  seed and the counters (``link.counters``: what came in, was lost, duplicated, reordered,
  held, dropped at a bound, per transport and direction).
* :class:`UdpRelay` -- one front socket that clients send to; each client address (a *flow*)
  gets its own relay socket connected to the server, so the server sees one address per
  client and its answers find their way back. Both directions go through the model.
* :class:`TcpRelay` -- accepts TCP connections (e.g. WebSocket, chat) and opens one to the
  server for each; every chunk read is delivered after its delay but never before the chunk
  read before it (a stream keeps its order), and while the link is down nothing is delivered
  (a stall), so a WebSocket sees delay, jitter and stalls but no corruption.

Decisions are deterministic: each flow and direction draws from its own ``random.Random``
seeded with ``(seed, transport, flow number, direction)``, and every datagram (or chunk) takes
the same number of draws whatever happens to it, so the same sequence of packets gets the
same fates. (Which packets a real client sends, and when, still depends on the machine.)

Bounds: at most ``max_flows`` UDP flows (a new address beyond it is dropped and counted,
``udp.flows_full``), idle flows are closed after ``flow_idle`` seconds, at most
``queue_bound`` datagrams wait per flow and direction (more: dropped, ``udp.<dir>.queue_full``);
at most ``max_connections`` TCP connections (more: closed at once, ``tcp.refused``) and
``queue_chunks`` chunks of at most ``chunk_size`` bytes per connection and direction (more:
the relay stops reading, which is TCP's own back-pressure, counted ``tcp.<dir>.backpressure``;
bytes of a stream are never dropped).

Library use (tests): ``link = Link(up=imp, down=imp, seed=1)``, then
``addr = await nursery.start(UdpRelay(link, server_addr).run)`` and/or
``await nursery.start(TcpRelay(link, http_addr).run)``; clients connect to ``addr``. Command
line: ``python -m worldtools.netsim --udp 127.0.0.1:9301=127.0.0.1:9300 --loss 0.2
--delay 0.1 --jitter 0.03 --reorder 0.25 --outage 10:3`` prints the counters as JSON lines.

Must not: listen on or forward to anything but loopback addresses (refused with a clear
error), keep unbounded state, or run a task outside its nursery. It knows no protocol: bytes
in, the same bytes out (or none).
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import json
import random
import socket
import sys
from collections import Counter
from collections.abc import Callable

import attrs
import trio

__all__ = ["Impairment", "Link", "TcpRelay", "UdpRelay", "check_loopback", "main"]

UP, DOWN = "up", "down"  # client -> server, server -> client
RECV_SIZE = 65536
DRAIN_BATCH = 64  # datagrams read per wakeup of one socket before other tasks run
CONNECT_TIMEOUT = 5.0  # seconds the TCP relay waits for the server to accept


def _probability(instance, attribute, value) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name}: a probability in [0, 1], got {value!r}")


def _seconds(instance, attribute, value) -> None:
    if not value >= 0.0:
        raise ValueError(f"{attribute.name}: seconds >= 0, got {value!r}")


@attrs.frozen
class Impairment:
    """One direction's impairment (all zero: a clean link). See the module docstring."""

    loss: float = attrs.field(default=0.0, converter=float, validator=_probability)
    delay: float = attrs.field(default=0.0, converter=float, validator=_seconds)
    jitter: float = attrs.field(default=0.0, converter=float, validator=_seconds)
    reorder: float = attrs.field(default=0.0, converter=float, validator=_probability)
    reorder_delay: float = attrs.field(default=0.0, converter=float, validator=_seconds)
    duplicate: float = attrs.field(default=0.0, converter=float, validator=_probability)
    retransmit_delay: float = attrs.field(default=0.2, converter=float, validator=_seconds)

    def _delay(self, reorder_draw: float, jitter_draw: float) -> float:
        if reorder_draw < self.reorder:
            return self.reorder_delay
        return max(0.0, self.delay + (2.0 * jitter_draw - 1.0) * self.jitter)

    def datagram_delays(self, rng: random.Random) -> tuple[float, ...]:
        """The fate of one datagram: () when it is lost, else the delay of each copy sent
        (two copies when duplicated). Always takes six draws from ``rng``."""
        lost, dup, reorder1, jitter1, reorder2, jitter2 = (rng.random() for _ in range(6))
        if lost < self.loss:
            return ()
        first = self._delay(reorder1, jitter1)
        if dup < self.duplicate:
            return first, self._delay(reorder2, jitter2)
        return (first,)

    def chunk_delay(self, rng: random.Random) -> tuple[float, bool]:
        """(delay, retransmitted) of one chunk of a stream (before the stream's own order is
        kept). Always takes two draws from ``rng``."""
        lost, jitter = rng.random(), rng.random()
        delay = max(0.0, self.delay + (2.0 * jitter - 1.0) * self.jitter)
        if lost < self.loss:
            return delay + self.retransmit_delay, True
        return delay, False


CLEAN = Impairment()


class Link:
    """The shared state of one impaired path (both directions, any number of relays)."""

    def __init__(self, up: Impairment = CLEAN, down: Impairment = CLEAN, *, seed: int = 0) -> None:
        self.up = up
        self.down = down
        self.seed = seed
        self.counters: Counter[str] = Counter()
        self.is_down = False
        self._restored = trio.Event()
        self._restored.set()

    def impair(self, both: Impairment | None = None, *, up: Impairment | None = None,
               down: Impairment | None = None) -> None:
        """Change the model now (datagrams already in flight keep their delivery times)."""
        if both is not None:
            self.up = self.down = both
        if up is not None:
            self.up = up
        if down is not None:
            self.down = down

    def clear(self) -> None:
        """Stop impairing: what comes from now on passes at once (an outage is not ended)."""
        self.up = self.down = CLEAN

    def impairment(self, direction: str) -> Impairment:
        return self.up if direction == UP else self.down

    def rng(self, transport: str, flow: int, direction: str) -> random.Random:
        return random.Random(f"{self.seed}/{transport}/{flow}/{direction}")

    def take_down(self) -> None:
        """Start an outage: datagrams are dropped, streams stall, until :meth:`bring_up`."""
        if not self.is_down:
            self.is_down = True
            self.counters["outages"] += 1
            self._restored = trio.Event()

    def bring_up(self) -> None:
        if self.is_down:
            self.is_down = False
            self._restored.set()

    async def wait_up(self) -> None:
        await self._restored.wait()

    async def outage(self, seconds: float) -> None:
        """The link is down for ``seconds``; returns right after it came back (with no
        checkpoint in between, so the caller can note the moment)."""
        self.take_down()
        try:
            await trio.sleep(seconds)
        finally:
            self.bring_up()


def check_loopback(address: tuple, what: str) -> None:
    """Raise ValueError unless ``address``'s host is a loopback address."""
    host = address[0]
    if host == "localhost":
        return
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{what}: only loopback addresses are allowed, got {host!r}")


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# --------------------------------------------------------------------------- UDP


class _DelayLine:
    """Datagrams waiting for their delivery time: one heap, one task, a bound per key."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._heap: list = []
        self._order = itertools.count()
        self._waiting: Counter = Counter()
        self._wake = trio.Event()

    def put(self, due: float, key, deliver: Callable[[], None]) -> bool:
        if self._waiting[key] >= self.bound:
            return False
        self._waiting[key] += 1
        order = next(self._order)
        heapq.heappush(self._heap, (due, order, key, deliver))
        if self._heap[0][1] == order:  # the new head: the delivering task must wake earlier
            self._wake.set()
        return True

    def __len__(self) -> int:
        return len(self._heap)

    async def run(self) -> None:
        heap = self._heap
        while True:
            if heap:
                with trio.move_on_at(heap[0][0]):
                    await self._wake.wait()
            else:
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, key, deliver = heapq.heappop(heap)
                self._waiting[key] -= 1
                if not self._waiting[key]:
                    del self._waiting[key]
                deliver()


class _Flow:
    __slots__ = ("number", "addr", "sock", "rngs", "received", "delivered", "last_seen", "scope", "closed")

    def __init__(self, number: int, addr: tuple, sock: socket.socket, link: Link, now: float) -> None:
        self.number = number
        self.addr = addr
        self.sock = sock
        self.rngs = {UP: link.rng("udp", number, UP), DOWN: link.rng("udp", number, DOWN)}
        self.received = {UP: 0, DOWN: 0}  # datagrams taken in, per direction (their order)
        self.delivered = {UP: 0, DOWN: 0}  # the highest such number delivered so far
        self.last_seen = now
        self.scope = trio.CancelScope()
        self.closed = False


class UdpRelay:
    """Relays UDP datagrams between clients and ``target`` through a :class:`Link`."""

    def __init__(self, link: Link, target: tuple, *, listen: tuple = ("127.0.0.1", 0),
                 max_flows: int = 1024, queue_bound: int = 1024, flow_idle: float = 60.0) -> None:
        check_loopback(target, "udp target")
        check_loopback(listen, "udp listen")
        self.link = link
        self.target = (target[0], int(target[1]))
        self.listen = (listen[0], int(listen[1]))
        self.max_flows = max_flows
        self.flow_idle = flow_idle
        self.flows: dict[tuple, _Flow] = {}
        self.address: tuple | None = None
        self._line = _DelayLine(queue_bound)
        self._front: socket.socket | None = None
        self._numbers = itertools.count()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        front = socket.socket(_family(self.listen[0]), socket.SOCK_DGRAM)
        try:
            front.setblocking(False)
            front.bind(self.listen)
            self._front = front
            self.address = front.getsockname()[:2]
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._line.run)
                nursery.start_soon(self._sweep)
                nursery.start_soon(self._front_loop)
                task_status.started(self.address)
        finally:
            for flow in list(self.flows.values()):
                self._close_flow(flow)
            trio.lowlevel.notify_closing(front)
            front.close()

    async def _front_loop(self) -> None:
        front = self._front
        while True:
            await trio.lowlevel.wait_readable(front)
            for _ in range(DRAIN_BATCH):
                try:
                    data, addr = front.recvfrom(RECV_SIZE)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                flow = self.flows.get(addr[:2]) or self._open_flow(addr[:2])
                if flow is not None:
                    self._take(flow, UP, data)
            await trio.lowlevel.checkpoint()

    def _open_flow(self, addr: tuple) -> _Flow | None:
        if len(self.flows) >= self.max_flows:
            self.link.counters["udp.flows_full"] += 1
            return None
        family = _family(self.target[0])
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
            sock.connect(self.target)
        except OSError:
            sock.close()
            self.link.counters["udp.flow_errors"] += 1
            return None
        flow = _Flow(next(self._numbers), addr, sock, self.link, trio.current_time())
        self.flows[addr] = flow
        self.link.counters["udp.flows"] += 1
        self._nursery.start_soon(self._flow_loop, flow)
        return flow

    async def _flow_loop(self, flow: _Flow) -> None:
        with flow.scope:
            sock = flow.sock
            while True:
                await trio.lowlevel.wait_readable(sock)
                for _ in range(DRAIN_BATCH):
                    try:
                        data = sock.recv(RECV_SIZE)
                    except BlockingIOError:
                        break
                    except OSError:  # e.g. ICMP port unreachable while the server is away
                        continue
                    self._take(flow, DOWN, data)
                await trio.lowlevel.checkpoint()

    def _close_flow(self, flow: _Flow) -> None:
        if flow.closed:
            return
        flow.closed = True
        flow.scope.cancel()
        self.flows.pop(flow.addr, None)
        trio.lowlevel.notify_closing(flow.sock)
        flow.sock.close()

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(max(0.05, self.flow_idle / 4))
            limit = trio.current_time() - self.flow_idle
            for flow in [f for f in self.flows.values() if f.last_seen < limit]:
                self._close_flow(flow)
                self.link.counters["udp.flows_expired"] += 1

    def _take(self, flow: _Flow, direction: str, data: bytes) -> None:
        """A datagram arrived from ``direction``'s sender: decide its fate."""
        counters = self.link.counters
        now = trio.current_time()
        flow.last_seen = now
        counters[f"udp.{direction}.in"] += 1
        flow.received[direction] += 1
        number = flow.received[direction]
        delays = self.link.impairment(direction).datagram_delays(flow.rngs[direction])
        if self.link.is_down:
            counters[f"udp.{direction}.outage"] += 1
            return
        if not delays:
            counters[f"udp.{direction}.lost"] += 1
            return
        if len(delays) > 1:
            counters[f"udp.{direction}.duplicated"] += 1
        for delay in delays:
            def deliver(flow=flow, direction=direction, number=number, data=data) -> None:
                self._deliver(flow, direction, number, data)

            if delay <= 0.0:
                deliver()
            elif not self._line.put(now + delay, (flow.number, direction), deliver):
                counters[f"udp.{direction}.queue_full"] += 1

    def _deliver(self, flow: _Flow, direction: str, number: int, data: bytes) -> None:
        counters = self.link.counters
        if flow.closed:
            counters[f"udp.{direction}.flow_closed"] += 1
            return
        if self.link.is_down:
            counters[f"udp.{direction}.outage"] += 1
            return
        if number < flow.delivered[direction]:
            counters[f"udp.{direction}.reordered"] += 1
        flow.delivered[direction] = max(flow.delivered[direction], number)
        try:
            if direction == UP:
                flow.sock.send(data)
            else:
                self._front.sendto(data, flow.addr)
        except OSError:  # a full socket buffer or an ICMP error: the datagram is gone
            counters[f"udp.{direction}.send_failed"] += 1
            return
        counters[f"udp.{direction}.sent"] += 1

    @property
    def in_flight(self) -> int:
        """Datagrams waiting for their delivery time."""
        return len(self._line)


# --------------------------------------------------------------------------- TCP


class TcpRelay:
    """Relays TCP connections to ``target`` through a :class:`Link`, keeping each stream's
    order: delay, jitter, retransmission stalls and outages, never loss or reordering."""

    def __init__(self, link: Link, target: tuple, *, listen: tuple = ("127.0.0.1", 0),
                 max_connections: int = 256, chunk_size: int = 16384, queue_chunks: int = 64) -> None:
        check_loopback(target, "tcp target")
        check_loopback(listen, "tcp listen")
        self.link = link
        self.target = (target[0], int(target[1]))
        self.listen = (listen[0], int(listen[1]))
        self.max_connections = max_connections
        self.chunk_size = chunk_size
        self.queue_chunks = queue_chunks
        self.active = 0
        self.address: tuple | None = None
        self._numbers = itertools.count()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.listen[1], host=self.listen[0])
        self.address = listeners[0].socket.getsockname()[:2]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.address)

    async def _handle(self, client: trio.SocketStream) -> None:
        counters = self.link.counters
        async with client:
            if self.active >= self.max_connections:
                counters["tcp.refused"] += 1
                return
            self.active += 1
            try:
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        server = await trio.open_tcp_stream(*self.target)
                except (OSError, trio.TooSlowError):
                    counters["tcp.connect_failed"] += 1
                    return
                number = next(self._numbers)
                counters["tcp.connections"] += 1
                async with server:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pipe, number, UP, client, server, nursery.cancel_scope)
                        nursery.start_soon(self._pipe, number, DOWN, server, client, nursery.cancel_scope)
            finally:
                self.active -= 1

    async def _pipe(self, number: int, direction: str, src: trio.SocketStream, dst: trio.SocketStream,
                    connection: trio.CancelScope) -> None:
        """One direction of one connection: a reader that stamps each chunk with its delivery
        time and a writer that delivers in order, when due and while the link is up."""
        link, counters = self.link, self.link.counters
        rng = link.rng("tcp", number, direction)
        send, receive = trio.open_memory_channel(self.queue_chunks)

        async def reader() -> None:
            last_due = 0.0
            async with send:
                while True:
                    data = await src.receive_some(self.chunk_size)
                    if not data:
                        return
                    delay, retransmitted = link.impairment(direction).chunk_delay(rng)
                    counters[f"tcp.{direction}.chunks"] += 1
                    counters[f"tcp.{direction}.bytes"] += len(data)
                    if retransmitted:
                        counters[f"tcp.{direction}.retransmits"] += 1
                    last_due = max(trio.current_time() + delay, last_due)
                    try:
                        send.send_nowait((last_due, data))
                    except trio.WouldBlock:
                        counters[f"tcp.{direction}.backpressure"] += 1
                        await send.send((last_due, data))

        async def writer() -> None:
            async with receive:
                async for due, data in receive:
                    await trio.sleep_until(due)
                    if link.is_down:
                        counters[f"tcp.{direction}.stalled"] += 1
                        await link.wait_up()
                    await dst.send_all(data)
            await dst.send_eof()  # the sender is done: pass the half-close on

        async def guarded(part) -> None:
            try:
                await part()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                counters[f"tcp.{direction}.reset"] += 1
                connection.cancel()  # one side is gone: end the whole connection

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, reader)
            nursery.start_soon(guarded, writer)


# --------------------------------------------------------------------------- command line


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def _pair(text: str) -> tuple[tuple, tuple]:
    listen, sep, target = text.partition("=")
    if not sep:
        raise ValueError(f"expected LISTEN=TARGET (host:port=host:port), got {text!r}")
    return _address(listen), _address(target)


def _outage(text: str) -> tuple[float, float]:
    start, sep, seconds = text.partition(":")
    if not sep:
        raise ValueError(f"expected START:SECONDS, got {text!r}")
    return float(start), float(seconds)


async def _run(args) -> None:
    imp = Impairment(loss=args.loss, delay=args.delay, jitter=args.jitter, reorder=args.reorder,
                     reorder_delay=args.reorder_delay, duplicate=args.duplicate,
                     retransmit_delay=args.retransmit_delay)
    link = Link(up=imp if args.direction in ("both", UP) else CLEAN,
                down=imp if args.direction in ("both", DOWN) else CLEAN, seed=args.seed)

    def report(**extra) -> None:
        print(json.dumps({**extra, "down": link.is_down, "counters": dict(sorted(link.counters.items()))}), flush=True)

    async def outages(started: float) -> None:
        for start, seconds in sorted(args.outage):
            await trio.sleep_until(started + start)
            report(event="outage", seconds=seconds)
            await link.outage(seconds)
            report(event="restored")

    async def stats() -> None:
        while True:
            await trio.sleep(args.stats_interval)
            report(event="stats")

    with trio.move_on_after(args.duration or float("inf")):
        async with trio.open_nursery() as nursery:
            for listen, target in args.udp:
                addr = await nursery.start(UdpRelay(link, target, listen=listen).run)
                report(event="udp", listen=f"{addr[0]}:{addr[1]}", target=f"{target[0]}:{target[1]}")
            for listen, target in args.tcp:
                addr = await nursery.start(TcpRelay(link, target, listen=listen).run)
                report(event="tcp", listen=f"{addr[0]}:{addr[1]}", target=f"{target[0]}:{target[1]}")
            nursery.start_soon(outages, trio.current_time())
            nursery.start_soon(stats)
    report(event="end")


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m worldtools.netsim",
        description="Impair UDP and TCP traffic between loopback clients and a loopback server.")
    parser.add_argument("--udp", type=_pair, action="append", default=[], metavar="LISTEN=TARGET",
                        help="relay UDP, e.g. 127.0.0.1:9301=127.0.0.1:9300 (repeatable)")
    parser.add_argument("--tcp", type=_pair, action="append", default=[], metavar="LISTEN=TARGET",
                        help="relay TCP, e.g. 127.0.0.1:8081=127.0.0.1:8080 (repeatable)")
    parser.add_argument("--loss", type=float, default=0.0, help="share of datagrams lost (TCP: retransmitted)")
    parser.add_argument("--delay", type=float, default=0.0, help="one-way delay, seconds")
    parser.add_argument("--jitter", type=float, default=0.0, help="+- uniform jitter, seconds")
    parser.add_argument("--reorder", type=float, default=0.0, help="share of datagrams that skip the delay")
    parser.add_argument("--reorder-delay", type=float, default=0.0, help="their delay instead, seconds")
    parser.add_argument("--duplicate", type=float, default=0.0, help="share of datagrams sent twice")
    parser.add_argument("--retransmit-delay", type=float, default=0.2, help="TCP: extra wait of a lost chunk")
    parser.add_argument("--direction", choices=("both", UP, DOWN), default="both",
                        help="impair both directions, or only client->server (up) or server->client (down)")
    parser.add_argument("--outage", type=_outage, action="append", default=[], metavar="START:SECONDS",
                        help="take the link down START seconds after starting, for SECONDS (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stats-interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: never)")
    try:
        args = parser.parse_args(argv)
        if not args.udp and not args.tcp:
            parser.error("nothing to relay: give --udp and/or --tcp")
        Impairment(loss=args.loss, delay=args.delay, jitter=args.jitter, reorder=args.reorder,
                   reorder_delay=args.reorder_delay, duplicate=args.duplicate,
                   retransmit_delay=args.retransmit_delay)
        for listen, target in args.udp + args.tcp:
            check_loopback(listen, "listen")
            check_loopback(target, "target")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(_run, args)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
