"""geckos.io 3.x signaling over HTTP for the WebRTC service (``worldserver.rtc``).

Job: :class:`Geckos` answers every HTTP request whose path contains :data:`GECKOS_MARK`
(``/.wrtc/v2``; ``worldserver.http_app`` hands them over) as a geckos.io 3.x server does
(``../shared/reference/geckos-protocol.md``): the four routes ``POST connections``,
``POST connections/{id}/remote-description``, ``GET connections/{id}/additional-candidates`` and
``POST connections/{id}/close``, plain ``"<code>: <reason>"`` answers for what is wrong, and
its CORS headers (:data:`GECKOS_CORS_HEADERS`, the origin from ``http.cors_origin``) on every
answer. Each call goes to the WebRTC service with the client's address, which admits offers
(``[limits]``); a service that does not answer within :data:`RTC_TIMEOUT` seconds is a 503.
:func:`make_authorize` is the geckos authorization hook built on the join tokens.

Must not: run WebRTC itself (``rtc`` does), trust a path or body from the network (a
connection id must look like one, bodies are bounded and read with a deadline, the browser's
answer parsed with ``protocol.jsonsafe``: a refused one is a 400 naming the reason, counted as
``drop.http_json.<reason>``), let an error escape (a failing call is a 500), or wait without a
deadline.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from protocol import jsonsafe
from worldserver.http_common import (
    REFUSAL_LOG_INTERVAL,
    BodyError,
    client_host,
    load_json,
    read_body,
    status_text,
)
from worldserver.identity import Identities
from worldserver.logs import LogLimiter, get_logger
from worldserver.stats import Stats

__all__ = ["GECKOS_CORS_HEADERS", "GECKOS_MARK", "RTC_TIMEOUT", "Geckos", "make_authorize"]

log = get_logger("worldserver.http")

RTC_TIMEOUT = 15.0  # seconds the WebRTC service may take to answer a signaling call (503 after)

GECKOS_MARK = "/.wrtc/v2"
GECKOS_ALLOW_METHODS = "OPTIONS, GET, POST"
GECKOS_CORS_HEADERS = {
    # Access-Control-Allow-Origin comes from http.cors_origin.
    "Access-Control-Request-Method": "*",
    "Access-Control-Request-Headers": "X-Requested-With, accept, content-type",
    "Access-Control-Allow-Methods": GECKOS_ALLOW_METHODS,
    "Access-Control-Allow-Headers": "authorization, content-type",
}
_CONNECTION_ID = re.compile(r"[0-9a-zA-Z]{24}")
_GECKOS_ROUTES = (
    # (pattern of the path after /.wrtc/v2, method, action)
    (re.compile(r"/connections"), "POST", "create"),
    (re.compile(r"/connections/([^/]*)/remote-description"), "POST", "remote_description"),
    (re.compile(r"/connections/([^/]*)/additional-candidates"), "GET", "additional_candidates"),
    (re.compile(r"/connections/([^/]*)/close"), "POST", "close"),
)


def make_authorize(config, identities: Identities) -> Callable[[str | None], bool | int | dict]:
    """The geckos authorization hook for the WebRTC service.

    ``authorize(header)`` gets the ``Authorization`` header of ``POST .../connections`` (the
    join token as the client's ``authorization`` option; a ``Bearer`` prefix is accepted).
    A live token gives ``{"name": name}`` (geckos ``userData``). Otherwise: ``True`` (no user
    data) when ``http.require_token`` is off, ``401`` when it is on.
    """
    require = bool(config.http.require_token)

    def authorize(header: str | None) -> bool | int | dict:
        token = (header or "").strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        name = identities.name_for(token) if token else None
        if name is not None:
            return {"name": name}
        return 401 if require else True

    return authorize


class Geckos:
    """Answers every HTTP request whose path contains ``/.wrtc/v2`` (see geckos-protocol.md)."""

    def __init__(self, rtc, cors_origin: str, stats: Stats | None = None,
                 refusals: LogLimiter | None = None) -> None:
        self.rtc = rtc
        self.stats = stats if stats is not None else Stats()
        self.refusals = refusals if refusals is not None else LogLimiter(log, REFUSAL_LOG_INTERVAL)
        self.cors = {"Access-Control-Allow-Origin": cors_origin, **GECKOS_CORS_HEADERS}

    async def __call__(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        try:
            response = await self._respond(request)
        except Exception:
            log.exception("geckos signaling failed", path=scope.get("path"))
            response = status_text(500)
        response.headers.update(self.cors)
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        method = request.method
        if method == "OPTIONS":
            return status_text(200)
        path = request.url.path
        rest = path[path.find(GECKOS_MARK) + len(GECKOS_MARK):]
        for pattern, allowed, action in _GECKOS_ROUTES:
            match = pattern.fullmatch(rest)
            if match is not None:
                break
        else:
            return status_text(404)
        if method != allowed:
            return status_text(405, headers={"Allow": f"OPTIONS, {allowed}"})
        connection_id = match.group(1) if match.groups() else None
        if connection_id is not None and not _CONNECTION_ID.fullmatch(connection_id):
            return status_text(400)
        try:
            body = await read_body(request, stats=self.stats)
        except BodyError as exc:
            return status_text(exc.status)
        if self.rtc is None:
            return status_text(503)
        if action == "create":
            call = partial(self.rtc.create_connection, request.headers.get("authorization"),
                           address=client_host(request))
        elif action == "remote_description":
            try:
                value = load_json(body, "remote-description", self.stats, self.refusals)
            except jsonsafe.JsonRefused as exc:
                return status_text(400, detail=exc.message)
            description = _description(value)
            if description is None:
                return status_text(400, detail='the body must be JSON like {"type": ..., "sdp": ...}')
            call = partial(self.rtc.remote_description, connection_id, description)
        elif action == "additional_candidates":
            call = partial(self.rtc.additional_candidates, connection_id)
        else:
            call = partial(self.rtc.close, connection_id)
        result = None
        with trio.move_on_after(RTC_TIMEOUT):
            result = await call()
        if result is None:
            log.warning("webrtc service did not answer in time", action=action)
            return status_text(503)
        return _rtc_response(*result)


def _description(value: Any) -> dict | None:
    """The browser's answer ``{"type": ..., "sdp": ...}``, or None if the JSON is not one."""
    if not isinstance(value, dict):
        return None
    if not isinstance(value.get("type"), str) or not isinstance(value.get("sdp"), str):
        return None
    return value


def _rtc_response(status: int, body: Any, headers: dict | None) -> Response:
    headers = {str(k): str(v) for k, v in (headers or {}).items()}
    if isinstance(body, (dict, list)):
        return JSONResponse(body, status_code=status, headers=headers)
    if isinstance(body, str):
        return PlainTextResponse(body, status_code=status, headers=headers)
    return status_text(status, headers=headers)
