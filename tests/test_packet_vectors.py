"""protocol/vectors/packets.json is current, follows its documented format (SPEC 4.2) and
decodes back to its fields."""

import json
import pathlib
import subprocess
import sys

import msgpack

from protocol import PROTOCOL_VERSION, packets as P
from protocol.cookie import CookieJar
from protocol.client import ClientConnection
from protocol.messages import Input, Welcome, decode_inputs, encode_inputs
from protocol.server import ServerEndpoint
from protocol import tokens as T

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "protocol" / "vectors"
U64_FIELDS = {"nonce", "time_ms", "identity", "expires_ms"}


def load_doc() -> dict:
    return json.loads((VECTORS / "packets.json").read_text())


def load() -> dict:
    return {v["name"]: v for v in load_doc()["vectors"]}


def u64(value: object) -> int:
    """A u64 field of the file: a decimal string (SPEC 4.2)."""
    assert type(value) is str and value.isdigit() and (value == "0" or not value.startswith("0")), value
    n = int(value)
    assert n < 2**64
    return n


def test_vectors_are_current():
    rc = subprocess.run([sys.executable, str(VECTORS / "make_packet_vectors.py"), "--check"]).returncode
    assert rc == 0, "packets.json is stale: run protocol/vectors/make_packet_vectors.py"


def test_file_format():
    doc = load_doc()
    assert doc["format"] == 2
    assert doc["protocol_version"] == PROTOCOL_VERSION
    names = [v["name"] for v in doc["vectors"]]
    assert len(names) == len(set(names))
    for v in doc["vectors"]:
        assert set(v) <= {"name", "fields", "hex", "decode_only"}, v["name"]
        assert bytes.fromhex(v["hex"]).hex() == v["hex"]  # lowercase, even length

    def walk(obj, key=None):
        if isinstance(obj, dict):
            for k, value in obj.items():
                walk(value, k)
        elif isinstance(obj, list):
            for value in obj:
                walk(value, key)
        elif key in U64_FIELDS:
            u64(obj)
        elif type(obj) is int:
            # Every number must survive a float64 JSON parser (JavaScript's JSON.parse).
            assert abs(obj) <= 2**53, (key, obj)

    walk(doc)
    # The point of the strings: one nonce is above 2**53, and stays exact.
    assert u64(load()["hello_with_token"]["fields"]["nonce"]) > 2**53


def test_vectors_decode_to_their_fields():
    v = load()
    f = v["hello"]["fields"]
    assert P.decode_hello(bytes.fromhex(v["hello"]["hex"])) == (f["version"], u64(f["nonce"]), b"")
    assert f["version"] == PROTOCOL_VERSION
    f = v["hello_with_token"]["fields"]
    assert P.decode_hello(bytes.fromhex(v["hello_with_token"]["hex"])) == (
        f["version"], u64(f["nonce"]), f["token"].encode())
    f = v["challenge"]["fields"]
    assert P.decode_challenge(bytes.fromhex(v["challenge"]["hex"])) == (
        f["version"], u64(f["nonce"]), u64(f["time_ms"]), bytes.fromhex(f["mac_hex"]))
    f = v["connect"]["fields"]
    assert P.decode_connect(bytes.fromhex(v["connect"]["hex"])) == (
        f["version"], u64(f["nonce"]), u64(f["time_ms"]), bytes.fromhex(f["mac_hex"]), f["token"].encode())
    nonce, salt, welcome = P.decode_accept(bytes.fromhex(v["accept"]["hex"]))
    f = v["accept"]["fields"]
    assert (nonce, salt, welcome.hex()) == (u64(f["nonce"]), f["salt"], f["welcome_hex"])
    f = v["refuse_version"]["fields"]
    assert P.decode_refuse(bytes.fromhex(v["refuse_version"]["hex"])) == (
        P.REFUSE_VERSION, f["server_version"], u64(f["nonce"]), f["text"])
    assert f["text"] == f"server speaks protocol {PROTOCOL_VERSION}, client {PROTOCOL_VERSION - 1}"
    assert [i.to_list() for i in decode_inputs(bytes.fromhex(v["inputs"]["hex"]))] == v["inputs"]["fields"]["inputs"]
    for name in ("input_packet", "first_input_packet"):
        pkt = bytes.fromhex(v[name]["hex"])
        f = v[name]["fields"]
        assert P.decode_header(pkt) == (f["type"], f["salt"], f["seq"], f["ack"], f["ack_bits"])
        assert pkt[P.HEADER_SIZE:].hex() == f["payload_hex"]
    f = v["disconnect_packet"]["fields"]
    pkt = bytes.fromhex(v["disconnect_packet"]["hex"])
    assert P.decode_header(pkt) == (f["type"], f["salt"], f["seq"], f["ack"], f["ack_bits"])
    assert pkt[P.HEADER_SIZE:] == bytes([f["reason"]])
    f = v["disconnect_world_closed_packet"]["fields"]  # reason 5 and the text after it
    pkt = bytes.fromhex(v["disconnect_world_closed_packet"]["hex"])
    assert P.decode_header(pkt) == (f["type"], f["salt"], f["seq"], f["ack"], f["ack_bits"])
    assert P.DISCONNECT_REASONS[pkt[P.HEADER_SIZE]] == "world_closed" == P.DISCONNECT_REASONS[f["reason"]]
    assert P.disconnect_text(pkt[P.HEADER_SIZE:]) == f["text"]
    assert P.disconnect_payload(f["reason"], f["text"]) == pkt[P.HEADER_SIZE:]
    # A kick (reason 4, with who, why and the ban in its text) and a newer login of the same
    # player (reason 6, no text) are told apart.
    for name, reason in (("disconnect_kicked_packet", P.DISCONNECT_KICKED),
                         ("disconnect_replaced_packet", P.DISCONNECT_REPLACED)):
        f = v[name]["fields"]
        pkt = bytes.fromhex(v[name]["hex"])
        assert P.decode_header(pkt) == (f["type"], f["salt"], f["seq"], f["ack"], f["ack_bits"])
        assert pkt[P.HEADER_SIZE] == f["reason"] == reason
        assert P.DISCONNECT_REASONS[pkt[P.HEADER_SIZE]] == f["reason_name"]
        assert P.disconnect_text(pkt[P.HEADER_SIZE:]) == f["text"]
        assert P.disconnect_payload(f["reason"], f["text"]) == pkt[P.HEADER_SIZE:]
    assert v["disconnect_kicked_packet"]["fields"]["text"].startswith("removed by the operator: ")
    assert len(pkt) == P.HEADER_SIZE + 1  # replaced: the reason byte alone


