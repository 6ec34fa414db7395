"""Native-protocol sessions for any transport: endpoint events in, simulation calls out.

A transport service (UDP, WebRTC data channels, WebSockets) owns a sans-IO
:class:`protocol.server.ServerEndpoint` and feeds its events here. This module turns a
ConnectRequest into a session (named after the player's join token, or a guest name) and an
ACCEPT with the Welcome (or a REFUSE: world full, or, over UDP, the client's address already
holds ``limits.connections_per_address``), INPUT packets into queued inputs, acknowledgements into snapshot
baselines, and disconnects and timeouts into despawns. Every join and leave is one INFO line
(``client joined`` / ``client left``: id, name, transport, address, and the world or the
reason for leaving). Over UDP the request's token is a
connect token, which ``worldserver.connect_tokens`` checks (REFUSE ``token_*`` when it does
not let the client in); the connection then takes its key, and its packets are tagged.

Must not: touch sockets or channels (the transport's sender does), or run the tick.
"""

from __future__ import annotations

from typing import Callable

import trio

from protocol import packets as P
from protocol.errors import ProtocolError
from protocol.events import ConnectRequest, Disconnected, Received
from protocol.messages import new_inputs
from protocol.server import ServerEndpoint
from worldserver.config import Config
from worldserver.connect_tokens import ConnectAdmission, TokenRefused
from worldserver.limits import AddressLimits
from worldserver.logs import get_logger
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.hosting import as_host
from worldserver.identity import KICKED
from worldserver.world import WorldFull

log = get_logger("worldserver.native")

_INPUT = P.INPUT
WORLD_CLOSED = "world_closed"  # session.end(reason) of a closed world's sessions
_HEADER = P.HEADER_SIZE


