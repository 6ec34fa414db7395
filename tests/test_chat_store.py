"""The SQLite chat store on real files (tmp_path): rooms, members, invitations; history and
since pages without loss or doubles; idempotent sends; English and Korean search with
substrings, the short-query path and FTS5 syntax taken literally; soft delete; durability
across a reopen and a killed process; the schema version."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from worldserver.chat import (
    ChatStore,
    IdentityNotFound,
    RoomNotFound,
    SqliteChatStore,
    StoreConflict,
    StoreError,
)
from worldserver.chat import sqlite_store as S
from worldserver.identity import hash_secret, new_secret, user_key

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "chat.sqlite3"


@pytest.fixture
def store(path):
    s = SqliteChatStore(path)
    yield s
    s.close()


def texts(messages) -> list[str]:
    return [m.text for m in messages]


def uid(store, name: str) -> int:
    """The id of the identity named ``name`` (made, with a fresh secret, if there is none)."""
    found = store.identity_by_key(user_key(name))
    if found is not None:
        return found.id
    return store.create_identity(name, user_key(name), hash_secret(new_secret()), 0.0).id


def test_is_a_chat_store(store):
    assert isinstance(store, ChatStore)


def test_pragmas_and_schema_version(store, path):
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == S.SCHEMA_VERSION
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_schema")}
        assert {"rooms", "members", "invites", "messages", "messages_fts", "messages_by_room"} <= names
    finally:
        db.close()
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    full = SqliteChatStore(path.with_name("full.sqlite3"), synchronous="FULL")
    assert full._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    full.close()


def _cache_and_map(store) -> tuple[int, int]:
    return (store._db.execute("PRAGMA cache_size").fetchone()[0],
            store._db.execute("PRAGMA mmap_size").fetchone()[0])


def test_the_server_sizes_the_cache_and_map_by_its_settings(tmp_path):
    """chat.db_cache_mib and chat.db_mmap_mib reach SQLite (the defaults: a small cache and no
    map, so that the server's RSS does not grow with the database; docs/reliability.md)."""
    from worldserver.chat.service import ChatService
    from worldserver.config import Config, load_config
    from worldserver.identity import Identities

    def opened(config):
        service = ChatService.from_config(config, None, Identities(), None)
        return service._store_factory()

    default = opened(load_config(None, env={}, overrides={"server.data_dir": str(tmp_path / "a")}))
    try:
        chat = Config().chat
        assert _cache_and_map(default) == (-1024 * chat.db_cache_mib, 1024 * 1024 * chat.db_mmap_mib)
        assert _cache_and_map(default) == (-4096, 0)
    finally:
        default.close()
    sized = opened(load_config(None, env={}, overrides={
        "server.data_dir": str(tmp_path / "b"), "chat.db_cache_mib": "3", "chat.db_mmap_mib": "2"}))
    try:
        assert _cache_and_map(sized) == (-3 * 1024, 2 * 1024 * 1024)
    finally:
        sized.close()


# ----------------------------------------------------------------------------------- rooms


def test_rooms(store):
    lobby = store.create_room("Lobby", None, False, 100.0)
    assert lobby.id >= 1 and lobby.name == "Lobby" and lobby.private is False and lobby.created == 100.0
    assert store.get_room(lobby.id) == lobby
    assert store.room_by_name("lobby") == lobby
    assert store.room_by_name("LOBBY") == lobby
    assert store.room_by_name("lobby2") is None
    assert store.get_room(9999) is None
    with pytest.raises(StoreConflict):
        store.create_room("LoBbY", uid(store, "kim"), True, 1.0)
    straße = store.create_room("Straße", uid(store, "kim"), False, 1.0)
    with pytest.raises(StoreConflict):  # Unicode case folding, not just ASCII
        store.create_room("STRASSE", uid(store, "lee"), False, 1.0)
    greek = store.create_room("ΣΟΦΙΑ", uid(store, "kim"), False, 1.0)
    assert store.room_by_name("σοφια") == greek
    korean = store.create_room("사진 동호회", uid(store, "kim"), True, 1.0)
    assert store.room_by_name("사진 동호회") == korean
    assert store.delete_room(straße.id) is True
    assert store.delete_room(straße.id) is False
    assert store.get_room(straße.id) is None
    assert store.create_room("straße", uid(store, "lee"), False, 2.0).id > korean.id  # name free, id new


def test_members_and_invites(store):
    room = store.create_room("club", uid(store, "kim"), True, 0.0)
    other = store.create_room("other", uid(store, "kim"), False, 0.0)
    assert store.members(room.id) == []
    assert store.add_member(room.id, uid(store, "kim")) is True
    assert store.add_member(room.id, uid(store, "kim")) is False
    assert store.add_member(room.id, uid(store, "민수")) is True
    assert store.add_member(room.id, uid(store, "anna")) is True
    assert store.members(room.id) == sorted(["kim", "민수", "anna"])
    assert store.is_member(room.id, uid(store, "kim")) and not store.is_member(other.id, uid(store, "kim"))
    assert store.is_member(room.id, uid(store, "lee")) is False
    assert store.remove_member(room.id, uid(store, "anna")) is True
    assert store.remove_member(room.id, uid(store, "anna")) is False
    assert store.members(room.id) == sorted(["kim", "민수"])
    assert store.add_invite(room.id, uid(store, "lee")) is True
    assert store.add_invite(room.id, uid(store, "lee")) is False
    assert store.is_invited(room.id, uid(store, "lee")) and not store.is_invited(room.id, uid(store, "kim"))
    assert not store.is_member(room.id, uid(store, "lee"))
    with pytest.raises(RoomNotFound):
        store.add_member(12345, uid(store, "kim"))
    with pytest.raises(RoomNotFound):
        store.add_invite(12345, uid(store, "kim"))
    with pytest.raises(IdentityNotFound):
        store.add_member(room.id, 999_999)
    with pytest.raises(IdentityNotFound):
        store.add_invite(room.id, 999_999)
    with pytest.raises(IdentityNotFound):
        store.create_room("nobody's", 999_999, False, 0.0)


def test_list_rooms_visibility(store):
    lobby = store.create_room("lobby", None, False, 0.0)
    public = store.create_room("open", uid(store, "kim"), False, 0.0)
    secret = store.create_room("secret", uid(store, "kim"), True, 0.0)
    invited = store.create_room("invited", uid(store, "kim"), True, 0.0)
    store.add_member(secret.id, uid(store, "kim"))
    store.add_invite(invited.id, uid(store, "lee"))
    assert store.list_rooms(uid(store, "kim")) == [lobby, public, secret]
    assert store.list_rooms(uid(store, "lee")) == [lobby, public, invited]
    assert store.list_rooms(uid(store, "nobody")) == [lobby, public]


def test_delete_room_takes_everything_with_it(store):
    room = store.create_room("gone", uid(store, "kim"), True, 0.0)
    keep = store.create_room("keep", uid(store, "kim"), False, 0.0)
    store.add_member(room.id, uid(store, "kim"))
    store.add_invite(room.id, uid(store, "lee"))
    for i in range(30):
        store.append(room.id, "kim", "text", f"gallery message {i}", None, f"c{i}", float(i))
    kept = store.append(keep.id, "kim", "text", "gallery kept", None, None, 1.0)
    assert store.delete_room(room.id)
    assert store.members(room.id) == [] and not store.is_invited(room.id, uid(store, "lee"))
    assert store.history(room.id) == [] and store.search(room.id, "gallery") == []
    assert store.get_message(room.id, 1) is None
    assert store.search(keep.id, "gallery") == [kept]
    with pytest.raises(RoomNotFound):
        store.append(room.id, "kim", "text", "late", None, None, 9.0)
    store.check_index()


# -------------------------------------------------------------------------------- messages


def fill(store, rooms, n):
    """n messages spread over rooms round-robin; returns {room: [messages in order]}."""
    out = {r: [] for r in rooms}
    for i in range(n):
        room = rooms[i % len(rooms)]
        out[room].append(store.append(room, f"user{i % 7}", "text", f"message number {i}", None, None, 1000.0 + i))
    return out


def test_append_returns_the_stored_message(store):
    room = store.create_room("r", uid(store, "kim"), False, 0.0)
    m = store.append(room.id, "kim", "question", "where?", None, "k1", 12.5)
    assert (m.room, m.author, m.kind, m.text, m.image, m.ts) == (room.id, "kim", "question", "where?", None, 12.5)
    assert (m.answered, m.deleted, m.client_id) == (False, False, "k1")
    assert store.get_message(room.id, m.id) == m
    img = store.append(room.id, "kim", "image", "", "AbCdEfGhIjKlMnOpQrStUv", None, 13.0)
    assert store.get_message(room.id, img.id).image == "AbCdEfGhIjKlMnOpQrStUv"
    with pytest.raises(ValueError):
        store.append(room.id, "kim", "video", "x", None, None, 1.0)
    with pytest.raises(RoomNotFound):
        store.append(999, "kim", "text", "x", None, None, 1.0)


def test_ids_are_global_and_strictly_increasing(store):
    a = store.create_room("a", uid(store, "x"), False, 0.0)
    b = store.create_room("b", uid(store, "x"), False, 0.0)
    msgs = fill(store, [a.id, b.id], 50)
    ids = sorted(m.id for ms in msgs.values() for m in ms)
    assert len(set(ids)) == 50 and ids == list(range(ids[0], ids[0] + 50))
    assert [m.id for m in msgs[a.id]] == sorted(m.id for m in msgs[a.id])


def test_history_pages_cover_exactly(store):
    a = store.create_room("a", uid(store, "x"), False, 0.0)
    b = store.create_room("b", uid(store, "x"), False, 0.0)
    msgs = fill(store, [a.id, b.id, a.id], 301)  # a gets two thirds, interleaved with b
    expected = msgs[a.id]
    newest = store.history(a.id, limit=50)
    assert newest == expected[-50:]  # the newest page, oldest first
    seen, before = [], None
    for _ in range(100):  # bounded: a cursor bug must fail, not hang
        page = store.history(a.id, before=before, limit=37)
        if not page:
            break
        assert [m.id for m in page] == sorted(m.id for m in page)
        seen = page + seen
        before = page[0].id
    assert seen == expected
    assert store.history(a.id, before=expected[0].id) == []
    assert store.history(a.id, limit=0) == []


def test_since_pages_cover_exactly(store):
    a = store.create_room("a", uid(store, "x"), False, 0.0)
    b = store.create_room("b", uid(store, "x"), False, 0.0)
    msgs = fill(store, [a.id, b.id], 200)
    for start in (0, msgs[a.id][0].id, msgs[a.id][57].id, msgs[b.id][13].id):
        expected = [m for m in msgs[a.id] if m.id > start]
        got, after = [], start
        for _ in range(100):
            page = store.since(a.id, after, 23)
            got += page
            if len(page) < 23:
                break
            after = page[-1].id
        assert got == expected
    assert store.since(a.id, msgs[a.id][-1].id, 100) == []


def test_reconnect_since_gets_exactly_what_was_missed(store):
    room = store.create_room("lobby", uid(store, "x"), False, 0.0)
    seen = [store.append(room.id, "a", "text", f"before {i}", None, None, i) for i in range(10)]
    last_seen = seen[-1].id
    missed = [store.append(room.id, "b", "text", f"missed {i}", None, None, 10 + i) for i in range(15)]
    assert store.since(room.id, last_seen, 500) == missed


def test_idempotent_client_id(store):
    room = store.create_room("r", uid(store, "kim"), False, 0.0)
    other = store.create_room("o", uid(store, "kim"), False, 0.0)
    first = store.append(room.id, "kim", "text", "hello", None, "abc", 1.0)
    again = store.append(room.id, "kim", "text", "hello (resent)", None, "abc", 2.0)
    assert again == first
    assert store.history(room.id) == [first]
    assert store.append(room.id, "lee", "text", "hello", None, "abc", 3.0).id != first.id  # other author
    assert store.append(other.id, "kim", "text", "hello", None, "abc", 3.0).id != first.id  # other room
    no_key_1 = store.append(room.id, "kim", "text", "same", None, None, 4.0)
    no_key_2 = store.append(room.id, "kim", "text", "same", None, None, 4.0)
    assert no_key_1.id != no_key_2.id  # without a key, every append is new
    store.delete_message(room.id, first.id)
    assert store.append(room.id, "kim", "text", "hello", None, "abc", 5.0).deleted is True


def test_mark_answered(store):
    room = store.create_room("r", uid(store, "kim"), False, 0.0)
    other = store.create_room("o", uid(store, "kim"), False, 0.0)
    q = store.append(room.id, "kim", "question", "why?", None, None, 1.0)
    t = store.append(room.id, "kim", "text", "because", None, None, 2.0)
    assert store.mark_answered(other.id, q.id) is False  # wrong room
    assert store.mark_answered(room.id, t.id) is False  # not a question
    assert store.mark_answered(room.id, q.id) is True
    assert store.mark_answered(room.id, q.id) is False  # already
    assert store.get_message(room.id, q.id).answered is True
    assert store.history(room.id)[0].answered is True
    q2 = store.append(room.id, "kim", "question", "and?", None, None, 3.0)
    store.delete_message(room.id, q2.id)
    assert store.mark_answered(room.id, q2.id) is False


def test_soft_delete(store):
    room = store.create_room("r", uid(store, "kim"), False, 0.0)
    ms = [store.append(room.id, "kim", "text", f"갤러리 photo {i}", None, None, float(i)) for i in range(5)]
    assert store.delete_message(room.id + 1, ms[2].id) is False  # wrong room
    assert store.delete_message(room.id, ms[2].id) is True
    assert store.delete_message(room.id, ms[2].id) is False
    assert store.delete_message(room.id, 98765) is False
    live = [ms[0], ms[1], ms[3], ms[4]]
    assert store.history(room.id) == live
    assert store.since(room.id, 0, 100) == live
    assert texts(store.search(room.id, "photo 2")) == []
    assert ms[2] not in store.search(room.id, "갤러리", 100)
    assert ms[2] not in store.search(room.id, "러리", 100)  # short path too
    assert len(store.search(room.id, "photo", 100)) == 4
    gone = store.get_message(room.id, ms[2].id)
    assert gone.deleted is True and gone.text == "갤러리 photo 2"
    store.check_index()


# ---------------------------------------------------------------------------------- search

CORPUS = [
    "Welcome to the Gallery!",
    "갤러리에서 만나요",
    "이 사진 정말 예뻐요",
    "사진 갤러리 3층",
    "photo of a 갤러리 wall",
    "100% sure_thing",
    'she said "hi" OR NEAR(something) -maybe * ok',
    "nothing relevant",
    "une école de Paris",
    "multi\nline\ttext",
]


@pytest.fixture
def corpus(store):
    room = store.create_room("search", uid(store, "kim"), False, 0.0)
    other = store.create_room("elsewhere", uid(store, "kim"), False, 0.0)
    for i, text in enumerate(CORPUS):
        store.append(room.id, "kim", "text", text, None, None, float(i))
        store.append(other.id, "lee", "text", "other room: " + text, None, None, float(i))
    return store, room.id, other.id


@pytest.mark.parametrize(
    "query,expected",
    [
        ("gallery", ["Welcome to the Gallery!"]),
        ("GALLERY", ["Welcome to the Gallery!"]),
        ("gAlLeRy!", ["Welcome to the Gallery!"]),
        ("allery", ["Welcome to the Gallery!"]),
        ("갤러리", ["photo of a 갤러리 wall", "사진 갤러리 3층", "갤러리에서 만나요"]),  # newest first
        ("갤러리에서", ["갤러리에서 만나요"]),
        ("리에서", ["갤러리에서 만나요"]),
        ("러리", ["photo of a 갤러리 wall", "사진 갤러리 3층", "갤러리에서 만나요"]),  # 2 chars: short path
        ("사진", ["사진 갤러리 3층", "이 사진 정말 예뻐요"]),
        ("사진 갤러리", ["사진 갤러리 3층"]),  # every term must match
        ("갤러리 사진", ["사진 갤러리 3층"]),
        ("갤러리 photo", ["photo of a 갤러리 wall"]),
        ("갤러리 wa", ["photo of a 갤러리 wall"]),  # long + short term
        ("만나요 gallery", []),
        ("ÉCOLE", ["une école de Paris"]),  # FTS5 folds non-ASCII case too
        ("line", ["multi\nline\ttext"]),
        ("zzz", []),
        ("W", ["photo of a 갤러리 wall", "Welcome to the Gallery!"]),
        ("ㅋ", []),
    ],
)
def test_search(corpus, query, expected):
    store, room, other = corpus
    assert texts(store.search(room, query, 20)) == expected
    assert texts(store.search(other, query, 20)) == ["other room: " + t for t in expected]


@pytest.mark.parametrize(
    "query,expected",
    [
        ('"hi"', ['she said "hi" OR NEAR(something) -maybe * ok']),
        ('"', ['she said "hi" OR NEAR(something) -maybe * ok']),
        ('"""', []),
        ("OR", ['she said "hi" OR NEAR(something) -maybe * ok']),
        ("hi OR nothing", []),  # not an FTS5 OR: all three terms must occur
        ("NEAR(", ['she said "hi" OR NEAR(something) -maybe * ok']),
        ("NEAR(something", ['she said "hi" OR NEAR(something) -maybe * ok']),
        ("-maybe", ['she said "hi" OR NEAR(something) -maybe * ok']),
        ("-gallery", []),  # not a NOT
        ("* ok", ['she said "hi" OR NEAR(something) -maybe * ok']),
        ("gal*", []),  # not a prefix query
        ("text:gallery", []),  # not a column filter
        ("^Wel", []),  # not an initial-token anchor
        ("%", ["100% sure_thing"]),
        ("0%", ["100% sure_thing"]),
        ("_", ["100% sure_thing"]),
        ("e_t", ["100% sure_thing"]),
        ("\\", []),
        ("a%b", []),
        ("'; DROP TABLE messages; --", []),
        ("AND", []),
        ("NOT gallery", []),
        ("(hi)", []),
        ("{text}", []),
    ],
)
def test_search_syntax_is_literal(corpus, query, expected):
    store, room, _ = corpus
    assert texts(store.search(room, query, 20)) == expected
    store.check_index()
    assert len(store.history(room, limit=100)) == len(CORPUS)  # nothing was harmed


def test_search_limit_order_and_empty_queries(corpus):
    store, room, _ = corpus
    assert store.search(room, "", 10) == [] and store.search(room, "   ", 10) == []
    assert store.search(room, "갤러리", 0) == []
    two = store.search(room, "갤러리", 2)
    assert texts(two) == ["photo of a 갤러리 wall", "사진 갤러리 3층"]
    assert two[0].id > two[1].id
    assert store.search(999, "갤러리", 10) == []
    assert store.search(2**40, "갤러리", 10) == []


def test_search_newest_first_over_many(store):
    room = store.create_room("busy", uid(store, "kim"), False, 0.0)
    ms = [store.append(room.id, "kim", "text", f"photo {i} 갤러리에서", None, None, float(i)) for i in range(300)]
    for query in ("photo", "갤러리", "러리", "photo 러리"):
        found = store.search(room.id, query, 25)
        assert found == ms[::-1][:25], query


def test_short_query_scan_is_bounded(store, monkeypatch):
    monkeypatch.setattr(S, "SHORT_QUERY_SCAN", 10)
    monkeypatch.setattr(S, "MIXED_QUERY_SCAN", 10)
    room = store.create_room("r", uid(store, "kim"), False, 0.0)
    old = store.append(room.id, "kim", "text", "옛날 사진 photo", None, None, 0.0)
    for i in range(20):
        store.append(room.id, "kim", "text", f"filler photo {i}", None, None, 1.0 + i)
    assert store.search(room.id, "옛날", 10) == []  # 2 chars: only the newest 10 are scanned
    assert store.search(room.id, "옛날 photo", 10) == []  # mixed: only the newest 10 FTS matches
    assert store.search(room.id, "옛날 사진", 10) == []
    assert store.search(room.id, "옛날 사진 photo", 10) == []
    assert store.search(room.id, "날 사진 phot", 10) == []
    assert store.search(room.id, "옛날 사진 ph", 10) == []
    monkeypatch.setattr(S, "SHORT_QUERY_SCAN", 50)
    monkeypatch.setattr(S, "MIXED_QUERY_SCAN", 50)
    assert store.search(room.id, "옛날", 10) == [old]
    assert store.search(room.id, "옛날 photo", 10) == [old]


# A property check against a brute-force oracle: random queries made of pieces of the corpus.
ALPHABET = "갤러리에서사진정말 abcABC%_\"*-()"


@pytest.fixture(scope="module")
def oracle_store(tmp_path_factory):
    import random

    rng = random.Random(7)
    s = SqliteChatStore(tmp_path_factory.mktemp("oracle") / "chat.sqlite3")
    room = s.create_room("oracle", uid(s, "x"), False, 0.0)
    other = s.create_room("noise", uid(s, "x"), False, 0.0)
    rows = []
    for i in range(400):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 25)))
        m = s.append(room.id if i % 3 else other.id, "x", "text", text, None, None, float(i))
        if m.room == room.id:
            rows.append(m)
    for m in rows[::9]:
        s.delete_message(room.id, m.id)
    live = [m for m in rows if m.id not in {d.id for d in rows[::9]}]
    yield s, room.id, live
    s.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=5), min_size=1, max_size=3))
