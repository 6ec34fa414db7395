"""Serves native clients over worldserver's own UDP protocol.

Joins the sans-IO :class:`protocol.server.ServerEndpoint` (cookie handshake) to the
:class:`UdpTransport` socket; endpoint events go to :class:`NativeSessions`. Everything here
runs synchronously per datagram on the trio thread.

Must not: run the tick or encode snapshots (the simulation does), or block.
"""

from __future__ import annotations

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.server import ServerConnection, ServerEndpoint
from worldserver.config import Config
from worldserver.native import NativeSessions
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.udp import UdpTransport


class UdpPeer:
    """The snapshot sink of one UDP client (``session.sink``, see worldserver/snapshots.py)."""

    __slots__ = ("service", "conn")

    def __init__(self, service: "UdpService", conn: ServerConnection | None) -> None:
        self.service = service
        self.conn = conn

    def send_snapshot(self, session, parts, now: float) -> list[int] | None:
        conn = self.conn
        if conn.closed:
            return None
        send, packet, addr = self.service.transport.send, self.service.endpoint.packet, conn.addr
        seqs = []
        for payload in parts:
            seqs.append(conn.link.local_seq)
            send(packet(conn, P.SNAPSHOT, payload, now), addr)
        return seqs


class UdpService:
    def __init__(self, config: Config, sim: Simulation, stats: Stats, secret: bytes, identities=None) -> None:
        self.sim = sim
        self.stats = stats
        self.transport = UdpTransport(
            config.udp.host, config.udp.port, stats, config.udp.recv_batch, config.udp.recv_coalesce_ms / 1000.0
        )
        net = config.net
        self.endpoint = ServerEndpoint(
            secret=secret,
            version=PROTOCOL_VERSION,
            cookie_lifetime=net.cookie_lifetime,
            timeout=net.timeout,
            keepalive_interval=net.keepalive_interval,
            max_clients=net.max_clients,
        )
        self.sessions = NativeSessions(
            kind="udp",
            config=config,
            endpoint=self.endpoint,
            sim=sim,
            stats=stats,
            identities=identities,
            make_sender=lambda addr: UdpPeer(self, None),
        )

    def handle_datagram(self, data: bytes, addr: tuple, now: float) -> None:
        events = self.endpoint.receive_datagram(data, addr, now)
        if events:
            self.sessions.handle(events, now)
        if self.endpoint.outbox:
            self.flush()

    def poll(self, now: float) -> None:
        """Timeouts and keep-alives; a few times a second."""
        self.sessions.poll(now)
        self.flush()

    def flush(self) -> None:
        outbox, self.endpoint.outbox = self.endpoint.outbox, []
        for data, addr in outbox:
            self.transport.send(data, addr)

    def shutdown(self, now: float) -> None:
        self.sessions.shutdown(now, self.transport.send)

    def close(self) -> None:
        self.transport.close()
