"""Writes protocol/vectors/packets.json: every packet layout of SPEC.md sections 2-4 as bytes.

Each vector names the packet, gives its fields and the expected bytes in hex, so another
implementation can check its encoder and decoder. The cookie vector also gives the secret,
address and time, so a server implementation can check its MAC; the connect token vectors give
the connect key, so a client can check its tags (SPEC 3, 8). The file's format is specified in
SPEC.md section 4.2; in short, u64 fields (nonces, cookie times, identities, expiries) are
written as decimal strings so that JSON parsers with float64 numbers (JavaScript's JSON.parse)
keep them exact. Run with ``--check`` to verify the file is current (the tests do). Deterministic; no I/O
but the one file.
"""

from __future__ import annotations

import json
import pathlib
import sys

import msgpack

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from protocol import PROTOCOL_VERSION, packets as P  # noqa: E402
from protocol.cookie import CookieJar  # noqa: E402
from protocol.messages import Input, Welcome, encode_inputs  # noqa: E402
from protocol import tokens as T  # noqa: E402

OUT = pathlib.Path(__file__).with_name("packets.json")
FORMAT = 2
CLOSED_TEXT = "closed for the night — à demain"  # a DISCONNECT's text is UTF-8 (SPEC 3)
KICKED_TEXT = "removed by the operator: spamming the gallery — ça suffit; banned for 10 min"


def u64(value: int) -> str:
    """A u64 field as it is stored in the file: a decimal string."""
    if not 0 <= value < 2**64:
        raise ValueError(f"{value} is not a u64")
    return str(value)


def welcome_fields(w: Welcome) -> dict:
    return {"entity_id": w.entity_id, "tick_rate": w.tick_rate, "tick": w.tick, "mins": list(w.mins),
            "maxs": list(w.maxs), "position_step": w.position_step, "max_speed": w.max_speed,
            "interest_radius": w.interest_radius, "keepalive_interval": w.keepalive_interval,
            "timeout": w.timeout}


def welcome_other_numbers(w: Welcome) -> bytes:
    """The same Welcome as another encoder may write it: integral floats as msgpack ints, the
    others as float32 (every value here is exact in float32). Decoders must accept it."""
    def num(v: float):
        return int(v) if v == int(v) else v
    packed = msgpack.packb(
        [w.entity_id, w.tick_rate, w.tick, [num(v) for v in w.mins], [num(v) for v in w.maxs],
         w.position_step, num(w.max_speed), num(w.interest_radius), w.keepalive_interval, num(w.timeout)],
        use_single_float=True,
    )
    if Welcome.decode(packed) != w:
        raise AssertionError("float32 values of the mixed Welcome vector are not exact")
    return packed


