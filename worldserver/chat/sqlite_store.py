"""The embedded chat store: :class:`SqliteChatStore`, the :class:`~.store.ChatStore` on SQLite.

Job: keep identities, rooms, members, invitations and messages in one SQLite file (WAL
journal) and answer history, catch-up (``since``) and search quickly at a million messages and
more.

Durability: every change is one committed transaction when the method returns. The journal
is WAL with ``synchronous=NORMAL``: a committed transaction survives the process being killed
(even ``kill -9``) because it is in the WAL file in the OS's page cache; it may be lost if the
*machine* loses power or crashes before the OS writes it out. For that, ``synchronous=FULL``
(``SqliteChatStore(path, synchronous="FULL")``) is needed, at the cost of an fsync per message.

Schema (version :data:`SCHEMA_VERSION` in ``PRAGMA user_version``; a newer file is refused):
``identities`` (id, name, the unique ``name_key``, the secret's SHA-256), ``rooms`` (``owner``
an identity id, NULL for the server's rooms), ``members`` and ``invites`` (room, identity id),
``messages`` (``id INTEGER PRIMARY KEY AUTOINCREMENT``, so
ids are global, strictly increasing and never reused) with an index on ``(room, id)`` for
history and since, a partial unique index on ``(room, author, client_id)`` for idempotent
sends, and ``messages_fts``, an FTS5 table with ``tokenize='trigram case_sensitive 0'``
(every substring of 3+ characters is findable, case-insensitively, in any script: "갤러리"
finds "갤러리에서"). The FTS table is *external content* over a view of the live messages and
is kept in sync by triggers on insert, update (of text, room or the deleted flag) and delete;
soft-deleted messages are removed from the index, so search never sees them.

The FTS rowid of a message is ``room << 40 | id`` (see :data:`ROOM_SHIFT`): one room's
messages form one contiguous rowid range, so a search asks FTS5 for matches inside that range,
newest first, and stops after ``limit`` -- the work does not grow with the other rooms'
messages. This allows room ids below 2**23 and message ids below 2**40.

Search: the query is split on whitespace into terms; every term must occur as a substring.
Terms of 3+ characters go to FTS5, each as a quoted string (a ``"`` is doubled), so user input
is never FTS5 syntax (``OR``, ``NEAR(``, ``*``, ``-``, ``:`` are just text). Terms of 1-2
characters (common in Korean: "사진") cannot use a trigram index; they are checked with
``LIKE`` (``%``, ``_`` and ``\\`` escaped), which needs a row read per message, so the
work is bounded: a query made only of such short terms scans the room's newest
:data:`SHORT_QUERY_SCAN` messages (50,000), and a query mixing short and long terms checks
the short ones on the newest :data:`MIXED_QUERY_SCAN` (20,000) messages that match the long
ones; older messages are not found by such queries. ``LIKE`` folds case for ASCII letters
only, FTS5 for all of Unicode.

Upgrades: a version 1 file (users kept by name: ``rooms.owner``, ``members.user`` and
``invites.user`` were nicknames) is migrated in one transaction when opened: every name found
there becomes an identity (names equal under ``worldserver.identity.user_key`` become one) with
no secret, the rows are rewritten to its id (the owner ``server`` becomes NULL), and room ids
keep growing from where they were. See ``claim_identity`` for who may then use those names.

Threads: the connection is opened with ``check_same_thread=False`` so the service may call
from a worker thread, but it must be used by one thread at a time (the service serializes).

Must not: enforce permissions or limits (the service does), interpret message text (it is
stored and returned as given), or let a caller's string reach SQL or FTS5 syntax other than as
a bound parameter or a quoted FTS5 string.
"""

from __future__ import annotations

import os
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from worldserver.chat.store import (
    KINDS,
    Identity,
    IdentityNotFound,
    Message,
    Room,
    RoomNotFound,
    StoreConflict,
    StoreError,
    name_key,
)
from worldserver.identity import user_key

