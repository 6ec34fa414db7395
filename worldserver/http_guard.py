"""Guards that keep one bad HTTP connection from hurting the server (hypercorn, trio worker).

Job: hypercorn lets some protocol errors escape a connection's ``TCPServer.run`` (for example
a WebSocket upgrade request followed by bytes before the server's answer: h11 raises
``LocalProtocolError``; upstream pgjones/hypercorn#225, open). The exception leaves
``trio.serve_listeners``' handler nursery and ends ``worker_serve``: one TCP connection from
anybody stops the whole server. :func:`install` makes hypercorn's trio worker build its
connections from :class:`ContainedTCPServer`, whose ``run`` ends only its own connection
(hypercorn's own ``finally`` still closes the stream), counted as
``drop.http_connection_error``. :func:`accept_websocket` accepts a WebSocket and reports a
connection that broke during the handshake as a counted drop instead of an exception that
hypercorn logs with a traceback (a client could fill the log with them);
:func:`refuse_websocket` does the same for a refusal before the handshake.

Must not: swallow cancellation or KeyboardInterrupt (only ``Exception`` is caught), change
how hypercorn serves a healthy connection, or log above DEBUG for what a client caused.
"""

from __future__ import annotations

from hypercorn.trio import run as hypercorn_trio_run
from hypercorn.trio.tcp_server import TCPServer

from worldserver.logs import get_logger

__all__ = ["ContainedTCPServer", "accept_websocket", "install", "refuse_websocket"]

log = get_logger("worldserver.http")


def _stats_of(asgi_app):
    """The Stats of our ASGI app behind hypercorn's wrapper, if it has one."""
    inner = getattr(asgi_app, "app", asgi_app)
    return getattr(getattr(inner, "state", None), "stats", None)


class ContainedTCPServer(TCPServer):
    """hypercorn's connection handler; an exception ends this connection, not the server."""

    async def run(self) -> None:
        try:
            await super().run()
        except Exception as exc:  # an ExceptionGroup of Exceptions too; Cancelled passes
            stats = _stats_of(self.app)
            if stats is not None:
                stats.incr("drop.http_connection_error")
            log.debug("http connection failed", error=repr(exc)[:300])


def install() -> None:
    """Make hypercorn's trio ``worker_serve`` use :class:`ContainedTCPServer` (idempotent;
    it looks the class up in its module each time it starts serving)."""
    hypercorn_trio_run.TCPServer = ContainedTCPServer


async def accept_websocket(websocket, stats) -> bool:
    """``await websocket.accept()``; False (counted ``drop.ws_accept_failed``) when the
    connection broke during the handshake."""
    try:
        await websocket.accept()
    except Exception as exc:
        stats.incr("drop.ws_accept_failed")
        log.debug("websocket accept failed", path=websocket.url.path, error=repr(exc)[:300])
        return False
    return True


async def refuse_websocket(websocket, stats, code: int = 1013) -> None:
    """Refuse a WebSocket before accepting it (hypercorn answers 403); a connection that broke
    meanwhile is counted (``drop.ws_accept_failed``), not raised."""
    try:
        await websocket.close(code=code)
    except Exception as exc:
        stats.incr("drop.ws_accept_failed")
        log.debug("websocket refusal failed", path=websocket.url.path, error=repr(exc)[:300])
