"""Handshake: no spoofing, no amplification, refusals, replay; sans-IO endpoints only."""

import pytest
from hypothesis import given, settings, strategies as st

from protocol import PROTOCOL_VERSION, packets as P
from protocol.client import CONNECTED, ClientConnection
from protocol.events import ConnectRequest, Connected, Disconnected, Received, Refused
from protocol.server import ServerEndpoint

SECRET = b"k" * 32
CLIENT = ("10.9.8.7", 40000)


def make_server(**kw) -> ServerEndpoint:
    return ServerEndpoint(secret=SECRET, version=PROTOCOL_VERSION, **kw)


def drain(server):
    out, server.outbox = server.outbox, []
    return out


def handshake(server, client, addr=CLIENT, now=0.0):
    hello = client.connect(now)
    assert server.receive_datagram(hello, addr, now) == ()
    [(challenge, to)] = drain(server)
    assert to == addr
    _, [connect] = client.receive_datagram(challenge, now)
    [req] = server.receive_datagram(connect, addr, now)
    assert isinstance(req, ConnectRequest)
    conn = server.accept(req, b"\x90", now)
    [(accept, _)] = drain(server)
    [ev], _ = client.receive_datagram(accept, now)
    assert isinstance(ev, Connected) and ev.welcome == b"\x90"
    return conn, connect


def test_full_handshake_and_exchange():
    server = make_server()
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=7)
    conn, _ = handshake(server, client)
    assert client.state == CONNECTED and client.salt == conn.salt
    data = client.packet(P.INPUT, b"abc", 0.1)
    [ev] = server.receive_datagram(data, CLIENT, 0.1)
    assert isinstance(ev, Received) and ev.payload == b"abc" and ev.ptype == P.INPUT
    snap = server.packet(conn, P.SNAPSHOT, b"xyz", 0.15)
    [ev], _ = client.receive_datagram(snap, 0.15)
    assert ev.payload == b"xyz"
    # the client's next packet acknowledges the snapshot packet
    [ev] = server.receive_datagram(client.packet(P.INPUT, b"", 0.2), CLIENT, 0.2)
    assert ev.acked == [0]


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=1400), st.sampled_from([P.HELLO, P.CONNECT, None]))
def test_no_reply_to_unproven_address_is_larger_than_request(data, first):
    server = make_server()
    if first is not None:
        data = bytes([first]) + data[1:]
    server.receive_datagram(data, ("203.0.113.5", 9), 0.0)
    for reply, _ in drain(server):
        assert len(reply) <= len(data)
    assert server.connections == {}


def test_spoofed_source_cannot_complete_handshake():
    """An attacker who spoofs the victim's address never sees the CHALLENGE; guessing fails."""
    server = make_server()
    victim = ("198.51.100.1", 5000)
    attacker_client = ClientConnection(version=PROTOCOL_VERSION, nonce=1)
    server.receive_datagram(attacker_client.connect(0.0), victim, 0.0)
    [(challenge, to)] = drain(server)
    assert to == victim  # the challenge goes to the victim, not to the attacker
    assert len(challenge) < P.HANDSHAKE_SIZE
    # the attacker forges a CONNECT without the MAC
    forged = P.encode_connect(PROTOCOL_VERSION, 1, 0, bytes(16))
    assert server.receive_datagram(forged, victim, 0.1) == ()
    assert drain(server) == []
    assert server.drops["forged_cookie"] == 1
    assert server.connections == {}
    # a cookie obtained at the attacker's own address is useless for the victim's address
    own = ("192.0.2.66", 7000)
    server.receive_datagram(attacker_client.connect(0.0), own, 0.0)
    [(challenge, _)] = drain(server)
    _, [connect] = attacker_client.receive_datagram(challenge, 0.0)
    assert server.receive_datagram(connect, victim, 0.1) == ()
    assert server.connections == {}


