"""Player identity: nicknames, the secrets that prove who owns one, and session tokens.

Job: :func:`normalize_name` checks a nickname (length, allowed characters, names reserved for
guests and for the server) and :func:`user_key` gives the form under which names are unique
(case and width folded). A name belongs to an *identity* for good (kept in the chat database by
``worldserver.accounts``), which proves itself with a long-lived secret: :func:`new_secret`,
:func:`hash_secret` and :func:`secret_matches` (constant time) are its helpers. :class:`Identities`
holds the short-lived session tokens of ``POST /api/join``: :meth:`~Identities.issue` gives an
identity a fresh token and ends everything that used its previous one (one identity, one login),
``identify``/``name_for`` say which identity a token stands for (every transport's handshake,
the WebRTC authorization hook, the chat's hello), ``attach``/``detach`` tie the sessions and
sockets using a token to it -- at most one of them is the identity's avatar in the world: a
second avatar replaces the first -- and idle tokens expire. ``guest_name`` numbers anonymous
players. Memory is bounded: at most ``max_tokens`` live tokens; when full, the token idle the
longest goes first.

A token that expires or is evicted frees memory only, never a name: the name stays with its
identity, which takes a fresh token by presenting its secret again.

Must not: do any I/O (no files, sockets, database or logging of names), know about HTTP or
transports, or keep a token alive that nobody uses -- a token idle for ``ttl`` seconds (and
held by no session) is forgotten.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_TTL",
    "GUEST_PREFIX",
    "RELEASED",
    "REPLACED",
    "RESERVED_NAMES",
    "Identities",
    "IdentitiesFull",
    "KICKED",
    "MAX_NAME_LENGTH",
    "NameRejected",
    "NameTaken",
    "SECRET_LENGTH",
    "TOKEN_LENGTH",
    "hash_secret",
    "new_secret",
    "normalize_name",
    "secret_matches",
    "user_key",
    "valid_secret",
]

MAX_NAME_LENGTH = 24
TOKEN_LENGTH = 32  # characters of a token: secrets.token_urlsafe(24) gives exactly 32
SECRET_LENGTH = 43  # characters of a secret: secrets.token_urlsafe(32), 256 random bits
DEFAULT_TTL = 3600.0  # seconds a token may stay unused before it expires
DEFAULT_MAX_TOKENS = 100_000
GUEST_PREFIX = "guest-"
# Names of the server and its roles (compared after folding case and width and without
# spaces and _ - .): "server" is the author of join/leave notices.
RESERVED_NAMES = frozenset({"server", "system", "admin", "administrator", "moderator", "root",
                            "worldserver"})
# Why the holders of a token are ended (the argument of their ``end`` callback).
REPLACED = "replaced"  # the identity logged in again (a new token, or a second avatar)
RELEASED = "released"  # the token was released
KICKED = "kicked"  # an operator or moderator kicked the player (worldserver/moderation.py)

_PUNCTUATION = frozenset(" _-.")
# Letters (category Lo) that render as nothing: the Hangul fillers.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_SPACES = re.compile(" {2,}")
_NOT_ALNUM = re.compile("[ _.\\-]")
_GUEST_RE = re.compile(re.escape(GUEST_PREFIX) + r"[0-9]+")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{%d}" % TOKEN_LENGTH)
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{%d}" % SECRET_LENGTH)


class NameRejected(ValueError):
    """A nickname cannot be used; ``reason`` is a sentence that can be shown to the player."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NameTaken(NameRejected):
    """The nickname is valid but belongs to another identity (HTTP 409)."""


class IdentitiesFull(NameRejected):
    """Every token slot is held by a connected player; none can be evicted (HTTP 503)."""


def normalize_name(raw: object) -> str:
    """The nickname as it will be shown: NFC, stripped, inner runs of spaces made one.

    Raises :class:`NameRejected` with a clear reason when the name is not acceptable: not a
    string, empty or only spaces, longer than 24 characters, or holding a character other than
    a letter (any script: Latin, Hangul, Kana, Cyrillic, ... with its combining marks), a
    digit, a space or one of ``_ - .``. Names of the form ``guest-N`` are reserved for guests,
    and the :data:`RESERVED_NAMES` (``server``, ...) for the server.
    """
    if not isinstance(raw, str):
        raise NameRejected("the name must be a string")
    if len(raw) > 16 * MAX_NAME_LENGTH:  # do not even look at very long input
        raise NameRejected(f"the name is longer than {MAX_NAME_LENGTH} characters")
    name = unicodedata.normalize("NFC", raw).strip(" ")
    if not name:
        raise NameRejected("the name is empty")
    for ch in name:
        problem = _character_problem(ch)
        if problem is not None:
            raise NameRejected(problem)
    name = _SPACES.sub(" ", name)
    if len(name) > MAX_NAME_LENGTH:
        raise NameRejected(f"the name is longer than {MAX_NAME_LENGTH} characters")
    if not any(unicodedata.category(ch)[0] in "LN" for ch in name):
        raise NameRejected("the name needs at least one letter or digit")
    if unicodedata.category(name[0]).startswith("M"):
        raise NameRejected("the name cannot start with a combining mark")
    key = user_key(name)
    if _GUEST_RE.fullmatch(key):
        raise NameRejected(f"names like {GUEST_PREFIX}1 are reserved for guests")
    if _NOT_ALNUM.sub("", key) in RESERVED_NAMES:
        raise NameRejected(f"the name {name!r} is reserved for the server")
    return name


