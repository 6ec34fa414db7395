"""The chat's limits: how much a user, a connection and an address may ask, and mutes.

Job: the limits part of :class:`~worldserver.chat.service.ChatService` (a base class of it;
:meth:`ChatLimits._init_limits` makes its state). Every user has a token bucket for messages
and room creations (``chat.rate``/``chat.burst``; errors carry ``retry_after``) and every
client address another (``limits.chat_*``, all its names together: the server's
:class:`~worldserver.limits.AddressLimits`, shared with the transports); a message takes a
token of both or of neither. A connection's other requests (:data:`OPS_RATE`, checked by
``ChatService.handle``) and a user's image uploads (:data:`UPLOAD_RATE`) have buckets of their
own. ``mutes`` says until when a user is muted (``ChatService.mute`` sets it, ``msg.send``
honours it). :meth:`ChatLimits.sweep` forgets full buckets, expired mutes and the moderation's
expired bans every :data:`MAINTENANCE_INTERVAL` seconds.

Admin tokens: a wrong ``admin_token`` in ``hello`` is counted against the connection and
against the client's address (``limits.address_key``: all its sockets together, loopback
included), and its answer is held back in that connection's task only
(``chat.admin_failure_delay``, doubling per failure of the connection). An address that has
given ``chat.admin_max_failures`` wrong tokens is locked out (no token is even compared) until
one is forgiven (``chat.admin_lockout``); a connection at the maximum, or locked out, is closed
with 1008. The guard (``admin_failures``) is shared with the admin API, so guesses at either
token count together.

Must not: keep anything per user, connection or address that no sweep forgets (memory stays
bounded), hold back any task but the refused connection's own, or make buckets of its own
kind (they are worldserver/limits.py's).
"""

from __future__ import annotations

import logging
import math

import trio

from protocol import chat as P
from worldserver.chat.errors import ChatError
from worldserver.chat.peers import Peer
from worldserver.limits import AddressLimits, FailureGuard, TokenBuckets, address_key
from worldserver.logs import LogLimiter, get_logger

__all__ = ["CLOSE_ADMIN_FAILURES", "ChatLimits"]

log = get_logger("worldserver.chat")

OPS_RATE = 20.0  # requests per second one connection may make (besides msg.send's bucket)
OPS_BURST = 100
UPLOAD_RATE = 0.5  # image uploads per second per user
UPLOAD_BURST = 5
MAINTENANCE_INTERVAL = 30.0  # seconds between sweeps of idle buckets, mutes and bans
CLOSE_ADMIN_FAILURES = 1008  # too many wrong admin tokens (policy violation)
REFUSAL_LOG_INTERVAL = 60.0  # at most one log line per kind of refusal this often


class ChatLimits:
    """The limits of :class:`~worldserver.chat.service.ChatService` (see the module docstring).
    Uses the service's ``stats`` and ``moderation``."""

    def _init_limits(self, config, limits: AddressLimits | None, admin_guard: FailureGuard | None) -> None:
        chat = config.chat
        self.admin_token = chat.admin_token
        self.messages = TokenBuckets(chat.rate, chat.burst)  # by user
        # by address, all its names together (limits.chat_*); shared with the transports
        self.limits = limits if limits is not None else AddressLimits(config.limits)
        self.uploads = TokenBuckets(UPLOAD_RATE, UPLOAD_BURST)  # by user
        self.ops = TokenBuckets(OPS_RATE, OPS_BURST)  # by peer number
        # Wrong admin tokens by address key (limits.FailureGuard): admin_max_failures at once,
        # then one per admin_lockout / admin_max_failures seconds. The server shares it with the
        # admin API (worldserver/admin_api.py), so guesses at either token count together.
        self.admin_max_failures = int(chat.admin_max_failures)
        self.admin_failures = admin_guard if admin_guard is not None else FailureGuard.from_settings(chat)
        self.refusal_log = LogLimiter(log, REFUSAL_LOG_INTERVAL)
        self.mutes: dict[str, float] = {}  # user -> muted until (trio clock)

    async def _maintenance_loop(self) -> None:
        while True:
            await trio.sleep(MAINTENANCE_INTERVAL)
            self.sweep(trio.current_time())

    def sweep(self, now: float) -> None:
        """Forget full buckets, expired mutes and kick bans."""
        for buckets in (self.messages, self.uploads, self.ops, self.admin_failures):
            buckets.sweep(now)
        for user in [u for u, until in self.mutes.items() if until <= now]:
            del self.mutes[user]
        self.moderation.sweep(now)

    def _take_message_token(self, peer: Peer) -> None:
        """One message token of the user's bucket (``chat.rate``) and one of its address's
        (``limits.chat_*``, shared by every name from that address); both or neither."""
        now = trio.current_time()
        wait = self.messages.peek(peer.user, now)
        if wait > 0:
            self.stats.incr("drop.chat_rate_limited")
            raise ChatError("rate_limited", "you are sending too fast", wait)
        key = self.limits.key(peer.address)
        wait = self.limits.chat_peek(key, now)
        if wait > 0:
            self.stats.incr("drop.limit_chat_address_rate")
            raise ChatError("rate_limited", "too many messages from your address", wait)
        self.messages.take(peer.user, now)
        self.limits.chat_take(key, now)

    def upload_wait(self, user: str) -> float:
        """0 if ``user`` may upload an image now, else the seconds to wait."""
        wait = self.uploads.take(user, trio.current_time())
        if wait > 0:
            self.stats.incr("drop.chat_upload_rate_limited")
        return wait

    async def _check_admin_token(self, peer: Peer, request: P.Hello) -> None:
        """Return if ``request.admin_token`` is the admin token; else count the failure (this
        connection, its address), hold the answer back in this task, close the connection at
        the limit, and raise the ``forbidden`` error (see the module docstring)."""
        now = trio.current_time()
        key = address_key(getattr(peer, "address", None))
        # A failure counts before the wait, so parallel sockets count at once; nothing is
        # compared while the address is locked out.
        verdict, locked = self.admin_failures.check(key, request.admin_token, self.admin_token, now)
        if verdict == FailureGuard.OK:
            return
        if verdict == FailureGuard.LOCKED_OUT:
            reason = "locked_out"
            self.stats.incr("drop.chat_admin_locked_out")
            message = f"too many wrong admin tokens from your address; try again in {math.ceil(locked)} s"
        else:
            reason = "wrong"
            self.stats.incr("drop.chat_admin_token_wrong")
            message = "wrong admin token"
        peer.admin_failures += 1
        close = locked > 0 or peer.admin_failures >= self.admin_max_failures
        self.refusal_log.log(logging.WARNING, f"admin_{reason}", "admin token refused", reason=reason,
                             peer=peer.key, failures=peer.admin_failures, closing=close)
        await trio.sleep(self.admin_failures.delay(peer.admin_failures))  # this connection only
        if close:
            self.stats.incr("drop.chat_closed_admin_failures")
            peer.send(P.encode_error(request.id, "forbidden", message))
            peer.close(CLOSE_ADMIN_FAILURES, "too many wrong admin tokens")
        raise ChatError("forbidden", message)
