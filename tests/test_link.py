"""Sequence, ack bitfield and replay window of protocol.link."""

from hypothesis import given, strategies as st

from protocol.link import Link, seq_newer


def test_seq_newer_wraps():
    assert seq_newer(1, 0) and seq_newer(0, 65535) and not seq_newer(65535, 0)
    assert not seq_newer(5, 5)


def test_acks_report_each_received_packet_once():
    a, b = Link(0.0), Link(0.0)
    sent = [a.next_send(0.0)[0] for _ in range(10)]
    for seq in sent:
        if seq % 3:  # lose every third
            assert b.accept(seq)
    _, ack, bits = b.next_send(0.0)
    acked = a.process_acks(ack, bits, 0.05)
    assert sorted(acked) == [s for s in sent if s % 3]
    assert a.process_acks(ack, bits, 0.06) == []  # not twice
    assert abs(a.rtt - 0.05) < 1e-9


def test_an_idle_peer_does_not_make_the_round_trip_look_long():
    # The server sends a packet every 50 ms; an idle client answers once a second (its
    # keep-alive), 20 ms after it got the newest one. The round trip is 20 ms (the wire is
    # instant here), not the second the older packets waited for that keep-alive.
    server, client = Link(0.0), Link(0.0)
    now = 0.0
    for _ in range(10):  # ten seconds
        for _ in range(20):
            client.accept(server.next_send(now)[0])
            now += 0.05
        now_answer = now - 0.05 + 0.02  # 20 ms after the newest one arrived
        _, ack, bits = client.next_send(now_answer)
        assert len(server.process_acks(ack, bits, now_answer)) == 20
    assert abs(server.rtt - 0.02) < 1e-9


@given(st.lists(st.integers(0, 40), min_size=1, max_size=200))
def test_replay_window_accepts_each_sequence_at_most_once(order):
    link = Link(0.0)
    seen = set()
    newest = None
    for seq in order:
        ok = link.accept(seq)
        if seq in seen:
            assert not ok
        elif newest is not None and newest - seq > 32:
            assert not ok
        else:
            assert ok
        if ok:
            seen.add(seq)
            newest = seq if newest is None else max(newest, seq)


def test_wraparound_sequences_accepted():
    link = Link(0.0)
    for seq in list(range(65530, 65536)) + list(range(0, 6)):
        assert link.accept(seq)
    assert not link.accept(65535)  # already seen, across the wrap
    assert link.remote_seq == 5
