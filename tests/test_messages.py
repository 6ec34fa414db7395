"""Messages and packet decoders: round trips, and garbage raises only ProtocolError."""

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from protocol import ProtocolError, packets as P
from protocol.messages import Input, Welcome, decode_inputs, encode_inputs, unpack_strict

WELCOME = Welcome(
    entity_id=65537, tick_rate=20, tick=123, mins=(-110.0, -10.0, -110.0), maxs=(110.0, 50.0, 110.0),
    position_step=0.01, max_speed=5.0, interest_radius=50.0, keepalive_interval=0.75, timeout=4.0,
)


def test_welcome_round_trip():
    assert Welcome.decode(WELCOME.encode()) == WELCOME


def test_welcome_keepalive_and_timeout_default_and_travel_last():
    w = Welcome(1, 20, 0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 0.01, 5.0, 10.0)
    assert (w.keepalive_interval, w.timeout) == (1.0, 5.0)
    raw = msgpack.unpackb(WELCOME.encode())
    assert len(raw) == 10 and raw[8:] == [0.75, 4.0]


def test_welcome_encoder_writes_every_float_as_float64():
    # Integral values given as ints are still written as float64 (0xcb), never as msgpack ints.
    w = Welcome(1, 20, 0, (-5, 0, -5), (5, 3, 5), 1, 5, 40, keepalive_interval=1, timeout=5)
    data = w.encode()
    assert data.count(b"\xcb") == 11 and b"\xca" not in data
    assert Welcome.decode(data) == w


def test_welcome_decoder_accepts_float32_and_integers():
    obj = [1, 20, 7, [-5, 0, -5], [5, 3, 5], 0.5, 5, 40, 0.25, 2]
    w = Welcome.decode(msgpack.packb(obj, use_single_float=True))
    assert (w.mins, w.position_step, w.keepalive_interval, w.timeout) == ((-5.0, 0.0, -5.0), 0.5, 0.25, 2.0)
    assert type(w.timeout) is float


@pytest.mark.parametrize(
    "obj",
    [
        [1, 20, 7, [-5.0, 0.0, -5.0], [5.0, 3.0, 5.0], 0.01, 5.0, 40.0],  # the version 1 form
        [1, 20, 7, [-5.0, 0.0, -5.0], [5.0, 3.0, 5.0], 0.01, 5.0, 40.0, 1.0],
        [1, 20, 7, [-5.0, 0.0, -5.0], [5.0, 3.0, 5.0], 0.01, 5.0, 40.0, 1.0, 5.0, 0],
        [1, 20, 7, [-5.0, 0.0, -5.0], [5.0, 3.0, 5.0], 0.01, 5.0, 40.0, 5.0, 5.0],  # keepalive not < timeout
        [1, 20, 7, [-5.0, 0.0, -5.0], [5.0, 3.0, 5.0], 0.01, 5.0, 40.0, 0.0, 5.0],
        [1, 20, 7, [-5.0, 0.0, -5.0], [5.0, 3.0, 5.0], 0.01, 5.0, 40.0, 1.0, float("inf")],
        [1, 20, 7, [-5.0, 0.0, -5.0], [5.0, 3.0, 5.0], 0.01, 5.0, 40.0, True, 5.0],
        [1, 20.0, 7, [-5.0, 0.0, -5.0], [5.0, 3.0, 5.0], 0.01, 5.0, 40.0, 1.0, 5.0],  # an int field as float
    ],
)
def test_welcome_rejects(obj):
    with pytest.raises(ProtocolError):
        Welcome.decode(msgpack.packb(obj))


def test_inputs_round_trip_and_limit():
    inputs = [Input(seq=i, move_x=127, move_z=-127, yaw=65535, anim=2, flags=1) for i in range(12)]
    out = decode_inputs(encode_inputs(inputs))
    assert [i.seq for i in out] == list(range(4, 12))  # only the newest 8 travel


@pytest.mark.parametrize(
    "obj",
    [[[0, 128, 0, 0, 0, 0]], [[0, 0, 0, 70000, 0, 0]], [[-1, 0, 0, 0, 0, 0]], [[0, 0.5, 0, 0, 0, 0]], [], {"a": 1}, [[0, 0, 0]]],
)
def test_inputs_out_of_range_rejected(obj):
    with pytest.raises(ProtocolError):
        decode_inputs(msgpack.packb(obj))


DECODERS = [
    decode_inputs, Welcome.decode, unpack_strict, P.decode_hello, P.decode_challenge, P.decode_connect,
    P.decode_accept, P.decode_refuse, P.decode_header, P.packet_type,
]


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.sampled_from(DECODERS))
def test_random_bytes_raise_only_protocol_error(data, decoder):
    try:
        decoder(data)
    except ProtocolError:
        pass


@settings(max_examples=300)
@given(st.data())
def test_mutated_valid_messages_raise_only_protocol_error(data):
    valid = data.draw(st.sampled_from([WELCOME.encode(), encode_inputs([Input(1, 2, 3, 4, 5, 0)] * 3)]))
    raw = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 5))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for decoder in (Welcome.decode, decode_inputs):
        try:
            decoder(bytes(raw[:cut]))
        except ProtocolError:
            pass
