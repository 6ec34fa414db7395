"""Hatongsu compatibility mode: serve clients that speak Hatongsu's JSON events on geckos.io.

Job: a browser running the unmodified Hatongsu gallery front end (geckos.io client 3.x,
events listed in ``../shared/reference/hatongsu-events.md``) joins the same world as native
clients. This module parses its text events (geckos framing rules, section 3 of
``geckos-protocol.md``), turns ``clientPlayerUpdate`` into a *target* that
:class:`HatongsuSession` steers the avatar toward, one ordinary :class:`Input` per tick (so
speed limit and bounds are the simulation's, exactly as for native clients), and turns each
tick's view of the world (``send_view``) into Hatongsu's server events.

Must not: write a client's claimed position into the world, keep timers or tasks of its own
(all repetition is bookkeeping done in ``send_view``, once per tick), touch aiortc, sockets or
the native protocol, or raise on anything a client sends (bad input is dropped and counted as
``drop.hatongsu.<reason>``).

What the Hatongsu client does with our events (read from ``zzingobomi/hatongsu-frontend``,
``WorldServerManager.ts`` / ``PlayerManager.ts``), and what follows for this module:

* ``serverNewPlayer`` for its own id creates its controllable character; for another id it
  *appends* a remote character, without looking whether one with that id exists. The same for
  every entry of ``serverExistingPlayers`` (its own id skipped). A second announcement of an
  id the client already has therefore makes a duplicate avatar (the copy that is found first
  gets the updates, the other one stands frozen): **re-announcing is not idempotent.**
* ``serverPlayerDisconnected`` removes the first character with that id, if any; an id it
  does not have is a no-op: **disconnects of an id that is never used again are idempotent.**
* ``serverPlayerUpdate`` / ``serverPlayerAnimation`` set the target transform / state of the
  first character with that id; an unknown id, **and its own id, are ignored.** So the
  server sends no updates of a client's own avatar (they would be dropped): a Hatongsu client
  is not corrected on its own screen, but what everyone else sees of it is the server's
  authoritative avatar (speed-limited, inside the bounds).
* Until it has received its own ``serverNewPlayer`` the client has no character and sends
  nothing at all (see :meth:`HatongsuService.open`).

Reliability scheme (fixes "a lost spawn leaves an avatar invisible"):

1. Every ``serverNewPlayer``, ``serverExistingPlayers`` and ``serverPlayerDisconnected`` is a
   geckos reliable envelope ``{"MESSAGE", "RELIABLE": 1, "ID"}``: sent at once and every 150
   ms, 10 sends (geckos' own schedule), then the *same* envelope again 3, 6, 9 and 12 s after
   the first send. The client delivers an envelope once and drops copies with a known ID for
   15 s after it first received one (never earlier than our first send), so the late copies
   are harmless when the first ones arrived and heal the spawn when all of them were lost:
   14 copies spread over 12 s.
2. Ids are never reused towards one client: an entity that leaves a client's view and comes
   back, or is re-announced, gets a fresh alias (24 random ``[A-Za-z0-9]``). Stale copies of
   an old ``serverPlayerDisconnected`` can then never remove a newer avatar, and messages
   about different aliases commute on the unordered channel.
3. Guarantee beyond outages longer than 12 s: every visible entity is *respawned* under a
   fresh alias every :data:`RESPAWN_INTERVAL` seconds (``serverPlayerDisconnected`` old +
   ``serverNewPlayer`` new, both reliable, at most :data:`RESPAWNS_PER_TICK` per client per
   tick). A lost spawn is therefore visible again at the latest one respawn later: the old
   alias goes whether or not the client had it, the new one comes once. The cost: the
   client rebuilds that avatar in place every 30 s (its animation blends back in about
   0.2 s), and about one message per second per visible entity.
4. A retired alias (left the view, despawned, respawned) also gets plain, unenveloped
   ``serverPlayerDisconnected`` copies every :data:`FOLLOW_UP_INTERVAL` s for a minute:
   removing an alias that is never used again is idempotent, so these heal a frozen ghost
   whose reliable disconnect was lost entirely. When an alias retires while its own
   announcement may still be in flight, the unsent copies of a single ``serverNewPlayer`` are
   cancelled and one more reliable disconnect (fresh ID) follows the announcement's last copy.
5. Plain updates are refreshed: an entity whose last update or animation went out more than
   :data:`KEYFRAME_INTERVAL` seconds ago is sent again even if unchanged (heals a lost final
   update of an avatar that stopped, and the state of a freshly announced one).
6. The client's own spawn cannot be re-announced (a second own ``serverNewPlayer`` would make
   a second controllable character), so it relies on step 1 alone.

Cost: each event is one data-channel message, so updates go out at 10 Hz, only for entities
that changed, and at 5 Hz for those farther than :data:`FAR_DISTANCE`; while the channel has
a backlog (``buffered_amount() > 0``) plain updates are skipped (counted as
``hatongsu.updates_skipped``), the reliable schedules never.

Conventions: positions are metres as is (Hatongsu units are metres, y up, floor y = 0).
Rotations are quaternions about +Y: ``yaw = 2*atan2(y, w)`` for a pure yaw, in general the
heading of the rotated +Z axis ``atan2(2(xz + wy), w^2 + z^2 - x^2 - y^2)``. That matches
native clients: yaw 0 faces +z, yaw pi/2 faces +x (``atan2(move_x, move_z)``), and Hatongsu's
``Quaternion.FromEulerAngles(0, atan2(h, v), 0)``. Animation states are shared: 0 idle,
1 walk, 2 run, 3 jump (native states above 3 are shown as idle).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import deque

from protocol import jsonsafe
from protocol.messages import FLAG_JUMP, INPUT_AXIS_SCALE, Input
from worldserver.limits import TokenBucket
from worldserver.logs import get_logger
from worldserver.sessions import Session
from worldserver.world import WorldFull

log = get_logger("worldserver.hatongsu")

# Events a Hatongsu client sends, and those we send it.
CLIENT_PLAYER_UPDATE = "clientPlayerUpdate"
CLIENT_ANIMATION_UPDATE = "clientAnimationUpdate"
CLIENT_EVENTS = (CLIENT_PLAYER_UPDATE, CLIENT_ANIMATION_UPDATE)
SERVER_NEW_PLAYER = "serverNewPlayer"
SERVER_EXISTING_PLAYERS = "serverExistingPlayers"
SERVER_PLAYER_UPDATE = "serverPlayerUpdate"
SERVER_PLAYER_ANIMATION = "serverPlayerAnimation"
SERVER_PLAYER_DISCONNECTED = "serverPlayerDisconnected"

#: Send times of one reliable envelope, seconds after the first: geckos' 10 runs 150 ms apart,
#: then the same envelope (same ID, so deduplicated by the client) up to 12 s, inside the
#: client's 15 s memory of received IDs.
RELIABLE_OFFSETS = tuple(round(0.15 * i, 2) for i in range(10)) + (3.0, 6.0, 9.0, 12.0)
#: How long a geckos receiver remembers a reliable ID (also our own dedupe window).
RELIABLE_MEMORY = 15.0
#: Seconds between two re-announcements (under a fresh alias) of one visible entity.
RESPAWN_INTERVAL = 30.0
#: At most this many respawns per client per tick (spreads them after a big first view).
RESPAWNS_PER_TICK = 1
#: An entity not updated for this long gets its transform (and animation) again.
KEYFRAME_INTERVAL = 3.0
#: Seconds between two rounds of plain updates (Hatongsu clients lerp; 10 Hz is plenty).
UPDATE_INTERVAL = 0.1
#: Entities farther than this (metres, XZ) from the client's avatar get their transform
#: every other round only (5 Hz): each update is a message of its own, so a crowd costs.
FAR_DISTANCE = 20.0
#: ``serverExistingPlayers`` is split into messages of at most this many players: a message
#: that fits one datagram survives loss far better than a long one on a channel without
#: retransmissions.
EXISTING_CHUNK = 6
#: Delay between an announcement's last copy and the closing disconnect (see module doc).
CLOSING_DELAY = 2.0
#: After a retirement's reliable disconnect, plain copies of it follow every
#: FOLLOW_UP_INTERVAL seconds, FOLLOW_UPS of them (removing a retired alias is idempotent).
FOLLOW_UP_INTERVAL = 15.0
FOLLOW_UPS = 4

#: Within this distance (metres, XZ) of its target the avatar stops.
ARRIVE_DISTANCE = 0.03
#: A claimed height that rises more than this between two updates is a jump.
JUMP_RISE = 0.2

MAX_TEXT = 4096  # characters; a Hatongsu event is about 150
MAX_COORDINATE = 1e6  # larger claimed coordinates are nonsense, not a position to clamp
MAX_QUATERNION = 1e3
MAX_RELIABLE_IDS = 512  # remembered incoming reliable IDs per client
MAX_ID_LENGTH = 64

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_JSON_SEPARATORS = (",", ":")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
# JavaScript's StrWhiteSpaceChar (WhiteSpace and LineTerminator), skipped by parseInt.
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_HEX = "0123456789abcdefABCDEF"


class Drop(Exception):
    """A message that is ignored; ``reason`` names the counter ``drop.hatongsu.<reason>``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- parsing (geckos 3.x, common/src/parseMessage.ts) -------------------------------------------