__all__ = [
    "MAX_ROOM_ID",
    "ROOM_SHIFT",
    "SCHEMA_VERSION",
    "MIXED_QUERY_SCAN",
    "SHORT_QUERY_SCAN",
    "SqliteChatStore",
    "fts_query",
    "like_pattern",
]

SCHEMA_VERSION = 2
V1_SERVER_OWNER = "server"  # how a version 1 file named the owner of the server's rooms
ROOM_SHIFT = 40  # FTS rowid = room << ROOM_SHIFT | message id
MAX_MESSAGE_ID = (1 << ROOM_SHIFT) - 1
MAX_ROOM_ID = (1 << (63 - ROOM_SHIFT)) - 1
SHORT_QUERY_SCAN = 50_000  # newest messages of a room scanned for a query of 1-2 char terms
MIXED_QUERY_SCAN = 20_000  # newest FTS matches checked for the 1-2 char terms of a mixed query
MAX_QUERY_TERMS = 16
TRIGRAM = 3

_IDENTITIES = """
CREATE TABLE identities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    secret_hash BLOB,
    created REAL NOT NULL
);
"""


def _rooms_table(table: str) -> str:
    return f"""
CREATE TABLE {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    owner INTEGER REFERENCES identities (id),
    private INTEGER NOT NULL CHECK (private IN (0, 1)),
    created REAL NOT NULL
);
"""


_ROOM_INDEXES = "CREATE INDEX rooms_by_owner ON rooms (owner) WHERE owner IS NOT NULL;\n"


def _pair_table(table: str) -> str:
    """The table of members or invitations (created as ``table``)."""
    return f"""
CREATE TABLE {table} (
    room INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user INTEGER NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    PRIMARY KEY (room, user)
) WITHOUT ROWID;
"""


def _pair_index(table: str) -> str:
    return f"CREATE INDEX {table}_by_user ON {table} (user, room);\n"


_SCHEMA = _IDENTITIES + _rooms_table("rooms") + _ROOM_INDEXES + "".join(
    _pair_table(t) + _pair_index(t) for t in ("members", "invites")) + f"""
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
    SELECT (room << {ROOM_SHIFT}) | id AS key, text FROM messages WHERE deleted = 0;
CREATE VIRTUAL TABLE messages_fts USING fts5 (
    text,
    content = 'messages_fts_source',
    content_rowid = 'key',
    columnsize = 0,
    tokenize = 'trigram case_sensitive 0'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.deleted = 0 BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES ((new.room << {ROOM_SHIFT}) | new.id, new.text);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.deleted = 0 BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text)
        VALUES ('delete', (old.room << {ROOM_SHIFT}) | old.id, old.text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF room, text, deleted ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text)
        SELECT 'delete', (old.room << {ROOM_SHIFT}) | old.id, old.text WHERE old.deleted = 0;
    INSERT INTO messages_fts (rowid, text)
        SELECT (new.room << {ROOM_SHIFT}) | new.id, new.text WHERE new.deleted = 0;
END;
"""

_ROOM_COLUMNS = "r.id, r.name, i.name, r.private, r.created, r.owner"
_ROOMS = "rooms AS r LEFT JOIN identities AS i ON i.id = r.owner"
_IDENTITY_COLUMNS = "id, name, secret_hash, created"
_MESSAGE_COLUMNS = "id, room, ts, author, kind, text, image, answered, deleted, client_id"
_M_MESSAGE_COLUMNS = ", ".join(f"m.{c.strip()}" for c in _MESSAGE_COLUMNS.split(","))


def _room(row: tuple) -> Room:
    return Room(id=row[0], name=row[1], owner=row[2] or "", private=bool(row[3]), created=row[4],
                owner_id=row[5])


def _identity(row: tuple) -> Identity:
    secret = None if row[2] is None else bytes(row[2])
    return Identity(id=row[0], name=row[1], secret_hash=secret, created=row[3])


