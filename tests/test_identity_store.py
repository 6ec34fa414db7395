"""Identities in the SQLite chat store (real files in tmp_path): creating and finding them,
claiming a migrated one, and the upgrade of a database made by schema version 1 (users kept
by name) to identity ids -- rooms, members, invitations and messages all kept.

Must not: mock SQLite or sleep.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from worldserver.chat import SqliteChatStore, StoreConflict
from worldserver.chat import sqlite_store as S
from worldserver.identity import hash_secret, new_secret, user_key

# The schema of version 1, as worldserver/chat/sqlite_store.py created it before identities
# (with ROOM_SHIFT = 40 written out): a test database "made by the old schema".
SCHEMA_V1 = """
CREATE TABLE rooms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    private INTEGER NOT NULL CHECK (private IN (0, 1)),
    created REAL NOT NULL
);
CREATE TABLE members (
    room INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user TEXT NOT NULL,
    PRIMARY KEY (room, user)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user, room);
CREATE TABLE invites (
    room INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user TEXT NOT NULL,
    PRIMARY KEY (room, user)
) WITHOUT ROWID;
CREATE INDEX invites_by_user ON invites (user, room);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    ts REAL NOT NULL,
    author TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    image TEXT,
    answered INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    client_id TEXT
);
CREATE INDEX messages_by_room ON messages (room, id);
CREATE UNIQUE INDEX messages_by_client_id ON messages (room, author, client_id)
    WHERE client_id IS NOT NULL;
CREATE VIEW messages_fts_source AS
    SELECT (room << 40) | id AS key, text FROM messages WHERE deleted = 0;
CREATE VIRTUAL TABLE messages_fts USING fts5 (
    text,
    content = 'messages_fts_source',
    content_rowid = 'key',
    columnsize = 0,
    tokenize = 'trigram case_sensitive 0'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.deleted = 0 BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES ((new.room << 40) | new.id, new.text);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.deleted = 0 BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text)
        VALUES ('delete', (old.room << 40) | old.id, old.text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF room, text, deleted ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text)
        SELECT 'delete', (old.room << 40) | old.id, old.text WHERE old.deleted = 0;
    INSERT INTO messages_fts (rowid, text)
        SELECT (new.room << 40) | new.id, new.text WHERE new.deleted = 0;
END;
"""


def ident(store: SqliteChatStore, name: str, now: float = 0.0):
    return store.create_identity(name, user_key(name), hash_secret(new_secret()), now)


@pytest.fixture
def store(tmp_path):
    s = SqliteChatStore(tmp_path / "chat.sqlite3")
    yield s
    s.close()


def test_identities_are_unique_by_key_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    s = SqliteChatStore(path)
    secret = new_secret()
    alice = s.create_identity("Alice", user_key("Alice"), hash_secret(secret), 12.5)
    assert alice.id >= 1 and alice.name == "Alice" and alice.secret_hash == hash_secret(secret)
    for clash in ("alice", "ALICE", "Ａｌｉｃｅ"):
        with pytest.raises(StoreConflict):
            s.create_identity(clash, user_key(clash), hash_secret(new_secret()), 13.0)
    bob = ident(s, "밥")
    assert bob.id > alice.id
    assert s.count_identities() == 2
    s.close()
    s = SqliteChatStore(path)
    try:
        assert s.identity_by_key(user_key("aLiCe")) == alice
        assert s.get_identity(bob.id) == bob
        assert s.identity_by_key(user_key("carol")) is None and s.get_identity(999) is None
        assert s.count_identities() == 2
    finally:
        s.close()


def test_rooms_members_and_invites_go_by_identity(store) -> None:
    kim, lee = ident(store, "kim"), ident(store, "lee")
    lobby = store.create_room("lobby", None, False, 0.0)
    club = store.create_room("club", kim.id, True, 0.0)
    assert lobby.owner == "" and lobby.owner_id is None
    assert club.owner == "kim" and club.owner_id == kim.id and store.get_room(club.id) == club
    store.add_member(club.id, kim.id)
    store.add_invite(club.id, lee.id)
    assert store.members(club.id) == ["kim"]
    assert store.list_rooms(kim.id) == [lobby, club] and store.list_rooms(lee.id) == [lobby, club]
    assert store.list_rooms(kim.id + lee.id + 1) == [lobby]


def test_claim_only_an_identity_that_holds_nothing_private(store) -> None:
    lobby = store.create_room("lobby", None, False, 0.0)
    db = store._db
    # Identities without a secret are only made by the upgrade; make three here the same way.
    for name in ("plain", "owner", "member", "invited"):
        db.execute("INSERT INTO identities (name, name_key, secret_hash, created) VALUES (?, ?, NULL, 0)",
                   (name, user_key(name)))
    plain, owner, member, invited = (store.identity_by_key(n) for n in ("plain", "owner", "member", "invited"))
    assert plain.secret_hash is None
    store.add_member(lobby.id, plain.id)  # the public room holds nothing to take
    opened = store.create_room("open", owner.id, False, 0.0)  # owning even a public room counts
    club = store.create_room("club", None, True, 0.0)
    store.add_member(club.id, member.id)
    store.add_invite(club.id, invited.id)
    first = hash_secret(new_secret())
    assert store.claim_identity(plain.id, first) is True
    assert store.identity_by_key("plain").secret_hash == first
    assert store.claim_identity(plain.id, hash_secret(new_secret())) is False  # claimed once only
    for held in (owner, member, invited):
        assert store.claim_identity(held.id, hash_secret(new_secret())) is False
        assert store.get_identity(held.id).secret_hash is None
    assert opened.owner_id == owner.id
    # an identity made with a secret is never claimable
    fresh = ident(store, "fresh")
    assert store.claim_identity(fresh.id, hash_secret(new_secret())) is False


def make_v1_database(path: Path) -> dict:
    """A database as version 1 wrote it: users by name, the server's room owned by 'server',
    a deleted room whose id must not come back, names differing only in case."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1)
    db.execute("PRAGMA user_version = 1")
    rooms = [  # (name, owner, private)
        ("lobby", "server", 0),
        ("Kim's club", "kim", 1),
        ("open talk", "Lee", 0),
        ("gone", "kim", 1),
    ]
    for name, owner, private in rooms:
        db.execute("INSERT INTO rooms (name, name_key, owner, private, created) VALUES (?, ?, ?, ?, 1.0)",
                   (name, name.casefold(), owner, private))
    db.execute("DELETE FROM rooms WHERE name = 'gone'")
    members = [(1, "kim"), (1, "Lee"), (1, "guestly"), (1, "LEE"), (2, "kim"), (2, "민수"), (3, "Lee")]
    db.executemany("INSERT INTO members (room, user) VALUES (?, ?)", members)
    db.executemany("INSERT INTO invites (room, user) VALUES (?, ?)", [(2, "anna"), (2, "민수")])
    for i in range(30):
        room = 2 if i % 3 == 0 else 1
        db.execute("INSERT INTO messages (room, ts, author, kind, text, client_id) VALUES (?, ?, ?, 'text', ?, ?)",
                   (room, float(i), "kim", f"비밀 secret message {i}", f"c{i}"))
    db.execute("UPDATE messages SET deleted = 1 WHERE id = 4")
    db.commit()
    db.close()
    return {"lobby": 1, "club": 2, "open": 3, "gone": 4}


