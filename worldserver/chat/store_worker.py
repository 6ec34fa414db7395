"""The chat's store worker: every store call in one worker thread, and fan-out in commit order.

Job: the storage part of :class:`~worldserver.chat.service.ChatService` (a base class of it;
:meth:`StoreWorker._init_store` makes its state). Every store call runs in one worker thread at
a time (``trio.to_thread.run_sync(..., limiter=CapacityLimiter(1))``, :meth:`StoreWorker._db`;
:meth:`StoreWorker.call_store` for the other users of the chat database). Store calls are never
abandoned: a message handed to the store is committed (or fails) before anything else happens,
and the sender's acknowledgement goes out only after the store returned the message, i.e. after
it was committed. Too many store calls waiting (:data:`MAX_STORE_BACKLOG`) is answered with an
``internal`` "busy" error (``drop.chat_store_busy``) instead of queueing without bound.
Messages appended in the worker (:meth:`StoreWorker._append`) are queued in commit order and
fanned out (``message`` events, counted ``chat.messages.<kind>`` and ``chat.deliveries``) when
the store call that committed them returns: events go out in id order whichever handler wakes
up first, and a reader that subscribes right after its read misses nothing.

Must not: run SQL or know the database (only the ``ChatStore`` interface), call the store on
the trio thread, abandon or cancel a store call, queue store calls without bound, or send a
message event before its commit or out of commit order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from protocol import chat as P
from worldserver.chat.errors import ChatError
from worldserver.chat.peers import Peer
from worldserver.chat.store import ChatStore, Message

__all__ = ["MAX_STORE_BACKLOG", "StoreWorker"]

MAX_STORE_BACKLOG = 2000  # store calls waiting for the worker before requests get "busy"


class StoreWorker:
    """The store worker of :class:`~worldserver.chat.service.ChatService` (see the module
    docstring). Uses the service's ``ready``, ``stats``, ``wall``, ``_message``
    (worldserver/chat/message_handlers.py) and ``_broadcast`` (worldserver/chat/rooms.py)."""

    def _init_store(self, store_factory: Callable[[], ChatStore]) -> None:
        self._store_factory = store_factory
        self.store: ChatStore | None = None
        self._limiter = trio.CapacityLimiter(1)
        # Messages committed by the worker, in commit order, waiting to be fanned out (see
        # _append and _flush): events go out in id order whichever handler wakes up first.
        self._committed: deque[tuple[int, Message, Peer | None, int | None]] = deque()
        self._commit_seq = 0
        self._last_id = 0  # newest message id appended through this service

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
