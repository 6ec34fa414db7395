"""The swarm over WebRTC: one geckos.io data channel per bot (aiortc), the browser's transport.

Job: :class:`RtcTransport` is the ``webrtc`` transport (:mod:`worldtools.swarm.channels` does
the pacing and the bookkeeping): a trio task per bot opens its channel with
:func:`worldclient.rtc_client.open_geckos` (one HTTP client, a connection pool, for all bots),
and the channel's binary messages go from aiortc's callbacks straight into the bot set (same
thread: the bot code is synchronous). The run must be a trio guest on the asyncio loop that
runs aiortc (``worldclient.aio_bridge.run``; :func:`worldtools.swarm.channels.run_bots_sync`
does it). aiortc's internal tasks that fail when a peer dies are counted in
``socket_errors`` (``aiortc_<error>``) instead of printing a traceback each.

Must not: import server internals, talk to anything but the HTTP base URL it was given (and
the ICE candidates it answers with), or wait without a bound (each opening has
``open_timeout``, each close ``rtc_client.CLOSE_WAIT``, the HTTP client's close
:data:`~worldtools.swarm.channels.CLOSE_WAIT`).
"""

from __future__ import annotations

import contextlib

import trio

from worldtools.swarm.bots import Bot
from worldtools.swarm.channels import CLOSE_WAIT, ChannelTransport, check_url

__all__ = ["RtcTransport"]

SEND_BACKLOG = 4096  # skip a send while the channel buffers more bytes than this
HOST_ADDRESSES = ("127.0.0.1",)  # ICE host candidates of the bots on loopback
_CLOSING_STATES = ("failed", "closed", "disconnected")


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


class RtcTransport(ChannelTransport):
    """A geckos.io data channel per bot to the server at ``http_url``; ``host_addresses``:
    the bots' ICE host candidates when the server is on loopback (none otherwise)."""

    name = "webrtc"

    def __init__(self, http_url: str, *, host_addresses=HOST_ADDRESSES, **options) -> None:
        super().__init__(http_url, **options)
        self.base_url = http_url.rstrip("/")
        self.host_addresses = tuple(host_addresses) if _is_loopback_url(http_url) else ()
        self.http = None

    @contextlib.asynccontextmanager
    async def session(self):
        """One HTTP client for every bot's signaling, and aiortc's errors counted."""
        import httpx

        _count_asyncio_errors(self.bots)
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=self.open_timeout)
        try:
            yield self
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_WAIT):
                await self.http.aclose()

    async def run_bot(self, bot: Bot) -> None:
        """Open the bot's channel (signaling over HTTP, then ICE and DTLS)."""
        from worldclient.rtc_client import GeckosError, open_geckos

        try:
            geckos = await open_geckos(
                self.base_url, timeout=self.open_timeout, host_addresses=self.host_addresses,
                poll_candidates=True, max_queue=1, http=self.http,
            )  # fmt: skip
        except trio.TooSlowError:
            self.on_open_failed(bot, "open_timeout")
            return
        except GeckosError as exc:
            self.on_open_failed(bot, f"open_http_{exc.status}" if exc.status else "open_failed")
            return
        except Exception as exc:  # httpx errors (server gone, refused), aiortc errors
            self.on_open_failed(bot, f"open_{type(exc).__name__}")
            return
        self.on_open(bot, _RtcHandle(geckos))


def _is_loopback_url(http_url: str) -> bool:
    host = check_url(http_url)[0]
    return host.startswith("127.") or host in ("::1", "localhost")


def _count_asyncio_errors(bots) -> None:
    """aiortc's internal tasks fail noisily when a peer dies ("Task exception was never
    retrieved", "Cannot send data, not connected"): count them in ``socket_errors`` instead
    of printing a traceback each (the host asyncio loop is this thread's running loop)."""
    import asyncio

    def handler(loop, context) -> None:
        exc = context.get("exception")
        name = f"aiortc_{type(exc).__name__}" if exc is not None else "asyncio_error"
        bots.failures_soft(name)

    asyncio.get_running_loop().set_exception_handler(handler)