def test_a_disconnect_text_is_cut_to_its_limit_between_characters():
    payload = P.disconnect_payload(P.DISCONNECT_WORLD_CLOSED, "é" * 150)  # 300 bytes of text
    assert len(payload) == 1 + P.MAX_DISCONNECT_TEXT and P.disconnect_text(payload) == "é" * 100
    payload = P.disconnect_payload(P.DISCONNECT_WORLD_CLOSED, "a" + "é" * 150)  # 2-byte chars from 1
    assert len(payload) == P.MAX_DISCONNECT_TEXT and P.disconnect_text(payload) == "a" + "é" * 99
    assert P.disconnect_text(bytes([5]) + b"\xff ok") == "\ufffd ok" and P.disconnect_text(bytes([2])) == ""


def test_cookie_mac_key_is_the_raw_secret_bytes():
    c = load()["cookie_mac"]
    f = c["fields"]
    mac = bytes.fromhex(c["hex"])
    jar = CookieJar(bytes.fromhex(f["secret_hex"]), 10.0)
    assert jar.check(f["version"], (f["ip"], f["port"]), u64(f["nonce"]), u64(f["time_ms"]), mac,
                     u64(f["time_ms"]) / 1000) == "ok"
    # The hex text of the secret is not the key.
    text_jar = CookieJar(f["secret_hex"].encode(), 10.0)
    assert text_jar.check(f["version"], (f["ip"], f["port"]), u64(f["nonce"]), u64(f["time_ms"]), mac,
                          u64(f["time_ms"]) / 1000) == "forged"


def test_welcome_vectors():
    v = load()
    for name in ("welcome", "welcome_other_numbers"):
        f = v[name]["fields"]
        w = Welcome.decode(bytes.fromhex(v[name]["hex"]))
        assert w == Welcome(**{**f, "mins": tuple(f["mins"]), "maxs": tuple(f["maxs"])})
        assert all(type(x) is float for x in (*w.mins, *w.maxs, w.position_step, w.max_speed,
                                               w.interest_radius, w.keepalive_interval, w.timeout))
    # The encoder's form: every float field a msgpack float64.
    assert Welcome.decode(bytes.fromhex(v["welcome"]["hex"])).encode().hex() == v["welcome"]["hex"]
    raw = msgpack.unpackb(bytes.fromhex(v["welcome_other_numbers"]["hex"]))
    assert len(raw) == 10 and type(raw[3][1]) is int  # the decode-only form really holds ints
    assert v["welcome_other_numbers"]["decode_only"] is True
    assert v["welcome_other_numbers"]["hex"].endswith("ca3f00000003")  # keepalive 0.5 as float32, timeout 3 as an int


