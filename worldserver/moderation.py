"""Who must go and who may not come in: kicks, bans, and the drain before the server stops.

Job: :class:`Moderation` is the server's one place where a player is made to leave or kept
out. :meth:`Moderation.kick` is the one code path of a kick, whoever asks -- a moderator's chat
``mod.kick`` (``worldserver.chat.moderation_handlers``) or an operator (``POST
/admin/api/players/{id}/kick``, ``worldserver kick``): it finds the player (a player id as
``GET /admin/api/players`` lists them, or a name), tells the player who removed it, why and
for how long a ban lasts (:func:`kick_text`: the close reason of its chat sockets, 4001, and
the text of its DISCONNECT ``kicked``, which the transports read from
:attr:`Moderation.kick_text` while the kick ends their sessions), releases its join token
through :class:`worldserver.identity.Identities` -- which ends every holder of that token: the
avatar leaves the world on whatever transport it came (DISCONNECT ``kicked``,
``clients.left.kicked``; a login elsewhere ends them with ``replaced`` instead) -- ends the
sessions that hold no token (guests, Hatongsu players) through their transport's
``session.end``, and with a ban refuses the name (``POST /api/join``, chat ``hello``) and, for
a UDP player, its address (REFUSE ``banned``) until the ban runs out. The transports ask
:meth:`join_refusal` and :meth:`connect_refusal`. :class:`Drain` takes no one new (every
transport refuses with ``shutting_down``), posts a notice in the chat, waits until the players
have left or the grace has run out, then stops the server.

Bans are kept in memory only (a restart forgives them), at most :data:`MAX_BANS` per table
(the oldest goes first). An address in ``limits.trusted_networks`` (loopback by default) is
never banned by address: every local bot shares it.

Must not: touch sockets or packets (each transport ends its own sessions), know the chat's
storage (it calls the chat service), or read the wall clock (``now`` is the trio clock).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import trio

from protocol import packets as P
from worldserver.hosting import as_host
from worldserver.identity import KICKED, Identities, NameRejected, normalize_name, user_key
from worldserver.logs import get_logger
from worldserver.stats import Stats

__all__ = ["CLOSE_REASON_BYTES", "Drain", "GENERIC_REASONS", "KickResult", "MAX_BANS", "Moderation", "OPERATOR",
           "Target", "ban_length", "kick_text"]

log = get_logger("worldserver.moderation")

MAX_BANS = 100_000  # entries per ban table (names, addresses)
CLOSE_REASON_BYTES = 123  # the longest reason a WebSocket close frame can carry (RFC 6455 5.5)
DRAIN_POLL = 0.1  # seconds between two looks at the player count while draining
NOTICE_TIMEOUT = 5.0  # seconds the drain waits for its chat notice to be stored
SHUTTING_DOWN_TEXT = "the server is shutting down"
OPERATOR = "admin"  # the ``by`` of an operator's kick (the admin API); a moderator's is its name
# Reasons that only say that a kick happened (the admin API's and a moderator's defaults): the
# kicked player's text does not repeat them after saying who removed it.
GENERIC_REASONS = frozenset({"kicked by the operator", "kicked by a moderator"})

# Refusals by where they happen (the counters are listed in docs/architecture.md).
_DRAINING_COUNTERS = {
    "join": "drop.draining_join", "connect_token": "drop.draining_connect_token", "chat": "drop.draining_chat",
    "udp": "drop.draining_udp", "ws": "drop.draining_ws", "rtc": "drop.draining_rtc",
    "hatongsu": "drop.draining_hatongsu",
}
_BANNED_COUNTERS = {"join": "drop.banned_join", "chat": "drop.banned_chat", "udp": "drop.banned_udp"}


@attrs.frozen
class Target:
    """A player found by :meth:`Moderation.find`: its name ("" for a Hatongsu player, who has
    none) and its avatars in the worlds (none for a player who is only in the chat)."""

    name: str
    sessions: tuple = ()


@attrs.frozen
class KickResult:
    name: str
    sessions: int  # avatars that left the worlds
    chat_sockets: int  # chat sockets closed
    ban: float  # seconds the name (and UDP addresses) are refused; 0: none
    addresses: int  # UDP addresses banned


def close_reason(text: str) -> str:
    """``text`` cut to what a WebSocket close frame carries (123 bytes of UTF-8)."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= CLOSE_REASON_BYTES:
        return text
    return data[:CLOSE_REASON_BYTES].decode("utf-8", "ignore")


def kick_text(reason: str, ban: float = 0.0, by: str = "") -> str:
    """What a kicked player is told: who removed it (``by``: :data:`OPERATOR` or "" for the
    server's operator, else a moderator's name, which is not shown), the ``reason`` (unless it
    is one of :data:`GENERIC_REASONS`) and, with a ``ban`` (seconds), for how long, e.g.
    ``removed by the operator: spamming the gallery; banned for 10 min``. One line."""
    text = "removed by the operator" if by in ("", OPERATOR) else "removed by a moderator"
    reason = " ".join(str(reason).split())
    if reason and reason.casefold() not in GENERIC_REASONS:
        text += f": {reason}"
    if ban > 0:
        text += f"; banned for {ban_length(ban)}"
    return text


