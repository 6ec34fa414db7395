"""The chat swarm's accounting (worldtools.chat_swarm), without a server.

Deliveries are checked per message: each acknowledged message against every member's bitmap
of the messages it received, so a member that missed a message is a missing delivery even
when another member got that message twice (a count of deliveries against the count
expected would have hidden it), and duplicates are their own figure. Acknowledgements and
refusals after the drain are counted as late, not dropped. The runs against a real server
are in tests/test_chat_durability.py.
"""

from __future__ import annotations

import json

import pytest

from worldtools import chat_swarm
from worldtools.chat_swarm import READY, Bot, ChatBots, deliveries_by_message

TAG = "feedbeef"


def _message(tag: str, sender: int, seq: int, sent: float) -> bytes:
    return json.dumps({"ev": "message", "room": 1, "message": {
        "id": 7, "text": "hi", "client_id": f"cs-{tag}-{sender}-{seq}-{sent:.6f}"}},
        separators=(",", ":")).encode()


def _reply(request_id: int, ok: bool, code: str = "rate_limited") -> bytes:
    body = {"re": request_id, "ok": ok}
    body.update({"message": {"id": 9}} if ok else {"error": {"code": code}})
    return json.dumps(body, separators=(",", ":")).encode()


def _engine(bots: list[Bot], senders: set[int], max_seq: int = 10) -> ChatBots:
    engine = ChatBots("127.0.0.1", 9, bots, 1.0, 0, tag=TAG, senders=senders, max_seq=max_seq)
    for bot in bots:
        bot.state = READY
    engine.open_window(100.0, 110.0)
    return engine


def _bits(pairs, senders, max_seq=10) -> bytes:
    """A member's bitmap holding the (sender, seq) messages ``pairs``."""
    slot_of = {s: k for k, s in enumerate(sorted(senders))}
    nbytes = max_seq // 8 + 1
    out = bytearray(len(slot_of) * nbytes)
    for sender, seq in pairs:
        out[slot_of[sender] * nbytes + (seq >> 3)] |= 1 << (seq & 7)
    return bytes(out)


def test_losses_are_counted_per_message_and_duplicates_apart():
    senders = [0, 2]
    acked = [(0, 1), (0, 2), (2, 1)]
    members = {
        0: _bits([(2, 1)], senders),  # a sender is not sent its own messages
        1: _bits([(0, 1), (0, 2), (2, 1), (0, 3)], senders),  # (0, 3) was never acknowledged
        2: _bits([(0, 1), (0, 2)], senders),
        3: _bits([(0, 1), (2, 1)], senders),  # missed (0, 2)
    }
    got = deliveries_by_message(acked, members, senders, 10)
    assert got == dict(expected=1 + 3 + 2 + 3, delivered=8, missing=1, messages_incomplete=1, unacknowledged=1)


def test_the_bots_record_each_message_once_and_count_the_rest():
    bots = [Bot(0, "a", "t", True), Bot(1, "b", "t", False)]
    engine = _engine(bots, senders={0})
    reader = bots[1]
    engine._text(reader, _message(TAG, 0, 1, 101.0), 101.01)
    engine._text(reader, _message(TAG, 0, 1, 101.0), 101.02)  # the same message again
    engine._text(reader, _message(TAG, 0, 2, 99.0), 101.03)  # sent before the window
    engine._text(reader, _message("0ther", 0, 3, 101.0), 101.04)  # another run's
    assert engine.duplicates == 1 and engine.outside == 2 and reader.received == 2
    got = deliveries_by_message([(0, 1), (0, 2)], {1: bytes(reader.got)}, [0], engine.max_seq)
    assert got["missing"] == 1 and got["delivered"] == 1  # (0, 2) never reached it
    assert engine.hist.sum() == 2 and engine.max_latency_ms == pytest.approx(20.0)


def test_answers_after_the_drain_are_reported_as_late():
    bots = [Bot(0, "a", "t", True)]
    engine = _engine(bots, senders={0})
    sender = bots[0]
    sender.pending_sends.update({2: 101.0, 3: 102.0, 4: 103.0, 5: 104.0})  # request id = seq + 1
    engine._text(sender, _reply(2, True), 101.1)
    engine.drained = True
    engine._text(sender, _reply(3, True), 115.0)
    engine._text(sender, _reply(4, False), 115.1)
    assert engine.acked == 2 and engine.acked_late == 1 and engine.acked_ids == [(0, 1), (0, 2)]
    assert engine.refused == {"rate_limited": 1} and engine.refused_late == {"rate_limited": 1}
    assert engine.pending() == 1  # request 5: unanswered


def test_a_sender_stops_at_the_last_message_number_its_bitmaps_hold():
    bots = [Bot(0, "a", "t", True)]
    engine = _engine(bots, senders={0}, max_seq=2)
    sent = []
    engine.send_text = lambda bot, obj: sent.append(obj)
    bots[0].last_ping = 1000.0  # no ping is due (the bot has no socket)
    for now in (100.0, 101.0, 102.0, 103.0):
        engine.send_due(now, public_room=1)
    assert [m["client_id"].split("-")[1:4] for m in sent] == [[TAG, "0", "1"], [TAG, "0", "2"]]


def test_a_rate_above_the_servers_limit_is_refused_with_the_limit_named():
    chat_swarm.check_chat_rate(2.0, {"rate": 2.0, "burst": 10})  # at the limit: fine
    with pytest.raises(chat_swarm.ChatRateAboveLimit) as refused:
        chat_swarm.check_chat_rate(3.0, {"rate": 2.0, "burst": 10})
    assert str(refused.value) == (
        "3 messages per second per bot is above the server's chat limit of 2 per user"
        " (chat.rate; chat.burst = 10): send less, or raise the server's chat.rate")
