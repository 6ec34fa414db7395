"""Connect tokens and tagged packets on UDP (issue 8): the attacks of the finding, refused.

Found by the attack: the UDP handshake carried the player's join token (the chat identity
secret) in clear text, or nothing, so any address took a player slot anonymously; and anyone
who could see the traffic ended or stalled a session with a spoofed DISCONNECT or a far-ahead
sequence number (the connected packets were guarded only by the 32-bit salt), or could inject
INPUT as another player. Now: a connect token from the HTTP join (with a key that never crosses
UDP) is required by default, opens one connection, expires, and stands for its player only;
every packet of the connection carries a tag under the key, checked before anything else.

Sans-IO parts (``protocol.tokens``, the endpoints) and the real :class:`UdpService` (its
endpoint, NativeSessions, ConnectAdmission and a real Simulation) with its sends captured and
explicit ``now`` values; the HTTP routes and a real UDP client against a server started
in-process. No wall-clock sleeps.
"""

from __future__ import annotations

import itertools

import httpx
import pytest
import trio

from protocol import PROTOCOL_VERSION, packets as P
from protocol import tokens as T
from protocol.client import CONNECTED, ClientConnection
from protocol.errors import ProtocolError
from protocol.events import Connected, ConnectRequest, Disconnected, Received, Refused
from protocol.messages import Input, encode_inputs
from protocol.server import ServerEndpoint
from worldclient.client import ConnectFailed, open_client
from worldclient.join import join, refresh
from worldserver.app import serve
from worldserver.config import load_config
from worldserver.identity import Identities
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.udp_service import UdpService

SECRET = bytes(range(32))
_nonces = itertools.count(0x70C0_0000)


# -- protocol.tokens ------------------------------------------------------------------------


def issuer(**kw) -> T.ConnectTokens:
    return T.ConnectTokens(SECRET, 60.0, epoch=b"e", **kw)


def signed_connect(token: bytes, key: bytes, nonce: int = 5) -> bytes:
    return T.sign_connect(P.encode_connect(PROTOCOL_VERSION, nonce, 1000, bytes(16), token), key)


def test_a_token_opens_with_its_key_and_only_then():
    tokens = issuer()
    token, key = tokens.issue(42, now=10.0)
    assert len(token) == T.TOKEN_SIZE <= P.MAX_TOKEN and len(key) == T.KEY_SIZE
    assert T.read_token(token) == (42, 70_000)
    opened = tokens.open(token, signed_connect(token, key), now=69.9)
    assert isinstance(opened, T.OpenedToken)
    assert (opened.identity, opened.key, opened.expires_ms) == (42, key, 70_000)
    assert tokens.open(token, signed_connect(token, key), now=70.0) == "expired"
    # The proof of the key is required: no tag, another key, or the unsigned CONNECT.
    assert tokens.open(token, signed_connect(token, bytes(32)), now=11.0) == "invalid"
    assert tokens.open(token, P.encode_connect(PROTOCOL_VERSION, 5, 1000, bytes(16), token), now=11.0) == "invalid"
    # A signed CONNECT altered anywhere in its signed bytes is no proof.
    connect = bytearray(signed_connect(token, key))
    connect[3] ^= 1  # the nonce
    assert tokens.open(token, bytes(connect), now=11.0) == "invalid"