def _parse_int_is_nan(text: str) -> bool:
    """True when JavaScript's ``parseInt(text)`` is NaN (the first rule of geckos' parser)."""
    s = text.lstrip(_JS_SPACE)
    if s[:1] in ("+", "-"):
        s = s[1:]
    if s[:2] in ("0x", "0X"):
        return not (len(s) > 2 and s[2] in _HEX)
    return not (s[:1] and "0" <= s[0] <= "9")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _first_key(obj: dict) -> str:
    """``Object.keys(obj)[0]`` of the object JSON.parse would build from the same text.

    JavaScript lists array-index keys first, in ascending order, then the other keys in the
    order they first appeared (a repeated key keeps its first place and its last value, as
    in a Python dict).
    """
    index = [k for k in obj if _ARRAY_INDEX.fullmatch(k) and int(k) < 4294967295]
    if index:
        return min(index, key=int)
    return next(iter(obj))


def parse_event(text: object) -> tuple[str, object]:
    """(event, payload) of one text message, per geckos' rules; raises :class:`Drop`.

    A message is an event when it is a string, ``parseInt`` of it is NaN and it parses as
    JSON; the event is the object's first key. Anything else is a geckos "raw" message.
    """
    if not isinstance(text, str):
        raise Drop("not_text")
    if len(text) > MAX_TEXT:
        raise Drop("too_long")
    if not _parse_int_is_nan(text):
        raise Drop("raw")
    try:
        obj = jsonsafe.loads(text, max_bytes=4 * MAX_TEXT, parse_constant=_reject_constant)
    except jsonsafe.JsonRefused as exc:
        if exc.reason == "too_deep":  # refused before parsing: no event is nested this deep
            raise Drop("too_deep") from None
        raise Drop("raw") from None  # not JSON: geckos hands it over as a raw message
    if not isinstance(obj, dict) or not obj:
        raise Drop("not_object")
    event = _first_key(obj)
    return event, obj[event]


