"""Chat frames, sans-IO: JSON text frames of the chat WebSocket (``/ws/chat``).

Job: turn one client text frame into exactly one validated request object
(:func:`decode_client_frame`), and build the server's frames: replies, error replies and
events (:func:`encode_reply`, :func:`encode_error`, :func:`encode_event`), plus the helpers a
client needs (:func:`encode_request`, :func:`decode_server_frame`). The frames are specified in
``protocol/SPEC.md section 7``.

Every client frame is checked before anything else looks at it: at most
:data:`MAX_FRAME_BYTES` of UTF-8 and at most :data:`MAX_DEPTH` levels of nesting (both checked
before parsing, by ``protocol.jsonsafe``), one JSON object without duplicate keys, NaN or
infinities, a request ``id``, a known ``op`` and, per op, exactly the allowed
fields with the right types, lengths and ranges. Text is NFC-normalized; control characters
(other than newline and tab inside a message text) and lone surrogates are refused. Whatever
the input, :func:`decode_client_frame` raises nothing but :class:`ChatProtocolError`, whose
``code`` is one of :data:`ERROR_CODES` and whose ``request_id`` is set whenever the frame's id
could be read, so that the error reply can name the request.

Must not: do I/O, read a clock, keep state between frames, know about rooms, users, storage or
permissions (that is the chat service's job), or echo raw client input unescaped into error
messages (echoed pieces are truncated and ``ascii()``-escaped).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Union

import attrs

from protocol import jsonsafe
from protocol.errors import ProtocolError

__all__ = [
    "ERROR_CODES",
    "EVENTS",
    "KINDS",
    "MAX_CLIENT_ID_CHARS",
    "MAX_DEPTH",
    "MAX_FRAME_BYTES",
    "MAX_ID",
    "MAX_IMAGE_ID_CHARS",
    "MAX_QUERY_CHARS",
    "MAX_REQUEST_ID",
    "MAX_ROOM_NAME_CHARS",
    "MAX_SINCE_ROOMS",
    "MAX_TEXT_CHARS",
    "MAX_TOKEN_CHARS",
    "MAX_USER_CHARS",
    "REQUEST_TYPES",
    "check_line",
    "CALL_LEFT_REASONS",
    "MAX_CANDIDATE_CHARS",
    "MAX_SDP_BYTES",
    "CallEnable",
    "CallSignal",
    "ChatProtocolError",
    "ErrorReply",
    "Event",
    "Hello",
    "ModKick",
    "ModMute",
    "MsgAnswer",
    "MsgDelete",
    "MsgHistory",
    "MsgSearch",
    "MsgSend",
    "MsgSince",
    "Reply",
    "Request",
    "RoomCreate",
    "RoomDelete",
    "RoomInvite",
    "RoomJoin",
    "RoomLeave",
    "RoomMembers",
    "RoomsList",
    "ServerFrame",
    "Typing",
    "decode_client_frame",
    "decode_server_frame",
    "encode_error",
    "encode_event",
    "encode_reply",
    "encode_request",
    "error_for",
    "message_object",
    "room_object",
]

# ------------------------------------------------------------------------------- limits

MAX_FRAME_BYTES = 16 * 1024  # UTF-8 bytes of one client text frame, checked before parsing
MAX_DEPTH = jsonsafe.DEFAULT_MAX_DEPTH  # arrays/objects nested in one frame, checked before parsing
MAX_REQUEST_ID = 2**31  # request ids are integers in 1..2^31
MAX_ID = 2**53 - 1  # room and message ids: integers exact in JavaScript's double
MAX_TOKEN_CHARS = 256
MAX_ROOM_NAME_CHARS = 64
MAX_USER_CHARS = 64
MAX_TEXT_CHARS = 10_000  # hard cap; the server's chat.max_message_chars is usually lower
MAX_QUERY_CHARS = 100
MAX_CLIENT_ID_CHARS = 64
MAX_IMAGE_ID_CHARS = 64
MAX_SINCE_ROOMS = 256
MAX_HISTORY_LIMIT = 100
MAX_SINCE_LIMIT = 500
MAX_SEARCH_LIMIT = 100
MAX_MUTE_SECONDS = 86_400
MAX_SDP_BYTES = 12 * 1024  # UTF-8 bytes of the SDP of one call.signal offer or answer
MAX_CANDIDATE_CHARS = 1024  # one ICE candidate line
MAX_SDP_MID_CHARS = 64
MAX_SDP_MLINE_INDEX = 65_535
MAX_UFRAG_CHARS = 256

KINDS = ("text", "image", "question", "notice")

ERROR_CODES: dict[str, str] = {
    "bad_frame": "not a JSON object, not UTF-8 JSON, a duplicate key, NaN, or no valid id/op",
    "unknown_op": "the op is not one of the operations of this protocol",
    "bad_field": "a field is missing, unknown, of the wrong type, empty, out of range or "
    "holds control characters; the message names the field",
    "not_authenticated": "hello has not succeeded yet on this connection, or its token is unknown",
    "not_found": "no such room, message or user (or not visible to you)",
    "forbidden": "you may not do this (not a member, not invited, not the owner, not a moderator)",
    "rate_limited": "too many requests; retry_after says how many seconds to wait",
    "too_long": "the frame exceeds 16 KiB, or a message text or search query exceeds its limit",
    "muted": "you are muted; retry_after says for how many more seconds",
    "conflict": "the name is taken, or the state does not allow it (e.g. already answered)",
    "internal": "the server failed; the request may be retried",
}

EVENTS = (
    "message",
    "message.deleted",
    "message.answered",
    "typing",
    "room.member",
    "room.deleted",
    "invited",
    "presence",
    "call.joined",
    "call.members",
    "call.left",
    "call.full",
    "call.signal",
)

CALL_LEFT_REASONS = ("moved_away", "muted", "kicked", "disabled", "ended")

# Control characters (Cc) and lone surrogates (Cs). Message text may hold \n and \t; single-line
# fields (names, tokens, queries, ids) may hold neither, nor the Unicode line/paragraph separators.
_BAD_MULTILINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_SINGLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_IMAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,%d}" % MAX_IMAGE_ID_CHARS)
_ROOM_KEY = re.compile(r"[1-9][0-9]{0,15}")


class ChatProtocolError(ProtocolError):
    """A client frame that cannot be accepted.

    ``code`` is one of :data:`ERROR_CODES` (stable, for programs), ``message`` a sentence for
    people, ``request_id`` the frame's ``id`` when it could be read (else None) and ``field``
    the offending field's name when there is one.
    """

    def __init__(
        self, code: str, message: str, request_id: int | None = None, field: str | None = None
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.field = field


class _FieldError(Exception):
    """Internal: a field check failed (turned into ChatProtocolError with the request id)."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message


