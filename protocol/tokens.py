"""Connect tokens and packet tags of the UDP protocol, sans-IO (SPEC.md sections 2, 3 and 8).

A **connect token** is what a player gets from the server's HTTP join (over HTTP or HTTPS,
never over UDP) together with its **connect key**. The token is a short opaque value the
client puts in the token field of HELLO and CONNECT; it names the player (an identity number)
and its expiry. The key is derived from the token under a secret only the server knows, so
whoever sees the token on the wire (anyone on the UDP path) cannot compute it. The client
proves it holds the key in CONNECT, and from then on every connected packet of that connection
carries a **tag**: 8 bytes of keyed BLAKE2b over the packet, checked before anything else of
the packet is believed. (BLAKE2b rather than BLAKE2s: as fast on an INPUT packet here, 0.48
against 0.45 us, and 1.8 times faster on a 1,200-byte snapshot part, 2.0 against 3.5 us,
which the server tags for every client every tick.)

:func:`tag`, :func:`seal`, :func:`unseal`, :func:`sign_connect` and :func:`connect_signed_by`
are the wire rules (SPEC 2 and 3) that client and server share. :class:`ConnectTokens` is the
server side: it issues tokens with their keys and opens a presented token (format, expiry,
proof of the key), with ``now`` passed in.

Must not: keep state beyond its secret (which tokens were used, which identities exist: the
server decides, ``worldserver.connect_tokens``), read a clock, draw randomness except through
the ``random_bytes`` it is given, or do I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Callable

import attrs

from protocol.errors import ProtocolError
from protocol.packets import HANDSHAKE_SIZE

__all__ = [
    "CONNECT_SIGNED",
    "ConnectTokens",
    "KEY_SIZE",
    "OpenedToken",
    "TAG_SIZE",
    "TOKEN_FORMAT",
    "TOKEN_SIZE",
    "connect_signed_by",
    "read_token",
    "seal",
    "sign_connect",
    "tag",
    "tagger",
    "unseal",
]

TAG_SIZE = 8  # bytes of tag at the end of every connected packet of a keyed connection
KEY_SIZE = 32  # bytes of a connect key
TOKEN_FORMAT = 1
# format u8, identity u64, expiry u64 (ms of the server's clock), 15 random bytes
_TOKEN = struct.Struct("<BQQ15s")
TOKEN_SIZE = _TOKEN.size  # 32
# A CONNECT with a connect token ends with the tag of its first 120 bytes under the key.
CONNECT_SIGNED = HANDSHAKE_SIZE - TAG_SIZE

_blake2s = hashlib.blake2s
_blake2b = hashlib.blake2b
_compare = hmac.compare_digest


def tagger(key: bytes):
    """The keyed BLAKE2b state of ``key`` before any data: ``t = tagger(key).copy();
    t.update(data); t.digest()`` is ``tag(data, key)`` without preparing the key each time
    (what the endpoints keep per connection)."""
    return _blake2b(key=key, digest_size=TAG_SIZE)


def tag(data: bytes, key: bytes) -> bytes:
    """The 8-byte tag of ``data``: BLAKE2b (RFC 7693) keyed with ``key``, output length 8."""
    return _blake2b(data, key=key, digest_size=TAG_SIZE).digest()


def seal(data: bytes, key: bytes) -> bytes:
    """``data`` with its tag appended (a connected packet or ACCEPT of a keyed connection)."""
    return data + _blake2b(data, key=key, digest_size=TAG_SIZE).digest()


def unseal(data: bytes, key: bytes) -> bytes | None:
    """``data`` without its tag if the tag is right, else None (compared in constant time)."""
    if len(data) < TAG_SIZE:
        return None
    body = data[:-TAG_SIZE]
    if not _compare(_blake2b(body, key=key, digest_size=TAG_SIZE).digest(), data[-TAG_SIZE:]):
        return None
    return body


def sign_connect(packet: bytes, key: bytes) -> bytes:
    """A 128-byte CONNECT whose last 8 bytes are replaced by the tag of the first 120."""
    if len(packet) != HANDSHAKE_SIZE:
        raise ValueError(f"a CONNECT is {HANDSHAKE_SIZE} bytes")
    head = packet[:CONNECT_SIGNED]
    if any(packet[CONNECT_SIGNED:]):
        raise ValueError("the token leaves no room for the CONNECT's tag")
    return head + tag(head, key)


def connect_signed_by(packet: bytes, key: bytes) -> bool:
    """Whether the CONNECT ``packet`` carries the tag of ``key`` (proof the sender holds it)."""
    return len(packet) == HANDSHAKE_SIZE and _compare(
        tag(packet[:CONNECT_SIGNED], key), packet[CONNECT_SIGNED:])


def read_token(token: bytes) -> tuple[int, int]:
    """``(identity, expires_ms)`` of a connect token; ProtocolError ``bad_token`` if it is not
    one. Says nothing about whether the server issued it: :meth:`ConnectTokens.open` does."""
    if len(token) != TOKEN_SIZE:
        raise ProtocolError("bad_token", f"a connect token is {TOKEN_SIZE} bytes, got {len(token)}")
    fmt, identity, expires_ms, _ = _TOKEN.unpack(token)
    if fmt != TOKEN_FORMAT:
        raise ProtocolError("bad_token", f"connect token format {fmt}, expected {TOKEN_FORMAT}")
    return identity, expires_ms


@attrs.frozen
class OpenedToken:
    """A connect token that the server issued, not expired, presented with its key's proof."""

    token: bytes
    identity: int
    expires_ms: int
    key: bytes


