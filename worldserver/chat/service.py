"""The chat service: what a chat connection may ask, and who answers it.

Job: :class:`ChatService` answers the requests of chat connections
(:class:`~worldserver.chat.peers.Peer`, one per WebSocket, made by ``worldserver.chat.gateway``)
and fans events out to them. :meth:`ChatService.handle` is the one entrance: it checks that
the service is ready, that the connection said ``hello`` and is within its request rate, hands
the request to its handler, and turns a refusal into an error frame (:class:`ChatError`,
``protocol.chat``'s codes) and a failure into an ``internal`` one (logged and counted, the
connection stays usable). The parts, each a base class of :class:`ChatService` in a module of
its own:

- ``hello.py``: ``hello`` (the join token, the world's public room, rooms and what was missed);
- ``room_handlers.py``: the ``room.*`` requests (who may do what, join and leave notices);
- ``message_handlers.py``: the ``msg.*`` requests and the message objects (with avatars);
- ``moderation_handlers.py``: typing indicators, ``mod.mute``, ``mod.kick``;
- ``rooms.py``: public rooms, the room cache, subscriptions, presence and broadcast;
- ``store_worker.py``: every store call in one worker thread, fan-out in commit order;
- ``limits.py``: rate limits, mutes, the wrong-admin-token guard, their sweep;
- ``peers.py``: a connection's outbox (bounded, never blocking, too slow: closed) and close codes.

Here besides: the wiring (:meth:`ChatService.from_config`, :meth:`ChatService.run`: the store
opened in the worker, the public rooms ensured, the typing and maintenance loops, everything
closed at the end), a connection's arrival and departure, the ``call.*`` ops, which go to the
call service (``worldserver/calls/service.py``, ``self.calls``), and the operator's actions
(worldserver/moderation.py, worldserver/admin_api.py): mutes, a kick's closing of the chat
sockets, server notices. The call service hears of mutes, kicks and closed sockets.

Counters (``stats``; ``drop.*`` ones appear in the stats line): ``chat.*`` for traffic,
``drop.chat_*`` for everything refused, throttled or dropped.

Must not: run SQL or know the database (only the ``ChatStore`` interface), block the trio
thread (store and file calls go to the worker), decode frames (``protocol.chat`` does), or
touch sockets (the gateway does).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import trio

from protocol import chat as P
from worldserver.chat.errors import ChatError
from worldserver.chat.hello import HelloHandler
from worldserver.chat.limits import ChatLimits
from worldserver.chat.message_handlers import MessageHandlers
from worldserver.chat.moderation_handlers import ModerationHandlers
from worldserver.chat.peers import CLOSE_KICKED, Peer
from worldserver.chat.room_handlers import RoomHandlers
from worldserver.chat.rooms import SERVER_AUTHOR, Rooms
from worldserver.chat.store import ChatStore, Message, RoomNotFound
from worldserver.chat.store_worker import StoreWorker
from worldserver.identity import Identities
from worldserver.limits import AddressLimits, FailureGuard
from worldserver.logs import get_logger
from worldserver.moderation import Moderation
from worldserver.stats import Stats

__all__ = ["ChatService", "open_chat"]

log = get_logger("worldserver.chat")


class ChatService(HelloHandler, RoomHandlers, MessageHandlers, ModerationHandlers, Rooms, StoreWorker,
                  ChatLimits):
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
        self.max_chars = chat.max_message_chars
        self.history_on_join = chat.history_on_join
        self.max_image_bytes = chat.max_image_bytes
        self.sim = sim
        self.identities = identities
        self.stats = stats if stats is not None else Stats()
        self.images = images
        self.wall = wall
        self._init_store(store_factory)
        self.image_limiter = trio.CapacityLimiter(2)  # saving uploads to disk, at most 2 at once
        self.image_workers = None  # decoding uploads in limited processes (chat/image_pool.py)
        if images is not None:
            from worldserver.chat.image_pool import ImageWorkers

            self.image_workers = ImageWorkers.from_config(config, self.stats)
        self._init_rooms(chat)
        self.ready = trio.Event()
        self._init_limits(config, limits, admin_guard)
        # Kicks and bans: the server's one code path (worldserver/moderation.py), shared with
        # the admin API; a service of its own (tests) gets a Moderation of its own.
        self.moderation = moderation if moderation is not None else Moderation(identities, sim, self.stats, limits)
        self.moderation.chat = self
        self.calls = None  # worldserver.calls.service.CallService: call.* ops and its hooks, once set
        self.peers: set[Peer] = set()
        self._init_typing(chat)
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


async def open_chat(config, sim, identities: Identities, stats: Stats | None,
                    *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """``await nursery.start(open_chat, config, sim, identities, stats)`` -> the running
    :class:`ChatService` (store open, public room ready); it closes when the nursery ends."""
    service = ChatService.from_config(config, sim, identities, stats)
    await service.run(task_status=task_status)