def ban_length(seconds: float) -> str:
    """A ban's length for a player to read, rounded up: ``45 s``, ``10 min``, ``3 h``, ``7 days``."""
    for unit, size, up_to in (("s", 1, 120), ("min", 60, 120 * 60), ("h", 3600, 48 * 3600)):
        if seconds < up_to:
            return f"{math.ceil(seconds / size)} {unit}"
    return f"{math.ceil(seconds / 86400)} days"


class Moderation:
    """Kicks, bans and the drain gate of one server (see the module docstring).

    ``worlds``: the :class:`~worldserver.hosting.WorldHost` (or one Simulation); ``limits``:
    the server's :class:`~worldserver.limits.AddressLimits` (the key an address is banned by;
    None: no address bans). ``chat`` is set by the chat service when there is one.
    """

    def __init__(self, identities: Identities, worlds, stats: Stats | None = None, limits=None) -> None:
        self.identities = identities
        self.worlds = as_host(worlds) if worlds is not None else None
        self.stats = stats if stats is not None else Stats()
        self.limits = limits
        self.chat = None  # worldserver.chat.service.ChatService
        self.draining = False
        self.name_bans: dict[str, float] = {}  # user_key(name) -> banned until (trio clock)
        self.address_bans: dict[Any, float] = {}  # AddressLimits key -> banned until
        # While :meth:`kick` ends a player's sessions: what the player is told (kick_text), which
        # a transport ending a session for KICKED sends with it (worldserver/native.py); else "".
        self.kick_text = ""

    # -- finding players ---------------------------------------------------------------------
    def sessions(self) -> list:
        """Every avatar in every hosted world."""
        if self.worlds is None:
            return []
        return [session for sim in self.worlds for session in sim.sessions]

    def player_count(self) -> int:
        return 0 if self.worlds is None else sum(len(sim.sessions) for sim in self.worlds)

    def find(self, who: object) -> Target | None:
        """The player ``who`` names: a player id (digits: ``session.player_id``, unique in the
        server) or a name (case and width folded), with its avatar or only in the chat; None
        when there is no such player."""
        text = str(who).strip()
        if not text:
            return None
        sessions = self.sessions()
        if text.isdigit():
            number = int(text)
            found = [s for s in sessions if getattr(s, "player_id", None) == number]
            return Target(found[0].name, tuple(found)) if found else None
        key = user_key(text)
        found = [s for s in sessions if s.name and user_key(s.name) == key]
        if found:
            return Target(found[0].name, tuple(found))
        online = getattr(self.chat, "user_peers", None) or {}
        for name in online:
            if user_key(name) == key:
                return Target(name, ())
        return None

    # -- kicks and bans ----------------------------------------------------------------------
    def kick(self, who: object, *, reason: str, ban: float = 0.0, now: float, by: str = "") -> KickResult | None:
        """End the player ``who`` everywhere (see the module docstring); None if there is no
        such player (a ban is then not recorded: see :meth:`ban_name`)."""
        target = self.find(who)
        if target is None:
            return None
        name = target.name
        told = kick_text(reason, ban, by)
        tokens: set[str] = set()
        closed = 0
        if self.chat is not None and name:
            closed, chat_tokens = self.chat.kick_user(name, close_reason(told))
            tokens.update(chat_tokens)
        for session in target.sessions:
            token = getattr(session, "token", b"")
            if token:
                tokens.add(token.decode("ascii", "replace") if isinstance(token, bytes) else token)
        ended = 0
        self.kick_text = told
        try:
            for token in tokens:  # every holder of the token ends: avatars (any transport), sockets
                self.identities.release(token, KICKED)
            for session in target.sessions:
                sim = getattr(session, "sim", None)
                if sim is None:
                    continue
                if session in sim.sessions:  # no token held it (a guest, Hatongsu): end it directly
                    end = getattr(session, "end", None)
                    if end is not None:
                        end(KICKED)
                    if session in sim.sessions:  # a transport that could not end it: leave anyway
                        sim.leave(session)
                ended += 1
        finally:
            self.kick_text = ""
        addresses = 0
        if ban > 0:
            until = now + ban
            key = _name_key(name) if name else None
            if key is not None:  # (guest names are never given twice: nothing to ban)
                self._ban(self.name_bans, key, until)
            for session in target.sessions:
                key = self._udp_key(session)
                if key is not None:
                    self._ban(self.address_bans, key, until)
                    addresses += 1
            self.stats.incr("moderation.bans")
        self.stats.incr("moderation.kicks")
        log.info("kick", name=name, sessions=ended, chat_sockets=closed, ban=ban, addresses=addresses, by=by,
                 reason=reason)
        return KickResult(name, ended, closed, float(ban), addresses)

    def ban_name(self, name: str, seconds: float, now: float) -> None:
        """Refuse ``name`` for ``seconds`` (a moderator's kick of a player who is not here)."""
        key = _name_key(name) if name else None
        if key is not None and seconds > 0:
            self._ban(self.name_bans, key, now + seconds)

    def _udp_key(self, session) -> Any | None:
        if getattr(session, "transport", "") != "udp" or self.limits is None:
            return None
        conn = getattr(session.sink, "conn", None)
        addr = getattr(conn, "addr", None)
        return self.limits.key(addr[0]) if addr else None

    @staticmethod
    def _ban(table: dict, key: Any, until: float) -> None:
        table.pop(key, None)  # re-inserted last: the oldest ban is the first key
        if len(table) >= MAX_BANS:
            del table[next(iter(table))]
        table[key] = until

    @staticmethod
    def _left(table: dict, key: Any, now: float) -> float:
        until = table.get(key)
        if until is None:
            return 0.0
        if until <= now:
            del table[key]
            return 0.0
        return until - now

    def sweep(self, now: float) -> None:
        """Forget the bans that have run out."""
        for table in (self.name_bans, self.address_bans):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]

    # -- what the transports ask -------------------------------------------------------------
    def join_refusal(self, where: str, name: str | None, now: float) -> tuple[str, str, float | None] | None:
        """Whether a player may come in at ``where`` (``join``: ``POST /api/join`` for
        ``name``; ``connect_token``; ``chat``: a hello of ``name``): None, or ``(code, text,
        retry_after)`` with code ``shutting_down`` or ``banned``. Counts the refusal."""
        if self.draining:
            self.stats.incr(_DRAINING_COUNTERS[where])
            return "shutting_down", f"{SHUTTING_DOWN_TEXT}; try again later", None
        key = _name_key(name) if name else None
        if key is not None and self.name_bans:
            left = self._left(self.name_bans, key, now)
            if left > 0:
                self.stats.incr(_BANNED_COUNTERS[where])
                return "banned", f"you were kicked; you may come back in {math.ceil(left)} s", left
        return None

    def connect_refusal(self, kind: str, host: str | None, now: float) -> tuple[int, str] | None:
        """Whether a native-protocol connect request over ``kind`` (``udp``, ``ws``, ``rtc``,
        ``hatongsu``) from ``host`` (UDP: the client's IP address; else None) may in: None, or
        the REFUSE ``(reason, text)``. Counts the refusal."""
        if self.draining:
            self.stats.incr(_DRAINING_COUNTERS[kind])
            return P.REFUSE_SHUTTING_DOWN, SHUTTING_DOWN_TEXT
        if host is not None and self.limits is not None and self.address_bans:
            key = self.limits.key(host)
            left = self._left(self.address_bans, key, now) if key is not None else 0.0
            if left > 0:
                self.stats.incr(_BANNED_COUNTERS["udp"])
                return P.REFUSE_BANNED, f"banned for {math.ceil(left)} more seconds"
        return None


