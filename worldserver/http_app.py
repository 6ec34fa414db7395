"""The HTTP port's ASGI app (Starlette), served by ``worldserver.http_server``.

Job: :func:`build_app` makes the app and holds its route table -- health, metrics, the admin
API (``worldserver.admin_api``'s routes), ``POST /api/join`` (with the UDP connect token and
key, ``worldserver.connect_tokens``), ``POST /api/connect-token``, the player list, the worlds,
the web client's settings, the chat's WebSocket and images (``worldserver.chat.gateway``), and
what other modules answer: the gallery pictures and the built web client
(``worldserver.http_static``, whatever no route matched), the ``/ws/movement`` WebSocket
(``worldserver.ws_movement``), and, ahead of Starlette, every path containing ``/.wrtc/v2``
(geckos.io signaling, ``worldserver.rtc_signaling``). When the server's own ``send`` fails
under a response, the request ends as a counted drop (``drop.http_send_failed``).
Per-address limits (``[limits]``, :mod:`worldserver.limits`): ``POST /api/join`` and
``POST /api/connect-token`` beyond the address's join tokens are a 429 with ``Retry-After``
(the ``/ws/movement`` upgrade and WebRTC offers are admitted where they are answered). Joins
ask the moderation whether the name is banned or the server draining.

Must not: run WebRTC, the native protocol or the chat, send files, or run the server itself
(the modules named above do), block the trio loop, trust a body from the network (bodies are
read bounded and with a deadline, JSON parsed with ``protocol.jsonsafe`` through
``worldserver.http_common``: a refused one is a 400 naming the reason, counted as
``drop.http_json.<reason>``, logged at most once per reason every ``REFUSAL_LOG_INTERVAL``
seconds; malformed input is answered with a status code, never an unhandled error), or wait
without a deadline.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from protocol import jsonsafe
from worldserver.chat import gateway as chat_gateway
from worldserver.accounts import Accounts, JoinRefused
from worldserver.connect_tokens import ConnectAdmission
from worldserver.hosting import as_host
from worldserver.http_common import (
    REFUSAL_LOG_INTERVAL,
    BodyError,
    client_host,
    load_json,
    read_body,
)
from worldserver.http_static import WebRoot, gallery_image, gallery_list
from worldserver.identity import Identities
from worldserver.limits import AddressLimits
from worldserver.logs import LogLimiter, get_logger
from worldserver.metrics import metrics_endpoint
from worldserver.rtc_signaling import GECKOS_MARK, Geckos
from worldserver.stats import Stats
from worldserver.ws_movement import movement_endpoint

__all__ = ["build_app"]

log = get_logger("worldserver.http")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# -- routes ------------------------------------------------------------------------------------


async def _health(request: Request) -> Response:
    worlds = request.app.state.worlds
    clients = sum(len(sim.sessions) for sim in worlds)
    return JSONResponse({"status": "ok", "clients": clients, "tick": int(worlds.default.tick)})


def _join_refused(request: Request) -> Response | None:
    """A 429 when the client's address has no join token left (``limits.joins_per_second``)."""
    limits: AddressLimits = request.app.state.limits
    wait = limits.join_wait(limits.key(client_host(request)), trio.current_time())
    if wait <= 0:
        return None
    request.app.state.stats.incr("drop.limit_join_rate")
    return JSONResponse({"error": "too many joins from your address; retry later",
                         "retry_after": round(wait, 3)},
                        status_code=429, headers={"Retry-After": str(math.ceil(wait))})


def _moderation_refused(state, where: str, name: str | None) -> Response | None:
    """503 ``shutting_down`` while the server drains, 403 ``banned`` (with ``Retry-After``) for a
    name kicked with a ban that has not run out (worldserver/moderation.py); None: go on."""
    moderation = state.moderation
    refused = moderation.join_refusal(where, name, trio.current_time()) if moderation is not None else None
    if refused is None:
        return None
    code, text, retry_after = refused
    body: dict[str, Any] = {"error": text, "code": code}
    headers = None
    if retry_after is not None:
        body["retry_after"] = round(retry_after, 3)
        headers = {"Retry-After": str(math.ceil(retry_after))}
    return JSONResponse(body, status_code=503 if code == "shutting_down" else 403, headers=headers)


async def _join_body(request: Request, route: str, example: str) -> tuple[object, Response | None]:
    """The checked JSON body of a join route (``/api/join``, ``/api/connect-token``), within
    the address's join allowance; or the answer that refuses the request."""
    refused = _join_refused(request)
    if refused is not None:
        return None, refused
    try:
        body = await read_body(request, stats=request.app.state.stats)
    except BodyError as exc:
        return None, _error(exc.status, HTTPStatus(exc.status).phrase.lower())
    state = request.app.state
    try:
        return load_json(body, route, state.stats, state.refusals), None
    except jsonsafe.JsonRefused as exc:
        return None, _error(400, f"the body must be JSON like {example}: {exc.message}")


