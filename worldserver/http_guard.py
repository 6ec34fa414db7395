"""Guards that keep one bad HTTP connection from hurting the server (hypercorn, trio worker).

Job: hypercorn lets some protocol errors escape a connection's ``TCPServer.run`` (for example
a WebSocket upgrade request followed by bytes before the server's answer: h11 raises
``LocalProtocolError``; upstream pgjones/hypercorn#225, open). The exception leaves
``trio.serve_listeners``' handler nursery and ends ``worker_serve``: one TCP connection from
anybody stops the whole server. :func:`install` makes hypercorn's trio worker build its
connections from :class:`ContainedTCPServer`, whose ``run`` ends only its own connection
(hypercorn's own ``finally`` still closes the stream), counted as
``drop.http_connection_error``; and WebSocket streams from :class:`ContainedWSStream`: when a
message is over ``websocket_max_message_size``, hypercorn sends the client a close (1009) but
tells the app nothing and keeps the connection until the client answers, so a client that
never answers stayed "online" in the chat until the read timeout (60 s); the contained stream
ends the stream then, and the app gets its ``websocket.disconnect`` at once. :func:`accept_websocket` accepts a WebSocket and reports a
connection that broke during the handshake as a counted drop instead of an exception that
hypercorn logs with a traceback (a client could fill the log with them);
:func:`refuse_websocket` does the same for a refusal before the handshake.

HTTP/1.1 only: hypercorn 0.18's HTTP/2 never ends a connection whose client goes away while a
response is on its way (on ``Closed`` its sending task stops but the app stays blocked in
``StreamBuffer.drain``; upstream pgjones/hypercorn#317/#318), so one request and a close held a
socket and tasks for good, an easy denial of service. The server needs no HTTP/2 (browsers never
use h2c and speak HTTP/1.1 over TLS when it is the only one offered; the chat fan-out writes to
HTTP/1.1 sockets only): :class:`ContainedH11Protocol` never switches. A request with
``Upgrade: h2c`` is answered over HTTP/1.1 as if the header were not there (counted
``drop.http_h2c_upgrade``); the HTTP/2 preface (``PRI * HTTP/2.0``, "prior knowledge") gets a
505 and the connection is closed (``drop.http_h2_preface``). Over TLS,
``http_server.hypercorn_config`` offers only ``http/1.1`` by ALPN. And when the client ends its
side (EOF) between requests, hypercorn notes it but keeps the connection until its keep-alive
timer fires (``keep_alive_timeout``, 20 s); the contained protocol closes it at once.
ContainedTCPServer counts connections begun and ended (``http.connections_opened``,
``http.connections_closed``; :func:`open_connections`), so a connection that never ends shows.

Connections per address and in all: hypercorn takes every connection it is offered and keeps a
silent one until its read timeout (60 s), so one address with thousands of sockets could run
the process out of file descriptors (then the page, the chat and the WebSocket fallback were
gone for everyone). Before anything is read (before the TLS handshake too),
:class:`ContainedTCPServer` asks the server's ``worldserver.limits.AddressLimits``
(``app.state.limits``): a connection over ``limits.http_connections`` open in all (by default
derived from the open-files limit, :func:`worldserver.limits.http_connections_cap`) is closed at
once, counted ``drop.http_total_connections``; one from an address holding
``limits.http_connections_per_address`` (trusted networks exempt), ``drop.http_address_connections``.
With the total below the file-descriptor limit, ``accept`` should not fail for lack of them;
if it still does (something else took them), trio's ``serve_listeners`` retries every 100 ms
and logs each failure at ERROR with a traceback: :func:`install` puts a filter on that logger
(``trio.serve_listeners``, as trio documents it) that counts each as ``http.accept_retries``
in the stats of the server whose listener failed (``install(stats)`` notes them for the tasks
the calling task starts) and logs at most one WARNING line a minute, without the traceback.

This is the one module that reaches into hypercorn's internals: the worker's ``TCPServer`` name,
``ASGIWrapper.app``, the protocol wrapper's ``H11Protocol`` name and the HTTP/1.1 protocol's
``_check_protocol`` (where it switches to HTTP/2), and (:func:`connection_of`, for the chat
fan-out) the chain from a WebSocket's ASGI ``send`` (``WSStream.app_send``) through
``H11Protocol`` to the ``TCPServer``'s ``stream`` and ``send_lock``. :func:`check_upstream`
states all of it and raises :class:`worldserver.upstream.UpstreamChanged` when the installed
hypercorn differs; :func:`install` runs it, so a changed hypercorn stops the server at start,
not later.

Must not: swallow cancellation or KeyboardInterrupt (only ``Exception`` is caught), change
how hypercorn serves a healthy HTTP/1.1 connection within the caps, or log above DEBUG for what a
client caused (but one INFO line a minute per kind of connection refused by a cap).
"""

