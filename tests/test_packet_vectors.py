"""protocol/vectors/packets.json is current and decodes back to its fields."""

import json
import pathlib
import subprocess
import sys

from protocol import packets as P
from protocol.cookie import CookieJar
from protocol.messages import Welcome, decode_inputs

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "protocol" / "vectors"


def load():
    return {v["name"]: v for v in json.loads((VECTORS / "packets.json").read_text())["vectors"]}


def test_vectors_are_current():
    rc = subprocess.run([sys.executable, str(VECTORS / "make_packet_vectors.py"), "--check"]).returncode
    assert rc == 0, "packets.json is stale: run protocol/vectors/make_packet_vectors.py"


def test_vectors_decode_to_their_fields():
    v = load()
    f = v["hello"]["fields"]
    assert P.decode_hello(bytes.fromhex(v["hello"]["hex"])) == (f["version"], f["nonce"], b"")
    f = v["hello_with_token"]["fields"]
    assert P.decode_hello(bytes.fromhex(v["hello_with_token"]["hex"])) == (f["version"], f["nonce"], f["token"].encode())
    f = v["challenge"]["fields"]
    assert P.decode_challenge(bytes.fromhex(v["challenge"]["hex"])) == (
        f["version"], f["nonce"], f["time_ms"], bytes.fromhex(f["mac_hex"]))
    assert P.decode_connect(bytes.fromhex(v["connect"]["hex"]))[3].hex() == f["mac_hex"]
    c = v["cookie_mac"]["fields"]
    jar = CookieJar(bytes.fromhex(c["secret_hex"]), 10.0)
    assert jar.check(c["version"], (c["ip"], c["port"]), c["nonce"], c["time_ms"],
                     bytes.fromhex(v["cookie_mac"]["hex"]), c["time_ms"] / 1000) == "ok"
    w = Welcome.decode(bytes.fromhex(v["welcome"]["hex"]))
    assert w.entity_id == v["welcome"]["fields"]["entity_id"] and w.tick == 4242
    nonce, salt, welcome = P.decode_accept(bytes.fromhex(v["accept"]["hex"]))
    assert (nonce, salt, welcome.hex()) == (v["accept"]["fields"]["nonce"], v["accept"]["fields"]["salt"],
                                            v["accept"]["fields"]["welcome_hex"])
    reason, version, nonce, text = P.decode_refuse(bytes.fromhex(v["refuse_version"]["hex"]))
    assert text == v["refuse_version"]["fields"]["text"] and reason == P.REFUSE_VERSION
    assert [i.to_list() for i in decode_inputs(bytes.fromhex(v["inputs"]["hex"]))] == v["inputs"]["fields"]["inputs"]
    pkt = bytes.fromhex(v["input_packet"]["hex"])
    f = v["input_packet"]["fields"]
    assert P.decode_header(pkt) == (f["type"], f["salt"], f["seq"], f["ack"], f["ack_bits"])
    assert pkt[P.HEADER_SIZE:].hex() == f["payload_hex"]
