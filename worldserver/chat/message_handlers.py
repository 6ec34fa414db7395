"""The chat's message requests (``msg.send``/``history``/``since``/``search``/``answer``/``delete``) and message objects.

Job: the message handlers of :class:`~worldserver.chat.service.ChatService` (a base class of
it). A member sends a message of a kind (``protocol.chat``: text, question, image, notice) to a
room it is in: not while muted (``drop.chat_muted``), notices only from the room's owner or a
moderator, images only once uploaded (``POST /api/chat/images``), at most
``chat.max_message_chars``, one message token (worldserver/chat/limits.py); the
acknowledgement goes out after the store committed the message, and a repeated ``client_id``
gets the first message back. Anyone who may read a room reads its history, what came after an
id, and searches it; its owner or a moderator marks questions answered; the author, the owner
or a moderator deletes a message. Message objects carry the author's avatar (``entity_id``)
when the author is in a world (found through the worlds' sessions).

Must not: acknowledge a message before the store committed it, send its event out of commit
order (the store worker sends it), or read the store on the trio thread.
"""

from __future__ import annotations

import trio

from protocol import chat as P
from worldserver.chat.errors import ChatError
from worldserver.chat.peers import Peer
from worldserver.chat.rooms import SERVER_AUTHOR
from worldserver.chat.store import Message

__all__ = ["MessageHandlers"]