def _character_problem(ch: str) -> str | None:
    """Why ``ch`` may not appear in a name, or None if it may."""
    if ch in _PUNCTUATION:
        return None
    if ch in _INVISIBLE_LETTERS:
        return f"the name contains an invisible character (U+{ord(ch):04X})"
    category = unicodedata.category(ch)
    if category[0] == "L" or category in ("Nd", "Mn", "Mc"):
        return None
    if category[0] in ("C", "Z"):
        return f"the name contains an invisible or control character (U+{ord(ch):04X})"
    return f"the name contains {ch!r}; use letters, digits, spaces and _ - . only"


def user_key(name: str) -> str:
    """The uniqueness key of a name: compatibility-normalized and case-folded (Ａ = A = a)."""
    return unicodedata.normalize("NFKC", name).casefold()


# -- secrets ---------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh identity secret: 256 random bits, URL-safe text of :data:`SECRET_LENGTH`."""
    return secrets.token_urlsafe(32)


def valid_secret(raw: object) -> bool:
    """Whether ``raw`` has the form of a secret (a string as :func:`new_secret` makes)."""
    return isinstance(raw, str) and _SECRET_RE.fullmatch(raw) is not None


def hash_secret(secret: str) -> bytes:
    """What the server keeps of a secret: its SHA-256 (the secret itself is never stored)."""
    return hashlib.sha256(secret.encode("ascii")).digest()


def secret_matches(secret: object, stored: bytes | None) -> bool:
    """Whether ``secret`` is the one whose hash is ``stored`` (constant-time comparison)."""
    if stored is None or not valid_secret(secret):
        return False
    return hmac.compare_digest(hash_secret(secret), bytes(stored))


# -- session tokens --------------------------------------------------------------------------

End = Callable[[str], None]


class _Entry:
    __slots__ = ("identity", "name", "last_used", "holders", "avatar", "world")

    def __init__(self, identity: int, name: str, now: float, world: str = "") -> None:
        self.identity = identity
        self.name = name
        self.world = world  # the world the player joined ("" = the server's default)
        self.last_used = now
        self.holders: dict[object, End | None] = {}  # sessions and sockets using the token
        self.avatar: object | None = None  # the holder that is the identity's avatar