def test_a_token_altered_made_up_or_of_another_run_is_invalid():
    tokens = issuer()
    token, key = tokens.issue(42, now=10.0)
    # Another identity (or a later expiry) written into the token: its key is another one,
    # which the holder of the first key cannot compute, so the CONNECT it signs is no proof.
    other = bytearray(token)
    other[1] = 43
    assert tokens.open(bytes(other), signed_connect(bytes(other), key), now=11.0) == "invalid"
    later = bytearray(token)
    later[12] ^= 0x40  # expiry far in the future
    assert tokens.open(bytes(later), signed_connect(bytes(later), key), now=11.0) == "invalid"
    # Made up: right size and format byte, signed with a key of the attacker's choice.
    made_up = bytes([T.TOKEN_FORMAT]) + bytes(31)
    assert tokens.open(made_up, signed_connect(made_up, bytes(32)), now=0.0) == "invalid"
    # Not a connect token at all (a join token of 32 characters, a short one, another format).
    for junk in (b"A" * 32, b"abc", bytes([2]) + token[1:]):
        assert tokens.open(junk, signed_connect(junk, key), now=11.0) == "invalid"
        if len(junk) != T.TOKEN_SIZE or junk[0] != T.TOKEN_FORMAT:
            with pytest.raises(ProtocolError):
                T.read_token(junk)
    # Another run of the server (another epoch) or another secret: not its token.
    assert T.ConnectTokens(SECRET, 60.0, epoch=b"f").open(token, signed_connect(token, key), 11.0) == "invalid"
    assert T.ConnectTokens(bytes(32), 60.0, epoch=b"e").open(token, signed_connect(token, key), 11.0) == "invalid"


def test_keys_are_derived_under_the_secret_and_tokens_differ():
    tokens = issuer()
    a, key_a = tokens.issue(1, 0.0)
    b, key_b = tokens.issue(1, 0.0)
    assert a != b and key_a != key_b  # random bytes in every token
    assert tokens.key(a) == key_a
    assert T.ConnectTokens(bytes(32), 60.0, epoch=b"e").key(a) != key_a
    long_secret = bytes(range(100))  # longer than a BLAKE2b key: hashed first, still works
    t, k = T.ConnectTokens(long_secret, 60.0, epoch=b"e").issue(7, 0.0)
    assert isinstance(T.ConnectTokens(long_secret, 60.0, epoch=b"e").open(t, signed_connect(t, k), 1.0), T.OpenedToken)
    assert T.ConnectTokens(long_secret[:99], 60.0, epoch=b"e").open(t, signed_connect(t, k), 1.0) == "invalid"
    with pytest.raises(ValueError):
        T.ConnectTokens(b"short", 60.0)
    with pytest.raises(ValueError):
        tokens.issue(-1, 0.0)


def test_seal_and_unseal():
    key = bytes(range(32))
    packet = P.encode_header(P.INPUT, 7, 1, 2, 3) + b"payload"
    sealed = T.seal(packet, key)
    assert len(sealed) == len(packet) + T.TAG_SIZE and sealed[-8:] == T.tag(packet, key)
    assert T.unseal(sealed, key) == packet
    assert T.unseal(sealed, bytes(32)) is None
    assert T.unseal(packet, key) is None
    assert T.unseal(b"short", key) is None
    for i in range(len(sealed)):
        broken = bytearray(sealed)
        broken[i] ^= 0x01
        assert T.unseal(bytes(broken), key) is None


# -- endpoints with a key -------------------------------------------------------------------

ADDR = ("198.51.100.7", 40000)


def keyed_pair():
    """A server endpoint and a client connected with a connect token and its key."""
    token, key = issuer().issue(1, 0.0)
    server = ServerEndpoint(secret=SECRET, version=PROTOCOL_VERSION)
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=next(_nonces), token=token, key=key)
    server.receive_datagram(client.connect(0.0), ADDR, 0.0)
    (challenge, _), = server.outbox
    server.outbox.clear()
    _, (connect,) = client.receive_datagram(challenge, 0.0)
    assert T.connect_signed_by(connect, key)
    (request,) = server.receive_datagram(connect, ADDR, 0.0)
    assert isinstance(request, ConnectRequest) and request.token == token and request.packet == connect
    conn = server.accept(request, b"\x90", 0.0, key=key)
    (accept, _), = server.outbox
    server.outbox.clear()
    assert T.unseal(accept, key) is not None  # the ACCEPT is tagged too
    (event,), _ = client.receive_datagram(accept, 0.0)
    assert isinstance(event, Connected) and event.welcome == b"\x90"
    return server, client, conn, key