from __future__ import annotations

import contextvars
import errno
import functools
import inspect
import logging

import trio
import hypercorn.protocol as hypercorn_protocol
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.events import Closed, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from wsproto.events import CloseConnection
from wsproto.frame_protocol import CloseReason
from hypercorn.trio import run as hypercorn_trio_run
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.utils import wrap_app

from worldserver.logs import LogLimiter, get_logger
from worldserver.upstream import (
    assigned_attributes,
    attributes_used,
    globals_used,
    require,
    require_coroutine,
    require_names,
)

__all__ = ["ContainedH11Protocol", "ContainedTCPServer", "ContainedWSStream", "accept_websocket", "check_upstream",
           "connection_of", "install", "open_connections", "refuse_websocket"]

log = get_logger("worldserver.http")

LOG_INTERVAL = 60.0  # seconds: at most one log line per kind of refused connection or accept error
TRIO_ACCEPT_LOGGER = "trio.serve_listeners"  # where trio.serve_listeners logs a failed accept
# The stats a failed accept is counted in: set by install(stats) in the task that then starts
# hypercorn's worker, so trio's accept loops (its descendants) see it.
_accept_stats: contextvars.ContextVar = contextvars.ContextVar("worldserver_http_accept_stats", default=None)
_accept_log = LogLimiter(log, LOG_INTERVAL)
# accept(2) errors that trio.serve_listeners retries (100 ms later) instead of raising
_ACCEPT_RETRIED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def _peer_host(stream) -> str | None:
    """The client's address of an accepted trio stream (a ``SocketStream``, or an ``SSLStream``
    over one) before anything is read; None when the socket no longer has a peer."""
    transport = getattr(stream, "transport_stream", stream)
    try:
        peer = transport.socket.getpeername()
    except (OSError, AttributeError):
        return None
    return peer[0] if isinstance(peer, tuple) and peer else None


class ContainedTCPServer(TCPServer):
    """hypercorn's connection handler; an exception ends this connection, not the server.
    A connection over the HTTP connection caps (per address, in all) is closed at once, unread;
    the others are counted when they begin and when they have ended (socket closed, tasks done)."""

    async def run(self) -> None:
        state = self.app.app.state  # ASGIWrapper -> our app
        stats, limits = state.stats, state.limits
        key = limits.key(_peer_host(self.stream))
        refused = limits.http_connect(key)
        if refused is not None:
            if refused == limits.HTTP_TOTAL:
                stats.incr("drop.http_total_connections")
                state.refusals.log(logging.INFO, "http_total_connections",
                                   "http connections at the cap: new ones closed unread", cap=limits.max_http_total)
            else:
                stats.incr("drop.http_address_connections")
                state.refusals.log(logging.INFO, "http_address_connections",
                                   "http connections of an address at its cap: new ones closed unread",
                                   cap=limits.max_http_connections)
            await trio.aclose_forcefully(self.stream)
            return
        stats.incr("http.connections_opened")
        try:
            await super().run()
        except Exception as exc:  # an ExceptionGroup of Exceptions too; Cancelled passes
            stats.incr("drop.http_connection_error")
            log.debug("http connection failed", error=repr(exc)[:300])
        finally:
            limits.http_disconnect(key)  # hypercorn's run has closed the socket
            stats.incr("http.connections_closed")