def test_first_packet_ack_acknowledges_nothing_and_loses_nothing():
    """A side that has received nothing sends ack 0xFFFF with ack bits 0 (SPEC 3): applied by
    the ordinary rules it acknowledges none of the peer's packets and marks none lost."""
    v = load()["first_input_packet"]
    salt = v["fields"]["salt"]
    server = ServerEndpoint(secret=bytes(16), version=PROTOCOL_VERSION, trusted=True,
                            random_bytes=lambda n: salt.to_bytes(n, "little"))
    addr = ("peer", 1)
    (request,) = server.receive_datagram(P.encode_hello(PROTOCOL_VERSION, 5), addr, 0.0)
    conn = server.accept(request, Welcome(1, 20, 0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 0.01, 5.0, 10.0).encode(), 0.0)
    for i in range(40):  # snapshots the client has not received yet: seqs 0..39
        server.packet(conn, P.SNAPSHOT, b"", i * 0.05)
    (event,) = server.receive_datagram(bytes.fromhex(v["hex"]), addr, 2.0)
    assert event.acked == [] and conn.link.packets_lost == 0
    assert len(conn.link.unacked) == 40
    # And it is what a client's first packet carries.
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=5, trusted=True)
    client.connect(0.0)
    client.receive_datagram(P.encode_accept(5, 77, conn.accept_packet[13:]), 0.1)
    first = client.packet(P.INPUT, encode_inputs([Input(0, 0, 127, 0, 1, 0)]), 0.2)
    assert P.decode_header(first)[2:] == (0, 0xFFFF, 0)
    assert first[P.HEADER_SIZE:].hex() == v["fields"]["payload_hex"]


def test_handshake_restart_keeps_the_nonce_and_restarts_the_give_up_clock():
    """SPEC 2, Client timing: after REFUSE stale_cookie the client sends the same HELLO again
    (same nonce); the 5 s give-up counts from the latest HELLO start, not from a CHALLENGE."""
    v = load()
    nonce = u64(v["hello"]["fields"]["nonce"])
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=nonce)
    assert client.connect(0.0).hex() == v["hello"]["hex"]
    challenge = P.encode_challenge(PROTOCOL_VERSION, nonce, 1, bytes(16))
    _, [connect] = client.receive_datagram(challenge, 4.0)
    assert connect[0] == P.CONNECT
    assert client.poll(4.9)[0] == []
    refuse = P.encode_refuse(P.REFUSE_STALE_COOKIE, PROTOCOL_VERSION, nonce, "cookie expired", 128)
    events, [again] = client.receive_datagram(refuse, 4.95)
    assert events == [] and again.hex() == v["hello"]["hex"]
    assert client.poll(9.9) == ([], [again])  # resent, not given up: 4.95 s since the restart
    [gone], _ = client.poll(10.0)
    assert gone.reason == "handshake_timeout"
    # Without a restart, a CHALLENGE does not extend the 5 s.
    other = ClientConnection(version=PROTOCOL_VERSION, nonce=nonce)
    other.connect(0.0)
    other.receive_datagram(challenge, 4.0)
    [gone], _ = other.poll(5.01)
    assert gone.reason == "handshake_timeout"


def test_connect_token_and_tag_vectors():
    """SPEC 2, 3 and 8.1: the connect token's layout, the CONNECT signed with its key, and
    tagged packets (keyed BLAKE2b, output length 8) checked by the same code the endpoints use."""
    v = load()
    f = v["connect_token"]["fields"]
    token = bytes.fromhex(v["connect_token"]["hex"])
    assert len(token) == T.TOKEN_SIZE and token[0] == f["format"] == T.TOKEN_FORMAT
    assert T.read_token(token) == (u64(f["identity"]), u64(f["expires_ms"]))
    assert token[17:].hex() == f["random_hex"]
    f = v["connect_with_token"]["fields"]
    connect = bytes.fromhex(v["connect_with_token"]["hex"])
    key = bytes.fromhex(f["key_hex"])
    assert P.decode_connect(connect) == (f["version"], u64(f["nonce"]), u64(f["time_ms"]),
                                         bytes.fromhex(f["mac_hex"]), token)
    assert bytes.fromhex(f["token_hex"]) == token
    assert connect[120:].hex() == f["tag_hex"] and T.connect_signed_by(connect, key)
    # The tag is BLAKE2b with output length 8 keyed with the key, not a truncated 64-byte one.
    import hashlib
    assert hashlib.blake2b(connect[:120], key=key, digest_size=8).hexdigest() == f["tag_hex"]
    assert hashlib.blake2b(connect[:120], key=key).hexdigest()[:16] != f["tag_hex"]
    # A client with that token and key writes exactly this CONNECT for this CHALLENGE.
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=u64(f["nonce"]), token=token, key=key)
    client.connect(0.0)
    _, [written] = client.receive_datagram(bytes.fromhex(v["challenge"]["hex"]), 0.0)
    assert written == connect
    f = v["accept_tagged"]["fields"]
    accept = bytes.fromhex(v["accept_tagged"]["hex"])
    body = T.unseal(accept, key)
    assert body is not None and accept[-8:].hex() == f["tag_hex"]
    assert P.decode_accept(body) == (u64(f["nonce"]), f["salt"], bytes.fromhex(f["welcome_hex"]))
    [connected], _ = client.receive_datagram(accept, 0.1)
    assert connected.salt == f["salt"]
    f = v["tagged_input_packet"]["fields"]
    packet = bytes.fromhex(v["tagged_input_packet"]["hex"])
    assert bytes.fromhex(f["key_hex"]) == key and packet[-8:].hex() == f["tag_hex"]
    body = T.unseal(packet, key)
    assert P.decode_header(body) == (f["type"], f["salt"], f["seq"], f["ack"], f["ack_bits"])
    assert body[P.HEADER_SIZE:].hex() == f["payload_hex"]