def test_every_packet_both_ways_carries_its_tag():
    server, client, conn, key = keyed_pair()
    data = client.packet(P.INPUT, b"abc", 0.1)
    assert len(data) == P.HEADER_SIZE + 3 + T.TAG_SIZE and T.unseal(data, key) is not None
    (event,) = server.receive_datagram(data, ADDR, 0.1)
    assert isinstance(event, Received) and event.payload == b"abc"
    snap = server.packet(conn, P.SNAPSHOT, b"xyz", 0.15)
    assert T.unseal(snap, key) is not None
    (event,), _ = client.receive_datagram(snap, 0.15)
    assert event.payload == b"xyz"
    (event,) = server.receive_datagram(client.packet(P.KEEPALIVE, b"", 0.2), ADDR, 0.2)
    assert event.acked == [0]
    assert server.drops == {} and client.drops == {}


def test_spoofed_disconnect_with_the_right_salt_is_dropped_and_the_session_lives():
    server, client, conn, key = keyed_pair()
    server.receive_datagram(client.packet(P.INPUT, b"", 0.1), ADDR, 0.1)
    # An observer knows the salt and the sequence numbers from the traffic it saw.
    for tag in (b"", bytes(8), b"\xff" * 8):
        spoofed = P.encode_header(P.DISCONNECT, conn.salt, 5, 0xFFFF, 0) + bytes([P.DISCONNECT_CLIENT_LEFT]) + tag
        assert server.receive_datagram(spoofed, ADDR, 0.2) == ()
    assert server.drops == {"bad_tag": 3}
    assert ADDR in server.connections and not conn.closed
    # The client's own packets still get through.
    (event,) = server.receive_datagram(client.packet(P.INPUT, b"x", 0.3), ADDR, 0.3)
    assert isinstance(event, Received)
    # And a DISCONNECT the client really sent ends it.
    (event,) = server.receive_datagram(client.disconnect(0.4), ADDR, 0.4)
    assert isinstance(event, Disconnected) and event.reason == "client_left"


def test_a_far_ahead_sequence_with_a_bad_tag_does_not_move_the_window():
    server, client, conn, key = keyed_pair()
    server.receive_datagram(client.packet(P.INPUT, b"", 0.1), ADDR, 0.1)
    before = (conn.link.remote_seq, conn.link.recv_bits, conn.link.last_recv)
    ahead = P.encode_header(P.INPUT, conn.salt, 30000, 0, 0) + encode_inputs([Input(10**6, 127, 0, 0, 1, 0)])
    assert server.receive_datagram(ahead + bytes(8), ADDR, 5.0) == ()
    assert server.receive_datagram(ahead + T.tag(ahead, bytes(32)), ADDR, 5.0) == ()
    assert (conn.link.remote_seq, conn.link.recv_bits, conn.link.last_recv) == before
    assert server.drops == {"bad_tag": 2}
    # The client's next packets are not "stale": the window is where the client left it.
    for i in range(3):
        (event,) = server.receive_datagram(client.packet(P.INPUT, b"", 0.2 + i), ADDR, 0.2 + i)
        assert isinstance(event, Received)
    assert "duplicate_or_stale" not in server.drops
    # Too short to hold a header and a tag: dropped the same way, nothing raised.
    assert server.receive_datagram(P.encode_header(P.KEEPALIVE, conn.salt, 9, 0, 0) + b"\x01", ADDR, 5.0) == ()


def test_the_client_drops_untagged_server_packets_and_a_forged_accept():
    token, key = issuer().issue(1, 0.0)
    server = ServerEndpoint(secret=SECRET, version=PROTOCOL_VERSION)
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=77, token=token, key=key)
    server.receive_datagram(client.connect(0.0), ADDR, 0.0)
    (challenge, _), = server.outbox
    server.outbox.clear()
    _, (connect,) = client.receive_datagram(challenge, 0.0)
    # An observer of the CONNECT races an ACCEPT of its own (its salt, its Welcome): dropped.
    forged = P.encode_accept(77, 0x1234, b"\x90")
    assert client.receive_datagram(forged, 0.01) == ([], [])
    assert client.receive_datagram(forged + bytes(8), 0.01) == ([], [])
    assert client.state != CONNECTED and client.drops == {"bad_tag": 2}
    (request,) = server.receive_datagram(connect, ADDR, 0.02)
    conn = server.accept(request, b"\x90", 0.02, key=key)
    (accept, _), = server.outbox
    (event,), _ = client.receive_datagram(accept, 0.03)
    assert isinstance(event, Connected) and client.salt == conn.salt
    # A spoofed DISCONNECT (or SNAPSHOT) toward the client with the right salt: dropped.
    spoofed = P.encode_header(P.DISCONNECT, conn.salt, 1, 0xFFFF, 0) + bytes([P.DISCONNECT_KICKED])
    assert client.receive_datagram(spoofed, 0.1) == ([], [])
    assert client.receive_datagram(spoofed + bytes(8), 0.1) == ([], [])
    assert client.state == CONNECTED and client.drops == {"bad_tag": 4}


