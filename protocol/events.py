"""Events that the sans-IO endpoints return to their drivers.

Plain data holders, nothing else: the server and client code decide what to do with them.
"""

from __future__ import annotations

import attrs


@attrs.define(slots=True, eq=False)
class ConnectRequest:
    """A client proved its address (or came over a trusted transport); accept or refuse it.

    ``token`` is the token the client presented (b"" if none): over UDP a connect token,
    over trusted transports a join token. ``packet`` is the CONNECT that asked (UDP; b"" over
    trusted transports), whose last bytes prove the connect key (``protocol.tokens``).
    ``replaces``: the open connection at the same address that this request (a client
    restarted with a new nonce) would replace. It stays open until the request is accepted;
    the driver ends its own state for it when it accepts (``ServerEndpoint.accept`` closes it),
    and a refused request leaves it as it was.
    """

    addr: tuple
    nonce: int
    token: bytes = b""
    packet: bytes = b""
    replaces: object = None


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
    """The connection ended: the peer said so, it timed out, or it was replaced. ``text``: what
    the server's DISCONNECT said after its reason byte (``world_closed``), else ""."""

    conn: object
    reason: str
    text: str = ""
