"""The chat's typing indicators and moderator requests (``typing``, ``mod.mute``, ``mod.kick``).

Job: the typing and moderation handlers of :class:`~worldserver.chat.service.ChatService` (a
base class of it; :meth:`ModerationHandlers._init_typing` makes the typing state). Typing
indicators are throttled (one per :data:`TYPING_MIN_INTERVAL` per user and room; more are
answered ``ignored`` and counted ``drop.chat_typing_throttled``), expire after
``chat.typing_ttl`` (swept every :data:`TYPING_POLL` seconds) and are never stored. A
moderator (``chat.admin_token`` in hello) mutes a user (``ChatService.mute``, the operator's
too) or kicks one: the same kick as the admin API's (worldserver/moderation.py: chat sockets
closed, avatar out of the world, the name refused for :data:`KICK_BAN_SECONDS`).

Must not: store a typing indicator, keep one past its expiry, or kick other than through
worldserver/moderation.py.
"""

from __future__ import annotations

from typing import Any

import trio

from protocol import chat as P
from worldserver.chat.errors import ChatError
from worldserver.chat.peers import Peer

__all__ = ["KICK_BAN_SECONDS", "TYPING_MIN_INTERVAL", "TYPING_POLL", "ModerationHandlers"]

KICK_BAN_SECONDS = 60.0  # a kicked user cannot say hello again for this long
TYPING_MIN_INTERVAL = 1.0  # at most one typing indicator per second per user and room
TYPING_POLL = 0.25  # seconds between two sweeps for expired typing indicators


class ModerationHandlers:
    """Typing and moderator requests of :class:`~worldserver.chat.service.ChatService` (see the
    module docstring). Use the rooms' broadcast (worldserver/chat/rooms.py), ``mute`` and
    ``moderation``."""

    def _init_typing(self, chat) -> None:
        self.typing_ttl = float(chat.typing_ttl)
        self.typing: dict[tuple[int, str], list[float]] = {}  # (room, user) -> [expires, sent]

    # -- typing ------------------------------------------------------------------------

    async def _typing(self, peer: Peer, request: P.Typing) -> None:
        user = peer.user
        room_id = request.room
        if room_id not in peer.rooms:
            raise ChatError("forbidden", "you are not a member of this room")
        now = trio.current_time()
        key = (room_id, user)
        entry = self.typing.get(key)
        if not request.active:
            if entry is not None:
                del self.typing[key]
                self._typing_event(room_id, user, False)
            self.reply(peer, request)
            return
        if entry is not None and now - entry[1] < TYPING_MIN_INTERVAL:
            self.stats.incr("drop.chat_typing_throttled")
            self.reply(peer, request, ignored=True)
            return
        self.typing[key] = [now + self.typing_ttl, now]
        self._typing_event(room_id, user, True)
        self.reply(peer, request)

    def _typing_event(self, room_id: int, user: str, active: bool) -> None:
        fields: dict[str, Any] = {"room": room_id, "user": user, "active": active}
        if active:
            fields["ttl"] = self.typing_ttl
        self._broadcast(room_id, P.encode_event("typing", **fields), skip_user=user)

    async def _typing_loop(self) -> None:
        while True:
            await trio.sleep(TYPING_POLL)
            now = trio.current_time()
            expired = [key for key, (expires, _) in self.typing.items() if expires <= now]
            for room_id, user in expired:
                del self.typing[(room_id, user)]
                self.stats.incr("chat.typing_expired")
                self._typing_event(room_id, user, False)

    # -- moderation --------------------------------------------------------------------

    async def _mod_mute(self, peer: Peer, request: P.ModMute) -> None:
        if not peer.moderator:
            raise ChatError("forbidden", "moderators only (present the admin token in hello)")
        target = self._user_name(request.user) or request.user
        self.mute(target, request.seconds, by=peer.user)
        self.reply(peer, request, user=target, seconds=request.seconds)

    async def _mod_kick(self, peer: Peer, request: P.ModKick) -> None:
        """The same kick as the admin API's (worldserver/moderation.py): chat sockets closed,
        avatar out of the world, the name refused for KICK_BAN_SECONDS."""
        if not peer.moderator:
            raise ChatError("forbidden", "moderators only (present the admin token in hello)")
        target = self._user_name(request.user) or request.user
        now = trio.current_time()
        result = self.moderation.kick(target, reason="kicked by a moderator", ban=KICK_BAN_SECONDS, now=now,
                                      by=peer.user or "")
        if result is None:  # not here now: still refused when it comes
            self.moderation.ban_name(target, KICK_BAN_SECONDS, now)
        self.reply(peer, request, user=result.name if result else target,
                   closed=result.chat_sockets if result else 0)