def test_stale_cookie_is_refused_and_client_restarts():
    server = make_server(cookie_lifetime=10.0)
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=3)
    server.receive_datagram(client.connect(0.0), CLIENT, 0.0)
    [(challenge, _)] = drain(server)
    _, [connect] = client.receive_datagram(challenge, 0.0)
    assert server.receive_datagram(connect, CLIENT, 30.0) == ()
    [(refuse, _)] = drain(server)
    assert refuse[0] == P.REFUSE and len(refuse) <= len(connect)
    assert P.decode_refuse(refuse)[0] == P.REFUSE_STALE_COOKIE
    events, [again] = client.receive_datagram(refuse, 30.0)
    assert events == [] and again[0] == P.HELLO
    assert server.connections == {}


def test_replayed_cookie_is_refused():
    server = make_server()
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=11)
    conn, connect = handshake(server, client)
    # duplicate CONNECT while connected: the ACCEPT is repeated, nothing new is created
    assert server.receive_datagram(connect, CLIENT, 0.5) == ()
    [(accept, _)] = drain(server)
    assert accept == conn.accept_packet and len(server.connections) == 1
    # after the client leaves, replaying the same CONNECT does not open a connection
    [ev] = server.receive_datagram(client.disconnect(1.0), CLIENT, 1.0)
    assert isinstance(ev, Disconnected) and ev.reason == "client_left"
    assert server.receive_datagram(connect, CLIENT, 2.0) == ()
    [(refuse, _)] = drain(server)
    assert P.decode_refuse(refuse)[0] == P.REFUSE_REPLAYED_COOKIE
    assert server.connections == {}


def test_used_cookie_never_opens_a_second_connection():
    """The finding of issue 8: connect with nonce A, reconnect on the same socket with nonce
    B, then replay CONNECT A within the cookie's lifetime: it must not replace B (SPEC 2: a
    cookie opens at most one connection)."""
    server = make_server()
    first = ClientConnection(version=PROTOCOL_VERSION, nonce=21)
    _, connect_a = handshake(server, first, now=0.0)
    second = ClientConnection(version=PROTOCOL_VERSION, nonce=22)  # same address, restarted
    hello = second.connect(0.5)
    server.receive_datagram(hello, CLIENT, 0.5)
    [(challenge, _)] = drain(server)
    _, [connect_b] = second.receive_datagram(challenge, 0.5)
    req, = [e for e in server.receive_datagram(connect_b, CLIENT, 0.5) if isinstance(e, ConnectRequest)]
    conn_b = server.accept(req, b"\x90", 0.5)
    drain(server)
    assert server.receive_datagram(connect_a, CLIENT, 1.0) == ()  # replay of A's cookie
    [(refuse, _)] = drain(server)
    assert P.decode_refuse(refuse)[0] == P.REFUSE_REPLAYED_COOKIE
    assert server.connections == {CLIENT: conn_b} and not conn_b.closed
    assert server.drops.get("replayed_cookie") == 1
    # B's own retry (its ACCEPT lost) still gets the ACCEPT again
    assert server.receive_datagram(connect_b, CLIENT, 1.1) == ()
    [(accept, _)] = drain(server)
    assert accept == conn_b.accept_packet and server.connections == {CLIENT: conn_b}


def test_version_mismatch_gets_clear_refusal():
    server = make_server()
    client = ClientConnection(version=PROTOCOL_VERSION + 5, nonce=5)
    hello = client.connect(0.0)
    server.receive_datagram(hello, CLIENT, 0.0)
    [(refuse, _)] = drain(server)
    assert len(refuse) <= len(hello)
    [ev], _ = client.receive_datagram(refuse, 0.0)
    assert isinstance(ev, Refused) and ev.reason == "version_mismatch"
    assert ev.server_version == PROTOCOL_VERSION and str(PROTOCOL_VERSION) in ev.text
    assert server.connections == {}


def test_server_full():
    server = make_server(max_clients=1)
    handshake(server, ClientConnection(version=PROTOCOL_VERSION, nonce=1), ("127.0.0.1", 1))
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=2)
    server.receive_datagram(client.connect(0.0), ("127.0.0.1", 2), 0.0)
    [(challenge, _)] = drain(server)
    _, [connect] = client.receive_datagram(challenge, 0.0)
    assert server.receive_datagram(connect, ("127.0.0.1", 2), 0.0) == ()
    [(refuse, _)] = drain(server)
    [ev], _ = client.receive_datagram(refuse, 0.0)
    assert ev.reason == "server_full"


