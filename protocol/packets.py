"""Datagram layouts of worldserver's UDP protocol: encode and decode, nothing else.

Every datagram starts with a one-byte packet type. Handshake packets (HELLO, CHALLENGE,
CONNECT, ACCEPT, REFUSE) have fixed layouts; connected packets share a 13-byte header
(type, session salt, sequence, ack, ack bitfield) followed by a payload whose meaning the type
gives. See protocol/SPEC.md, sections 2 and 3.

This module holds no state and makes no decisions (no cookies, no sequence tracking): it turns
bytes into tuples and back, and raises :class:`ProtocolError` for anything malformed.
"""

from __future__ import annotations

import struct

from protocol.errors import ProtocolError

# Packet types.
HELLO = 0x01
CHALLENGE = 0x02
CONNECT = 0x03
ACCEPT = 0x04
REFUSE = 0x05
SNAPSHOT = 0x10
INPUT = 0x11
KEEPALIVE = 0x12
DISCONNECT = 0x13
MESSAGE = 0x14

CONNECTED_TYPES = frozenset({SNAPSHOT, INPUT, KEEPALIVE, DISCONNECT, MESSAGE})

# Client handshake packets are padded to this size, so that no reply to an unproven address
# (CHALLENGE, REFUSE) can be larger than the packet that caused it.
HANDSHAKE_SIZE = 128
MAX_DATAGRAM = 1400  # anything larger is refused before it is parsed
MAC_SIZE = 16

_HELLO = struct.Struct("<BHQ")  # type, version, client nonce; then zero padding
_CHALLENGE = struct.Struct("<BHQQ16s")  # type, version, nonce, cookie time (ms), cookie MAC
_CONNECT = struct.Struct("<BHQQ16s")  # as CHALLENGE, echoed back, then zero padding
_ACCEPT = struct.Struct("<BQI")  # type, nonce, session salt; then the Welcome message
_REFUSE = struct.Struct("<BBHQ")  # type, reason, server version, nonce; then UTF-8 text
HEADER = struct.Struct("<BIHHI")  # type, salt, sequence, ack, ack bits
HEADER_SIZE = HEADER.size  # 13

# Refusal reasons (REFUSE packet) and disconnect reasons (DISCONNECT payload byte).
REFUSE_VERSION = 1
REFUSE_FULL = 2
REFUSE_STALE_COOKIE = 3
REFUSE_REPLAYED_COOKIE = 4
REFUSE_ADDRESS_LIMIT = 5  # the client's address holds as many connections as it may
# Connect tokens (UDP, SPEC 2): none presented where one is required; one the server did not
# issue, altered, or presented without its key's proof; past its expiry; already used.
REFUSE_TOKEN_REQUIRED = 6
REFUSE_TOKEN_INVALID = 7
REFUSE_TOKEN_EXPIRED = 8
REFUSE_TOKEN_USED = 9
# Operator decisions: the player or (UDP) its address was kicked with a ban that has not run
# out; the server is draining before it stops and takes no one new.
REFUSE_BANNED = 10
REFUSE_SHUTTING_DOWN = 11
REFUSE_REASONS = {
    REFUSE_VERSION: "version_mismatch",
    REFUSE_FULL: "server_full",
    REFUSE_STALE_COOKIE: "stale_cookie",
    REFUSE_REPLAYED_COOKIE: "replayed_cookie",
    REFUSE_ADDRESS_LIMIT: "address_limit",
    REFUSE_TOKEN_REQUIRED: "token_required",
    REFUSE_TOKEN_INVALID: "token_invalid",
    REFUSE_TOKEN_EXPIRED: "token_expired",
    REFUSE_TOKEN_USED: "token_used",
    REFUSE_BANNED: "banned",
    REFUSE_SHUTTING_DOWN: "shutting_down",
}

DISCONNECT_CLIENT_LEFT = 1
DISCONNECT_SERVER_SHUTDOWN = 2
DISCONNECT_TIMEOUT = 3
# An operator (worldserver kick, the admin API) or a chat moderator removed the player; the
# reason byte is followed by a UTF-8 text for the player saying who, why and for how long a ban
# lasts. Not a newer login of the same player: that is DISCONNECT_REPLACED.
DISCONNECT_KICKED = 4
# The client's world was closed by the operator (worldserver/world_admin.py); the reason byte
# is followed by a UTF-8 text saying why (at most MAX_DISCONNECT_TEXT bytes).
DISCONNECT_WORLD_CLOSED = 5
# The same player logged in again (another window or device): this connection's avatar was
# replaced by the newer login's, and reconnecting with this connection's token would only end
# that login. Receivers that predate it end the connection all the same (an unknown reason).
DISCONNECT_REPLACED = 6
DISCONNECT_REASONS = {
    DISCONNECT_CLIENT_LEFT: "client_left",
    DISCONNECT_SERVER_SHUTDOWN: "server_shutdown",
    DISCONNECT_TIMEOUT: "timeout",
    DISCONNECT_KICKED: "kicked",
    DISCONNECT_WORLD_CLOSED: "world_closed",
    DISCONNECT_REPLACED: "replaced",
}
MAX_DISCONNECT_TEXT = 200  # bytes of text a DISCONNECT may carry after its reason byte