def _shown(value: object, limit: int = 40) -> str:
    """A piece of client input made safe to put into an error message."""
    text = value if isinstance(value, str) else repr(value)
    return ascii(text[:limit] + ("..." if len(text) > limit else ""))


def _type_name(value: object) -> str:
    return {
        type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
        str: "a string", list: "an array", dict: "an object",
    }.get(type(value), type(value).__name__)


# ------------------------------------------------------------------------ field checks
# A check takes (value, field name) and returns the converted value or raises _FieldError.

Check = Callable[[object, str], Any]


def _int_check(lo: int, hi: int) -> Check:
    def check(value: object, name: str) -> int:
        if type(value) is not int or not lo <= value <= hi:
            got = _type_name(value) if type(value) is not int else str(value)
            raise _FieldError("bad_field", name, f"{name}: expected an integer in {lo}..{hi}, got {got}")
        return value

    return check


def _bool_check(value: object, name: str) -> bool:
    if type(value) is not bool:
        raise _FieldError("bad_field", name, f"{name}: expected true or false, got {_type_name(value)}")
    return value


def _str_check(
    max_chars: int,
    *,
    multiline: bool = False,
    strip: bool = False,
    normalize: bool = True,
    long_code: str = "bad_field",
    pattern: re.Pattern[str] | None = None,
    allow_blank: bool = False,
) -> Check:
    bad = _BAD_MULTILINE if multiline else _BAD_SINGLE_LINE

    def check(value: object, name: str) -> str:
        if type(value) is not str:
            raise _FieldError("bad_field", name, f"{name}: expected a string, got {_type_name(value)}")
        found = bad.search(value)
        if found:
            raise _FieldError(
                "bad_field", name, f"{name}: control character U+{ord(found.group()):04X} is not allowed"
            )
        text = unicodedata.normalize("NFC", value) if normalize else value
        if strip:
            text = text.strip()
        if not allow_blank and not text.strip():
            raise _FieldError("bad_field", name, f"{name}: must not be empty")
        if len(text) > max_chars:
            raise _FieldError(long_code, name, f"{name}: longer than {max_chars} characters")
        if pattern is not None and not pattern.fullmatch(text):
            raise _FieldError("bad_field", name, f"{name}: not a valid {name}")
        return text

    return check