def _name_key(name: str) -> str | None:
    """The key a name is banned by, for a name as a client sends it; None if it is no name."""
    try:
        return user_key(normalize_name(name))
    except NameRejected:
        return None


class Drain:
    """Stops the server gently: no one new, a notice, then the stop when the players have left
    or the grace has run out. ``stop()`` ends the server (``worldserver.app``: its nursery is
    cancelled, and everyone still there gets DISCONNECT ``server_shutdown``)."""

    def __init__(self, moderation: Moderation, stop: Callable[[], None]) -> None:
        self.moderation = moderation
        self.stop = stop
        self.deadline: float | None = None  # trio clock; None until the drain starts
        self._started = trio.Event()

    @property
    def active(self) -> bool:
        return self.deadline is not None

    def start(self, grace: float, now: float) -> float:
        """Start draining (or, with a shorter grace, shorten the drain in progress); returns
        the seconds until the server stops at the latest. Never blocks."""
        deadline = now + max(0.0, float(grace))
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline
        self.moderation.draining = True
        self._started.set()
        return self.deadline - now

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Waits for :meth:`start`, then drains and calls ``stop``."""
        task_status.started()
        await self._started.wait()
        moderation = self.moderation
        grace = self.deadline - trio.current_time()
        log.info("draining", players=moderation.player_count(), grace=round(grace, 3))
        chat = moderation.chat
        if grace > 0 and chat is not None:
            with trio.move_on_after(min(grace, NOTICE_TIMEOUT)):
                try:
                    await chat.post_notice(f"The server is shutting down in {math.ceil(grace)} s.")
                except Exception as exc:  # the chat failing must not keep the server up
                    log.warning("drain notice not posted", error=repr(exc)[:200])
        while moderation.player_count() > 0:
            now = trio.current_time()
            if now >= self.deadline:
                break
            await trio.sleep(min(DRAIN_POLL, self.deadline - now))
        log.info("drained", players_left=moderation.player_count())
        self.stop()