class MessageHandlers:
    """The message requests and message objects of :class:`~worldserver.chat.service.ChatService`
    (see the module docstring). Use the rooms (worldserver/chat/rooms.py), the store worker, the
    limits, ``sim`` (the worlds, for avatars), ``images`` and the typing indicators."""

    async def _msg_send(self, peer: Peer, request: P.MsgSend) -> None:
        user = peer.user
        room = await self._room(request.room)
        if room.id not in peer.rooms:
            raise ChatError("forbidden", "join the room before writing in it")
        now = trio.current_time()
        muted = self.mutes.get(user, 0.0) - now
        if muted > 0:
            self.stats.incr("drop.chat_muted")
            raise ChatError("muted", "you are muted", muted)
        kind = request.kind
        if kind == "notice" and not (peer.moderator or self._owns(peer.uid, room)):
            raise ChatError("forbidden", "only the room's owner or a moderator may post notices")
        text = request.text or ""
        if len(text) > self.max_chars:
            raise ChatError("too_long", f"text: longer than {self.max_chars} characters")
        if kind != "image" and not text.strip():
            raise ChatError("bad_field", "text: must not be empty")
        image = request.image
        if kind == "image" and self.images is None:
            raise ChatError("forbidden", "images are not enabled")
        self._take_message_token(peer)
        images = self.images
        entity_id = self._entity_of(peer.token, user)

        def work():
            if image is not None and not images.exists(image):
                return None
            return self._append(room.id, user, kind, text, image, request.client_id,
                                skip=peer, entity_id=entity_id)

        message = await self._db(work)
        if message is None:
            raise ChatError("not_found", "no such image; upload it first (POST /api/chat/images)")
        self.stats.incr("chat.messages")
        if (room.id, user) in self.typing:
            del self.typing[(room.id, user)]
        self.reply(peer, request, room=room.id, message=self._message(message, entity_id=entity_id))

    async def _msg_history(self, peer: Peer, request: P.MsgHistory) -> None:
        limit, before = request.limit, request.before
        # One extra to know whether there is more (and one for a store that counts ``before``
        # itself in: it is filtered out).
        extra = 1 if before is None else 2
        _, page = await self._readable(
            peer, request.room, lambda store, rid: store.history(rid, before, limit + extra))
        if before is not None:
            page = [m for m in page if m.id < before][-(limit + 1):]
        more = len(page) > limit
        if more:
            page = page[1:]
        self.reply(peer, request, room=request.room, messages=self._messages(page), more=more)

    async def _msg_since(self, peer: Peer, request: P.MsgSince) -> None:
        limit = request.limit
        _, page = await self._readable(
            peer, request.room, lambda store, rid: store.since(rid, request.after, limit + 1))
        more = len(page) > limit
        self.reply(peer, request, room=request.room, messages=self._messages(page[:limit]), more=more)

    async def _msg_search(self, peer: Peer, request: P.MsgSearch) -> None:
        _, found = await self._readable(
            peer, request.room, lambda store, rid: store.search(rid, request.query, request.limit))
        self.reply(peer, request, room=request.room, messages=self._messages(found))

    async def _msg_answer(self, peer: Peer, request: P.MsgAnswer) -> None:
        room = await self._room(request.room)
        if not (peer.moderator or self._owns(peer.uid, room)):
            raise ChatError("forbidden", "only the room's owner or a moderator may mark answers")

        def work():
            message = self.store.get_message(room.id, request.message)
            if message is None or message.deleted:
                return "missing"
            if message.kind != "question":
                return "kind"
            return self.store.mark_answered(room.id, request.message)

        result = await self._db(work)
        if result == "missing":
            raise ChatError("not_found", "no such message in this room")
        if result == "kind":
            raise ChatError("conflict", "only questions can be answered")
        if result is False:
            raise ChatError("conflict", "the question is already answered")
        self._broadcast(room.id, P.encode_event("message.answered", room=room.id,
                                                message=request.message, by=peer.user), skip=peer)
        self.reply(peer, request, room=room.id, message=request.message)

    async def _msg_delete(self, peer: Peer, request: P.MsgDelete) -> None:
        room = await self._room(request.room)
        user = peer.user
        privileged = peer.moderator or self._owns(peer.uid, room)
        if not privileged and room.id not in peer.rooms:
            raise ChatError("forbidden", "you may not delete messages here")

        def work():
            message = self.store.get_message(room.id, request.message)
            if message is None or message.deleted:
                return "missing"
            if not privileged and message.author != user:
                return "forbidden"
            return self.store.delete_message(room.id, request.message)

        result = await self._db(work)
        if result == "missing" or result is False:
            raise ChatError("not_found", "no such message in this room")
        if result == "forbidden":
            raise ChatError("forbidden", "only moderators, the room's owner and the author may delete it")
        self.stats.incr("chat.deleted")
        self._broadcast(room.id, P.encode_event("message.deleted", room=room.id,
                                                message=request.message, by=user), skip=peer)
        self.reply(peer, request, room=room.id, message=request.message)

    # -- message objects ---------------------------------------------------------------

    def _sessions(self):
        sims = getattr(self.sim, "sims", None)  # a server hosting several worlds: all of them
        if sims is not None:
            return [session for sim in sims.values() for session in sim.sessions]
        return getattr(self.sim, "sessions", None) or ()

    def _entity_of(self, token: str | None, name: str | None) -> int | None:
        """The entity id of the avatar joined with ``token`` (or named ``name``), if any."""
        if not token and not name:
            return None
        raw = token.encode() if token else None
        fallback = None
        for session in self._sessions():
            if raw is not None and getattr(session, "token", None) == raw:
                return int(session.entity_id)
            if fallback is None and name and getattr(session, "name", None) == name:
                fallback = int(session.entity_id)
        return fallback

    def _entity_names(self) -> dict[str, int]:
        return {s.name: int(s.entity_id) for s in self._sessions() if getattr(s, "name", "")}

    def _message(self, m: Message, entities: dict[str, int] | None = None,
                 entity_id: int | None = None) -> dict:
        if entity_id is None and m.author != SERVER_AUTHOR:
            if entities is None:
                entity_id = self._entity_of(None, m.author)
            else:
                entity_id = entities.get(m.author)
        obj = P.message_object(m.id, m.ts, m.author, m.kind, m.text, m.image, m.answered,
                               entity_id, m.deleted)
        if m.client_id is not None:
            obj["client_id"] = m.client_id
        return obj

    def _messages(self, messages: list[Message]) -> list[dict]:
        if not messages:
            return []
        entities = self._entity_names()
        return [self._message(m, entities) for m in messages]
