"""Serves native clients over worldserver's own UDP protocol.

Joins the sans-IO :class:`protocol.server.ServerEndpoint` to the :class:`UdpTransport` socket and
the :class:`Simulation`: handshakes become sessions (with a Welcome), INPUT packets become
queued inputs, acknowledgements move each client's snapshot baseline, and disconnects and
timeouts despawn avatars. Everything here runs synchronously per datagram on the trio thread.

Must not: run the tick or encode snapshots (the simulation does), or block.
"""

from __future__ import annotations

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.errors import ProtocolError
from protocol.events import ConnectRequest, Disconnected, Received
from protocol.messages import decode_inputs
from protocol.server import ServerConnection, ServerEndpoint
from worldserver.config import Config
from worldserver.logs import get_logger
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.udp import UdpTransport
from worldserver.world import WorldFull

log = get_logger("worldserver.udp")


class UdpPeer:
    """The snapshot sender of one UDP client (what the simulation calls ``session.conn``)."""

    __slots__ = ("service", "conn")

    def __init__(self, service: "UdpService", conn: ServerConnection) -> None:
        self.service = service
        self.conn = conn

    def send_snapshot(self, session, payload: bytes, now: float) -> int | None:
        conn = self.conn
        if conn.closed:
            return None
        seq = conn.link.local_seq
        self.service.transport.send(self.service.endpoint.packet(conn, P.SNAPSHOT, payload, now), conn.addr)
        return seq


class UdpService:
    def __init__(self, config: Config, sim: Simulation, stats: Stats, secret: bytes) -> None:
        self.config = config
        self.sim = sim
        self.stats = stats
        self.transport = UdpTransport(config.udp.host, config.udp.port, stats, config.udp.recv_batch)
        net = config.net
        self.endpoint = ServerEndpoint(
            secret=secret,
            version=PROTOCOL_VERSION,
            cookie_lifetime=net.cookie_lifetime,
            timeout=net.timeout,
            keepalive_interval=net.keepalive_interval,
            max_clients=net.max_clients,
        )
        self.input_rate = config.sim.input_rate_limit
        self.input_burst = config.sim.input_burst

    # -- receiving ------------------------------------------------------------------------
    def handle_datagram(self, data: bytes, addr: tuple, now: float) -> None:
        for event in self.endpoint.receive_datagram(data, addr, now):
            if type(event) is Received:
                self._on_received(event, now)
            elif type(event) is ConnectRequest:
                self._on_connect_request(event, now)
            elif type(event) is Disconnected:
                self._on_disconnected(event)
        if self.endpoint.outbox:
            self.flush()

    def _on_received(self, event: Received, now: float) -> None:
        session = event.conn.user
        if event.acked:
            session.on_acked(event.acked)
        if event.ptype == P.INPUT:
            try:
                inputs = decode_inputs(event.payload)
            except ProtocolError as exc:
                self.stats.incr(f"drop.bad_input.{exc.reason}")
                return
            session.take_inputs(inputs, now, self.input_rate, self.input_burst, self.stats)

    def _on_connect_request(self, request: ConnectRequest, now: float) -> None:
        try:
            peer = UdpPeer(self, None)  # connection attached below, once accepted
            session = self.sim.join(peer, now)
        except WorldFull:
            self.stats.incr("refused.world_full")
            self.endpoint.refuse(request, P.REFUSE_FULL, "world full")
            return
        conn = self.endpoint.accept(request, self.sim.welcome(session).encode(), now)
        peer.conn = conn
        conn.user = session
        self.stats.incr("clients.joined")
        log.debug("client joined", addr=conn.addr, entity=session.entity_id)

    def _on_disconnected(self, event: Disconnected) -> None:
        session = event.conn.user
        if session is not None:
            self.sim.leave(session)
            event.conn.user = None
        self.stats.incr(f"clients.left.{event.reason}")
        log.debug("client left", addr=event.conn.addr, reason=event.reason)

    # -- periodic -------------------------------------------------------------------------
    def poll(self, now: float) -> None:
        """Timeouts and keep-alives; a few times a second."""
        for event in self.endpoint.poll(now):
            self._on_disconnected(event)
        self.flush()

    def flush(self) -> None:
        outbox, self.endpoint.outbox = self.endpoint.outbox, []
        for data, addr in outbox:
            self.transport.send(data, addr)

    def shutdown(self, now: float) -> None:
        """Tells every client the server is going away (twice, in case one is lost)."""
        for conn in list(self.endpoint.connections.values()):
            packet = self.endpoint.disconnect(conn, P.DISCONNECT_SERVER_SHUTDOWN, now)
            self.transport.send(packet, conn.addr)
            self.transport.send(packet, conn.addr)
            if conn.user is not None:
                self.sim.leave(conn.user)
                conn.user = None

    def close(self) -> None:
        self.transport.close()