def test_search_matches_brute_force(oracle_store, pieces):
    store, room, live = oracle_store
    query = " ".join(pieces)
    terms = list(dict.fromkeys(query.split()))
    matching = [m for m in reversed(live) if all(t.lower() in m.text.lower() for t in terms)]
    expected = matching[:50] if terms else []  # a blank query finds nothing
    assert store.search(room, query, 50) == expected


# ----------------------------------------------------------------------------- durability


def test_everything_survives_a_reopen(path):
    s = SqliteChatStore(path)
    lobby = s.create_room("lobby", None, False, 1.0)
    club = s.create_room("클럽", uid(s, "kim"), True, 2.0)
    s.add_member(club.id, uid(s, "kim"))
    s.add_invite(club.id, uid(s, "lee"))
    ms = [s.append(lobby.id, "kim", "text", f"갤러리 message {i}", None, f"k{i}", float(i)) for i in range(40)]
    q = s.append(club.id, "kim", "question", "비밀 question?", None, None, 50.0)
    s.mark_answered(club.id, q.id)
    s.delete_message(lobby.id, ms[5].id)
    s.close()
    s.close()  # twice is fine
    with pytest.raises(StoreError):
        s.history(lobby.id)

    s = SqliteChatStore(path)
    try:
        assert s.get_room(lobby.id) == lobby and s.room_by_name("클럽") == club
        assert s.members(club.id) == ["kim"] and s.is_invited(club.id, uid(s, "lee"))
        assert s.history(lobby.id, limit=100) == [m for m in ms if m.id != ms[5].id]
        assert s.get_message(club.id, q.id).answered is True
        assert s.get_message(lobby.id, ms[5].id).deleted is True
        assert len(s.search(lobby.id, "갤러리", 100)) == 39
        assert s.search(club.id, "비밀", 10)[0].id == q.id
        assert s.append(lobby.id, "kim", "text", "again", None, "k7", 99.0) == ms[7]  # keys kept
        newer = s.append(lobby.id, "kim", "text", "new", None, None, 100.0)
        assert newer.id > q.id
        s.check_index()
    finally:
        s.close()