def _kind_check(value: object, name: str) -> str:
    if type(value) is not str or value not in KINDS:
        raise _FieldError("bad_field", name, f"{name}: expected one of {', '.join(KINDS)}")
    return value


def _since_check(value: object, name: str) -> dict[int, int]:
    if type(value) is not dict:
        raise _FieldError("bad_field", name, f"{name}: expected an object, got {_type_name(value)}")
    if len(value) > MAX_SINCE_ROOMS:
        raise _FieldError("bad_field", name, f"{name}: more than {MAX_SINCE_ROOMS} rooms")
    out: dict[int, int] = {}
    for key, last in value.items():
        if not _ROOM_KEY.fullmatch(key) or int(key) > MAX_ID:
            raise _FieldError("bad_field", name, f"{name}: key {_shown(key)} is not a room id")
        out[int(key)] = _ID_OR_ZERO(last, f"{name}.{key}")
    return out


_ID = _int_check(1, MAX_ID)
_ID_OR_ZERO = _int_check(0, MAX_ID)
_TOKEN = _str_check(MAX_TOKEN_CHARS, normalize=False)
_ROOM_NAME = _str_check(MAX_ROOM_NAME_CHARS, strip=True)
_USER = _str_check(MAX_USER_CHARS, strip=True)
_TEXT = _str_check(MAX_TEXT_CHARS, multiline=True, long_code="too_long", allow_blank=True)
_QUERY = _str_check(MAX_QUERY_CHARS, strip=True, long_code="too_long")
_CLIENT_ID = _str_check(MAX_CLIENT_ID_CHARS, normalize=False)
_IMAGE = _str_check(MAX_IMAGE_ID_CHARS, normalize=False, pattern=_IMAGE_ID)


def check_line(value: object, name: str, max_chars: int) -> str:
    """``value`` as a single line of text checked as the chat checks its names: a string
    without control characters, line separators or lone surrogates, NFC, stripped, at most
    ``max_chars`` characters ("" when blank). Other text is refused with ChatProtocolError
    ``bad_field`` naming ``name`` (for other parts of the server that take a line of text
    from a person, e.g. a picture's title, worldserver/world_admin.py)."""
    try:
        return _str_check(max_chars, strip=True, allow_blank=True)(value, name)
    except _FieldError as exc:
        raise ChatProtocolError("bad_field", exc.message, None, exc.field) from None

# SDP lines end in CR LF: the SDP may hold \r and \n (and tab), no other control character.
_BAD_SDP = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_CANDIDATE = _str_check(MAX_CANDIDATE_CHARS, normalize=False, allow_blank=True)
_SDP_MID = _str_check(MAX_SDP_MID_CHARS, normalize=False, allow_blank=True)
_SDP_MLINE_INDEX = _int_check(0, MAX_SDP_MLINE_INDEX)
_UFRAG = _str_check(MAX_UFRAG_CHARS, normalize=False, allow_blank=True)


