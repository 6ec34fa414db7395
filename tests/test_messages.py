"""Messages and packet decoders: round trips and strict refusals (fuzzing: tests/test_fuzz.py)."""

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from protocol import ProtocolError
from protocol.messages import INPUT_RECORD, Input, Welcome, decode_inputs, encode_inputs, new_inputs

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


def _payload(*records: tuple) -> bytes:
    return bytes([len(records)]) + b"".join(INPUT_RECORD.pack(*r) for r in records)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",  # no inputs
        bytes([9]) + bytes(90),  # more than 8
        _payload((1, 0, 0, 0, 0, 0))[:-1],  # a record cut short
        _payload((1, 0, 0, 0, 0, 0)) + b"\x00",  # a byte too many
        _payload((1, 0, 0, 0, 0, 0), (2, -128, 0, 0, 0, 0)),  # move_x -128
        _payload((1, 0, -128, 0, 0, 0)),  # move_z -128
        msgpack.packb([[0, 0, 0, 0, 0, 0]]),  # the msgpack layout of protocol 1
    ],
)
def test_inputs_malformed_rejected(data):
    with pytest.raises(ProtocolError):
        decode_inputs(data)
    with pytest.raises(ProtocolError):
        new_inputs(data, -1)


def test_encode_inputs_refuses_out_of_range():
    for bad in (Input(-1, 0, 0, 0, 0), Input(2**32, 0, 0, 0, 0), Input(0, -128, 0, 0, 0), Input(0, 0, 0, 65536, 0),
                Input(0, 0, 0, 0, 256), Input(0, 0, 0, 0, 0, 256)):
        with pytest.raises(ValueError):
            encode_inputs([bad])
    with pytest.raises(ValueError):
        encode_inputs([])


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(-127, 127), st.integers(-127, 127),
                          st.integers(0, 65535), st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(-1, 2**32 - 1))
def test_new_inputs_matches_the_rule_on_decoded_inputs(records, after):
    """The hot path equals SPEC 3 rule 2 applied to the plain decoder's output: in order, every
    input whose seq is higher than ``after`` and than every input taken before it."""
    data = encode_inputs([Input(*r) for r in records])
    expected, newest = [], after
    for inp in decode_inputs(data):
        assert tuple(inp) in records
        if inp.seq > newest:
            expected.append(inp)
            newest = inp.seq
    assert new_inputs(data, after) == expected
    assert [tuple(i) for i in decode_inputs(data)] == records


# Random bytes and mutations of valid messages into every decoder: tests/test_fuzz.py.
