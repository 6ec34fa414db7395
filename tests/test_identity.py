"""Tests of worldserver.identity: nickname rules, reserved names, secrets, session tokens of
identities (one login and one avatar per identity), expiry and the memory cap.

Must not: do I/O or sleep; time is a fake clock.
"""

from __future__ import annotations

import re

import pytest

from worldserver.identity import (
    MAX_NAME_LENGTH,
    RELEASED,
    REPLACED,
    Identities,
    IdentitiesFull,
    NameRejected,
    hash_secret,
    new_secret,
    normalize_name,
    secret_matches,
    user_key,
    valid_secret,
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
        ("server", "reserved for the server"),
        ("SERVER", "reserved for the server"),
        ("  Server ", "reserved for the server"),
        ("ｓｅｒｖｅｒ", "reserved for the server"),
        ("s.e.r.v.e.r", "reserved for the server"),
        ("ser ver", "reserved for the server"),
        ("_server_", "reserved for the server"),
        ("System", "reserved for the server"),
        ("admin", "reserved for the server"),
        ("Moderator", "reserved for the server"),
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


def test_the_chat_servers_author_name_is_reserved() -> None:
    from worldserver.chat.rooms import SERVER_AUTHOR

    with pytest.raises(NameRejected, match="reserved"):
        normalize_name(SERVER_AUTHOR)
    for near in ("server1", "servers", "my server"):  # only the name itself, not lookalikes
        assert normalize_name(near) == near


def test_user_key_folds_case_and_width() -> None:
    assert user_key("Alice") == user_key("ALICE") == user_key("Ａｌｉｃｅ") == "alice"
    assert user_key("Straße") == user_key("STRASSE")
    assert user_key("alice") != user_key("alicia")


def test_secrets() -> None:
    secret = new_secret()
    assert valid_secret(secret) and re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
    assert new_secret() != secret
    stored = hash_secret(secret)
    assert len(stored) == 32 and secret.encode() not in stored
    assert secret_matches(secret, stored)
    assert not secret_matches(new_secret(), stored)
    assert not secret_matches(secret, None)  # an identity without a secret matches nothing
    for bad in (None, "", "short", secret + "x", "é" * 43, 43, b"x" * 43):
        assert not valid_secret(bad)
        assert not secret_matches(bad, stored)


class Holder:
    """A session or chat socket as Identities sees it: ``end(reason)`` records the reasons."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    def end(self, reason: str) -> None:
        self.ended.append(reason)


def test_issue_gives_a_url_safe_token_for_the_identity(ids: Identities) -> None:
    token = ids.issue(7, "갤러리짱")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)
    assert ids.identify(token) == (7, "갤러리짱")
    assert ids.name_for(token) == "갤러리짱"
    assert ids.name_for(token.encode()) == "갤러리짱"
    assert ids.token_of(7) == token
    assert ids.issue(8, "someone") != token
    assert len(ids) == 2


def test_a_second_login_replaces_the_first(ids: Identities) -> None:
    """One identity, one login: a new token for the same identity ends everything that held the
    old one (its avatar and its chat sockets), and the old token is dead."""
    first = ids.issue(7, "kim")
    avatar, chat_a, chat_b = Holder(), Holder(), Holder()
    assert ids.attach(first, avatar, avatar.end, avatar=True) == (7, "kim")
    assert ids.attach(first, chat_a, chat_a.end) == (7, "kim")
    assert ids.attach(first, chat_b, chat_b.end) == (7, "kim")
    other = ids.issue(8, "lee")
    bystander = Holder()
    ids.attach(other, bystander, bystander.end, avatar=True)
    second = ids.issue(7, "kim")
    assert avatar.ended == chat_a.ended == chat_b.ended == [REPLACED]
    assert bystander.ended == []
    assert ids.name_for(first) is None and ids.attach(first, Holder()) is None
    assert ids.identify(second) == (7, "kim") and ids.token_of(7) == second
    assert len(ids) == 2
    ids.detach(first, avatar)  # the ended holders detach afterwards: harmless
    assert ids.holders(second) == 0


def test_one_avatar_per_identity(ids: Identities) -> None:
    """The attack: one token gave two live avatars. A second avatar replaces the first; chat
    sockets are not avatars and stay."""
    token = ids.issue(3, "alice")
    first, second, chat = Holder(), Holder(), Holder()
    ids.attach(token, first, first.end, avatar=True)
    ids.attach(token, chat, chat.end)
    ids.attach(token, second, second.end, avatar=True)
    assert first.ended == [REPLACED] and second.ended == [] and chat.ended == []
    assert ids.holders(token) == 2
    ids.attach(token, second, second.end, avatar=True)  # the same avatar again: nothing ends
    assert second.ended == []
    ids.detach(token, first)  # the replaced one leaving changes nothing
    assert ids.holders(token) == 2


def test_release_ends_the_holders_and_keeps_nothing(ids: Identities) -> None:
    token = ids.issue(1, "alice")
    holder = Holder()
    ids.attach(token, holder, holder.end)
    ids.release(token)
    assert holder.ended == [RELEASED]
    assert ids.name_for(token) is None and ids.token_of(1) is None
    ids.release("no-such-token")  # unknown: no error
    ids.release(None)


def test_a_holder_that_raises_does_not_keep_the_others_from_ending(ids: Identities) -> None:
    token = ids.issue(1, "alice")
    good = Holder()

    def bad(reason: str) -> None:
        raise RuntimeError("broken holder")

    ids.attach(token, object(), bad)
    ids.attach(token, good, good.end)
    with pytest.raises(RuntimeError, match="broken holder"):
        ids.issue(1, "alice")
    assert good.ended == [REPLACED]
    assert ids.token_of(1) is not None and ids.token_of(1) != token


def test_unknown_and_malformed_tokens(ids: Identities) -> None:
    ids.issue(1, "alice")
    for bad in (None, "", "short", "x" * 32, "é" * 32, b"\xff" * 32, 12345, "a" * 1000):
        assert ids.name_for(bad) is None and ids.identify(bad) is None
        assert not ids.touch(bad)
        assert ids.attach(bad, Holder()) is None
        assert ids.holders(bad) == 0
        ids.detach(bad, Holder())


def test_idle_tokens_expire_and_touch_keeps_them(ids: Identities, clock: FakeClock) -> None:
    old = ids.issue(1, "old")
    kept = ids.issue(2, "kept")
    clock.now += 50
    assert ids.touch(kept)
    clock.now += 20  # old: 70 s idle > ttl 60; kept: 20 s
    assert ids.name_for(old) is None and ids.token_of(1) is None
    assert ids.name_for(kept) == "kept"
    assert len(ids) == 1


def test_held_tokens_never_expire(ids: Identities, clock: FakeClock) -> None:
    token = ids.issue(1, "player")
    a, b = Holder(), Holder()
    assert ids.attach(token, a, a.end) == (1, "player")
    assert ids.attach(token, b, b.end) == (1, "player")
    clock.now += 1000
    assert ids.name_for(token) == "player"
    ids.detach(token, a)
    ids.detach(token, a)  # twice: counted once
    clock.now += 1000
    assert ids.name_for(token) == "player"  # b still holds it
    ids.detach(token, b)
    clock.now += 59
    assert ids.name_for(token) == "player"
    clock.now += 61
    assert ids.name_for(token) is None
    assert a.ended == b.ended == []  # expiry ends nobody: nobody held it


def test_memory_cap_evicts_the_longest_idle(ids: Identities, clock: FakeClock) -> None:
    tokens = []
    for i in range(5):
        tokens.append(ids.issue(i, f"p{i}"))
        clock.now += 1
    ids.touch(tokens[0])  # p1 is now the longest idle
    newest = ids.issue(5, "p5")
    assert len(ids) == 5
    assert ids.name_for(tokens[1]) is None
    assert ids.name_for(tokens[0]) == "p0"
    assert ids.name_for(newest) == "p5"
    again = ids.issue(0, "p0")  # a new login of a live identity needs no free slot
    assert len(ids) == 5 and ids.name_for(again) == "p0"


def test_full_of_held_tokens_refuses(clock: FakeClock) -> None:
    ids = Identities(ttl=60.0, max_tokens=2, clock=clock)
    for identity in (1, 2):
        ids.attach(ids.issue(identity, f"p{identity}"), Holder())
    with pytest.raises(IdentitiesFull):
        ids.issue(3, "c")
    assert issubclass(IdentitiesFull, NameRejected)
    ids.issue(1, "p1")  # replacing a login still works


def test_guest_names_are_unique_and_cannot_be_chosen(ids: Identities) -> None:
    names = [ids.guest_name() for _ in range(100)]
    assert len(set(names)) == 100
    assert all(re.fullmatch(r"guest-[0-9]+", n) for n in names)
    with pytest.raises(NameRejected):
        normalize_name(names[0])


def test_constructor_checks_arguments() -> None:
    with pytest.raises(ValueError):
        Identities(ttl=0)
    with pytest.raises(ValueError):
        Identities(max_tokens=0)