class ConnectTokens:
    """Issues connect tokens and opens presented ones, under one secret.

    Keys are ``BLAKE2s(token, key=secret', person="wsconkey")`` with ``secret'`` derived from
    the ``secret`` given (the server's, at least 16 bytes) and ``epoch`` (bytes the server draws
    at each start: tokens and keys of an earlier run, whose clock was another, do not open).
    How a key is made is the server's business; clients only receive it (SPEC 8).
    """

    def __init__(self, secret: bytes, lifetime: float, *, epoch: bytes = b"",
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if len(secret) < 16:
            raise ValueError("the connect token secret must be at least 16 bytes")
        if not lifetime > 0:
            raise ValueError(f"a connect token lifetime must be > 0 s, got {lifetime!r}")
        if len(secret) > 64:  # BLAKE2b keys are at most 64 bytes
            secret = hashlib.blake2b(secret).digest()
        self._secret = hashlib.blake2b(b"connect tokens|" + epoch, key=secret, digest_size=32).digest()
        self.lifetime = float(lifetime)
        self._random = random_bytes

    def key(self, token: bytes) -> bytes:
        """The connect key of ``token`` (any bytes: the key of a forged token is as secret)."""
        return _blake2s(token, key=self._secret, digest_size=KEY_SIZE, person=b"wsconkey").digest()

    def issue(self, identity: int, now: float) -> tuple[bytes, bytes]:
        """A fresh ``(token, key)`` for ``identity``, valid for ``lifetime`` seconds from
        ``now`` (the server's clock, seconds)."""
        if not 0 <= identity < 1 << 64:
            raise ValueError(f"identity {identity!r} does not fit a u64")
        expires_ms = int((now + self.lifetime) * 1000)
        token = _TOKEN.pack(TOKEN_FORMAT, identity, max(0, expires_ms), self._random(15))
        return token, self.key(token)

    def open(self, token: bytes, connect: bytes, now: float) -> OpenedToken | str:
        """Checks a token presented in the CONNECT ``connect`` at ``now``.

        Returns the :class:`OpenedToken`, or why not: ``"invalid"`` (not a connect token, or
        the CONNECT is not signed with its key -- a token altered, made up, or of another
        server or run), ``"expired"``. Expiry is checked on the token's own field only after
        the proof, so that a made-up token never reads as merely expired.
        """
        try:
            identity, expires_ms = read_token(token)
        except ProtocolError:
            return "invalid"
        key = self.key(token)
        if not connect_signed_by(connect, key):
            return "invalid"
        if now * 1000 >= expires_ms:
            return "expired"
        return OpenedToken(token, identity, expires_ms, key)
