"""The chat's request error: what a request that cannot be done is answered with.

Job: :class:`ChatError` carries an error code (``protocol.chat``'s ``ERROR_CODES``), a message
for people and, for limits, ``retry_after``. The chat service turns it into an error frame
(``ChatService.handle``); the server's other users of the chat service (``worldserver.accounts``,
the admin API, ``worldserver.world_admin``, the call service) raise and catch it the same way.

Must not: import anything (every chat module imports it, and it must stay cheap to import).
"""

from __future__ import annotations

__all__ = ["ChatError"]


class ChatError(Exception):
    """A request that cannot be done; becomes an error reply (see protocol.chat ERROR_CODES)."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
