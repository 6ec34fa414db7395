"""Tests for protocol.quantize: round trips, error bounds, clamping, NaN handling.

Must not test snapshot encoding (tests/test_snapshot.py does).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol.quantize import (
    TWO_PI,
    Quantizer,
    dequantize_yaw,
    quantize_yaw,
)

Q = Quantizer((-100.0, -10.0, -100.0), (100.0, 40.0, 100.0), 0.01)


def test_derived_fields():
    assert Q.steps == (20000, 5000, 20000)
    assert Q.position_dtype == "<u2"
    big = Quantizer((0, 0, 0), (655.36, 1, 1), 0.01)
    assert big.steps[0] == 65536 and big.position_dtype == "<u4"
    edge = Quantizer((0, 0, 0), (655.35, 1, 1), 0.01)
    assert edge.steps[0] == 65535 and edge.position_dtype == "<u2"
    # A range that is not a whole number of steps is covered by rounding up.
    assert Quantizer((0, 0, 0), (1.005, 1, 1), 0.01).steps[0] == 101


@pytest.mark.parametrize(
    "mins, maxs, step",
    [((0, 0, 0), (0, 1, 1), 0.01), ((0, 0, 0), (1, 1, 1), 0), ((0, 0, 0), (1, 1, 1), math.nan),
     ((0, 0, 0), (math.inf, 1, 1), 0.01), ((0, 0), (1, 1), 0.01), ((0, 0, 0), (1e8, 1, 1), 1e-3)],
)  # fmt: skip
def test_invalid_quantizer(mins, maxs, step):
    with pytest.raises(ValueError):
        Quantizer(mins, maxs, step)


def test_quantizer_is_hashable_and_comparable():
    assert Q == Quantizer((-100, -10, -100), (100, 40, 100))
    assert hash(Q) == hash(Quantizer((-100, -10, -100), (100, 40, 100)))
    assert Q != Quantizer((-100, -10, -100), (100, 40, 100), 0.02)


finite_in = hnp.arrays(
    np.float64,
    st.tuples(st.integers(0, 50), st.just(3)),
    elements=st.floats(-100.0, 100.0),
)


@given(finite_in)
def test_position_error_bound_inside(pos):
    pos = np.clip(pos, Q.mins, Q.maxs)
    q = Q.quantize_positions(pos)
    assert q.dtype == np.int32 and q.shape == pos.shape
    assert (q >= 0).all() and (q <= np.array(Q.steps)).all()
    back = Q.dequantize_positions(q)
    assert back.dtype == np.float32
    # step/2 plus float32 rounding of the result.
    tol = Q.step / 2 + np.abs(pos) * np.finfo(np.float32).eps + 1e-9
    assert (np.abs(back - pos) <= tol).all()


@given(
    hnp.arrays(np.int32, st.tuples(st.integers(0, 30), st.just(3)), elements=st.integers(0, 5000))
)
def test_position_round_trip_of_quantized(q):
    assert np.array_equal(Q.quantize_positions(Q.dequantize_positions(q)), q)


def test_positions_outside_clamp():
    pos = np.array([[-1e9, 1e9, 0.0], [np.inf, -np.inf, 100.0], [1e300, -1e300, -100.0]])
    q = Q.quantize_positions(pos)
    assert q.tolist() == [[0, 5000, 10000], [20000, 0, 20000], [20000, 0, 0]]


def test_position_nan_rejected_or_mapped():
    pos = np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 2.0]])
    with pytest.raises(ValueError):
        Q.quantize_positions(pos)
    q = Q.quantize_positions(pos, on_nan="min")
    assert q[1].tolist() == [0, 1100, 10200]
    with pytest.raises(ValueError):
        Q.quantize_positions(pos, on_nan="zero")


def test_position_shape_checked():
    with pytest.raises(ValueError):
        Q.quantize_positions(np.zeros((4, 2)))
    with pytest.raises(ValueError):
        Q.dequantize_positions(np.zeros(3, dtype=np.int32))


@given(st.lists(st.floats(-1e6, 1e6), max_size=50))
def test_yaw_error_bound(yaws):
    yaw = np.array(yaws, dtype=np.float64)
    q = quantize_yaw(yaw)
    assert q.dtype == np.int32
    assert ((q >= 0) & (q <= 65535)).all()
    back = dequantize_yaw(q)
    assert back.dtype == np.float32
    assert ((back >= 0) & (back < TWO_PI)).all()
    err = np.abs((back.astype(np.float64) - yaw + math.pi) % TWO_PI - math.pi)
    # half a step, plus float rounding of the mod (grows with |yaw|) and the float32 result.
    assert (err <= math.pi / 65536 + 1e-6 + np.abs(yaw) * 1e-15).all()


def test_yaw_wraps():
    q = quantize_yaw(np.array([0.0, math.pi, -1e-9, TWO_PI, TWO_PI - 1e-12, -math.pi / 2]))
    assert q.tolist() == [0, 32768, 0, 0, 0, 49152]
    assert dequantize_yaw(np.array([65535]))[0] < np.float32(TWO_PI)
    assert dequantize_yaw(np.array([65536 + 16384]))[0] == np.float32(math.pi / 2)


def test_yaw_round_trip_of_quantized():
    q = np.arange(65536, dtype=np.int32)
    assert np.array_equal(quantize_yaw(dequantize_yaw(q)), q)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_yaw_nonfinite(bad):
    with pytest.raises(ValueError):
        quantize_yaw(np.array([1.0, bad]))
    assert quantize_yaw(np.array([1.0, bad]), on_nan="min").tolist() == [10430, 0]


def test_state_round_trip():
    rng = np.random.default_rng(7)
    n = 100
    pos = rng.uniform(Q.mins, Q.maxs, (n, 3))
    yaw = rng.uniform(-10, 10, n)
    anim = rng.integers(0, 256, n)
    s = Q.quantize_state(pos, yaw, anim)
    assert s.dtype == np.int32 and s.shape == (n, 5)
    p2, y2, a2 = Q.dequantize_state(s)
    assert np.abs(p2 - pos).max() <= Q.step / 2 + 1e-4
    assert np.array_equal(a2, anim)
    assert np.array_equal(s[:, 3], quantize_yaw(yaw))
    assert np.array_equal(Q.quantize_state(p2, y2, a2), s)


def test_state_validation():
    pos = np.zeros((2, 3))
    with pytest.raises(ValueError):
        Q.quantize_state(pos, np.zeros(2), np.array([0, 256]))
    with pytest.raises(ValueError):
        Q.quantize_state(pos, np.zeros(2), np.array([-1, 0]))
    with pytest.raises(ValueError):
        Q.quantize_state(pos, np.zeros(2), np.array([0.5, 1.0]))
    with pytest.raises(ValueError):
        Q.quantize_state(pos, np.zeros(3), np.array([0, 1]))
    with pytest.raises(ValueError):
        Q.quantize_state(pos, np.array([0.0, math.nan]), np.array([0, 1]))
    empty = Q.quantize_state(np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=np.int64))
    assert empty.shape == (0, 5)


@settings(max_examples=50)
@given(st.floats(0.001, 1.0), st.floats(-1000, 1000), st.floats(0.5, 500))
def test_bounds_hit_exactly(step, lo, width):
    qz = Quantizer((lo, lo, lo), (lo + width, lo + width, lo + width), step)
    q = qz.quantize_positions(np.array([[lo, lo + width, lo + width / 2]]))
    assert q[0, 0] == 0
    assert q[0, 1] in (qz.steps[1], qz.steps[1] - 1)
    assert abs(qz.dequantize_positions(q)[0, 1] - (lo + width)) <= step / 2 + 1e-3