def test_trusted_transports_carry_no_tags():
    server = ServerEndpoint(secret=SECRET, version=PROTOCOL_VERSION, trusted=True)
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=3, token=b"join-token", trusted=True)
    (request,) = server.receive_datagram(client.connect(0.0), ("peer", 1), 0.0)
    with pytest.raises(ValueError):
        server.accept(request, b"\x90", 0.0, key=bytes(32))
    conn = server.accept(request, b"\x90", 0.0)
    assert conn.key == b"" and server.packet(conn, P.KEEPALIVE, b"", 0.1) == P.encode_header(P.KEEPALIVE, conn.salt, 0, 0xFFFF, 0)
    with pytest.raises(ValueError):
        ClientConnection(version=PROTOCOL_VERSION, nonce=3, key=bytes(32), trusted=True)


# -- the UDP service: admission by connect token ---------------------------------------------


class Udp:
    """A real UdpService (endpoint, NativeSessions, ConnectAdmission, Simulation) whose sends
    are captured; players log in through the same ``Identities`` and ``issue`` as the HTTP
    join."""

    def __init__(self, **overrides) -> None:
        values = {"udp.host": "127.0.0.1", "udp.port": "0", "gc.freeze_after_start": "false"}
        values.update({k: str(v) for k, v in overrides.items()})
        config = load_config(path=None, env={}, overrides=values)
        self.stats = Stats()
        self.sim = Simulation(config, self.stats)
        self.identities = Identities()
        self.service = UdpService(config, self.sim, self.stats, SECRET, self.identities)
        self.sent: list[tuple[bytes, tuple]] = []
        self.service.transport.send = lambda data, addr: self.sent.append((data, addr))
        self._ports = itertools.count(41000)

    def close(self) -> None:
        self.service.close()

    def login(self, identity: int, name: str) -> str:
        return self.identities.issue(identity, name)

    def ticket(self, identity: int, now: float) -> tuple[bytes, bytes]:
        fields = self.service.admission.issue(identity, now)
        assert set(fields) == {"connect_token", "connect_key", "connect_expires_in"}
        return bytes.fromhex(fields["connect_token"]), bytes.fromhex(fields["connect_key"])

    def client(self, token: bytes = b"", key: bytes = b"", nonce: int | None = None):
        conn = ClientConnection(version=PROTOCOL_VERSION, nonce=next(_nonces) if nonce is None else nonce,
                                token=token, key=key)
        return conn, ("127.0.0.1", next(self._ports))

    def deliver(self, data: bytes, addr: tuple, now: float) -> list[bytes]:
        self.service.handle_datagram(data, addr, now)
        out = [d for d, to in self.sent if to == addr]
        self.sent = [(d, to) for d, to in self.sent if to != addr]
        return out

    def handshake(self, conn: ClientConnection, addr: tuple, now: float) -> list:
        """HELLO, CHALLENGE, CONNECT, and the answer; returns the client's events."""
        step = conn.connect(now)
        events: list = []
        self.client_sent = []
        for _ in range(2):
            self.client_sent.append(step)
            for reply in self.deliver(step, addr, now):
                evs, out = conn.receive_datagram(reply, now)
                events += evs
                step = out[0] if out else step
        return events

    def session_named(self, name: str):
        return [s for s in self.sim.sessions if s.name == name]


@pytest.fixture
def udp():
    made: list[Udp] = []

    def make(**overrides) -> Udp:
        made.append(Udp(**overrides))
        return made[-1]

    yield make
    for u in made:
        u.close()


