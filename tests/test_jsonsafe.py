"""Tests of protocol.jsonsafe: checked JSON parsing that refuses instead of recursing.

Checks the depth scan against ``json.loads`` on random valid documents (hypothesis), that
what passes the checks parses exactly as ``json.loads`` parses it, and that deep, large or
broken input is refused with its reason. Must not: do I/O or depend on the machine's speed.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from protocol import jsonsafe
from protocol.jsonsafe import DEFAULT_MAX_DEPTH, JsonRefused, loads, nesting_depth

# Strings that stress the scan: brackets, quotes and backslashes inside string literals.
tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\/ab\n\u00e9\U0001f600:,'), max_size=12) | st.text(max_size=8)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | tricky_text
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=40,
)


def depth_of(value) -> int:
    """Nesting depth as json.loads recurses: one level per list or object."""
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=500, deadline=None)
@given(documents, st.booleans(), st.booleans())
def test_scan_matches_json_on_valid_documents(value, ascii_only, indent) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=2 if indent else None)
    assert nesting_depth(text) == depth_of(value)
    parsed = loads(text, max_bytes=10**7, max_depth=depth_of(value))
    assert parsed == json.loads(text)
    assert loads(text.encode("utf-8"), max_bytes=10**7) == parsed
    if depth_of(value) > 0:
        with pytest.raises(JsonRefused) as info:
            loads(text, max_bytes=10**7, max_depth=depth_of(value) - 1)
        assert info.value.reason == "too_deep"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from('[]{}"\\ ,:1a'), max_size=80))
def test_anything_parses_as_json_does_or_is_refused(text) -> None:
    """Random bracket soup: never an exception but JsonRefused, and a parse is json's parse."""
    try:
        expected = json.loads(text)
    except ValueError:
        expected = JsonRefused
    except RecursionError:  # pragma: no cover - the alphabet cannot nest this deep in 80 chars
        expected = JsonRefused
    try:
        got = loads(text, max_bytes=1000, max_depth=1000)
    except JsonRefused as exc:
        assert exc.reason in jsonsafe.REASONS
        got = JsonRefused
    assert got == expected


@pytest.mark.parametrize(
    "data",
    ["[" * 20000, "{\"a\":" * 20000, "[" * 20000 + "]" * 20000, ("[" * 20000).encode(),
     '["' + "]" * 10 + '", ' + "[" * 33 + "]" * 33 + "]"],
)
def test_deep_input_is_refused_before_parsing(data) -> None:
    with pytest.raises(JsonRefused) as info:
        loads(data, max_bytes=100_000)
    assert info.value.reason == "too_deep"
    assert str(DEFAULT_MAX_DEPTH) in info.value.message


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps(["[" * 1000 + "{" * 1000, {"k\\\"[[[": "\\" * 5 + "[" * 50}])
    assert nesting_depth(text) == 2
    assert loads(text, max_bytes=100_000, max_depth=2)[0] == "[" * 1000 + "{" * 1000


def test_unterminated_and_escaped_strings() -> None:
    # an unterminated string runs to the end: what follows is inside it for the scan too
    assert nesting_depth('["abc\\" [[[[') == 1
    # a string of nothing but escaped quotes, unterminated: linear, and refused as invalid
    with pytest.raises(JsonRefused) as info:
        loads('"' + '\\"' * 30_000, max_bytes=100_000)
    assert info.value.reason == "invalid"


@pytest.mark.parametrize(
    "data, max_bytes",
    [("x" * 11, 10), ("\u00e9" * 6, 10), (b"12345678901", 10), (bytearray(b"[1,2,3,4,5]"), 10)],
)
def test_size_is_checked_in_characters_and_utf8_bytes(data, max_bytes) -> None:
    with pytest.raises(JsonRefused) as info:
        loads(data, max_bytes=max_bytes)
    assert info.value.reason == "too_large" and str(max_bytes) in info.value.message


@pytest.mark.parametrize(
    "data, words",
    [(b"\xff\xfe\x00", "UTF"), (b"", "Expecting value"), ("{not json", "Expecting property"),
     ("1" * 5000, "invalid value"), (5, "text or bytes")],
)
def test_invalid_input_is_refused_with_a_reason(data, words) -> None:
    with pytest.raises(JsonRefused) as info:
        loads(data, max_bytes=100_000)
    assert info.value.reason == "invalid" and words in info.value.message


def test_hook_errors_become_refusals_with_their_cause() -> None:
    class Duplicate(ValueError):
        pass

    def no_duplicates(pairs):
        if len(dict(pairs)) != len(pairs):
            raise Duplicate("duplicate key")
        return dict(pairs)

    with pytest.raises(JsonRefused) as info:
        loads('{"a": 1, "a": 2}', max_bytes=100, object_pairs_hook=no_duplicates)
    assert info.value.reason == "invalid" and isinstance(info.value.__cause__, Duplicate)
    assert loads('{"a": 1}', max_bytes=100, object_pairs_hook=no_duplicates) == {"a": 1}


def test_utf16_bytes_are_detected_like_json_does() -> None:
    data = json.dumps({"name": "갤러리"}, ensure_ascii=False).encode("utf-16")
    assert loads(data, max_bytes=1000) == json.loads(data) == {"name": "갤러리"}