class NativeSessions:
    """Event handling shared by every transport of the native protocol."""

    # The server's worldserver.moderation.Moderation, set by worldserver.app: connect requests
    # are refused while it drains, and over UDP from an address it banned. None: no refusals.
    moderation = None
    # Called as on_drop(reason, endpoint address, now) for an accepted packet of a connection
    # dropped here for what its client did (INPUTs over the session's rate, INPUTs that do not
    # decode); the UDP service counts them by address (worldserver/udp_service.py). None: not.
    on_drop: Callable[[str, tuple, float], None] | None = None

    def __init__(
        self,
        *,
        kind: str,
        config: Config,
        endpoint: ServerEndpoint,
        sim: Simulation,
        stats: Stats,
        identities=None,
        make_sender: Callable[[tuple], object],
        limits: AddressLimits | None = None,
        address_of: Callable[[tuple], str] | None = None,
        admission: ConnectAdmission | None = None,
    ) -> None:
        """``limits`` and ``address_of`` (the client's IP address from an endpoint address):
        for a transport whose endpoint addresses are client addresses (UDP), the connection
        cap per address (``limits.connections_per_address``) is applied and counted here.
        Transports whose endpoint addresses are channel ids count at the transport instead.
        ``admission``: connect tokens (UDP); None for the trusted transports, whose HELLO
        carries the join token itself."""
        self.kind = kind
        self.admission = admission
        self.limits = limits if address_of is not None else None
        self.address_of = address_of
        self.endpoint = endpoint
        self.worlds = as_host(sim)  # a WorldHost, or one Simulation
        self.sim = self.worlds.default  # the default world (tools and tests read it)
        self.stats = stats
        self.identities = identities
        self.make_sender = make_sender
        self.input_rate = config.sim.input_rate_limit
        self.input_burst = config.sim.input_burst
        # Accepted packets come straight to on_received, not as Received events (hot path).
        endpoint.on_received = self.on_received

    def handle(self, events: tuple, now: float) -> None:
        for event in events:
            if type(event) is Received:  # from an endpoint driven without on_received
                self.on_received(event.conn, event.ptype, event.seq, event.payload, event.acked, now)
            elif type(event) is ConnectRequest:
                self._on_connect_request(event, now)
            elif type(event) is Disconnected:
                self.on_disconnected(event)

    def on_received(self, conn, ptype: int, seq: int, payload: bytes, acked, now: float) -> None:
        """An accepted connected packet (the endpoint's ``on_received``): acknowledgements move
        the snapshot baseline, INPUT packets queue inputs."""
        session = conn.user
        if session is None:
            return
        session.bytes_in += len(payload) + _HEADER
        if acked:
            session.on_acked(acked)
        if ptype == _INPUT:
            try:
                inputs = new_inputs(payload, session.last_received_seq)
            except ProtocolError as exc:
                self.stats.incr(f"drop.bad_input.{exc.reason}")
                if self.on_drop is not None:
                    self.on_drop("bad_input", conn.addr, now)
                return
            if not session.take_inputs(inputs, now, self.input_rate, self.input_burst, self.stats):
                if self.on_drop is not None:
                    self.on_drop("input_rate", conn.addr, now)

    def player_name(self, token: bytes) -> str:
        """The name a live join token stands for, else a guest name."""
        if self.identities is None:
            return ""
        if token:
            name = self.identities.name_for(token)
            if name is not None:
                return name
            self.stats.incr(f"{self.kind}.unknown_token")
        return self.identities.guest_name()

    def _on_connect_request(self, request: ConnectRequest, now: float) -> None:
        if self.moderation is not None:  # draining, or a banned UDP address: an open one stays
            host = self.address_of(request.addr) if self.address_of is not None else None
            refusal = self.moderation.connect_refusal(self.kind, host, now)
            if refusal is not None:
                self.endpoint.refuse(request, *refusal)
                return
        token, tag_key, admitted = request.token, b"", None
        if self.admission is not None:  # a connect token (UDP) stands for the join token
            admitted = self.admission.check(request, now)
            if type(admitted) is TokenRefused:  # a connection it would replace stays as it was
                self.stats.incr(f"drop.udp_token_{admitted.counter}")
                self.endpoint.refuse(request, admitted.reason, admitted.text)
                return
            token, tag_key = (admitted.join_token, admitted.key) if admitted is not None else (b"", b"")
        old = request.replaces
        if old is not None and not old.closed:  # the client restarted on the same address
            self.endpoint.drop(old)
            self.on_disconnected(Disconnected(old, "replaced"))
        limits = self.limits
        key = limits.key(self.address_of(request.addr)) if limits is not None else None
        if not (key is None or limits.may_connect(key)):
            self.stats.incr("drop.limit_udp_address_connections")
            self.endpoint.refuse(request, P.REFUSE_ADDRESS_LIMIT, "too many connections from your address")
            return
        sender = self.make_sender(request.addr)
        # The world the player's join named (a world no longer hosted: the default one).
        sim = self.worlds.get(self.identities.world_for(token) if self.identities is not None and token else "")
        if sim is None:
            self.stats.incr(f"{self.kind}.world_gone")
            sim = self.worlds.default
        try:
            session = sim.join(sender, now, name=self.player_name(token))
            session.token = token
            session.transport = self.kind
            session.end = lambda reason, session=session: self._end_session(session, reason)
        except WorldFull:
            self.stats.incr("refused.world_full")
            self.endpoint.refuse(request, P.REFUSE_FULL, "world full")
            return
        if key is not None:
            limits.connect(key)
        conn = self.endpoint.accept(request, sim.welcome(session).encode(), now, tag_key)
        if admitted is not None:
            self.admission.commit(admitted)
        sender.conn = conn
        conn.user = session
        # The session holds its token while connected, as the identity's one avatar: an avatar
        # of the same identity that was in the world before is ended now (it "logged in again").
        if not (self.identities is not None and session.token and self.identities.attach(
                session.token, session, lambda reason: self._end_session(session, reason), avatar=True)):
            session.token = b""
        self.stats.incr("clients.joined")
        self.stats.incr(f"clients.joined.{self.kind}")
        log.info("client joined", id=session.entity_id, name=session.name, transport=self.kind,
                 address=client_address(session, conn), world=sim.world_id)

    def on_disconnected(self, event: Disconnected) -> None:
        session = event.conn.user
        if session is not None:
            session.sim.leave(session)
            event.conn.user = None
            if self.limits is not None:
                self.limits.disconnect(self.limits.key(self.address_of(event.conn.addr)))
            if self.identities is not None and session.token:
                self.identities.detach(session.token, session)
            log.info("client left", id=session.entity_id, name=session.name, transport=self.kind,
                     address=client_address(session, event.conn), reason=event.reason)
        self.stats.incr(f"clients.left.{event.reason}")

    def _end_session(self, session, reason: str) -> None:
        """The session's identity was kicked (``kicked``, ``worldserver.moderation``) or logged
        in again (``replaced``; a released token: ``released``, ``worldserver.identity``), or its
        world was closed (``world_closed``, ``worldserver.world_admin``): the avatar leaves the
        world and the client gets a DISCONNECT, twice as a shutdown's (the client must not miss
        why, nor reconnect as if the link had failed): ``kicked`` with what the kick tells the
        player (``Moderation.kick_text``), ``world_closed`` with the world's ``closed_reason``,
        else ``replaced`` (its token is no longer this connection's). Counted as
        ``clients.left.<reason>``."""
        conn = getattr(session.sink, "conn", None)
        if conn is None or conn.closed or conn.user is not session:
            return
        try:
            now = trio.current_time()
        except RuntimeError:  # not in trio (tools driving the endpoint by hand)
            now = conn.link.last_send
        if reason == WORLD_CLOSED:
            code, text = P.DISCONNECT_WORLD_CLOSED, getattr(session.sim, "closed_reason", "")
        elif reason == KICKED:
            code, text = P.DISCONNECT_KICKED, self.moderation.kick_text if self.moderation is not None else ""
        else:
            code, text = P.DISCONNECT_REPLACED, ""
        packet = self.endpoint.disconnect(conn, code, now, text)
        self.endpoint.outbox.append((packet, conn.addr))
        self.endpoint.outbox.append((packet, conn.addr))
        self.on_disconnected(Disconnected(conn, reason))

    def poll(self, now: float) -> None:
        for event in self.endpoint.poll(now):
            self.on_disconnected(event)

    def shutdown(self, now: float, send: Callable[[bytes, tuple], None]) -> None:
        """Tells every client the server is going away (twice, in case one is lost)."""
        for conn in list(self.endpoint.connections.values()):
            packet = self.endpoint.disconnect(conn, P.DISCONNECT_SERVER_SHUTDOWN, now)
            send(packet, conn.addr)
            send(packet, conn.addr)
            if conn.user is not None:
                self.on_disconnected(Disconnected(conn, "server_shutdown"))


def client_address(session, conn) -> object:
    """A client's address for the log: its transport's (``session.sink.address``: the
    ``host:port`` of a WebSocket, the address a WebRTC offer came from) when it has one, else
    the endpoint's (UDP: ``(host, port)``)."""
    return getattr(session.sink, "address", "") or conn.addr