def _sdp_check(value: object, name: str) -> str:
    if type(value) is not str:
        raise _FieldError("bad_field", name, f"{name}: expected a string, got {_type_name(value)}")
    found = _BAD_SDP.search(value)
    if found:
        raise _FieldError(
            "bad_field", name, f"{name}: control character U+{ord(found.group()):04X} is not allowed"
        )
    if not value.strip():
        raise _FieldError("bad_field", name, f"{name}: must not be empty")
    if len(value) > MAX_SDP_BYTES or len(value.encode("utf-8")) > MAX_SDP_BYTES:
        raise _FieldError("too_long", name, f"{name}: longer than {MAX_SDP_BYTES} bytes")
    return value


# The shapes of call.signal's data, by type: field -> (check, required). A null optional field
# is absent (and comes out as None); anything else is refused.
_SIGNAL_SHAPES: dict[str, dict[str, tuple[Check, bool]]] = {
    "offer": {"sdp": (_sdp_check, True)},
    "answer": {"sdp": (_sdp_check, True)},
    "candidate": {
        "candidate": (_CANDIDATE, True),
        "sdpMid": (_SDP_MID, False),
        "sdpMLineIndex": (_SDP_MLINE_INDEX, False),
        "usernameFragment": (_UFRAG, False),
    },
}


def _signal_data_check(value: object, name: str) -> dict[str, Any]:
    """``call.signal``'s ``data``: an offer or answer ``{type, sdp}`` or an ICE candidate
    ``{type, candidate, sdpMid?, sdpMLineIndex?, usernameFragment?}``, exactly. The result has
    every field of its shape (absent optional ones as None), so it is relayed as checked."""
    if type(value) is not dict:
        raise _FieldError("bad_field", name, f"{name}: expected an object, got {_type_name(value)}")
    kind = value.get("type")
    shape = _SIGNAL_SHAPES.get(kind) if type(kind) is str else None
    if shape is None:
        raise _FieldError(
            "bad_field", f"{name}.type", f"{name}.type: expected one of {', '.join(_SIGNAL_SHAPES)}"
        )
    for key in value:
        if key != "type" and key not in shape:
            raise _FieldError(
                "bad_field", f"{name}.{_shown(key)[1:-1]}",
                f"{name}: unknown field {_shown(key)} for {kind}",
            )
    out: dict[str, Any] = {"type": kind}
    for key, (check, required) in shape.items():
        item = value.get(key)
        if item is None:
            if required:
                raise _FieldError("bad_field", f"{name}.{key}", f"{name}.{key}: required")
            out[key] = None
            continue
        out[key] = check(item, f"{name}.{key}")
    return out


@attrs.frozen
class _Field:
    check: Check
    required: bool = True


def _req(check: Check) -> _Field:
    return _Field(check, True)


def _opt(check: Check) -> _Field:
    return _Field(check, False)


# ---------------------------------------------------------------------------- requests
# One attrs class per op. FIELDS lists the op's fields in order (besides id and op); an
# optional field that is absent (or JSON null) gets the class's default.


@attrs.frozen
class Hello:
    """Authenticate with the join token; optionally ask for what was missed per room."""

    OP: ClassVar[str] = "hello"
    FIELDS: ClassVar[dict[str, _Field]] = {
        "token": _req(_TOKEN), "admin_token": _opt(_TOKEN), "since": _opt(_since_check),
    }
    id: int
    token: str
    admin_token: str | None = None
    since: Mapping[int, int] | None = attrs.field(default=None, hash=False)


@attrs.frozen
class RoomsList:
    """The rooms visible to this user."""

    OP: ClassVar[str] = "rooms.list"
    FIELDS: ClassVar[dict[str, _Field]] = {}
    id: int


