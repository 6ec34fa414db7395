"""Decoder fuzzing: every decoder that reads network input, fed random bytes and mutations.

Job: :data:`TARGETS` names every decoder of ``protocol/`` (packets, messages, snapshot parts
and their assembly, chat frames, checked JSON, handshake cookies, both sans-IO endpoints),
the Hatongsu event parsing of ``worldserver/hatongsu.py`` (the parsers and the service's
``on_text``) and the geckos signaling body of ``worldserver/rtc_signaling.py``. A target's runner
takes one input (bytes; a text decoder gets it as UTF-8 with every invalid byte a lone
surrogate) and must return or raise the decoder's documented error (``ProtocolError``,
``ChatProtocolError``, ``JsonRefused``, hatongsu's ``Drop``); anything else, or a broken
invariant checked after a decode (an ``AssertionError``), is a finding. Inputs are random
bytes, random JSON token soup for text decoders, byte-level mutations of valid inputs (bit
flips, interesting integers, inserted, deleted and duplicated ranges, splices, protocol
tokens) and, for JSON, structural mutations (a value replaced by a hostile one, keys dropped,
added or duplicated, deep nesting).

``tests/test_fuzz.py`` runs every target under hypothesis (bounded); ``python tools/fuzz.py
--per-decoder 1000000`` runs each target on that many seeded inputs, prints progress and a
summary (inputs, unexpected exceptions, time) and exits 1 if anything unexpected happened;
``--save DIR`` writes each finding's input for replay (``--replay FILE --target NAME``).

Must not: open sockets, read clocks in a runner, write anywhere but ``--save``, or keep
state that grows with the number of inputs (stateful runners are rebuilt every
:data:`RESET_EVERY` inputs).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import random
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np

from protocol import PROTOCOL_VERSION, ProtocolError
from protocol import chat as C
from protocol import jsonsafe
from protocol import packets as P
from protocol.client import ClientConnection
from protocol.cookie import CookieJar
from protocol.events import ConnectRequest, Connected, Disconnected, Received, Refused
from protocol.messages import Input, Welcome, decode_inputs, encode_inputs, new_inputs, unpack_strict
from protocol.quantize import Quantizer
from protocol.server import ServerEndpoint
from protocol.snapshot import PartAssembler, View, decode_part, encode_snapshot, read_header

__all__ = ["TARGETS", "Target", "check", "generate", "main", "mutate", "mutate_json", "run_fuzz"]

RESET_EVERY = 20_000  # inputs after which a stateful runner is rebuilt
PROGRESS_EVERY = 5.0  # seconds between progress lines
MAX_FINDINGS_KEPT = 20  # per target: findings beyond this are counted, not kept
SECRET = b"fuzz-secret-key!" * 2
ADDR = ("10.1.2.3", 40000)
NONCE = 0x0123456789ABCDEF
SALT_BYTES = b"\x11\x22\x33\x44"
SALT = int.from_bytes(SALT_BYTES, "little")
NOW = 1000.0

WELCOME = Welcome(65537, 20, 123, (-110.0, -10.0, -110.0), (110.0, 50.0, 110.0), 0.01, 5.0, 50.0, 0.75, 4.0)


@attrs.frozen
class Target:
    """One decoder under fuzz.

    ``make()`` returns the runner ``run(data: bytes)``; ``allowed`` the exceptions it may
    raise; ``seeds()`` valid inputs (each runs without any exception); ``covers`` the
    qualified names of the functions it reaches (tests check that every decoder of
    ``protocol/`` is covered); ``text``: the runner reads text (JSON), so inputs are
    generated and mutated as JSON too."""

    name: str
    make: Callable[[], Callable[[bytes], object]]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]
    covers: tuple[str, ...]
    text: bool = False
    max_size: int = 1400


def as_text(data: bytes) -> str:
    """What a text decoder is fed: UTF-8, every invalid byte a lone surrogate."""
    return data.decode("utf-8", "surrogateescape")


# ----------------------------------------------------------------------------- packets


@functools.cache
def _handshake_packets() -> dict[str, bytes]:
    jar = CookieJar(SECRET, 10.0)
    ms, mac = jar.make(PROTOCOL_VERSION, ADDR, NONCE, NOW)
    return dict(
        hello=P.encode_hello(PROTOCOL_VERSION, NONCE),
        hello_token=P.encode_hello(PROTOCOL_VERSION, NONCE, b"t" * 40),
        challenge=P.encode_challenge(PROTOCOL_VERSION, NONCE, ms, mac),
        connect=P.encode_connect(PROTOCOL_VERSION, NONCE, ms, mac),
        connect_token=P.encode_connect(PROTOCOL_VERSION, NONCE, ms, mac, b"\x00\xff" * 32),
        accept=P.encode_accept(NONCE, SALT, WELCOME.encode()),
        refuse=P.encode_refuse(P.REFUSE_FULL, PROTOCOL_VERSION, NONCE, "server full", P.HANDSHAKE_SIZE),
        input=P.encode_header(P.INPUT, SALT, 1, 0, 0) + encode_inputs([Input(i, 10, -20, 300, 1) for i in range(4)]),
        keepalive=P.encode_header(P.KEEPALIVE, SALT, 2, 0, 1),
        disconnect=P.encode_header(P.DISCONNECT, SALT, 3, 0, 0) + bytes([P.DISCONNECT_CLIENT_LEFT]),
        message=P.encode_header(P.MESSAGE, SALT, 4, 0, 0) + b"\x93\x01\x02\x03",
    )


def _packet_target(name: str, fn: Callable, seeds: tuple[str, ...], check_result=None) -> Target:
    def make():
        if check_result is None:
            return fn

        def run(data: bytes):
            result = fn(data)
            check_result(result)
            return result

        return run

    return Target(
        name=f"packets.{name}", make=make, allowed=(ProtocolError,),
        seeds=lambda: [_handshake_packets()[s] for s in seeds], covers=(f"protocol.packets.{name}",),
    )  # fmt: skip


def _hello_ok(result) -> None:
    assert len(result[2]) <= P.MAX_TOKEN


def _connect_ok(result) -> None:
    assert len(result[3]) == P.MAC_SIZE and len(result[4]) <= P.MAX_TOKEN


# ----------------------------------------------------------------------------- messages


def _welcome_make():
    def run(data: bytes):
        w = Welcome.decode(data)
        assert 0 < w.keepalive_interval < w.timeout and w.position_step > 0
        assert all(a < b for a, b in zip(w.mins, w.maxs))
        return w

    return run


def _inputs_make():
    """``decode_inputs`` and the hot path ``new_inputs`` refuse exactly the same payloads,
    and what ``new_inputs`` takes is SPEC 3 rule 2 applied to the plain decoder's output."""

    def run(data: bytes):
        after = -1 if len(data) % 2 else 1000
        try:
            plain = decode_inputs(data)
        except ProtocolError:
            try:
                new_inputs(data, after)
            except ProtocolError:
                raise
            raise AssertionError("new_inputs accepted a payload decode_inputs refused") from None
        taken, newest = [], after
        for inp in plain:
            assert -127 <= inp.move_x <= 127 and -127 <= inp.move_z <= 127
            if inp.seq > newest:
                taken.append(inp)
                newest = inp.seq
        assert new_inputs(data, after) == taken
        return plain

    return run


