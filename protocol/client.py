"""Client side of the UDP protocol, sans-IO: handshake with retries, link state, timeouts.

:class:`ClientConnection` produces the datagrams a client must send (``connect``, ``packet``,
``poll`` for handshake resends and keep-alives) and turns received datagrams into events.
It talks to one server; the driver owns the socket and the clock. With a connect key (from
the server's HTTP join, next to the connect token), CONNECT proves the key and the ACCEPT and
every connected packet both ways carry a tag (SPEC 2 and 3): a packet whose tag is wrong is
dropped (``bad_tag``) before anything in it is believed.

Must not: open sockets, read clocks, sleep, or interpret payloads (snapshots, inputs).
"""

from __future__ import annotations

import hmac

from protocol import packets as P
from protocol.errors import ProtocolError
from protocol.events import Connected, Disconnected, Received, Refused
from protocol.link import Link
from protocol.tokens import TAG_SIZE, sign_connect, tagger

IDLE, HELLO_SENT, CONNECT_SENT, CONNECTED, CLOSED = "idle", "hello", "connect", "connected", "closed"


class ClientConnection:
    def __init__(
        self,
        *,
        version: int,
        nonce: int,
        timeout: float = 5.0,
        keepalive_interval: float = 1.0,
        handshake_timeout: float = 5.0,
        resend_interval: float = 0.25,
        token: bytes = b"",
        key: bytes = b"",
        trusted: bool = False,
    ) -> None:
        """``token``: over UDP the connect token and ``key`` its connect key, both from the
        server's HTTP join (b"" for none: an anonymous client, which only an open server
        accepts); over a trusted transport the join token (and no key).
        ``trusted``: the transport proves the peer (WebRTC, WebSocket): after HELLO the server
        answers ACCEPT directly, with no CHALLENGE/CONNECT round trip."""
        if key and trusted:
            raise ValueError("a trusted transport's packets carry no tags: no key")
        self.version = version
        self.token = token
        self.key = key
        self._tagger = tagger(key) if key else None
        self.trusted = trusted
        self.nonce = nonce & 0xFFFFFFFFFFFFFFFF
        self.timeout = timeout
        self.keepalive_interval = keepalive_interval
        self.handshake_timeout = handshake_timeout
        self.resend_interval = resend_interval
        self.state = IDLE
        self.salt = 0
        self.link: Link | None = None
        self.close_reason = ""
        self.close_text = ""  # the text of the server's DISCONNECT (world_closed says why)
        self.drops: dict[str, int] = {}
        self._handshake_packet = b""
        self._handshake_started = 0.0
        self._last_handshake_send = 0.0

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def connect(self, now: float) -> bytes:
        """Starts the handshake; returns the HELLO datagram to send."""
        self.state = HELLO_SENT
        self._handshake_packet = P.encode_hello(self.version, self.nonce, self.token)
        self._handshake_started = now
        self._last_handshake_send = now
        return self._handshake_packet

    def receive_datagram(self, data: bytes, now: float) -> tuple[list, list[bytes]]:
        """Returns (events, datagrams to send)."""
        try:
            ptype = P.packet_type(data)
            if ptype in P.CONNECTED_TYPES:
                return self._receive_connected(ptype, data, now)
            if ptype == P.CHALLENGE and self.state == HELLO_SENT:
                version, nonce, cookie_ms, mac = P.decode_challenge(data)
                if nonce != self.nonce:
                    self._drop("wrong_nonce")
                    return [], []
                self.state = CONNECT_SENT
                packet = P.encode_connect(version, nonce, cookie_ms, mac, self.token)
                self._handshake_packet = sign_connect(packet, self.key) if self.key else packet
                self._last_handshake_send = now
                return [], [self._handshake_packet]
            if ptype == P.ACCEPT and (self.state == CONNECT_SENT or (self.trusted and self.state == HELLO_SENT)):
                if self.key:
                    data = self._unseal(data)
                    if data is None:
                        return [], []
                nonce, salt, welcome = P.decode_accept(data)
                if nonce != self.nonce:
                    self._drop("wrong_nonce")
                    return [], []
                self.state = CONNECTED
                self.salt = salt
                self.link = Link(now)
                return [Connected(salt, welcome)], []
            if ptype == P.REFUSE and self.state in (HELLO_SENT, CONNECT_SENT):
                reason, version, nonce, text = P.decode_refuse(data)
                if nonce != self.nonce:
                    self._drop("wrong_nonce")
                    return [], []
                name = P.REFUSE_REASONS.get(reason, f"refused_{reason}")
                if reason == P.REFUSE_STALE_COOKIE:  # start again from HELLO
                    return [], [self.connect(now)]
                self.state = CLOSED
                self.close_reason = name
                return [Refused(name, version, text)], []
            self._drop("unexpected")
            return [], []
        except ProtocolError as exc:
            self._drop(exc.reason)
            return [], []

    def _receive_connected(self, ptype: int, data: bytes, now: float):
        if self.state != CONNECTED:
            self._drop("not_connected")
            return [], []
        if self.key:  # the tag first: nothing of the packet is believed before it
            data = self._unseal(data)
            if data is None:
                return [], []
        _, salt, seq, ack, bits = P.decode_header(data)
        link = self.link
        if salt != self.salt:
            self._drop("bad_salt")
            return [], []
        if not link.accept(seq):
            self._drop("duplicate_or_stale")
            return [], []
        link.last_recv = now
        acked = link.process_acks(ack, bits, now)
        if ptype == P.DISCONNECT:
            reason = data[P.HEADER_SIZE] if len(data) > P.HEADER_SIZE else 0
            self.state = CLOSED
            self.close_reason = P.DISCONNECT_REASONS.get(reason, "server_disconnect")
            self.close_text = P.disconnect_text(data[P.HEADER_SIZE :])
            return [Disconnected(None, self.close_reason, self.close_text)], []
        return [Received(None, ptype, seq, data[P.HEADER_SIZE :], acked)], []

    def packet(self, ptype: int, payload: bytes, now: float) -> bytes:
        """Builds a connected packet (INPUT, MESSAGE, KEEPALIVE) to send."""
        if self.state != CONNECTED:
            raise RuntimeError("not connected")
        seq, ack, bits = self.link.next_send(now)
        data = P.HEADER.pack(ptype, self.salt, seq, ack, bits) + payload
        if self._tagger is None:
            return data
        tag = self._tagger.copy()
        tag.update(data)
        return data + tag.digest()

    def _unseal(self, data: bytes) -> bytes | None:
        """``data`` without its tag, or None (counted ``bad_tag``) when the tag is wrong."""
        body, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
        expected = self._tagger.copy()
        expected.update(body)
        if len(data) < TAG_SIZE or not hmac.compare_digest(expected.digest(), tag):
            self._drop("bad_tag")
            return None
        return body

    def disconnect(self, now: float) -> bytes:
        """Leaves; returns the DISCONNECT datagram (b"" if not connected)."""
        if self.state != CONNECTED:
            self.state = CLOSED
            return b""
        data = self.packet(P.DISCONNECT, bytes([P.DISCONNECT_CLIENT_LEFT]), now)
        self.state = CLOSED
        self.close_reason = "client_left"
        return data

    def poll(self, now: float) -> tuple[list, list[bytes]]:
        """Handshake resends, keep-alives and timeouts. Returns (events, datagrams)."""
        if self.state in (HELLO_SENT, CONNECT_SENT):
            if now - self._handshake_started > self.handshake_timeout:
                self.state = CLOSED
                self.close_reason = "handshake_timeout"
                return [Disconnected(None, "handshake_timeout")], []
            if now - self._last_handshake_send >= self.resend_interval:
                self._last_handshake_send = now
                return [], [self._handshake_packet]
        elif self.state == CONNECTED:
            link = self.link
            if now - link.last_recv > self.timeout:
                self.state = CLOSED
                self.close_reason = "timeout"
                return [Disconnected(None, "timeout")], []
            if now - link.last_send >= self.keepalive_interval:
                return [], [self.packet(P.KEEPALIVE, b"", now)]
        return [], []