@attrs.frozen
class RoomCreate:
    OP: ClassVar[str] = "room.create"
    FIELDS: ClassVar[dict[str, _Field]] = {"name": _req(_ROOM_NAME), "private": _req(_bool_check)}
    id: int
    name: str
    private: bool


@attrs.frozen
class RoomDelete:
    OP: ClassVar[str] = "room.delete"
    FIELDS: ClassVar[dict[str, _Field]] = {"room": _req(_ID)}
    id: int
    room: int


@attrs.frozen
class RoomInvite:
    OP: ClassVar[str] = "room.invite"
    FIELDS: ClassVar[dict[str, _Field]] = {"room": _req(_ID), "user": _req(_USER)}
    id: int
    room: int
    user: str


@attrs.frozen
class RoomJoin:
    OP: ClassVar[str] = "room.join"
    FIELDS: ClassVar[dict[str, _Field]] = {"room": _req(_ID)}
    id: int
    room: int


@attrs.frozen
class RoomLeave:
    OP: ClassVar[str] = "room.leave"
    FIELDS: ClassVar[dict[str, _Field]] = {"room": _req(_ID)}
    id: int
    room: int


@attrs.frozen
class RoomMembers:
    OP: ClassVar[str] = "room.members"
    FIELDS: ClassVar[dict[str, _Field]] = {"room": _req(_ID)}
    id: int
    room: int


@attrs.frozen
class MsgSend:
    """Send a message. ``text`` is required (not blank) for text, question and notice and is
    an optional caption for image (may be empty); ``image`` is required for image and refused
    otherwise. ``client_id`` is the idempotency key: a resent frame with the same key in the
    same room gets the already stored message back."""

    OP: ClassVar[str] = "msg.send"
    FIELDS: ClassVar[dict[str, _Field]] = {
        "room": _req(_ID), "kind": _req(_kind_check), "text": _opt(_TEXT),
        "image": _opt(_IMAGE), "client_id": _opt(_CLIENT_ID),
    }
    id: int
    room: int
    kind: str
    text: str | None = None
    image: str | None = None
    client_id: str | None = None

    @staticmethod
    def _cross_check(values: dict[str, Any]) -> None:
        if values["kind"] == "image":
            if values.get("image") is None:
                raise _FieldError("bad_field", "image", "image: required for kind image")
        else:
            if values.get("image") is not None:
                raise _FieldError("bad_field", "image", "image: only allowed for kind image")
            text = values.get("text")
            if text is None:
                raise _FieldError("bad_field", "text", f"text: required for kind {values['kind']}")
            if not text.strip():
                raise _FieldError("bad_field", "text", "text: must not be empty")


@attrs.frozen
class MsgHistory:
    """The newest page of messages before ``before`` (or the newest of all), oldest first."""

    OP: ClassVar[str] = "msg.history"
    FIELDS: ClassVar[dict[str, _Field]] = {
        "room": _req(_ID), "before": _opt(_ID), "limit": _opt(_int_check(1, MAX_HISTORY_LIMIT)),
    }
    id: int
    room: int
    before: int | None = None
    limit: int = 50


@attrs.frozen
class MsgSince:
    """Messages with ids greater than ``after``, ascending (what a reconnecting client missed)."""

    OP: ClassVar[str] = "msg.since"
    FIELDS: ClassVar[dict[str, _Field]] = {
        "room": _req(_ID), "after": _req(_ID_OR_ZERO), "limit": _opt(_int_check(1, MAX_SINCE_LIMIT)),
    }
    id: int
    room: int
    after: int
    limit: int = 100


@attrs.frozen
class MsgSearch:
    OP: ClassVar[str] = "msg.search"
    FIELDS: ClassVar[dict[str, _Field]] = {
        "room": _req(_ID), "query": _req(_QUERY), "limit": _opt(_int_check(1, MAX_SEARCH_LIMIT)),
    }
    id: int
    room: int
    query: str
    limit: int = 20


