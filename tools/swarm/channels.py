"""The swarm over message channels on the server's HTTP port: what WebRTC and WebSocket share.

Job: :class:`ChannelTransport` is the half of the browser transports that does not depend on
the channel: each bot opens one channel (a geckos.io data channel,
:class:`worldtools.swarm.webrtc.RtcTransport`, or a WebSocket to ``/ws/movement``,
:class:`worldtools.swarm.ws.WsTransport`) and speaks the native protocol's trusted handshake
over it (HELLO -> ACCEPT, one packet per binary message). New channels are opened at a bounded
rate (``connect_rate`` per second for the whole swarm, ``max_opening`` at once per process;
:class:`worldserver.limits.TokenBucket` paces them): a WebRTC set-up costs the server several
milliseconds of CPU. Each opening has a deadline; the time each channel took to open is
reported (``open_ms``, with ``transport``). Opening and closing need trio tasks, so they are
queued here and started by :meth:`ChannelTransport.wait` in the loop's nursery; received
messages go straight into the (synchronous) bot code, with no per-message hop.

Entries: :func:`run_bots` (one process, in trio; for ``webrtc`` inside
``worldclient.aio_bridge.run``), :func:`run_bots_sync`, and :func:`run_processes` (bots over
worker processes, so the swarm's aiortc cost is spread over cores rather than added to one).

Must not: import server internals (``worldserver.limits.TokenBucket``, plain arithmetic, is
the exception), talk to anything but the HTTP base URL it was given, or run unbounded: each
opening has a deadline, closing is bounded by :data:`CLOSE_WAIT`, and worker processes are
killed after ``duration`` + :data:`TEARDOWN_CAP`.
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

import trio

from worldserver.limits import TokenBucket
from worldtools.swarm import loop
from worldtools.swarm.bots import CONNECT_BATCH, HANDSHAKE, LIVE, Bot, BotSet
from worldtools.swarm.processes import TEARDOWN_CAP as WORKER_TEARDOWN_CAP
from worldtools.swarm.processes import run_workers

__all__ = ["TRANSPORTS", "ChannelTransport", "check_url", "make_transport", "run_bots", "run_bots_sync",
           "run_processes"]

TRANSPORTS = ("webrtc", "ws")
OPEN_TIMEOUT = {"webrtc": 20.0, "ws": 10.0}  # seconds for a channel to open
CONNECT_RATE = {"webrtc": 40.0, "ws": 200.0}  # new channels per second, whole swarm
MAX_OPENING = {"webrtc": 20, "ws": 50}  # channels being opened at once, per process
CLOSE_WAIT = 6.0  # seconds for closing every channel at the end (each close is bounded too)
TEARDOWN_CAP = WORKER_TEARDOWN_CAP + CLOSE_WAIT


def check_url(http_url: str) -> tuple[str, int]:
    """The host and port of an ``http://`` or ``https://`` base URL; ValueError otherwise."""
    parts = urlsplit(http_url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {http_url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme in ("https", "wss") else 80)


class ChannelTransport:
    """A channel per bot to the server at ``http_url``: paced openings, the bots' handles.

    A subclass names itself (``name``), opens one bot's channel in :meth:`run_bot` (a trio
    task; it calls :meth:`on_open` with a handle, or :meth:`on_open_failed`) and may hold
    resources for the run in :meth:`session`. A handle has ``attach(on_message, on_close)``,
    ``send(data)`` (True, or the reason the packet was dropped) and ``aclose()``.
    """

    name = ""
    files_per_bot = 2
    trusted = True

    def __init__(self, http_url: str, *, connect_rate: float | None = None, max_opening: int | None = None,
                 open_timeout: float | None = None) -> None:
        check_url(http_url)
        self.http_url = http_url
        rate = CONNECT_RATE[self.name] if connect_rate is None else connect_rate
        self.connect_rate = max(0.1, float(rate))
        self.max_opening = max(1, int(MAX_OPENING[self.name] if max_opening is None else max_opening))
        self.open_timeout = float(OPEN_TIMEOUT[self.name] if open_timeout is None else open_timeout)
        self.bots: BotSet | None = None
        self.admissions: TokenBucket | None = None  # connect_rate; made by the first admit
        self.opening: dict[int, float] = {}  # bot index -> deadline for its channel
        self.open_started: dict[int, float] = {}  # bot index -> when its opening began
        self.starting: list[Bot] = []  # bots whose channel the loop must open
        self.closing: list = []  # handles the loop must close
        self.open_ms: list[float] = []  # from starting to open, per bot
        self.nursery: trio.Nursery | None = None

    def bind(self, bots: BotSet) -> None:
        self.bots = bots

    async def tickets(self, count: int) -> None:
        return None  # the channel proves the peer: no join, no connect token

    def setup_bound(self, count: int) -> float:
        return loop.setup_bound(count, self.connect_rate, self.open_timeout)

    # -- opening -----------------------------------------------------------------------------
    def admit(self, now: float, waiting: int) -> int:
        """Expire overdue openings; admit bots at ``connect_rate`` while fewer than
        ``max_opening`` are opening."""
        self._expire_openings(now)
        if self.admissions is None:  # one bot at once, then connect_rate (bursts of 0.1 s)
            self.admissions = TokenBucket(self.connect_rate, max(1.0, self.connect_rate * 0.1), now, tokens=1.0)
        room = min(waiting, CONNECT_BATCH, self.max_opening - len(self.opening))
        admitted = 0
        while admitted < room and not self.admissions.take(now):
            admitted += 1
        return admitted

    def open(self, bot: Bot, now: float) -> None:
        self.opening[bot.index] = now + self.open_timeout + 1.0  # the opener times out first
        self.open_started[bot.index] = now
        self.starting.append(bot)

    def on_open(self, bot: Bot, handle) -> None:
        """The bot's channel is open: send HELLO on it (the handshake clock starts now)."""
        if bot.state != HANDSHAKE or self.opening.pop(bot.index, None) is None:
            self.closing.append(handle)  # too late: the bot gave up, or the run ended
            return
        now = self.bots.clock()
        self.open_ms.append((now - self.open_started.pop(bot.index, now)) * 1000.0)
        bot.link = handle
        handle.attach(
            lambda data: self.bots.receive(bot, data, self.bots.clock()),
            lambda reason: self.on_closed(bot, handle, reason),
        )
        self.bots.hello(bot, now)

    def on_open_failed(self, bot: Bot, reason: str) -> None:
        if bot.state == HANDSHAKE and bot.index in self.opening:
            self.bots.fail(bot, reason, self.bots.clock())

    def _expire_openings(self, now: float) -> None:
        for index, deadline in list(self.opening.items()):
            if now > deadline:
                self.bots.fail(self.bots.bots[index], "open_timeout", now)

    async def run_bot(self, bot: Bot) -> None:
        """Open ``bot``'s channel (a subclass's job)."""
        raise NotImplementedError

    # -- traffic -----------------------------------------------------------------------------
    def send(self, bot: Bot, data: bytes) -> bool | str:
        handle = bot.link
        if handle is None:
            return False  # still opening (a HELLO resend cannot happen before the open)
        try:
            return handle.send(data)
        except Exception:  # the channel closed underneath
            return "send_error"

    def on_closed(self, bot: Bot, handle, reason: str) -> None:
        """The bot's channel ended without the bot asking for it."""
        if bot.link is not handle:
            return
        if bot.state == LIVE:
            self.bots.fail(bot, f"closed_{reason}", self.bots.clock())
        elif bot.state == HANDSHAKE:
            self.bots.fail(bot, f"handshake_closed_{reason}", self.bots.clock())

    def close(self, bot: Bot) -> None:
        self.opening.pop(bot.index, None)
        self.open_started.pop(bot.index, None)
        handle, bot.link = bot.link, None
        if handle is not None:
            self.closing.append(handle)

    # -- the loop's halves -------------------------------------------------------------------
    def session(self) -> contextlib.AbstractAsyncContextManager:
        """What a subclass holds for the run (an HTTP client, ...)."""
        return contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def running(self):
        async with self.session():
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                try:
                    yield self
                finally:
                    nursery.cancel_scope.cancel()  # openings still under way

    async def wait(self, deadline: float) -> None:
        self._start_tasks(self.nursery)
        await trio.sleep(max(0.0, deadline - self.bots.clock()))

    def _start_tasks(self, nursery: trio.Nursery) -> None:
        starting, self.starting = self.starting, []
        for bot in starting:
            nursery.start_soon(self.run_bot, bot)
        closing, self.closing = self.closing, []
        for handle in closing:
            nursery.start_soon(handle.aclose)

    async def close_all(self) -> None:
        """Close every handle the teardown left (bounded by :data:`CLOSE_WAIT`)."""
        self.starting.clear()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_WAIT):
                async with trio.open_nursery() as closer:
                    self._start_tasks(closer)

    def counts(self) -> dict:
        return {"opening": len(self.opening)}

    def report(self) -> dict:
        return {"transport": self.name, "open_ms": list(self.open_ms)}


