"""Writes protocol/vectors/packets.json: every packet layout of SPEC.md sections 2-4 as bytes.

Each vector names the packet, gives its fields and the expected bytes in hex, so another
implementation can check its encoder and decoder. The cookie vector also gives the secret,
address and time, so a server implementation can check its MAC. Run with ``--check`` to
verify the file is current (the tests do). Deterministic; no I/O but the one file.
"""

from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from protocol import PROTOCOL_VERSION, packets as P  # noqa: E402
from protocol.cookie import CookieJar  # noqa: E402
from protocol.messages import Input, Welcome, encode_inputs  # noqa: E402

OUT = pathlib.Path(__file__).with_name("packets.json")


def build() -> dict:
    secret = bytes(range(32))
    addr = ("192.0.2.10", 50123)
    nonce = 0x0123456789ABCDEF
    time_ms, mac = CookieJar(secret, 10.0).make(PROTOCOL_VERSION, addr, nonce, 1234.5)
    welcome = Welcome(
        entity_id=(7 << 16) | 3, tick_rate=20, tick=4242, mins=(-110.0, -10.0, -110.0),
        maxs=(110.0, 50.0, 110.0), position_step=0.01, max_speed=5.0, interest_radius=50.0,
    )
    inputs = [Input(seq=41, move_x=127, move_z=0, yaw=16384, anim=1, flags=0),
              Input(seq=42, move_x=-90, move_z=90, yaw=49152, anim=2, flags=1)]
    salt = 0xA1B2C3D4
    vectors = [
        {"name": "hello", "fields": {"version": PROTOCOL_VERSION, "nonce": nonce},
         "hex": P.encode_hello(PROTOCOL_VERSION, nonce).hex()},
        {"name": "hello_with_token", "fields": {"version": PROTOCOL_VERSION, "nonce": nonce, "token": "tok-3f9a"},
         "hex": P.encode_hello(PROTOCOL_VERSION, nonce, b"tok-3f9a").hex()},
        {"name": "cookie_mac", "fields": {"secret_hex": secret.hex(), "version": PROTOCOL_VERSION,
         "ip": addr[0], "port": addr[1], "nonce": nonce, "time_ms": time_ms}, "hex": mac.hex()},
        {"name": "challenge", "fields": {"version": PROTOCOL_VERSION, "nonce": nonce, "time_ms": time_ms, "mac_hex": mac.hex()},
         "hex": P.encode_challenge(PROTOCOL_VERSION, nonce, time_ms, mac).hex()},
        {"name": "connect", "fields": {"version": PROTOCOL_VERSION, "nonce": nonce, "time_ms": time_ms, "mac_hex": mac.hex(),
         "token": "tok-3f9a"}, "hex": P.encode_connect(PROTOCOL_VERSION, nonce, time_ms, mac, b"tok-3f9a").hex()},
        {"name": "welcome", "fields": {"entity_id": welcome.entity_id, "tick_rate": 20, "tick": 4242,
         "mins": list(welcome.mins), "maxs": list(welcome.maxs), "position_step": 0.01, "max_speed": 5.0,
         "interest_radius": 50.0}, "hex": welcome.encode().hex()},
        {"name": "accept", "fields": {"nonce": nonce, "salt": salt, "welcome_hex": welcome.encode().hex()},
         "hex": P.encode_accept(nonce, salt, welcome.encode()).hex()},
        {"name": "refuse_version", "fields": {"reason": P.REFUSE_VERSION, "server_version": PROTOCOL_VERSION,
         "nonce": nonce, "text": "server speaks protocol 1, client 2"},
         "hex": P.encode_refuse(P.REFUSE_VERSION, PROTOCOL_VERSION, nonce, "server speaks protocol 1, client 2", 128).hex()},
        {"name": "inputs", "fields": {"inputs": [i.to_list() for i in inputs]}, "hex": encode_inputs(inputs).hex()},
        {"name": "input_packet", "fields": {"type": P.INPUT, "salt": salt, "seq": 65535, "ack": 17,
         "ack_bits": 0x80000005, "payload_hex": encode_inputs(inputs).hex()},
         "hex": (P.encode_header(P.INPUT, salt, 65535, 17, 0x80000005) + encode_inputs(inputs)).hex()},
        {"name": "keepalive_packet", "fields": {"type": P.KEEPALIVE, "salt": salt, "seq": 3, "ack": 65534, "ack_bits": 0},
         "hex": P.encode_header(P.KEEPALIVE, salt, 3, 65534, 0).hex()},
        {"name": "disconnect_packet", "fields": {"type": P.DISCONNECT, "salt": salt, "seq": 9, "ack": 8,
         "ack_bits": 0xFFFFFFFF, "reason": P.DISCONNECT_SERVER_SHUTDOWN},
         "hex": (P.encode_header(P.DISCONNECT, salt, 9, 8, 0xFFFFFFFF) + bytes([P.DISCONNECT_SERVER_SHUTDOWN])).hex()},
    ]
    return {"format": 1, "description": "Packet layouts of protocol/SPEC.md sections 2-4; integers little-endian.",
            "vectors": vectors}


def main() -> int:
    text = json.dumps(build(), indent=1) + "\n"
    if "--check" in sys.argv:
        return 0 if OUT.read_text() == text else 1
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
