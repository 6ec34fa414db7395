"""Messages carried inside packets: Welcome (msgpack, in ACCEPT) and Inputs (INPUT packets).

Each message has an encoder and a strict decoder that checks every field's type and range,
raising only :class:`ProtocolError`. ``Welcome`` is msgpack (sizes bounded) and an attrs class.
The INPUT payload is fixed-width binary (SPEC.md section 3): the server reads 8,000 of them a
second at 400 clients, and a record of fixed fields is read by one ``struct`` call where
msgpack took several microseconds of Python checks per packet. ``Input`` is a NamedTuple, made
only for the inputs the server takes (every INPUT packet repeats the last few);
:func:`new_inputs` is that hot path, :func:`decode_inputs` the plain decoder of every record.
Snapshots have their own codec in ``protocol.snapshot``.

No I/O, no clocks, no state.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

import attrs
import msgpack

from protocol.errors import ProtocolError

MAX_INPUTS_PER_PACKET = 8
MAX_MESSAGE_SIZE = 2048
INPUT_AXIS_SCALE = 127  # movement intent axes travel as int8: intent = value / 127

_UNPACK_LIMITS = dict(
    raw=False,
    strict_map_key=True,
    use_list=True,
    max_str_len=256,
    max_bin_len=1400,
    max_array_len=64,
    max_map_len=32,
    max_ext_len=0,
)


def unpack_strict(data: bytes) -> object:
    """msgpack-decode bounded input; every failure becomes a ProtocolError."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise ProtocolError("oversized", f"message of {len(data)} bytes")
    try:
        return msgpack.unpackb(data, **_UNPACK_LIMITS)
    except Exception as exc:  # msgpack raises many types (ValueError, ExtraData, FormatError, ...)
        raise ProtocolError("bad_msgpack", type(exc).__name__) from None