def test_an_anonymous_handshake_is_refused_by_default(udp):
    u = udp()
    conn, addr = u.client()
    (event,) = u.handshake(conn, addr, 1.0)
    assert isinstance(event, Refused) and event.reason == "token_required"
    assert "POST /api/join" in event.text
    assert u.stats.get("drop.udp_token_required") == 1
    assert not u.sim.sessions and not u.service.endpoint.connections


def test_the_open_switch_still_lets_guests_in_without_tags(udp):
    u = udp(**{"net.require_connect_token": "false"})
    conn, addr = u.client()
    (event,) = u.handshake(conn, addr, 1.0)
    assert isinstance(event, Connected)
    (session,) = u.sim.sessions
    assert session.name.startswith("guest-")
    assert u.service.endpoint.connections[addr].key == b""
    assert len(conn.packet(P.KEEPALIVE, b"", 1.1)) == P.HEADER_SIZE  # no tag
    # A token, when one is presented, must still be valid on an open server.
    bad, addr = u.client(token=bytes([T.TOKEN_FORMAT]) + bytes(31), key=bytes(32))
    (event,) = u.handshake(bad, addr, 1.0)
    assert isinstance(event, Refused) and event.reason == "token_invalid"


def test_a_joined_player_connects_under_its_name_with_tagged_packets(udp):
    u = udp()
    join_token = u.login(7, "alice")
    token, key = u.ticket(7, now=1.0)
    conn, addr = u.client(token, key)
    (event,) = u.handshake(conn, addr, 2.0)
    assert isinstance(event, Connected)
    (session,) = u.session_named("alice")
    assert session.token == join_token.encode()  # the session holds the login, not the connect token
    assert u.identities.holders(join_token) == 1
    server_conn = u.service.endpoint.connections[addr]
    assert server_conn.key == key
    # The join token itself never crossed UDP (HELLO and CONNECT carry the connect token).
    assert [p[0] for p in u.client_sent] == [P.HELLO, P.CONNECT]
    assert all(join_token.encode() not in p and token in p for p in u.client_sent)
    # Inputs arrive and move the avatar; snapshots come back tagged and are accepted.
    u.deliver(conn.packet(P.INPUT, encode_inputs([Input(1, 127, 0, 0, 1, 0)]), 2.05), addr, 2.05)
    assert session.last_received_seq == 1
    u.sim.run_tick(2.1)
    u.service.flush()
    snaps = [d for d, to in u.sent if to == addr]
    assert snaps and all(T.unseal(d, key) is not None for d in snaps)
    for d in snaps:
        events, _ = conn.receive_datagram(d, 2.1)
        assert events and isinstance(events[0], Received)
    assert u.sim.snapshots.part_budget == 1200 - P.HEADER_SIZE - T.TAG_SIZE  # room for the tag
    assert all(len(d) <= 1200 for d in snaps)


def test_a_token_opens_one_connection_and_a_lost_accept_is_answered_again(udp):
    u = udp()
    u.login(7, "alice")
    token, key = u.ticket(7, now=1.0)
    first, addr = u.client(token, key)
    hello = first.connect(2.0)
    (challenge,) = u.deliver(hello, addr, 2.0)
    _, (connect,) = first.receive_datagram(challenge, 2.0)
    (accept,) = u.deliver(connect, addr, 2.0)
    # The ACCEPT was lost: the client repeats its CONNECT and gets the same ACCEPT again.
    assert u.deliver(connect, addr, 2.25) == [accept]
    (event,), _ = first.receive_datagram(accept, 2.25)
    assert isinstance(event, Connected)
    # The same token and key from another socket (or a new attempt): refused, one connection.
    again, other = u.client(token, key)
    (event,) = u.handshake(again, other, 3.0)
    assert isinstance(event, Refused) and event.reason == "token_used"
    restart, _ = u.client(token, key)  # a new nonce on the first socket's address
    (event,) = u.handshake(restart, addr, 3.5)
    assert isinstance(event, Refused) and event.reason == "token_used"
    assert len(u.sim.sessions) == 1 and u.stats.get("drop.udp_token_used") == 2
    # A fresh token of the same login connects (and, one identity one avatar, replaces it).
    fresh, other = u.client(*u.ticket(7, now=4.0))
    (event,) = u.handshake(fresh, other, 4.0)
    assert isinstance(event, Connected)
    assert [s.name for s in u.sim.sessions] == ["alice"]


