"""The UDP transport: one socket, batched non-blocking reads, direct non-blocking sends.

Reads wait for readability through trio, then drain up to ``recv_batch`` datagrams with plain
non-blocking ``recvfrom`` and hand each to a synchronous handler; the batch bound and the
checkpoint between batches keep a flood from one address from starving the tick. Sends are a
plain non-blocking ``sendto`` (about 4 us, against 17 us for trio's awaitable one): real-time
datagrams that the kernel will not take right now are dropped and counted, never queued.

A wakeup costs far more than a datagram. Handling an INPUT datagram takes about 5 us; one
pass of trio's run loop that found the process idle costs about 0.3 ms of CPU on this kind of
virtual machine (a bare ``epoll_wait`` with a timeout alone costs 0.08 ms), more with trio as
a guest on asyncio (the wait runs in a thread that then wakes the host loop). Clients send
independently, so at 8,000 datagrams a second (400 clients) they arrive one by one and a loop
that waits for readability after each drain would wake for nearly every one. So while traffic
is dense (a drain finds data less than ``coalesce`` seconds after the previous one did) the
loop stops waiting for readability and drains the socket at the next multiple of
``coalesce`` counted from ``origin``, for as long as each drain finds something, then goes
back to waiting. The server sets ``origin`` to its tick clock's start and ``coalesce`` to a
divisor of the tick period (default 25 ms, half a tick), so every other drain falls on a tick
deadline and shares that wakeup with the tick: 40 wakeups a second for the receive loop and
the tick together however many clients send (``tools/bench/input_bench.py --socket``: 4 us of
CPU per datagram at 25 ms against 11 us at 8 ms, with trio as a guest). Inputs and
acknowledgements are only used at the next tick, and the tick drains the socket right before
it runs, so coalescing delays no input; it delays a handshake reply under load by at most
``coalesce``, and it makes round-trip estimates (taken when an acknowledgement is read) up to
``coalesce`` longer. Sparse traffic is read as soon as it arrives.

This module knows nothing of the protocol; it moves bytes and counts them.
"""

from __future__ import annotations

import errno
import math
import socket
from typing import Callable

import trio

from worldserver.stats import Stats

MAX_RECV = 2048  # larger datagrams are truncated by the kernel and then refused by the protocol
RECV_COALESCE = 0.025  # seconds between drains while traffic is dense (0: wake per readiness)


class UdpTransport:
    def __init__(
        self, host: str, port: int, stats: Stats, recv_batch: int = 256, coalesce: float = RECV_COALESCE
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.stats = stats
        self.recv_batch = recv_batch
        self.coalesce = coalesce
        self.origin = 0.0  # dense-traffic drains fall on origin + k * coalesce (see the module doc)
        self.bytes_in = 0
        self.bytes_out = 0
        self.datagrams_in = 0
        self.datagrams_out = 0

    @property
    def address(self) -> tuple:
        return self.sock.getsockname()

    def send(self, data: bytes, addr: tuple) -> None:
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            self.stats.incr("drop.send_buffer_full")
            return
        except OSError as exc:  # e.g. ECONNREFUSED from an earlier ICMP, EPERM, ENETUNREACH
            self.stats.incr(f"drop.send_{errno.errorcode.get(exc.errno, exc.errno)}")
            return
        self.bytes_out += len(data)
        self.datagrams_out += 1

    async def receive_loop(self, handle: Callable[[bytes, tuple, float], None]) -> None:
        """Runs forever (until cancelled), calling ``handle(data, addr, now)`` per datagram.

        ``now`` is read once per drain. A drain reads until the socket is empty or
        ``recv_batch`` datagrams were read; after a full drain the loop checkpoints (the tick
        and others run) and drains again; after a drain that emptied the socket it waits for
        readability, or, while traffic is dense, sleeps until the next multiple of ``coalesce``
        after ``origin`` (see the module documentation). Every wait is a checkpoint, so there is exactly one await per drain.
        """
        sock = self.sock
        batch = self.recv_batch
        coalesce = self.coalesce
        wait_readable = trio.lowlevel.wait_readable
        checkpoint = trio.lowlevel.checkpoint
        sleep_until = trio.sleep_until
        current_time = trio.current_time
        polling = False  # drain again after a sleep instead of waiting for readability
        last_data = -math.inf  # when a drain last found a datagram
        while True:
            if not polling:
                await wait_readable(sock)
            now = current_time()
            count = self.drain(handle, now, batch)
            full = count == batch
            if full:  # more may be waiting: let the tick and the others run, then drain again
                polling = True
                last_data = now
                await checkpoint()
            elif count and coalesce > 0.0 and (polling or now - last_data < coalesce):
                polling = True
                last_data = now
                await sleep_until(self.next_drain(now))
            else:
                polling = False
                if count:
                    last_data = now

    def next_drain(self, now: float) -> float:
        """The first ``origin + k * coalesce`` later than ``now``."""
        coalesce, origin = self.coalesce, self.origin
        k = math.floor((now - origin) / coalesce) + 1
        due = origin + k * coalesce
        return due if due > now + 1e-9 else due + coalesce  # not "now" again by a rounding error

    def drain(self, handle: Callable[[bytes, tuple, float], None], now: float, limit: int) -> int:
        """Reads and hands on up to ``limit`` waiting datagrams without blocking; returns how
        many. The receive loop drains with it, and the tick drains right before it runs, so
        no input waits out the coalescing sleep past its tick."""
        recvfrom = self.sock.recvfrom
        stats = self.stats
        count = 0
        size = 0
        try:
            for _ in range(limit):
                try:
                    data, addr = recvfrom(MAX_RECV)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # ICMP errors surface here on Linux; not fatal
                    stats.incr(f"recv_error.{errno.errorcode.get(exc.errno, exc.errno)}")
                    continue
                count += 1
                size += len(data)
                handle(data, addr, now)
        finally:
            self.bytes_in += size
            self.datagrams_in += count
        return count

    def close(self) -> None:
        self.sock.close()