def open_connections(stats) -> int:
    """HTTP connections begun and not yet ended (counted by :class:`ContainedTCPServer`)."""
    return stats.get("http.connections_opened") - stats.get("http.connections_closed")


class _Refused(Exception):
    """Raised inside :class:`ContainedH11Protocol` to answer a request with an error and close."""

    def __init__(self, status_code: int) -> None:
        super().__init__(status_code)
        self.status_code = status_code


def _offers_h2c(request) -> bool:
    """Whether an h11 request asks to upgrade to HTTP/2 (``h2c`` in any ``Upgrade`` header)."""
    return any(token.strip().lower() == b"h2c"
               for name, value in request.headers if name.lower() == b"upgrade"
               for token in value.split(b","))


class ContainedH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol that never switches to HTTP/2, and ends a connection
    whose client has gone with no request in progress at once (see the module's doc)."""

    _ended = False

    async def handle(self, event) -> None:
        between_requests = isinstance(event, Closed) and self.stream is None
        try:
            await super().handle(event)
        except _Refused as refused:  # raised by _check_protocol below, before any stream
            await self._send_error_response(refused.status_code)  # with "connection: close"
            await self._end()
            return
        if between_requests:  # the client's side ended: nothing left to answer
            await self._end()

    async def _end(self) -> None:
        """Close the connection now: stop hypercorn's keep-alive timer (which would otherwise
        hold it until ``keep_alive_timeout``) and have the ``TCPServer`` close the socket."""
        if not self._ended:
            self._ended = True
            await self.send(Updated(idle=False))
            await self.send(Closed())

    async def _check_protocol(self, event) -> None:
        stats = self.app.app.state.stats
        if _offers_h2c(event):
            stats.incr("drop.http_h2c_upgrade")
            return  # answered over HTTP/1.1 (h11 takes the answer as the upgrade declined)
        if event.method == b"PRI":  # the HTTP/2 preface: PRI * HTTP/2.0
            stats.incr("drop.http_h2_preface")
            raise _Refused(505)
        await super()._check_protocol(event)


class _AcceptErrors(logging.Filter):
    """On trio's ``serve_listeners`` logger: a failed ``accept`` that trio retries (no file
    descriptors or memory: EMFILE, ENFILE, ENOMEM, ENOBUFS), logged by trio at ERROR with a
    traceback ten times a second while it lasts, is counted (``http.accept_retries``, in the
    stats :func:`install` noted) and said at most once a minute, at WARNING, in one line.
    Anything else trio logs there passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, OSError) or exc.errno not in _ACCEPT_RETRIED:
            return True
        stats = _accept_stats.get()
        if stats is not None:
            stats.incr("http.accept_retries")
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        _accept_log.log(logging.WARNING, name, "http accept failed, retrying: the process is out of file"
                        " descriptors or memory (see limits.http_connections)", error=name,
                        open_connections=open_connections(stats) if stats is not None else None)
        return False



class ContainedWSStream(WSStream):
    """hypercorn's WebSocket stream; a message over the size limit also ends the stream."""

    async def _send_wsproto_event(self, event) -> None:
        await super()._send_wsproto_event(event)
        if (isinstance(event, CloseConnection) and event.code == CloseReason.MESSAGE_TOO_BIG
                and self.state == ASGIWebsocketState.CONNECTED):  # hypercorn's close, not the app's
            await self.send(StreamClosed(stream_id=self.stream_id))


def install(stats=None) -> None:
    """Make hypercorn's trio ``worker_serve`` use :class:`ContainedTCPServer`, its protocol
    wrapper :class:`ContainedH11Protocol` for HTTP/1.1, and that protocol
    :class:`ContainedWSStream` (idempotent; each looks the class up in its module each time),
    and quiet trio's accept-error lines (:class:`_AcceptErrors`). ``stats``: where the accept
    errors of the HTTP servers that the calling task starts from now on are counted.
    Raises ``UpstreamChanged`` if hypercorn no longer has what this module relies on."""
    check_upstream()
    hypercorn_trio_run.TCPServer = ContainedTCPServer
    hypercorn_h11.WSStream = ContainedWSStream
    hypercorn_protocol.H11Protocol = ContainedH11Protocol
    accept_log = logging.getLogger(TRIO_ACCEPT_LOGGER)
    if not any(isinstance(f, _AcceptErrors) for f in accept_log.filters):
        accept_log.addFilter(_AcceptErrors())
    if stats is not None:
        _accept_stats.set(stats)


def connection_of(asgi_send) -> tuple[trio.abc.Stream, trio.Lock] | None:
    """The stream and the send lock of the HTTP/1.1 connection behind a WebSocket's ASGI
    ``send`` as hypercorn gives it to the app; None for HTTP/2 or a ``send`` that is not
    hypercorn's (a test's, another server's). The stream is a ``trio.SSLStream`` under TLS."""
    if not inspect.ismethod(asgi_send) or not isinstance(asgi_send.__self__, WSStream):
        return None
    protocol = asgi_send.__self__.send.__self__  # WSStream.send is H11Protocol.stream_send
    if not isinstance(protocol, H11Protocol):
        return None  # HTTP/2: frames of other streams share the connection
    server = protocol.send.__self__  # H11Protocol.send is TCPServer.protocol_send
    if not isinstance(server, TCPServer):
        return None
    return server.stream, server.send_lock


_PATCH = "worldserver.http_guard"


@functools.cache
def check_upstream() -> None:
    """Raise ``UpstreamChanged`` unless hypercorn still has what :func:`install`,
    :class:`ContainedTCPServer`, :class:`ContainedH11Protocol` and :func:`connection_of` rely on
    (checked once)."""
    patch = f"{_PATCH}.install (ContainedTCPServer)"
    require(vars(hypercorn_trio_run).get("TCPServer") in (TCPServer, ContainedTCPServer), "hypercorn",
            "hypercorn.trio.run.TCPServer", patch, "is no longer hypercorn.trio.tcp_server.TCPServer")
    require_names(["TCPServer"], globals_used(hypercorn_trio_run.worker_serve), "hypercorn",
                  "hypercorn.trio.run.worker_serve", patch, "looks up the module's")
    require_coroutine(TCPServer, "run", ("self",), "hypercorn", patch)
    require_names(["app", "stream", "send_lock"], assigned_attributes(TCPServer.__init__), "hypercorn",
                  "hypercorn.trio.tcp_server.TCPServer.__init__", patch, "assigns")
    require_names(["app"], assigned_attributes(ASGIWrapper.__init__), "hypercorn",
                  "hypercorn.app_wrappers.ASGIWrapper.__init__", patch, "assigns")
    require(isinstance(wrap_app(_probe_app, 0, "asgi"), ASGIWrapper), "hypercorn", "hypercorn.utils.wrap_app",
            patch, "no longer wraps an ASGI app in ASGIWrapper")

    patch = f"{_PATCH}.install (ContainedWSStream)"
    require(vars(hypercorn_h11).get("WSStream") in (WSStream, ContainedWSStream), "hypercorn",
            "hypercorn.protocol.h11.WSStream", patch, "is no longer hypercorn.protocol.ws_stream.WSStream")
    require_coroutine(WSStream, "_send_wsproto_event", ("self", "event"), "hypercorn", patch)
    require_names(["FrameTooLargeError", "CloseConnection", "CloseReason"], globals_used(WSStream._handle_events),
                  "hypercorn", "hypercorn.protocol.ws_stream.WSStream._handle_events", patch, "uses")
    require_names(["MESSAGE_TOO_BIG", "_send_wsproto_event"], attributes_used(WSStream._handle_events),
                  "hypercorn", "hypercorn.protocol.ws_stream.WSStream._handle_events", patch, "uses")
    require_names(["state", "stream_id", "send"], assigned_attributes(WSStream.__init__), "hypercorn",
                  "hypercorn.protocol.ws_stream.WSStream.__init__", patch, "assigns")
    require(hasattr(ASGIWebsocketState, "CONNECTED"), "hypercorn", "hypercorn.protocol.ws_stream.ASGIWebsocketState",
            patch, "has no CONNECTED")

    patch = f"{_PATCH}.connection_of (the chat fan-out)"
    require_coroutine(WSStream, "app_send", ("self", "message"), "hypercorn", patch)
    require_names(["send"], assigned_attributes(WSStream.__init__), "hypercorn",
                  "hypercorn.protocol.ws_stream.WSStream.__init__", patch, "assigns")
    require_names(["send"], assigned_attributes(H11Protocol.__init__), "hypercorn",
                  "hypercorn.protocol.h11.H11Protocol.__init__", patch, "assigns")
    require_coroutine(H11Protocol, "stream_send", ("self", "event"), "hypercorn", patch)
    require_names(["stream_send", "WSStream"], attributes_used(H11Protocol._create_stream)
                  | globals_used(H11Protocol._create_stream), "hypercorn",
                  "hypercorn.protocol.h11.H11Protocol._create_stream", patch, "uses")
    require_coroutine(TCPServer, "protocol_send", ("self", "event"), "hypercorn", patch)
    require_names(["protocol_send"], attributes_used(TCPServer.run), "hypercorn",
                  "hypercorn.trio.tcp_server.TCPServer.run", patch, "hands its protocol")
    require_names(["send_lock", "stream", "send_all"], attributes_used(TCPServer.protocol_send), "hypercorn",
                  "hypercorn.trio.tcp_server.TCPServer.protocol_send", patch, "writes through")

    patch = f"{_PATCH}.install (ContainedH11Protocol)"
    require(vars(hypercorn_protocol).get("H11Protocol") in (H11Protocol, ContainedH11Protocol), "hypercorn",
            "hypercorn.protocol.H11Protocol", patch, "is no longer hypercorn.protocol.h11.H11Protocol")
    require_names(["H11Protocol"], globals_used(ProtocolWrapper.__init__), "hypercorn",
                  "hypercorn.protocol.ProtocolWrapper.__init__", patch, "looks up the module's")
    require_coroutine(H11Protocol, "handle", ("self", "event"), "hypercorn", patch)
    require_coroutine(H11Protocol, "_check_protocol", ("self", "event"), "hypercorn", patch)
    require_coroutine(H11Protocol, "_send_error_response", ("self", "status_code"), "hypercorn", patch)
    require_names(["_check_protocol"], attributes_used(H11Protocol._handle_events), "hypercorn",
                  "hypercorn.protocol.h11.H11Protocol._handle_events", patch, "calls")
    require_names(["app", "send", "stream"], assigned_attributes(H11Protocol.__init__), "hypercorn",
                  "hypercorn.protocol.h11.H11Protocol.__init__", patch, "assigns")
    switches = {"H2CProtocolRequiredError", "H2ProtocolAssumedError"}  # raised to switch to HTTP/2
    require_names(switches, globals_used(H11Protocol._check_protocol), "hypercorn",
                  "hypercorn.protocol.h11.H11Protocol._check_protocol", patch, "switches to HTTP/2 with")
    require_names(["Closed", "Updated"], globals_used(TCPServer.protocol_send), "hypercorn",
                  "hypercorn.trio.tcp_server.TCPServer.protocol_send", patch, "handles")
    require_names(["_close", "idle_task", "stop"], attributes_used(TCPServer.protocol_send), "hypercorn",
                  "hypercorn.trio.tcp_server.TCPServer.protocol_send", patch, "ends a connection with")
    elsewhere = sorted(name for name, member in vars(H11Protocol).items()
                       if inspect.isfunction(member) and name != "_check_protocol" and switches & globals_used(member))
    require(not elsewhere, "hypercorn", f"hypercorn.protocol.h11.H11Protocol.{', '.join(elsewhere)}", patch,
            "switches to HTTP/2 outside _check_protocol")


async def _probe_app(scope, receive, send) -> None:  # pragma: no cover - never called
    """An ASGI app for :func:`check_upstream` to hand to ``wrap_app``."""


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