def test_an_expired_token_is_refused(udp):
    u = udp(**{"net.connect_token_lifetime": "60"})
    u.login(7, "alice")
    token, key = u.ticket(7, now=1.0)
    conn, addr = u.client(token, key)
    (event,) = u.handshake(conn, addr, 61.0)
    assert isinstance(event, Refused) and event.reason == "token_expired"
    assert u.stats.get("drop.udp_token_expired") == 1 and not u.sim.sessions
    conn, addr = u.client(token, key)
    (event,) = u.handshake(conn, addr, 60.9)  # just before: in
    assert isinstance(event, Connected)


def test_a_token_for_one_player_cannot_get_another_players_name(udp):
    u = udp()
    u.login(7, "alice")
    u.login(8, "bob")
    token, key = u.ticket(7, now=1.0)  # alice's
    # Alice (or whoever saw her token on the wire) writes bob's identity into it: the key of
    # that token is not alice's key, so the CONNECT she signs proves nothing.
    forged = bytearray(token)
    forged[1:9] = (8).to_bytes(8, "little")
    conn, addr = u.client(bytes(forged), key)
    (event,) = u.handshake(conn, addr, 2.0)
    assert isinstance(event, Refused) and event.reason == "token_invalid"
    # Bob's token seen on the wire, without bob's key: no proof either.
    bobs_token, _ = u.ticket(8, now=1.0)
    conn, addr = u.client(bobs_token, key)
    (event,) = u.handshake(conn, addr, 2.0)
    assert isinstance(event, Refused) and event.reason == "token_invalid"
    # Nor can a client that signs no CONNECT at all (an old client sending a token).
    conn, addr = u.client(bobs_token)
    (event,) = u.handshake(conn, addr, 2.0)
    assert isinstance(event, Refused) and event.reason == "token_invalid"
    assert not u.session_named("bob") and u.stats.get("drop.udp_token_invalid") == 3


def test_a_token_whose_login_ended_is_refused(udp):
    u = udp()
    join_token = u.login(7, "alice")
    token, key = u.ticket(7, now=1.0)
    u.identities.release(join_token)
    conn, addr = u.client(token, key)
    (event,) = u.handshake(conn, addr, 2.0)
    assert isinstance(event, Refused) and event.reason == "token_invalid"
    assert "login" in event.text and u.stats.get("drop.udp_token_logged_out") == 1


def test_injected_packets_of_an_observer_change_nothing(udp):
    """The attack over the service: an observer who saw the salt sends INPUT as the player, a
    DISCONNECT, and a sequence far ahead. All dropped as bad_tag; the player plays on."""
    u = udp()
    u.login(7, "alice")
    conn, addr = u.client(*u.ticket(7, now=1.0))
    u.handshake(conn, addr, 2.0)
    (session,) = u.sim.sessions
    u.deliver(conn.packet(P.INPUT, encode_inputs([Input(1, 0, 0, 0, 1, 0)]), 2.05), addr, 2.05)
    salt = u.service.endpoint.connections[addr].salt
    endpoint = u.service.endpoint
    link = endpoint.connections[addr].link
    window = (link.remote_seq, link.recv_bits)
    for ptype, seq, payload in ((P.INPUT, 2, encode_inputs([Input(99, 127, 127, 0, 1, 1)])),
                                (P.INPUT, 40000, encode_inputs([Input(10**9, -127, 0, 0, 1, 0)])),
                                (P.DISCONNECT, 3, bytes([P.DISCONNECT_CLIENT_LEFT]))):
        packet = P.encode_header(ptype, salt, seq, 0xFFFF, 0) + payload
        assert u.deliver(packet + bytes(8), addr, 2.1) == []
    assert endpoint.drops.get("bad_tag") == 3
    assert session.last_received_seq == 1 and (link.remote_seq, link.recv_bits) == window
    assert u.sim.sessions == [session] and addr in endpoint.connections
    u.deliver(conn.packet(P.INPUT, encode_inputs([Input(2, 0, 127, 0, 1, 0)]), 2.15), addr, 2.15)
    assert session.last_received_seq == 2
    # A restart from the player's address (the observer sees the CHALLENGE sent there, so its
    # cookie is valid) without a token of its own: refused, and the connection it would have
    # replaced stays.
    observer, _ = u.client()
    (event,) = u.handshake(observer, addr, 2.2)
    assert isinstance(event, Refused) and event.reason == "token_required"
    assert u.sim.sessions == [session] and endpoint.connections[addr].user is session