class Identities:
    """Session tokens of one world's identities. Not thread-safe; use from one thread/loop.

    ``clock`` returns seconds (monotonic); tests pass a fake one.
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self.ttl = float(ttl)
        self.max_tokens = int(max_tokens)
        self._clock = clock
        self._entries: dict[str, _Entry] = {}  # token -> entry
        self._tokens: dict[int, str] = {}  # identity -> its one live token
        self._idle: OrderedDict[str, None] = OrderedDict()  # tokens nobody holds, oldest use first
        self._guests = 0

    def __len__(self) -> int:
        """Live tokens."""
        return len(self._entries)

    # -- issuing --------------------------------------------------------------------------
    def issue(self, identity: int, name: str, world: str = "") -> str:
        """A fresh token for ``identity`` (whose name is ``name``), after it proved itself;
        ``world``: the id of the world the player joins ("" = the default world).

        The identity's previous token, if any, stops working, and everything holding it (its
        avatar, its chat sockets) is ended with :data:`REPLACED`: one identity, one login.
        Raises :class:`IdentitiesFull` when no token slot can be freed.
        """
        now = self._clock()
        self._expire(now)
        old = self._tokens.get(identity)
        if old is None and len(self._entries) >= self.max_tokens and not self._evict_oldest():
            raise IdentitiesFull("too many players; try again later")
        ended = self._drop(old) if old is not None else []
        new = secrets.token_urlsafe(24)
        while new in self._entries:  # 192 random bits: never in practice
            new = secrets.token_urlsafe(24)
        self._entries[new] = _Entry(int(identity), name, now, world)
        self._tokens[int(identity)] = new
        self._idle[new] = None
        _end_all(ended, REPLACED)
        return new

    def token_of(self, identity: int) -> str | None:
        """The identity's live token, if it has one."""
        return self._tokens.get(identity)

    def guest_name(self) -> str:
        """A fresh ``guest-N`` name for an anonymous player; never given out twice.

        Players cannot pick names of this form (see :func:`normalize_name`), so a guest name
        is unique without being held.
        """
        self._guests += 1
        return f"{GUEST_PREFIX}{self._guests}"

    # -- tokens ---------------------------------------------------------------------------
    def identify(self, token: str | bytes | None) -> tuple[int, str] | None:
        """``(identity, name)`` that ``token`` stands for, or None if it is unknown or expired.
        Counts as use."""
        now = self._clock()
        self._expire(now)
        live = self._live_token(token)
        if live is None:
            return None
        entry = self._entries[live]
        self._use(live, entry, now)
        return entry.identity, entry.name

    def set_world(self, token: str | bytes | None, world: str) -> bool:
        """Records the world the player of ``token`` joins; False for an unknown token."""
        live = self._live_token(token)
        if live is None:
            return False
        self._entries[live].world = world
        return True

    def world_for(self, token: str | bytes | None) -> str:
        """The world the player of ``token`` joined ("" for the default, or an unknown token)."""
        live = self._live_token(token)
        return self._entries[live].world if live is not None else ""

    def name_for(self, token: str | bytes | None) -> str | None:
        """The name ``token`` stands for, or None if it is unknown or expired. Counts as use."""
        found = self.identify(token)
        return None if found is None else found[1]

    def touch(self, token: str | bytes | None) -> bool:
        """Mark ``token`` as used now (restarts its idle time); False if it is not live."""
        return self.identify(token) is not None

    def attach(self, token: str | bytes | None, holder: object, end: End | None = None, *,
               avatar: bool = False) -> tuple[int, str] | None:
        """``holder`` (a session or socket) uses ``token``: it stays live until every holder
        detaches. ``end(reason)`` is called when the holder must stop (the token was replaced
        or released); it must not raise. With ``avatar``, the holder is the identity's avatar
        in the world, and an avatar attached before it is ended now with :data:`REPLACED`.

        Returns ``(identity, name)``, or None if the token is not live (nothing attached).
        """
        now = self._clock()
        self._expire(now)
        live = self._live_token(token)
        if live is None:
            return None
        entry = self._entries[live]
        replaced = None
        if avatar:
            previous = entry.avatar
            if previous is not None and previous is not holder:
                replaced = entry.holders.pop(previous, None)
            entry.avatar = holder
        entry.holders[holder] = end
        entry.last_used = now
        self._idle.pop(live, None)
        if replaced is not None:
            replaced(REPLACED)
        return entry.identity, entry.name

    def detach(self, token: str | bytes | None, holder: object) -> None:
        """``holder`` stopped using ``token``; when nobody holds it, its idle time starts."""
        live = self._live_token(token)
        if live is None:
            return
        entry = self._entries[live]
        if entry.holders.pop(holder, _MISSING) is _MISSING:
            return
        if entry.avatar is holder:
            entry.avatar = None
        if not entry.holders:
            entry.last_used = self._clock()
            self._idle[live] = None
            self._idle.move_to_end(live)

    def avatar(self, token: str | bytes | None) -> object | None:
        """The holder attached as the identity's avatar in a world (``attach(..., avatar=True)``:
        its movement session), or None (no avatar now, or the token is not live)."""
        live = self._live_token(token)
        return None if live is None else self._entries[live].avatar

    def holders(self, token: str | bytes | None) -> int:
        """How many sessions and sockets hold ``token`` (0 if it is not live)."""
        live = self._live_token(token)
        return 0 if live is None else len(self._entries[live].holders)

    def release(self, token: str | bytes | None, reason: str = RELEASED) -> int:
        """Forget ``token`` now; its holders are ended with ``reason`` (:data:`RELEASED`, or
        :data:`KICKED` for a kick). Unknown: no-op. The identity keeps its name (it may take a
        new token). Returns how many holders were ended."""
        live = self._live_token(token)
        if live is None:
            return 0
        ends = self._drop(live)
        _end_all(ends, reason)
        return len(ends)

    # -- internals ------------------------------------------------------------------------
    def _live_token(self, token: str | bytes | None) -> str | None:
        if isinstance(token, (bytes, bytearray, memoryview)):
            try:
                token = bytes(token).decode("ascii")
            except UnicodeDecodeError:
                return None
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            return None
        return token if token in self._entries else None

    def _use(self, token: str, entry: _Entry, now: float) -> None:
        entry.last_used = now
        if not entry.holders:
            self._idle.move_to_end(token)

    def _expire(self, now: float) -> None:
        limit = now - self.ttl
        while self._idle:
            token = next(iter(self._idle))
            if self._entries[token].last_used > limit:
                break
            self._drop(token)

    def _evict_oldest(self) -> bool:
        if not self._idle:
            return False
        self._drop(next(iter(self._idle)))
        return True

    def _drop(self, token: str) -> list[End]:
        """Forget ``token``; returns the end callbacks of its holders (to call afterwards)."""
        entry = self._entries.pop(token)
        self._idle.pop(token, None)
        if self._tokens.get(entry.identity) == token:
            del self._tokens[entry.identity]
        ends = [end for end in entry.holders.values() if end is not None]
        entry.holders.clear()
        entry.avatar = None
        return ends


_MISSING = object()


def _end_all(ends: list[End], reason: str) -> None:
    """Call every ``end(reason)``; one that raises does not keep the others from running."""
    error = None
    for end in ends:
        try:
            end(reason)
        except Exception as exc:  # a bug in a holder: report it after ending the others
            error = error or exc
    if error is not None:
        raise error
