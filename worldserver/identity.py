"""Player identity: nicknames and the join tokens that stand for them.

Job: :class:`Identities` hands out a join token for a nickname (``POST /api/join``), checks
nicknames (length, allowed characters, uniqueness per world ignoring case), answers which
name a token stands for (``name_for``, used by every transport's handshake and by the WebRTC
authorization hook), lets tokens go (``release``, idle expiry) and numbers anonymous players
(``guest_name``). Memory is bounded: at most ``max_tokens`` live tokens; when full, the token
idle the longest goes first.

Must not: do any I/O (no files, sockets or logging of names), know about HTTP or transports, or
keep a token alive that nobody uses -- a token idle for ``ttl`` seconds (and not attached to a
connected session) is forgotten, and its name is free again.
"""

from __future__ import annotations

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
    "Identities",
    "IdentitiesFull",
    "MAX_NAME_LENGTH",
    "NameRejected",
    "NameTaken",
    "TOKEN_LENGTH",
    "normalize_name",
]

MAX_NAME_LENGTH = 24
TOKEN_LENGTH = 32  # characters of a token: secrets.token_urlsafe(24) gives exactly 32
DEFAULT_TTL = 3600.0  # seconds a token may stay unused before it expires
DEFAULT_MAX_TOKENS = 100_000
GUEST_PREFIX = "guest-"

_PUNCTUATION = frozenset(" _-.")
# Letters (category Lo) that render as nothing: the Hangul fillers.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_SPACES = re.compile(" {2,}")
_GUEST_RE = re.compile(re.escape(GUEST_PREFIX) + r"[0-9]+")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{%d}" % TOKEN_LENGTH)


class NameRejected(ValueError):
    """A nickname cannot be used; ``reason`` is a sentence that can be shown to the player."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NameTaken(NameRejected):
    """The nickname is valid but another player holds it (HTTP 409)."""


class IdentitiesFull(NameRejected):
    """Every token slot is held by a connected player; none can be evicted (HTTP 503)."""


def normalize_name(raw: object) -> str:
    """The nickname as it will be shown: NFC, stripped, inner runs of spaces made one.

    Raises :class:`NameRejected` with a clear reason when the name is not acceptable: not a
    string, empty or only spaces, longer than 24 characters, or holding a character other than
    a letter (any script: Latin, Hangul, Kana, Cyrillic, ... with its combining marks), a
    digit, a space or one of ``_ - .``. Names of the form ``guest-N`` are reserved.
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
    if _GUEST_RE.fullmatch(_key(name)):
        raise NameRejected(f"names like {GUEST_PREFIX}1 are reserved for guests")
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


def _key(name: str) -> str:
    """The uniqueness key: compatibility-normalized and case-folded (Ａ = A = a)."""
    return unicodedata.normalize("NFKC", name).casefold()


class _Entry:
    __slots__ = ("name", "key", "last_used", "attached")

    def __init__(self, name: str, key: str, now: float) -> None:
        self.name = name
        self.key = key
        self.last_used = now
        self.attached = 0  # connected sessions using this token; > 0 means never expire


class Identities:
    """Nicknames and join tokens of one world. Not thread-safe; use from one thread/loop.

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
        self._holders: dict[str, str] = {}  # name key -> token
        self._idle: OrderedDict[str, None] = OrderedDict()  # unattached tokens, oldest use first
        self._guests = 0

    def __len__(self) -> int:
        """Live tokens."""
        return len(self._entries)

    # -- joining --------------------------------------------------------------------------
    def join(self, name: object, token: str | bytes | None = None) -> tuple[str, str]:
        """Give out a token for ``name``; returns ``(token, name as normalized)``.

        ``token`` is optional: a player's previous token. If it is live, it is kept (a page
        reload joining under the same name gets the same token back, and a new name replaces
        the old one) instead of issuing a second one. Raises :class:`NameRejected` for an
        invalid name, :class:`NameTaken` when another token holds it (case-insensitive), and
        :class:`IdentitiesFull` when no token slot can be freed.
        """
        now = self._clock()
        self._expire(now)
        name = normalize_name(name)
        key = _key(name)
        own = self._live_token(token)
        holder = self._holders.get(key)
        if holder is not None and holder != own:
            raise NameTaken(f"the name {name!r} is already taken")
        if own is not None:
            entry = self._entries[own]
            if entry.key != key:
                del self._holders[entry.key]
                self._holders[key] = own
            entry.name, entry.key = name, key
            self._use(own, entry, now)
            return own, name
        if len(self._entries) >= self.max_tokens and not self._evict_oldest():
            raise IdentitiesFull("too many players; try again later")
        new = secrets.token_urlsafe(24)
        while new in self._entries:  # 192 random bits: never in practice
            new = secrets.token_urlsafe(24)
        entry = _Entry(name, key, now)
        self._entries[new] = entry
        self._holders[key] = new
        self._idle[new] = None
        return new, name

    def guest_name(self) -> str:
        """A fresh ``guest-N`` name for an anonymous player; never given out twice.

        Players cannot pick names of this form (see :func:`normalize_name`), so a guest name
        is unique without being held.
        """
        self._guests += 1
        return f"{GUEST_PREFIX}{self._guests}"

    # -- tokens ---------------------------------------------------------------------------
    def name_for(self, token: str | bytes | None) -> str | None:
        """The name ``token`` stands for, or None if it is unknown or expired. Counts as use."""
        now = self._clock()
        self._expire(now)
        live = self._live_token(token)
        if live is None:
            return None
        entry = self._entries[live]
        self._use(live, entry, now)
        return entry.name

    def touch(self, token: str | bytes | None) -> bool:
        """Mark ``token`` as used now (restarts its idle time); False if it is not live."""
        return self.name_for(token) is not None

    def attach(self, token: str | bytes | None) -> str | None:
        """A session connected with ``token``: it stays live until every such session detaches.

        Returns the name (None if the token is not live; then nothing is attached).
        """
        now = self._clock()
        self._expire(now)
        live = self._live_token(token)
        if live is None:
            return None
        entry = self._entries[live]
        entry.attached += 1
        entry.last_used = now
        self._idle.pop(live, None)
        return entry.name

    def detach(self, token: str | bytes | None) -> None:
        """The session that attached ``token`` ended; the idle time starts now."""
        live = self._live_token(token)
        if live is None:
            return
        entry = self._entries[live]
        if entry.attached > 0:
            entry.attached -= 1
        if entry.attached == 0:
            entry.last_used = self._clock()
            self._idle[live] = None
            self._idle.move_to_end(live)

    def release(self, token: str | bytes | None) -> None:
        """Forget ``token`` now (its name is free again), attached or not. Unknown: no-op."""
        live = self._live_token(token)
        if live is not None:
            self._drop(live)

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
        if entry.attached == 0:
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

    def _drop(self, token: str) -> None:
        entry = self._entries.pop(token)
        self._idle.pop(token, None)
        if self._holders.get(entry.key) == token:
            del self._holders[entry.key]
