"""The admin API: ``/admin/api/`` on the HTTP port, for the ``worldserver`` admin commands and
the dashboard page.

Job: :class:`AdminApi` answers JSON requests that carry ``Authorization: Bearer <token>`` with
the server's admin token (``server.admin_token``, or the random one :func:`admin_token` writes
to ``<server.data_dir>/admin.token``, mode 0600, when none is configured). Every path under
``/admin/api/`` checks the token first: a missing, wrong or locked-out one is a bare 401 (the
same answer for all three, whatever the path), counted, and a wrong one is held back and
counted against the client's address by the :class:`~worldserver.limits.FailureGuard` the chat
shares (``chat.admin_*``: wrong chat moderator tokens and wrong admin tokens lock an address
out together). Tokens are compared in constant time.

Routes (docs/architecture.md, "Admin API"):

- ``GET status``: uptime, version, tick rate, tick duration and lateness p50/p99, clients by
  transport, entities, every hosted world's figures, bytes in/out per second by transport,
  GC pauses, drops by reason, chat rooms/users/sockets and messages per second, the drain;
- ``GET players``: every avatar (player id, name, world, transport, address, position, RTT
  where known, connected for, bytes in/out, chat sockets, muted for);
- ``GET rooms``: the chat's public rooms and the rooms sockets are in;
- ``POST players/{id}/kick`` ``{"reason", "ban"}``, ``POST players/{id}/mute``
  ``{"seconds"}``, ``POST players/{id}/unmute``: ``{id}`` is a player id or a name; a kick is
  :meth:`worldserver.moderation.Moderation.kick`, the moderator's chat kick's own code path;
- ``POST notice`` ``{"text", "room"?}``: a notice by the server in one room or in all;
- ``POST drain`` ``{"grace"?}``: :class:`worldserver.moderation.Drain`;
- ``worlds``: open, close and reload worlds, hang and take down pictures
  (:class:`worldserver.world_admin.WorldAdmin`, whose pictures hung before it restores at start).

Rates (bytes, chat messages, drops per second) and the tick and GC percentiles are sampled
once a second by :meth:`AdminApi.run`, so that any number of pollers read the same figures and
cost nothing but a dictionary each.

Must not: serve anything without the token, say why a token was refused, block the trio loop
(the chat store is reached through the chat service's worker), or keep per-request state.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from collections import Counter
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from protocol import chat as chat_protocol
from protocol import jsonsafe
from worldserver import __version__
from worldserver.chat.errors import ChatError
from worldserver.http_common import BodyError, load_json, read_body
from worldserver.limits import FailureGuard, address_key
from worldserver.logs import LogLimiter, get_logger
from worldserver.metrics import drop_counts, transport_bytes
from worldserver.native import client_address
from worldserver.world_admin import WorldAdmin, WorldAdminError

__all__ = ["ADMIN_PREFIX", "AdminApi", "TOKEN_FILE", "TRANSPORTS", "admin_token", "token_path"]

log = get_logger("worldserver.admin")

ADMIN_PREFIX = "/admin/api/"
TOKEN_FILE = "admin.token"  # in server.data_dir, when server.admin_token is empty
SAMPLE_INTERVAL = 1.0  # seconds between two samples of the rates
MAX_BODY = 16 * 1024  # largest request body (read within http_common.BODY_TIMEOUT)
REFUSAL_LOG_INTERVAL = 60.0
MAX_KICK_REASON = 200  # characters of a kick's reason
TRANSPORTS = ("udp", "webrtc", "ws", "hatongsu")  # the client transports, as the API names them
_TRANSPORT_NAMES = {"rtc": "webrtc"}  # session.transport -> the API's name
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


# -- the token ---------------------------------------------------------------------------------


def token_path(config) -> str:
    """Where a server without ``server.admin_token`` writes its random token."""
    return os.path.join(config.server.data_dir, TOKEN_FILE)


def admin_token(config) -> str:
    """The admin token of a server starting now: ``server.admin_token``, or a fresh random one
    (256 bits) written to :func:`token_path` readable by its owner only (0600), replacing the
    one of an earlier start. Raises OSError when the file cannot be written."""
    if config.server.admin_token:
        return config.server.admin_token
    token = secrets.token_urlsafe(32)
    path = token_path(config)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask or an older file said
        os.write(fd, (token + "\n").encode("ascii"))
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return token


# -- the API -----------------------------------------------------------------------------------


class _Refused(Exception):
    """A request the API answers with an error: ``{"error": message, "code": code}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class AdminApi:
    """The routes of ``/admin/api/`` for one running server (see the module docstring).

    ``running``: the :class:`worldserver.app.RunningServer`; ``moderation`` and ``drain`` its
    :class:`~worldserver.moderation.Moderation` and :class:`~worldserver.moderation.Drain`;
    ``guard`` the wrong-token guard shared with the chat. Make it in trio (it reads the clock).
    """

    def __init__(self, config, running, *, token: str, guard: FailureGuard, moderation, drain) -> None:
        self.config = config
        self.running = running
        self.token = token
        self.guard = guard
        self.moderation = moderation
        self.drain = drain
        self.stats = running.stats
        self.started = trio.current_time()
        self.started_wall = time.time()
        self.refusals = LogLimiter(log, REFUSAL_LOG_INTERVAL)
        self.sampled: dict[str, Any] = {}  # the newest figures of run(); see _sample
        self.worlds = WorldAdmin(config, running, self.stats)  # /admin/api/worlds...
        self._previous: tuple[float, dict] | None = None

    def routes(self) -> list[Route]:
        """One route for everything under ``/admin/api/``: the token is checked before the
        path is even looked at."""
        return [Route(ADMIN_PREFIX + "{path:path}", self._dispatch, methods=_METHODS)]

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Samples the rates once a second until cancelled."""
        self._sample(trio.current_time())
        await self.worlds.restore()  # pictures hung before this start, over the files'
        task_status.started()
        while True:
            await trio.sleep(SAMPLE_INTERVAL)
            self._sample(trio.current_time())

    # -- authorization and dispatch --------------------------------------------------------------
    async def _dispatch(self, request: Request) -> Response:
        if not await self._authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        parts = [p for p in request.path_params["path"].split("/") if p]
        method = request.method
        try:
            if parts[:1] == ["worlds"]:  # worldserver/world_admin.py
                return JSONResponse(await self.worlds.handle(method, parts[1:], request, self._body))
            if parts == ["status"] and method == "GET":
                return JSONResponse(self.status())
            if parts == ["players"] and method == "GET":
                return JSONResponse({"players": self.players()})
            if parts == ["rooms"] and method == "GET":
                return JSONResponse({"rooms": await self._rooms()})
            if len(parts) == 3 and parts[0] == "players" and method == "POST":
                action = {"kick": self._kick, "mute": self._mute, "unmute": self._unmute}.get(parts[2])
                if action is not None:
                    return JSONResponse(await action(parts[1], await self._body(request)))
            if parts == ["notice"] and method == "POST":
                return JSONResponse(await self._notice(await self._body(request)))
            if parts == ["drain"] and method == "POST":
                return JSONResponse(self._drain(await self._body(request)))
            known = parts in (["status"], ["players"], ["rooms"], ["notice"], ["drain"]) or (
                len(parts) == 3 and parts[0] == "players" and parts[2] in ("kick", "mute", "unmute"))
            if known:
                raise _Refused(405, "method_not_allowed", f"{method} is not allowed here")
            raise _Refused(404, "not_found", "no such admin route")
        except (_Refused, WorldAdminError) as exc:
            return JSONResponse({"error": exc.message, "code": exc.code}, status_code=exc.status)

    async def _authorized(self, request: Request) -> bool:
        """Whether the request carries the admin token; a wrong one is counted against the
        address and its answer held back (doubling per failure of the address)."""
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            self.stats.incr("drop.admin_api_no_token")
            return False
        client = request.client
        key = address_key(client.host if client else None)
        now = trio.current_time()
        verdict, _ = self.guard.check(key, presented, self.token, now)
        if verdict == FailureGuard.OK:
            return True
        if verdict == FailureGuard.LOCKED_OUT:
            self.stats.incr("drop.admin_api_locked_out")
        else:
            self.stats.incr("drop.admin_api_token_wrong")
        failures = self.guard.failures(key, now)
        self.refusals.log(logging.WARNING, f"admin_api_{verdict}", "admin token refused", reason=verdict,
                          address=client.host if client else None, failures=failures)
        await trio.sleep(self.guard.delay(failures))  # this request only
        return False

    async def _body(self, request: Request) -> dict:
        """The request's JSON object (an empty body is ``{}``); 400 / 408 / 413 otherwise. Read
        by ``http_common.read_body`` and parsed by ``http_common.load_json`` like the other
        JSON bodies of the HTTP port (the same counters)."""
        try:
            body = await read_body(request, MAX_BODY, self.stats)
        except BodyError as exc:
            message = {413: f"the body is larger than {MAX_BODY} bytes", 408: "the body did not come in time",
                       400: "bad Content-Length"}[exc.status]
            raise _Refused(exc.status, exc.code, message) from None
        if not body.strip():
            return {}
        try:
            data = load_json(body, request.url.path, self.stats, self.refusals)
        except jsonsafe.JsonRefused as exc:
            raise _Refused(400, "bad_json", f"the body must be a JSON object: {exc.message}") from None
        if not isinstance(data, dict):
            raise _Refused(400, "bad_json", "the body must be a JSON object")
        return data

    # -- figures ---------------------------------------------------------------------------------
    def _sample(self, now: float) -> None:
        """The per-second figures: rates since the previous sample, and the percentiles of the
        tick and GC windows (kept from the previous sample while a window was just cleared by
        the stats line)."""
        running = self.running
        stats = running.stats
        counters = {f"{t}.{d}": v for t, pair in transport_bytes(running).items() for d, v in zip(("in", "out"), pair)}
        counters["chat.messages"] = stats.get("chat.messages")
        counters["drops"] = sum(drop_counts(running).values())
        sampled = dict(self.sampled)
        if self._previous is not None:
            then, before = self._previous
            elapsed = max(now - then, 1e-6)
            sampled["rates"] = {key: round((value - before.get(key, 0)) / elapsed, 1)
                                for key, value in counters.items()}
        else:
            sampled["rates"] = {key: 0.0 for key in counters}
        self._previous = (now, counters)
        for name, samples in (("tick", stats.tick_duration), ("late", stats.tick_lateness)):
            if len(samples):
                p50, p99 = samples.percentiles(50, 99)
                sampled[name] = {"p50": round(p50 * 1000, 3), "p99": round(p99 * 1000, 3)}
        pauses = running.gc.pauses
        if len(pauses):
            values = pauses.values()
            sampled["gc"] = {"pause_ms_max": round(float(values.max()) * 1000, 3),
                             "pause_ms_p99": round(pauses.percentiles(99)[0] * 1000, 3)}
        self.sampled = sampled

    def status(self) -> dict:
        running, config = self.running, self.config
        now = trio.current_time()
        sampled = self.sampled
        rates = sampled.get("rates", {})
        clients = dict.fromkeys(TRANSPORTS, 0)
        worlds = []
        host = running.worlds
        for sim in host:
            by_transport = Counter(_transport(s) for s in sim.sessions)
            for name, count in by_transport.items():
                clients[name] = clients.get(name, 0) + count
            clock = host.clocks.get(sim.world_id) if hasattr(host, "clocks") else None
            worlds.append({
                "id": sim.world_id, "title": sim.world_spec.title, "default": sim.world_id == host.default_id,
                "players": len(sim.sessions), "clients": {t: by_transport.get(t, 0) for t in TRANSPORTS},
                "entities": int(sim.world.count), "tick": int(sim.tick), "stride": int(sim.snapshots.stride),
                "ticks_skipped": clock.skipped if clock is not None else 0,
            })
        chat = running.chat
        drain = None
        if self.drain is not None and self.drain.active:
            drain = {"stops_in": round(max(0.0, self.drain.deadline - now), 3)}
        zero = {"p50": 0.0, "p99": 0.0}
        return {
            "version": __version__,
            "uptime": round(now - self.started, 3),
            "started": round(self.started_wall, 3),
            "tick_rate": config.sim.tick_rate,
            "tick": {"duration_ms": sampled.get("tick", zero), "lateness_ms": sampled.get("late", zero),
                     "skipped": sum(w["ticks_skipped"] for w in worlds)},
            "clients": {**clients, "total": sum(clients.values())},
            "entities": sum(w["entities"] for w in worlds),
            "worlds": worlds,
            "bytes_per_second": {t: {"in": rates.get(f"{t}.in", 0.0), "out": rates.get(f"{t}.out", 0.0)}
                                 for t in ("udp", "webrtc", "ws", "chat")},
            "gc": {**sampled.get("gc", {"pause_ms_max": 0.0, "pause_ms_p99": 0.0}),
                   "collections": list(running.gc.collections)},
            "drops": dict(sorted(drop_counts(running).items())),
            "drops_per_second": rates.get("drops", 0.0),
            "chat": {
                "rooms": len(chat.room_peers) if chat is not None else 0,
                "users": len(chat.user_peers) if chat is not None else 0,
                "sockets": len(chat.peers) if chat is not None else 0,
                "messages_per_second": rates.get("chat.messages", 0.0),
            },
            "interest_radius": config.interest.radius,
            "draining": drain,
        }

    def players(self) -> list[dict]:
        now = trio.current_time()
        chat = self.running.chat
        out = []
        for sim in self.running.worlds:
            world = sim.world
            for session in sim.sessions:
                slot = session.slot
                conn = getattr(session.sink, "conn", None)
                rtt = conn.link.rtt if conn is not None and conn.link.rtt > 0 else None
                out.append({
                    "id": session.player_id,
                    "entity_id": int(session.entity_id),
                    "name": session.name,
                    "world": sim.world_id,
                    "transport": _transport(session),
                    "address": _address(session, conn),
                    "position": [round(float(v), 2) for v in world.pos[slot]],
                    "yaw": round(float(world.yaw[slot]), 3),
                    "rtt_ms": round(rtt * 1000, 1) if rtt is not None else None,
                    "connected_for": round(now - session.joined_at, 1),
                    "bytes_in": session.bytes_in,
                    "bytes_out": session.bytes_out,
                    "chat_sockets": len(chat.user_peers.get(session.name, ())) if chat is not None else 0,
                    "muted_for": round(chat.muted_for(session.name), 1) if chat is not None and session.name else 0.0,
                })
        out.sort(key=lambda p: p["id"])
        return out

    async def _rooms(self) -> list[dict]:
        chat = self.running.chat
        return [] if chat is None else await chat.rooms_online()

    # -- actions ---------------------------------------------------------------------------------
    async def _kick(self, who: str, body: dict) -> dict:
        reason = body.get("reason", "kicked by the operator")
        ban = body.get("ban", 0)
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_KICK_REASON:
            raise _Refused(400, "bad_field", f"reason: a text of 1 to {MAX_KICK_REASON} characters")
        if not _number(ban) or not 0 <= ban <= 365 * 86400:
            raise _Refused(400, "bad_field", "ban: seconds, from 0 (no ban) to 31536000")
        result = self.moderation.kick(who, reason=_one_line(reason), ban=float(ban), now=trio.current_time(),
                                      by="admin")
        if result is None:
            raise _Refused(404, "not_found", f"no such player: {who!r}")
        return {"name": result.name, "sessions": result.sessions, "chat_sockets": result.chat_sockets,
                "ban": result.ban, "addresses_banned": result.addresses}

    def _chat_user(self, who: str) -> str:
        if self.running.chat is None:
            raise _Refused(503, "no_chat", "this server runs no chat")
        target = self.moderation.find(who)
        if target is None:
            raise _Refused(404, "not_found", f"no such player: {who!r}")
        if not target.name:
            raise _Refused(409, "no_name", "this player has no name, so it cannot chat")
        return target.name

    async def _mute(self, who: str, body: dict) -> dict:
        seconds = body.get("seconds", 600)
        limit = chat_protocol.MAX_MUTE_SECONDS
        if not _number(seconds) or not 0 < seconds <= limit:
            raise _Refused(400, "bad_field", f"seconds: more than 0, at most {limit}")
        name = self._chat_user(who)
        self.running.chat.mute(name, float(seconds), by="admin")
        return {"name": name, "seconds": seconds}

    async def _unmute(self, who: str, body: dict) -> dict:
        name = self._chat_user(who)
        return {"name": name, "was_muted": self.running.chat.unmute(name)}

    async def _notice(self, body: dict) -> dict:
        chat = self.running.chat
        if chat is None:
            raise _Refused(503, "no_chat", "this server runs no chat")
        text, room = body.get("text"), body.get("room")
        if room is not None and not (isinstance(room, str) and room.strip()) and not (
                isinstance(room, int) and not isinstance(room, bool) and room > 0):
            raise _Refused(400, "bad_field", "room: a room id or name")
        try:  # checked as a moderator's notice would be (control characters, length, NFC)
            frame = chat_protocol.decode_client_frame(json.dumps(
                {"id": 1, "op": "msg.send", "room": 1, "kind": "notice", "text": text}))
        except chat_protocol.ChatProtocolError as exc:
            raise _Refused(400, "bad_field", exc.message) from None
        try:
            messages = await chat.post_notice(frame.text or "", room.strip() if isinstance(room, str) else room)
        except ChatError as exc:
            status = {"not_found": 404, "internal": 503}.get(exc.code, 400)
            raise _Refused(status, exc.code, exc.message) from None
        return {"rooms": [m.room for m in messages], "text": frame.text}

    def _drain(self, body: dict) -> dict:
        grace = body.get("grace", self.config.server.drain_grace)
        if not _number(grace) or not 0 <= grace <= 86400:
            raise _Refused(400, "bad_field", "grace: seconds, from 0 to 86400")
        if self.drain is None:
            raise _Refused(503, "no_drain", "this server cannot drain")
        stops_in = self.drain.start(float(grace), trio.current_time())
        return {"draining": True, "stops_in": round(stops_in, 3), "players": self.moderation.player_count()}


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _one_line(text: str) -> str:
    """A reason as one line of text: control characters become spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


def _transport(session) -> str:
    kind = getattr(session, "transport", "") or "other"
    return _TRANSPORT_NAMES.get(kind, kind)


def _address(session, conn) -> str | None:
    """The client's address as text (``host:port``), None when the transport does not know it."""
    if conn is None:  # Hatongsu: the WebRTC peer knows where the offer came from
        peer = getattr(session.sink, "peer", None)
        remote = getattr(peer, "remote", None)
        return str(remote) if remote else None
    address = client_address(session, conn)
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) if address else None
