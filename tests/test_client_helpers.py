"""worldclient's interpolation and prediction helpers."""

import math

import numpy as np

from protocol.messages import INPUT_AXIS_SCALE, Input
from worldclient.interpolation import Interpolator, Predictor
from worldserver.world import World


def test_interpolates_between_snapshots_and_takes_short_arc_for_yaw():
    it = Interpolator(delay=0.1)
    ids = np.array([1, 2], dtype=np.uint32)
    it.push(1.0, ids, np.array([[0.0, 0, 0], [5, 0, 5]]), np.array([0.1, 6.2]))
    it.push(1.05, ids, np.array([[1.0, 0, 0], [5, 0, 5]]), np.array([0.3, 0.2]))
    mid = it.sample(1.125)  # render time 1.025: halfway
    assert np.allclose(mid[1][0], [0.5, 0, 0])
    assert abs(mid[1][1] - 0.2) < 1e-9
    # 6.2 -> 0.2 rad crosses 2π: halfway is about 6.2 + 0.14, not 3.2
    assert abs(((mid[2][1] - 6.2 + math.pi) % (2 * math.pi)) - math.pi - 0.1417) < 1e-3
    assert np.allclose(it.sample(5.0)[1][0], [1.0, 0, 0])  # past the newest: hold it
    it.push(1.0, ids, np.zeros((2, 3)), np.zeros(2))  # an old snapshot is ignored
    assert np.allclose(it.sample(5.0)[1][0], [1.0, 0, 0])


def test_entity_appearing_is_shown_at_its_position():
    it = Interpolator(delay=0.0)
    it.push(0.0, np.array([1], dtype=np.uint32), np.array([[0.0, 0, 0]]), np.zeros(1))
    it.push(0.1, np.array([1, 9], dtype=np.uint32), np.array([[1.0, 0, 0], [7, 0, 7]]), np.zeros(2))
    assert np.allclose(it.sample(0.05)[9][0], [7, 0, 7])


def test_prediction_replays_unacked_inputs_like_the_server():
    world = World(capacity=4, half_extent=110.0, y_min=-10, y_max=50, max_speed=5.0, jump_speed=4.0, gravity=9.81)
    eid = world.spawn(owner=0)
    slot = eid >> 16
    pred = Predictor(max_speed=5.0, dt=0.05, half_extent=110.0)
    inputs = [Input(seq=i, move_x=int(127 * math.cos(i / 3)), move_z=int(127 * math.sin(i / 3)), yaw=0, anim=1)
              for i in range(1, 21)]
    for inp in inputs:
        pred.record(inp)
    # the server has applied the first 12 inputs
    for inp in inputs[:12]:
        world.set_intents([slot], [[inp.move_x / INPUT_AXIS_SCALE, inp.move_z / INPUT_AXIS_SCALE]], [0.0], [1], [False])
        world.step(0.05)
    server_pos = world.pos[slot].copy()
    predicted = pred.reconcile(server_pos, input_ack=12)
    assert len(pred.pending) == 8
    for inp in inputs[12:]:
        world.set_intents([slot], [[inp.move_x / INPUT_AXIS_SCALE, inp.move_z / INPUT_AXIS_SCALE]], [0.0], [1], [False])
        world.step(0.05)
    assert np.allclose(predicted[[0, 2]], world.pos[slot][[0, 2]], atol=1e-5)
