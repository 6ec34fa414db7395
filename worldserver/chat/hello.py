"""The chat's ``hello``: a connection becomes a user's socket, gets its rooms, and later ends.

Job: the ``hello`` handler of :class:`~worldserver.chat.service.ChatService` (a base class of
it). A connection says ``hello`` with the player's join token (``worldserver.identity``: the
same token and nickname as the movement session; the token stays live while the chat is
connected; when the identity logs in again elsewhere the socket is closed with 4002, a kick
closes it with 4001), unless the name is banned or the server is draining
(``worldserver.moderation``); a moderator presents ``chat.admin_token`` too (checked by
worldserver/chat/limits.py). The user is put into its world's public room (a stored
``joined`` notice by ``server`` and a ``room.member`` event the first time) and gets its rooms
(at most :data:`MAX_HELLO_ROOMS` with messages) with their recent history
(``chat.history_on_join``), or exactly what it missed (``since``, at most
:data:`HELLO_SINCE_LIMIT` a room, then ``more``). Its sockets' rooms are subscribed before the
store is read and its events held until the reply, so nothing committed meanwhile is missed.

Must not: reply to or subscribe a connection whose token is unknown, banned or refused, leave
a half-said hello behind (a failed one is undone: :meth:`HelloHandler._drop_identity`), or
send a user's events before its reply.
"""

from __future__ import annotations

import trio

from protocol import chat as P
from worldserver.chat.errors import ChatError
from worldserver.chat.peers import CLOSE_KICKED, CLOSE_REPLACED, Peer
from worldserver.chat.rooms import SERVER_AUTHOR
from worldserver.chat.store import Message
from worldserver.identity import KICKED
from worldserver.moderation import close_reason, kick_text

__all__ = ["HELLO_SINCE_LIMIT", "MAX_HELLO_ROOMS", "HelloHandler"]

MAX_HELLO_ROOMS = 32  # rooms whose messages go into a hello reply (the others: on request)
HELLO_SINCE_LIMIT = 500  # missed messages per room in a hello reply (then ``more``)