def test_wrong_salt_and_replayed_packets_dropped():
    server = make_server()
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=9)
    conn, _ = handshake(server, client)
    pkt = client.packet(P.INPUT, b"x", 0.1)
    assert len(server.receive_datagram(pkt, CLIENT, 0.1)) == 1
    assert server.receive_datagram(pkt, CLIENT, 0.1) == ()  # exact replay
    forged = bytearray(client.packet(P.INPUT, b"y", 0.2))
    forged[1] ^= 0xFF  # salt
    assert server.receive_datagram(bytes(forged), CLIENT, 0.2) == ()
    assert server.drops["bad_salt"] == 1 and server.drops["duplicate_or_stale"] == 1


def test_timeout_and_keepalive():
    server = make_server(timeout=5.0, keepalive_interval=1.0)
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=4, timeout=5.0, keepalive_interval=1.0)
    conn, _ = handshake(server, client)
    assert server.poll(1.5) == []
    [(ka, _)] = drain(server)
    assert ka[0] == P.KEEPALIVE
    _, [ka2] = client.poll(1.5)
    assert ka2[0] == P.KEEPALIVE
    server.receive_datagram(ka2, CLIENT, 1.5)
    [ev] = server.poll(7.0)
    assert isinstance(ev, Disconnected) and ev.reason == "timeout" and server.connections == {}
    [ev], _ = client.poll(7.0)
    assert ev.reason == "timeout"


def test_timed_out_client_is_sent_one_disconnect_timeout():
    server = make_server(timeout=5.0, keepalive_interval=1.0)
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=12, timeout=30.0, keepalive_interval=1.0)
    conn, _ = handshake(server, client)
    other_addr = ("10.9.8.8", 40001)
    other = ClientConnection(version=PROTOCOL_VERSION, nonce=13)
    other_conn, _ = handshake(server, other, other_addr)
    server.receive_datagram(client.packet(P.INPUT, b"", 2.0), CLIENT, 2.0)
    server.receive_datagram(other.packet(P.INPUT, b"", 4.0), other_addr, 4.0)
    drain(server)
    assert server.poll(7.0) == []  # 5 s after 2.0: not yet
    drain(server)
    [ev] = server.poll(7.01)
    assert isinstance(ev, Disconnected) and ev.conn is conn and ev.reason == "timeout"
    assert conn.closed and CLIENT not in server.connections and other_addr in server.connections
    [(data, to)] = [(d, a) for d, a in drain(server) if a == CLIENT]
    assert to == CLIENT and data[0] == P.DISCONNECT
    _, salt, _, _, _ = P.decode_header(data)
    assert salt == conn.salt and data[P.HEADER_SIZE:] == bytes([P.DISCONNECT_TIMEOUT])
    # the client, still alive, learns why (its own timeout is far away)
    [cev], replies = client.receive_datagram(data, 7.02)
    assert isinstance(cev, Disconnected) and cev.reason == "timeout" and replies == []
    assert client.state == "closed" and client.close_reason == "timeout"
    # sent once: later polls send the gone client nothing more
    assert server.poll(8.5) == [] and all(a != CLIENT for _, a in drain(server))
    assert server.poll(9.05)[0].conn is other_conn
    assert [a for _, a in drain(server)] == [other_addr]


@pytest.mark.parametrize(("reason", "text", "name"), [
    (P.DISCONNECT_KICKED, "removed by the operator: spamming; banned for 10 min", "kicked"),
    (P.DISCONNECT_REPLACED, "", "replaced"),
    (P.DISCONNECT_WORLD_CLOSED, "closed for the night", "world_closed"),
    (250, "from a newer server", "server_disconnect"),  # a reason this client does not know
    (0, "", "server_disconnect"),
])
def test_the_client_learns_why_the_server_ended_the_connection(reason, text, name):
    """A kick and a newer login of the same player are different reasons, each with its text;
    an unknown reason byte still ends the connection, without an error."""
    server = make_server()
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=21)
    conn, _ = handshake(server, client)
    data = server.disconnect(conn, reason, 1.0, text)
    assert conn.closed and server.connections == {}
    [ev], replies = client.receive_datagram(data, 1.0)
    assert isinstance(ev, Disconnected) and (ev.reason, ev.text) == (name, text) and replies == []
    assert (client.state, client.close_reason, client.close_text) == ("closed", name, text)
    assert client.receive_datagram(data, 1.1) == ([], [])  # the second copy: nothing more


