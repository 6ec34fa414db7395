"""Bot swarm over WebRTC data channels (geckos.io) and WebSockets: the browser transports.

Job: the same bots, walk, observers and report as :mod:`worldtools.swarm` (which drives the
UDP transport), over the message transports of the server's HTTP port: ``webrtc`` opens one
geckos.io data channel per bot (:func:`worldclient.rtc_client.open_geckos`, aiortc), ``ws``
one WebSocket per bot to ``/ws/movement`` (trio-websocket). Each bot speaks the native
protocol's trusted handshake (HELLO -> ACCEPT, ``ClientConnection(trusted=True)``), one packet
per binary message, sends inputs at 20 Hz, and observers decode snapshots and measure
move-to-observed latency. The report has the UDP swarm's fields plus ``transport``.

How: :class:`MessageSwarm` subclasses the UDP swarm's bot set and replaces only what touches
sockets (opening a channel instead of a socket, sending on it, closing it); walking, counting,
observing and the report are the UDP swarm's own code. One trio loop per process runs the send
slots; for ``webrtc`` it runs as a guest on the asyncio loop that runs aiortc
(``worldclient.aio_bridge.run``), and received messages go from aiortc's callbacks straight
into the (synchronous) bot code, with no per-message hop into trio. New channels are opened
at a bounded rate (``connect_rate`` per second for the whole swarm, ``max_opening`` at once
per process): a WebRTC set-up costs the server several milliseconds of CPU.
``run_processes`` spreads the bots over worker processes, so that the swarm's aiortc cost is
spread over cores rather than added to one.

Must not: import server internals (``worldserver.limits.TokenBucket``, plain arithmetic, paces the
openings), talk to anything but the HTTP base URL it was given, or run
unbounded: each opening has a deadline, the run ends at ``duration``, closing is bounded by
:data:`CLOSE_WAIT`, and worker processes are killed after ``duration`` + ``TEARDOWN_CAP``.
The set-up (channels opening at ``connect_rate``) comes before the ``duration`` measured, as
in :mod:`worldtools.swarm`.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import time
from collections import deque
from urllib.parse import urlsplit

import trio

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.client import ClientConnection
from worldserver.limits import TokenBucket
from worldtools import swarm as udp_swarm

__all__ = [
    "MessageSwarm", "TRANSPORTS", "run_bots", "run_bots_sync", "run_processes", "run_swarm",
    "ws_url",
]  # fmt: skip

TRANSPORTS = ("webrtc", "ws")
OPEN_TIMEOUT = {"webrtc": 20.0, "ws": 10.0}  # seconds for a channel to open
CONNECT_RATE = {"webrtc": 40.0, "ws": 200.0}  # new channels per second, whole swarm
MAX_OPENING = {"webrtc": 20, "ws": 50}  # channels being opened at once, per process
SEND_BACKLOG = 4096  # webrtc: skip a send while the channel buffers more bytes than this
WS_SEND_QUEUE = 32  # ws: packets waiting for the socket writer before sends are dropped
CLOSE_WAIT = 6.0  # seconds for closing every channel at the end (each close is bounded too)
TEARDOWN_CAP = udp_swarm.TEARDOWN_CAP + CLOSE_WAIT
HOST_ADDRESSES = ("127.0.0.1",)  # ICE host candidates of the bots on loopback
_CLOSING_STATES = ("failed", "closed", "disconnected")
_DISCONNECT = bytes((P.DISCONNECT,))


def ws_url(http_url: str) -> str:
    """``http://host:port[/prefix]`` -> ``ws://host:port[/prefix]/ws/movement``."""
    parts = urlsplit(http_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {http_url!r}")
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws/movement"


def _host_port(http_url: str) -> tuple[str, int]:
    parts = urlsplit(http_url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {http_url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme in ("https", "wss") else 80)


def _is_loopback_url(http_url: str) -> bool:
    host = _host_port(http_url)[0]
    return host.startswith("127.") or host in ("::1", "localhost")


# ----------------------------------------------------------------------------- channels


class _RtcHandle:
    """An open geckos.io channel of one bot (``worldclient.rtc_client.GeckosChannel``)."""

    __slots__ = ("geckos", "channel")

    def __init__(self, geckos) -> None:
        self.geckos = geckos
        self.channel = geckos.channel

    def attach(self, on_message, on_close) -> None:
        """Deliver this channel's binary messages to ``on_message(data)`` right from aiortc's
        callback (same thread; the bot code is synchronous), instead of through the client's
        trio queue, which the bots never read; ``on_close(reason)`` once it ends."""
        channel, pc = self.channel, self.geckos.pc
        channel.remove_all_listeners("message")

        def message(data) -> None:
            if isinstance(data, bytes):
                on_message(data)

        def state() -> None:
            if pc.connectionState in _CLOSING_STATES:
                on_close(pc.connectionState)

        channel.on("message", message)
        channel.on("close", lambda: on_close("channel_closed"))
        pc.on("connectionstatechange", state)

    def send(self, data: bytes):
        channel = self.channel
        if channel.readyState != "open":
            return "send_not_open"
        if channel.bufferedAmount > SEND_BACKLOG:
            return "send_backlog"
        channel.send(data)
        return True

    async def aclose(self) -> None:
        await self.geckos.close()  # bounded by rtc_client.CLOSE_WAIT


class _WsHandle:
    """One bot's WebSocket: a writer task drains a small queue, so ``send`` never blocks."""

    __slots__ = ("ws", "scope", "tx", "rx", "flushed", "last")

    def __init__(self) -> None:
        self.ws = None
        self.last = b""
        self.scope = trio.CancelScope()
        self.tx, self.rx = trio.open_memory_channel(WS_SEND_QUEUE)
        self.flushed = trio.Event()

    def attach(self, on_message, on_close) -> None:
        pass  # the bot's task reads the socket and reports its end itself

    def send(self, data: bytes):
        if data[:1] == _DISCONNECT and data == self.last:
            return True  # the UDP swarm says goodbye twice for loss; a WebSocket loses nothing
        self.last = data
        try:
            self.tx.send_nowait(data)
        except trio.WouldBlock:
            return "send_queue_full"
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return "send_closed"
        return True

    async def writer(self) -> None:
        try:
            async for data in self.rx:
                await self.ws.send_message(data)
        finally:
            self.flushed.set()

    async def aclose(self) -> None:
        """Send what is queued (the DISCONNECT at the end; 1 s at most), then end the bot's
        task, which closes the TCP connection. No WebSocket close handshake: the DISCONNECT
        already ended the session, and waiting for the server's close frame from another
        task than the reader was seen to take seconds with trio-websocket 0.12."""
        self.tx.close()
        if self.ws is not None:
            with trio.move_on_after(1.0):
                await self.flushed.wait()
        self.scope.cancel()


# ----------------------------------------------------------------------------- the bots


class MessageSwarm(udp_swarm._Swarm):
    """The UDP swarm's bots, over channels: opening, sending and closing are replaced.

    Thread/loop rules: everything here is synchronous. Channel callbacks (aiortc, in asyncio)
    may call :meth:`on_message` and :meth:`on_closed`; anything that needs trio (opening and
    closing channels) is queued in ``starting`` and ``closing`` for the driver loop.
    """

    def __init__(self, transport: str, http_url: str, bots: int, observers: int, seed,
                 *, connect_rate: float, max_opening: int, open_timeout: float) -> None:
        host, port = _host_port(http_url)
        super().__init__(host, port, bots, observers, seed)
        self.transport = transport
        self.http_url = http_url
        self.pending = deque(self.waiting)  # admitted into ``waiting`` at connect_rate
        self.waiting.clear()
        self.connect_rate = max(0.1, float(connect_rate))
        self.max_opening = max(1, int(max_opening))
        self.open_timeout = float(open_timeout)
        self.admissions: TokenBucket | None = None  # connect_rate; made by the first _admit
        self.opening: dict[int, float] = {}  # bot index -> deadline for its channel
        self.open_started: dict[int, float] = {}  # bot index -> when its opening began
        self.handles: dict[int, object] = {}
        self.starting: list = []  # bots whose channel the driver must open
        self.closing: list = []  # handles the driver must close
        self.open_ms: list[float] = []  # from starting to open, per bot

    # -- opening -----------------------------------------------------------------------------
    def settled(self) -> bool:
        return not self.pending and super().settled()

    def _admit(self, now: float) -> None:
        if self.admissions is None:  # one bot at once, then connect_rate (bursts of 0.1 s)
            self.admissions = TokenBucket(self.connect_rate, max(1.0, self.connect_rate * 0.1), now, tokens=1.0)
        room = self.max_opening - len(self.opening) - len(self.waiting)
        while self.pending and room > 0 and not self.admissions.take(now):
            room -= 1
            self.waiting.append(self.pending.popleft())

    def _start_handshake(self, bot, now: float) -> None:
        bot.conn = ClientConnection(
            version=PROTOCOL_VERSION,
            nonce=bot.nonce,
            timeout=udp_swarm.CONN_TIMEOUT,
            handshake_timeout=udp_swarm.HANDSHAKE_TIMEOUT,
            trusted=True,
        )
        bot.state = udp_swarm.HANDSHAKE
        self.handshaking.append(bot)
        self.opening[bot.index] = now + self.open_timeout + 1.0  # the opener times out first
        self.open_started[bot.index] = now
        self.starting.append(bot)

    def on_open(self, bot, handle) -> None:
        """The bot's channel is open: send HELLO on it (the handshake clock starts now)."""
        if bot.state != udp_swarm.HANDSHAKE or self.opening.pop(bot.index, None) is None:
            self.closing.append(handle)  # too late: the bot gave up, or the run ended
            return
        now = time.monotonic()
        self.open_ms.append((now - self.open_started.pop(bot.index, now)) * 1000.0)
        self.handles[bot.index] = handle
        handle.attach(
            lambda data: self.on_message(bot, data),
            lambda reason: self.on_closed(bot, handle, reason),
        )
        self._send(bot, bot.conn.connect(now))

    def on_open_failed(self, bot, reason: str) -> None:
        if bot.state == udp_swarm.HANDSHAKE and bot.index in self.opening:
            self._fail(bot, reason, time.monotonic())

    def _expire_openings(self, now: float) -> None:
        for index, deadline in list(self.opening.items()):
            if now > deadline:
                self._fail(self.bots[index], "open_timeout", now)

    # -- traffic -----------------------------------------------------------------------------
    def _send(self, bot, data: bytes) -> bool:
        handle = self.handles.get(bot.index)
        if handle is None:
            return False  # still opening (a HELLO resend cannot happen before the open)
        try:
            result = handle.send(data)
        except Exception:  # the channel closed underneath
            result = "send_error"
        if result is not True:
            self.failures_soft(result)
            return False
        return True

    def on_message(self, bot, data: bytes) -> None:
        """One binary message from the server (called by the channel, in any context)."""
        if bot.state == udp_swarm.DEAD:
            return
        now = time.monotonic()
        self.bytes_total += len(data)
        events, out = bot.conn.receive_datagram(data, now)
        for reply in out:
            self._send(bot, reply)
        if events:
            self._handle_events(bot, events, now, len(data))

    def on_closed(self, bot, handle, reason: str) -> None:
        """The bot's channel ended without the bot asking for it."""
        if self.handles.get(bot.index) is not handle:
            return
        if bot.state == udp_swarm.LIVE:
            self._fail(bot, f"closed_{reason}", time.monotonic())
        elif bot.state == udp_swarm.HANDSHAKE:
            self._fail(bot, f"handshake_closed_{reason}", time.monotonic())

    def _close_bot(self, bot, now: float) -> None:
        super()._close_bot(bot, now)  # lists and state (the bot has no socket)
        self.opening.pop(bot.index, None)
        self.open_started.pop(bot.index, None)
        handle = self.handles.pop(bot.index, None)
        if handle is not None:
            self.closing.append(handle)

    # -- the loop's halves -------------------------------------------------------------------
    def send_slot(self, now: float, phase: int) -> None:
        self._expire_openings(now)
        self._admit(now)
        super().send_slot(now, phase)

    def drain(self, now: float) -> None:  # pragma: no cover - channels deliver by callback
        raise RuntimeError("MessageSwarm receives through channel callbacks")

    def take_starting(self) -> list:
        out, self.starting = self.starting, []
        return out

    def take_closing(self) -> list:
        out, self.closing = self.closing, []
        return out

    def teardown(self, now: float) -> None:
        """DISCONNECT to the live bots (twice, as over UDP), count the unstarted ones; the
        driver then closes every handle (``take_closing``)."""
        self.waiting.extend(self.pending)
        self.pending.clear()
        super().teardown(now)
        for index in list(self.handles):
            self.closing.append(self.handles.pop(index))
        self.opening.clear()

    def progress_counts(self) -> dict:
        counts = super().progress_counts()
        counts["opening"] = len(self.opening)
        return counts


# ----------------------------------------------------------------------------- openers


class _RtcOpener:
    """Opens geckos.io channels; one HTTP client (connection pool) for all bots."""

    def __init__(self, http_url: str, open_timeout: float, host_addresses) -> None:
        self.http_url = http_url.rstrip("/")
        self.open_timeout = open_timeout
        self.host_addresses = tuple(host_addresses)
        self.http = None

    async def __aenter__(self) -> "_RtcOpener":
        import httpx

        self.http = httpx.AsyncClient(base_url=self.http_url, timeout=self.open_timeout)
        return self

    async def __aexit__(self, *exc) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_WAIT):
            await self.http.aclose()

    async def run_bot(self, swarm: MessageSwarm, bot) -> None:
        from worldclient.rtc_client import GeckosError, open_geckos

        try:
            geckos = await open_geckos(
                self.http_url, timeout=self.open_timeout, host_addresses=self.host_addresses,
                poll_candidates=True, max_queue=1, http=self.http,
            )  # fmt: skip
        except trio.TooSlowError:
            swarm.on_open_failed(bot, "open_timeout")
            return
        except GeckosError as exc:
            swarm.on_open_failed(bot, f"open_http_{exc.status}" if exc.status else "open_failed")
            return
        except Exception as exc:  # httpx errors (server gone, refused), aiortc errors
            swarm.on_open_failed(bot, f"open_{type(exc).__name__}")
            return
        swarm.on_open(bot, _RtcHandle(geckos))


def _ws_end_reason(exc: BaseException) -> str | None:
    """Why a WebSocket bot's task ended, from its exception (or the leaves of an exception
    group); None if any part of it is something else (a cancellation, a bug): re-raise."""
    import trio_websocket

    leaves = []
    stack = [exc]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        else:
            leaves.append(e)
    reasons = []
    for e in leaves:
        if isinstance(e, trio_websocket.ConnectionClosed):
            code = getattr(e.reason, "code", None)
            reasons.append(f"ws_{code}" if code else "ws_closed")
        elif isinstance(e, trio_websocket.HandshakeError):
            reasons.append(f"open_{type(e).__name__}")
        elif isinstance(e, trio.TooSlowError):
            reasons.append("open_timeout")
        elif isinstance(e, OSError):
            reasons.append(f"open_{type(e).__name__}")
        else:
            return None
    return reasons[0] if reasons else None


class _WsOpener:
    """Runs one task per WebSocket bot: connect, then read until the socket ends."""

    def __init__(self, http_url: str, open_timeout: float) -> None:
        self.url = ws_url(http_url)
        self.open_timeout = open_timeout

    async def __aenter__(self) -> "_WsOpener":
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    async def run_bot(self, swarm: MessageSwarm, bot) -> None:
        import trio_websocket

        handle = _WsHandle()
        reason = None
        with handle.scope:
            try:
                async with trio_websocket.open_websocket_url(
                    self.url, connect_timeout=self.open_timeout, disconnect_timeout=2.0,
                    message_queue_size=64, max_message_size=65536,
                ) as ws:  # fmt: skip
                    handle.ws = ws
                    swarm.on_open(bot, handle)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(handle.writer)
                        while True:
                            message = await ws.get_message()
                            if isinstance(message, bytes):
                                swarm.on_message(bot, message)
            except BaseException as exc:  # trio wraps the reader's end in an ExceptionGroup
                reason = _ws_end_reason(exc)
                if reason is None:
                    raise
        if handle.ws is None:
            swarm.on_open_failed(bot, reason or "open_cancelled")
        else:
            swarm.on_closed(bot, handle, reason or "ws_closed_by_bot")


# ----------------------------------------------------------------------------- one process


async def run_bots(
    transport: str,
    http_url: str,
    bots: int,
    duration: float,
    observers: int = 16,
    seed: int | None = None,
    progress=None,
    *,
    warmup: float = 0.0,
    connect_rate: float | None = None,
    max_opening: int | None = None,
    open_timeout: float | None = None,
    host_addresses=HOST_ADDRESSES,
    ready=None,
    begin=None,
) -> dict:
    """Run ``bots`` bots over ``transport`` against the server at ``http_url``: set them up,
    then measure ``duration`` seconds; the report as :func:`worldtools.swarm.run_bots` gives
    it (``setup_s``, ``duration_s``, ``progress``, ``ready`` and ``begin`` as there), plus
    ``transport`` and ``open_ms_p50``/``open_ms_p99`` (time to open a channel).

    A trio coroutine; for ``webrtc`` it must run inside ``worldclient.aio_bridge.run`` (see
    :func:`run_bots_sync`). ``connect_rate`` is new channels per second for these bots.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
    udp_swarm.raise_nofile_limit(2 * bots + 64)
    t_begin = time.monotonic()
    open_timeout = OPEN_TIMEOUT[transport] if open_timeout is None else float(open_timeout)
    connect_rate = CONNECT_RATE[transport] if connect_rate is None else connect_rate
    swarm = MessageSwarm(
        transport, http_url, bots, observers, seed,
        connect_rate=connect_rate,
        max_opening=MAX_OPENING[transport] if max_opening is None else max_opening,
        open_timeout=open_timeout,
    )  # fmt: skip
    if transport == "webrtc":
        opener = _RtcOpener(http_url, open_timeout, host_addresses if _is_loopback_url(http_url) else ())
        _count_asyncio_errors(swarm)
    else:
        opener = _WsOpener(http_url, open_timeout)
    swarm.measure_start = math.inf  # nothing is counted during the set-up
    phases = udp_swarm.Phases(
        time.monotonic, t_begin, t_begin + udp_swarm.setup_bound(bots, swarm.connect_rate, open_timeout),
        duration, warmup, ready, begin,
    )  # fmt: skip
    cpu_mark = None
    next_send = time.monotonic()
    slot = udp_swarm.SEND_INTERVAL / udp_swarm.PHASES
    phase = 0
    next_progress = next_send + udp_swarm.PROGRESS_INTERVAL
    now = next_send
    async with opener:
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    now = time.monotonic()
                    was_set_up = phases.set_up_at is not None
                    if phases.update(now, swarm.settled()):
                        swarm.measure_start = phases.t0 + phases.warmup
                        next_progress = phases.t0 + udp_swarm.PROGRESS_INTERVAL
                    if progress is not None and not was_set_up and phases.set_up_at is not None:  # how it ended
                        progress(phases.set_up_at - t_begin, dict(swarm.progress_counts(), phase="setup", at=now))
                    if now >= phases.end:
                        if progress is not None:  # once more at the end: elapsed = duration
                            progress(phases.duration, dict(swarm.progress_counts(), phase=phases.name, at=now))
                        break
                    if cpu_mark is None and now >= swarm.measure_start:
                        cpu_mark = (time.process_time(), now)
                    if now >= next_send:
                        if now >= swarm.measure_start:
                            swarm.send_late.append((now - next_send) * 1000.0)
                        swarm.send_slot(now, phase)
                        phase = (phase + 1) % udp_swarm.PHASES
                        next_send += slot
                        if next_send <= now:
                            next_send = now + slot
                    for bot in swarm.take_starting():
                        nursery.start_soon(opener.run_bot, swarm, bot)
                    for handle in swarm.take_closing():
                        nursery.start_soon(handle.aclose)
                    if progress is not None and now >= next_progress:
                        next_progress += udp_swarm.PROGRESS_INTERVAL
                        counts = swarm.progress_counts()
                        counts["phase"], counts["at"] = phases.name, now
                        progress(now - (phases.t0 if phases.measuring else t_begin), counts)
                    wait = min(next_send, phases.next_wake(), next_progress if progress else math.inf)
                    await trio.sleep(max(0.0, wait - time.monotonic()))
            finally:
                now = time.monotonic()
                swarm.teardown(now)
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(CLOSE_WAIT):
                        async with trio.open_nursery() as closer:
                            for handle in swarm.take_closing():
                                closer.start_soon(handle.aclose)
                nursery.cancel_scope.cancel()  # openings still under way
    if cpu_mark is None:
        cpu_mark = (time.process_time(), now)
    cpu_s = time.process_time() - cpu_mark[0]
    window = max(0.0, min(now, phases.end) - swarm.measure_start)
    raw = swarm.result(bots, phases.end, cpu_s, window)
    raw["duration_s"] = round(now - phases.t0, 3)
    raw["setup_s"] = round(phases.setup_s, 3)
    raw["open_ms"] = list(swarm.open_ms)
    return _with_extras(udp_swarm.make_report(raw), transport)


def _count_asyncio_errors(swarm: MessageSwarm) -> None:
    """aiortc's internal tasks fail noisily when a peer dies ("Task exception was never
    retrieved", "Cannot send data, not connected"): count them in ``socket_errors`` instead
    of printing a traceback each (the host asyncio loop is this thread's running loop)."""
    import asyncio

    def handler(loop, context) -> None:
        exc = context.get("exception")
        name = f"aiortc_{type(exc).__name__}" if exc is not None else "asyncio_error"
        swarm.failures_soft(name)

    asyncio.get_running_loop().set_exception_handler(handler)


def _with_extras(report: dict, transport: str) -> dict:
    report["transport"] = transport
    opens = report.get("open_ms", [])
    report["open_ms_p50"] = udp_swarm._percentile(opens, 50)
    report["open_ms_p99"] = udp_swarm._percentile(opens, 99)
    return report


def run_bots_sync(transport: str, http_url: str, bots: int, duration: float, **kwargs) -> dict:
    """:func:`run_bots` from plain (non-async) code: under ``aio_bridge.run`` for webrtc,
    ``trio.run`` for ws."""
    main = lambda: run_bots(transport, http_url, bots, duration, **kwargs)  # noqa: E731
    if transport == "webrtc":
        from worldclient import aio_bridge

        return aio_bridge.run(main)
    return trio.run(main)


# ----------------------------------------------------------------------------- processes


def _worker(index, transport, http_url, bots, duration, observers, seed, kwargs, start, out, nice=0) -> None:
    """Worker process body: run its bots, post progress, ``ready`` and the final result on
    ``out``; the measurement starts at ``start.value`` (see :func:`worldtools.swarm.supervise`)."""
    if nice:
        os.nice(nice)

    def progress(elapsed: float, counts: dict) -> None:
        out.put(("progress", index, counts))

    try:
        result = run_bots_sync(
            transport, http_url, bots, duration, observers=observers, seed=seed,
            progress=progress, ready=lambda setup_s: out.put(("ready", index, setup_s)),
            begin=lambda: start.value or None, **kwargs,
        )  # fmt: skip
        out.put(("result", index, result))
    except BaseException as exc:  # report, never hang the parent
        out.put(("error", index, f"{type(exc).__name__}: {exc}"))


def run_processes(
    transport: str,
    http_url: str,
    bots: int,
    duration: float,
    processes: int = 1,
    observers: int = 16,
    seed: int | None = None,
    progress=None,
    *,
    warmup: float = 0.0,
    connect_rate: float | None = None,
    max_opening: int | None = None,
    open_timeout: float | None = None,
    nice: int = 0,
    ready=None,
    begin=None,
) -> dict:
    """Spread the bots over ``processes`` worker processes (always at least one, so the
    caller's loop is not involved); return the merged report.

    As in :func:`worldtools.swarm.run_processes`: all observers in the first worker, every
    worker measures ``duration`` seconds from one instant after all are set up
    (:func:`worldtools.swarm.supervise`, with ``progress``, ``ready`` and ``begin``),
    workers beyond the deadline killed and their bots counted as failed. ``connect_rate``
    is for the whole swarm. ``nice`` > 0 lowers the workers' scheduling priority (a
    benchmark on a small machine: the server under test should not wait for the load
    generator).
    """
    t_begin = time.monotonic()
    processes = max(1, min(int(processes), int(bots)))
    counts = udp_swarm._split(int(bots), processes)
    observers = min(int(observers), counts[0])
    rate = CONNECT_RATE[transport] if connect_rate is None else float(connect_rate)
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    out = ctx.Queue()
    start = ctx.Value("d", 0.0, lock=False)  # the measurement's start; 0.0 until set
    workers = []
    for i, n in enumerate(counts):
        wseed = None if seed is None else seed * 1000 + i
        kwargs = dict(
            warmup=warmup, connect_rate=rate * n / bots,
            max_opening=max_opening, open_timeout=open_timeout,
        )  # fmt: skip
        p = ctx.Process(
            target=_worker,
            args=(i, transport, http_url, n, duration, observers if i == 0 else 0, wseed, kwargs,
                  start, out, nice),
            daemon=True,
        )
        p.start()
        workers.append(p)
    timeout = OPEN_TIMEOUT[transport] if open_timeout is None else float(open_timeout)
    results, errors, setup_s = udp_swarm.supervise(
        workers, out, start, duration=duration, t_begin=t_begin, progress=progress, ready=ready,
        begin=begin, teardown=TEARDOWN_CAP,
        setup_wait=udp_swarm.setup_bound(max(counts), rate * max(counts) / bots, timeout) + 0.5 * processes,
    )  # fmt: skip
    report = udp_swarm.merge_results(list(results.values()))
    opens = [v for r in results.values() for v in r.get("open_ms", [])]
    for i, n in enumerate(counts):
        if i not in results:
            reason = "worker_error" if i in errors else "worker_lost"
            report["failure_reasons"][reason] = report["failure_reasons"].get(reason, 0) + n
            report["bots_requested"] += n
    if errors:
        report["worker_errors"] = errors
    report["setup_s"] = round(setup_s, 3)
    report = udp_swarm.make_report(report)
    report["open_ms"] = opens
    return _with_extras(report, transport)


# ----------------------------------------------------------------------------- the CLI entry


def public_report(report: dict) -> dict:
    """The report without raw sample lists (for printing)."""
    shown = udp_swarm.public_report(report)
    shown.pop("open_ms", None)
    return shown


def format_report(report: dict) -> str:
    text = udp_swarm.format_report(report)
    o50, o99 = report.get("open_ms_p50"), report.get("open_ms_p99")
    extra = [
        ("transport", report.get("transport", "-")),
        ("channel open p50/p99 (ms)", f"{'-' if o50 is None else o50} / {'-' if o99 is None else o99}"),
    ]
    width = max(len(line.split("  ")[0]) for line in text.splitlines())
    width = max(width, *(len(name) for name, _ in extra))
    return "\n".join(f"{name:<{width}}  {value}" for name, value in extra) + "\n" + text


def run_swarm(args) -> int:
    """``worldserver swarm --transport webrtc|ws --http URL``; 0 if all went well."""
    transport = args.transport
    http_url = getattr(args, "http", None)
    if not http_url:
        print(f"error: --transport {transport} needs --http URL (e.g. http://127.0.0.1:8080)",
              file=sys.stderr)
        return 2
    try:
        _host_port(http_url)
    except ValueError as exc:
        print(f"error: --http: {exc}", file=sys.stderr)
        return 2
    bots = int(args.bots)
    duration = float(args.duration)
    processes = max(1, int(getattr(args, "processes", 1) or 1))
    observers = int(getattr(args, "observers", 16))
    seed = getattr(args, "seed", None)
    as_json = bool(getattr(args, "json", False))
    progress = udp_swarm.ProgressLine(bots) if udp_swarm.shows_progress(args) else None
    driven = udp_swarm.StdinStart() if getattr(args, "wait_start", False) else None
    hooks = dict(ready=driven.ready, begin=driven.begin) if driven else {}
    if processes == 1:
        report = run_bots_sync(transport, http_url, bots, duration, observers=observers,
                               seed=seed, progress=progress, **hooks)
    else:
        report = run_processes(transport, http_url, bots, duration, processes, observers, seed, progress,
                               **hooks)
    shown = public_report(report)
    if as_json:
        print(json.dumps(shown, sort_keys=True))
    else:
        print(format_report(shown))
    return 0 if report["ok"] else 1


if __name__ == "__main__":  # pragma: no cover - convenience: python -m worldtools.swarm_rtc
    import argparse

    parser = argparse.ArgumentParser(prog="python -m worldtools.swarm_rtc")
    parser.add_argument("--transport", choices=TRANSPORTS, required=True)
    parser.add_argument("--http", required=True, help="the server's HTTP base URL")
    parser.add_argument("--bots", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured, after the set-up")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--observers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    sys.exit(run_swarm(parser.parse_args()))
