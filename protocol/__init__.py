"""worldserver's wire protocol, sans-IO.

Bytes and an explicit ``now`` go in; events and bytes come out. Nothing in this package
opens a socket, reads a clock, sleeps, or imports trio or asyncio: the server (``worldserver``)
and the clients drive it. The wire format is specified in ``protocol/SPEC.md``.
"""

from protocol.errors import ProtocolError

PROTOCOL_VERSION = 2

__all__ = ["PROTOCOL_VERSION", "ProtocolError"]