def _finite(value: object, limit: float) -> float:
    if type(value) is bool or not isinstance(value, (int, float)):
        raise Drop("bad_shape")
    try:
        f = float(value)
    except OverflowError:
        raise Drop("bad_number") from None
    if not math.isfinite(f) or abs(f) > limit:
        raise Drop("bad_number")
    return f


def _fields(obj: object, names: str, limit: float) -> list[float]:
    if not isinstance(obj, dict):
        raise Drop("bad_shape")
    try:
        return [_finite(obj[n], limit) for n in names]
    except KeyError:
        raise Drop("bad_shape") from None


def parse_player_update(payload: object) -> tuple[tuple[float, float, float], float | None]:
    """``{position:{x,y,z}, rotation:{x,y,z,w}}`` -> (position, yaw radians or None).

    The yaw is the heading of the rotated +Z axis (see the module doc); None when that axis
    points straight up or down (no heading). Extra keys are ignored.
    """
    if not isinstance(payload, dict):
        raise Drop("bad_shape")
    px, py, pz = _fields(payload.get("position"), "xyz", MAX_COORDINATE)
    qx, qy, qz, qw = _fields(payload.get("rotation"), "xyzw", MAX_QUATERNION)
    n2 = qx * qx + qy * qy + qz * qz + qw * qw
    if not n2 > 1e-12:
        raise Drop("bad_rotation")
    fx = 2.0 * (qx * qz + qw * qy)
    fz = qw * qw + qz * qz - qx * qx - qy * qy
    yaw = math.atan2(fx, fz) if math.hypot(fx, fz) > 1e-6 * n2 else None
    return (px, py, pz), yaw


