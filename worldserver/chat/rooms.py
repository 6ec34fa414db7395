"""The chat's rooms on the trio thread: public rooms, the room cache, subscribers, presence, broadcast.

Job: the rooms part of :class:`~worldserver.chat.service.ChatService` (a base class of it;
:meth:`Rooms._init_rooms` makes its state):

- the public rooms: every hosted world has one, the default world's is ``chat.public_room``,
  the others' ``<chat.public_room>@<world id>`` (made when missing; :meth:`Rooms.open_world_room`
  for a world opened while the server runs). A user is put in the one of the world it joined
  and never sees, joins or reads another world's; no one may delete or leave them;
- a cache of rooms by id (at most :data:`MAX_ROOM_CACHE`), read through the store worker when
  missing, and who may read a room (a private one: its members, invited users, its owner and
  moderators; any other: anyone, but a world's public room only its world's players);
- subscriptions: which sockets get a room's events (``room_peers``, ``Peer.rooms``) and which
  sockets a user has (``user_peers``); broadcast of one encoded frame to a room's sockets, and
  ``room.member`` events.

Presence: ``presence`` events go to the members of the user's rooms, through rooms of at most
:data:`PRESENCE_ROOM_LIMIT` connections (a crowded public room would make every arrival cost
a frame to every socket); ``room.members`` always says who is online.

Users: rooms are owned, joined and invited to by *identity id* (``Peer.uid``; the store keeps
them so), never by name, so a name cannot carry someone else's rooms; presence, typing, mutes
and kicks go by name (a name belongs to one identity for good).

Must not: call the store but through the store worker (``_db``, or in its thread), encode a
frame once per recipient, await in the middle of a broadcast, or send presence through rooms
over the limit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from protocol import chat as P
from worldserver.chat.errors import ChatError
from worldserver.chat.peers import Peer
from worldserver.chat.store import Message, Room, StoreConflict
from worldserver.identity import NameRejected, normalize_name

__all__ = ["MAX_ROOM_CACHE", "PRESENCE_ROOM_LIMIT", "SERVER_AUTHOR", "Rooms"]

SERVER_AUTHOR = "server"  # author of join/leave notices; owner of the public room
MAX_ROOM_CACHE = 10_000
PRESENCE_ROOM_LIMIT = 200  # presence events only through rooms with at most this many sockets


class Rooms:
    """The rooms of :class:`~worldserver.chat.service.ChatService` (see the module docstring).
    Uses the service's ``stats``, ``wall``, ``store`` and ``_db`` (worldserver/chat/store_worker.py)."""

    def _init_rooms(self, chat) -> None:
        self.public_room_name = chat.public_room
        self.public_room: int | None = None  # the default world's public room
        # Every hosted world has a public room: the default world's is chat.public_room, the
        # others' "<chat.public_room>@<world id>". A user is in the one of the world it joined
        # and never sees, joins or reads another world's (see _world_room_forbidden).
        self.world_rooms: dict[str, int] = {}  # world id -> its public room
        self.world_room_ids: set[int] = set()
        self.room_peers: dict[int, set[Peer]] = {}
        self.user_peers: dict[str, set[Peer]] = {}
        self._rooms: OrderedDict[int, Room] = OrderedDict()  # cache of rooms by id

    # -- public rooms ------------------------------------------------------------------

    def _ensure_public_room(self, name: str | None = None) -> Room:
        """The server's room named ``name`` (default ``chat.public_room``), made if missing; a
        user's room of that name is left alone and ``name~N`` taken instead."""
        store = self.store
        name = name or self.public_room_name
        for attempt in range(1, 100):
            wanted = name if attempt == 1 else f"{name}~{attempt}"
            room = store.room_by_name(wanted)
            if room is None:
                try:
                    room = store.create_room(wanted, None, False, self.wall())
                except StoreConflict:
                    room = store.room_by_name(wanted)
            if room is not None and room.owner_id is None:
                return room
        raise ChatError("internal", f"no free name for the public room {name!r}")

    async def open_world_room(self, world_id: str) -> int:
        """The public room of a world opened while the server runs (worldserver/world_admin.py):
        ``<chat.public_room>@<world id>``, made if missing (a world opened again gets its room
        and history back); returns its id. ChatError "internal" while the store is not open."""
        if world_id in self.world_rooms:
            return self.world_rooms[world_id]
        if not self.ready.is_set() or self.store is None:
            raise ChatError("internal", "chat is starting; retry in a moment")
        room = await self._db(self._ensure_public_room, f"{self.public_room_name}@{world_id}")
        self._cache(room)
        self.world_rooms[world_id] = room.id
        self.world_room_ids = self.world_room_ids | {room.id}
        return room.id

    def _world_room_forbidden(self, peer: Peer, room_id: int) -> bool:
        """Another world's public room, which this peer's user may not see, join or read."""
        return room_id in self.world_room_ids and room_id != peer.public_room

    # -- the room cache and who may read a room ----------------------------------------

    def _cache(self, room: Room) -> None:
        self._rooms[room.id] = room
        self._rooms.move_to_end(room.id)
        while len(self._rooms) > MAX_ROOM_CACHE:
            self._rooms.popitem(last=False)

    async def _room(self, room_id: int) -> Room:
        room = self._rooms.get(room_id)
        if room is None:
            room = await self._db(self.store.get_room, room_id)
            if room is None:
                raise ChatError("not_found", "no such room")
            self._cache(room)
        return room

    async def _room_named(self, room: int | str) -> Room:
        """The room with id ``room`` (an int, or a text of digits), else named ``room``."""
        if isinstance(room, int) or (isinstance(room, str) and room.isdigit()):
            return await self._room(int(room))
        found = await self._db(self.store.room_by_name, room)
        if found is None:
            raise ChatError("not_found", "no such room")
        self._cache(found)
        return found

    def _owns(self, uid: int | None, room: Room) -> bool:
        """Whether identity ``uid`` owns the room (the server's rooms are no one's)."""
        return uid is not None and room.owner_id == uid

    async def _readable(self, peer: Peer, room_id: int, read: Callable) -> tuple[Room, Any]:
        """The room and ``read(store, room_id)`` if ``peer`` may read it; else an error."""
        if self._world_room_forbidden(peer, room_id):
            raise ChatError("forbidden", "that is another world's public room")
        uid = peer.uid
        member = room_id in peer.rooms
        moderator = peer.moderator

        def work():
            store = self.store
            room = store.get_room(room_id)
            if room is None:
                return None, None
            if room.private and not (member or moderator or self._owns(uid, room)
                                     or store.is_member(room_id, uid)
                                     or store.is_invited(room_id, uid)):
                return room, None
            return room, (read(store, room_id),)

        room, data = await self._db(work)
        if room is None:
            raise ChatError("not_found", "no such room")
        self._cache(room)
        if data is None:
            raise ChatError("forbidden", "this room is private")
        return room, data[0]

    def _room_info(self, room: Room, joined: bool) -> dict:
        extra: dict[str, Any] = {"joined": joined}
        if room.id in self.world_room_ids or room.id == self.public_room:
            extra["public"] = True
        return P.room_object(room.id, room.name, room.owner or SERVER_AUTHOR, room.private, **extra)

    async def rooms_online(self) -> list[dict]:
        """Every public room and every room a socket is in: ``{"id", "name", "private",
        "public", "sockets", "users"}`` (for the admin API)."""
        out = []
        for room_id in sorted(self.world_room_ids | {self.public_room} | set(self.room_peers)):
            if room_id is None:
                continue
            try:
                room = await self._room(room_id)
            except ChatError:
                continue
            peers = self.room_peers.get(room_id, ())
            out.append({"id": room.id, "name": room.name, "private": room.private,
                        "public": room.id in self.world_room_ids or room.id == self.public_room,
                        "sockets": len(peers), "users": len({p.user for p in peers if p.user})})
        return out

    # -- subscribers, presence, broadcast ----------------------------------------------

    def _user_name(self, raw: str) -> str | None:
        """The canonical name of a user: an online user matching ignoring case, else the
        name as identities normalize it; None if it cannot be a player's name."""
        folded = raw.casefold()
        for name in self.user_peers:
            if name.casefold() == folded:
                return name
        try:
            return normalize_name(raw)
        except NameRejected:
            return None

    def _user_rooms_from(self, peer: Peer, user: str) -> set[int]:
        return set(peer.rooms) | {r for p in self.user_peers.get(user, ()) for r in p.rooms}

    def _subscribe(self, user: str, room_id: int) -> None:
        peers = self.room_peers.setdefault(room_id, set())
        for peer in self.user_peers.get(user, ()):
            peer.rooms.add(room_id)
            peers.add(peer)

    def _unsubscribe(self, user: str, room_id: int) -> None:
        peers = self.room_peers.get(room_id)
        for peer in self.user_peers.get(user, ()):
            peer.rooms.discard(room_id)
            if peers is not None:
                peers.discard(peer)
        if peers is not None and not peers:
            del self.room_peers[room_id]

    def _presence(self, user: str, online: bool, rooms: set[int]) -> None:
        """Tell everyone who shares a room with ``user`` (not the user's own sockets), through
        rooms of at most PRESENCE_ROOM_LIMIT connections: in bigger rooms presence would cost
        every arrival a frame to every socket (a reconnect storm of N users: N*N frames), so
        their members see who is online with ``room.members`` instead."""
        frame = P.encode_event("presence", user=user, online=online)
        seen: set[Peer] = set()
        for room_id in rooms:
            peers = self.room_peers.get(room_id, ())
            if len(peers) > PRESENCE_ROOM_LIMIT:
                self.stats.incr("chat.presence_skipped_rooms")
                continue
            for other in peers:
                if other.user != user and other not in seen:
                    seen.add(other)
                    other.send(frame)

    def _broadcast(self, room_id: int, frame: str, *, skip: Peer | None = None,
                   skip_user: str | None = None) -> int:
        sent = 0
        for peer in list(self.room_peers.get(room_id, ())):
            if peer is skip or (skip_user is not None and peer.user == skip_user):
                continue
            if peer.send(frame):
                sent += 1
        self.stats.incr("chat.frames_out", sent)
        return sent

    def _member_event(self, room_id: int, user: str, action: str, notice: Message | None,
                      skip: Peer | None) -> None:
        """``room.member`` to the room; the notice message itself went out with _flush."""
        online = user in self.user_peers
        self._broadcast(room_id, P.encode_event("room.member", room=room_id, user=user,
                                                action=action, online=online), skip=skip)
