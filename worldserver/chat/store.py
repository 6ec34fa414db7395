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
- Users are *identities* (:class:`Identity`): a stable integer id that owns one nickname for
  good (``worldserver.identity``, ``worldserver.accounts``). Room ownership, membership and
  invitations are kept by identity id, never by name, so a name can never carry someone
  else's rooms; the methods take and give ids, and give names where a client shows them
  (``Room.owner``, ``members``). A room owned by the server has ``owner_id`` None. Message
  authors are names (what a client shows; a name is never given to another identity).
- Identity names are unique under the key the caller gives (``worldserver.identity.user_key``);
  an identity's ``secret_hash`` is None only for one made by a migration from a store that
  kept users by name (nobody holds its secret; see ``claim_identity``).

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
    "Identity",
    "IdentityNotFound",
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


class IdentityNotFound(StoreError):
    """The identity id does not exist (raised by the methods that need an existing one)."""


def name_key(name: str) -> str:
    """The form under which room names are compared: NFC, then Unicode case folding."""
    return unicodedata.normalize("NFC", name).casefold()


@attrs.frozen
class Identity:
    id: int
    name: str
    secret_hash: bytes | None  # SHA-256 of the secret; None: made by a migration, no secret
    created: float  # seconds since the epoch


@attrs.frozen
class Room:
    id: int
    name: str
    owner: str  # the owner's name; "" for a room of the server
    private: bool
    created: float  # seconds since the epoch
    owner_id: int | None = None  # the owning identity; None: the server


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

    # -------------------------------------------------------------------- identities

    def create_identity(self, name: str, key: str, secret_hash: bytes, now: float) -> Identity:
        """A new identity owning ``name`` (unique by ``key``). StoreConflict if the key is held."""
        ...

    def identity_by_key(self, key: str) -> Identity | None:
        """The identity whose name has the uniqueness key ``key``, or None."""
        ...

    def get_identity(self, identity_id: int) -> Identity | None: ...

    def claim_identity(self, identity_id: int, secret_hash: bytes) -> bool:
        """Give a migrated identity (no secret yet) the secret hash ``secret_hash``, but only if
        it owns no room and is neither a member of nor invited to a private room (nothing
        anyone could take from it). True if it was claimed now; False otherwise."""
        ...

    def count_identities(self) -> int: ...

    # ------------------------------------------------------------------------- rooms

    def create_room(self, name: str, owner: int | None, private: bool, now: float) -> Room:
        """Create a room owned by identity ``owner`` (None: the server). The owner is NOT made
        a member (the service decides that). Raises StoreConflict when a room of that name
        (ignoring case) exists, IdentityNotFound for an unknown owner."""
        ...

    def get_room(self, room_id: int) -> Room | None: ...

    def room_by_name(self, name: str) -> Room | None:
        """The room of that name, ignoring case, or None."""
        ...

    def list_rooms(self, user: int) -> list[Room]:
        """Rooms visible to ``user``: every public room, and the private rooms where the user
        is a member or invited; ordered by id."""
        ...

    def delete_room(self, room_id: int) -> bool:
        """Delete a room with its members, invitations and messages. False if it did not
        exist. Costs time in proportion to the room's messages."""
        ...

    # ------------------------------------------------------------ members, invitations

    def add_member(self, room_id: int, user: int) -> bool:
        """True if the user was added, False if already a member. RoomNotFound if no room,
        IdentityNotFound if no such identity."""
        ...

    def remove_member(self, room_id: int, user: int) -> bool:
        """True if the user was a member (and is no longer)."""
        ...

    def members(self, room_id: int) -> list[str]:
        """The names of the room's members, sorted."""
        ...

    def is_member(self, room_id: int, user: int) -> bool: ...

    def add_invite(self, room_id: int, user: int) -> bool:
        """True if the invitation is new. Invitations stay after the user joins or leaves
        (so an invited user may come back). RoomNotFound if no room, IdentityNotFound if no
        such identity."""
        ...

    def is_invited(self, room_id: int, user: int) -> bool: ...

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
