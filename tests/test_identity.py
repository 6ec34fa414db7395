"""Tests of worldserver.identity: nickname rules, uniqueness, tokens, expiry and the memory cap.

Must not: do I/O or sleep; time is a fake clock.
"""

from __future__ import annotations

import re

import pytest

from worldserver.identity import (
    MAX_NAME_LENGTH,
    Identities,
    IdentitiesFull,
    NameRejected,
    NameTaken,
    normalize_name,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ids(clock: FakeClock) -> Identities:
    return Identities(ttl=60.0, max_tokens=5, clock=clock)


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("alice", "alice"),
        ("  Bob  ", "Bob"),
        ("갤러리짱", "갤러리짱"),
        ("Ünïcödé", "Ünïcödé"),
        ("名前", "名前"),
        ("Иван_Петров", "Иван_Петров"),
        ("a.b-c_d 42", "a.b-c_d 42"),
        ("two   spaces", "two spaces"),
        ("x" * MAX_NAME_LENGTH, "x" * MAX_NAME_LENGTH),
        ("ᄀ\u1161", "가"),  # conjoining jamo are composed (NFC)
        ("नमस्ते", "नमस्ते"),  # combining marks after letters are fine
    ],
)
def test_valid_names(raw: str, shown: str) -> None:
    assert normalize_name(raw) == shown


@pytest.mark.parametrize(
    "raw, words",
    [
        ("", "empty"),
        ("     ", "empty"),
        ("x" * (MAX_NAME_LENGTH + 1), "longer than 24"),
        ("x" * 10_000, "longer than 24"),
        ("tab\there", "control"),
        ("nul\x00", "control"),
        ("zero\u200bwidth", "invisible"),
        ("filler\u3164", "invisible"),
        ("<script>", "'<'"),
        ("smile 🙂", "use letters"),
        ("...", "letter or digit"),
        ("\u0301abc", "combining mark"),
        ("guest-7", "reserved"),
        ("GUEST-12", "reserved"),
        ("ｇｕｅｓｔ-3", "reserved"),
    ],
)
def test_invalid_names_have_clear_reasons(raw: str, words: str) -> None:
    with pytest.raises(NameRejected) as info:
        normalize_name(raw)
    assert words in info.value.reason
    assert str(info.value) == info.value.reason


@pytest.mark.parametrize("raw", [None, 5, ["a"], {"name": "a"}, b"bytes"])
def test_non_string_names_are_rejected(raw) -> None:
    with pytest.raises(NameRejected, match="string"):
        normalize_name(raw)


def test_join_gives_a_url_safe_token_and_the_normalized_name(ids: Identities) -> None:
    token, name = ids.join("  갤러리짱 ")
    assert name == "갤러리짱"
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)
    assert ids.name_for(token) == "갤러리짱"
    assert ids.name_for(token.encode()) == "갤러리짱"
    other, _ = ids.join("someone")
    assert other != token


def test_names_are_unique_ignoring_case_and_width(ids: Identities) -> None:
    ids.join("Alice")
    for clash in ("alice", "ALICE", "  alice ", "Ａｌｉｃｅ"):
        with pytest.raises(NameTaken, match="already taken"):
            ids.join(clash)
    assert issubclass(NameTaken, NameRejected)


def test_release_frees_the_name(ids: Identities) -> None:
    token, _ = ids.join("alice")
    ids.release(token)
    assert ids.name_for(token) is None
    token2, _ = ids.join("ALICE")
    assert ids.name_for(token2) == "ALICE"
    ids.release("no-such-token")  # unknown: no error
    ids.release(None)


def test_rejoin_with_own_token_keeps_it(ids: Identities) -> None:
    token, _ = ids.join("alice")
    again, name = ids.join("Alice", token)
    assert again == token and name == "Alice"
    renamed, name = ids.join("alicia", token)
    assert renamed == token and name == "alicia"
    assert ids.name_for(token) == "alicia"
    ids.join("alice")  # the old name is free again
    with pytest.raises(NameTaken):
        ids.join("alicia", "x" * 32)  # someone else's (unknown) token does not help


def test_unknown_and_malformed_tokens(ids: Identities) -> None:
    ids.join("alice")
    for bad in (None, "", "short", "x" * 32, "é" * 32, b"\xff" * 32, 12345, "a" * 1000):
        assert ids.name_for(bad) is None
        assert not ids.touch(bad)
        assert ids.attach(bad) is None
        ids.detach(bad)


def test_idle_tokens_expire_and_touch_keeps_them(ids: Identities, clock: FakeClock) -> None:
    old, _ = ids.join("old")
    kept, _ = ids.join("kept")
    clock.now += 50
    assert ids.touch(kept)
    clock.now += 20  # old: 70 s idle > ttl 60; kept: 20 s
    assert ids.name_for(old) is None
    assert ids.name_for(kept) == "kept"
    ids.join("old")  # its name is free again
    assert len(ids) == 2


def test_attached_tokens_never_expire(ids: Identities, clock: FakeClock) -> None:
    token, _ = ids.join("player")
    assert ids.attach(token) == "player"
    assert ids.attach(token) == "player"  # two sessions
    clock.now += 1000
    assert ids.name_for(token) == "player"
    ids.detach(token)
    clock.now += 1000
    assert ids.name_for(token) == "player"  # one session still attached
    ids.detach(token)
    clock.now += 59
    assert ids.name_for(token) == "player"
    clock.now += 61
    assert ids.name_for(token) is None


def test_memory_cap_evicts_the_longest_idle(ids: Identities, clock: FakeClock) -> None:
    tokens = []
    for i in range(5):
        tokens.append(ids.join(f"p{i}")[0])
        clock.now += 1
    ids.touch(tokens[0])  # p1 is now the longest idle
    newest, _ = ids.join("p5")
    assert len(ids) == 5
    assert ids.name_for(tokens[1]) is None
    assert ids.name_for(tokens[0]) == "p0"
    assert ids.name_for(newest) == "p5"
    ids.join("p1")  # evicted name is free


def test_full_of_attached_tokens_refuses(clock: FakeClock) -> None:
    ids = Identities(ttl=60.0, max_tokens=2, clock=clock)
    for name in ("a", "b"):
        ids.attach(ids.join(name)[0])
    with pytest.raises(IdentitiesFull):
        ids.join("c")
    assert issubclass(IdentitiesFull, NameRejected)


def test_guest_names_are_unique_and_cannot_be_chosen(ids: Identities) -> None:
    names = [ids.guest_name() for _ in range(100)]
    assert len(set(names)) == 100
    assert all(re.fullmatch(r"guest-[0-9]+", n) for n in names)
    with pytest.raises(NameRejected):
        ids.join(names[0])


def test_constructor_checks_arguments() -> None:
    with pytest.raises(ValueError):
        Identities(ttl=0)
    with pytest.raises(ValueError):
        Identities(max_tokens=0)