def _message(row: tuple) -> Message:
    return Message(
        id=row[0], room=row[1], ts=row[2], author=row[3], kind=row[4], text=row[5],
        image=row[6], answered=bool(row[7]), deleted=bool(row[8]), client_id=row[9],
    )


def fts_query(terms: Iterable[str]) -> str:
    """An FTS5 MATCH expression requiring every term as a literal substring: each term
    becomes a quoted string (``"`` doubled), joined by spaces (implicit AND)."""
    return " ".join('"' + term.replace('"', '""') + '"' for term in terms)


def like_pattern(term: str) -> str:
    """``%term%`` for ``LIKE ... ESCAPE '\\'`` with ``\\``, ``%`` and ``_`` escaped."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _has_ascii_letter(term: str) -> bool:
    return any("a" <= c <= "z" or "A" <= c <= "Z" for c in term)


def _short_term_sql(term: str) -> str:
    """The condition for a 1-2 character term: LIKE (ASCII case folding) when the term has an
    ASCII letter, else instr(), which is exact like LIKE is for such terms, and faster."""
    if _has_ascii_letter(term):
        return " AND m.text LIKE ? ESCAPE '\\'"
    return " AND instr(m.text, ?) > 0"


def _short_term_param(term: str) -> str:
    return like_pattern(term) if _has_ascii_letter(term) else term


def _terms(query: str) -> list[str]:
    """Distinct whitespace-separated terms of the NFC query, in order, at most 16."""
    seen: dict[str, None] = {}
    for term in unicodedata.normalize("NFC", query).split():
        seen.setdefault(term, None)
    return list(seen)[:MAX_QUERY_TERMS]


class SqliteChatStore:
    """:class:`~worldserver.chat.store.ChatStore` on one SQLite file (see the module doc).

    ``path`` is a file name (its directory must exist) or ``":memory:"`` (tests only: no WAL).
    ``synchronous`` is ``"NORMAL"`` (survives a killed process) or ``"FULL"`` (survives power
    loss). ``cache_mib`` and ``mmap_mib`` size SQLite's page cache and memory map (0: no map);
    the defaults are those of the ``chat.db_cache_mib`` and ``chat.db_mmap_mib`` settings. Both
    fill as the database grows and count in the process's RSS (the cache as heap, the map as
    mapped file pages); without a map, reads are served from the OS page cache instead.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        cache_mib: int = 4,
        mmap_mib: int = 0,
        busy_timeout: float = 5.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = os.fspath(path)
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        self._closed = False
        try:
            self._configure(synchronous, cache_mib, mmap_mib)
            self._migrate()
        except BaseException:
            self._db.close()
            self._closed = True
            raise

    # ------------------------------------------------------------------ setup

    def _configure(self, synchronous: str, cache_mib: int, mmap_mib: int) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal" and self.path != ":memory:":
            raise StoreError(f"{self.path}: SQLite refused WAL journal mode (got {mode})")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(f"PRAGMA cache_size = {-1024 * int(cache_mib)}")
        db.execute(f"PRAGMA mmap_size = {1024 * 1024 * int(mmap_mib)}")
        db.execute("PRAGMA temp_store = MEMORY")

    def _version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        version = self._version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: chat database schema {version} is newer than this "
                f"server's ({SCHEMA_VERSION})"
            )
        if version == 1:
            self._upgrade_from_v1()
            return
        with self._transaction():
            version = self._version()
            if version == SCHEMA_VERSION:
                return
            if version != 0:  # another process upgraded or changed it meanwhile: look again
                raise StoreError(f"{self.path}: chat database schema {version} changed while opening")
            tables = self._db.execute(
                "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'"
            ).fetchone()[0]
            if tables:
                raise StoreError(f"{self.path}: not a chat database (tables without a schema version)")
            try:
                for statement in _split_sql(_SCHEMA):
                    self._db.execute(statement)
            except sqlite3.OperationalError as exc:
                raise StoreError(f"SQLite lacks what the chat store needs (FTS5 trigram): {exc}") from exc
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _upgrade_from_v1(self) -> None:
        """Version 1 (users kept by name) to 2 (by identity id), in one transaction (see the
        module docstring). Foreign keys are off meanwhile, so that replacing the rooms table
        does not cascade into the messages; they are checked before the commit."""
        db = self._db
        db.execute("PRAGMA foreign_keys = OFF")
        try:
            if db.execute("PRAGMA foreign_keys").fetchone()[0] != 0:
                raise StoreError(f"{self.path}: cannot turn foreign keys off to upgrade")
            with self._transaction():
                if self._version() != 1:  # another process upgraded it meanwhile
                    return
                self._rewrite_v1_users(db)
                problems = db.execute("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise StoreError(f"{self.path}: upgrade left dangling references: {problems[:5]}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            db.execute("PRAGMA foreign_keys = ON")

    def _rewrite_v1_users(self, db: sqlite3.Connection) -> None:
        """Make an identity of every name of the v1 tables and rewrite them to identity ids."""
        names = [r[0] for r in db.execute(
            "SELECT owner FROM rooms WHERE owner != ? ORDER BY id", (V1_SERVER_OWNER,))]
        names += [r[0] for r in db.execute("SELECT user FROM members ORDER BY room, user")]
        names += [r[0] for r in db.execute("SELECT user FROM invites ORDER BY room, user")]
        for statement in _split_sql(_IDENTITIES):
            db.execute(statement)
        now = time.time()
        # The first spelling of a name wins; later ones equal under user_key are the same user.
        db.executemany(
            "INSERT OR IGNORE INTO identities (name, name_key, secret_hash, created)"
            " VALUES (?, ?, NULL, ?)",
            ((name, user_key(name), now) for name in dict.fromkeys(names)),
        )
        db.execute("CREATE TEMP TABLE name_map (name TEXT PRIMARY KEY, id INTEGER NOT NULL)")
        db.executemany(
            "INSERT INTO temp.name_map (name, id)"
            " SELECT ?, id FROM identities WHERE name_key = ?",
            ((name, user_key(name)) for name in dict.fromkeys(names)),
        )
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'rooms'").fetchone()
        room_seq = 0 if row is None else row[0]
        for statement in _split_sql(_rooms_table("rooms_v2")):
            db.execute(statement)
        db.execute(
            "INSERT INTO rooms_v2 (id, name, name_key, owner, private, created)"
            " SELECT r.id, r.name, r.name_key, CASE WHEN r.owner = ? THEN NULL ELSE m.id END,"
            " r.private, r.created FROM rooms AS r LEFT JOIN temp.name_map AS m ON m.name = r.owner",
            (V1_SERVER_OWNER,),
        )
        db.execute("DROP TABLE rooms")
        db.execute("ALTER TABLE rooms_v2 RENAME TO rooms")
        # Room ids are never reused: carry on from the old table's sequence.
        db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'rooms'", (room_seq,))
        for statement in _split_sql(_ROOM_INDEXES):
            db.execute(statement)
        for table in ("members", "invites"):
            for statement in _split_sql(_pair_table(f"{table}_v2")):
                db.execute(statement)
            db.execute(
                f"INSERT OR IGNORE INTO {table}_v2 (room, user)"
                f" SELECT t.room, m.id FROM {table} AS t JOIN temp.name_map AS m ON m.name = t.user"
            )
            db.execute(f"DROP TABLE {table}")
            db.execute(f"ALTER TABLE {table}_v2 RENAME TO {table}")
            for statement in _split_sql(_pair_index(table)):
                db.execute(statement)
        db.execute("DROP TABLE temp.name_map")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the body raises."""
        self._check_open()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the chat store is closed")

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        self._check_open()
        return self._db.execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        self._check_open()
        return self._db.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ rooms

    # ------------------------------------------------------------------ identities

    def create_identity(self, name: str, key: str, secret_hash: bytes, now: float) -> Identity:
        with self._transaction() as db:
            try:
                cur = db.execute(
                    "INSERT INTO identities (name, name_key, secret_hash, created) VALUES (?, ?, ?, ?)",
                    (name, key, bytes(secret_hash), float(now)),
                )
            except sqlite3.IntegrityError:
                raise StoreConflict(f"the name {name!r} is taken") from None
        return Identity(id=cur.lastrowid, name=name, secret_hash=bytes(secret_hash), created=float(now))

    def identity_by_key(self, key: str) -> Identity | None:
        row = self._one(f"SELECT {_IDENTITY_COLUMNS} FROM identities WHERE name_key = ?", (key,))
        return None if row is None else _identity(row)

    def get_identity(self, identity_id: int) -> Identity | None:
        row = self._one(f"SELECT {_IDENTITY_COLUMNS} FROM identities WHERE id = ?", (identity_id,))
        return None if row is None else _identity(row)

    def claim_identity(self, identity_id: int, secret_hash: bytes) -> bool:
        with self._transaction() as db:
            return db.execute(
                "UPDATE identities SET secret_hash = ? WHERE id = ? AND secret_hash IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM rooms WHERE owner = ?)"
                " AND NOT EXISTS (SELECT 1 FROM invites WHERE user = ?)"
                " AND NOT EXISTS (SELECT 1 FROM members AS m JOIN rooms AS r ON r.id = m.room"
                "                 WHERE m.user = ? AND r.private = 1)",
                (bytes(secret_hash), identity_id, identity_id, identity_id, identity_id),
            ).rowcount > 0

    def count_identities(self) -> int:
        return self._one("SELECT count(*) FROM identities")[0]

    # ------------------------------------------------------------------ rooms

    def create_room(self, name: str, owner: int | None, private: bool, now: float) -> Room:
        with self._transaction() as db:
            try:
                cur = db.execute(
                    "INSERT INTO rooms (name, name_key, owner, private, created) VALUES (?, ?, ?, ?, ?)",
                    (name, name_key(name), owner, int(bool(private)), float(now)),
                )
            except sqlite3.IntegrityError as exc:
                if _is_foreign_key_error(exc):
                    raise IdentityNotFound(owner) from None
                raise StoreConflict(f"a room named {name!r} exists") from None
            room_id = cur.lastrowid
            if room_id > MAX_ROOM_ID:
                raise StoreError("room ids are exhausted")
            row = None if owner is None else db.execute(
                "SELECT name FROM identities WHERE id = ?", (owner,)).fetchone()
        return Room(id=room_id, name=name, owner="" if row is None else row[0], private=bool(private),
                    created=float(now), owner_id=owner)

    def get_room(self, room_id: int) -> Room | None:
        row = self._one(f"SELECT {_ROOM_COLUMNS} FROM {_ROOMS} WHERE r.id = ?", (room_id,))
        return None if row is None else _room(row)

    def room_by_name(self, name: str) -> Room | None:
        row = self._one(f"SELECT {_ROOM_COLUMNS} FROM {_ROOMS} WHERE r.name_key = ?", (name_key(name),))
        return None if row is None else _room(row)

    def list_rooms(self, user: int) -> list[Room]:
        rows = self._all(
            f"SELECT {_ROOM_COLUMNS} FROM {_ROOMS} WHERE r.private = 0"
            " OR r.id IN (SELECT room FROM members WHERE user = ?)"
            " OR r.id IN (SELECT room FROM invites WHERE user = ?) ORDER BY r.id",
            (user, user),
        )
        return [_room(r) for r in rows]

    def delete_room(self, room_id: int) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM rooms WHERE id = ?", (room_id,)).rowcount > 0

    # ------------------------------------------------------ members, invitations

    def _add_pair(self, table: str, room_id: int, user: int) -> bool:
        with self._transaction() as db:
            try:
                cur = db.execute(f"INSERT OR IGNORE INTO {table} (room, user) VALUES (?, ?)", (room_id, user))
            except sqlite3.IntegrityError as exc:
                if not _is_foreign_key_error(exc):
                    raise
                if db.execute("SELECT 1 FROM rooms WHERE id = ?", (room_id,)).fetchone() is None:
                    raise RoomNotFound(room_id) from None
                raise IdentityNotFound(user) from None
            return cur.rowcount > 0

    def add_member(self, room_id: int, user: int) -> bool:
        return self._add_pair("members", room_id, user)

    def remove_member(self, room_id: int, user: int) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM members WHERE room = ? AND user = ?", (room_id, user)).rowcount > 0

    def members(self, room_id: int) -> list[str]:
        return [r[0] for r in self._all(
            "SELECT i.name FROM members AS m JOIN identities AS i ON i.id = m.user"
            " WHERE m.room = ? ORDER BY i.name", (room_id,))]

    def is_member(self, room_id: int, user: int) -> bool:
        return self._one("SELECT 1 FROM members WHERE room = ? AND user = ?", (room_id, user)) is not None

    def add_invite(self, room_id: int, user: int) -> bool:
        return self._add_pair("invites", room_id, user)

    def is_invited(self, room_id: int, user: int) -> bool:
        return self._one("SELECT 1 FROM invites WHERE room = ? AND user = ?", (room_id, user)) is not None

    # ------------------------------------------------------------------ messages

    def _by_client_id(self, room_id: int, author: str, client_id: str) -> Message | None:
        row = self._one(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room = ? AND author = ? AND client_id = ?",
            (room_id, author, client_id),
        )
        return None if row is None else _message(row)

    def append(
        self,
        room_id: int,
        author: str,
        kind: str,
        text: str,
        image: str | None,
        client_id: str | None,
        now: float,
    ) -> Message:
        if kind not in KINDS:
            raise ValueError(f"unknown message kind {kind!r}")
        if client_id is not None:
            existing = self._by_client_id(room_id, author, client_id)
            if existing is not None:
                return existing
        self._check_open()
        try:
            # autocommit: the INSERT (and its FTS trigger) is one transaction, committed here
            cur = self._db.execute(
                "INSERT INTO messages (room, ts, author, kind, text, image, client_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (room_id, float(now), author, kind, text, image, client_id),
            )
        except sqlite3.IntegrityError as exc:
            if client_id is not None:  # another connection stored the same key first
                existing = self._by_client_id(room_id, author, client_id)
                if existing is not None:
                    return existing
            if not _is_foreign_key_error(exc):
                raise
            raise RoomNotFound(room_id) from None
        message_id = cur.lastrowid
        return Message(
            id=message_id, room=room_id, ts=float(now), author=author, kind=kind, text=text,
            image=image, answered=False, deleted=False, client_id=client_id,
        )

    def bulk_insert(self, rows: Iterable[tuple[int, float, str, str, str, str | None]]) -> int:
        """Not part of ChatStore (for imports and benchmarks): insert many messages
        ``(room, ts, author, kind, text, image)`` in ONE transaction; returns how many."""
        with self._transaction() as db:
            cur = db.executemany(
                "INSERT INTO messages (room, ts, author, kind, text, image) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            return cur.rowcount

    def history(self, room_id: int, before: int | None = None, limit: int = 50) -> list[Message]:
        if limit <= 0:
            return []
        if before is None:
            before = MAX_MESSAGE_ID + 1
        rows = self._all(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room = ? AND id < ? AND deleted = 0"
            " ORDER BY id DESC LIMIT ?",
            (room_id, before, limit),
        )
        rows.reverse()
        return [_message(r) for r in rows]

    def since(self, room_id: int, after: int, limit: int = 100) -> list[Message]:
        if limit <= 0:
            return []
        rows = self._all(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room = ? AND id > ? AND deleted = 0"
            " ORDER BY id ASC LIMIT ?",
            (room_id, after, limit),
        )
        return [_message(r) for r in rows]

    def search(self, room_id: int, query: str, limit: int = 20) -> list[Message]:
        terms = _terms(query)
        if not terms or limit <= 0 or not 0 < room_id <= MAX_ROOM_ID:
            return []
        long_terms = [t for t in terms if len(t) >= TRIGRAM]
        short_terms = [t for t in terms if len(t) < TRIGRAM]
        like_sql = "".join(_short_term_sql(t) for t in short_terms)
        like_params = tuple(_short_term_param(t) for t in short_terms)
        if long_terms:
            low, high = room_id << ROOM_SHIFT, room_id << ROOM_SHIFT | MAX_MESSAGE_ID
            match = fts_query(long_terms)
            if short_terms:
                # LIKE costs a row read per candidate: look at the newest MIXED_QUERY_SCAN only.
                bound = self._one(
                    "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?"
                    " AND rowid BETWEEN ? AND ? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                    (match, low, high, MIXED_QUERY_SCAN - 1),
                )
                if bound is not None:
                    low = bound[0]
            rows = self._all(
                f"SELECT {_M_MESSAGE_COLUMNS} FROM messages_fts AS f"
                f" JOIN messages AS m ON m.id = (f.rowid & {MAX_MESSAGE_ID})"
                " WHERE messages_fts MATCH ? AND f.rowid BETWEEN ? AND ?"
                f" AND m.deleted = 0{like_sql} ORDER BY f.rowid DESC LIMIT ?",
                (match, low, high, *like_params, limit),
            )
        else:
            # Only 1-2 character terms: scan the newest SHORT_QUERY_SCAN messages of the room.
            bound = self._one(
                "SELECT id FROM messages WHERE room = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                (room_id, SHORT_QUERY_SCAN - 1),
            )
            rows = self._all(
                f"SELECT {_M_MESSAGE_COLUMNS} FROM messages AS m WHERE m.room = ? AND m.id >= ?"
                f" AND m.deleted = 0{like_sql} ORDER BY m.id DESC LIMIT ?",
                (room_id, 0 if bound is None else bound[0], *like_params, limit),
            )
        return [_message(r) for r in rows]

    def get_message(self, room_id: int, message_id: int) -> Message | None:
        row = self._one(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ? AND room = ?", (message_id, room_id)
        )
        return None if row is None else _message(row)

    def mark_answered(self, room_id: int, message_id: int) -> bool:
        with self._transaction() as db:
            return db.execute(
                "UPDATE messages SET answered = 1 WHERE id = ? AND room = ? AND kind = 'question'"
                " AND deleted = 0 AND answered = 0",
                (message_id, room_id),
            ).rowcount > 0

    def delete_message(self, room_id: int, message_id: int) -> bool:
        with self._transaction() as db:
            return db.execute(
                "UPDATE messages SET deleted = 1 WHERE id = ? AND room = ? AND deleted = 0",
                (message_id, room_id),
            ).rowcount > 0

    # ------------------------------------------------------------------ upkeep

    def optimize_index(self) -> None:
        """Not part of ChatStore: merge the FTS5 index into one segment (slow; for tools)."""
        with self._transaction() as db:
            db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('optimize')")

    def check_index(self) -> None:
        """Not part of ChatStore: FTS5 integrity-check against the live messages; raises
        sqlite3.DatabaseError when the index and the messages disagree (for tests, tools)."""
        self._check_open()
        self._db.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._db.execute("PRAGMA optimize")
        finally:
            self._db.close()


def _is_foreign_key_error(exc: sqlite3.IntegrityError) -> bool:
    return "FOREIGN KEY" in str(exc)


def _split_sql(script: str) -> list[str]:
    """The statements of a script (complete per sqlite3.complete_statement, triggers intact)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