@attrs.frozen
class MsgAnswer:
    OP: ClassVar[str] = "msg.answer"
    FIELDS: ClassVar[dict[str, _Field]] = {"room": _req(_ID), "message": _req(_ID)}
    id: int
    room: int
    message: int


@attrs.frozen
class MsgDelete:
    OP: ClassVar[str] = "msg.delete"
    FIELDS: ClassVar[dict[str, _Field]] = {"room": _req(_ID), "message": _req(_ID)}
    id: int
    room: int
    message: int


@attrs.frozen
class Typing:
    OP: ClassVar[str] = "typing"
    FIELDS: ClassVar[dict[str, _Field]] = {"room": _req(_ID), "active": _req(_bool_check)}
    id: int
    room: int
    active: bool


@attrs.frozen
class ModMute:
    OP: ClassVar[str] = "mod.mute"
    FIELDS: ClassVar[dict[str, _Field]] = {
        "user": _req(_USER), "seconds": _req(_int_check(1, MAX_MUTE_SECONDS)),
    }
    id: int
    user: str
    seconds: int


@attrs.frozen
class ModKick:
    OP: ClassVar[str] = "mod.kick"
    FIELDS: ClassVar[dict[str, _Field]] = {"user": _req(_USER)}
    id: int
    user: str


@attrs.frozen
class CallEnable:
    """This page can do proximity calls (``on``) or no longer (docs/calls.md)."""

    OP: ClassVar[str] = "call.enable"
    FIELDS: ClassVar[dict[str, _Field]] = {"on": _req(_bool_check)}
    id: int
    on: bool


@attrs.frozen
class CallSignal:
    """Mesh signaling for one member of the sender's call group: relayed as a ``call.signal``
    event only when both are in the same mesh group (the call service checks that)."""

    OP: ClassVar[str] = "call.signal"
    FIELDS: ClassVar[dict[str, _Field]] = {"to": _req(_USER), "data": _req(_signal_data_check)}
    id: int
    to: str
    data: Mapping[str, Any] = attrs.field(hash=False)


Request = Union[
    Hello, RoomsList, RoomCreate, RoomDelete, RoomInvite, RoomJoin, RoomLeave, RoomMembers,
    MsgSend, MsgHistory, MsgSince, MsgSearch, MsgAnswer, MsgDelete, Typing, ModMute, ModKick,
    CallEnable, CallSignal,
]

REQUEST_TYPES: dict[str, type] = {
    cls.OP: cls
    for cls in (
        Hello, RoomsList, RoomCreate, RoomDelete, RoomInvite, RoomJoin, RoomLeave, RoomMembers,
        MsgSend, MsgHistory, MsgSince, MsgSearch, MsgAnswer, MsgDelete, Typing, ModMute, ModKick,
        CallEnable, CallSignal,
    )
}

# --------------------------------------------------------------------------- decoding


class _DuplicateKey(ValueError):
    pass


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey("duplicate key")
    return out


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _parse_json(text: object, max_bytes: int | None) -> object:
    """Size check, then strict JSON; every failure is a ChatProtocolError without request id."""
    if not isinstance(text, str):
        raise ChatProtocolError("bad_frame", "a chat frame is a JSON text frame")
    try:
        return jsonsafe.loads(
            text,
            max_bytes=max_bytes if max_bytes is not None else len(text) * 4,
            max_depth=MAX_DEPTH,
            object_pairs_hook=_pairs_without_duplicates,
            parse_constant=_no_constants,
            parse_float=_finite_float,
        )
    except jsonsafe.JsonRefused as exc:
        if exc.reason == "too_large":
            raise ChatProtocolError("too_long", f"a frame may hold at most {max_bytes} bytes") from None
        if isinstance(exc.__cause__, _DuplicateKey):
            raise ChatProtocolError("bad_frame", "duplicate key in a JSON object") from None
        raise ChatProtocolError("bad_frame", exc.message) from None


