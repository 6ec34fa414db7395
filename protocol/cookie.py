"""Stateless handshake cookies: prove that a client receives at the address it claims.

A cookie is ``(time_ms, mac)`` where ``mac = HMAC-SHA256(secret, version | address | nonce |
time_ms)[:16]``. The server hands it out in CHALLENGE without remembering anything and checks it
when CONNECT comes back: only a client that received the CHALLENGE at that address can echo it,
so a spoofed source address can never complete a handshake. The server keeps no per-address
state before that proof.

This module computes and checks MACs; it does not track which cookies were used (the server
endpoint does that, once the address is proven) and reads no clock.
"""

from __future__ import annotations

import hashlib
import hmac

from protocol.packets import MAC_SIZE


def address_bytes(addr: tuple) -> bytes:
    """Canonical bytes of a (host, port[, ...]) socket address."""
    return f"{addr[0]}|{addr[1]}".encode()


class CookieJar:
    """Makes and verifies cookies under one secret key."""

    def __init__(self, secret: bytes, lifetime: float) -> None:
        if len(secret) < 16:
            raise ValueError("cookie secret must be at least 16 bytes")
        self._secret = secret
        self.lifetime = lifetime

    def _mac(self, version: int, addr: tuple, nonce: int, time_ms: int) -> bytes:
        msg = b"%d|%s|%d|%d" % (version, address_bytes(addr), nonce, time_ms)
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:MAC_SIZE]

    def make(self, version: int, addr: tuple, nonce: int, now: float) -> tuple[int, bytes]:
        time_ms = int(now * 1000)
        return time_ms, self._mac(version, addr, nonce, time_ms)

    def check(self, version: int, addr: tuple, nonce: int, time_ms: int, mac: bytes, now: float) -> str:
        """Returns "ok", "forged" (MAC does not match) or "stale" (valid but expired)."""
        expected = self._mac(version, addr, nonce, time_ms)
        if not hmac.compare_digest(expected, mac):
            return "forged"
        age = now - time_ms / 1000.0
        if age > self.lifetime or age < -1.0:
            return "stale"
        return "ok"