async def _join(request: Request) -> Response:
    data, refused = await _join_body(request, "/api/join", '{"name": "..."}')
    if refused is not None:
        return refused
    state = request.app.state
    if not isinstance(data, dict) or "name" not in data:
        return _error(400, 'the body must be JSON like {"name": "..."}')
    world = data.get("world") or ""  # the world to join ("" or absent: the default one)
    if not isinstance(world, str) or (world and state.worlds.get(world) is None):
        state.stats.incr("drop.join_unknown_world")
        return _error(404, "no such world")
    refused = _moderation_refused(state, "join", data["name"] if isinstance(data["name"], str) else None)
    if refused is not None:
        return refused
    previous = data.get("token")  # older clients send their last token; it is not needed
    if previous is not None and not isinstance(previous, str):
        return _error(400, "token must be a string")
    accounts: Accounts | None = state.accounts
    if accounts is None:
        return _error(503, "joining needs the chat database, which this server does not run")
    try:
        joined = await accounts.join(data["name"], data.get("secret"), client_host(request))
    except JoinRefused as exc:
        body = {"error": exc.reason, "code": exc.code}
        headers = None
        if exc.retry_after is not None:
            body["retry_after"] = round(exc.retry_after, 3)
            headers = {"Retry-After": str(math.ceil(exc.retry_after))}
        return JSONResponse(body, status_code=exc.status, headers=headers)
    state.identities.set_world(joined.token, world)
    answer = joined.as_json()
    answer["world"] = world or state.worlds.default_id
    connect_tokens: ConnectAdmission | None = state.connect_tokens
    if connect_tokens is not None:  # the UDP connect token and its key: over HTTP(S) only
        answer.update(connect_tokens.issue(joined.identity, trio.current_time()))
    return JSONResponse(answer)


async def _connect_token(request: Request) -> Response:
    """``POST /api/connect-token`` ``{"token": join token}``: a fresh UDP connect token and key
    for a player who joined (one token opens one connection: a reconnect takes a new one)."""
    data, refused = await _join_body(request, "/api/connect-token", '{"token": "..."}')
    if refused is not None:
        return refused
    state = request.app.state
    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        return _error(400, 'the body must be JSON like {"token": "..."} with the token of POST /api/join')
    refused = _moderation_refused(state, "connect_token", None)
    if refused is not None:
        return refused
    connect_tokens: ConnectAdmission | None = state.connect_tokens
    if connect_tokens is None:
        return _error(404, "this server has no UDP endpoint")
    answer = connect_tokens.issue_for(data["token"], trio.current_time())
    if answer is None:
        state.stats.incr("drop.connect_token_unknown_join")
        return JSONResponse({"error": "unknown or expired join token: join again (POST /api/join)",
                             "code": "unknown_token"}, status_code=403)
    return JSONResponse(answer)


async def _players(request: Request) -> Response:
    """The avatars of one world (``?world=ID``; default: the default world)."""
    sim = request.app.state.worlds.get(request.query_params.get("world", ""))
    if sim is None:
        return _error(404, "no such world")
    names = getattr(sim, "names", None)
    if callable(names):
        pairs = names()
    else:
        pairs = [(s.entity_id, getattr(s, "name", "")) for s in sim.sessions]
    players = [{"entity_id": int(eid), "name": str(name or "")} for eid, name in pairs]
    # The world document's version (worldserver/world_admin.py): pages poll this route anyway,
    # and fetch GET /api/worlds/{id} again when it changes (a picture hung, a reload).
    spec = getattr(sim, "world_spec", None)
    return JSONResponse({"players": players, "world_version": spec.version if spec is not None else 1})


async def _worlds(request: Request) -> Response:
    """The worlds this server hosts (the default first), with their player counts."""
    worlds = request.app.state.worlds
    return JSONResponse({"default": worlds.default_id, "worlds": [
        {"id": sim.world_spec.id, "title": sim.world_spec.title, "players": len(sim.sessions)} for sim in worlds]})


async def _world(request: Request) -> Response:
    """One world's document (worldserver/worldfile.py ``WorldSpec.to_json``), or 404."""
    sim = request.app.state.worlds.get(request.path_params["id"])
    if sim is None:
        return _error(404, "no such world")
    return JSONResponse(sim.world_spec.to_json())


async def _client_config(request: Request) -> Response:
    config = request.app.state.config
    return JSONResponse(
        {
            "datachannel_timeout_ms": int(config.http.datachannel_timeout * 1000),
            "tick_rate": config.sim.tick_rate,
            "webrtc": bool(config.webrtc.enabled),
            # the id of the world the page shows (its document: GET /api/worlds/{id})
            "world": request.app.state.worlds.default_id,
        }
    )