def test_ids_never_reused_after_deleting_the_newest(path):
    s = SqliteChatStore(path)
    a = s.create_room("a", uid(s, "x"), False, 0.0)
    b = s.create_room("b", uid(s, "x"), False, 0.0)
    s.append(a.id, "x", "text", "one", None, None, 0.0)
    top = s.append(b.id, "x", "text", "two", None, None, 0.0)
    s.delete_room(b.id)
    s.close()
    s = SqliteChatStore(path)
    assert s.append(a.id, "x", "text", "three", None, None, 0.0).id > top.id
    assert s.create_room("c", uid(s, "x"), False, 0.0).id > b.id
    s.close()


def test_acknowledged_messages_survive_a_killed_process(path):
    """A child appends and reports each id, then is killed with SIGKILL (no close, no
    checkpoint): every reported message is there afterwards."""
    s = SqliteChatStore(path)
    room = s.create_room("lobby", None, False, 0.0).id
    s.close()
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from worldserver.chat.sqlite_store import SqliteChatStore
        s = SqliteChatStore({str(path)!r})
        for i in range(200):
            m = s.append({room}, "kid", "text", f"갤러리 ack {{i}}", None, f"c{{i}}", float(i))
            sys.stdout.write(f"{{m.id}}\\n")
            sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    acked = [int(line) for line in proc.stdout.split()]
    assert len(acked) == 200
    assert os.path.exists(str(path) + "-wal")  # the WAL was not checkpointed away
    s = SqliteChatStore(path)
    try:
        assert [m.id for m in s.since(room, 0, 500)] == acked
        assert len(s.search(room, "ack 19", 100)) == 12  # 19, 119, 190..199
        s.check_index()
    finally:
        s.close()