def disconnect_payload(reason: int, text: str = "") -> bytes:
    """A DISCONNECT payload: the reason byte, then ``text`` as UTF-8 cut to
    :data:`MAX_DISCONNECT_TEXT` bytes (never in the middle of a character)."""
    data = text.encode("utf-8")[:MAX_DISCONNECT_TEXT].decode("utf-8", "ignore").encode("utf-8")
    return bytes([reason]) + data


def disconnect_text(payload: bytes) -> str:
    """The text after a DISCONNECT payload's reason byte ("" for none); bad UTF-8 is replaced."""
    return bytes(payload[1 : 1 + MAX_DISCONNECT_TEXT]).decode("utf-8", errors="replace")


def packet_type(data: bytes) -> int:
    if not data:
        raise ProtocolError("empty", "zero-length datagram")
    if len(data) > MAX_DATAGRAM:
        raise ProtocolError("oversized", f"{len(data)} bytes > {MAX_DATAGRAM}")
    return data[0]


MAX_TOKEN = 64  # bytes of token a HELLO or CONNECT may carry


def _pad(body: bytes, token: bytes = b"") -> bytes:
    """Fixed fields, then the optional token (one length byte, then its bytes), then zeros."""
    if len(token) > MAX_TOKEN:
        raise ValueError(f"join token longer than {MAX_TOKEN} bytes")
    body += bytes([len(token)]) + token
    return body + bytes(HANDSHAKE_SIZE - len(body))


def _token(data: bytes, at: int) -> bytes:
    n = data[at]
    if n > MAX_TOKEN:
        raise ProtocolError("bad_token", f"token length {n} > {MAX_TOKEN}")
    return bytes(data[at + 1 : at + 1 + n])


def encode_hello(version: int, nonce: int, token: bytes = b"") -> bytes:
    return _pad(_HELLO.pack(HELLO, version, nonce), token)


def decode_hello(data: bytes) -> tuple[int, int, bytes]:
    """Returns (version, nonce, token). The packet must be exactly HANDSHAKE_SIZE long."""
    if len(data) != HANDSHAKE_SIZE:
        raise ProtocolError("bad_size", f"HELLO must be {HANDSHAKE_SIZE} bytes, got {len(data)}")
    _, version, nonce = _HELLO.unpack_from(data)
    return version, nonce, _token(data, _HELLO.size)


def encode_challenge(version: int, nonce: int, cookie_ms: int, mac: bytes) -> bytes:
    return _CHALLENGE.pack(CHALLENGE, version, nonce, cookie_ms, mac)


def decode_challenge(data: bytes) -> tuple[int, int, int, bytes]:
    """Returns (version, nonce, cookie_ms, mac)."""
    if len(data) != _CHALLENGE.size:
        raise ProtocolError("bad_size", f"CHALLENGE must be {_CHALLENGE.size} bytes")
    _, version, nonce, cookie_ms, mac = _CHALLENGE.unpack(data)
    return version, nonce, cookie_ms, mac


def encode_connect(version: int, nonce: int, cookie_ms: int, mac: bytes, token: bytes = b"") -> bytes:
    return _pad(_CONNECT.pack(CONNECT, version, nonce, cookie_ms, mac), token)


def decode_connect(data: bytes) -> tuple[int, int, int, bytes, bytes]:
    """Returns (version, nonce, cookie_ms, mac, token). Exactly HANDSHAKE_SIZE long."""
    if len(data) != HANDSHAKE_SIZE:
        raise ProtocolError("bad_size", f"CONNECT must be {HANDSHAKE_SIZE} bytes, got {len(data)}")
    _, version, nonce, cookie_ms, mac = _CONNECT.unpack_from(data)
    return version, nonce, cookie_ms, mac, _token(data, _CONNECT.size)


def encode_accept(nonce: int, salt: int, welcome: bytes) -> bytes:
    return _ACCEPT.pack(ACCEPT, nonce, salt) + welcome


def decode_accept(data: bytes) -> tuple[int, int, bytes]:
    """Returns (nonce, salt, welcome message bytes)."""
    if len(data) < _ACCEPT.size:
        raise ProtocolError("truncated", "ACCEPT shorter than its header")
    _, nonce, salt = _ACCEPT.unpack_from(data)
    return nonce, salt, data[_ACCEPT.size :]


def encode_refuse(reason: int, server_version: int, nonce: int, text: str, limit: int) -> bytes:
    """A REFUSE no longer than ``limit`` bytes (the size of the packet it answers)."""
    head = _REFUSE.pack(REFUSE, reason, server_version, nonce)
    body = text.encode("utf-8")[: max(0, limit - len(head))]
    return head + body


def decode_refuse(data: bytes) -> tuple[int, int, int, str]:
    """Returns (reason, server_version, nonce, text)."""
    if len(data) < _REFUSE.size:
        raise ProtocolError("truncated", "REFUSE shorter than its header")
    _, reason, version, nonce = _REFUSE.unpack_from(data)
    text = data[_REFUSE.size :].decode("utf-8", errors="replace")
    return reason, version, nonce, text


def encode_header(ptype: int, salt: int, seq: int, ack: int, ack_bits: int) -> bytes:
    return HEADER.pack(ptype, salt, seq, ack, ack_bits)


def decode_header(data: bytes) -> tuple[int, int, int, int, int]:
    """Returns (type, salt, seq, ack, ack_bits) of a connected packet."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError("truncated", "packet shorter than the 13-byte header")
    return HEADER.unpack_from(data)
