"""The native protocol over message transports: WebRTC data channels and WebSockets.

Each open channel or socket is a peer, keyed by ``(kind, id)``. Its binary messages are
packets of protocol/SPEC.md, handled by a *trusted* sans-IO endpoint (the transport already
proves the peer, so HELLO is answered with ACCEPT at once) and :class:`NativeSessions`.
Snapshots go out through the peer's ``send``; when the peer says it cannot take more right
now (a WebRTC channel whose ``bufferedAmount`` is non-zero), the snapshot is skipped and
counted rather than queued: it would be stale by the time it left. The service counts the
bytes of the messages it receives and hands to ``send``, and the snapshots it sends
(``bytes_in``, ``bytes_out``, ``snapshots_sent``: read by worldserver/metrics.py).

Must not: know about HTTP, aiortc or WebSocket frames (the transport modules adapt those), or
block: every method here is synchronous and called in trio context.
"""

from __future__ import annotations

from typing import Callable

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.events import Disconnected
from protocol.server import ServerConnection, ServerEndpoint
from worldserver.config import Config
from worldserver.native import NativeSessions
from worldserver.simulation import Simulation
from worldserver.stats import Stats


class StreamPeer:
    """A peer's transport handles and, once accepted, its snapshot sender."""

    __slots__ = ("service", "key", "send", "can_send", "conn", "address")

    def __init__(self, service: "StreamService", key: tuple, send, can_send, address: str = "") -> None:
        self.service = service
        self.key = key
        self.send = send
        self.can_send = can_send
        self.address = address  # the client's address, for the log (see native.client_address)
        self.conn: ServerConnection | None = None

    def send_snapshot(self, session, parts, now: float) -> list[int] | None:
        conn = self.conn
        if conn is None or conn.closed:
            return None
        if self.can_send is not None and not self.can_send():
            self.service.stats.incr(f"drop.{self.service.kind}.snapshot_backlog")
            return None
        service = self.service
        packet, send = service.endpoint.packet, self.send
        seqs = []
        size = 0
        for payload in parts:
            seqs.append(conn.link.local_seq)
            data = packet(conn, P.SNAPSHOT, payload, now)
            size += len(data)
            send(data)
        service.bytes_out += size
        service.snapshots_sent += 1
        return seqs


class StreamService:
    def __init__(self, kind: str, config: Config, sim: Simulation, stats: Stats, identities=None) -> None:
        self.kind = kind
        self.stats = stats
        self.bytes_in = 0  # message bytes received from peers
        self.bytes_out = 0  # message bytes handed to the peers' send
        self.snapshots_sent = 0
        net = config.net
        self.endpoint = ServerEndpoint(
            secret=b"\0" * 32,  # unused: trusted endpoints hand out no cookies
            version=PROTOCOL_VERSION,
            timeout=net.timeout,
            keepalive_interval=net.keepalive_interval,
            max_clients=net.max_clients,
            trusted=True,
        )
        self.peers: dict[tuple, StreamPeer] = {}
        self.sessions = NativeSessions(
            kind=kind,
            config=config,
            endpoint=self.endpoint,
            sim=sim,
            stats=stats,
            identities=identities,
            make_sender=self.peers.__getitem__,  # the peer whose HELLO was accepted
        )

    def open_peer(self, key, send: Callable[[bytes], None], can_send: Callable[[], bool] | None = None,
                  address: str = "") -> None:
        """A channel or socket opened. ``send`` sends one binary message and never blocks;
        ``can_send() is False`` makes the next snapshot be skipped (back-pressure); ``address``:
        where the client is (``host:port``), for the join and leave lines of the log."""
        key = (self.kind, key)
        self.peers[key] = StreamPeer(self, key, send, can_send, address)

    def on_message(self, key, data: bytes, now: float) -> None:
        """One binary message from a peer."""
        peer = self.peers.get((self.kind, key))
        if peer is None:
            self.stats.incr(f"drop.{self.kind}.unknown_peer")
            return
        self.bytes_in += len(data)
        events = self.endpoint.receive_datagram(data, peer.key, now)
        if events:
            self.sessions.handle(events, now)
        self.flush()

    def close_peer(self, key, reason: str) -> None:
        """The channel or socket closed (or failed): the avatar despawns."""
        peer = self.peers.pop((self.kind, key), None)
        if peer is None:
            return
        conn = self.endpoint.connections.get(peer.key)
        if conn is not None:
            self.endpoint.drop(conn)
            self.sessions.on_disconnected(Disconnected(conn, reason))

    def flush(self) -> None:
        outbox, self.endpoint.outbox = self.endpoint.outbox, []
        for data, key in outbox:
            peer = self.peers.get(key)
            if peer is not None:
                self.bytes_out += len(data)
                peer.send(data)

    def poll(self, now: float) -> None:
        self.sessions.poll(now)
        self.flush()

    def shutdown(self, now: float) -> None:
        def send(data: bytes, key: tuple) -> None:
            peer = self.peers.get(key)
            if peer is not None:
                self.bytes_out += len(data)
                peer.send(data)

        self.sessions.shutdown(now, send)

    @property
    def count(self) -> int:
        return len(self.endpoint.connections)
