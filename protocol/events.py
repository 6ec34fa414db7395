"""Events that the sans-IO endpoints return to their drivers.

Plain data holders, nothing else: the server and client code decide what to do with them.
"""

from __future__ import annotations

import attrs


@attrs.define(slots=True, eq=False)
class ConnectRequest:
    """A client proved its address (or came over a trusted transport); accept or refuse it.

    ``token`` is the join token the client presented (b"" if none).
    """

    addr: tuple
    nonce: int
    token: bytes = b""


@attrs.define(slots=True, eq=False)
class Connected:
    """Client side: the server accepted us. ``welcome`` is the Welcome message bytes."""

    salt: int
    welcome: bytes


@attrs.define(slots=True, eq=False)
class Refused:
    """Client side: the server refused the handshake (reason name and server's text)."""

    reason: str
    server_version: int
    text: str


@attrs.define(slots=True, eq=False)
class Received:
    """A connected packet was accepted. ``conn`` is None on the client side.

    ``acked`` lists our own packet sequence numbers that this packet newly acknowledged.
    """

    conn: object
    ptype: int
    seq: int
    payload: bytes
    acked: list


@attrs.define(slots=True, eq=False)
class Disconnected:
    """The connection ended: the peer said so, it timed out, or it was replaced."""

    conn: object
    reason: str
