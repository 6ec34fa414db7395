"""Serves native clients over worldserver's own UDP protocol.

Joins the sans-IO :class:`protocol.server.ServerEndpoint` (cookie handshake) to the
:class:`UdpTransport` socket; endpoint events go to :class:`NativeSessions`. Everything here
runs synchronously per datagram on the trio thread.

Admission (``[limits]``, :mod:`worldserver.limits`): connected packets go straight to the
endpoint. A handshake packet (HELLO, CONNECT) first takes a token of its address's handshake
bucket (none left: dropped silently, ``drop.limit_udp_handshake_rate``); a HELLO that could
not lead to a connection -- the server is full, or the address already holds
``limits.connections_per_address`` -- is answered with REFUSE at once, before any cookie is
made (no longer than the HELLO, as every pre-proof reply). The cap itself is kept by
:class:`NativeSessions` when a proven CONNECT asks for a connection.

Connect tokens (``worldserver.connect_tokens``): the service's :class:`ConnectAdmission`
(``admission``, shared with the HTTP join that issues the tokens) decides whether a proven
CONNECT may in; a client admitted with a token gets tagged packets (SPEC 3).

Must not: run the tick or encode snapshots (the simulation does), or block.
"""

from __future__ import annotations

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.errors import ProtocolError
from protocol.server import ServerConnection, ServerEndpoint
from worldserver.config import Config
from worldserver.connect_tokens import ConnectAdmission
from worldserver.limits import AddressLimits
from worldserver.native import NativeSessions
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.udp import UdpTransport

_CONNECTED = P.CONNECTED_TYPES
_HELLO, _CONNECT = P.HELLO, P.CONNECT


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
        service = self.service
        send, packet, addr = service.transport.send, service.endpoint.packet, conn.addr
        seqs = []
        for payload in parts:
            seqs.append(conn.link.local_seq)
            send(packet(conn, P.SNAPSHOT, payload, now), addr)
        service.snapshots_sent += 1
        return seqs


class UdpService:
    def __init__(self, config: Config, sim: Simulation, stats: Stats, secret: bytes, identities=None,
                 limits: AddressLimits | None = None, admission: ConnectAdmission | None = None) -> None:
        """``admission``: the connect tokens to check (None: made from ``config.net``,
        ``secret`` and ``identities``; its ``issue`` gives the tokens this service accepts)."""
        self.sim = sim
        self.stats = stats
        self.snapshots_sent = 0  # snapshots handed to the socket (their bytes: transport.bytes_out)
        self.limits = limits if limits is not None else AddressLimits(config.limits)
        self.admission = admission if admission is not None else ConnectAdmission.from_config(config, secret, identities)
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
            limits=self.limits,
            address_of=_host,
            admission=self.admission,
        )

    def handle_datagram(self, data: bytes, addr: tuple, now: float) -> None:
        if data and data[0] not in _CONNECTED and not self._admit_unproven(data, addr, now):
            return
        events = self.endpoint.receive_datagram(data, addr, now)
        if events:
            self.sessions.handle(events, now)
        if self.endpoint.outbox:
            self.flush()

    def _admit_unproven(self, data: bytes, addr: tuple, now: float) -> bool:
        """Admission of a datagram that is no connected packet: True hands it to the endpoint,
        False means it was dropped or answered here (see the module docstring)."""
        ptype = data[0]
        if ptype != _HELLO and ptype != _CONNECT:
            return True  # the endpoint drops it and counts why
        limits = self.limits
        key = limits.key(addr[0])
        if not limits.handshake(key, now):
            self.stats.incr("drop.limit_udp_handshake_rate")
            return False
        endpoint = self.endpoint
        if ptype == _CONNECT or addr in endpoint.connections:  # a restart replaces its own
            return True
        full = len(endpoint.connections) >= endpoint.max_clients
        if not full and limits.may_connect(key):
            return True
        try:
            version, nonce, _ = P.decode_hello(data)
        except ProtocolError:
            return True  # malformed: the endpoint drops it and counts why
        if version != endpoint.version:
            return True  # the endpoint answers version_mismatch
        if full:
            self.stats.incr("drop.limit_udp_server_full")
            reason, text = P.REFUSE_FULL, "server full"
        else:
            self.stats.incr("drop.limit_udp_address_connections")
            reason, text = P.REFUSE_ADDRESS_LIMIT, "too many connections from your address"
        self.transport.send(P.encode_refuse(reason, version, nonce, text, len(data)), addr)
        return False

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


def _host(addr: tuple) -> str:
    return addr[0]