# ----------------------------------------------------------------------------- snapshots

QUANTIZER_U2 = Quantizer((-110.0, -10.0, -110.0), (110.0, 50.0, 110.0), 0.01)
QUANTIZER_U4 = Quantizer((-110.0, -10.0, -110.0), (110.0, 50.0, 110.0), 0.001)
BASE_TICK = 10


@functools.cache
def _snapshot_scenario(wide: bool) -> dict:
    """A baseline view at tick 10 and valid parts of tick 11 (a delta against it, in several
    parts and in one) and tick 12 (full): removals, additions, packed walks, wide deltas,
    yaw wrap-around."""
    qz = QUANTIZER_U4 if wide else QUANTIZER_U2
    rng = np.random.default_rng(8 if wide else 7)
    steps = np.array(qz.steps)
    n = 60
    ids = np.sort(rng.choice(np.arange(1, 4000, dtype=np.uint32), n, replace=False)).astype(np.uint32) << 4
    q = np.zeros((n, 5), dtype=np.int32)
    q[:, :3] = rng.integers(0, steps + 1, (n, 3))
    q[:, 3] = rng.integers(0, 65536, n)
    q[:, 4] = rng.integers(0, 4, n)
    q[0, 3] = 65530  # wraps past 0 below
    base = View(BASE_TICK, ids, q)
    keep = rng.random(n) > 0.15
    new_ids, new_q = ids[keep], q[keep].copy()
    m = len(new_ids)
    walk = rng.random(m) < 0.5
    new_q[walk, 0] = np.clip(new_q[walk, 0] + rng.integers(-7, 8, walk.sum()), 0, steps[0])
    new_q[walk, 2] = np.clip(new_q[walk, 2] + rng.integers(-7, 8, walk.sum()), 0, steps[2])
    far = rng.random(m) < 0.2
    new_q[far, :3] = rng.integers(0, steps + 1, (far.sum(), 3))
    new_q[:, 3] = (new_q[:, 3] + rng.integers(-200, 200, m)) % 65536
    new_q[0, 3] = 12
    new_q[:, 4] = np.where(rng.random(m) < 0.1, 3, new_q[:, 4])
    add = np.array(sorted(set(range(4001 << 4, 4040 << 4, 16))), dtype=np.uint32)
    add_q = np.zeros((len(add), 5), dtype=np.int32)
    add_q[:, :3] = rng.integers(0, steps + 1, (len(add), 3))
    all_ids = np.concatenate([new_ids, add])
    all_q = np.concatenate([new_q, add_q])
    common = dict(input_ack=77, self_id=int(ids[1]), layout=qz)
    multi = encode_snapshot(tick=BASE_TICK + 1, baseline=base, cand_ids=all_ids, cand_q=all_q,
                            part_budget=160, **common).parts
    single = encode_snapshot(tick=BASE_TICK + 1, baseline=base, cand_ids=all_ids, cand_q=all_q,
                             part_budget=1187, **common).parts
    three = encode_snapshot(tick=BASE_TICK + 1, baseline=base, cand_ids=all_ids, cand_q=all_q,
                            part_budget=420, **common).parts
    full = encode_snapshot(tick=BASE_TICK + 2, baseline=None, cand_ids=all_ids, cand_q=all_q,
                           part_budget=1187, **common).parts
    assert len(multi) >= 5 and len(three) == 3 and len(single) == 1
    return dict(layout=qz, base=base, multi=multi, three=three, single=single, full=full,
                seeds=multi + single + full)


def _check_view(view: View, layout: Quantizer) -> None:
    ids, q = view.ids, view.q
    assert ids.dtype == np.uint32 and q.dtype == np.int32 and q.shape == (len(ids), 5)
    assert len(ids) < 2 or bool((ids[1:] > ids[:-1]).all())
    if len(q):
        assert (q[:, :3] >= 0).all() and (q[:, :3] <= np.array(layout.steps)).all()
        assert (q[:, 3] >= 0).all() and (q[:, 3] <= 0xFFFF).all() and (q[:, 4] >= 0).all() and (q[:, 4] <= 0xFF).all()


def _read_header_make():
    def run(data: bytes):
        h = read_header(data)
        assert 0 <= h.part < h.parts and h.first_id <= h.last_id
        assert h.baseline_tick is None or h.baseline_tick < h.tick
        return h

    return run


def _decode_part_make(wide: bool):
    scenario = _snapshot_scenario(wide)
    stored = {BASE_TICK: scenario["base"]}
    layout = scenario["layout"]

    def run(data: bytes):
        header, view = decode_part(data, stored, layout)
        _check_view(view, layout)
        assert all(header.first_id <= int(i) <= header.last_id for i in view.ids[:1].tolist() + view.ids[-1:].tolist())
        return view

    return run


