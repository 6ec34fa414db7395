"""msgpack messages carried inside packets: Welcome (in ACCEPT) and Inputs (INPUT packets).

Each message has an encoder and a strict decoder that bounds msgpack sizes and checks every
field's type and range, raising only :class:`ProtocolError`. ``Welcome`` is an attrs class;
``Input`` is a NamedTuple, because the server decodes tens of thousands of them a second (every
INPUT packet repeats the last few) and a tuple is made several times faster than a frozen attrs
instance. Snapshots have their own codec in ``protocol.snapshot``.

No I/O, no clocks, no state.
"""

from __future__ import annotations

import math
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


def encode_inputs(inputs: list[Input]) -> bytes:
    """Newest last; up to MAX_INPUTS_PER_PACKET recent inputs, repeated for loss tolerance."""
    return msgpack.packb([i.to_list() for i in inputs[-MAX_INPUTS_PER_PACKET:]])


_U32 = 2**32 - 1


def decode_inputs(data: bytes) -> list[Input]:
    """The inputs of an INPUT packet, every field checked (the hot path of the receive loop:
    one combined check per input; the field-by-field checks only name what failed)."""
    obj = unpack_strict(data)
    if type(obj) is not list or not 1 <= len(obj) <= MAX_INPUTS_PER_PACKET:
        raise ProtocolError("bad_message", f"inputs must be an array of 1..{MAX_INPUTS_PER_PACKET}")
    out = []
    make = Input._make
    for item in obj:
        if type(item) is not list or len(item) != 6:
            raise ProtocolError("bad_message", "each input must be an array of 6")
        seq, mx, mz, yaw, anim, flags = item
        if not (type(seq) is int and type(mx) is int and type(mz) is int and type(yaw) is int
                and type(anim) is int and type(flags) is int and 0 <= seq <= _U32
                and -127 <= mx <= 127 and -127 <= mz <= 127 and 0 <= yaw <= 65535
                and 0 <= anim <= 255 and 0 <= flags <= 255):
            _int(seq, "seq", 0, _U32)
            _int(mx, "move_x", -127, 127)
            _int(mz, "move_z", -127, 127)
            _int(yaw, "yaw", 0, 65535)
            _int(anim, "anim", 0, 255)
            _int(flags, "flags", 0, 255)
        out.append(make(item))
    return out
