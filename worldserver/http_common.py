"""Small HTTP helpers that the HTTP port's modules share: bounded body reading, JSON bodies,
plain status answers, the client's address.

Job: :func:`read_body` reads a request body of at most ``limit`` bytes within
:data:`BODY_TIMEOUT` seconds (413, 408, 400 as :class:`BodyError`; a too-large body of up to
:data:`DRAIN_LIMIT` bytes is read and dropped first so that the client sees the 413);
:func:`load_json` parses a body with ``protocol.jsonsafe`` (size and nesting depth checked
before parsing), a refused one counted as ``drop.http_json.<reason>`` and logged through the
caller's :class:`~worldserver.logs.LogLimiter` (at most once per reason every
:data:`REFUSAL_LOG_INTERVAL` seconds); :func:`status_text` is geckos' ``sendStatus`` answer;
:func:`client_host` the client's IP address. Used by ``http_app`` (routes), ``rtc_signaling``,
``ws_movement``, ``http_static``, ``admin_api``, ``world_admin`` and ``chat.gateway``: every
request body of the HTTP port is read by :func:`read_body` (callers with other needs pass
their own limit, deadline and drain limit) and every JSON body parsed by :func:`load_json`.

Must not: hold routes, state or a logger of its own, read a body without a size limit or a
deadline, or raise anything but :class:`BodyError` (and ``jsonsafe.JsonRefused``) for what a
client sent.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import trio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from protocol import jsonsafe
from worldserver.logs import LogLimiter
from worldserver.stats import Stats

__all__ = [
    "BODY_TIMEOUT",
    "DRAIN_LIMIT",
    "MAX_BODY",
    "REFUSAL_LOG_INTERVAL",
    "BodyError",
    "client_host",
    "load_json",
    "read_body",
    "status_text",
]

MAX_BODY = 64 * 1024  # largest request body accepted (413 beyond)
DRAIN_LIMIT = 1024 * 1024  # a too-large body up to this size is read and dropped before the 413
BODY_TIMEOUT = 10.0  # seconds to receive a request body (408 after)
REFUSAL_LOG_INTERVAL = 60.0  # at most one log line per refusal reason this often


class BodyError(Exception):
    """A request body that could not be read; ``status`` is the answer (400, 408 or 413) and
    ``code`` the JSON APIs' name for it (``bad_request``, ``timeout``, ``too_large``)."""

    CODES = {400: "bad_request", 408: "timeout", 413: "too_large"}

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status

    @property
    def code(self) -> str:
        return self.CODES[self.status]


def status_text(status: int, headers: dict[str, str] | None = None, detail: str = "") -> Response:
    """A plain-text answer ``"<code>: <reason>"`` like geckos' ``sendStatus``, and
    ``" (<detail>)"`` after it when there is more to say."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    body = f"{status}: {phrase}" if phrase else str(status)
    if detail:
        body += f" ({detail})"
    return PlainTextResponse(body, status_code=status, headers=headers)


def load_json(body: bytes, path: str, stats: Stats, refusals: LogLimiter) -> Any:
    """The parsed JSON body; raises ``jsonsafe.JsonRefused`` (counted and, rate-limited, logged)."""
    try:
        return jsonsafe.loads(body, max_bytes=MAX_BODY)
    except jsonsafe.JsonRefused as exc:
        stats.incr(f"drop.http_json.{exc.reason}")
        refusals.log(logging.INFO, exc.reason, "json body refused", path=path, reason=exc.reason,
                     detail=exc.message)
        raise


async def read_body(request: Request, limit: int = MAX_BODY, stats: Stats | None = None, *,
                    timeout: float | None = None, drain_limit: int | None = None) -> bytes:
    """The request body, at most ``limit`` bytes, received within ``timeout`` seconds
    (:data:`BODY_TIMEOUT` when None); raises :class:`BodyError`: 413 too large (a declared
    ``Content-Length`` over ``limit`` and at most ``drain_limit`` bytes, :data:`DRAIN_LIMIT`
    when None, is read and dropped first, so that the client sees the answer), 408 too slow,
    400 a bad ``Content-Length``. A client that disconnects meanwhile is a 400 nobody reads
    (``drop.http_client_disconnect`` when ``stats`` is given). Every HTTP body this server
    reads comes through here: the join routes, geckos, the admin API, chat image uploads and
    pictures hung through the admin API."""
    timeout = BODY_TIMEOUT if timeout is None else timeout
    drain_limit = DRAIN_LIMIT if drain_limit is None else drain_limit
    try:
        return await _read_body_or_disconnect(request, limit, timeout, drain_limit)
    except ClientDisconnect:
        if stats is not None:
            stats.incr("drop.http_client_disconnect")
        raise BodyError(400) from None


async def _read_body_or_disconnect(request: Request, limit: int, timeout: float, drain_limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BodyError(400) from None
        if size < 0:
            raise BodyError(400)
        if size > limit:
            if size <= drain_limit:  # read and drop it so the client sees the 413
                with trio.move_on_after(timeout):
                    async for _ in request.stream():
                        pass
            raise BodyError(413)
    chunks = []
    total = 0
    with trio.move_on_after(timeout) as scope:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise BodyError(413)
            chunks.append(chunk)
    if scope.cancelled_caught:
        raise BodyError(408)
    return b"".join(chunks)


def client_host(connection) -> str | None:
    """The client's IP address of a Request or WebSocket (None when the server cannot tell)."""
    client = connection.client
    return client.host if client else None
