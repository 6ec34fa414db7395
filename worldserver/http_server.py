"""Serving the HTTP port: hypercorn's trio worker runs the ASGI app of ``worldserver.http_app``.

Job: :func:`hypercorn_config` turns ``[http]`` into hypercorn settings (bind address, TLS when
a certificate and key are configured, HTTP/1.1 only, keep-alive, read and WebSocket message
limits, quiet logs through worldserver's). :func:`serve_http` binds ``http.host:http.port`` (a port taken
is the one-line startup error of ``worldserver.startup``), installs ``worldserver.http_guard``
so that an error in one connection ends only that connection (and connections over the caps of
``[limits]`` are closed unread), reports the bound port, and on
cancellation shuts down gracefully: the app's ``state.stopping`` is set (WebSockets close with
1001), requests in progress get :data:`GRACEFUL_TIMEOUT` seconds, and every socket is closed
within :data:`SHUTDOWN_DEADLINE` seconds.

Must not: know routes or what the app answers (``http_app`` builds it), leave a listening or
connection socket open after it returns, or wait without a deadline.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from worldserver.http_guard import install as install_http_guard
from worldserver.logs import get_logger
from worldserver.startup import bind_error

__all__ = ["READ_TIMEOUT", "WS_FRAME_LIMIT", "hypercorn_config", "serve_http"]

log = get_logger("worldserver.http")

# hypercorn's own limit for any WebSocket message (it buffers a message up to this). Kept well
# above ws_movement.MAX_WS_MESSAGE so that its handler, not hypercorn, refuses big messages:
# hypercorn 0.18 sends 1009 itself beyond it but then never tells the app the socket ended (the
# app notices by its idle timeout).
WS_FRAME_LIMIT = 256 * 1024
KEEP_ALIVE_MAX_REQUESTS = 100_000  # requests per HTTP/1.1 connection (hypercorn's default: 1000)
KEEP_ALIVE_TIMEOUT = 20.0  # seconds an idle keep-alive connection is kept
READ_TIMEOUT = 60.0  # seconds without any byte from a client before its connection is closed
GRACEFUL_TIMEOUT = 2.0  # seconds requests in progress may take to finish at shutdown
SHUTDOWN_DEADLINE = 5.0  # seconds after which the HTTP server is gone, finished or not


def hypercorn_config(config) -> HypercornConfig:
    """hypercorn settings for the HTTP port: bind, TLS, limits, logs through worldserver's."""
    http = config.http
    if bool(http.certfile) != bool(http.keyfile):
        raise ValueError("http.certfile and http.keyfile must be set together")
    hc = HypercornConfig()
    host = http.host
    hc.bind = [f"[{host}]:{http.port}" if ":" in host else f"{host}:{http.port}"]
    if http.certfile:
        hc.certfile = http.certfile
        hc.keyfile = http.keyfile
    hc.alpn_protocols = ["http/1.1"]  # no HTTP/2 over TLS either (why: worldserver.http_guard)
    hc.keep_alive_max_requests = KEEP_ALIVE_MAX_REQUESTS
    hc.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    hc.read_timeout = READ_TIMEOUT
    hc.websocket_max_message_size = WS_FRAME_LIMIT
    hc.graceful_timeout = GRACEFUL_TIMEOUT
    hc.shutdown_timeout = GRACEFUL_TIMEOUT  # the app's lifespan shutdown
    hc.startup_timeout = 10.0
    hc.backlog = 256
    hc.accesslog = None
    server_log = logging.getLogger("worldserver.http.server")
    if server_log.level == logging.NOTSET:
        server_log.setLevel(logging.WARNING)  # hypercorn's "Running on ..." lines stay quiet
    hc.errorlog = server_log
    return hc


async def serve_http(config, app, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on ``http.host:http.port`` until cancelled, then shut down gracefully.

    ``task_status.started(port)`` reports the bound TCP port (the real one when
    ``http.port`` is 0) once the socket listens. On cancellation: WebSockets are closed with
    1001, requests in progress get up to ``GRACEFUL_TIMEOUT`` seconds, and everything is gone
    (sockets closed) within ``SHUTDOWN_DEADLINE`` seconds.
    """
    hc = hypercorn_config(config)
    # one connection's protocol error must not end the server; failed accepts count in the stats
    install_http_guard(getattr(getattr(app, "state", None), "stats", None))
    try:
        sockets = hc.create_sockets()  # binds; hypercorn never closes these, so we do
    except OSError as exc:  # the port was taken (worldserver/startup.py checked it before)
        raise bind_error("http", config.http.host, config.http.port, exc) from None
    listening = sockets.secure_sockets + sockets.insecure_sockets
    try:
        for sock in listening:
            sock.listen(hc.backlog)
        host, port = listening[0].getsockname()[:2]
        stop = trio.Event()
        # hypercorn runs shielded so that our cancellation becomes its graceful shutdown
        # (hypercorn cancelled directly leaks the sockets of open connections).
        hyper_scope = trio.CancelScope(shield=True)

        async def run_hypercorn(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with hyper_scope:
                await worker_serve(
                    wrap_app(app, hc.wsgi_max_body_size, "asgi"),
                    hc,
                    sockets=sockets,
                    shutdown_trigger=stop.wait,
                    task_status=task_status,
                )

        async with trio.open_nursery() as nursery:
            await nursery.start(run_hypercorn)
            scheme = "https" if sockets.secure_sockets else "http"
            shown = f"[{host}]" if ":" in host else host
            log.debug("http listening", url=f"{scheme}://{shown}:{port}")
            task_status.started(port)
            try:
                await trio.sleep_forever()
            finally:
                stopping = getattr(getattr(app, "state", None), "stopping", None)
                if stopping is not None:
                    stopping.set()
                stop.set()
                hyper_scope.deadline = trio.current_time() + SHUTDOWN_DEADLINE
    finally:
        for sock in listening:
            sock.close()
