"""One chat connection as the chat service sees it: who is on it, its outbox, how it closes.

Job: :class:`Peer` (one per WebSocket, made by ``worldserver.chat.gateway``) carries who said
``hello`` on the connection (name, identity id, join token, moderator, the public room of its
world, the rooms it gets events of) and delivers frames to it. Delivery: a peer has a bounded
outbound channel (:data:`OUTBOX_LIMIT` frames); ``Peer.send`` never blocks. A peer that does
not read (its channel full) is closed with 1008 "too slow" and counted (``drop.chat_too_slow``,
``drop.chat_frames_unsent``) -- frames are never dropped silently; the client reconnects and
asks for what it missed with ``since``. While a request that subscribes a peer to a room is in
progress (hello, room.join), the peer's events are held back (:meth:`Peer.hold`) and sent after
its reply (:meth:`Peer.release`, which the service calls after every request), so the reply
comes first and nothing committed in between is missed. The close codes the chat uses are
here too.

Must not: block or await (``send`` and ``close`` are called in the middle of broadcasts), drop
a frame without closing the peer, hold more than OUTBOX_LIMIT frames back, or decide anything
about rooms or users (the service does); it reaches the socket only through ``outbox`` and
``on_close``, the gateway's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import trio

from worldserver.logs import get_logger
from worldserver.stats import Stats

__all__ = [
    "CLOSE_KICKED",
    "CLOSE_REPLACED",
    "CLOSE_TOO_SLOW",
    "OUTBOX_LIMIT",
    "Peer",
]

log = get_logger("worldserver.chat")

OUTBOX_LIMIT = 1024  # frames waiting for one socket before it is closed as too slow
CLOSE_TOO_SLOW = 1008
CLOSE_KICKED = 4001  # application close code: kicked by a moderator
CLOSE_REPLACED = 4002  # application close code: the identity logged in again elsewhere


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
        self.uid: int | None = None  # the user's identity (rooms go by it, see worldserver/chat/rooms.py)
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
