"""The swarm over UDP, the server's native transport: a socket per bot, joins over HTTP first.

Job: :class:`UdpTransport` gives each bot its own connected, non-blocking UDP socket (its own
source port; the kernel filters other senders), all registered in one ``select.epoll``; trio
only waits for that epoll fd to become readable (or for the next send slot), so an
in-process server in the same trio run keeps running, and one loop serves every bot of the
process (no task per bot). :meth:`UdpTransport.drain` reads one datagram per ready socket per
epoll round, a few rounds a wakeup. Light bots never decode snapshots (the bot set reads the
part header at fixed offsets).

Joining: a server on its default configuration lets in only UDP clients with a connect token
(``net.require_connect_token``), so each bot first joins over the server's HTTP port
(``POST /api/join``, one join per bot, names ``bot<run tag>-<n>``, :func:`join_bots`) and
connects with the connect token and key it got: its packets are tagged as a real client's.
No join URL (``--anonymous``) connects anonymously, for open servers. A refused join is the
bot's failure (``join_<code>``).

Entries: :func:`run_bots` (one process, inside trio), :func:`run_bots_sync`, and
:func:`run_processes` (bots over worker processes, joined first from the parent).

Must not: import server internals, send to anything but the server addresses it was given
(UDP, and HTTP for the joins), or wait without a bound (every join has its timeout; the loop
bounds the rest).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time

import trio

from worldclient.join import JoinFailed, join_sync
from worldtools.swarm import loop
from worldtools.swarm.bots import Bot, BotSet
from worldtools.swarm.processes import run_workers

__all__ = ["UdpTransport", "join_bots", "run_bots", "run_bots_sync", "run_processes"]

JOIN_TIMEOUT = 10.0  # seconds one HTTP join may take
DRAIN_ROUNDS = 4  # epoll rounds per wakeup, each reading one datagram per ready socket


class UdpTransport:
    """A UDP socket per bot to ``host:port``; the bots join at ``http`` first (None: anonymous)."""

    name = "udp"
    files_per_bot = 1
    trusted = False

    def __init__(self, host: str, port: int, http: str | None = None) -> None:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        self.family, _, _, _, self.addr = infos[0]
        self.http = http
        self.bots: BotSet | None = None
        self.ep = None  # the epoll of the bots' sockets, while running
        self.by_fd: dict[int, Bot] = {}

    def bind(self, bots: BotSet) -> None:
        self.bots = bots

    async def tickets(self, count: int) -> list | None:
        if not self.http:
            return None
        return await trio.to_thread.run_sync(join_bots, self.http, count)

    def setup_bound(self, count: int) -> float:
        return loop.setup_bound(count)

    def admit(self, now: float, waiting: int) -> int:
        return waiting  # sockets cost the server nothing until the HELLO

    def open(self, bot: Bot, now: float) -> None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("::1" if self.family == socket.AF_INET6 else "127.0.0.1", 0)
                  if _is_loopback(self.addr[0]) else ("", 0))
        sock.connect(self.addr)  # own source port; the kernel filters other senders
        bot.link = sock
        fd = sock.fileno()
        self.by_fd[fd] = bot
        self.ep.register(fd, select.EPOLLIN)
        self.bots.hello(bot, now)

    def send(self, bot: Bot, data: bytes) -> bool | str:
        sock = bot.link
        if sock is None:
            return False
        try:
            sock.send(data)
            return True
        except (BlockingIOError, InterruptedError):
            return "send_buffer_full"
        except OSError:  # ICMP port unreachable reported on a connected socket, etc.
            return "send_error"

    def close(self, bot: Bot) -> None:
        sock, bot.link = bot.link, None
        if sock is None:
            return
        fd = sock.fileno()
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        self.by_fd.pop(fd, None)
        sock.close()

    @contextlib.asynccontextmanager
    async def running(self):
        self.ep = select.epoll()
        try:
            yield self
        finally:
            self.ep.close()

    async def wait(self, deadline: float) -> None:
        clock = self.bots.clock
        wait = deadline - clock()
        if wait > 0:
            with trio.move_on_after(wait):
                await trio.lowlevel.wait_readable(self.ep.fileno())
        else:
            await trio.lowlevel.checkpoint()
        self.drain(clock())

    def drain(self, now: float) -> None:
        """Read the datagrams waiting on the ready sockets: one per socket per epoll round.

        Reading until EAGAIN would cost a failing syscall (and a Python exception) per socket
        per wakeup; a second epoll round over all sockets costs one syscall. Sockets still
        holding datagrams after the last round stay readable and wake the loop again.
        """
        by_fd = self.by_fd
        poll = self.ep.poll
        receive = self.bots.receive
        for _ in range(DRAIN_ROUNDS):
            ready = poll(0)
            if not ready:
                return
            for fd, _ in ready:
                bot = by_fd.get(fd)
                if bot is None:
                    continue
                try:
                    data = bot.link.recv(2048)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # e.g. ECONNREFUSED: the server is not (yet) there
                    self.bots.failures_soft("recv_error")
                    continue
                receive(bot, data, now)

    async def close_all(self) -> None:
        pass  # the bot set's teardown closed every socket; the epoll closes with ``running``

    def counts(self) -> dict:
        return {}

    def report(self) -> dict:
        return {}


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host == "::1"


def join_bots(http_url: str, count: int, tag: str | None = None, timeout: float = JOIN_TIMEOUT) -> list:
    """One ``POST /api/join`` per bot on the server at ``http_url``, over one keep-alive
    connection; returns a ticket per bot: ``(connect token, key)``, or ``join_<code>`` when
    its join was refused (``join_unreachable``: no answer). ``tag`` makes the names of this run
    (``bot<tag>-<n>``; default random, since names are kept for good)."""
    import httpx

    tag = tag or os.urandom(3).hex()
    tickets: list = []
    with httpx.Client(timeout=timeout) as http:
        for i in range(int(count)):
            try:
                joined = join_sync(http_url, f"bot{tag}-{i}", http=http, timeout=timeout)
            except JoinFailed as exc:
                tickets.append(f"join_{exc.code}")
                continue
            except httpx.HTTPError:
                tickets.append("join_unreachable")
                continue
            if not joined.connect_token:
                tickets.append("join_no_connect_token")  # the server has no UDP endpoint
                continue
            tickets.append((joined.connect_token, joined.connect_key))
    return tickets


async def run_bots(host: str, port: int, bots: int, duration: float, observers: int = 16,
                   seed: int | None = None, progress=None, *, http: str | None = None, **options) -> dict:
    """Run ``bots`` UDP bots against ``host:port`` in this trio run: set them up, then measure
    ``duration`` seconds; the report (see :func:`worldtools.swarm.loop.run`, which takes the
    ``options``: ``warmup``, ``speed``, ``clock``, ``tickets``, ``ready``, ``begin``,
    ``setup_timeout``). ``http``: the server's HTTP base URL, where each bot joins first
    unless ``tickets`` are given; neither: the bots are anonymous (open servers only)."""
    transport = UdpTransport(host, port, http=http)
    return await loop.run(transport, bots, duration, observers, seed, progress, **options)


def run_bots_sync(host: str, port: int, bots: int, duration: float, **options) -> dict:
    """:func:`run_bots` from plain (non-async) code, in its own ``trio.run``."""
    return trio.run(lambda: run_bots(host, port, bots, duration, **options))


def run_processes(host: str, port: int, bots: int, duration: float, processes: int = 1, observers: int = 16,
                  seed: int | None = None, progress=None, *, warmup: float = 0.0, speed: float | None = None,
                  http: str | None = None, **options) -> dict:
    """Spread the bots over ``processes`` worker processes; return the merged report
    (:func:`worldtools.swarm.processes.run_workers`, which takes the ``options``: ``cpus``,
    ``ready``, ``begin``, and calls ``progress``). ``http``: every bot joins there first,
    from this process (:func:`join_bots`), and the workers get their tickets; None:
    anonymous bots. The report's ``setup_s`` counts from the call, joins included.
    ``speed``: the bots' walking speed in m/s (None: the server's max speed).
    """
    t_begin = time.monotonic()
    tickets = join_bots(http, int(bots)) if http else None

    def share(index: int, first: int, count: int) -> dict:
        mine = None if tickets is None else tickets[first: first + count]
        return dict(host=host, port=port, warmup=warmup, speed=speed, tickets=mine)

    return run_workers(run_bots_sync, bots, duration, processes, observers, seed, progress, share=share,
                       setup_bound=loop.setup_bound, t_begin=t_begin, **options)
