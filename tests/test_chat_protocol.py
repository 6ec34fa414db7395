"""Chat frames (protocol/chat.py): round trips of every op, strict validation of every field,
hostile frames refused with the right code (and the request id when it could be read), the
server's frames, and fuzzing: nothing but ChatProtocolError ever escapes the decoder."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given, settings, strategies as st

from protocol import ProtocolError
from protocol import chat as C
from protocol.chat import ChatProtocolError, decode_client_frame, encode_request

REQUESTS = [
    C.Hello(id=1, token="tok-" + "a" * 28),
    C.Hello(id=2, token="t", admin_token="admin-secret", since={1: 0, 42: 1234, 2**53 - 1: 2**53 - 1}),
    C.RoomsList(id=3),
    C.RoomCreate(id=4, name="사진 동호회", private=True),
    C.RoomCreate(id=5, name="Open Room", private=False),
    C.RoomDelete(id=6, room=7),
    C.RoomInvite(id=7, room=7, user="민수"),
    C.RoomJoin(id=8, room=1),
    C.RoomLeave(id=9, room=1),
    C.RoomMembers(id=10, room=1),
    C.MsgSend(id=11, room=1, kind="text", text="안녕하세요\n\tworld 👋", client_id="c-1"),
    C.MsgSend(id=12, room=1, kind="image", image="AbC_-123456789012345678"),
    C.MsgSend(id=13, room=1, kind="image", image="x", text="a caption"),
    C.MsgSend(id=14, room=1, kind="question", text="where is the exit?"),
    C.MsgSend(id=15, room=1, kind="notice", text="closing soon"),
    C.MsgHistory(id=16, room=1),
    C.MsgHistory(id=17, room=1, before=99, limit=100),
    C.MsgSince(id=18, room=1, after=0),
    C.MsgSince(id=19, room=1, after=5, limit=500),
    C.MsgSearch(id=20, room=1, query="갤러리"),
    C.MsgSearch(id=21, room=1, query="gallery photo", limit=100),
    C.MsgAnswer(id=22, room=1, message=3),
    C.MsgDelete(id=23, room=1, message=3),
    C.Typing(id=24, room=1, active=True),
    C.Typing(id=25, room=1, active=False),
    C.ModMute(id=26, user="troll", seconds=86_400),
    C.ModKick(id=27, user="troll"),
    C.Hello(id=2**31, token="max id"),
    C.CallEnable(id=28, on=True),
    C.CallEnable(id=29, on=False),
    C.CallSignal(id=30, to="민수", data={"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}),
    C.CallSignal(id=31, to="kim", data={"type": "answer", "sdp": "v=0\r\n"}),
    C.CallSignal(id=32, to="kim", data={
        "type": "candidate", "candidate": "candidate:1 1 udp 2122260223 10.0.0.1 50000 typ host",
        "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}),
    C.CallSignal(id=33, to="kim", data={  # the end of candidates
        "type": "candidate", "candidate": "", "sdpMid": None, "sdpMLineIndex": None, "usernameFragment": None}),
]


def code_of(frame: object) -> ChatProtocolError:
    text = frame if isinstance(frame, str) else json.dumps(frame)
    with pytest.raises(ChatProtocolError) as info:
        decode_client_frame(text)
    return info.value


def test_every_op_has_a_round_trip_case():
    assert {type(r).OP for r in REQUESTS} == set(C.REQUEST_TYPES)


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: f"{type(r).OP}#{r.id}")
def test_round_trip(request_):
    text = encode_request(request_)
    assert decode_client_frame(text) == request_
    obj = json.loads(text)
    assert obj["op"] == type(request_).OP and obj["id"] == request_.id
    assert None not in obj.values()  # absent optional fields are left out


def test_defaults_and_null_as_absent():
    r = decode_client_frame('{"id":1,"op":"msg.history","room":2}')
    assert r == C.MsgHistory(id=1, room=2, before=None, limit=50)
    r = decode_client_frame('{"id":1,"op":"msg.history","room":2,"before":null,"limit":null}')
    assert r.limit == 50 and r.before is None
    assert decode_client_frame('{"id":1,"op":"msg.search","room":2,"query":"x"}').limit == 20
    assert decode_client_frame('{"id":1,"op":"msg.since","room":2,"after":0}').limit == 100


def test_text_is_nfc_and_names_are_stripped():
    decomposed = unicodedata.normalize("NFD", "갤러리에서 café")
    assert decomposed != "갤러리에서 café"
    r = decode_client_frame(json.dumps({"id": 1, "op": "msg.send", "room": 1, "kind": "text", "text": decomposed}))
    assert r.text == "갤러리에서 café"
    r = decode_client_frame(json.dumps({"id": 1, "op": "room.create", "name": "  Lobby 2 ", "private": False}))
    assert r.name == "Lobby 2"
    r = decode_client_frame(json.dumps({"id": 1, "op": "msg.search", "room": 1, "query": unicodedata.normalize("NFD", " 갤러리 ")}))
    assert r.query == "갤러리"


# ------------------------------------------------------------------------------ per-op fields

BASE = {  # one valid frame per op (besides id)
    "hello": {"token": "t"},
    "rooms.list": {},
    "room.create": {"name": "n", "private": False},
    "room.delete": {"room": 1},
    "room.invite": {"room": 1, "user": "u"},
    "room.join": {"room": 1},
    "room.leave": {"room": 1},
    "room.members": {"room": 1},
    "msg.send": {"room": 1, "kind": "text", "text": "hi"},
    "msg.history": {"room": 1},
    "msg.since": {"room": 1, "after": 0},
    "msg.search": {"room": 1, "query": "abc"},
    "msg.answer": {"room": 1, "message": 1},
    "msg.delete": {"room": 1, "message": 1},
    "typing": {"room": 1, "active": True},
    "mod.mute": {"user": "u", "seconds": 60},
    "mod.kick": {"user": "u"},
    "call.enable": {"on": True},
    "call.signal": {"to": "u", "data": {"type": "answer", "sdp": "v=0"}},
}


def frame(op: str, **changes) -> dict:
    obj = {"id": 77, "op": op, **BASE[op], **changes}
    return {k: v for k, v in obj.items() if v is not _DROP}


_DROP = object()


def test_base_frames_are_valid():
    assert set(BASE) == set(C.REQUEST_TYPES)
    for op in BASE:
        assert type(decode_client_frame(json.dumps(frame(op)))).OP == op


@pytest.mark.parametrize("op", sorted(BASE))
def test_unknown_field_rejected(op):
    err = code_of(frame(op, colour="red"))
    assert (err.code, err.request_id) == ("bad_field", 77)
    assert "colour" in err.message


@pytest.mark.parametrize(
    "op,field", [(op, f) for op, fields in sorted(BASE.items()) for f in fields if op != "msg.send" or f != "text"]
)
def test_required_field_missing(op, field):
    err = code_of(frame(op, **{field: _DROP}))
    assert (err.code, err.request_id, err.field) == ("bad_field", 77, field)
    assert field in err.message


WRONG_TYPES = [True, 1.0, "1", [], {}, -1]


@pytest.mark.parametrize(
    "op,field",
    [(op, f) for op, fields in sorted(BASE.items()) for f in fields],
)
def test_wrong_types_rejected(op, field):
    good = BASE[op][field]
    for bad in WRONG_TYPES:
        if type(bad) is type(good):
            continue  # a value of the right type: ranges and lengths are tested below
        err = code_of(frame(op, **{field: bad}))
        assert (err.code, err.request_id, err.field) == ("bad_field", 77, field), (op, field, bad)


@pytest.mark.parametrize(
    "op,field,bad",
    [
        ("room.delete", "room", 0),
        ("room.delete", "room", 2**53),
        ("msg.history", "limit", 0),
        ("msg.history", "limit", 101),
        ("msg.history", "before", 0),
        ("msg.since", "limit", 501),
        ("msg.since", "after", -1),
        ("msg.search", "limit", 101),
        ("msg.answer", "message", 0),
        ("mod.mute", "seconds", 0),
        ("mod.mute", "seconds", 86_401),
        ("msg.send", "kind", "video"),
        ("msg.send", "client_id", "x" * 65),
        ("msg.send", "client_id", ""),
        ("room.create", "name", "x" * 65),
        ("room.create", "name", "   "),
        ("room.create", "name", "a\nb"),
        ("room.create", "name", "a\tb"),
        ("room.create", "name", "a\u2028b"),
        ("room.invite", "user", ""),
        ("room.invite", "user", "u" * 65),
        ("hello", "token", ""),
        ("hello", "token", "t" * 257),
        ("hello", "admin_token", "a\x00"),
        ("msg.search", "query", " "),
        ("msg.search", "query", "a\nb"),
        ("call.signal", "to", ""),
        ("call.signal", "to", "u" * 65),
    ],
)
def test_out_of_range_rejected(op, field, bad):
    err = code_of(frame(op, **{field: bad}))
    assert (err.code, err.request_id, err.field) == ("bad_field", 77, field)


@pytest.mark.parametrize("value", [1, 2**53 - 1])
def test_id_range_edges_accepted(value):
    assert decode_client_frame(json.dumps(frame("room.join", room=value))).room == value


def test_msg_send_kind_rules():
    assert code_of(frame("msg.send", kind="image", text=_DROP)).field == "image"
    assert code_of(frame("msg.send", kind="text", image="abc")).field == "image"
    assert code_of(frame("msg.send", kind="question", text=_DROP)).field == "text"
    assert code_of(frame("msg.send", kind="notice", text=" \n\t ")).field == "text"
    assert code_of(frame("msg.send", kind="image", image="../etc/passwd")).field == "image"
    assert code_of(frame("msg.send", kind="image", image="x" * 65)).field == "image"
    ok = decode_client_frame(json.dumps(frame("msg.send", kind="image", image="abc", text="")))
    assert ok.text == "" and ok.image == "abc"


@pytest.mark.parametrize("bad", ["\x00", "\x07", "\r", "\x1b[31m", "\x7f", "\x85", "\ud800", "\udfff"])
def test_control_characters_and_lone_surrogates_in_text(bad):
    err = code_of(json.dumps(frame("msg.send", text=f"hi {bad} there")))
    assert (err.code, err.field, err.request_id) == ("bad_field", "text", 77)
    assert err.message.isascii() and "\\" not in err.message.split(":")[0]


def test_newline_and_tab_allowed_in_text_only():
    assert decode_client_frame(json.dumps(frame("msg.send", text="a\nb\tc"))).text == "a\nb\tc"
    assert code_of(frame("msg.search", query="a\tb")).field == "query"


def test_too_long_text_and_query():
    err = code_of(frame("msg.send", text="x" * (C.MAX_TEXT_CHARS + 1)))
    assert (err.code, err.field, err.request_id) == ("too_long", "text", 77)
    assert decode_client_frame(json.dumps(frame("msg.send", text="x" * C.MAX_TEXT_CHARS)))
    err = code_of(frame("msg.search", query="가" * 101))
    assert (err.code, err.field) == ("too_long", "query")
    assert decode_client_frame(json.dumps(frame("msg.search", query="가" * 100), ensure_ascii=False))


def test_since_map_checked():
    for bad in ({"0": 1}, {"01": 1}, {"-1": 1}, {"abc": 1}, {"1": -1}, {"1": "5"}, {"1": 1.5},
                {str(2**53): 1}, {"1": None}, [[1, 2]], {"١": 1}):
        err = code_of(frame("hello", since=bad))
        assert (err.code, err.field, err.request_id) == ("bad_field", "since", 77) or err.field.startswith("since")
    many = {str(i): 0 for i in range(1, C.MAX_SINCE_ROOMS + 2)}
    assert code_of(frame("hello", since=many)).field == "since"
    ok = decode_client_frame(json.dumps(frame("hello", since={"5": 10, "6": 0})))
    assert ok.since == {5: 10, 6: 0}


# ------------------------------------------------------------------------- hostile frames


def test_frame_size_limit_is_in_utf8_bytes_and_checked_first():
    head = '{"id":5,"op":"msg.send","room":1,"kind":"text","text":"'
    fits = head + "x" * (C.MAX_FRAME_BYTES - len(head) - 2) + '"}'
    assert len(fits.encode()) == C.MAX_FRAME_BYTES
    with pytest.raises(ChatProtocolError) as info:  # fits the frame, but the text is too long
        decode_client_frame(fits)
    assert info.value.code == "too_long" and info.value.field == "text"
    korean = head + "가" * 5500 + '"}'  # 5,5xx characters but 16,5xx bytes
    assert len(korean) < C.MAX_FRAME_BYTES < len(korean.encode())
    err = code_of(korean)
    assert (err.code, err.request_id) == ("too_long", None)
    err = code_of("{" + " " * 10_000_000 + "}")  # not parsed at all
    assert (err.code, err.request_id) == ("too_long", None)


@pytest.mark.parametrize(
    "text",
    ["", " ", "{", "}", "nul", "{'id': 1}", '{"id":1,}', "\ufeff{}", '{"id":1}x', "\x00"],
)
def test_invalid_json(text):
    err = code_of(text)
    assert (err.code, err.request_id) == ("bad_frame", None)


@pytest.mark.parametrize("text", ["[]", "[1]", "1", '"hello"', "null", "true", "1.5"])
def test_non_object_json(text):
    assert code_of(text).code == "bad_frame"


@pytest.mark.parametrize(
    "text", ['{"id":1,"op":"rooms.list","x":NaN}', '{"id":Infinity}', '{"id":-Infinity}', '{"id":1e999}']
)
def test_non_finite_numbers(text):
    assert code_of(text).code == "bad_frame"


def test_duplicate_keys():
    err = code_of('{"id":1,"op":"room.join","room":1,"room":2}')
    assert err.code == "bad_frame"


def test_deep_nesting():
    """Nesting beyond MAX_DEPTH is refused before parsing (so the id is not read either)."""
    for text in ["[" * 8000 + "]" * 8000, '{"a":' * 2500 + "1" + "}" * 2500, "[" * 16000,
                 '{"id":9,"op":"msg.send","room":1,"kind":"text","text":' + "[" * 200 + "]" * 200 + "}"]:
        err = code_of(text)
        assert (err.code, err.request_id) == ("bad_frame", None)
        assert f"nested deeper than {C.MAX_DEPTH} levels" in err.message
    # within the limit: parsed, and the field is refused with the request's id
    fits = '{"id":9,"op":"msg.send","room":1,"kind":"text","text":' + "[" * 31 + "]" * 31 + "}"
    err = code_of(fits)
    assert (err.code, err.field, err.request_id) == ("bad_field", "text", 9)
    # brackets inside a string are text, not nesting
    text = '{"id":9,"op":"msg.send","room":1,"kind":"text","text":"' + "[" * 500 + '"}'
    assert decode_client_frame(text).text == "[" * 500
    with pytest.raises(ChatProtocolError) as info:
        C.decode_server_frame('{"ev":"x","a":' + "[" * 40 + "]" * 40 + "}")
    assert info.value.code == "bad_frame"


def test_huge_integer():
    err = code_of('{"id":1,"op":"room.join","room":' + "9" * 5000 + "}")
    assert err.code == "bad_frame"
    err = code_of('{"id":1,"op":"room.join","room":' + "9" * 30 + "}")
    assert (err.code, err.field) == ("bad_field", "room")


@pytest.mark.parametrize("bad_id", [0, -1, 2**31 + 1, "1", 1.0, True, None, [1], {"a": 1}])
def test_bad_request_id(bad_id):
    err = code_of({"id": bad_id, "op": "rooms.list"})
    assert (err.code, err.request_id) == ("bad_frame", None)


def test_missing_id_and_op():
    assert (code_of({"op": "rooms.list"}).code, code_of({"op": "rooms.list"}).request_id) == ("bad_frame", None)
    err = code_of({"id": 3})
    assert (err.code, err.request_id, err.field) == ("bad_frame", 3, "op")
    err = code_of({"id": 3, "op": 5})
    assert (err.code, err.request_id) == ("bad_frame", 3)


def test_unknown_op_named_safely():
    err = code_of({"id": 12, "op": "msg.explode"})
    assert (err.code, err.request_id) == ("unknown_op", 12)
    assert "msg.explode" in err.message
    err = code_of({"id": 12, "op": "\x1b[2J" + "x" * 500})
    assert err.code == "unknown_op" and err.message.isascii() and "\x1b" not in err.message
    assert len(err.message) < 100
    err = code_of({"id": 12, "op": "rooms.list", "\x00evil" + "y" * 500: 1})
    assert err.code == "bad_field" and err.message.isascii() and "\x00" not in err.message


def test_non_string_input():
    for bad in (b'{"id":1,"op":"rooms.list"}', None, 5, ["x"]):
        with pytest.raises(ChatProtocolError) as info:
            decode_client_frame(bad)  # type: ignore[arg-type]
        assert info.value.code == "bad_frame"


def test_error_is_a_protocol_error():
    err = code_of("{")
    assert isinstance(err, ProtocolError) and err.reason == "bad_frame"
    assert set(C.ERROR_CODES) == {
        "bad_frame", "unknown_op", "bad_field", "not_authenticated", "not_found", "forbidden",
        "rate_limited", "too_long", "muted", "conflict", "internal",
    }


# ------------------------------------------------------------------------- server frames


def test_encode_reply_and_event():
    text = C.encode_reply(7, message=C.message_object(5, 1.23456, "민수", "text", "갤러리에서"))
    assert text == '{"re":7,"ok":true,"message":{"id":5,"ts":1.235,"author":"민수","kind":"text","text":"갤러리에서"}}'
    assert C.encode_event("typing", room=1, user="a", active=True) == '{"ev":"typing","room":1,"user":"a","active":true}'
    for name in C.EVENTS:
        assert json.loads(C.encode_event(name))["ev"] == name
    with pytest.raises(ValueError):
        C.encode_event("explode")
    with pytest.raises(ValueError):
        C.encode_reply(1, ok=False)
    with pytest.raises(ValueError):
        C.encode_reply(1, nan=float("nan"))


def test_encode_error():
    obj = json.loads(C.encode_error(3, "rate_limited", "slow down", retry_after=0.12345))
    assert obj == {"re": 3, "ok": False, "error": {"code": "rate_limited", "message": "slow down", "retry_after": 0.124}}
    obj = json.loads(C.encode_error(None, "bad_frame", "not JSON"))
    assert obj == {"re": None, "ok": False, "error": {"code": "bad_frame", "message": "not JSON"}}
    with pytest.raises(ValueError):
        C.encode_error(1, "oops", "x")
    with pytest.raises(ValueError):
        C.encode_error(1, "forbidden", "x", retry_after=1.0)
    err = code_of({"id": 8, "op": "nope"})
    assert json.loads(C.error_for(err))["re"] == 8


def test_message_and_room_objects():
    m = C.message_object(1, 2.0, "a", "image", image="img")
    assert m == {"id": 1, "ts": 2.0, "author": "a", "kind": "image", "image": "img"}
    q = C.message_object(2, 2.0, "a", "question", "why?", answered=True, entity_id=65537)
    assert q["answered"] is True and q["entity_id"] == 65537 and "deleted" not in q
    assert C.message_object(3, 0.0, "a", "text", "x", deleted=True)["deleted"] is True
    assert C.room_object(1, "lobby", "server", 0, joined=True) == {
        "id": 1, "name": "lobby", "owner": "server", "private": False, "joined": True}


def test_decode_server_frame():
    r = C.decode_server_frame(C.encode_reply(4, rooms=[]))
    assert r == C.Reply(4, {"rooms": []})
    e = C.decode_server_frame(C.encode_error(4, "muted", "shh", 30))
    assert e == C.ErrorReply(4, "muted", "shh", 30.0)
    ev = C.decode_server_frame(C.encode_event("presence", user="a", online=False))
    assert ev == C.Event("presence", {"user": "a", "online": False})
    big = C.encode_reply(5, messages=[C.message_object(i, 1.0, "a", "text", "갤러리" * 300) for i in range(1, 60)])
    assert len(big.encode()) > 4 * C.MAX_FRAME_BYTES  # server frames are not held to 16 KiB
    assert len(C.decode_server_frame(big).fields["messages"]) == 59
    with pytest.raises(ChatProtocolError) as info:
        C.decode_server_frame(big, max_bytes=C.MAX_FRAME_BYTES)
    assert info.value.code == "too_long"
    for bad in ("[]", '{"re":"x","ok":true}', '{"ok":false}', '{"ok":false,"error":{"code":1}}', '{"x":1}', "{"):
        with pytest.raises(ChatProtocolError):
            C.decode_server_frame(bad)


def test_call_signal_data_shapes():
    """call.signal's data is an offer/answer or a candidate, exactly, with checked fields."""
    def signal(data):
        return {"id": 77, "op": "call.signal", "to": "kim", "data": data}

    sdp = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    r = decode_client_frame(json.dumps(signal({"type": "offer", "sdp": sdp})))
    assert r.data == {"type": "offer", "sdp": sdp}  # SDP kept as sent: CR LF, no normalization
    r = decode_client_frame(json.dumps(signal({"type": "candidate", "candidate": "c"})))
    assert r.data == {"type": "candidate", "candidate": "c", "sdpMid": None, "sdpMLineIndex": None,
                      "usernameFragment": None}
    r = decode_client_frame(json.dumps(signal({"type": "candidate", "candidate": "", "sdpMid": "",
                                               "sdpMLineIndex": 65_535})))
    assert (r.data["candidate"], r.data["sdpMid"], r.data["sdpMLineIndex"]) == ("", "", 65_535)
    # the SDP limit is 12 KiB of UTF-8, and a 12 KiB SDP of usual lines fits in a frame with
    # its CR LF escaped
    body = "a=fmtp:111 minptime=10;useinbandfec=1\r\n" * (C.MAX_SDP_BYTES // 30)
    at_limit = body[: C.MAX_SDP_BYTES]
    assert decode_client_frame(json.dumps(signal({"type": "answer", "sdp": at_limit}))).data["sdp"] == at_limit
    err = code_of(signal({"type": "answer", "sdp": at_limit + "x"}))
    assert (err.code, err.field, err.request_id) == ("too_long", "data.sdp", 77)
    err = code_of(json.dumps(signal({"type": "answer", "sdp": "가" * (C.MAX_SDP_BYTES // 3 + 1)}),
                             ensure_ascii=False))
    assert (err.code, err.field) == ("too_long", "data.sdp")
    bad = [
        ({"sdp": "v=0"}, "data.type"),
        ({"type": "bye"}, "data.type"),
        ({"type": 1, "sdp": "v=0"}, "data.type"),
        ({"type": "offer"}, "data.sdp"),
        ({"type": "offer", "sdp": None}, "data.sdp"),
        ({"type": "offer", "sdp": ""}, "data.sdp"),
        ({"type": "offer", "sdp": 5}, "data.sdp"),
        ({"type": "offer", "sdp": "v=0\x00"}, "data.sdp"),
        ({"type": "offer", "sdp": "v=0\x1b[2J"}, "data.sdp"),
        ({"type": "offer", "sdp": "v=0", "candidate": "c"}, "data.candidate"),
        ({"type": "offer", "sdp": "v=0", "extra": 1}, "data.extra"),
        ({"type": "candidate"}, "data.candidate"),
        ({"type": "candidate", "candidate": 3}, "data.candidate"),
        ({"type": "candidate", "candidate": "a\r\nb"}, "data.candidate"),
        ({"type": "candidate", "candidate": "x" * (C.MAX_CANDIDATE_CHARS + 1)}, "data.candidate"),
        ({"type": "candidate", "candidate": "c", "sdpMid": 0}, "data.sdpMid"),
        ({"type": "candidate", "candidate": "c", "sdpMid": "m" * 65}, "data.sdpMid"),
        ({"type": "candidate", "candidate": "c", "sdpMLineIndex": -1}, "data.sdpMLineIndex"),
        ({"type": "candidate", "candidate": "c", "sdpMLineIndex": 65_536}, "data.sdpMLineIndex"),
        ({"type": "candidate", "candidate": "c", "sdpMLineIndex": "0"}, "data.sdpMLineIndex"),
        ({"type": "candidate", "candidate": "c", "sdp": "v=0"}, "data.sdp"),
        ({"type": "candidate", "candidate": "c", "usernameFragment": []}, "data.usernameFragment"),
    ]
    for data, field in bad:
        err = code_of(signal(data))
        assert (err.code, err.field, err.request_id) == ("bad_field", field, 77), data
        assert err.message.startswith("data"), err.message
    for data in ([], "offer", 1, True):
        err = code_of(signal(data))
        assert (err.code, err.field) == ("bad_field", "data")


def test_encode_request_refuses_invalid_requests():
    with pytest.raises(ChatProtocolError):
        encode_request(C.MsgSend(id=1, room=1, kind="text", text=""))
    with pytest.raises(ChatProtocolError):
        encode_request(C.RoomJoin(id=0, room=1))
    with pytest.raises(TypeError):
        encode_request("rooms.list")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- fuzzing


def _decode_or_protocol_error(text: str):
    try:
        return decode_client_frame(text)
    except ChatProtocolError as exc:
        assert exc.code in C.ERROR_CODES
        assert exc.request_id is None or (type(exc.request_id) is int and 1 <= exc.request_id <= 2**31)
        json.loads(C.error_for(exc))  # the error frame is always encodable
        return None


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_random_text(text):
    _decode_or_protocol_error(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["token", "admin_token", "since", "name", "private", "room", "user", "kind", "text", "image",
     "client_id", "before", "after", "limit", "query", "message", "active", "seconds", "extra",
     "on", "to", "data"]
)
field_values = st.one_of(
    json_values, st.integers(min_value=-2, max_value=600), st.sampled_from(C.KINDS),
    st.text(alphabet="가나다abc \n\t\x00\u0301\ud800", max_size=12),
    st.dictionaries(st.text(alphabet="0123456789", max_size=3), st.integers(-1, 10), max_size=3),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["offer", "answer", "candidate", "x"])},
        optional={"sdp": json_values, "candidate": json_values, "sdpMid": json_values,
                  "sdpMLineIndex": json_values, "usernameFragment": json_values, "extra": json_values},
    ),
)


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(st.integers(min_value=-1, max_value=2**31 + 1), json_values),
    st.sampled_from(sorted(C.REQUEST_TYPES) + ["nope", ""]),
    st.dictionaries(field_names, field_values, max_size=6),
)
def test_fuzz_structured_frames(request_id, op, fields):
    obj = {"id": request_id, "op": op, **fields}
    text = json.dumps(obj, ensure_ascii=False)
    decoded = _decode_or_protocol_error(text)
    if decoded is not None:
        # anything accepted re-encodes to a frame that decodes to the same request
        assert decode_client_frame(encode_request(decoded)) == decoded
    elif type(request_id) is int and 1 <= request_id <= 2**31:
        with pytest.raises(ChatProtocolError) as info:
            decode_client_frame(text)
        if info.value.code != "too_long":
            assert info.value.request_id == request_id


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_decoded_leniently(data):
    _decode_or_protocol_error(data.decode("utf-8", "surrogateescape"))


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(sorted(BASE)),
    st.integers(min_value=1, max_value=2**31),
    st.dictionaries(field_names, field_values, max_size=2),
    st.sets(field_names, max_size=1),
)
def test_fuzz_mutated_valid_frames(op, request_id, changes, dropped):
    """Near-valid frames (a valid one with a field or two changed, added or dropped): either
    accepted and re-encodable, or refused naming this request."""
    obj = {"id": request_id, "op": op, **BASE[op], **changes}
    for name in dropped:
        obj.pop(name, None)
    text = json.dumps(obj, ensure_ascii=False)
    try:
        decoded = decode_client_frame(text)
    except ChatProtocolError as exc:
        assert exc.code in ("bad_field", "too_long")
        assert exc.request_id == request_id
        assert exc.field is not None
    else:
        assert decoded.id == request_id and type(decoded).OP == op
        assert decode_client_frame(encode_request(decoded)) == decoded