def parse_animation_update(payload: object) -> int:
    """``{playerId, state}`` -> state (integer 0..255; the client's playerId is ignored)."""
    if not isinstance(payload, dict) or "state" not in payload:
        raise Drop("bad_shape")
    state = _finite(payload["state"], 255.0)
    if state < 0 or state != int(state):
        raise Drop("bad_state")
    return int(state)


# -- ids and outgoing events --------------------------------------------------------------------
def random_id() -> str:
    """24 random characters of ``[A-Za-z0-9]`` (geckos' id alphabet and length)."""
    return "".join(_ALPHABET[b % 62] for b in os.urandom(24))


def _encode(event: str, payload: object) -> str:
    return json.dumps({event: payload}, separators=_JSON_SEPARATORS)


def _envelope(event: str, payload: object, rid: str) -> str:
    return json.dumps({event: {"MESSAGE": payload, "RELIABLE": 1, "ID": rid}}, separators=_JSON_SEPARATORS)


class _Reliable:
    """One reliable envelope and where it is in its send schedule."""

    __slots__ = ("text", "t0", "next", "cancelled")

    def __init__(self, text: str, t0: float) -> None:
        self.text = text
        self.t0 = t0
        self.next = 0  # index into RELIABLE_OFFSETS of the next send
        self.cancelled = False

    @property
    def end(self) -> float:
        return self.t0 + RELIABLE_OFFSETS[-1]


class _Seen:
    """What one client was told about one entity."""

    __slots__ = ("alias", "state", "anim", "sent_at", "announced_at", "announce", "single")

    def __init__(self, alias: str, state: tuple, now: float, announce: _Reliable, single: bool) -> None:
        self.alias = alias
        self.state = state  # quantized (x, y, z, yaw) as last sent
        self.anim = 0  # animation state the client shows (a new character starts idle)
        # First refresh right after geckos' ten copies, then every KEYFRAME_INTERVAL.
        self.sent_at = now - KEYFRAME_INTERVAL + 1.5
        self.announced_at = now
        self.announce = announce
        self.single = single  # the announcement carries this alias only (serverNewPlayer)


# -- the session --------------------------------------------------------------------------------
class HatongsuSession(Session):
    """A Hatongsu client's avatar: steers toward the position the client claims.

    ``next_inputs`` makes one input per tick whose intent is the way to the target, at most
    full speed: ``(target - pos) / (max_speed * dt)`` clipped to length 1, so the avatar
    reaches a near target in one tick and a far one at max speed. The world applies it like a
    native input (speed limit, bounds). The claimed height only triggers jumps.
    """

    __slots__ = ("world", "dt", "target", "yaw_q", "anim", "claimed_y", "jump", "seq")

    def __init__(self, sink, entity_id: int, slot: int, now: float, *, wants_views: bool = True) -> None:
        super().__init__(sink, entity_id, slot, now, wants_views=wants_views)
        self.world = None  # set by HatongsuService.open
        self.dt = 0.05
        self.target: tuple[float, float] | None = None
        self.yaw_q = 0
        self.anim = 0
        self.claimed_y: float | None = None
        self.jump = False
        self.seq = 0

    def claim(self, position: tuple[float, float, float], yaw: float | None) -> None:
        """A clientPlayerUpdate: where the client says it is (a target, never a position)."""
        world = self.world
        he = world.half_extent
        x, y, z = position
        self.target = (min(max(x, -he), he), min(max(z, -he), he))
        if yaw is not None:
            self.yaw_q = int(round((yaw % (2 * math.pi)) * 65536 / (2 * math.pi))) % 65536
        if self.claimed_y is not None and y - self.claimed_y > JUMP_RISE:
            self.jump = True
        self.claimed_y = y

    def next_inputs(self, tick: int) -> tuple[Input | None, Input | None]:
        world = self.world
        if world is None:
            return None, None
        mx = mz = 0
        if self.target is not None:
            pos = world.pos[self.slot]
            dx = self.target[0] - float(pos[0])
            dz = self.target[1] - float(pos[2])
            step = world.max_speed * self.dt
            if math.hypot(dx, dz) > ARRIVE_DISTANCE and step > 0:
                ix, iz = dx / step, dz / step
                n = math.hypot(ix, iz)
                if n > 1.0:
                    ix, iz = ix / n, iz / n
                mx = int(round(ix * INPUT_AXIS_SCALE))
                mz = int(round(iz * INPUT_AXIS_SCALE))
        flags = FLAG_JUMP if self.jump else 0
        self.jump = False
        self.seq += 1
        self.last_applied_seq = self.seq
        return None, Input(self.seq, mx, mz, self.yaw_q, self.anim, flags)