def test_a_disconnect_without_a_reason_byte_ends_the_connection():
    server = make_server()
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=22)
    conn, _ = handshake(server, client)
    data = server.packet(conn, P.DISCONNECT, b"", 1.0)
    [ev], _ = client.receive_datagram(data, 1.0)
    assert (ev.reason, ev.text, client.state) == ("server_disconnect", "", "closed")


def test_client_restart_on_same_address_replaces_connection():
    server = make_server()
    old, _ = handshake(server, ClientConnection(version=PROTOCOL_VERSION, nonce=1))
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=2)
    server.receive_datagram(client.connect(1.0), CLIENT, 1.0)
    [(challenge, _)] = drain(server)
    _, [connect] = client.receive_datagram(challenge, 1.0)
    (req,) = server.receive_datagram(connect, CLIENT, 1.0)
    # The old connection stays until the driver accepts the new one (a refused request, say
    # one without a valid connect token, must end nothing) ...
    assert isinstance(req, ConnectRequest) and req.replaces is old and not old.closed
    assert server.connections[CLIENT] is old
    new = server.accept(req, b"\xc0", 1.0)
    assert server.connections[CLIENT] is new and new is not old and old.closed


def test_a_refused_restart_leaves_the_open_connection():
    server = make_server()
    old, _ = handshake(server, ClientConnection(version=PROTOCOL_VERSION, nonce=1))
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=2)
    server.receive_datagram(client.connect(1.0), CLIENT, 1.0)
    [(challenge, _)] = drain(server)
    _, [connect] = client.receive_datagram(challenge, 1.0)
    (req,) = server.receive_datagram(connect, CLIENT, 1.0)
    server.refuse(req, P.REFUSE_TOKEN_REQUIRED, "no token")
    [(refuse, _)] = drain(server)
    assert P.decode_refuse(refuse)[0] == P.REFUSE_TOKEN_REQUIRED
    assert server.connections[CLIENT] is old and not old.closed


def test_client_handshake_resend_and_timeout():
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=1, handshake_timeout=2.0, resend_interval=0.25)
    hello = client.connect(0.0)
    assert client.poll(0.1) == ([], [])
    assert client.poll(0.3) == ([], [hello])
    [ev], _ = client.poll(2.5)
    assert ev.reason == "handshake_timeout"


def test_token_travels_in_connect():
    server = make_server()
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=21, token=b"abc123")
    server.receive_datagram(client.connect(0.0), CLIENT, 0.0)
    [(challenge, _)] = drain(server)
    _, [connect] = client.receive_datagram(challenge, 0.0)
    [req] = server.receive_datagram(connect, CLIENT, 0.0)
    assert req.token == b"abc123"


def test_trusted_transport_accepts_hello_directly():
    server = ServerEndpoint(secret=SECRET, version=PROTOCOL_VERSION, trusted=True)
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=8, token=b"t", trusted=True)
    key = ("rtc", "peer1")
    hello = client.connect(0.0)
    [req] = server.receive_datagram(hello, key, 0.0)
    assert isinstance(req, ConnectRequest) and req.token == b"t"
    server.accept(req, b"\x90", 0.0)
    [(accept, to)] = drain(server)
    assert to == key
    [ev], _ = client.receive_datagram(accept, 0.0)
    assert isinstance(ev, Connected)
    # a repeated HELLO gets the same ACCEPT; CONNECT packets are not part of this mode
    assert server.receive_datagram(hello, key, 0.1) == ()
    assert drain(server)[0][0] == accept
    assert server.receive_datagram(P.encode_connect(PROTOCOL_VERSION, 8, 0, bytes(16)), key, 0.1) == ()


def test_oversized_token_rejected():
    data = bytearray(P.encode_hello(PROTOCOL_VERSION, 1))
    data[11] = 65
    with pytest.raises(Exception) as info:
        P.decode_hello(bytes(data))
    assert type(info.value).__name__ == "ProtocolError"