def decode_client_frame(text: str) -> Request:
    """One client text frame -> its request object. Raises only :class:`ChatProtocolError`."""
    obj = _parse_json(text, MAX_FRAME_BYTES)
    if type(obj) is not dict:
        raise ChatProtocolError("bad_frame", f"a frame is a JSON object, got {_type_name(obj)}")
    if "id" not in obj:
        raise ChatProtocolError("bad_frame", "missing request id", field="id")
    request_id = obj["id"]
    if type(request_id) is not int or not 1 <= request_id <= MAX_REQUEST_ID:
        raise ChatProtocolError(
            "bad_frame", f"id: expected an integer in 1..{MAX_REQUEST_ID}", field="id"
        )
    op = obj.get("op")
    if op is None:
        raise ChatProtocolError("bad_frame", "missing op", request_id, "op")
    if type(op) is not str:
        raise ChatProtocolError("bad_frame", f"op: expected a string, got {_type_name(op)}", request_id, "op")
    cls = REQUEST_TYPES.get(op)
    if cls is None:
        raise ChatProtocolError("unknown_op", f"unknown op {_shown(op)}", request_id, "op")
    fields: dict[str, _Field] = cls.FIELDS
    for key in obj:
        if key not in fields and key not in ("id", "op"):
            raise ChatProtocolError(
                "bad_field", f"unknown field {_shown(key)} for {op}", request_id, _shown(key)[1:-1]
            )
    values: dict[str, Any] = {}
    try:
        for name, spec in fields.items():
            value = obj.get(name)
            if value is None:
                if spec.required:
                    raise _FieldError("bad_field", name, f"{name}: required")
                continue
            values[name] = spec.check(value, name)
        cross_check = getattr(cls, "_cross_check", None)
        if cross_check is not None:
            cross_check(values)
    except _FieldError as exc:
        raise ChatProtocolError(exc.code, exc.message, request_id, exc.field) from None
    return cls(id=request_id, **values)


def encode_request(request: Request) -> str:
    """A request object -> its text frame (for clients). Raises ChatProtocolError when the
    request would not pass :func:`decode_client_frame` (the frame is checked that way)."""
    cls = type(request)
    if REQUEST_TYPES.get(getattr(cls, "OP", None)) is not cls:
        raise TypeError(f"not a chat request: {request!r}")
    obj: dict[str, Any] = {"id": request.id, "op": cls.OP}
    for name in cls.FIELDS:
        value = getattr(request, name)
        if value is None:
            continue
        if isinstance(value, Mapping):
            value = {str(k): v for k, v in value.items()}
        obj[name] = value
    text = _dumps(obj)
    decode_client_frame(text)
    return text


# ---------------------------------------------------------------------------- encoding


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_reply(request_id: int, **fields: Any) -> str:
    """``{"re": id, "ok": true, ...fields}``."""
    if "re" in fields or "ok" in fields:
        raise ValueError("reply fields may not be named re or ok")
    return _dumps({"re": request_id, "ok": True, **fields})


