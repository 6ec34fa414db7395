"""Server side of the UDP protocol, sans-IO: handshake, connections, keep-alive, timeouts.

:class:`ServerEndpoint` takes datagrams (bytes, source address, ``now``) and returns events;
replies it wants sent go to ``outbox`` as (bytes, address) pairs, and packets the server builds
for a connection are returned to the caller, who sends them however it likes.

Handshake (netcode.io-style, see SPEC.md section 2): HELLO -> stateless CHALLENGE cookie ->
CONNECT echoing it -> ACCEPT. Until a client echoes a valid cookie, the endpoint keeps no
state for its address and never answers with more bytes than it received, so it can be used
neither to spoof a connection nor to amplify traffic toward a victim. Whether a connect token
is required and valid is the driver's decision (the ConnectRequest carries the CONNECT); a
connection the driver accepts with a key (``accept(..., key=...)``, SPEC 3) has every packet
tagged both ways, and a connected packet whose tag is wrong is dropped (``bad_tag``) before
its salt, sequence, acks or type are looked at.

Must not: open sockets, read clocks, sleep, log, or know what payloads mean.
"""

from __future__ import annotations

import hmac
import os
from typing import Callable

from protocol import packets as P
from protocol.cookie import CookieJar
from protocol.errors import ProtocolError
from protocol.events import ConnectRequest, Disconnected, Received
from protocol.link import Link
from protocol.tokens import TAG_SIZE, seal, tagger


NO_EVENTS: tuple = ()
_NO_ACKS: tuple = ()  # passed to on_received when a packet acknowledges nothing new
_HEADER_SIZE = P.HEADER_SIZE
_MAX_DATAGRAM = P.MAX_DATAGRAM
_DISCONNECT = P.DISCONNECT
# Connected packets handled on the fast path: all but DISCONNECT, which ends the connection.
_FAST_TYPES = P.CONNECTED_TYPES
_unpack_header = P.HEADER.unpack_from
_TAG_SIZE = TAG_SIZE
_compare = hmac.compare_digest


class ServerConnection:
    """One accepted client: its address, session salt, packet link state and, for a client
    that presented a connect token, the connect key that tags its packets (b"": none)."""

    __slots__ = ("addr", "nonce", "salt", "key", "tagger", "link", "accept_packet", "cookie_mac", "user", "closed")

    def __init__(self, addr: tuple, nonce: int, salt: int, now: float) -> None:
        self.addr = addr
        self.nonce = nonce
        self.salt = salt
        self.key = b""
        self.tagger = None  # protocol.tokens.tagger(key) when the connection has a key
        self.link = Link(now)
        self.accept_packet = b""
        self.cookie_mac = b""
        self.user: object = None  # the driver's own per-connection object
        self.closed = False