# ----------------------------------------------------------------------------- entries


def make_transport(name: str, http_url: str, **options) -> ChannelTransport:
    """The ``webrtc`` or ``ws`` transport to ``http_url`` (``options``: ``connect_rate``,
    ``max_opening``, ``open_timeout``; webrtc also ``host_addresses``). Each is imported
    when asked for: webrtc brings in aiortc."""
    if name == "webrtc":
        from worldtools.swarm.webrtc import RtcTransport

        return RtcTransport(http_url, **options)
    if name == "ws":
        from worldtools.swarm.ws import WsTransport

        return WsTransport(http_url, **options)
    raise ValueError(f"transport must be one of {TRANSPORTS}, not {name!r}")


async def run_bots(transport: str, http_url: str, bots: int, duration: float, observers: int = 16,
                   seed: int | None = None, progress=None, *, connect_rate: float | None = None,
                   max_opening: int | None = None, open_timeout: float | None = None, **options) -> dict:
    """Run ``bots`` bots over ``transport`` against the server at ``http_url``: set them up,
    then measure ``duration`` seconds; the report as :func:`worldtools.swarm.loop.run` gives
    it (which takes the ``options``: ``warmup``, ``speed``, ``ready``, ``begin``, ...), plus
    ``transport`` and ``open_ms_p50``/``open_ms_p99`` (time to open a channel).

    A trio coroutine; for ``webrtc`` it must run inside ``worldclient.aio_bridge.run`` (see
    :func:`run_bots_sync`). ``connect_rate`` is new channels per second for these bots.
    """
    link = make_transport(transport, http_url, connect_rate=connect_rate, max_opening=max_opening,
                          open_timeout=open_timeout)
    return await loop.run(link, bots, duration, observers, seed, progress, **options)


