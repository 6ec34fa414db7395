"""The chat service: rooms, membership, presence, typing, message kinds, permissions, limits.

Job: :class:`ChatService` answers the requests of chat connections (:class:`Peer`, one per
WebSocket, made by ``worldserver.chat.gateway``) and fans events out to them. A connection
says ``hello`` with the player's join token (``worldserver.identity``: the same token and
nickname as the movement session; the token stays live while the chat is connected; when the
identity logs in again elsewhere the socket is closed with 4002), is put
into the world's public room (``chat.public_room``) and gets its rooms with their recent
history, or exactly what it missed (``since``). The service checks who may do what (members,
invitations, room owners, moderators presenting ``chat.admin_token``), limits every user with
a token bucket (``chat.rate``/``chat.burst``; errors carry ``retry_after``) and every client
address with another (``limits.chat_*``, all its names together), keeps mutes (kicks and
bans are the server's one code path, worldserver/moderation.py, which the admin API shares),
throttles and expires typing indicators (never stored), produces join/leave notices
(``room.member`` events and stored ``notice`` messages by ``server``), and adds the author's
avatar (``entity_id``) to messages when the author is in the world. The ``call.*`` ops go to
the call service (``worldserver/calls/service.py``, ``self.calls``), which also hears of
mutes, kicks and closed sockets.

Storage: every store call runs in one worker thread at a time
(``trio.to_thread.run_sync(..., limiter=CapacityLimiter(1))``). Store calls are never
abandoned: a message handed to the store is committed (or fails) before anything else
happens, and the sender's acknowledgement goes out only after the store returned the
message, i.e. after it was committed. Too many store calls waiting is answered with an
``internal`` "busy" error instead of queueing without bound.

Presence: ``presence`` events go to the members of the user's rooms, through rooms of at most
:data:`PRESENCE_ROOM_LIMIT` connections (a crowded public room would make every arrival cost
a frame to every socket); ``room.members`` always says who is online.

Delivery: a peer has a bounded outbound channel; ``Peer.send`` never blocks. A peer that
does not read (its channel full) is closed with 1008 "too slow" and counted -- frames are never
dropped silently; the client reconnects and asks for what it missed with ``since``.
While a request that subscribes a peer to a room is in progress (hello, room.join), the
peer's events are held back and sent after its reply, so the reply comes first and nothing
committed in between is missed.

Users: rooms are owned, joined and invited to by *identity id* (``Peer.uid``; the store keeps
them so), never by name, so a name cannot carry someone else's rooms; presence, typing, mutes
and kicks go by name (a name belongs to one identity for good).

Admin tokens: a wrong ``admin_token`` in ``hello`` is counted against the connection and
against the client's address (``limits.address_key``: all its sockets together, loopback
included), and its answer is held back in that connection's task only
(``chat.admin_failure_delay``, doubling per failure of the connection). An address that has
given ``chat.admin_max_failures`` wrong tokens is locked out (no token is even compared) until
one is forgiven (``chat.admin_lockout``); a connection at the maximum, or locked out, is closed
with 1008.

Counters (``stats``; ``drop.*`` ones appear in the stats line): ``chat.*`` for traffic,
``drop.chat_*`` for everything refused, throttled or dropped.

Must not: run SQL or know the database (only the ``ChatStore`` interface), block the trio
thread (store and file calls go to the worker), decode frames (``protocol.chat`` does), or
touch sockets (the gateway does).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import trio

from protocol import chat as P
from worldserver.chat.store import ChatStore, Message, Room, RoomNotFound, StoreConflict
from worldserver.identity import KICKED, Identities, NameRejected, normalize_name, user_key
from worldserver.limits import AddressLimits, FailureGuard, TokenBuckets, address_key
from worldserver.logs import LogLimiter, get_logger
from worldserver.moderation import Moderation
from worldserver.stats import Stats

__all__ = [
    "CLOSE_KICKED",
    "CLOSE_TOO_SLOW",
    "OUTBOX_LIMIT",
    "SERVER_AUTHOR",
    "ChatError",
    "ChatService",
    "Peer",
    "open_chat",
]

log = get_logger("worldserver.chat")

SERVER_AUTHOR = "server"  # author of join/leave notices; owner of the public room
OUTBOX_LIMIT = 1024  # frames waiting for one socket before it is closed as too slow
CLOSE_TOO_SLOW = 1008
CLOSE_KICKED = 4001  # application close code: kicked by a moderator
CLOSE_REPLACED = 4002  # application close code: the identity logged in again elsewhere
KICK_BAN_SECONDS = 60.0  # a kicked user cannot say hello again for this long
TYPING_MIN_INTERVAL = 1.0  # at most one typing indicator per second per user and room
TYPING_POLL = 0.25  # seconds between two sweeps for expired typing indicators
OPS_RATE = 20.0  # requests per second one connection may make (besides msg.send's bucket)
OPS_BURST = 100
UPLOAD_RATE = 0.5  # image uploads per second per user
UPLOAD_BURST = 5
MAX_STORE_BACKLOG = 2000  # store calls waiting for the worker before requests get "busy"
MAX_OWNED_ROOMS = 20  # rooms one user may own
MAX_HELLO_ROOMS = 32  # rooms whose messages go into a hello reply (the others: on request)
HELLO_SINCE_LIMIT = 500  # missed messages per room in a hello reply (then ``more``)
MAX_ROOM_CACHE = 10_000
PRESENCE_ROOM_LIMIT = 200  # presence events only through rooms with at most this many sockets
MAINTENANCE_INTERVAL = 30.0  # seconds between sweeps of idle buckets, mutes and bans
CLOSE_ADMIN_FAILURES = 1008  # too many wrong admin tokens (policy violation)
REFUSAL_LOG_INTERVAL = 60.0  # at most one log line per kind of refusal this often


class ChatError(Exception):
    """A request that cannot be done; becomes an error reply (see protocol.chat ERROR_CODES)."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class Peer:
    """One chat connection as the service sees it.

    ``outbox`` is the send side of the connection's bounded memory channel (the gateway's
    writer task drains the other side); ``on_close(code, reason)`` asks the gateway to close
    the socket. ``send`` never blocks; it returns False when the frame was not queued.
    """

    _numbers = itertools.count(1)

    def __init__(
        self,
        key: str,
        outbox: trio.MemorySendChannel,
        on_close: Callable[[int, str], None],
        stats: Stats,
    ) -> None:
        self.key = key
        self.number = next(self._numbers)
        self.outbox = outbox
        self.on_close = on_close
        self.stats = stats
        self.address: str | None = None  # the client's IP address (per-address chat limit)
        self.user: str | None = None
        self.uid: int | None = None  # the user's identity (rooms go by it, see the module doc)
        self.token: str | None = None
        self.moderator = False
        self.public_room: int | None = None  # the public room of the user's world (hello)
        self.rooms: set[int] = set()  # rooms this peer gets events of (the user's memberships)
        self.closed = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._held: list[str] | None = None
        self.admin_failures = 0  # wrong admin tokens presented on this connection

    def __repr__(self) -> str:
        return f"<Peer {self.key} user={self.user!r}>"

    @property
    def authenticated(self) -> bool:
        return self.user is not None

    def send(self, frame: str) -> bool:
        if self.closed:
            return False
        if self._held is not None:
            if len(self._held) >= OUTBOX_LIMIT:
                self._too_slow(len(self._held))
                return False
            self._held.append(frame)
            return True
        try:
            self.outbox.send_nowait(frame)
        except trio.WouldBlock:
            self._too_slow(OUTBOX_LIMIT)
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.closed = True
            return False
        return True

    def _too_slow(self, waiting: int) -> None:
        self.stats.incr("drop.chat_too_slow")
        self.stats.incr("drop.chat_frames_unsent", waiting + 1)
        self.close(CLOSE_TOO_SLOW, "too slow")

    def hold(self) -> None:
        """Keep events back (in order) until :meth:`release`."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held, None
        for frame in held or ():
            if not self.send(frame):
                break

    def close(self, code: int, reason: str) -> None:
        """Close the connection with ``code`` and ``reason`` (the first close wins)."""
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_reason = code, reason
        self._held = None
        try:
            self.on_close(code, reason)
        except Exception:
            log.exception("closing a chat peer failed", peer=self.key)


class ChatService:
    """Everything behind ``/ws/chat`` except the socket (see the module docstring).

    ``store_factory()`` opens the :class:`ChatStore`; it is called in the worker thread by
    :meth:`run`, which also makes sure the public room exists, sweeps typing indicators and
    idle limits, and closes the store when cancelled. ``images`` is the
    :class:`worldserver.chat.images.ImageFiles` of uploaded images (None: image messages are
    refused). ``wall`` gives message timestamps (seconds since the epoch); the trio clock
    drives limits and expiry.
    """

    def __init__(
        self,
        config,
        store_factory: Callable[[], ChatStore],
        *,
        sim=None,
        identities: Identities,
        stats: Stats | None = None,
        images=None,
        wall: Callable[[], float] = time.time,
        limits: AddressLimits | None = None,
        admin_guard: FailureGuard | None = None,
        moderation: Moderation | None = None,
    ) -> None:
        chat = config.chat
        self.config = config
        self.public_room_name = chat.public_room
        self.admin_token = chat.admin_token
        self.max_chars = chat.max_message_chars
        self.history_on_join = chat.history_on_join
        self.typing_ttl = float(chat.typing_ttl)
        self.max_image_bytes = chat.max_image_bytes
        self.sim = sim
        self.identities = identities
        self.stats = stats if stats is not None else Stats()
        self.images = images
        self.wall = wall
        self._store_factory = store_factory
        self.store: ChatStore | None = None
        self._limiter = trio.CapacityLimiter(1)
        self.image_limiter = trio.CapacityLimiter(2)  # saving uploads to disk, at most 2 at once
        self.image_workers = None  # decoding uploads in limited processes (chat/image_pool.py)
        if images is not None:
            from worldserver.chat.image_pool import ImageWorkers

            self.image_workers = ImageWorkers.from_config(config, self.stats)
        self.public_room: int | None = None  # the default world's public room
        # Every hosted world has a public room: the default world's is chat.public_room, the
        # others' "<chat.public_room>@<world id>". A user is in the one of the world it joined
        # and never sees, joins or reads another world's (see _world_room_forbidden).
        self.world_rooms: dict[str, int] = {}  # world id -> its public room
        self.world_room_ids: set[int] = set()
        self.ready = trio.Event()
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
        # Kicks and bans: the server's one code path (worldserver/moderation.py), shared with
        # the admin API; a service of its own (tests) gets a Moderation of its own.
        self.moderation = moderation if moderation is not None else Moderation(identities, sim, self.stats, limits)
        self.moderation.chat = self
        self.calls = None  # worldserver.calls.service.CallService: call.* ops and its hooks, once set
        self.peers: set[Peer] = set()
        self.room_peers: dict[int, set[Peer]] = {}
        self.user_peers: dict[str, set[Peer]] = {}
        self.typing: dict[tuple[int, str], list[float]] = {}  # (room, user) -> [expires, sent]
        self._rooms: OrderedDict[int, Room] = OrderedDict()  # cache of rooms by id
        # Messages committed by the worker, in commit order, waiting to be fanned out (see
        # _append and _flush): events go out in id order whichever handler wakes up first.
        self._committed: deque[tuple[int, Message, Peer | None, int | None]] = deque()
        self._commit_seq = 0
        self._last_id = 0  # newest message id appended through this service
        self._handlers = {
            "rooms.list": self._rooms_list,
            "room.create": self._room_create,
            "room.delete": self._room_delete,
            "room.invite": self._room_invite,
            "room.join": self._room_join,
            "room.leave": self._room_leave,
            "room.members": self._room_members,
            "msg.send": self._msg_send,
            "msg.history": self._msg_history,
            "msg.since": self._msg_since,
            "msg.search": self._msg_search,
            "msg.answer": self._msg_answer,
            "msg.delete": self._msg_delete,
            "typing": self._typing,
            "mod.mute": self._mod_mute,
            "mod.kick": self._mod_kick,
            "call.enable": self._call,
            "call.signal": self._call,
        }

    @classmethod
    def from_config(cls, config, sim, identities: Identities, stats: Stats | None,
                    limits: AddressLimits | None = None, moderation: Moderation | None = None) -> ChatService:
        """The service of a server: SQLite at ``chat.db_path`` (default
        ``<server.data_dir>/chat.sqlite3``; its page cache and memory map sized by
        ``chat.db_cache_mib`` and ``chat.db_mmap_mib``), images in ``<server.data_dir>/chat-images``;
        ``limits`` the server's shared :class:`AddressLimits` (None: its own); ``moderation``
        the server's :class:`Moderation` (None: its own)."""
        from worldserver.chat.images import ImageFiles
        from worldserver.chat.sqlite_store import SqliteChatStore

        data_dir = config.server.data_dir
        path = config.chat.db_path or os.path.join(data_dir, "chat.sqlite3")

        def open_store() -> ChatStore:
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            return SqliteChatStore(path, cache_mib=config.chat.db_cache_mib, mmap_mib=config.chat.db_mmap_mib)

        images = ImageFiles(os.path.join(data_dir, "chat-images"))
        return cls(config, open_store, sim=sim, identities=identities, stats=stats, images=images,
                   limits=limits, moderation=moderation)

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, ensure the public room, then sweep until cancelled; close the store."""
        try:
            self.store = await self._db(self._store_factory)
            room = await self._db(self._ensure_public_room)
            self.public_room = room.id
            self._cache(room)
            hosts = getattr(self.sim, "sims", None) or {}
            default_world = getattr(self.sim, "default_id", None)
            for world_id in hosts:
                if world_id == default_world:
                    self.world_rooms[world_id] = room.id
                    continue
                world_room = await self._db(self._ensure_public_room, f"{self.public_room_name}@{world_id}")
                self.world_rooms[world_id] = world_room.id
                self._cache(world_room)
            self.world_room_ids = set(self.world_rooms.values()) | {room.id}
            self.ready.set()
            log.info("chat ready", public_room=room.name, room_id=room.id)
            task_status.started(self)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._typing_loop)
                nursery.start_soon(self._maintenance_loop)
        finally:
            for peer in list(self.peers):
                peer.close(1001, "server shutting down")
            if self.store is not None:
                store, self.store = self.store, None
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(store.close, limiter=self._limiter)

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

    async def call_store(self, fn: Callable[[ChatStore], Any]) -> Any:
        """``fn(store)`` in the store's worker, for the other users of the chat database
        (``worldserver.accounts``); ChatError "internal" while the store is not open or too
        many calls are waiting."""
        store = self.store
        if not self.ready.is_set() or store is None:
            raise ChatError("internal", "chat is starting; retry in a moment")
        return await self._db(fn, store)

    async def _db(self, fn: Callable, *args: Any) -> Any:
        """Run ``fn(*args)`` in the store's worker thread (one call at a time, never abandoned)."""
        if self._limiter.statistics().tasks_waiting >= MAX_STORE_BACKLOG:
            self.stats.incr("drop.chat_store_busy")
            raise ChatError("internal", "the server is busy; retry in a moment")
        marks: list[int] = []

        def call():
            try:
                return fn(*args)
            finally:
                marks.append(self._commit_seq)

        try:
            return await trio.to_thread.run_sync(call, limiter=self._limiter)
        finally:
            # Fan out what was committed up to the end of this call -- not later commits,
            # so a reader subscribing right after its read misses nothing.
            if marks:
                self._flush(marks[0])

    def _append(self, room_id: int, author: str, kind: str, text: str, image: str | None,
                client_id: str | None, skip: Peer | None = None,
                entity_id: int | None = None) -> Message:
        """In the worker: append a message; a new one is queued for fan-out in commit order
        (a repeat of an earlier client_id is not sent again)."""
        message = self.store.append(room_id, author, kind, text, image, client_id, self.wall())
        if message.id > self._last_id:
            self._last_id = message.id
            self._commit_seq += 1
            self._committed.append((self._commit_seq, message, skip, entity_id))
        return message

    def _flush(self, mark: int) -> None:
        """On the trio thread: send ``message`` events for the commits up to ``mark``."""
        committed = self._committed
        while committed and committed[0][0] <= mark:
            _, message, skip, entity_id = committed.popleft()
            obj = self._message(message, entity_id=entity_id)
            sent = self._broadcast(message.room, P.encode_event("message", room=message.room, message=obj),
                                   skip=skip)
            self.stats.incr(f"chat.messages.{message.kind}")  # the server's notices too
            self.stats.incr("chat.deliveries", sent)

    async def _typing_loop(self) -> None:
        while True:
            await trio.sleep(TYPING_POLL)
            now = trio.current_time()
            expired = [key for key, (expires, _) in self.typing.items() if expires <= now]
            for room_id, user in expired:
                del self.typing[(room_id, user)]
                self.stats.incr("chat.typing_expired")
                self._typing_event(room_id, user, False)

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

    # ------------------------------------------------------------------ peers

    def add_peer(self, peer: Peer) -> None:
        self.peers.add(peer)
        self.stats.incr("chat.connections")

    def remove_peer(self, peer: Peer) -> None:
        """The connection ended: unsubscribe, presence, typing, identity."""
        if peer not in self.peers:
            return
        if self.calls is not None:
            self.calls.peer_closed(peer)
        self.peers.discard(peer)
        user = peer.user
        rooms = set(peer.rooms)
        for room_id in rooms:
            peers = self.room_peers.get(room_id)
            if peers is not None:
                peers.discard(peer)
                if not peers:
                    del self.room_peers[room_id]
        peer.rooms = set()
        if user is None:
            return
        peer.user = peer.uid = None
        own = self.user_peers.get(user)
        if own is not None:
            own.discard(peer)
            if not own:
                del self.user_peers[user]
                for key in [k for k in self.typing if k[1] == user]:
                    del self.typing[key]
                    self._typing_event(key[0], user, False)
                self._presence(user, False, rooms)
        self.identities.detach(peer.token, peer)

    def _user_rooms_from(self, peer: Peer, user: str) -> set[int]:
        return set(peer.rooms) | {r for p in self.user_peers.get(user, ()) for r in p.rooms}

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

    # ------------------------------------------------------------------ requests

    async def handle(self, peer: Peer, request: P.Request) -> None:
        """Answer one decoded request (reply or error frame to ``peer``; events to others)."""
        op = request.OP
        self.stats.incr("chat.requests")
        try:
            if not self.ready.is_set():
                raise ChatError("internal", "chat is starting; retry in a moment")
            if op == "hello":
                await self._hello(peer, request)
                return
            if not peer.authenticated:
                raise ChatError("not_authenticated", "say hello with your join token first")
            if op not in ("typing", "msg.send", "call.signal"):  # those have their own limits
                wait = self.ops.take(peer.number, trio.current_time())
                if wait > 0:
                    self.stats.incr("drop.chat_rate_limited")
                    raise ChatError("rate_limited", "too many requests", wait)
            handler = self._handlers.get(op)
            if handler is None:  # decode_client_frame knows no other ops
                raise ChatError("unknown_op", f"unknown op {op!r}")
            await handler(peer, request)
        except ChatError as exc:
            peer.send(P.encode_error(request.id, exc.code, exc.message, exc.retry_after))
        except RoomNotFound:
            peer.send(P.encode_error(request.id, "not_found", "no such room"))
        except Exception:
            log.exception("chat request failed", op=op, peer=peer.key)
            self.stats.incr("chat.internal_errors")
            peer.send(P.encode_error(request.id, "internal", "the server failed; retry later"))
        finally:
            peer.release()

    def reply(self, peer: Peer, request, **fields: Any) -> None:
        peer.send(P.encode_reply(request.id, **fields))

    # -- hello -------------------------------------------------------------------------

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
        elsewhere, or the token was released or kicked. The close reason tells the client which."""
        if peer.closed:  # a kick closed it first, with its reason
            return
        self.stats.incr(f"chat.closed_{reason}")
        if reason == KICKED:
            peer.close(CLOSE_KICKED, "kicked")
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

    # -- rooms -------------------------------------------------------------------------

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

    def _member_event(self, room_id: int, user: str, action: str, notice: Message | None,
                      skip: Peer | None) -> None:
        """``room.member`` to the room; the notice message itself went out with _flush."""
        online = user in self.user_peers
        self._broadcast(room_id, P.encode_event("room.member", room=room_id, user=user,
                                                action=action, online=online), skip=skip)

    # -- messages ----------------------------------------------------------------------

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

    # -- calls (worldserver/calls/service.py) ------------------------------------------

    async def _call(self, peer: Peer, request) -> None:
        if self.calls is None:
            raise ChatError("forbidden", "calls are not available on this server")
        self.calls.handle(peer, request)
        self.reply(peer, request)

    # -- operator actions (worldserver/moderation.py, worldserver/admin_api.py) -------------

    def mute(self, user: str, seconds: float, by: str = "") -> None:
        """``user`` may not send messages for ``seconds`` (a moderator's or the operator's)."""
        self.mutes[user] = until = trio.current_time() + seconds
        self.stats.incr("chat.mutes")
        if self.calls is not None:  # out of its call at once
            self.calls.muted(user, until)
        log.info("chat mute", user=user, seconds=seconds, by=by)

    def unmute(self, user: str) -> bool:
        """Lift ``user``'s mute; False if it was not muted."""
        until = self.mutes.pop(user, None)
        muted = until is not None and until > trio.current_time()
        if self.calls is not None:
            self.calls.unmuted(user)
        if muted:
            log.info("chat unmute", user=user)
        return muted

    def muted_for(self, user: str) -> float:
        """Seconds ``user`` stays muted (0: not muted)."""
        return max(0.0, self.mutes.get(user, 0.0) - trio.current_time())

    def kick_user(self, user: str, reason: str) -> tuple[int, set[str]]:
        """Close every chat socket of ``user`` with 4001 and ``reason`` (part of a kick, see
        worldserver/moderation.py); returns how many, and the join tokens they held."""
        if self.calls is not None:  # out of its call, told so before its sockets close
            self.calls.kicked(user)
        victims = list(self.user_peers.get(user, ()))
        tokens = {victim.token for victim in victims if victim.token}
        for victim in victims:
            victim.close(CLOSE_KICKED, reason)
        self.stats.incr("chat.kicks")
        return len(victims), tokens

    async def post_notice(self, text: str, room: int | str | None = None) -> list[Message]:
        """A notice by the server in ``room`` (an id, or a name), or with None in every public
        room and every room a socket is in; returns the messages stored (each fanned out).
        Raises ChatError ``not_found`` for no such room, ``too_long``, ``bad_field`` for an
        empty text, ``internal`` while the store is not open."""
        if not self.ready.is_set() or self.store is None:
            raise ChatError("internal", "chat is starting; retry in a moment")
        if not text.strip():
            raise ChatError("bad_field", "text: must not be empty")
        if len(text) > self.max_chars:
            raise ChatError("too_long", f"text: longer than {self.max_chars} characters")
        if room is None:
            targets = sorted(self.world_room_ids | {self.public_room} | set(self.room_peers))
        else:
            target = await self._room_named(room)
            targets = [target.id]

        def work():
            messages = []
            for room_id in targets:
                try:
                    messages.append(self._append(room_id, SERVER_AUTHOR, "notice", text, None, None))
                except RoomNotFound:  # deleted meanwhile
                    pass
            return messages

        messages = await self._db(work)
        self.stats.incr("chat.notices_posted", len(messages))
        log.info("chat notice", rooms=len(messages), chars=len(text))
        return messages

    async def _room_named(self, room: int | str) -> Room:
        """The room with id ``room`` (an int, or a text of digits), else named ``room``."""
        if isinstance(room, int) or (isinstance(room, str) and room.isdigit()):
            return await self._room(int(room))
        found = await self._db(self.store.room_by_name, room)
        if found is None:
            raise ChatError("not_found", "no such room")
        self._cache(found)
        return found

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

    # -- uploads -----------------------------------------------------------------------

    def upload_wait(self, user: str) -> float:
        """0 if ``user`` may upload an image now, else the seconds to wait."""
        wait = self.uploads.take(user, trio.current_time())
        if wait > 0:
            self.stats.incr("drop.chat_upload_rate_limited")
        return wait

    # ------------------------------------------------------------------ helpers

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

    def _owns(self, uid: int | None, room: Room) -> bool:
        """Whether identity ``uid`` owns the room (the server's rooms are no one's)."""
        return uid is not None and room.owner_id == uid

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

    def _room_info(self, room: Room, joined: bool) -> dict:
        extra: dict[str, Any] = {"joined": joined}
        if room.id in self.world_room_ids or room.id == self.public_room:
            extra["public"] = True
        return P.room_object(room.id, room.name, room.owner or SERVER_AUTHOR, room.private, **extra)

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


async def open_chat(config, sim, identities: Identities, stats: Stats | None,
                    *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """``await nursery.start(open_chat, config, sim, identities, stats)`` -> the running
    :class:`ChatService` (store open, public room ready); it closes when the nursery ends."""
    service = ChatService.from_config(config, sim, identities, stats)
    await service.run(task_status=task_status)