class ServerEndpoint:
    def __init__(
        self,
        *,
        secret: bytes,
        version: int,
        cookie_lifetime: float = 10.0,
        timeout: float = 5.0,
        keepalive_interval: float = 1.0,
        max_clients: int = 2000,
        random_bytes: Callable[[int], bytes] = os.urandom,
        trusted: bool = False,
        on_received: Callable | None = None,
    ) -> None:
        """``trusted``: the transport already proves who the peer is (a WebRTC data channel or
        a WebSocket, one peer per connection): HELLO is answered with ACCEPT at once, no
        cookie. Never set it for UDP.

        ``on_received``: if set (here or later, as the attribute), every accepted connected
        packet but DISCONNECT is handed to ``on_received(conn, ptype, seq, payload, acked,
        now)`` instead of being returned as a :class:`Received` event (``acked``: the newly
        acknowledged sequence numbers, a list, or an empty tuple). It saves an event object
        and a dispatch per packet on the hot path, the INPUT packets of every client.

        ``on_drop``: if set (as the attribute), every datagram dropped is also reported as
        ``on_drop(reason, addr, now)`` (the driver may count them by address), after it is
        counted in ``drops``."""
        self.version = version
        self.trusted = trusted
        self.cookies = CookieJar(secret, cookie_lifetime)
        self.timeout = timeout
        self.keepalive_interval = keepalive_interval
        self.max_clients = max_clients
        self._random = random_bytes
        self.connections: dict[tuple, ServerConnection] = {}
        self._pending: dict[tuple, tuple[int, bytes]] = {}  # addr -> (nonce, mac) of a ConnectRequest
        self._used_cookies: dict[bytes, float] = {}  # MAC -> expiry, for replay refusal
        self.outbox: list[tuple[bytes, tuple]] = []
        self.drops: dict[str, int] = {}
        self.bytes_in_unproven = 0
        self.bytes_out_unproven = 0
        self.on_received = on_received
        self.on_drop: Callable[[str, tuple, float], None] | None = None

    # -- counters -------------------------------------------------------------------------
    def _drop(self, reason: str, addr: tuple, now: float) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        on_drop = self.on_drop
        if on_drop is not None:
            on_drop(reason, addr, now)

    def _reply_unproven(self, data: bytes, addr: tuple, received: int) -> None:
        # The amplification rule, enforced in one place.
        if len(data) > received:
            raise AssertionError("reply to an unproven address larger than its request")
        self.bytes_out_unproven += len(data)
        self.outbox.append((data, addr))

    # -- input ----------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: tuple, now: float) -> tuple:
        """Processes one datagram; returns a tuple of events (empty if dropped or handled).

        Drops are counted in ``drops`` by reason. The first branch handles every
        well-sized connected packet; the general path below sees handshake packets and
        refuses the rest.
        """
        if _HEADER_SIZE <= len(data) <= _MAX_DATAGRAM and data[0] in _FAST_TYPES:
            conn = self.connections.get(addr)
            if conn is None:
                self._drop("unknown_address", addr, now)
                return NO_EVENTS
            keyed = conn.tagger
            if keyed is not None:  # the tag first: nothing of the packet is believed before it (SPEC 3)
                data, tag, keyed = data[:-_TAG_SIZE], data[-_TAG_SIZE:], keyed.copy()
                keyed.update(data)
                if not _compare(keyed.digest(), tag) or len(data) < _HEADER_SIZE:
                    self._drop("bad_tag", addr, now)
                    return NO_EVENTS
            ptype, salt, seq, ack, ack_bits = _unpack_header(data)
            if salt != conn.salt:
                self._drop("bad_salt", addr, now)
                return NO_EVENTS
            link = conn.link
            if not link.accept(seq):
                self._drop("duplicate_or_stale", addr, now)
                return NO_EVENTS
            link.last_recv = now
            acked = link.process_acks(ack, ack_bits, now) if link.pending else _NO_ACKS
            if ptype == _DISCONNECT:
                reason = data[_HEADER_SIZE] if len(data) > _HEADER_SIZE else P.DISCONNECT_CLIENT_LEFT
                self._close(conn)
                return (Disconnected(conn, P.DISCONNECT_REASONS.get(reason, "client_left")),)
            on_received = self.on_received
            if on_received is not None:
                on_received(conn, ptype, seq, data[_HEADER_SIZE:], acked, now)
                return NO_EVENTS
            return (Received(conn, ptype, seq, data[_HEADER_SIZE:], acked or []),)
        try:
            ptype = P.packet_type(data)
            if ptype in P.CONNECTED_TYPES:
                conn = self.connections.get(addr)
                if conn is None:
                    self._drop("unknown_address", addr, now)
                    return NO_EVENTS
                P.decode_header(data)  # only a packet shorter than the header gets here: refused
                return NO_EVENTS
            self.bytes_in_unproven += len(data)
            if ptype == P.HELLO:
                return self._on_hello(data, addr, now)
            if ptype == P.CONNECT:
                return self._on_connect(data, addr, now)
            self._drop("bad_type", addr, now)
            return NO_EVENTS
        except ProtocolError as exc:
            self._drop(exc.reason, addr, now)
            return NO_EVENTS

    def _on_hello(self, data: bytes, addr: tuple, now: float):
        version, nonce, token = P.decode_hello(data)
        if version != self.version:
            self._drop("version_mismatch", addr, now)
            text = f"server speaks protocol {self.version}, client {version}"
            self._reply_unproven(P.encode_refuse(P.REFUSE_VERSION, self.version, nonce, text, len(data)), addr, len(data))
            return NO_EVENTS
        if self.trusted:
            return self._admit(addr, nonce, token, b"", now)
        cookie_ms, mac = self.cookies.make(version, addr, nonce, now)
        self._reply_unproven(P.encode_challenge(version, nonce, cookie_ms, mac), addr, len(data))
        return NO_EVENTS

    def _on_connect(self, data: bytes, addr: tuple, now: float):
        if self.trusted:
            self._drop("bad_type", addr, now)
            return NO_EVENTS
        version, nonce, cookie_ms, mac, token = P.decode_connect(data)
        if version != self.version:
            self._drop("version_mismatch", addr, now)
            return NO_EVENTS
        verdict = self.cookies.check(version, addr, nonce, cookie_ms, mac, now)
        if verdict == "forged":
            self._drop("forged_cookie", addr, now)  # silently: nothing proves this address is real
            return NO_EVENTS
        if verdict == "stale":
            self._drop("stale_cookie", addr, now)
            self._reply_unproven(P.encode_refuse(P.REFUSE_STALE_COOKIE, self.version, nonce, "cookie expired", len(data)), addr, len(data))
            return NO_EVENTS
        if mac in self._used_cookies and not self._is_accept_retry(addr, nonce, mac):
            # A cookie opens at most one connection, ever: used again for anything but the
            # retry of the connection it opened (its ACCEPT was lost), it is a replay.
            self._drop("replayed_cookie", addr, now)
            self.outbox.append((P.encode_refuse(P.REFUSE_REPLAYED_COOKIE, self.version, nonce, "cookie already used", len(data)), addr))
            return NO_EVENTS
        return self._admit(addr, nonce, token, mac, now, data)

    def _is_accept_retry(self, addr: tuple, nonce: int, mac: bytes) -> bool:
        conn = self.connections.get(addr)
        return conn is not None and conn.cookie_mac == mac and conn.nonce == nonce

    def _admit(self, addr: tuple, nonce: int, token: bytes, mac: bytes, now: float, packet: bytes = b""):
        """The peer is proven (valid cookie, or a trusted transport). ``packet``: the CONNECT
        (UDP), for the driver's connect token check."""
        conn = self.connections.get(addr)
        if conn is not None:
            if conn.nonce == nonce:  # our ACCEPT was lost: say it again
                self.outbox.append((conn.accept_packet, addr))
                return NO_EVENTS
            # The client restarted on the same address. The old connection stays until the
            # driver accepts the new one: a request it refuses (say, without a valid connect
            # token, from someone who only sees the traffic) ends nothing.
            self._pending[addr] = (nonce, mac)
            if mac:
                self._used_cookies[mac] = now + self.cookies.lifetime + 1.0
            return (ConnectRequest(addr, nonce, token, packet, conn),)
        if len(self.connections) >= self.max_clients:
            self._drop("server_full", addr, now)
            self.outbox.append((P.encode_refuse(P.REFUSE_FULL, self.version, nonce, "server full", P.HANDSHAKE_SIZE), addr))
            return NO_EVENTS
        self._pending[addr] = (nonce, mac)
        if mac:
            self._used_cookies[mac] = now + self.cookies.lifetime + 1.0
        return (ConnectRequest(addr, nonce, token, packet),)

    def accept(self, request: ConnectRequest, welcome: bytes, now: float, key: bytes = b"") -> ServerConnection:
        """Accepts a ConnectRequest: creates the connection and queues ACCEPT (with Welcome).
        The connection it ``replaces``, if any, is closed here, without a DISCONNECT.

        ``key``: the connect key of the client's token (checked by the driver): the ACCEPT and
        every packet of the connection, both ways, then carry a tag (SPEC 3). Never for a
        trusted transport."""
        if key and self.trusted:
            raise ValueError("a trusted transport's connections carry no tags")
        nonce, mac = self._pending.pop(request.addr)
        old = self.connections.get(request.addr)
        if old is not None:  # request.replaces: the driver has ended its own state for it
            self._close(old)
        salt = int.from_bytes(self._random(4), "little") or 1
        conn = ServerConnection(request.addr, nonce, salt, now)
        conn.cookie_mac = mac
        conn.key = key
        conn.tagger = tagger(key) if key else None
        accept = P.encode_accept(nonce, salt, welcome)
        conn.accept_packet = seal(accept, key) if key else accept
        self.connections[request.addr] = conn
        self.outbox.append((conn.accept_packet, request.addr))
        return conn

    def refuse(self, request: ConnectRequest, reason: int, text: str) -> None:
        nonce, _ = self._pending.pop(request.addr)
        self.outbox.append((P.encode_refuse(reason, self.version, nonce, text, P.HANDSHAKE_SIZE), request.addr))

    # -- output ---------------------------------------------------------------------------
    def packet(self, conn: ServerConnection, ptype: int, payload: bytes, now: float) -> bytes:
        """Builds a connected packet for ``conn`` (the caller sends it)."""
        seq, ack, bits = conn.link.next_send(now)
        data = P.HEADER.pack(ptype, conn.salt, seq, ack, bits) + payload
        if conn.tagger is None:
            return data
        tag = conn.tagger.copy()
        tag.update(data)
        return data + tag.digest()

    def disconnect(self, conn: ServerConnection, reason: int, now: float, text: str = "") -> bytes:
        """Ends a connection; returns the DISCONNECT packet to send (send it twice if you like).
        ``text``: why, for the player (``world_closed`` carries one; SPEC section 3)."""
        data = self.packet(conn, P.DISCONNECT, P.disconnect_payload(reason, text), now)
        self._close(conn)
        return data

    def drop(self, conn: ServerConnection) -> None:
        """Forgets a connection whose transport is gone, without sending anything."""
        self._close(conn)

    def _close(self, conn: ServerConnection) -> None:
        conn.closed = True
        if self.connections.get(conn.addr) is conn:
            del self.connections[conn.addr]

    def poll(self, now: float) -> list:
        """Timeouts and keep-alives; call a few times a second. Returns Disconnected events.

        A connection silent for longer than ``timeout`` is closed, and one DISCONNECT with
        reason ``timeout`` goes to its address (outbox): a client that is still alive but whose
        packets stopped arriving learns it was dropped instead of waiting for its own timeout.
        """
        events = []
        for conn in list(self.connections.values()):
            link = conn.link
            if now - link.last_recv > self.timeout:
                self.outbox.append((self.disconnect(conn, P.DISCONNECT_TIMEOUT, now), conn.addr))
                events.append(Disconnected(conn, "timeout"))
            elif now - link.last_send >= self.keepalive_interval:
                self.outbox.append((self.packet(conn, P.KEEPALIVE, b"", now), conn.addr))
        if self._used_cookies:
            expired = [mac for mac, until in self._used_cookies.items() if until < now]
            for mac in expired:
                del self._used_cookies[mac]
        return events
