"""Chat: rooms, messages, history and search, carried on the server's HTTP port (``/ws/chat``).

Job: be the package of the chat parts and re-export the storage interface
(:mod:`worldserver.chat.store`: the records, the :class:`ChatStore` protocol and its errors)
and the embedded SQLite implementation (:class:`SqliteChatStore`). The wire frames live in
``protocol/chat.py``.

Must not: import anything heavy or with side effects at import time (no Pillow, trio, HTTP
stack or database connection): importing ``worldserver.chat`` only defines names.
"""

from worldserver.chat.sqlite_store import SqliteChatStore
from worldserver.chat.store import (
    KINDS,
    ChatStore,
    Identity,
    IdentityNotFound,
    Message,
    Room,
    RoomNotFound,
    StoreConflict,
    StoreError,
)

__all__ = [
    "KINDS",
    "ChatStore",
    "Identity",
    "IdentityNotFound",
    "Message",
    "Room",
    "RoomNotFound",
    "SqliteChatStore",
    "StoreConflict",
    "StoreError",
]
