"""Joining as a name that belongs to its owner: the logic of ``POST /api/join``.

Job: :meth:`Accounts.join` turns a nickname -- and, from a browser that joined before, the
secret that join gave it -- into a session token (``worldserver.identity.Identities``):

- a name nobody holds becomes a new *identity* in the chat database (the same SQLite file as
  the chat, through the chat service's store worker): a stable id, the name, and the SHA-256
  of a fresh random secret; the secret itself is in the answer, once, and nowhere else;
- a name that is held is given only to the caller presenting its secret (compared in constant
  time); the identity gets a fresh token and its previous one stops working, which ends its
  avatar and chat sockets (one identity, one login). Without the right secret the answer is a
  409 ``name_taken``: a name is never handed to whoever asks next, whether its token expired,
  was evicted or the server restarted. A lost secret means a new name;
- an identity made by the upgrade of an old database (names without secrets) may be taken once
  by whoever asks for it only when it holds nothing anyone could take: no room owned, no private
  room joined or invited to (``ChatStore.claim_identity``); the others stay locked.

Limits: new identities per client address (``limits.names_per_hour``, a token bucket per
address key of ``worldserver.limits``, trusted networks exempt) and in all
(``limits.max_names``); the bucket table is bounded by ``limits.TokenBuckets``. Every refusal is
a :class:`JoinRefused` (HTTP status, code, reason) and counted: ``drop.join_*`` and
``drop.limit_new_names_address`` (docs/architecture.md); successes count ``identity.created``,
``identity.reclaimed`` and ``identity.claimed``.

Must not: know HTTP (the route turns JoinRefused into a response), run SQL (only ``ChatStore``
methods, in the store's worker), log or keep a secret, or answer a name's owner question from
memory: the database decides.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from worldserver.chat.errors import ChatError
from worldserver.chat.store import ChatStore, StoreConflict
from worldserver.identity import (
    SECRET_LENGTH,
    Identities,
    IdentitiesFull,
    NameRejected,
    hash_secret,
    new_secret,
    normalize_name,
    secret_matches,
    user_key,
    valid_secret,
)
from worldserver.limits import AddressLimits, TokenBuckets
from worldserver.stats import Stats

__all__ = ["Accounts", "JoinRefused", "Joined"]

SECONDS_PER_HOUR = 3600.0


class JoinRefused(Exception):
    """A join that is refused: ``status`` (HTTP), ``code`` (machine-readable), ``reason`` (a
    sentence for the player) and, for a rate limit, ``retry_after`` seconds."""

    def __init__(self, status: int, code: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.retry_after = retry_after


@attrs.frozen
class Joined:
    token: str  # the session token (join token) for every transport and the chat
    name: str  # the name as the identity holds it
    identity: int
    secret: str | None  # only when the identity is new (or newly claimed): shown once

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"token": self.token, "name": self.name, "id": self.identity}
        if self.secret is not None:
            body["secret"] = self.secret
        return body


StoreCall = Callable[[Callable[[ChatStore], Any]], Awaitable[Any]]


class Accounts:
    """Joins against the identities of the chat database (see the module docstring).

    ``store_call(fn)`` runs ``fn(store)`` in the store's worker thread and returns its result
    (``ChatService.call_store``); it raises ``ChatError`` when the store is not available.
    ``clock`` is the trio clock for the rate limit, ``wall`` the time stored as ``created``.
    """

    def __init__(
        self,
        identities: Identities,
        store_call: StoreCall,
        *,
        stats: Stats | None = None,
        limits: AddressLimits | None = None,
        names_per_hour: int = 20,
        max_names: int = 1_000_000,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.identities = identities
        self._store_call = store_call
        self.stats = stats if stats is not None else Stats()
        self.limits = limits
        self.new_names = (TokenBuckets(names_per_hour / SECONDS_PER_HOUR, names_per_hour)
                          if names_per_hour > 0 else None)
        self.max_names = int(max_names)
        self.wall = wall
        self._count: int | None = None  # identities in the store, read once, then counted

    @classmethod
    def from_config(cls, config, identities: Identities, chat, stats: Stats | None = None,
                    limits: AddressLimits | None = None) -> Accounts:
        """The accounts of a server whose chat service (``worldserver.chat.service``) holds
        the database; ``limits`` the server's shared AddressLimits (None: its own)."""
        settings = config.limits
        return cls(
            identities,
            chat.call_store,
            stats=stats,
            limits=limits if limits is not None else AddressLimits(settings),
            names_per_hour=settings.names_per_hour,
            max_names=settings.max_names,
        )

    async def join(self, raw_name: object, secret: object = None, address: str | None = None,
                   now: float | None = None) -> Joined:
        """A session token for ``raw_name`` (see the module docstring); raises JoinRefused.

        ``secret`` is the secret of an earlier join (or None), ``address`` the client's IP
        address (for the per-address limit), ``now`` the trio clock (default: now).
        """
        try:
            name = normalize_name(raw_name)
        except NameRejected as exc:
            self.stats.incr("drop.join_bad_name")
            raise JoinRefused(400, "bad_name", exc.reason) from None
        if secret is not None and not valid_secret(secret):
            self.stats.incr("drop.join_bad_secret")
            raise JoinRefused(400, "bad_secret",
                              f"secret: expected the {SECRET_LENGTH}-character secret of an earlier join")
        key = user_key(name)
        held = await self._store(lambda store: store.identity_by_key(key))
        if held is not None:
            if secret is not None and secret_matches(secret, held.secret_hash):
                token = self._issue(held.id, held.name)
                self.stats.incr("identity.reclaimed")
                return Joined(token, held.name, held.id, None)
            if held.secret_hash is None:  # from an upgraded database: claimable if it holds nothing
                fresh = new_secret()
                if await self._store(lambda store: store.claim_identity(held.id, hash_secret(fresh))):
                    token = self._issue(held.id, held.name)
                    self.stats.incr("identity.claimed")
                    return Joined(token, held.name, held.id, fresh)
            self.stats.incr("drop.join_wrong_secret" if secret is not None else "drop.join_name_taken")
            raise JoinRefused(409, "name_taken", f"the name {held.name!r} belongs to someone else;"
                              " choose another name")
        return await self._create(name, key, address, trio.current_time() if now is None else now)

    async def _create(self, name: str, key: str, address: str | None, now: float) -> Joined:
        limits = self.limits
        address_key = limits.key(address) if limits is not None else None
        if address_key is not None and self.new_names is not None:
            wait = self.new_names.take(address_key, now)
            if wait > 0:
                self.stats.incr("drop.limit_new_names_address")
                raise JoinRefused(429, "rate_limited", "too many new names from your address; try"
                                  " again later or take back a name you joined with before", wait)
        if self._count is None:
            self._count = await self._store(lambda store: store.count_identities())
        if self._count >= self.max_names:
            self.stats.incr("drop.join_names_full")
            raise JoinRefused(503, "full", "the server keeps no more new names; try again later")
        secret = new_secret()
        created = self.wall()
        try:
            identity = await self._store(
                lambda store: store.create_identity(name, key, hash_secret(secret), created))
        except StoreConflict:  # someone took the name between the look-up and now
            self.stats.incr("drop.join_name_taken")
            raise JoinRefused(409, "name_taken", f"the name {name!r} belongs to someone else;"
                              " choose another name") from None
        self._count += 1
        token = self._issue(identity.id, identity.name)
        self.stats.incr("identity.created")
        return Joined(token, identity.name, identity.id, secret)

    def _issue(self, identity: int, name: str) -> str:
        try:
            return self.identities.issue(identity, name)
        except IdentitiesFull as exc:
            self.stats.incr("drop.join_tokens_full")
            raise JoinRefused(503, "full", exc.reason) from None

    async def _store(self, fn: Callable[[ChatStore], Any]) -> Any:
        try:
            return await self._store_call(fn)
        except ChatError as exc:
            self.stats.incr("drop.join_store_unavailable")
            raise JoinRefused(503, "unavailable", exc.message) from None