def run_bots_sync(transport: str, http_url: str, bots: int, duration: float, **kwargs) -> dict:
    """:func:`run_bots` from plain (non-async) code: under ``aio_bridge.run`` for webrtc,
    ``trio.run`` for ws."""
    main = lambda: run_bots(transport, http_url, bots, duration, **kwargs)  # noqa: E731
    if transport == "webrtc":
        from worldclient import aio_bridge

        return aio_bridge.run(main)
    return trio.run(main)


def run_processes(transport: str, http_url: str, bots: int, duration: float, processes: int = 1,
                  observers: int = 16, seed: int | None = None, progress=None, *, warmup: float = 0.0,
                  speed: float | None = None, connect_rate: float | None = None, max_opening: int | None = None,
                  open_timeout: float | None = None, **options) -> dict:
    """Spread the bots over ``processes`` worker processes (always at least one, so the
    caller's loop is not involved); return the merged report
    (:func:`worldtools.swarm.processes.run_workers`, which takes the ``options``: ``nice``,
    ``ready``, ``begin``, and calls ``progress``). ``connect_rate`` is for the whole swarm,
    shared by the workers as their bots; ``speed``: the bots' walking speed in m/s (None:
    the server's max speed)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
    rate = CONNECT_RATE[transport] if connect_rate is None else float(connect_rate)
    timeout = OPEN_TIMEOUT[transport] if open_timeout is None else float(open_timeout)

    def share(index: int, first: int, count: int) -> dict:
        return dict(transport=transport, http_url=http_url, warmup=warmup, connect_rate=rate * count / bots,
                    max_opening=max_opening, open_timeout=open_timeout, speed=speed)

    return run_workers(
        run_bots_sync, bots, duration, processes, observers, seed, progress, share=share,
        setup_bound=lambda count: loop.setup_bound(count, rate * count / bots, timeout),
        fields=dict(transport=transport, open_ms=[]), teardown=TEARDOWN_CAP, **options,
    )  # fmt: skip
