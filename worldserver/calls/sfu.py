"""The seam between the call service and a media server (SFU), as a typing Protocol.

Job: say what the call service asks of an SFU (docs/calls.md, "SFU"): a room per large or zone
group (:meth:`SfuBackend.open_room`), a ticket for one member to that room only
(:meth:`SfuBackend.admit`), the ticket withdrawn and the participant kicked
(:meth:`SfuBackend.revoke`), the room destroyed (:meth:`SfuBackend.close_room`); the ticket
as it travels to the page (:class:`SfuTicket`, the ``sfu`` object of ``call.joined``); and the
one error a backend raises (:class:`SfuError` with a short reason, which the call service
counts).

Must not: do I/O, start processes or hold state: the implementations do
(:mod:`worldserver.calls.janus`). Every method is async and may be slow; the call service runs
them in its own task with deadlines, never on the tick.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

__all__ = ["SfuBackend", "SfuError", "SfuTicket"]


@attrs.frozen
class SfuTicket:
    """What one member needs to join one room: the media server's WebSocket URL as the browser
    reaches it, the room number, a token valid for that room only, and the display name the
    member joins with."""

    url: str
    room: int
    token: str
    display: str

    def as_event(self) -> dict[str, Any]:
        """The ``sfu`` object of a ``call.joined`` event (SPEC 7)."""
        return {"url": self.url, "room": self.room, "token": self.token, "display": self.display}


class SfuError(Exception):
    """A backend failed (unreachable, refused, timed out, bad answer). ``reason`` is a short
    word for counters and logs (``unreachable``, ``refused``, ``timeout``, ...); the message
    is for people."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


class SfuBackend(Protocol):
    """A media server the call service puts SFU groups on. Methods raise :class:`SfuError`
    (and nothing else) when they fail; the call service bounds each call with a deadline."""

    async def open_room(self, group: str) -> int:
        """A new room for this group (``group`` is the qualified group id, for labels); its
        number."""
        ...

    async def admit(self, room: int, display: str) -> SfuTicket:
        """A ticket (a fresh token allowed in ``room`` only) for a member shown as ``display``."""
        ...

    async def revoke(self, room: int, ticket: SfuTicket) -> None:
        """Withdraw the ticket's token and kick the participant that joined with it, if any."""
        ...

    async def close_room(self, room: int) -> None:
        """Destroy the room (every participant is dropped). A room already gone is not an
        error."""
        ...