def test_upgrade_from_version_1_keeps_everything_by_identity(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    ids = make_v1_database(path)
    s = SqliteChatStore(path)
    try:
        assert s._version() == S.SCHEMA_VERSION
        assert s._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        kim = s.identity_by_key(user_key("kim"))
        lee = s.identity_by_key(user_key("lee"))
        minsu = s.identity_by_key(user_key("민수"))
        anna = s.identity_by_key(user_key("anna"))
        guestly = s.identity_by_key(user_key("guestly"))
        assert all(i is not None and i.secret_hash is None for i in (kim, lee, minsu, anna, guestly))
        assert lee.name == "Lee"  # "Lee" and "LEE" are one user; the first spelling is kept
        assert s.identity_by_key(user_key("server")) is None  # the server is no identity
        assert s.count_identities() == 5

        lobby, club, opened = (s.get_room(ids[k]) for k in ("lobby", "club", "open"))
        assert lobby.owner_id is None and lobby.owner == ""
        assert club.owner_id == kim.id and club.owner == "kim" and club.private
        assert opened.owner_id == lee.id
        assert s.members(lobby.id) == sorted(["kim", "Lee", "guestly"])
        assert s.members(club.id) == sorted(["kim", "민수"])
        assert s.is_member(club.id, kim.id) and not s.is_member(club.id, lee.id)
        assert s.is_invited(club.id, anna.id) and s.is_invited(club.id, minsu.id)
        assert s.list_rooms(anna.id) == [lobby, club, opened]
        assert s.list_rooms(lee.id) == [lobby, opened]

        # messages, their search index and their idempotency keys are untouched
        history = s.history(club.id, limit=100)
        assert [m.text for m in history] == [f"비밀 secret message {i}" for i in range(0, 30, 3) if i + 1 != 4]
        assert len(s.search(lobby.id, "secret", 100)) == 20
        again = s.append(club.id, "kim", "text", "again", None, "c3", 99.0)  # a repeated key
        assert again.id == 4 and again.deleted and again.text == "비밀 secret message 3"
        s.check_index()
        # deleting a room still cascades (foreign keys are back on and point at the new tables)
        assert s.delete_room(opened.id)
        assert not s.is_member(opened.id, lee.id)
        # room ids keep growing past the deleted room's
        assert s.create_room("new", kim.id, False, 2.0).id > ids["gone"]

        # who may claim a migrated name: only one that holds nothing private
        assert s.claim_identity(guestly.id, hash_secret(new_secret())) is True
        for held in (kim, minsu, anna):  # owner / private member / invited
            assert s.claim_identity(held.id, hash_secret(new_secret())) is False
    finally:
        s.close()
    # opening the upgraded file again changes nothing
    s = SqliteChatStore(path)
    try:
        assert s._version() == S.SCHEMA_VERSION and s.count_identities() == 5
        assert s.members(ids["club"]) == sorted(["kim", "민수"])
    finally:
        s.close()


def test_upgrade_is_all_or_nothing(tmp_path: Path) -> None:
    """An upgrade that fails half-way (here: a member row of a room that does not exist, which
    the new foreign keys refuse) leaves the version 1 file exactly as it was."""
    path = tmp_path / "broken.sqlite3"
    make_v1_database(path)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO members (room, user) VALUES (777, 'ghost')")  # foreign keys off here
    db.commit()
    before = db.execute("SELECT count(*) FROM members").fetchone()[0]
    db.close()
    with pytest.raises(S.StoreError, match="dangling"):
        SqliteChatStore(path)
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM members").fetchone()[0] == before
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        assert "identities" not in tables and "rooms_v2" not in tables
    finally:
        db.close()