def test_newer_schema_refused(path):
    SqliteChatStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {S.SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteChatStore(path)


def test_foreign_database_refused(tmp_path):
    other = tmp_path / "other.sqlite3"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE photos (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a chat database"):
        SqliteChatStore(other)


def test_index_stays_in_sync(store):
    room = store.create_room("sync", uid(store, "x"), False, 0.0)
    ms = [store.append(room.id, "x", "text", f"sync {i} 동기화", None, None, float(i)) for i in range(50)]
    for m in ms[::4]:
        store.delete_message(room.id, m.id)
    for m in ms[1::5]:
        store.mark_answered(room.id, m.id)
    store._db.execute("UPDATE messages SET text = 'edited 편집' WHERE id = ?", (ms[3].id,))
    store.check_index()
    assert texts(store.search(room.id, "편집", 10)) == ["edited 편집"]
    expected = [f"sync {i} 동기화" for i in reversed(range(50)) if "3" in str(i) and i % 4 and i != 3]
    assert texts(store.search(room.id, "sync 3 동기화", 10)) == expected[:10]
    store.delete_room(room.id)
    store.check_index()
    assert store._db.execute("SELECT count(*) FROM messages_fts").fetchone()[0] == 0


def test_bulk_insert(store):
    room = store.create_room("bulk", uid(store, "x"), False, 0.0)
    n = store.bulk_insert((room.id, float(i), "x", "text", f"bulk {i} 대량", None) for i in range(1000))
    assert n == 1000
    assert len(store.since(room.id, 0, 500)) == 500
    assert texts(store.search(room.id, "bulk 999", 5)) == ["bulk 999 대량"]
    store.check_index()