def encode_error(
    request_id: int | None, code: str, message: str, retry_after: float | None = None
) -> str:
    """``{"re": id or null, "ok": false, "error": {"code", "message"[, "retry_after"]}}``.

    ``retry_after`` (seconds, rounded up to milliseconds) only goes with ``rate_limited`` and
    ``muted``."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    error: dict[str, Any] = {"code": code, "message": message}
    if retry_after is not None:
        if code not in ("rate_limited", "muted"):
            raise ValueError("retry_after only goes with rate_limited or muted")
        if not math.isfinite(retry_after) or retry_after < 0:
            raise ValueError("retry_after must be a finite number >= 0")
        error["retry_after"] = math.ceil(retry_after * 1000) / 1000
    return _dumps({"re": request_id, "ok": False, "error": error})


def error_for(exc: ChatProtocolError) -> str:
    """The error frame answering a frame that :func:`decode_client_frame` refused."""
    return encode_error(exc.request_id, exc.code, exc.message)


def encode_event(name: str, **fields: Any) -> str:
    """``{"ev": name, ...fields}``; ``name`` must be one of :data:`EVENTS`."""
    if name not in EVENTS:
        raise ValueError(f"unknown event {name!r}")
    if "ev" in fields:
        raise ValueError("event fields may not be named ev")
    return _dumps({"ev": name, **fields})


def message_object(
    id: int,
    ts: float,
    author: str,
    kind: str,
    text: str = "",
    image: str | None = None,
    answered: bool = False,
    entity_id: int | None = None,
    deleted: bool = False,
) -> dict[str, Any]:
    """A message as it travels (in ``message`` events and in history, since, search and send
    replies): ``text`` unless empty, ``image`` for images, ``answered`` for questions,
    ``entity_id`` when the author had an avatar, ``deleted`` only when true."""
    obj: dict[str, Any] = {"id": id, "ts": round(ts, 3), "author": author, "kind": kind}
    if text:
        obj["text"] = text
    if image is not None:
        obj["image"] = image
    if kind == "question":
        obj["answered"] = bool(answered)
    if entity_id is not None:
        obj["entity_id"] = entity_id
    if deleted:
        obj["deleted"] = True
    return obj


def room_object(id: int, name: str, owner: str, private: bool, **extra: Any) -> dict[str, Any]:
    """A room as it travels: ``{id, name, owner, private}`` plus extras such as ``joined``."""
    return {"id": id, "name": name, "owner": owner, "private": bool(private), **extra}


# ------------------------------------------------------------------- server frames (clients)


@attrs.frozen
class Reply:
    """A successful reply: ``re`` is the request id, ``fields`` the rest (without re/ok)."""

    re: int
    fields: dict[str, Any] = attrs.field(hash=False)


@attrs.frozen
class ErrorReply:
    re: int | None
    code: str
    message: str
    retry_after: float | None = None


@attrs.frozen
class Event:
    ev: str
    fields: dict[str, Any] = attrs.field(hash=False)


ServerFrame = Union[Reply, ErrorReply, Event]


def decode_server_frame(text: str, max_bytes: int | None = None) -> ServerFrame:
    """A server text frame -> Reply, ErrorReply or Event (for clients). Unknown event names
    and extra fields are kept (a newer server may send more); malformed frames raise
    :class:`ChatProtocolError` with code ``bad_frame``. Server frames are not bound by the
    16 KiB limit of client frames (a history page or a hello reply is often larger): the
    client's WebSocket message size limit bounds them, or ``max_bytes`` when given."""
    obj = _parse_json(text, max_bytes)
    if type(obj) is not dict:
        raise ChatProtocolError("bad_frame", "a frame is a JSON object")
    if "ev" in obj:
        if type(obj["ev"]) is not str:
            raise ChatProtocolError("bad_frame", "ev must be a string")
        return Event(obj.pop("ev"), obj)
    re_id = obj.pop("re", None)
    ok = obj.pop("ok", None)
    if re_id is not None and type(re_id) is not int:
        raise ChatProtocolError("bad_frame", "re must be an integer or null")
    if ok is True and re_id is not None:
        return Reply(re_id, obj)
    if ok is False:
        error = obj.get("error")
        if type(error) is not dict or type(error.get("code")) is not str:
            raise ChatProtocolError("bad_frame", "an error reply needs error.code")
        retry = error.get("retry_after")
        if retry is not None and (type(retry) not in (int, float) or not math.isfinite(retry)):
            raise ChatProtocolError("bad_frame", "retry_after must be a number")
        message = error.get("message")
        return ErrorReply(
            re_id, error["code"], message if type(message) is str else "",
            None if retry is None else float(retry),
        )
    raise ChatProtocolError("bad_frame", "neither an event nor a reply")