def _int(value: object, name: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolError("bad_field", f"{name} must be an integer in [{lo}, {hi}]")
    return value


def _float(value: object, name: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ProtocolError("bad_field", f"{name} must be a finite number")
    return float(value)


@attrs.frozen
class Welcome:
    """Sent by the server in ACCEPT: who you are, how to read snapshots, and the connection's
    keep-alive interval and timeout (seconds). SPEC.md section 4.1."""

    entity_id: int
    tick_rate: int
    tick: int
    mins: tuple[float, float, float]
    maxs: tuple[float, float, float]
    position_step: float
    max_speed: float
    interest_radius: float
    keepalive_interval: float = 1.0
    timeout: float = 5.0

    def encode(self) -> bytes:
        """An array of 10; every float field as a msgpack float64, even when integral."""
        return msgpack.packb(
            [
                self.entity_id,
                self.tick_rate,
                self.tick,
                [float(v) for v in self.mins],
                [float(v) for v in self.maxs],
                float(self.position_step),
                float(self.max_speed),
                float(self.interest_radius),
                float(self.keepalive_interval),
                float(self.timeout),
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> "Welcome":
        """Strict: exactly 10 elements; float fields accept msgpack float32, float64 or ints."""
        obj = unpack_strict(data)
        if not isinstance(obj, list) or len(obj) != 10:
            raise ProtocolError("bad_message", "Welcome must be an array of 10")
        eid, rate, tick, mins, maxs, step, speed, radius, keepalive, timeout = obj
        for name, vec in (("mins", mins), ("maxs", maxs)):
            if not isinstance(vec, list) or len(vec) != 3:
                raise ProtocolError("bad_field", f"{name} must be an array of 3 numbers")
        welcome = cls(
            entity_id=_int(eid, "entity_id", 0, 2**32 - 1),
            tick_rate=_int(rate, "tick_rate", 1, 1000),
            tick=_int(tick, "tick", 0, 2**32 - 1),
            mins=tuple(_float(v, "mins") for v in mins),
            maxs=tuple(_float(v, "maxs") for v in maxs),
            position_step=_float(step, "position_step"),
            max_speed=_float(speed, "max_speed"),
            interest_radius=_float(radius, "interest_radius"),
            keepalive_interval=_float(keepalive, "keepalive_interval"),
            timeout=_float(timeout, "timeout"),
        )
        if welcome.position_step <= 0 or any(a >= b for a, b in zip(welcome.mins, welcome.maxs)):
            raise ProtocolError("bad_field", "bounds or position_step out of range")
        if not 0 < welcome.keepalive_interval < welcome.timeout:
            raise ProtocolError("bad_field", "keepalive_interval and timeout must satisfy 0 < keepalive_interval < timeout")
        return welcome


# Input flag bits.
FLAG_JUMP = 1


class Input(NamedTuple):
    """One tick of a client's intent. The server integrates it; a client never sends positions.

    ``move_x``/``move_z`` are int8 axes (-127..127, intent = value / 127, length clipped to 1
    by the server); ``yaw`` is the facing quantized to 16 bits; ``anim`` the animation state.
    """

    seq: int
    move_x: int
    move_z: int
    yaw: int
    anim: int
    flags: int = 0

    def to_list(self) -> list[int]:
        return [self.seq, self.move_x, self.move_z, self.yaw, self.anim, self.flags]


# An INPUT payload: a count byte (1..MAX_INPUTS_PER_PACKET), then that many records, oldest
# first: seq u32, move_x i8, move_z i8, yaw u16, anim u8, flags u8, little-endian.
INPUT_RECORD = struct.Struct("<IbbHBB")
INPUT_RECORD_SIZE = INPUT_RECORD.size  # 10
_iter_records = INPUT_RECORD.iter_unpack
_AXIS_MIN = 0x80  # -128 as a byte: the one int8 value outside -127..127
_U32 = 2**32 - 1


def encode_inputs(inputs: list[Input]) -> bytes:
    """Newest last; up to MAX_INPUTS_PER_PACKET recent inputs, repeated for loss tolerance."""
    recent = inputs[-MAX_INPUTS_PER_PACKET:]
    if not recent:
        raise ValueError("an INPUT payload holds at least one input")
    for i in recent:
        if not (0 <= i.seq <= _U32 and -127 <= i.move_x <= 127 and -127 <= i.move_z <= 127
                and 0 <= i.yaw <= 65535 and 0 <= i.anim <= 255 and 0 <= i.flags <= 255):
            raise ValueError(f"input out of range: {tuple(i)}")
    return bytes([len(recent)]) + b"".join(INPUT_RECORD.pack(*i) for i in recent)


def _check_inputs(data: bytes) -> None:
    """Raises ProtocolError unless ``data`` is a well-formed INPUT payload. Every range but the
    axes' is the range of the field's type, so the length and two byte scans check it all."""
    n = len(data)
    count = data[0] if n else 0
    if not 1 <= count <= MAX_INPUTS_PER_PACKET or n != 1 + INPUT_RECORD_SIZE * count:
        raise ProtocolError(
            "bad_message", f"inputs must be a count of 1..{MAX_INPUTS_PER_PACKET} and that many {INPUT_RECORD_SIZE}-byte records"
        )
    if _AXIS_MIN in data[5::INPUT_RECORD_SIZE] or _AXIS_MIN in data[6::INPUT_RECORD_SIZE]:
        raise ProtocolError("bad_field", "move_x and move_z must be integers in [-127, 127]")


def decode_inputs(data: bytes) -> list[Input]:
    """Every input of an INPUT payload, oldest first, every field checked."""
    _check_inputs(data)
    return [Input._make(rec) for rec in _iter_records(data[1:])]


def new_inputs(data: bytes, after: int) -> list[Input]:
    """The inputs of an INPUT payload that a server takes from it (SPEC.md section 3, INPUT rule
    2): in order, each whose ``seq`` is higher than ``after`` and than every input taken before
    it; ``after`` is the highest ``seq`` taken from this client so far (-1 for none). The whole
    payload is checked first, as :func:`decode_inputs` does: a malformed one raises, whatever
    it repeats. The receive loop's hot path: only the inputs taken become objects."""
    _check_inputs(data)
    out = []
    make = Input._make
    for rec in _iter_records(data[1:]):
        if rec[0] > after:
            out.append(make(rec))
            after = rec[0]
    return out
