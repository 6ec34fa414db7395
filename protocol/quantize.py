"""Quantization of entity state (position, yaw, animation) to the integers snapshots carry.

The job of this module: turn float positions/yaws and animation ids into the five int32
columns ``x, y, z, yaw, anim`` that ``protocol.snapshot`` encodes, and back, vectorized
over many entities at once. It must not do I/O, read clocks or keep state; it knows nothing
about snapshots, clients or the wire beyond the integer ranges it produces.

Formulas (also in protocol/SPEC.md section 5):

* position axis ``a``: ``q = rint((p - mins[a]) / step)`` clipped to ``[0, steps[a]]`` where
  ``steps[a] = ceil((maxs[a] - mins[a]) / step - 1e-9)``; back: ``p = mins[a] + q * step``.
  Inside the bounds the error is at most ``step / 2`` (plus the float32 rounding of the
  result, at most half a float32 ulp of ``|p|``: 0.5 mm at 16 km). Outside the bounds the
  position is clamped to the nearest bound. ``+inf``/``-inf`` clamp like any far value.
* yaw: ``q = rint((yaw mod 2*pi) * 65536 / (2*pi)) mod 65536`` (uint16, wraps around);
  back: ``yaw = q * 2*pi / 65536`` in ``[0, 2*pi)``. Error at most ``pi / 65536`` (angular).
* anim: an integer 0..255 carried as is (0 idle, 1 walk, 2 run, 3 jump, others app-defined).

NaN (and infinite yaws, which have no direction) are never turned into garbage: by default
they raise ``ValueError``; with ``on_nan="min"`` a NaN position axis becomes 0 (the ``mins``
corner) and a NaN/infinite yaw becomes 0.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

YAW_STEPS = 65536
TWO_PI = 2.0 * math.pi
ANIM_MAX = 255
# Positions travel as int32 in the state matrix, so an axis may not need more steps than this.
MAX_POSITION_STEPS = 2**31 - 1

_YAW_SCALE = YAW_STEPS / TWO_PI
_YAW_UNIT = TWO_PI / YAW_STEPS


def _triple(value: object) -> tuple[float, float, float]:
    out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    if len(out) != 3:
        raise ValueError("expected three values (x, y, z)")
    return out  # type: ignore[return-value]


def _check_on_nan(on_nan: str) -> None:
    if on_nan not in ("raise", "min"):
        raise ValueError(f"on_nan must be 'raise' or 'min', not {on_nan!r}")


@attrs.frozen
class Quantizer:
    """World bounds and position step; derives steps per axis and the wire position dtype."""

    mins: tuple[float, float, float] = attrs.field(converter=_triple)
    maxs: tuple[float, float, float] = attrs.field(converter=_triple)
    step: float = attrs.field(default=0.01, converter=float)
    steps: tuple[int, int, int] = attrs.field(init=False)
    position_dtype: str = attrs.field(init=False)
    # Cached arrays for the vectorized paths (no effect on eq/repr).
    _mins: np.ndarray = attrs.field(init=False, eq=False, repr=False)
    _steps: np.ndarray = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not (math.isfinite(self.step) and self.step > 0):
            raise ValueError("step must be a finite number > 0")
        steps = []
        for lo, hi in zip(self.mins, self.maxs):
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ValueError("bounds must be finite with maxs > mins on every axis")
            n = math.ceil((hi - lo) / self.step - 1e-9)
            if n > MAX_POSITION_STEPS:
                raise ValueError(f"{n} steps on one axis; at most {MAX_POSITION_STEPS}")
            steps.append(int(n))
        object.__setattr__(self, "steps", tuple(steps))
        object.__setattr__(self, "position_dtype", "<u2" if max(steps) <= 0xFFFF else "<u4")
        object.__setattr__(self, "_mins", np.array(self.mins, dtype=np.float64))
        object.__setattr__(self, "_steps", np.array(steps, dtype=np.float64))

    @property
    def position_limits(self) -> tuple[int, int, int]:
        """Largest valid quantized value per axis (same as ``steps``)."""
        return self.steps

    def quantize_positions(self, pos: np.ndarray, *, on_nan: str = "raise") -> np.ndarray:
        """(n, 3) float positions -> (n, 3) int32 in ``[0, steps]`` per axis (clamped)."""
        _check_on_nan(on_nan)
        p = np.asarray(pos, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"positions must have shape (n, 3), not {p.shape}")
        q = np.rint((p - self._mins) / self.step)
        nan = np.isnan(q)
        if nan.any():
            if on_nan == "raise":
                raise ValueError("NaN position")
            q[nan] = 0.0
        np.clip(q, 0.0, self._steps, out=q)
        return q.astype(np.int32)

    def dequantize_positions(self, q: np.ndarray) -> np.ndarray:
        """(n, 3) quantized positions -> (n, 3) float32 world positions."""
        qa = np.asarray(q)
        if qa.ndim != 2 or qa.shape[1] != 3:
            raise ValueError(f"quantized positions must have shape (n, 3), not {qa.shape}")
        return (self._mins + qa * self.step).astype(np.float32)

    def quantize_state(
        self, pos: np.ndarray, yaw: np.ndarray, anim: np.ndarray, *, on_nan: str = "raise"
    ) -> np.ndarray:
        """Positions (n, 3), yaws (n,) radians, anims (n,) ints -> (n, 5) int32 state."""
        qp = self.quantize_positions(pos, on_nan=on_nan)
        n = qp.shape[0]
        qy = quantize_yaw(yaw, on_nan=on_nan)
        a = np.asarray(anim)
        if qy.shape != (n,) or a.shape != (n,):
            raise ValueError("pos, yaw and anim must describe the same n entities")
        if n and (a.dtype.kind not in "iu" or a.min() < 0 or a.max() > ANIM_MAX):
            raise ValueError("anim must be integers in 0..255")
        out = np.empty((n, 5), dtype=np.int32)
        out[:, :3] = qp
        out[:, 3] = qy
        out[:, 4] = a
        return out

    def dequantize_state(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, 5) state -> (positions (n, 3) float32, yaw (n,) float32, anim (n,) uint8)."""
        qa = np.asarray(q)
        if qa.ndim != 2 or qa.shape[1] != 5:
            raise ValueError(f"state must have shape (n, 5), not {qa.shape}")
        return (
            self.dequantize_positions(qa[:, :3]),
            dequantize_yaw(qa[:, 3]),
            qa[:, 4].astype(np.uint8),
        )


def quantize_yaw(rad: np.ndarray, *, on_nan: str = "raise") -> np.ndarray:
    """Radians (any real value) -> int32 in [0, 65535]; wraps around the circle."""
    _check_on_nan(on_nan)
    with np.errstate(invalid="ignore"):
        r = np.mod(np.asarray(rad, dtype=np.float64), TWO_PI)  # NaN for NaN and +-inf
    bad = np.isnan(r)
    if bad.any():
        if on_nan == "raise":
            raise ValueError("NaN or infinite yaw")
        r[bad] = 0.0
    # rint(...) is in [0, 65536]; 65536 (just below 2*pi) wraps to 0.
    return (np.rint(r * _YAW_SCALE).astype(np.int32)) & 0xFFFF


def dequantize_yaw(q: np.ndarray) -> np.ndarray:
    """Quantized yaw (taken mod 65536) -> float32 radians in [0, 2*pi)."""
    return ((np.asarray(q).astype(np.int64) & 0xFFFF) * _YAW_UNIT).astype(np.float32)