# -- one connected client -----------------------------------------------------------------------
class HatongsuClient:
    """The sender of one Hatongsu session: per-client view bookkeeping and reliable sends."""

    def __init__(self, service: "HatongsuService", peer, now: float) -> None:
        self.service = service
        self.peer = peer
        self.player_id = str(peer.id)
        self.session: HatongsuSession | None = None
        self.closed = False
        self.started = False  # the first view (own spawn, existing players) went out
        self.seen: dict[int, _Seen] = {}  # entity id -> what the client was told
        self.reliable: list[_Reliable] = []
        self.follow_ups: deque[tuple[float, str, int]] = deque()  # (due, retired alias, left)
        self.next_update = now
        self.rounds = 0  # update rounds so far (far entities go on even ones)
        self.texts = TokenBucket(service.input_rate, service.input_burst, now)  # messages in
        self.received_ids: dict[str, float] = {}  # incoming reliable ID -> forget after
        self.used_canonical: set[str] = set()  # canonical ids this client was already told

    # -- sending ------------------------------------------------------------------------------
    def _send(self, text: str) -> None:
        try:
            sent = self.peer.send(text)
        except Exception as exc:  # a closing channel must not break the tick
            self.service.stats.incr("drop.hatongsu.send_error")
            log.debug("send failed", peer=self.player_id, error=repr(exc))
            return
        if sent is not False:  # the transport counts what it could not send
            self.service.stats.incr("hatongsu.messages_out")

    def _send_reliable(self, event: str, payload: object, now: float, t0: float | None = None) -> _Reliable:
        rel = _Reliable(_envelope(event, payload, random_id()), now if t0 is None else t0)
        self.reliable.append(rel)
        if rel.t0 <= now:
            self._send(rel.text)
            rel.next = 1
        return rel

    def _pump_reliable(self, now: float) -> None:
        """Sends the copies that are due: at most one per envelope per tick, none skipped;
        then the plain follow-up disconnects of retired aliases that are due."""
        follow = self.follow_ups
        while follow and follow[0][0] <= now:
            _, alias, left = follow.popleft()
            self._send(_encode(SERVER_PLAYER_DISCONNECTED, alias))
            if left > 1:
                follow.append((now + FOLLOW_UP_INTERVAL, alias, left - 1))  # keeps dues in order
        keep = []
        for rel in self.reliable:
            if rel.cancelled:
                continue
            if rel.next < len(RELIABLE_OFFSETS) and now >= rel.t0 + RELIABLE_OFFSETS[rel.next] - 1e-6:
                self._send(rel.text)
                rel.next += 1
            if rel.next < len(RELIABLE_OFFSETS):
                keep.append(rel)
        self.reliable = keep

    # -- the tick's view ------------------------------------------------------------------------
    def send_view(self, session, ids, q, now: float) -> None:
        """Turns this tick's visible entities into Hatongsu events (see the module doc)."""
        if self.closed:
            return
        ids_l = ids.tolist()
        index = {eid: i for i, eid in enumerate(ids_l)}
        own = session.entity_id
        if not self.started:
            if own not in index:
                return  # cannot happen (an observer sees itself); wait for a view with it
            self.started = True
            self._first_view(ids_l, q, own, now)
        else:
            self._view_changes(ids_l, index, q, own, now)
        if now >= self.next_update - 1e-6:
            self.next_update = max(self.next_update + UPDATE_INTERVAL, now)
            self._updates(index, q, session.entity_id, now)
        self._pump_reliable(now)

    def _first_view(self, ids_l: list[int], q, own: int, now: float) -> None:
        service = self.service
        rows = q.tolist()
        own_entry = {"playerId": self.player_id, "transform": service.transform(rows[ids_l.index(own)])}
        self._send_reliable(SERVER_NEW_PLAYER, own_entry, now)
        # The client's own entry leads, as in Hatongsu (the client skips it).
        entries = [(own, own_entry, None)]
        for eid, row in zip(ids_l, rows):
            if eid != own:
                alias = service.alias_for_entry(eid, self)
                entries.append((eid, {"playerId": alias, "transform": service.transform(row)}, row))
        for a in range(0, len(entries), EXISTING_CHUNK):
            chunk = entries[a : a + EXISTING_CHUNK]
            rel = self._send_reliable(SERVER_EXISTING_PLAYERS, [e for _, e, _ in chunk], now)
            for eid, entry, row in chunk:
                if eid != own:
                    self.seen[eid] = _Seen(entry["playerId"], tuple(row[:4]), now, rel, False)

    def _announce(self, eid: int, row, alias: str, now: float) -> None:
        entry = {"playerId": alias, "transform": self.service.transform(row)}
        rel = self._send_reliable(SERVER_NEW_PLAYER, entry, now)
        self.seen[eid] = _Seen(alias, tuple(int(v) for v in row[:4]), now, rel, True)

    def _retire(self, seen: _Seen, now: float) -> None:
        """The client must forget ``seen.alias`` for good (the alias is never used again)."""
        self._send_reliable(SERVER_PLAYER_DISCONNECTED, seen.alias, now)
        self.follow_ups.append((now + FOLLOW_UP_INTERVAL, seen.alias, FOLLOW_UPS))
        ann = seen.announce
        if now - seen.announced_at < RELIABLE_MEMORY:
            # Copies of the announcement may still be scheduled or under way: stop those we
            # can, and close after the last one with a disconnect the client has not seen.
            if seen.single:
                ann.cancelled = True
                last = ann.t0 + RELIABLE_OFFSETS[max(ann.next - 1, 0)]
            else:
                last = ann.end
            self._send_reliable(SERVER_PLAYER_DISCONNECTED, seen.alias, now, t0=max(now, last) + CLOSING_DELAY)

    def _view_changes(self, ids_l: list[int], index: dict, q, own: int, now: float) -> None:
        """Retires aliases that left the view, announces newcomers, respawns the oldest."""
        service = self.service
        seen = self.seen
        for eid in [e for e in seen if e not in index]:
            self._retire(seen.pop(eid), now)
        for i, eid in enumerate(ids_l):
            if eid != own and eid not in seen:
                self._announce(eid, q[i], service.alias_for_entry(eid, self), now)
        # ``seen`` is in announcement order (every announcement is inserted at the end), so
        # the entities due for a respawn are at its start.
        due = []
        for eid, s in seen.items():
            if len(due) >= RESPAWNS_PER_TICK or now - s.announced_at < RESPAWN_INTERVAL:
                break
            due.append(eid)
        for eid in due:
            self._retire(seen.pop(eid), now)
            self._announce(eid, q[index[eid]], random_id(), now)
        if due:
            service.stats.incr("hatongsu.respawns", len(due))

    def _updates(self, index: dict, q, own: int, now: float) -> None:
        """Plain updates of changed entities (and stale ones), skipped under back-pressure.

        Far entities (beyond FAR_DISTANCE) get their transform every other round."""
        service = self.service
        if not self.seen:
            return
        try:
            backlog = self.peer.buffered_amount() > 0
        except Exception:
            backlog = False
        if backlog:
            service.stats.incr("hatongsu.updates_skipped")
            return
        rows = q.tolist()
        self.rounds += 1
        near_round = self.rounds % 2 == 1
        ox, _, oz = rows[index[own]][:3] if own in index else (0, 0, 0)
        far2 = service.far_q2
        for eid, s in self.seen.items():
            row = rows[index[eid]]
            state = (row[0], row[1], row[2], row[3])
            anim = service.anim_state(row[4])
            stale = now - s.sent_at >= KEYFRAME_INTERVAL
            if stale or (state != s.state and (near_round or (row[0] - ox) ** 2 + (row[2] - oz) ** 2 <= far2)):
                self._send(_encode(SERVER_PLAYER_UPDATE, {"playerId": s.alias, "transform": service.transform(row)}))
                s.state = state
                s.sent_at = now
            if anim != s.anim or (stale and anim != 0):
                self._send(_encode(SERVER_PLAYER_ANIMATION, {"playerId": s.alias, "state": anim}))
                s.anim = anim
                s.sent_at = now

    # -- incoming -------------------------------------------------------------------------------
    def take_text(self, text: object, now: float) -> None:
        if self.texts.take(now):
            raise Drop("rate")
        event, payload = parse_event(text)
        if event not in CLIENT_EVENTS:
            raise Drop("unknown_event")
        if isinstance(payload, dict) and payload.get("RELIABLE", None) == 1 and type(payload["RELIABLE"]) is not bool:
            rid = payload.get("ID")
            if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_LENGTH or "MESSAGE" not in payload:
                raise Drop("bad_envelope")
            self._remember(rid, now)
            payload = payload["MESSAGE"]
        session = self.session
        if session is None:
            raise Drop("no_session")
        if event == CLIENT_PLAYER_UPDATE:
            position, yaw = parse_player_update(payload)
            session.claim(position, yaw)
        else:
            session.anim = parse_animation_update(payload)

    def _remember(self, rid: str, now: float) -> None:
        """Deduplicates reliable envelopes by ID for RELIABLE_MEMORY seconds, like geckos."""
        ids = self.received_ids
        while ids:
            first = next(iter(ids))
            if ids[first] > now:
                break
            del ids[first]
        if rid in ids:
            raise Drop("duplicate")
        if len(ids) >= MAX_RELIABLE_IDS:
            raise Drop("reliable_overflow")
        ids[rid] = now + RELIABLE_MEMORY


