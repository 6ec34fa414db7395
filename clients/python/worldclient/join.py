"""Joining a worldserver over HTTP: a name, the join token, and the UDP connect token and key.

``await join(http_url, name)`` posts ``POST /api/join`` and returns a :class:`Joined`: the join
token (chat, WebRTC), the name, the identity's secret when the name is new (keep it to take the
name back later), and the **connect token and key** the UDP handshake needs (SPEC 2): the token
opens one connection, the key tags its packets. ``await refresh(http_url, joined)`` gets a fresh
connect token for the same login (``POST /api/connect-token``), for a reconnect.
:func:`join_sync` is the same join for code outside trio (the swarm's worker processes).

Must not: import the server package (a client knows only the wire and the HTTP API), print or
log a secret or key, or wait without a deadline (every request has ``timeout``).
"""

from __future__ import annotations

from typing import Any

import attrs
import httpx

__all__ = ["JoinFailed", "Joined", "join", "join_sync", "refresh"]

TIMEOUT = 10.0


class JoinFailed(Exception):
    """The server refused the join: HTTP ``status``, ``code`` (e.g. ``name_taken``) and
    ``reason`` (its sentence), ``retry_after`` seconds for a rate limit."""

    def __init__(self, status: int, code: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {reason}")
        self.status = status
        self.code = code
        self.reason = reason
        self.retry_after = retry_after


@attrs.frozen(repr=False)
class Joined:
    """What a join gave (see the module docstring); ``connect_token`` and ``connect_key`` are
    b"" when the server has no UDP endpoint."""

    token: str
    name: str
    secret: str | None = None
    identity: int | None = None
    connect_token: bytes = b""
    connect_key: bytes = b""

    def __repr__(self) -> str:  # never the secrets
        return f"Joined(name={self.name!r}, identity={self.identity!r})"

    def with_connect(self, answer: dict) -> Joined:
        return attrs.evolve(self, **_connect_fields(answer))


def _connect_fields(answer: dict) -> dict:
    try:
        return {"connect_token": bytes.fromhex(answer.get("connect_token", "")),
                "connect_key": bytes.fromhex(answer.get("connect_key", ""))}
    except (TypeError, ValueError, AttributeError):
        raise JoinFailed(200, "bad_answer", "the server's connect token is not hex") from None


def _answer(response: httpx.Response) -> dict:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        body = body if isinstance(body, dict) else {}
        retry = body.get("retry_after")
        raise JoinFailed(response.status_code, str(body.get("code", "http_error")),
                         str(body.get("error", response.text[:200])),
                         float(retry) if isinstance(retry, (int, float)) else None)
    return body


def _joined(answer: dict) -> Joined:
    if not isinstance(answer.get("token"), str) or not isinstance(answer.get("name"), str):
        raise JoinFailed(200, "bad_answer", "the join answer has no token or name")
    identity = answer.get("id")
    return Joined(token=answer["token"], name=answer["name"], secret=answer.get("secret"),
                  identity=identity if isinstance(identity, int) else None, **_connect_fields(answer))


def _join_body(name: str, secret: str | None, world: str | None = None) -> dict:
    body = {"name": name} if secret is None else {"name": name, "secret": secret}
    if world:
        body["world"] = world  # the world to join (worlds.hosted); none: the server's default
    return body


async def join(http_url: str, name: str, *, secret: str | None = None, timeout: float = TIMEOUT,
               http: httpx.AsyncClient | None = None, world: str | None = None) -> Joined:
    """``POST /api/join`` on the server at ``http_url`` (``http://host:port``); raises
    :class:`JoinFailed` when refused. ``http``: a client to reuse (its base URL is ignored)."""
    url = http_url.rstrip("/") + "/api/join"
    if http is not None:
        return _joined(_answer(await http.post(url, json=_join_body(name, secret, world), timeout=timeout)))
    async with httpx.AsyncClient(timeout=timeout) as client:
        return _joined(_answer(await client.post(url, json=_join_body(name, secret, world))))


async def refresh(http_url: str, joined: Joined, *, timeout: float = TIMEOUT) -> Joined:
    """``joined`` with a fresh connect token and key (``POST /api/connect-token``)."""
    async with httpx.AsyncClient(timeout=timeout) as client:
        answer = _answer(await client.post(http_url.rstrip("/") + "/api/connect-token",
                                           json={"token": joined.token}))
    return joined.with_connect(answer)


def join_sync(http_url: str, name: str, *, secret: str | None = None, timeout: float = TIMEOUT,
              http: httpx.Client | None = None, world: str | None = None) -> Joined:
    """:func:`join` for code that does not run trio; ``http``: a client to reuse (keep-alive)."""
    url = http_url.rstrip("/") + "/api/join"
    if http is not None:
        return _joined(_answer(http.post(url, json=_join_body(name, secret, world), timeout=timeout)))
    with httpx.Client(timeout=timeout) as client:
        return _joined(_answer(client.post(url, json=_join_body(name, secret, world))))
