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

Penalties (``limits.udp_drops_per_second``, ``limits.udp_penalty``; a
:class:`~worldserver.limits.Penalties`): a sender that keeps sending what is dropped costs the
drain a dict lookup per datagram, not the parsing. Drops are counted per address key (all ports
of an address, an IPv6 /64; trusted networks never), those the endpoint makes (``bad_type``,
``bad_tag``, ``bad_salt``, malformed handshakes, forged cookies...) and the handshakes over the
address's bucket; not ``unknown_address`` (every client sends them for a while after a server
restart, and they cost no more than the penalty check) nor ``duplicate_or_stale`` (networks
reorder). More than the threshold in about a second and, for ``udp_penalty`` seconds, every
datagram from that address text is dropped first thing (``drop.udp_penalty``), except the
connected packets of its live connections: nothing that does not pass a connection's tag (or
salt) is believed to come from it, so someone who spoofs a player's address can cost that
address its new handshakes for a while but not its session (and players behind one NAT keep
theirs). A connection's own packets are penalized only for what its client provably did:
INPUTs over the session's rate or that do not decode, counted per connection with the same
threshold; then every datagram from its address and port is dropped first thing.

Must not: run the tick or encode snapshots (the simulation does), or block.
"""

from __future__ import annotations

import logging

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.errors import ProtocolError
from protocol.server import ServerConnection, ServerEndpoint
from worldserver.config import Config
from worldserver.connect_tokens import ConnectAdmission
from worldserver.limits import AddressLimits, Penalties
from worldserver.logs import LogLimiter, get_logger
from worldserver.native import NativeSessions
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.udp import UdpTransport

log = get_logger("worldserver.udp")

_CONNECTED = P.CONNECTED_TYPES
_HELLO, _CONNECT = P.HELLO, P.CONNECT
# Endpoint drops that say nothing against the sender (see the module docstring).
NOT_COUNTED_DROPS = frozenset({"unknown_address", "duplicate_or_stale"})
PENALTY_LOG_INTERVAL = 60.0  # at most one log line a minute about senders put under penalty


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
        limits = config.limits
        self.penalties: Penalties | None = None
        self._penalized: dict = {}  # the penalties' table, read first thing per datagram
        self._penalty_log = LogLimiter(log, PENALTY_LOG_INTERVAL)
        if limits.udp_drops_per_second > 0:
            self.penalties = Penalties(limits.udp_drops_per_second, limits.udp_penalty)
            self._penalized = self.penalties.until
            self.endpoint.on_drop = self._on_endpoint_drop
            self.sessions.on_drop = self._on_connection_drop

    def handle_datagram(self, data: bytes, addr: tuple, now: float) -> None:
        if self._penalized and self._penalty_drop(data, addr, now):
            return
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
            if self.penalties is not None:
                self._count_drop(key, addr[0], now)
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

    # -- penalties (see the module docstring) ----------------------------------------------
    def _penalty_drop(self, data: bytes, addr: tuple, now: float) -> bool:
        """Whether the datagram is dropped, unread, for its sender's penalty (counted)."""
        penalized = self._penalized
        end = penalized.get(addr)  # a connection whose client kept sending what is dropped
        if end is not None:
            if now < end:
                self.stats.incr("drop.udp_penalty")
                return True
            self.penalties.end(addr)
        host = addr[0]
        end = penalized.get(host)  # an address that did: all but its connections' packets
        if end is not None:
            if now >= end:
                self.penalties.end(host)
            elif not (data and data[0] in _CONNECTED and addr in self.endpoint.connections):
                self.stats.incr("drop.udp_penalty")
                return True
        return False

    def _on_endpoint_drop(self, reason: str, addr: tuple, now: float) -> None:
        if reason not in NOT_COUNTED_DROPS:
            host = addr[0]
            key = self.limits.key(host)
            if key is not None:
                self._count_drop(key, host, now)

    def _count_drop(self, key: object, host: str, now: float) -> None:
        """One drop of address ``key`` (not trusted), whose datagram came from ``host``."""
        if self.penalties.dropped(key, host, now):
            self.stats.incr("udp.penalties")
            self._penalty_log.log(logging.INFO, "address", "udp address ignored: too many datagrams dropped",
                                  now=now, address=host, seconds=self.penalties.seconds)

    def _on_connection_drop(self, reason: str, addr: tuple, now: float) -> None:
        """A packet of a live connection dropped for what its client did (NativeSessions)."""
        if self.limits.key(addr[0]) is not None and self.penalties.dropped(addr, addr, now):
            self.stats.incr("udp.penalties")
            self._penalty_log.log(logging.INFO, "connection", "udp connection ignored: too many packets dropped",
                                  now=now, address=f"{addr[0]}:{addr[1]}", reason=reason,
                                  seconds=self.penalties.seconds)

    def poll(self, now: float) -> None:
        """Timeouts and keep-alives; a few times a second."""
        self.sessions.poll(now)
        if self._penalized:
            self.penalties.expire(now)
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