# -- the service --------------------------------------------------------------------------------
class HatongsuService:
    """Hatongsu clients on geckos.io channels: ``accepts``, ``open``, ``on_text``, ``close``."""

    # The server's worldserver.moderation.Moderation (set by worldserver.app): no one new
    # while it drains. None: no refusals.
    moderation = None

    def __init__(self, sim, stats) -> None:
        self.sim = sim
        self.stats = stats
        self.clients: dict[str, HatongsuClient] = {}
        self.by_entity: dict[int, HatongsuClient] = {}  # entity id -> the Hatongsu player's client
        self.input_rate = float(sim.config.sim.input_rate_limit)
        self.input_burst = int(sim.config.sim.input_burst)
        q = sim.quantizer
        self._mins = tuple(float(v) for v in q.mins)
        self._step = float(q.step)
        self._digits = min(6, max(0, math.ceil(-math.log10(self._step) - 1e-9)) + 1)
        self.far_q2 = (FAR_DISTANCE / self._step) ** 2  # in quantized units, squared
        self._salt = os.urandom(16)
        self._canonical: dict[int, str] = {}

    # -- what the dispatcher calls --------------------------------------------------------------
    def accepts(self, text: object) -> bool:
        """Is this a Hatongsu event (a geckos JSON event named like one a Hatongsu client sends)?"""
        try:
            event, _ = parse_event(text)
        except Drop:
            return False
        return event in CLIENT_EVENTS

    def open(self, peer, now: float) -> HatongsuSession | None:
        """Joins the peer's avatar; its own spawn and the players around go out next tick.

        The Hatongsu client sends nothing before it has its own ``serverNewPlayer``, so a
        peer may be opened before any message came from it.
        """
        if peer.id in self.clients:
            return self.clients[peer.id].session
        if self.moderation is not None and self.moderation.connect_refusal("hatongsu", None, now) is not None:
            peer.close("shutting_down")  # Hatongsu has no refusal event: the channel closes
            return None
        client = HatongsuClient(self, peer, now)
        self.clients[peer.id] = client
        try:
            session = self.sim.join(client, now, session_cls=HatongsuSession)
        except WorldFull:
            self.stats.incr("drop.hatongsu.world_full")
            log.info("hatongsu client refused, world full", peer=client.player_id)
            return None
        session.world = self.sim.world
        session.dt = self.sim.dt
        session.transport = "hatongsu"
        session.end = getattr(peer, "close", None)  # a kick closes the channel; close() makes the avatar leave
        client.session = session
        self.by_entity[session.entity_id] = client
        log.info("client joined", id=session.entity_id, name=session.name, transport="hatongsu",
                 address=peer.remote, peer=client.player_id)
        return session

    def on_text(self, peer, text: object, now: float) -> None:
        """One text message of the peer: applied, or dropped and counted. Never raises."""
        client = self.clients.get(peer.id)
        try:
            if client is None or client.closed:
                raise Drop("no_session")
            client.take_text(text, now)
        except Drop as drop:
            self.stats.incr(f"drop.hatongsu.{drop.reason}")
        else:
            self.stats.incr("hatongsu.messages_in")

    def close(self, peer, reason: str) -> None:
        """The peer is gone: its avatar leaves; every client that saw it gets a disconnect."""
        client = self.clients.pop(peer.id, None)
        if client is None:
            return
        client.closed = True
        client.reliable.clear()
        session = client.session
        if session is not None:
            self.by_entity.pop(session.entity_id, None)
            self.sim.leave(session)
            log.info("client left", id=session.entity_id, name=session.name, transport="hatongsu",
                     address=peer.remote, peer=client.player_id, reason=reason)

    # -- ids and transforms ---------------------------------------------------------------------
    def canonical_id(self, eid: int) -> str:
        """The id everyone is first told for an entity: a Hatongsu player's own geckos id,
        else 24 ``[A-Za-z0-9]`` derived from the entity id and its owner (a reused slot has a
        new generation and owner, so a new id)."""
        client = self.by_entity.get(eid)
        if client is not None:
            return client.player_id
        cid = self._canonical.get(eid)
        if cid is None:
            world = self.sim.world
            slot = world.slot_of(eid)
            owner = int(world.owner[slot]) if slot is not None else -1
            digest = hashlib.blake2b(f"{eid}:{owner}".encode(), key=self._salt, digest_size=24).digest()
            cid = "".join(_ALPHABET[b % 62] for b in digest)
            if len(self._canonical) > 4 * world.capacity:
                self._canonical.clear()  # entries of despawned entities; recomputed on demand
            self._canonical[eid] = cid
        return cid

    def alias_for_entry(self, eid: int, client: HatongsuClient) -> str:
        """The id for an entity entering a client's view: the canonical id the first time
        (no alias is known to the client yet), a fresh random one when it comes back."""
        cid = self.canonical_id(eid)
        used = client.used_canonical
        if cid in used:
            return random_id()
        used.add(cid)
        return cid

    def transform(self, row) -> dict:
        """Hatongsu transform of one quantized state row (x, y, z, yaw, anim)."""
        mins, step, digits = self._mins, self._step, self._digits
        yaw = (int(row[3]) & 0xFFFF) * (2 * math.pi / 65536)
        if yaw > math.pi:
            yaw -= 2 * math.pi  # keeps w >= 0
        half = yaw / 2
        return {
            "position": {
                "x": round(mins[0] + int(row[0]) * step, digits),
                "y": round(mins[1] + int(row[1]) * step, digits),
                "z": round(mins[2] + int(row[2]) * step, digits),
            },
            "rotation": {"x": 0, "y": round(math.sin(half), 6), "z": 0, "w": round(math.cos(half), 6)},
        }

    @staticmethod
    def anim_state(anim: int) -> int:
        """A native animation code as a Hatongsu state (0 idle, 1 walk, 2 run, 3 jump)."""
        return int(anim) if 0 <= int(anim) <= 3 else 0