def build() -> dict:
    secret = bytes(range(32))
    addr = ("192.0.2.10", 50123)
    nonce = 0x0123456789ABCDEF
    big_nonce = 0xFEDCBA9876543211  # above 2**53: exact only when read as a string
    time_ms, mac = CookieJar(secret, 10.0).make(PROTOCOL_VERSION, addr, nonce, 1234.5)
    welcome = Welcome(
        entity_id=(7 << 16) | 3, tick_rate=20, tick=4242, mins=(-110.0, -10.0, -110.0),
        maxs=(110.0, 50.0, 110.0), position_step=0.01, max_speed=5.0, interest_radius=50.0,
        keepalive_interval=1.0, timeout=5.0,
    )
    odd = Welcome(
        entity_id=(1 << 16) | 1, tick_rate=30, tick=0, mins=(-64.0, 0.0, -64.0), maxs=(64.0, 16.0, 64.0),
        position_step=0.0078125, max_speed=4.0, interest_radius=40.0, keepalive_interval=0.5, timeout=3.0,
    )
    inputs = [Input(seq=41, move_x=127, move_z=0, yaw=16384, anim=1, flags=0),
              Input(seq=42, move_x=-90, move_z=90, yaw=49152, anim=2, flags=1)]
    first_input = [Input(seq=0, move_x=0, move_z=127, yaw=0, anim=1, flags=0)]
    salt = 0xA1B2C3D4
    issuer = T.ConnectTokens(secret, 60.0, epoch=b"vectors", random_bytes=lambda n: bytes(range(0xE0, 0xE0 + n)))
    token, key = issuer.issue(4242, 1234.5)
    identity, expires_ms = T.read_token(token)
    signed = T.sign_connect(P.encode_connect(PROTOCOL_VERSION, nonce, time_ms, mac, token), key)
    accept = P.encode_accept(nonce, salt, welcome.encode())
    tagged_input = P.encode_header(P.INPUT, salt, 7, 3, 0x5) + encode_inputs(inputs)
    refuse_text = f"server speaks protocol {PROTOCOL_VERSION}, client {PROTOCOL_VERSION - 1}"
    vectors = [
        {"name": "hello", "fields": {"version": PROTOCOL_VERSION, "nonce": u64(nonce)},
         "hex": P.encode_hello(PROTOCOL_VERSION, nonce).hex()},
        {"name": "hello_with_token", "fields": {"version": PROTOCOL_VERSION, "nonce": u64(big_nonce),
         "token": "tok-3f9a"}, "hex": P.encode_hello(PROTOCOL_VERSION, big_nonce, b"tok-3f9a").hex()},
        {"name": "cookie_mac", "fields": {"secret_hex": secret.hex(), "version": PROTOCOL_VERSION,
         "ip": addr[0], "port": addr[1], "nonce": u64(nonce), "time_ms": u64(time_ms)}, "hex": mac.hex()},
        {"name": "challenge", "fields": {"version": PROTOCOL_VERSION, "nonce": u64(nonce), "time_ms": u64(time_ms),
         "mac_hex": mac.hex()}, "hex": P.encode_challenge(PROTOCOL_VERSION, nonce, time_ms, mac).hex()},
        {"name": "connect", "fields": {"version": PROTOCOL_VERSION, "nonce": u64(nonce), "time_ms": u64(time_ms),
         "mac_hex": mac.hex(), "token": "tok-3f9a"},
         "hex": P.encode_connect(PROTOCOL_VERSION, nonce, time_ms, mac, b"tok-3f9a").hex()},
        {"name": "welcome", "fields": welcome_fields(welcome), "hex": welcome.encode().hex()},
        {"name": "welcome_other_numbers", "decode_only": True, "fields": welcome_fields(odd),
         "hex": welcome_other_numbers(odd).hex()},
        {"name": "accept", "fields": {"nonce": u64(nonce), "salt": salt, "welcome_hex": welcome.encode().hex()},
         "hex": P.encode_accept(nonce, salt, welcome.encode()).hex()},
        {"name": "refuse_version", "fields": {"reason": P.REFUSE_VERSION, "server_version": PROTOCOL_VERSION,
         "nonce": u64(nonce), "text": refuse_text},
         "hex": P.encode_refuse(P.REFUSE_VERSION, PROTOCOL_VERSION, nonce, refuse_text, 128).hex()},
        {"name": "inputs", "fields": {"inputs": [i.to_list() for i in inputs]}, "hex": encode_inputs(inputs).hex()},
        {"name": "input_packet", "fields": {"type": P.INPUT, "salt": salt, "seq": 65535, "ack": 17,
         "ack_bits": 0x80000005, "payload_hex": encode_inputs(inputs).hex()},
         "hex": (P.encode_header(P.INPUT, salt, 65535, 17, 0x80000005) + encode_inputs(inputs)).hex()},
        {"name": "first_input_packet", "fields": {"type": P.INPUT, "salt": salt, "seq": 0, "ack": 0xFFFF,
         "ack_bits": 0, "payload_hex": encode_inputs(first_input).hex()},
         "hex": (P.encode_header(P.INPUT, salt, 0, 0xFFFF, 0) + encode_inputs(first_input)).hex()},
        {"name": "keepalive_packet", "fields": {"type": P.KEEPALIVE, "salt": salt, "seq": 3, "ack": 65534, "ack_bits": 0},
         "hex": P.encode_header(P.KEEPALIVE, salt, 3, 65534, 0).hex()},
        {"name": "connect_token", "fields": {"format": T.TOKEN_FORMAT, "identity": u64(identity),
         "expires_ms": u64(expires_ms), "random_hex": token[17:].hex()}, "hex": token.hex()},
        {"name": "connect_with_token", "fields": {"version": PROTOCOL_VERSION, "nonce": u64(nonce),
         "time_ms": u64(time_ms), "mac_hex": mac.hex(), "token_hex": token.hex(), "key_hex": key.hex(),
         "tag_hex": signed[T.CONNECT_SIGNED:].hex()}, "hex": signed.hex()},
        {"name": "accept_tagged", "fields": {"nonce": u64(nonce), "salt": salt, "welcome_hex": welcome.encode().hex(),
         "key_hex": key.hex(), "tag_hex": T.tag(accept, key).hex()}, "hex": T.seal(accept, key).hex()},
        {"name": "tagged_input_packet", "fields": {"type": P.INPUT, "salt": salt, "seq": 7, "ack": 3, "ack_bits": 5,
         "payload_hex": encode_inputs(inputs).hex(), "key_hex": key.hex(), "tag_hex": T.tag(tagged_input, key).hex()},
         "hex": T.seal(tagged_input, key).hex()},
        {"name": "disconnect_packet", "fields": {"type": P.DISCONNECT, "salt": salt, "seq": 9, "ack": 8,
         "ack_bits": 0xFFFFFFFF, "reason": P.DISCONNECT_SERVER_SHUTDOWN},
         "hex": (P.encode_header(P.DISCONNECT, salt, 9, 8, 0xFFFFFFFF) + bytes([P.DISCONNECT_SERVER_SHUTDOWN])).hex()},
        {"name": "disconnect_world_closed_packet", "fields": {"type": P.DISCONNECT, "salt": salt, "seq": 10, "ack": 8,
         "ack_bits": 0xFFFFFFFF, "reason": P.DISCONNECT_WORLD_CLOSED, "text": CLOSED_TEXT},
         "hex": (P.encode_header(P.DISCONNECT, salt, 10, 8, 0xFFFFFFFF)
                 + P.disconnect_payload(P.DISCONNECT_WORLD_CLOSED, CLOSED_TEXT)).hex()},
        # An operator's or a moderator's kick (reason 4, the text says who, why and any ban) and a
        # newer login of the same player (reason 6, no text): the two must not be confused.
        {"name": "disconnect_kicked_packet", "fields": {"type": P.DISCONNECT, "salt": salt, "seq": 11, "ack": 8,
         "ack_bits": 0xFFFFFFFF, "reason": P.DISCONNECT_KICKED, "reason_name": "kicked", "text": KICKED_TEXT},
         "hex": (P.encode_header(P.DISCONNECT, salt, 11, 8, 0xFFFFFFFF)
                 + P.disconnect_payload(P.DISCONNECT_KICKED, KICKED_TEXT)).hex()},
        {"name": "disconnect_replaced_packet", "fields": {"type": P.DISCONNECT, "salt": salt, "seq": 12, "ack": 8,
         "ack_bits": 0xFFFFFFFF, "reason": P.DISCONNECT_REPLACED, "reason_name": "replaced", "text": ""},
         "hex": (P.encode_header(P.DISCONNECT, salt, 12, 8, 0xFFFFFFFF) + P.disconnect_payload(P.DISCONNECT_REPLACED)).hex()},
    ]
    return {
        "format": FORMAT,
        "protocol_version": PROTOCOL_VERSION,
        "description": "Packet layouts of protocol/SPEC.md sections 2-4 (file format: section 4.2). Packet "
                       "integers are little-endian; u64 fields (nonce, time_ms, identity, expires_ms) are decimal strings here.",
        "vectors": vectors,
    }


def main() -> int:
    text = json.dumps(build(), indent=1) + "\n"
    if "--check" in sys.argv:
        return 0 if OUT.read_text() == text else 1
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
