"""The swarm over WebSockets: one connection per bot to ``/ws/movement``.

Job: :class:`WsTransport` is the ``ws`` transport (:mod:`worldtools.swarm.channels` does the
pacing and the bookkeeping): a trio task per bot connects with trio-websocket, reads the
server's binary messages into the bot set until the socket ends, and says why it ended
(``ws_<close code>``, ``open_<error>``, ``open_timeout``); a writer task per bot drains a
small queue (:data:`WS_SEND_QUEUE`), so sending never blocks the loop.

Must not: import server internals, talk to anything but ``/ws/movement`` under the HTTP base
URL it was given, or wait without a bound (connecting has ``open_timeout``, closing 1 s).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import trio

from protocol import packets as P
from worldtools.swarm.bots import Bot
from worldtools.swarm.channels import ChannelTransport

__all__ = ["WsTransport", "ws_url"]

WS_SEND_QUEUE = 32  # packets waiting for the socket writer before sends are dropped
_DISCONNECT = bytes((P.DISCONNECT,))


def ws_url(http_url: str) -> str:
    """``http://host:port[/prefix]`` -> ``ws://host:port[/prefix]/ws/movement``."""
    parts = urlsplit(http_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {http_url!r}")
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws/movement"


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


class WsTransport(ChannelTransport):
    """A WebSocket per bot to ``/ws/movement`` under ``http_url``."""

    name = "ws"

    def __init__(self, http_url: str, **options) -> None:
        super().__init__(http_url, **options)
        self.url = ws_url(http_url)

    async def run_bot(self, bot: Bot) -> None:
        """Connect, then read until the socket ends; say how it ended."""
        import trio_websocket

        handle = _WsHandle()
        receive, clock = self.bots.receive, self.bots.clock
        reason = None
        with handle.scope:
            try:
                async with trio_websocket.open_websocket_url(
                    self.url, connect_timeout=self.open_timeout, disconnect_timeout=2.0,
                    message_queue_size=64, max_message_size=65536,
                ) as ws:  # fmt: skip
                    handle.ws = ws
                    self.on_open(bot, handle)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(handle.writer)
                        while True:
                            message = await ws.get_message()
                            if isinstance(message, bytes):
                                receive(bot, message, clock())
            except BaseException as exc:  # trio wraps the reader's end in an ExceptionGroup
                reason = _ws_end_reason(exc)
                if reason is None:
                    raise
        if handle.ws is None:
            self.on_open_failed(bot, reason or "open_cancelled")
        else:
            self.on_closed(bot, handle, reason or "ws_closed_by_bot")