def test_the_used_token_table_is_bounded(udp):
    u = udp()
    u.service.admission.max_used = 2
    for identity in (1, 2, 3):
        u.login(identity, f"p{identity}")
    for identity in (1, 2):
        conn, addr = u.client(*u.ticket(identity, now=1.0))
        assert isinstance(u.handshake(conn, addr, 2.0)[0], Connected)
    conn, addr = u.client(*u.ticket(3, now=1.0))
    (event,) = u.handshake(conn, addr, 2.0)
    assert isinstance(event, Refused) and event.reason == "server_full"
    assert u.stats.get("drop.udp_token_table_full") == 1
    # Once the used tokens expired, the table makes room.
    conn, addr = u.client(*u.ticket(3, now=100.0))
    assert isinstance(u.handshake(conn, addr, 101.0)[0], Connected)
    assert len(u.service.admission) == 1


# -- over HTTP and real sockets ---------------------------------------------------------------


def server_config(tmp_path, **overrides):
    values = {"udp.host": "127.0.0.1", "udp.port": "0", "http.host": "127.0.0.1", "http.port": "0",
              "server.stats_interval": "60", "gc.freeze_after_start": "false",
              "server.data_dir": str(tmp_path)}
    values.update({k: str(v) for k, v in overrides.items()})
    return load_config(path=None, env={}, overrides=values)


async def test_join_hands_out_connect_tokens_that_open_one_udp_connection(nursery, tmp_path):
    running = await nursery.start(serve, server_config(tmp_path))
    host, port = running.udp_address[:2]
    url = f"http://127.0.0.1:{running.http_port}"
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            answer = (await http.post("/api/join", json={"name": "carol"})).json()
            assert len(bytes.fromhex(answer["connect_token"])) == T.TOKEN_SIZE
            assert len(bytes.fromhex(answer["connect_key"])) == T.KEY_SIZE
            assert answer["connect_expires_in"] == 60.0
            fresh = await http.post("/api/connect-token", json={"token": answer["token"]})
            assert fresh.status_code == 200 and fresh.json()["name"] == "carol"
            assert fresh.json()["connect_token"] != answer["connect_token"]
            unknown = await http.post("/api/connect-token", json={"token": "x" * 32})
            assert unknown.status_code == 403 and unknown.json()["code"] == "unknown_token"
            bad = await http.post("/api/connect-token", json={"name": "carol"})
            assert bad.status_code == 400
        with pytest.raises(ConnectFailed) as refused:
            async with open_client(host, port):
                pass
        assert refused.value.reason == "token_required"
        joined = await join(url, "dave")
        async with open_client(host, port, joined=joined) as client:
            assert client.connected and [s.name for s in running.sim.sessions] == ["dave"]
            await client.send_input(1.0, 0.0)
            assert await client.wait_until(lambda c: c.snapshots >= 2, 5.0)
            with pytest.raises(ConnectFailed) as twice:
                async with open_client(host, port, joined=joined):
                    pass
            assert twice.value.reason == "token_used"
        async with open_client(host, port, joined=await refresh(url, joined)) as client:
            assert client.connected
    drops = running.udp.endpoint.drops
    assert "bad_tag" not in drops
    assert running.stats.get("drop.udp_token_required") == 1 and running.stats.get("drop.udp_token_used") == 1