class HelloHandler:
    """``hello`` for :class:`~worldserver.chat.service.ChatService` (see the module docstring).
    Uses the rooms (worldserver/chat/rooms.py), the store worker, the limits, the message
    objects (worldserver/chat/message_handlers.py), ``identities`` and ``moderation``."""

    async def _hello(self, peer: Peer, request: P.Hello) -> None:
        if peer.authenticated:
            raise ChatError("conflict", "hello was already said on this connection")
        now = trio.current_time()
        token = request.token
        found = self.identities.identify(token)
        if found is None:
            raise ChatError("not_authenticated", "unknown or expired join token; join again")
        uid, name = found
        peer.public_room = self.world_rooms.get(self.identities.world_for(token), self.public_room)
        refused = self.moderation.join_refusal("chat", name, now)  # banned, or the server is draining
        if refused is not None:
            raise ChatError("forbidden", refused[1], refused[2])
        moderator = False
        if request.admin_token is not None:
            await self._check_admin_token(peer, request)
            moderator = True
        if self.identities.attach(token, peer, lambda reason: self._end_peer(peer, reason)) is None:
            raise ChatError("not_authenticated", "unknown or expired join token; join again")
        peer.user, peer.uid, peer.token, peer.moderator = name, uid, token, moderator
        first = name not in self.user_peers
        self.user_peers.setdefault(name, set()).add(peer)
        peer.hold()  # events from here on go after the reply
        # Subscribe to the rooms the user is already known to be in (other sockets), so that
        # nothing committed while the store is read is missed; the store adds the rest.
        for room_id in self._user_rooms_from(peer, name):
            self._subscribe(name, room_id)
        since = dict(request.since or {})
        try:
            result = await self._db(self._hello_work, uid, name, since, self.wall(), peer.public_room)
        except BaseException:
            if peer.user is not None and not peer.closed:
                self._drop_identity(peer)
            raise
        rooms, joined_public, notice, batches = result
        if peer.closed:  # went away while the store worked
            return
        for room in rooms:
            self._cache(room)
        member_ids = [room.id for room in rooms if room.id in batches or room.id == peer.public_room]
        for room_id in member_ids:
            self._subscribe(name, room_id)
        if first:
            self._presence(name, True, set(member_ids))
        entities = self._entity_names()
        room_list = []
        for room in rooms:
            joined = room.id in peer.rooms
            info = self._room_info(room, joined=joined)
            batch = batches.get(room.id)
            if batch is not None:
                messages, more = batch
                info["messages"] = [self._message(m, entities) for m in messages]
                info["more"] = more
            room_list.append(info)
        self.reply(
            peer, request,
            user=name,
            moderator=moderator,
            entity_id=self._entity_of(token, name),
            public_room=peer.public_room,
            typing_ttl=self.typing_ttl,
            limits={
                "max_message_chars": self.max_chars,
                "rate": self.messages.rate,
                "burst": int(self.messages.burst),
                "max_image_bytes": self.max_image_bytes,
            },
            rooms=room_list,
        )
        self.stats.incr("chat.hellos")
        if joined_public:
            self._member_event(peer.public_room, name, "joined", notice, skip=None)

    def _drop_identity(self, peer: Peer) -> None:
        user = peer.user
        own = self.user_peers.get(user)
        if own is not None:
            own.discard(peer)
            if not own:
                del self.user_peers[user]
        for room_id in list(peer.rooms):
            self.room_peers.get(room_id, set()).discard(peer)
        peer.rooms = set()
        self.identities.detach(peer.token, peer)
        peer.user = peer.uid = None

    def _end_peer(self, peer: Peer, reason: str) -> None:
        """The peer's token stopped working (``identities``): the identity logged in again
        elsewhere, or the token was released or kicked. The close tells the client which (SPEC
        7.8): a kick is 4001 with what the kicked player is told, as the kick's own close of
        the player's sockets says it; a newer login 4002 "signed in elsewhere"."""
        if peer.closed:  # a kick closed it first, with its reason
            return
        self.stats.incr(f"chat.closed_{reason}")
        if reason == KICKED:  # Moderation.kick releasing the token: its text, set while it runs
            peer.close(CLOSE_KICKED, close_reason(self.moderation.kick_text or kick_text("")))
            return
        text = "signed in elsewhere" if reason == "replaced" else "session ended; join again"
        peer.close(CLOSE_REPLACED, text)

    def _hello_work(self, uid: int, user: str, since: dict[int, int], now: float, public_room: int | None = None):
        """In the worker: join the public room of the user's world, list rooms (not other
        worlds' public rooms), read history or what was missed."""
        store = self.store
        public_room = self.public_room if public_room is None else public_room
        joined_public = store.add_member(public_room, uid)
        notice = None
        if joined_public:
            notice = self._append(public_room, SERVER_AUTHOR, "notice",
                                  f"{user} joined", None, None)
        rooms = [r for r in store.list_rooms(uid) if r.id not in self.world_room_ids or r.id == public_room]
        batches: dict[int, tuple[list[Message], bool]] = {}
        filled = 0
        for room in rooms:
            if room.id != public_room and not store.is_member(room.id, uid):
                continue
            if filled >= MAX_HELLO_ROOMS:
                batches[room.id] = ([], True)
                continue
            filled += 1
            if room.id in since:
                page = store.since(room.id, since[room.id], HELLO_SINCE_LIMIT + 1)
                more = len(page) > HELLO_SINCE_LIMIT
                batches[room.id] = (page[:HELLO_SINCE_LIMIT], more)
            elif self.history_on_join > 0:
                page = store.history(room.id, None, self.history_on_join + 1)
                more = len(page) > self.history_on_join
                batches[room.id] = (page[1:] if more else page, more)
            else:
                batches[room.id] = ([], True)
        rooms.sort(key=lambda r: (r.id != public_room, r.id))
        return rooms, joined_public, notice, batches
