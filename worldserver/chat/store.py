"""The chat storage interface: the records and the :class:`ChatStore` protocol.

Job: say, in one small synchronous interface, everything the chat service needs from durable
storage -- rooms, members, invitations, messages, history pages, catch-up after a reconnect,
search, answered/deleted flags -- so that the embedded SQLite store
(``worldserver.chat.sqlite_store``) can be replaced by a server database without touching the
chat logic. The records (:class:`Room`, :class:`Message`) are plain frozen attrs classes.

Contract shared by every implementation:

- Calls are synchronous and come from one worker thread at a time (the service serializes
  them); an implementation need not be thread-safe, but must not bind itself to the thread
  that created it.
- A method that changes something has committed it durably when it returns.
- Message ids are global (across rooms), positive and strictly increasing in commit order,
  never reused (not even after a room is deleted). Because of this, "everything after id X"
  (``since``) never misses a message committed later.
- Room names are unique ignoring case (Unicode case folding of the NFC form).
- Deleted messages are soft-deleted: they vanish from ``history``, ``since`` and ``search``;
  ``get_message`` still returns them, with ``deleted=True``.
- Users are plain strings (the nicknames of ``worldserver.identity``), compared exactly.

Must not: know about the wire protocol, permissions, rate limits, sockets, trio or the
configuration; check who may do what (the service does that: e.g. ``delete_room`` deletes
whatever id it gets).
"""

from __future__ import annotations

import unicodedata
from typing import Protocol, runtime_checkable

import attrs

__all__ = [
    "KINDS",
    "ChatStore",
    "Message",
    "Room",
    "RoomNotFound",
    "StoreConflict",
    "StoreError",
    "name_key",
]

KINDS = ("text", "image", "question", "notice")


class StoreError(Exception):
    """Base class of the errors a store raises on purpose (not for I/O failures)."""


class StoreConflict(StoreError):
    """The change would break a uniqueness rule (e.g. a room name taken, ignoring case)."""


class RoomNotFound(StoreError):
    """The room id does not exist (raised by the methods that need an existing room)."""


def name_key(name: str) -> str:
    """The form under which room names are compared: NFC, then Unicode case folding."""
    return unicodedata.normalize("NFC", name).casefold()


@attrs.frozen
class Room:
    id: int
    name: str
    owner: str
    private: bool
    created: float  # seconds since the epoch


@attrs.frozen
class Message:
    id: int
    room: int
    ts: float  # seconds since the epoch, given by the caller of append
    author: str
    kind: str  # one of KINDS
    text: str  # "" when there is none (an image without caption)
    image: str | None  # image id for kind "image", else None
    answered: bool  # a question marked answered
    deleted: bool
    client_id: str | None  # the sender's idempotency key, if any


@runtime_checkable
class ChatStore(Protocol):
    """Durable chat storage. See the module docstring for the contract shared by all methods."""

    # ------------------------------------------------------------------------- rooms

    def create_room(self, name: str, owner: str, private: bool, now: float) -> Room:
        """Create a room. The owner is NOT made a member (the service decides that).
        Raises StoreConflict when a room of that name (ignoring case) exists."""
        ...

    def get_room(self, room_id: int) -> Room | None: ...

    def room_by_name(self, name: str) -> Room | None:
        """The room of that name, ignoring case, or None."""
        ...

    def list_rooms(self, user: str) -> list[Room]:
        """Rooms visible to ``user``: every public room, and the private rooms where the user
        is a member or invited; ordered by id."""
        ...

    def delete_room(self, room_id: int) -> bool:
        """Delete a room with its members, invitations and messages. False if it did not
        exist. Costs time in proportion to the room's messages."""
        ...

    # ------------------------------------------------------------ members, invitations

    def add_member(self, room_id: int, user: str) -> bool:
        """True if the user was added, False if already a member. RoomNotFound if no room."""
        ...

    def remove_member(self, room_id: int, user: str) -> bool:
        """True if the user was a member (and is no longer)."""
        ...

    def members(self, room_id: int) -> list[str]:
        """The room's members, sorted by name."""
        ...

    def is_member(self, room_id: int, user: str) -> bool: ...

    def add_invite(self, room_id: int, user: str) -> bool:
        """True if the invitation is new. Invitations stay after the user joins or leaves
        (so an invited user may come back). RoomNotFound if no room."""
        ...

    def is_invited(self, room_id: int, user: str) -> bool: ...

    # ------------------------------------------------------------------------ messages

    def append(
        self,
        room_id: int,
        author: str,
        kind: str,
        text: str,
        image: str | None,
        client_id: str | None,
        now: float,
    ) -> Message:
        """Store a new message and commit it before returning. Idempotent on
        (room, author, client_id) when client_id is not None: a repeat returns the message
        stored the first time (unchanged, even if deleted since). RoomNotFound if no room;
        ValueError for a kind not in KINDS."""
        ...

    def history(self, room_id: int, before: int | None = None, limit: int = 50) -> list[Message]:
        """The newest ``limit`` live messages with id < ``before`` (all if None), oldest
        first. Page backwards by passing the first id of a page as the next ``before``."""
        ...

    def since(self, room_id: int, after: int, limit: int = 100) -> list[Message]:
        """Live messages with id > ``after``, ascending, at most ``limit``. Page forwards by
        passing the last id of a page as the next ``after``; a page shorter than ``limit``
        means there is nothing more right now."""
        ...

    def search(self, room_id: int, query: str, limit: int = 20) -> list[Message]:
        """Live messages of the room that contain every whitespace-separated term of
        ``query`` as a substring (case-insensitive), newest first. The query is literal text,
        never a query language."""
        ...

    def get_message(self, room_id: int, message_id: int) -> Message | None:
        """The message (deleted ones too), or None if it is not in that room."""
        ...

    def mark_answered(self, room_id: int, message_id: int) -> bool:
        """Mark a question answered. True if it changed now; False if there is no such live
        question in the room or it was already answered."""
        ...

    def delete_message(self, room_id: int, message_id: int) -> bool:
        """Soft-delete a message. True if it was live and is now deleted."""
        ...

    def close(self) -> None:
        """Release the storage; the store is unusable afterwards. Calling it twice is fine."""
        ...
