"""Input acceptance and application rules of worldserver.sessions."""

from protocol.messages import Input
from worldserver.sessions import CATCH_UP_SLACK, MAX_PENDING_INPUTS, Session
from worldserver.stats import Stats


def inp(seq):
    return Input(seq=seq, move_x=127, move_z=0, yaw=0, anim=1)


def test_late_input_is_caught_up_next_tick():
    s = Session(None, 1 << 16, 1, 0.0)
    stats = Stats()
    s.take_inputs([inp(1)], 0.0, 40, 10, stats)
    assert s.next_inputs(1) == (None, inp(1))
    assert s.next_inputs(2) == (None, None)  # input 2 is late: the avatar stands still
    s.take_inputs([inp(1), inp(2), inp(3)], 0.15, 40, 10, stats)  # repeats are ignored
    assert s.next_inputs(3) == (inp(2), inp(3))  # caught up: two inputs this tick
    assert s.last_applied_seq == 3 and s.applied == 3


def test_sustained_over_rate_never_exceeds_one_input_per_tick_on_average():
    s = Session(None, 1 << 16, 1, 0.0)
    stats = Stats()
    seq = 0
    applied = 0
    for tick in range(1, 201):
        now = tick * 0.05
        for _ in range(3):  # three packets per tick, each with eight new inputs
            batch = [inp(seq + k) for k in range(1, 9)]
            seq += 8
            s.take_inputs(batch, now, 40, 10, stats)
        late, cur = s.next_inputs(tick)
        applied += (late is not None) + (cur is not None)
        assert applied <= tick + CATCH_UP_SLACK
        assert len(s.pending) <= MAX_PENDING_INPUTS
    assert stats.get("drop.input_rate") > 0 and stats.get("drop.input_overflow") > 0


def test_rate_limit_refills_over_time():
    s = Session(None, 1 << 16, 1, 0.0)
    stats = Stats()
    for k in range(1, 30):
        s.take_inputs([inp(k)], 0.0, 40, 10, stats)
    assert stats.get("drop.input_rate") == 19  # burst of 10 at t=0
    s.take_inputs([inp(100)], 1.0, 40, 10, stats)
    assert s.last_received_seq == 100
