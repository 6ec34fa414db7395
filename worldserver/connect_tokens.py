"""Connect tokens on the server: handed out by the HTTP join, checked by the UDP handshake.

Job: :class:`ConnectAdmission` issues a player's connect token and key
(``POST /api/join``, ``POST /api/connect-token``; :meth:`~ConnectAdmission.issue`) and decides,
for a UDP connect request, whether its token lets it in (:meth:`~ConnectAdmission.check`): the
token must be one this server issued in this run, presented with the proof of its key (both
``protocol.tokens``), not expired, not used before, and its player must still be logged in
(a live join token in ``worldserver.identity.Identities``). Without a token the request is a
guest on an open server (``net.require_connect_token = false``) and refused otherwise. A token
opens one connection: :meth:`~ConnectAdmission.commit` records it as used until it expires
(a CONNECT repeated for the same connection after a lost ACCEPT never gets here: the endpoint
answers it). The table of used tokens is bounded (:data:`MAX_USED`); when it is full of
unexpired tokens, new connections are refused (``server_full``) rather than a used token let in
again.

Must not: do I/O, read a clock (``now`` is the trio clock, passed in, the same for issuing and
checking), keep a key or an issued token (only the used ones), or log.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import attrs

from protocol import packets as P
from protocol.events import ConnectRequest
from protocol.tokens import ConnectTokens, OpenedToken

__all__ = ["Admitted", "ConnectAdmission", "MAX_USED", "TokenRefused"]

MAX_USED = 100_000  # used tokens remembered (until their expiry) before new ones are refused


@attrs.frozen
class Admitted:
    """A connect request whose token lets it in: the player and the connection's key."""

    identity: int
    name: str
    join_token: bytes  # the player's join token, which the session holds while connected
    key: bytes
    token: bytes
    expires: float  # seconds of the server's clock: the token is used until then


@attrs.frozen
class TokenRefused:
    """Why a connect request may not in: the REFUSE ``reason``, ``counter`` (the suffix of
    ``drop.udp_token_<counter>``) and ``text`` for the player."""

    reason: int
    counter: str
    text: str


REQUIRED = TokenRefused(P.REFUSE_TOKEN_REQUIRED, "required",
                        "this server needs a connect token: join over HTTP first (POST /api/join)")
INVALID = TokenRefused(P.REFUSE_TOKEN_INVALID, "invalid",
                       "connect token not valid here: join over HTTP again")
LOGGED_OUT = TokenRefused(P.REFUSE_TOKEN_INVALID, "logged_out",
                          "the login of this connect token has ended: join over HTTP again")
EXPIRED = TokenRefused(P.REFUSE_TOKEN_EXPIRED, "expired",
                       "connect token expired: get a new one (POST /api/connect-token)")
USED = TokenRefused(P.REFUSE_TOKEN_USED, "used",
                    "connect token already used: get a new one (POST /api/connect-token)")
TABLE_FULL = TokenRefused(P.REFUSE_FULL, "table_full",
                          "too many new connections just now; try again in a minute")


class ConnectAdmission:
    """Connect tokens of one server run (see the module docstring).

    ``identities`` is the server's :class:`~worldserver.identity.Identities` (None: no player
    can log in, so every token is refused as logged out); ``required``: whether a UDP client
    without a token is refused (``net.require_connect_token``).
    """

    def __init__(self, tokens: ConnectTokens, identities, *, required: bool = True,
                 max_used: int = MAX_USED) -> None:
        self.tokens = tokens
        self.identities = identities
        self.required = bool(required)
        self.max_used = int(max_used)
        self._used: OrderedDict[bytes, float] = OrderedDict()  # token -> expiry, oldest first

    @classmethod
    def from_config(cls, config, secret: bytes, identities) -> ConnectAdmission:
        """The admission of a server started with ``secret`` (its ``server.secret`` or the
        random one of this run); tokens of an earlier run never open (a fresh epoch)."""
        tokens = ConnectTokens(secret, config.net.connect_token_lifetime, epoch=os.urandom(16))
        return cls(tokens, identities, required=config.net.require_connect_token)

    def __len__(self) -> int:
        """Used tokens remembered."""
        return len(self._used)

    # -- issuing (HTTP) ---------------------------------------------------------------------
    def issue(self, identity: int, now: float) -> dict:
        """The JSON fields that give identity ``identity`` a connect token: ``connect_token``
        and ``connect_key`` (hex) and ``connect_expires_in`` (seconds)."""
        token, key = self.tokens.issue(identity, now)
        return {"connect_token": token.hex(), "connect_key": key.hex(),
                "connect_expires_in": self.tokens.lifetime}

    def issue_for(self, join_token: str | bytes | None, now: float) -> dict | None:
        """:meth:`issue` for the player a live join token stands for (with its ``name``);
        None when the join token is not live."""
        found = self.identities.identify(join_token) if self.identities is not None else None
        if found is None:
            return None
        identity, name = found
        return {"name": name, **self.issue(identity, now)}

    # -- admitting (UDP) --------------------------------------------------------------------
    def check(self, request: ConnectRequest, now: float) -> Admitted | TokenRefused | None:
        """Whether ``request`` may connect: :class:`Admitted`, a :class:`TokenRefused`, or None
        for a request without a token on an open server (a guest, no key)."""
        if not request.token:
            return REQUIRED if self.required else None
        opened = self.tokens.open(request.token, request.packet, now)
        if not isinstance(opened, OpenedToken):
            return EXPIRED if opened == "expired" else INVALID
        self._sweep(now)
        if opened.token in self._used:
            return USED
        if len(self._used) >= self.max_used:
            return TABLE_FULL
        identities = self.identities
        join_token = identities.token_of(opened.identity) if identities is not None else None
        found = identities.identify(join_token) if join_token is not None else None
        if found is None or found[0] != opened.identity:
            return LOGGED_OUT
        return Admitted(opened.identity, found[1], join_token.encode(), opened.key, opened.token,
                        opened.expires_ms / 1000.0)

    def commit(self, admitted: Admitted) -> None:
        """``admitted`` opened its connection: its token opens no other until it expires."""
        self._used[admitted.token] = admitted.expires

    def _sweep(self, now: float) -> None:
        used = self._used
        # One lifetime for all, and tokens are used soon after they are issued: the order of
        # use is about the order of expiry, and an entry stays at most a lifetime too long.
        while used:
            token, expires = next(iter(used.items()))
            if expires > now:
                break
            del used[token]