class _App:
    """The outermost ASGI callable: geckos paths to the signaling handler, the rest to Starlette.

    When the server's own ``send`` fails (the client went away, or hypercorn closed the
    connection under a response), the request ends as a counted drop
    (``drop.http_send_failed``) rather than an exception for hypercorn to log with a
    traceback; an exception that did not come from ``send`` is raised as before.
    """

    def __init__(self, starlette: Starlette, geckos: Geckos) -> None:
        self.starlette = starlette
        self.geckos = geckos
        self.state = starlette.state

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.starlette(scope, receive, send)  # lifespan
            return
        if kind == "websocket":  # Starlette wraps send; the chat fan-out needs the server's
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}),
                                             chat_gateway.RAW_SEND_KEY: send}}
        send_failed = False

        async def guarded_send(message) -> None:
            nonlocal send_failed
            try:
                await send(message)
            except Exception:
                send_failed = True
                raise

        try:
            if kind == "http" and GECKOS_MARK in scope["path"]:
                await self.geckos(scope, receive, guarded_send)
            else:
                await self.starlette(scope, receive, guarded_send)
        except Exception as exc:
            if not send_failed:
                raise
            self.state.stats.incr("drop.http_send_failed")
            log.debug("connection failed under a response", path=scope.get("path"), error=repr(exc)[:300])


def build_app(*, config, sim, identities: Identities, worlds=None, rtc=None, ws_movement=None, chat=None,
              chat_fanout=None, limits: AddressLimits | None = None,
              accounts: Accounts | None = None, connect_tokens: ConnectAdmission | None = None,
              admin=None) -> _App:
    """The ASGI app of the HTTP port (see the module docstring and docs/architecture.md).

    ``sim`` gives ``sessions``, ``tick``, ``names()`` and ``stats`` (the default world);
    ``worlds`` every hosted world (a :class:`worldserver.hosting.WorldHost`; None: ``sim``
    alone); ``rtc`` is the WebRTC
    service (None: WebRTC off, signaling answers 503); ``ws_movement`` the stream service for
    ``/ws/movement`` (None: the WebSocket is refused); ``chat`` the chat service for
    ``/ws/chat`` and ``/api/chat/images`` (None: refused), and ``chat_fanout`` its running
    :class:`~worldserver.chat.fanout.Fanout` (None: every chat socket gets a writer task
    through the ASGI ``send``). ``accounts`` answers ``POST /api/join`` (None: made on the
    chat's database; without chat, joins get 503). ``connect_tokens`` issues the UDP connect
    tokens that joins and ``POST /api/connect-token`` hand out (the UDP service's; None: no
    connect tokens, and that route is a 404). ``admin``: the
    :class:`worldserver.admin_api.AdminApi`, whose routes serve ``/admin/api/`` (None: not
    served); joins ask its moderation (else the chat's) whether the name is banned or the server
    draining. ``app.state`` holds them all, and ``app.state.stats`` the counters (the
    simulation's ``Stats``).
    """
    routes = [
        Route("/health", _health, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),  # app.state.metrics: loopback unless public
        Route("/api/join", _join, methods=["POST"]),
        Route("/api/connect-token", _connect_token, methods=["POST"]),
        Route("/api/players", _players, methods=["GET"]),
        Route("/api/client-config", _client_config, methods=["GET"]),
        Route("/api/worlds", _worlds, methods=["GET"]),
        Route("/api/worlds/{id}", _world, methods=["GET"]),
        Route("/gallery/images", gallery_list, methods=["GET"]),
        Route("/gallery/images/{name}", gallery_image, methods=["GET"]),
        WebSocketRoute("/ws/movement", movement_endpoint),
        WebSocketRoute("/ws/chat", chat_gateway.chat_endpoint),
        Route("/api/chat/images", chat_gateway.upload_image, methods=["POST"]),
        Route("/api/chat/images/{id}", chat_gateway.get_image, methods=["GET"]),
        *(admin.routes() if admin is not None else ()),  # /admin/api/: worldserver/admin_api.py
    ]
    starlette = Starlette(routes=routes)
    # The web client answers whatever no route matched (a route matched with another method
    # still gets its 405 first); a Mount("/") would shadow those 405s.
    starlette.router.default = WebRoot(config.http.web_root)
    state = starlette.state
    state.config = config
    state.sim = sim
    state.worlds = as_host(worlds if worlds is not None else sim)  # every hosted world
    state.identities = identities
    state.rtc = rtc
    state.ws_movement = ws_movement
    state.chat = chat
    state.chat_fanout = chat_fanout
    # per-address limits, shared with the transports (None: the app's own, from config.limits)
    state.limits = limits if limits is not None else AddressLimits(config.limits)
    stats = getattr(sim, "stats", None)
    state.stats = stats if isinstance(stats, Stats) else Stats()
    if accounts is None and chat is not None:  # names are kept in the chat's database
        accounts = Accounts.from_config(config, identities, chat, state.stats, state.limits)
    state.accounts = accounts
    state.connect_tokens = connect_tokens
    state.admin = admin
    # kicks, bans and the drain (worldserver/moderation.py): joins are refused by it
    state.moderation = admin.moderation if admin is not None else getattr(chat, "moderation", None)
    state.ws_idle_timeout = max(10.0, 3.0 * config.net.timeout)
    state.stopping = trio.Event()  # set by serve_http when the server shuts down
    state.refusals = LogLimiter(log, REFUSAL_LOG_INTERVAL)  # log lines about refused input
    return _App(starlette, Geckos(rtc, config.http.cors_origin, state.stats, state.refusals))