def _assembler_make():
    """The fuzzed part arrives in the middle of a valid three-part tick: the valid parts
    before it, then it, then the rest; each add may refuse (ProtocolError), the assembler's
    views stay valid."""
    scenario = _snapshot_scenario(False)
    parts, layout, base = scenario["three"], scenario["layout"], scenario["base"]

    def run(data: bytes):
        asm = PartAssembler(layout)
        asm.views[BASE_TICK] = base
        split = zlib.crc32(data) % len(parts)
        for p in parts[:split]:
            asm.add(p)
        refused = None
        try:
            asm.add(data)
        except ProtocolError as exc:
            refused = exc
        for p in parts[split:]:
            try:
                asm.add(p)
            except ProtocolError:
                pass  # e.g. part_mismatch after an accepted fuzzed part
        for view in asm.views.values():
            _check_view(view, layout)
        _check_view(asm.view, layout)
        if refused is not None:
            raise refused
        return asm.view

    return run


# ----------------------------------------------------------------------------- chat

_CHAT_REQUESTS = [
    C.Hello(id=1, token="tok-" + "a" * 28),
    C.Hello(id=2, token="t", admin_token="admin-secret", since={1: 0, 42: 1234}),
    C.RoomsList(id=3),
    C.RoomCreate(id=4, name="사진 동호회", private=True),
    C.RoomDelete(id=6, room=7),
    C.RoomInvite(id=7, room=7, user="민수"),
    C.RoomJoin(id=8, room=1),
    C.RoomLeave(id=9, room=1),
    C.RoomMembers(id=10, room=1),
    C.MsgSend(id=11, room=1, kind="text", text="안녕하세요\n\tworld 👋", client_id="c-1"),
    C.MsgSend(id=12, room=1, kind="image", image="AbC_-123", text="a caption"),
    C.MsgSend(id=14, room=1, kind="question", text="where is the exit?"),
    C.MsgHistory(id=17, room=1, before=99, limit=100),
    C.MsgSince(id=19, room=1, after=5, limit=500),
    C.MsgSearch(id=21, room=1, query="gallery photo", limit=100),
    C.MsgAnswer(id=22, room=1, message=3),
    C.MsgDelete(id=23, room=1, message=3),
    C.Typing(id=24, room=1, active=True),
    C.ModMute(id=26, user="troll", seconds=86_400),
    C.ModKick(id=27, user="troll"),
    C.CallEnable(id=28, on=True),
    C.CallSignal(id=29, to="민수", data={"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}),
    C.CallSignal(id=30, to="kim", data={"type": "candidate", "candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host",
                                        "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": None}),
]


@functools.cache
def _chat_client_seeds() -> list[bytes]:
    return [C.encode_request(r).encode() for r in _CHAT_REQUESTS]


@functools.cache
def _chat_server_seeds() -> list[bytes]:
    msg = C.message_object(5, 1700000000.123, "민수", "text", "hello", entity_id=3)
    frames = [
        C.encode_reply(3, rooms=[C.room_object(1, "public", "server", False, joined=True)]),
        C.encode_reply(1, public_room=1, name="me", history=[msg]),
        C.encode_error(4, "rate_limited", "slow down", retry_after=1.5),
        C.encode_error(None, "bad_frame", "not JSON"),
        C.encode_event("message", room=1, message=msg),
        C.encode_event("presence", online=["a", "b"]),
        C.encode_event("call.joined", group="main/p3", zone=None, mode="mesh", sfu=None,
                       members=[{"name": "a", "entity_id": 3}, {"name": "b", "entity_id": 4}]),
        C.encode_event("call.signal", group="main/p3", data={"type": "answer", "sdp": "v=0\r\n"}, **{"from": "a"}),
    ]
    return [f.encode() for f in frames]


def _chat_client_make():
    def run(data: bytes):
        try:
            request = C.decode_client_frame(as_text(data))
        except C.ChatProtocolError as exc:
            assert exc.code in C.ERROR_CODES
            assert exc.request_id is None or (type(exc.request_id) is int and 1 <= exc.request_id <= C.MAX_REQUEST_ID)
            json.loads(C.error_for(exc))  # the error reply is always encodable
            raise
        assert C.decode_client_frame(C.encode_request(request)) == request
        return request

    return run


def _chat_server_make():
    def run(data: bytes):
        return C.decode_server_frame(as_text(data), 1 << 20)

    return run


# ----------------------------------------------------------------------------- JSON

_JSON_SEEDS = [b'{"name": "visitor", "secret": "abc"}', b'{"type": "answer", "sdp": "v=0\\r\\n"}',
               b'[1, 2.5, -3e10, true, false, null, "x\\u00e9\\ud83d\\ude00"]', b'{"a": {"b": [{"c": {}}]}}']


def _jsonsafe_make():
    def run(data: bytes):
        return jsonsafe.loads(data, max_bytes=64 * 1024)

    return run


def _check_line_make():
    def run(data: bytes):
        line = C.check_line(as_text(data), "title", 100)
        assert type(line) is str and len(line) <= 100 and "\n" not in line
        return line

    return run


def _nesting_make():
    def run(data: bytes):
        depth = jsonsafe.nesting_depth(as_text(data))
        assert type(depth) is int and depth >= 0
        return depth

    return run


# ----------------------------------------------------------------------------- cookies


def _cookie_make():
    """A CONNECT's cookie checked at the address it was made for: "ok" only for the exact
    cookie the server made (anything else is forged, or stale when old)."""
    jar = CookieJar(SECRET, 10.0)
    issued = P.decode_connect(_handshake_packets()["connect"])[:4]

    def run(data: bytes):
        version, nonce, ms, mac, _ = P.decode_connect(data)
        for now in (NOW, NOW + 30.0):
            verdict = jar.check(version, ADDR, nonce, ms, mac, now)
            assert verdict in ("ok", "forged", "stale")
            if verdict == "ok":
                assert (version, nonce, ms, mac) == issued and now == NOW
        return verdict

    return run


# ----------------------------------------------------------------------------- endpoints


def _fixed_random(n: int) -> bytes:
    return (SALT_BYTES * (n // 4 + 1))[:n]


def _connected_pair(keyed: bool = False) -> tuple[ServerEndpoint, ClientConnection, object]:
    """A server endpoint and a client connected over a handshake at NOW; ``keyed``: with a
    connect token and its key (every packet tagged, SPEC 3)."""
    server = ServerEndpoint(secret=SECRET, version=PROTOCOL_VERSION, random_bytes=_fixed_random, max_clients=4)
    extra = {}
    if keyed:
        token, key = _connect_token()
        extra = dict(token=token, key=key)
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=NONCE, **extra)
    server.receive_datagram(client.connect(NOW), ADDR, NOW)
    (challenge, _), = server.outbox
    server.outbox.clear()
    _, (connect,) = client.receive_datagram(challenge, NOW)
    (request,) = server.receive_datagram(connect, ADDR, NOW)
    conn = server.accept(request, WELCOME.encode(), NOW, **({"key": extra["key"]} if keyed else {}))
    (accept, _), = server.outbox
    server.outbox.clear()
    client.receive_datagram(accept, NOW)
    return server, client, conn


@functools.cache
def _endpoint_seeds(keyed: bool = False) -> list[bytes]:
    server, client, conn = _connected_pair(keyed)
    client.packet(P.INPUT, encode_inputs([Input(1, 0, 0, 0, 0)]), NOW + 0.01)  # the runner's first
    jar_packets = _handshake_packets()
    return [
        client.packet(P.INPUT, encode_inputs([Input(i, 50, -50, 1000, 1) for i in range(2, 6)]), NOW + 0.05),
        client.packet(P.KEEPALIVE, b"", NOW + 0.05),
        client.packet(P.MESSAGE, b"\x92\x01\xa1x", NOW + 0.05),
        client.packet(P.DISCONNECT, bytes([P.DISCONNECT_CLIENT_LEFT]), NOW + 0.05),
        jar_packets["hello"], jar_packets["connect"], jar_packets["connect_token"],
    ]


def _server_make(keyed: bool = False):
    """A fresh connected endpoint per input (deterministic salt): one valid INPUT, the fuzzed
    datagram from the client's address, a valid packet after it, then a poll. Nothing may
    escape; replies to an unproven address are never larger than the request (the endpoint
    asserts that itself)."""

    def run(data: bytes):
        server, client, conn = _connected_pair(keyed)
        server.receive_datagram(client.packet(P.INPUT, encode_inputs([Input(1, 0, 0, 0, 0)]), NOW + 0.01), ADDR, NOW + 0.01)
        events = server.receive_datagram(data, ADDR, NOW + 0.05)
        assert isinstance(events, tuple)
        for ev in events:
            assert isinstance(ev, (ConnectRequest, Disconnected, Received)), ev
            if isinstance(ev, ConnectRequest):
                server.accept(ev, WELCOME.encode(), NOW + 0.05)
        if client.state == "connected":
            server.receive_datagram(client.packet(P.KEEPALIVE, b"", NOW + 0.1), ADDR, NOW + 0.1)
        server.poll(NOW + 0.2)
        assert len(server.connections) <= server.max_clients
        return events

    return run


@functools.cache
def _client_seeds(keyed: bool = False) -> list[bytes]:
    server, client, conn = _connected_pair(keyed)
    jar_packets = _handshake_packets()
    snapshot = _snapshot_scenario(False)["single"][0]
    accept = conn.accept_packet if keyed else jar_packets["accept"]
    return [
        jar_packets["challenge"], accept, jar_packets["refuse"],
        server.packet(conn, P.SNAPSHOT, snapshot, NOW + 0.05),
        server.packet(conn, P.KEEPALIVE, b"", NOW + 0.05),
        server.packet(conn, P.DISCONNECT, bytes([P.DISCONNECT_TIMEOUT]), NOW + 0.05),
    ]


def _client_make(keyed: bool = False):
    """A fresh client per input, in the state the input's CRC picks (HELLO sent, CONNECT
    sent, connected), fed the fuzzed datagram; then polled. Nothing may escape."""
    extra = {}
    if keyed:
        token, key = _connect_token()
        extra = dict(token=token, key=key)

    def run(data: bytes):
        state = zlib.crc32(data) % 3
        if state == 2:
            _, client, _ = _connected_pair(keyed)
        else:
            client = ClientConnection(version=PROTOCOL_VERSION, nonce=NONCE, **extra)
            client.connect(NOW)
            if state == 1:
                client.receive_datagram(_handshake_packets()["challenge"], NOW)
        events, out = client.receive_datagram(data, NOW + 0.05)
        assert isinstance(events, list) and isinstance(out, list)
        for ev in events:
            assert isinstance(ev, (Connected, Disconnected, Received, Refused)), ev
        for d in out:
            assert isinstance(d, bytes) and len(d) <= P.MAX_DATAGRAM
        client.poll(NOW + 0.3)
        return events

    return run


# ----------------------------------------------------------------------------- connect tokens

HAS_TOKENS = importlib.util.find_spec("protocol.tokens") is not None  # SPEC 8 (issue 8)
IDENTITY = 4242


@functools.cache
def _token_issuer():
    from protocol import tokens

    return tokens.ConnectTokens(SECRET, 60.0, epoch=b"fuzz", random_bytes=lambda n: b"r" * n)


@functools.cache
def _connect_token() -> tuple[bytes, bytes]:
    return _token_issuer().issue(IDENTITY, NOW)


@functools.cache
def _signed_connect() -> bytes:
    from protocol import tokens

    token, key = _connect_token()
    jar = CookieJar(SECRET, 10.0)
    ms, mac = jar.make(PROTOCOL_VERSION, ADDR, NONCE, NOW)
    return tokens.sign_connect(P.encode_connect(PROTOCOL_VERSION, NONCE, ms, mac, token), key)


def _read_token_make():
    from protocol import tokens

    return tokens.read_token


def _open_token_make():
    """A CONNECT presenting a connect token: opened only when it is the token the server
    issued and the CONNECT's signed bytes are the ones its key signed (no forgery); a later
    ``now`` never opens it."""
    issuer = _token_issuer()
    signed = _signed_connect()
    token, _ = _connect_token()

    def run(data: bytes):
        presented = P.decode_connect(data)[4]
        opened = issuer.open(presented, data, NOW)
        if isinstance(opened, str):
            assert opened in ("invalid", "expired"), opened
        else:
            assert opened.token == token and opened.identity == IDENTITY and data[:120] == signed[:120]
        assert isinstance(issuer.open(presented, data, NOW + 3600.0), str)
        return opened

    return run


def _unseal_make():
    """A tagged packet unsealed with the connect key: the body only for an untouched packet."""
    from protocol import tokens

    _, key = _connect_token()
    sealed = set(_endpoint_seeds(True)[:4])

    def run(data: bytes):
        body = tokens.unseal(data, key)
        assert body is None or (data in sealed and body == data[: -tokens.TAG_SIZE])
        return body

    return run


# ----------------------------------------------------------------------------- hatongsu

_HATONGSU_SEEDS = [
    b'{"clientPlayerUpdate":{"position":{"x":1.5,"y":0,"z":-2.25},"rotation":{"x":0,"y":0.38268,"z":0,"w":0.92388}}}',
    b'{"clientAnimationUpdate":{"playerId":"abc","state":1}}',
    b'{"clientAnimationUpdate":{"MESSAGE":{"playerId":"x","state":2},"RELIABLE":1,"ID":"AbCdEfGhIjKlMnOpQrStUvWx"}}',
    b'{"clientPlayerUpdate":{"MESSAGE":{"position":{"x":0,"y":0,"z":0},"rotation":{"x":0,"y":0,"z":0,"w":1}},"RELIABLE":1,"ID":"r1"}}',
]


def _hatongsu_parse_make():
    from worldserver import hatongsu as H

    def run(data: bytes):
        event, payload = H.parse_event(as_text(data))
        if isinstance(payload, dict) and "MESSAGE" in payload:
            payload = payload["MESSAGE"]
        if event == H.CLIENT_PLAYER_UPDATE:
            position, yaw = H.parse_player_update(payload)
            assert all(abs(v) <= H.MAX_COORDINATE for v in position)
            assert yaw is None or -4.0 < yaw < 4.0
        elif event == H.CLIENT_ANIMATION_UPDATE:
            assert 0 <= H.parse_animation_update(payload) <= 255
        return event

    return run


class _FakePeer:
    """A geckos channel as the Hatongsu service sees it (texts sent go nowhere)."""

    def __init__(self, pid: str) -> None:
        self.id = pid
        self.remote = "127.0.0.1"  # where the offer came from (RtcPeer.remote)
        self.sent = 0
        self.closed = None

    def send(self, data) -> None:
        self.sent += 1

    def buffered_amount(self) -> int:
        return 0

    def close(self, reason: str = "") -> None:
        self.closed = reason


def _hatongsu_service_make():
    """One simulation with a Hatongsu player; every input is one text of that player (and a
    tick runs every 50 inputs, so fuzzed claims reach the steering). ``on_text`` never
    raises."""
    from worldserver.config import load_config
    from worldserver.hatongsu import HatongsuService, HatongsuSession
    from worldserver.simulation import Simulation
    from worldserver.stats import Stats

    config = load_config(path=None, env={}, overrides={})
    stats = Stats()
    sim = Simulation(config, stats)
    service = HatongsuService(sim, stats)
    peer = _FakePeer("F" * 24)
    assert isinstance(service.open(peer, NOW), HatongsuSession)
    clock = {"now": NOW, "n": 0}

    def run(data: bytes):
        clock["now"] += 0.2  # under the input rate limit (it is fuzzed, not the limiter)
        clock["n"] += 1
        now = clock["now"]
        text = as_text(data)
        service.accepts(text)
        result = service.on_text(peer, text, now)
        if clock["n"] % 50 == 0:
            sim.run_tick(now)
        return result

    return run


# ----------------------------------------------------------------------------- geckos signaling


def _geckos_make():
    """The body of ``POST .../remote-description`` as the signaling route reads it."""
    from worldserver import rtc_signaling
    from worldserver.http_common import load_json
    from worldserver.logs import LogLimiter
    from worldserver.stats import Stats

    stats = Stats()
    refusals = LogLimiter(logging.getLogger("worldtools.fuzz.refusals"), 60.0)

    def run(data: bytes):
        value = load_json(data, "remote-description", stats, refusals)
        description = rtc_signaling._description(value)
        assert description is None or (type(description["type"]) is str and type(description["sdp"]) is str)
        return description

    return run


def _hatongsu_drop():
    from worldserver.hatongsu import Drop

    return Drop


# ----------------------------------------------------------------------------- the registry


def _targets() -> list[Target]:
    hs = _handshake_packets
    return [
        _packet_target("packet_type", P.packet_type, tuple(hs())),
        _packet_target("decode_hello", P.decode_hello, ("hello", "hello_token"), _hello_ok),
        _packet_target("decode_challenge", P.decode_challenge, ("challenge",)),
        _packet_target("decode_connect", P.decode_connect, ("connect", "connect_token"), _connect_ok),
        _packet_target("decode_accept", P.decode_accept, ("accept",)),
        _packet_target("decode_refuse", P.decode_refuse, ("refuse",)),
        _packet_target("decode_header", P.decode_header, ("input", "keepalive", "disconnect", "message")),
        Target("messages.unpack_strict", lambda: unpack_strict, (ProtocolError,),
               lambda: [WELCOME.encode(), b"\x93\x01\xa1x\xc4\x02ab"], ("protocol.messages.unpack_strict",)),
        Target("messages.Welcome.decode", _welcome_make, (ProtocolError,), lambda: [WELCOME.encode()],
               ("protocol.messages.Welcome.decode",)),
        Target("messages.inputs", _inputs_make, (ProtocolError,),
               lambda: [encode_inputs([Input(i, 127, -127, 65535, 255, 1) for i in range(8)]),
                        encode_inputs([Input(5, 0, 0, 0, 0)]), encode_inputs([Input(2**32 - 1, 1, 2, 3, 4)])],
               ("protocol.messages.decode_inputs", "protocol.messages.new_inputs")),
        Target("snapshot.read_header", _read_header_make, (ProtocolError,),
               lambda: _snapshot_scenario(False)["seeds"], ("protocol.snapshot.read_header",), max_size=1500),
        Target("snapshot.decode_part/u2", lambda: _decode_part_make(False), (ProtocolError,),
               lambda: _snapshot_scenario(False)["seeds"], ("protocol.snapshot.decode_part",), max_size=1500),
        Target("snapshot.decode_part/u4", lambda: _decode_part_make(True), (ProtocolError,),
               lambda: _snapshot_scenario(True)["seeds"], ("protocol.snapshot.decode_part",), max_size=1500),
        Target("snapshot.PartAssembler", _assembler_make, (ProtocolError,),
               lambda: _snapshot_scenario(False)["three"], ("protocol.snapshot.PartAssembler.add",), max_size=1500),
        Target("chat.decode_client_frame", _chat_client_make, (C.ChatProtocolError,), _chat_client_seeds,
               ("protocol.chat.decode_client_frame",), text=True, max_size=20_000),
        Target("chat.decode_server_frame", _chat_server_make, (C.ChatProtocolError,), _chat_server_seeds,
               ("protocol.chat.decode_server_frame",), text=True, max_size=20_000),
        Target("chat.check_line", _check_line_make, (C.ChatProtocolError,),
               lambda: [b"Harbour at dawn", "Caf\u00e9 \u2014 n\u00b0 3".encode(), b""],
               ("protocol.chat.check_line",), text=True, max_size=400),
        Target("jsonsafe.loads", _jsonsafe_make, (jsonsafe.JsonRefused,), lambda: list(_JSON_SEEDS),
               ("protocol.jsonsafe.loads",), text=True, max_size=70_000),
        Target("jsonsafe.nesting_depth", _nesting_make, (), lambda: list(_JSON_SEEDS),
               ("protocol.jsonsafe.nesting_depth",), text=True, max_size=70_000),
        Target("cookie.check", _cookie_make, (ProtocolError,), lambda: [hs()["connect"], hs()["connect_token"]],
               ("protocol.cookie.CookieJar.check",)),
        Target("server.receive_datagram", _server_make, (), _endpoint_seeds,
               ("protocol.server.ServerEndpoint.receive_datagram",), max_size=1500),
        Target("client.receive_datagram", _client_make, (), _client_seeds,
               ("protocol.client.ClientConnection.receive_datagram",), max_size=1500),
        Target("hatongsu.parse", _hatongsu_parse_make, (_hatongsu_drop(),), lambda: list(_HATONGSU_SEEDS),
               ("worldserver.hatongsu.parse_event", "worldserver.hatongsu.parse_player_update",
                "worldserver.hatongsu.parse_animation_update"), text=True, max_size=5000),
        Target("hatongsu.on_text", _hatongsu_service_make, (), lambda: list(_HATONGSU_SEEDS),
               ("worldserver.hatongsu.HatongsuService.on_text", "worldserver.hatongsu.HatongsuService.accepts"),
               text=True, max_size=5000),
        Target("rtc_signaling.remote_description", _geckos_make, (jsonsafe.JsonRefused,),
               lambda: [b'{"type":"answer","sdp":"v=0\\r\\no=- 1 2 IN IP4 127.0.0.1\\r\\n"}', _JSON_SEEDS[0]],
               ("worldserver.http_common.load_json", "worldserver.rtc_signaling._description"), text=True,
               max_size=70_000),
    ] + (_token_targets() if HAS_TOKENS else [])  # fmt: skip


def _token_targets() -> list[Target]:
    return [
        Target("tokens.read_token", _read_token_make, (ProtocolError,), lambda: [_connect_token()[0]],
               ("protocol.tokens.read_token",)),
        Target("tokens.ConnectTokens.open", _open_token_make, (ProtocolError,), lambda: [_signed_connect()],
               ("protocol.tokens.ConnectTokens.open", "protocol.tokens.connect_signed_by")),
        Target("tokens.unseal", _unseal_make, (), lambda: _endpoint_seeds(True)[:4], ("protocol.tokens.unseal",),
               max_size=1500),
        Target("server.receive_datagram/keyed", lambda: _server_make(True), (), lambda: _endpoint_seeds(True),
               ("protocol.server.ServerEndpoint.receive_datagram",), max_size=1500),
        Target("client.receive_datagram/keyed", lambda: _client_make(True), (), lambda: _client_seeds(True),
               ("protocol.client.ClientConnection.receive_datagram",), max_size=1500),
    ]  # fmt: skip


TARGETS: dict[str, Target] = {t.name: t for t in _targets()}


# ----------------------------------------------------------------------------- inputs

_INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
                0x80000000, 0xFFFFFFFF)
_BIN_TOKENS = (b"\x00", b"\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x80", b"\x7f",
               b"\xc1", b"\xdc\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc4\xff",
               b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", b"\xd4\x01\x01", b"\x45\x11", b"\x20\x1f")
_JSON_TOKENS = (b"[", b"]", b"{", b"}", b'"', b"\\", b"\\u", b"\\ud800", b"\\udfff", b",", b":",
                b"null", b"true", b"false", b"NaN", b"-Infinity", b"-0", b"1e999", b"-1e-400",
                b"9" * 400, b"0.1", b"2e2", b"\xc3\xa9", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\x00",
                b"\x1f", b"\xe2\x80\xa8", b'"RELIABLE":1', b'"ID":"x"', b'"MESSAGE":', b'"id":1',
                b'"op":"hello"', b'"token":"t"', b'"room":1', b'"__proto__"', b'"0"', b" ", b"\t\n")
_HOSTILE_VALUES = (None, True, False, 0, -1, 1, 2**31, 2**53, 2**64, -(2**63), 1.5, 1e308, -0.0,
                   "", "x" * 300, "\u0000", "\ud800", "\u2028", "가" * 70, [], {}, [[[[[[]]]]]], {"a": {}},
                   "NaN", "1", "MESSAGE", "RELIABLE")
_HOSTILE_KEYS = ("id", "op", "ev", "re", "ok", "token", "room", "text", "kind", "since", "MESSAGE",
                 "RELIABLE", "ID", "type", "sdp", "position", "rotation", "x", "y", "w", "state",
                 "0", "4294967294", "", "__proto__", "\u0000")


def random_bytes(rng: random.Random, target: Target, seeds: list[bytes]) -> bytes:
    """Random input: raw bytes of a random size (often near a valid input's size), or for a
    text decoder sometimes a soup of JSON tokens."""
    if target.text and rng.random() < 0.5:
        return b"".join(rng.choice(_JSON_TOKENS) for _ in range(rng.randrange(1, 40)))[: target.max_size]
    r = rng.random()
    if r < 0.4:
        n = rng.randrange(0, 24)
    elif r < 0.8 and seeds:
        n = max(0, len(rng.choice(seeds)) + rng.randrange(-3, 4))
    else:
        n = rng.randrange(0, target.max_size + 1)
    return rng.randbytes(min(n, target.max_size))


def mutate(rng: random.Random, data: bytes, corpus: list[bytes], tokens=_BIN_TOKENS, max_size: int = 1400) -> bytes:
    """Byte-level mutations of ``data``, 1 to 8 stacked: bit flips, random and interesting
    values, small arithmetic, inserted/deleted/duplicated ranges, tokens, truncation,
    splices with another input of ``corpus``."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        n = len(out)
        op = rng.randrange(11)
        if op == 0 and n:
            out[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            out[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n:
            width = rng.choice((1, 2, 4))
            value = rng.choice(_INTERESTING) & ((1 << (8 * width)) - 1)
            at = rng.randrange(n)
            out[at : at + width] = value.to_bytes(width, rng.choice(("little", "big")))
        elif op == 3 and n:
            at = rng.randrange(n)
            out[at] = (out[at] + rng.choice((-2, -1, 1, 2))) & 0xFF
        elif op == 4:
            at = rng.randrange(n + 1)
            out[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif op == 5 and n:
            at = rng.randrange(n)
            del out[at : at + rng.randrange(1, 17)]
        elif op == 6 and n:
            at = rng.randrange(n)
            piece = out[at : at + rng.randrange(1, 33)]
            to = rng.randrange(n + 1)
            out[to:to] = piece * rng.choice((1, 1, 2, 8))
        elif op == 7:
            at = rng.randrange(n + 1)
            out[at:at] = rng.choice(tokens)
        elif op == 8 and n:
            del out[rng.randrange(n + 1) :]
        elif op == 9 and corpus:
            other = rng.choice(corpus)
            out = out[: rng.randrange(n + 1)] + other[rng.randrange(len(other) + 1) :]
        elif op == 10 and n:
            at = rng.randrange(n)
            out[at : at + 1] = bytes([out[at]]) * rng.randrange(2, 64)
        if len(out) > max_size:
            del out[max_size:]
    return bytes(out)


def _random_value(rng: random.Random, depth: int = 0):
    if depth < 3 and rng.random() < 0.2:
        if rng.random() < 0.5:
            return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(_HOSTILE_KEYS): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if rng.random() < 0.1:
        return [0] if rng.random() < 0.5 else {"a": 0}
    return rng.choice(_HOSTILE_VALUES)


MAX_NODES = 2000  # nodes of a document a structural mutation picks from (its first ones)


def _nodes(obj) -> list[tuple[tuple, object]]:
    """(path, node) of the document's first MAX_NODES nodes, without recursion (a mutated
    document may be nested hundreds deep)."""
    out = []
    stack = [((), obj)]
    while stack and len(out) < MAX_NODES:
        path, node = stack.pop()
        out.append((path, node))
        if isinstance(node, dict):
            stack.extend((path + (k,), v) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((path + (i,), v) for i, v in reversed(list(enumerate(node))))
    return out


def mutate_json(rng: random.Random, data: bytes, max_size: int = 70_000) -> bytes:
    """Structural mutations of a JSON document: a value replaced by a hostile one, a key
    dropped or added, a container emptied or wrapped, a key duplicated, deep nesting; then
    written back (sometimes ASCII-escaped, sometimes with a byte-level mutation on top)."""
    try:
        obj = json.loads(data)
    except ValueError:
        return mutate(rng, data, [], _JSON_TOKENS, max_size)
    for _ in range(rng.choice((1, 1, 2, 3))):
        path, node = rng.choice(_nodes(obj))
        op = rng.randrange(6)
        new = node
        if op == 0:
            new = _random_value(rng)
        elif op == 1 and isinstance(node, dict) and node:
            new = dict(node)
            del new[rng.choice(list(new))]
        elif op == 2 and isinstance(node, dict):
            new = dict(node)
            new[rng.choice(_HOSTILE_KEYS)] = _random_value(rng)
        elif op == 3:
            new = [node] if rng.random() < 0.5 else {"MESSAGE": node, "RELIABLE": 1, "ID": "x"}
        elif op == 4:
            new = node
            for _ in range(rng.choice((2, 31, 32, 33, 200))):
                new = [new]
        elif op == 5 and isinstance(node, (dict, list)):
            new = type(node)()
        if not path:
            obj = new
            continue
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = new
    try:
        text = json.dumps(obj, ensure_ascii=rng.random() < 0.3, allow_nan=True)
    except (ValueError, RecursionError):
        text = json.dumps(None)
    out = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.15 and isinstance(obj, dict) and obj:  # a duplicated key
        key = json.dumps(next(iter(obj)), ensure_ascii=False).encode("utf-8", "surrogatepass")
        out = out[:1] + key + b":0," + out[1:] if len(out) > 2 else out
    if rng.random() < 0.2:
        out = mutate(rng, out, [], _JSON_TOKENS, max_size)
    return out[:max_size]


def generate(rng: random.Random, target: Target, seeds: list[bytes]) -> bytes:
    """One input for ``target``: random (20%), a structural JSON mutation of a seed (text
    decoders, 25%), else byte-level mutations of a seed."""
    r = rng.random()
    if r < 0.2 or not seeds:
        return random_bytes(rng, target, seeds)
    base = rng.choice(seeds)
    if target.text and r < 0.45:
        return mutate_json(rng, base, target.max_size)
    return mutate(rng, base, seeds, _JSON_TOKENS if target.text else _BIN_TOKENS, target.max_size)


# ----------------------------------------------------------------------------- running


class Unexpected(Exception):
    """A runner raised something its target does not allow (or broke an invariant)."""

    def __init__(self, target: str, data: bytes, exc: BaseException) -> None:
        self.target, self.data, self.exc = target, data, exc
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        self.where = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
        super().__init__(f"{target}: {type(exc).__name__}: {exc} at {self.where} (input {data[:64].hex()}"
                         f"{'...' if len(data) > 64 else ''}, {len(data)} bytes)")


def check(target: Target, run: Callable[[bytes], object], data: bytes) -> bool:
    """Feed one input: True if it was accepted, False if refused with an allowed error;
    raises :class:`Unexpected` for anything else."""
    try:
        run(data)
    except target.allowed:
        return False
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        raise Unexpected(target.name, data, exc) from exc
    return True


def fuzz_target(target: Target, count: int, seed: int, *, on_progress=None, save: Path | None = None) -> dict:
    """``count`` seeded inputs into one target; returns its summary."""
    rng = random.Random(f"{seed}:{target.name}")
    seeds = target.seeds()
    run = target.make()
    accepted = refused = 0
    findings: dict[str, dict] = {}
    unexpected = 0
    t0 = time.perf_counter()
    next_progress = time.monotonic() + PROGRESS_EVERY
    for i in range(count):
        if i and i % RESET_EVERY == 0:
            run = target.make()
        data = generate(rng, target, seeds)
        try:
            if check(target, run, data):
                accepted += 1
            else:
                refused += 1
        except Unexpected as finding:
            unexpected += 1
            key = f"{type(finding.exc).__name__} at {finding.where}"
            if key not in findings and len(findings) < MAX_FINDINGS_KEPT:
                findings[key] = dict(error=str(finding.exc)[:300], input_hex=data[:256].hex(), size=len(data))
                if save is not None:
                    save.mkdir(parents=True, exist_ok=True)
                    (save / f"{target.name.replace('/', '_')}-{len(findings)}.bin").write_bytes(data)
            run = target.make()  # a runner that failed may be in a broken state
        if on_progress is not None and time.monotonic() >= next_progress:
            next_progress = time.monotonic() + PROGRESS_EVERY
            on_progress(target.name, i + 1, count, unexpected, time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    return dict(target=target.name, inputs=count, accepted=accepted, refused=refused,
                unexpected=unexpected, findings=findings, seconds=round(seconds, 2),
                inputs_per_s=round(count / seconds) if seconds > 0 else None)


def _fuzz_named(name: str, per_decoder: int, seed: int, on_progress, save) -> dict:
    return fuzz_target(TARGETS[name], per_decoder, seed, on_progress=on_progress, save=save)


def run_fuzz(per_decoder: int, seed: int, names: list[str] | None = None, *, on_progress=None,
             save: Path | None = None, targets: dict[str, Target] | None = None, jobs: int = 1) -> dict:
    """Every target (or those ``names``) on ``per_decoder`` inputs; the summary of all.
    ``jobs`` > 1: targets run in that many worker processes (the registry's targets only);
    a target's inputs are the same however many jobs run."""
    targets = TARGETS if targets is None else targets
    chosen = [targets[n] for n in (names or list(targets))]
    t0 = time.perf_counter()
    for t in chosen:  # every runner builds (and every module it needs is loaded) before any run
        t.seeds()
        t.make()
    if jobs > 1 and targets is TARGETS:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.starmap(_fuzz_named, [(t.name, per_decoder, seed, on_progress, save) for t in chosen],
                                   chunksize=1)
    else:
        results = [fuzz_target(t, per_decoder, seed, on_progress=on_progress, save=save) for t in chosen]
    return dict(
        seed=seed, per_decoder=per_decoder, targets=len(results), jobs=jobs,
        inputs=sum(r["inputs"] for r in results), unexpected=sum(r["unexpected"] for r in results),
        seconds=round(time.perf_counter() - t0, 1), results=results,
    )  # fmt: skip


def format_summary(summary: dict) -> str:
    width = max(len(r["target"]) for r in summary["results"])
    lines = [f"{'target':<{width}}  {'inputs':>10}  {'accepted':>9}  {'refused':>10}  {'unexpected':>10}  {'seconds':>8}"]
    for r in summary["results"]:
        lines.append(f"{r['target']:<{width}}  {r['inputs']:>10,}  {r['accepted']:>9,}  {r['refused']:>10,}  "
                     f"{r['unexpected']:>10,}  {r['seconds']:>8.1f}")
        for key, finding in r["findings"].items():
            lines.append(f"    {key}: {finding['error']}")
    lines.append(f"total: {summary['inputs']:,} inputs into {summary['targets']} decoders, "
                 f"{summary['unexpected']} unexpected exceptions, {summary['seconds']} s (seed {summary['seed']}, "
                 f"{summary.get('jobs', 1)} jobs)")
    return "\n".join(lines)


def print_progress(name: str, done: int, count: int, unexpected: int, seconds: float) -> None:
    print(f"fuzz {name}: {done:,}/{count:,} inputs, {unexpected} unexpected, {seconds:.0f} s",
          file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tools/fuzz.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-decoder", type=int, default=100_000, help="inputs per decoder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (targets run in parallel)")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="only these (repeatable)")
    parser.add_argument("--save", type=Path, default=None, help="write each finding's input here")
    parser.add_argument("--replay", type=Path, default=None, help="feed this one file to --target and exit")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--list", action="store_true", help="list the targets and what they cover")
    args = parser.parse_args(argv)
    if args.list:
        for t in TARGETS.values():
            print(f"{t.name}: {', '.join(t.covers)}")
        return 0
    if args.replay is not None:
        if not args.target or len(args.target) != 1:
            parser.error("--replay needs exactly one --target")
        target = TARGETS[args.target[0]]
        accepted = check(target, target.make(), args.replay.read_bytes())
        print("accepted" if accepted else "refused with an allowed error")
        return 0

    summary = run_fuzz(args.per_decoder, args.seed, args.target, on_progress=print_progress, save=args.save,
                       jobs=max(1, args.jobs))
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary), flush=True)
    return 0 if summary["unexpected"] == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
