"""The chat's room requests: ``rooms.list``, ``room.create``/``delete``/``invite``/``join``/``leave``/``members``.

Job: the room handlers of :class:`~worldserver.chat.service.ChatService` (a base class of it).
They check who may do what: anyone may make a room (at most :data:`MAX_OWNED_ROOMS` each; it
takes a message token), its owner or a moderator may delete it, its members or a moderator
may invite to it (invitations go to identities: a name nobody holds gets none), anyone may join a room that is
not private, an invited user or its owner or a moderator a private one; no one may delete or
leave the public room or see another world's. Joining and leaving produce a stored ``notice``
by ``server`` and a ``room.member`` event to the room.

Must not: subscribe a socket after the store call that makes it a member (it would miss what
was committed meanwhile: subscribe first, undo on refusal), or reply before the store has
committed what the reply says.
"""

from __future__ import annotations

from protocol import chat as P
from worldserver.chat.errors import ChatError
from worldserver.chat.peers import Peer
from worldserver.chat.rooms import SERVER_AUTHOR
from worldserver.chat.store import StoreConflict
from worldserver.identity import user_key

__all__ = ["MAX_OWNED_ROOMS", "RoomHandlers"]

MAX_OWNED_ROOMS = 20  # rooms one user may own


class RoomHandlers:
    """The room requests of :class:`~worldserver.chat.service.ChatService` (see the module
    docstring). Use the rooms (worldserver/chat/rooms.py), the store worker, the limits, the
    message objects (worldserver/chat/message_handlers.py) and the typing indicators."""

    async def _rooms_list(self, peer: Peer, request: P.RoomsList) -> None:
        rooms = await self._db(self.store.list_rooms, peer.uid)
        rooms = [r for r in rooms if not self._world_room_forbidden(peer, r.id)]
        for room in rooms:
            self._cache(room)
        rooms.sort(key=lambda r: (r.id != peer.public_room, r.id))
        self.reply(peer, request, rooms=[self._room_info(r, joined=r.id in peer.rooms) for r in rooms])

    async def _room_create(self, peer: Peer, request: P.RoomCreate) -> None:
        self._take_message_token(peer)
        user, uid = peer.user, peer.uid

        def work():
            store = self.store
            owned = sum(1 for r in store.list_rooms(uid) if r.owner_id == uid)
            if owned >= MAX_OWNED_ROOMS:
                return None
            room = store.create_room(request.name, uid, request.private, self.wall())
            store.add_member(room.id, uid)
            return room

        try:
            room = await self._db(work)
        except StoreConflict:
            raise ChatError("conflict", f"a room named {request.name!r} exists") from None
        if room is None:
            raise ChatError("forbidden", f"you own {MAX_OWNED_ROOMS} rooms already")
        self._cache(room)
        self._subscribe(user, room.id)
        self.stats.incr("chat.rooms_created")
        self.reply(peer, request, room=self._room_info(room, joined=True))

    async def _room_delete(self, peer: Peer, request: P.RoomDelete) -> None:
        room = await self._room(request.room)
        if room.id in self.world_room_ids:
            raise ChatError("forbidden", "the public room cannot be deleted")
        if not (peer.moderator or self._owns(peer.uid, room)):
            raise ChatError("forbidden", "only the room's owner or a moderator may delete it")
        await self._db(self.store.delete_room, room.id)
        self._rooms.pop(room.id, None)
        frame = P.encode_event("room.deleted", room=room.id, by=peer.user)
        self._broadcast(room.id, frame, skip=peer)
        for other in self.room_peers.pop(room.id, set()):
            other.rooms.discard(room.id)
        for key in [k for k in self.typing if k[0] == room.id]:
            del self.typing[key]
        self.reply(peer, request, room=room.id)

    async def _room_invite(self, peer: Peer, request: P.RoomInvite) -> None:
        room = await self._room(request.room)
        if not (peer.moderator or room.id in peer.rooms):
            raise ChatError("forbidden", "only members of a room may invite to it")
        target = self._user_name(request.user)
        found = None if target is None else await self._db(self._invite_work, room.id, target)
        if found is None:  # invitations go to identities: a name nobody holds gets none
            raise ChatError("not_found", "no such user")
        target, member = found
        if member:
            self.reply(peer, request, room=room.id, user=target, member=True)
            return
        frame = P.encode_event("invited", room=self._room_info(room, joined=False), by=peer.user)
        for other in list(self.user_peers.get(target, ())):
            other.send(frame)
        self.stats.incr("chat.invites")
        self.reply(peer, request, room=room.id, user=target, member=False)

    def _invite_work(self, room_id: int, name: str) -> tuple[str, bool] | None:
        """In the worker: invite the identity holding ``name``; (its name, already a member),
        or None when no identity holds the name."""
        store = self.store
        identity = store.identity_by_key(user_key(name))
        if identity is None:
            return None
        if store.is_member(room_id, identity.id):
            return identity.name, True
        store.add_invite(room_id, identity.id)
        return identity.name, False

    async def _room_join(self, peer: Peer, request: P.RoomJoin) -> None:
        user, uid = peer.user, peer.uid
        room = await self._room(request.room)
        if self._world_room_forbidden(peer, room.id):
            raise ChatError("forbidden", "that is another world's public room")
        if room.id in peer.rooms:
            messages = await self._db(self.store.history, room.id, None, self.history_on_join)
            self.reply(peer, request, room=self._room_info(room, joined=True),
                       messages=self._messages(messages), joined=False)
            return
        allowed_always = peer.moderator or self._owns(uid, room) or not room.private
        peer.hold()
        self._subscribe(user, room.id)  # before the store call: nothing committed meanwhile is missed

        def work():
            store = self.store
            if not allowed_always and not store.is_invited(room.id, uid):
                return None
            added = store.add_member(room.id, uid)
            notice = None
            if added:
                notice = self._append(room.id, SERVER_AUTHOR, "notice", f"{user} joined",
                                      None, None)
            history = store.history(room.id, None, self.history_on_join) if self.history_on_join else []
            return added, notice, history

        try:
            result = await self._db(work)
        except BaseException:
            self._unsubscribe(user, room.id)
            raise
        if result is None:
            self._unsubscribe(user, room.id)
            raise ChatError("forbidden", "this room is private; you need an invitation")
        added, notice, history = result
        self.reply(peer, request, room=self._room_info(room, joined=True),
                   messages=self._messages(history), joined=added)
        if added:
            self._member_event(room.id, user, "joined", notice, skip=None)

    async def _room_leave(self, peer: Peer, request: P.RoomLeave) -> None:
        user = peer.user
        room = await self._room(request.room)
        if room.id == peer.public_room:
            raise ChatError("forbidden", "everyone stays in the public room")
        if room.id not in peer.rooms:
            raise ChatError("conflict", "you are not a member of this room")

        def work():
            store = self.store
            removed = store.remove_member(room.id, peer.uid)
            notice = None
            if removed:
                notice = self._append(room.id, SERVER_AUTHOR, "notice", f"{user} left",
                                      None, None)
            return removed, notice

        removed, notice = await self._db(work)
        if (room.id, user) in self.typing:
            del self.typing[(room.id, user)]
            self._typing_event(room.id, user, False)
        # The leaver's sockets hear it too (then stop hearing the room).
        self._member_event(room.id, user, "left", notice, skip=None)
        self._unsubscribe(user, room.id)
        self.reply(peer, request, room=room.id, left=removed)

    async def _room_members(self, peer: Peer, request: P.RoomMembers) -> None:
        room, members = await self._readable(peer, request.room, lambda store, rid: store.members(rid))
        entities = self._entity_names()
        listed = []
        for name in members:
            item = {"user": name, "online": name in self.user_peers}
            if name == room.owner:
                item["owner"] = True
            if name in entities:
                item["entity_id"] = entities[name]
            listed.append(item)
        self.reply(peer, request, room=room.id, members=listed)
