"""The swarm's bots: how they walk and what they count; one bot set for every transport.

Job: :class:`BotSet` holds one process's bots and the synchronous halves of the swarm's loop:
the send slot (start handshakes at the pace the transport admits, send each live bot's input
at 20 Hz, poll the connections) and the receiving side (:meth:`BotSet.receive`: a packet from
the server through the bot's ``ClientConnection``, then counting and observing). Bots walk a
random walk inside the world bounds, facing where they go: light bots toward random
waypoints over the whole world (so a swarm that starts at the spawn spreads out), the first
``observers`` near the centre, where they decode every snapshot into a
:class:`worldclient.mirror.WorldMirror` and measure the move-to-observed latency (from one
observer's turn leaving to another first seeing it move the new way) and the share of the
entities in view each snapshot refreshed (:func:`track_refresh`). A turn (a latency probe)
the server did not carry out as sent, because a wall stopped the bot or it slid along one,
is void and counted in ``probes_blocked``: the turner's own snapshots say when its input was
applied (``input_ack``) and how it moved then (:meth:`BotSet._check_probe`); without this a
slide would be "seen" only when the bot leaves the wall, a sample of the walls, not of the
network. A tick's snapshot may come in several parts: "snapshots" count complete ticks
(:func:`tick_completed`, which reads the part header at fixed offsets without decoding),
"parts" the packets. Loss comes from the packets' sequence numbers. :meth:`BotSet.result`
gives the raw counts of a measurement window (see :mod:`worldtools.swarm.report`).

How a bot's packets travel is the transport's business (:mod:`worldtools.swarm.transport`):
the bot set asks it to open, send on and close a bot's link, and the transport calls back
:meth:`BotSet.hello`, :meth:`BotSet.receive` and :meth:`BotSet.fail`.

Must not: import server internals (a bot knows only what the wire tells it), touch sockets,
channels or trio (the transport and the loop do), or keep unbounded state per bot (ticks
tracked and inputs repeated are bounded).
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.client import ClientConnection
from protocol.errors import ProtocolError
from protocol.events import Connected, Disconnected, Received, Refused
from protocol.messages import Input, Welcome, encode_inputs
from protocol.snapshot import PartHeader
from worldclient.mirror import WorldMirror
from worldtools.swarm.transport import Transport

__all__ = ["Bot", "BotSet", "tick_completed", "track_refresh"]

SEND_INTERVAL = 0.05  # inputs at 20 Hz
# Each bot sends in one of PHASES sub-slots of the 50 ms interval (chosen at random), as
# independent clients would: the server sees no synchronized bursts, and the latency samples
# cover the phases between client sends and server ticks instead of one arbitrary phase.
PHASES = 5
INPUT_REDUNDANCY = 4  # each INPUT packet repeats the last few inputs for loss tolerance
CONNECT_BATCH = 10  # handshakes started per sub-slot (1000 bots: all started within 1 s)
HANDSHAKE_TIMEOUT = 5.0
CONN_TIMEOUT = 5.0
TIMEOUT_POLL = 0.5  # how often connected bots are checked for server silence
HOLD_MIN, HOLD_MAX = 1.0, 3.0  # seconds a random-walk direction is held
MIN_TURN = math.radians(60)  # random turns change direction by at least this much
TURN_RECORD_MIN = math.radians(40)  # smaller direction changes are not latency probes
MATCH_TOLERANCE = math.radians(20)  # observed direction within this of the turn = seen
OBSERVER_RADIUS = 20.0  # observers wander within this many metres of the centre
EDGE_MARGIN = 10.0  # light bots turn back this far inside the world bounds
WAYPOINT_REACHED = 2.0  # metres: a light bot picks its next waypoint this close to the last
WAYPOINT_TIMEOUT = 60.0  # seconds before a light bot gives up on an unreached waypoint
MAX_MOTION_GAP = 3  # ticks between two views for their position delta to count as motion
MIN_MOTION_Q = 3  # quantized units a seen entity must move per tick to have a direction
ANIM_WALK = 1
# Snapshot part header (SPEC.md 5.2): tick u32 LE at 0, part u8 at 16, parts u8 at 17.
PART_HEADER_BYTES = 18
TICKS_TRACKED = 64  # ticks whose parts a bot remembers (the newest), to complete and dedupe them
MOVING_WINDOW = 60  # ticks: an entity seen changing this recently counts as moving (refresh share)
_NEVER = -(1 << 40)
_TWO_PI = 2.0 * math.pi
_YAW_SCALE = 65536.0 / _TWO_PI

# States of a bot (beyond the connection's own).
WAITING, HANDSHAKE, LIVE, DEAD = 0, 1, 2, 3


def _angle_diff(a: float, b: float) -> float:
    """Absolute difference of two angles in radians, in [0, pi]."""
    d = (a - b) % _TWO_PI
    return _TWO_PI - d if d > math.pi else d


class Bot:
    """One simulated client: its link, connection, walk and counters."""

    __slots__ = (
        "index", "observer", "link", "conn", "state", "nonce", "phase", "token", "key",
        "connected_at", "ended_at",
        # walk
        "seq", "recent", "angle", "move_x", "move_z", "yaw", "turn_at", "last_step",
        "x", "z", "cx", "cz", "lo_x", "hi_x", "lo_z", "hi_z", "radius", "speed", "intent",
        # counters (measurement window only)
        "snapshots", "parts", "packets", "bytes_in", "inputs",
        "ext", "last16", "first_ext", "max_ext", "window_packets",
        "tick_parts",  # tick -> bit mask of the parts received (the newest TICKS_TRACKED ticks)
        # observers only
        "mirror", "last_tick", "prev", "matched", "tx", "tz",
        "turn_id", "turn_time", "turn_angle", "turn_seq", "entity_id", "seen_sum", "seen_n",
        "own_ack", "own_qx", "own_qz", "step_q",
        "r_tick", "r_ids", "r_q", "r_last", "refresh_changed", "refresh_moving",
    )  # fmt: skip

    def __init__(self, index: int, observer: bool, nonce: int, phase: int) -> None:
        self.index = index
        self.observer = observer
        self.nonce = nonce
        self.phase = phase
        self.token = b""  # connect token and key from the bot's HTTP join (b"": anonymous)
        self.key = b""
        self.link = None  # the transport's handle for this bot's connection (None: none)
        self.conn: ClientConnection | None = None
        self.state = WAITING
        self.connected_at = 0.0
        self.ended_at = 0.0
        self.seq = 0
        self.recent: deque[Input] = deque(maxlen=INPUT_REDUNDANCY)
        self.angle = 0.0
        self.move_x = self.move_z = self.yaw = 0
        self.turn_at = 0.0
        self.last_step = 0.0
        self.x = self.z = self.cx = self.cz = 0.0
        self.tx = self.tz = 0.0  # waypoint of a light bot
        self.lo_x = self.hi_x = self.lo_z = self.hi_z = 0.0
        self.radius = OBSERVER_RADIUS
        self.speed = 5.0  # walking speed in m/s
        self.intent = 127.0  # length of the movement intent (127 = the server's max speed)
        self.snapshots = self.parts = self.packets = self.bytes_in = self.inputs = 0
        self.tick_parts: dict[int, int] = {}
        self.ext = -1
        self.last16 = 0
        self.first_ext = -1
        self.max_ext = -1
        self.window_packets = 0
        self.mirror: WorldMirror | None = None
        self.last_tick = -1
        self.prev: dict[int, tuple[int, int, int]] = {}
        self.matched: dict[int, int] = {}
        self.turn_id = 0
        self.turn_time = 0.0
        self.turn_angle = 0.0
        self.turn_seq = 0  # input sequence that carried the probe, until its check (0: none)
        self.own_ack = -1  # the newest own snapshot that sent the bot's position: input_ack, x, z
        self.own_qx = self.own_qz = 0
        self.step_q = 0.0  # quantized units one input moves the bot (speed / tick rate / step)
        self.entity_id = -1
        self.seen_sum = 0
        self.seen_n = 0
        self.r_tick = -1
        self.r_ids = self.r_q = self.r_last = None
        self.refresh_changed = 0
        self.refresh_moving = 0


def _sent_now(mirror: WorldMirror, header: PartHeader, qx: int, qz: int) -> bool:
    """Was the client's own position (``qx``, ``qz``) in the tick just completed sent in it?

    A full snapshot sends everyone. A delta sends an entity that is new or whose state
    changed; an entity the server held back (its byte allowance, SPEC.md 5.4) keeps its
    baseline state, so a position equal to the baseline's is no evidence of where the entity
    is now (held back, or standing still: either way not counted as fresh)."""
    if header.baseline_tick is None:
        return True
    base = mirror.views.get(header.baseline_tick)
    if base is None:
        return False
    ids = base.ids
    j = int(ids.searchsorted(header.self_id))
    if j == len(ids) or int(ids[j]) != header.self_id:
        return True  # added by this snapshot
    row = base.q[j]
    return int(row[0]) != qx or int(row[2]) != qz


def tick_completed(bot: Bot, payload: bytes) -> bool:
    """Record one received snapshot part; True when it completes its tick (the first time).

    Reads tick, ``part`` and ``parts`` at their fixed offsets (SPEC.md 5.2) without decoding.
    A duplicate part, a part of a tick already complete, or a part with an impossible header
    (``part >= parts``, too short) completes nothing.
    """
    if len(payload) < PART_HEADER_BYTES:
        return False
    part, parts = payload[16], payload[17]
    if part >= parts:
        return False
    tick = int.from_bytes(payload[0:4], "little")
    seen = bot.tick_parts
    before = seen.get(tick, 0)
    full = (1 << parts) - 1
    if before == full:
        return False  # already complete: a duplicate
    mask = before | (1 << part)
    if tick not in seen and len(seen) >= TICKS_TRACKED:
        del seen[next(iter(seen))]  # forget the oldest tick (ticks arrive roughly in order)
    seen[tick] = mask
    return mask == full




class BotSet:
    """The bots of one process and the synchronous halves of the loop (send slot, receiving),
    over ``transport``.

    Thread/loop rules: everything here is synchronous and runs on the loop's thread; a
    transport may call :meth:`receive`, :meth:`hello` and :meth:`fail` from its callbacks
    (aiortc's, for WebRTC) or tasks, never from another thread.
    """

    def __init__(self, transport: Transport, bots: int, observers: int, seed,
                 speed: float | None = None, clock: Callable[[], float] = time.monotonic,
                 tickets: list | None = None) -> None:
        """``tickets``: one per bot, ``(connect token, key)`` or the reason its join failed
        (a string: the bot fails with it); None: no tickets (anonymous bots, or a transport
        that needs none)."""
        if speed is not None and not speed > 0.0:
            raise ValueError(f"speed must be > 0 m/s, got {speed!r}")
        self.transport = transport
        self.speed = speed  # None: walk at the server's max speed
        self.clock = clock  # seconds; the same clock as the ``now`` the loop passes in
        self.rng = random.Random(seed)
        observers = max(0, min(int(observers), int(bots)))
        self.bots = [
            Bot(i, i < observers, self.rng.getrandbits(64), self.rng.randrange(PHASES))
            for i in range(int(bots))
        ]
        self.waiting: deque[Bot] = deque()
        self.handshaking: list[Bot] = []
        self.live: list[Bot] = []
        self.failures: dict[str, int] = {}
        if tickets is not None and len(tickets) != len(self.bots):
            raise ValueError(f"{len(tickets)} tickets for {len(self.bots)} bots")
        for bot, ticket in zip(self.bots, tickets or [None] * len(self.bots)):
            if isinstance(ticket, str):  # its join failed: it never starts
                self.failures[ticket] = self.failures.get(ticket, 0) + 1
                bot.state = DEAD
                continue
            if ticket is not None:
                bot.token, bot.key = ticket
            self.waiting.append(bot)
        self.decode_errors: dict[str, int] = {}
        self.socket_errors: dict[str, int] = {}
        self.latency_ms: list[float] = []
        self.probes_blocked = 0  # latency probes voided: the server did not move the bot as sent
        self.input_backlog: list[int] = []  # observers: inputs sent but not yet applied
        self.observer_by_id: dict[int, Bot] = {}
        self.observer_ids = np.zeros(0, dtype=np.uint32)
        self.measure_start = 0.0
        self.send_late: list[float] = []
        self.next_timeout_poll = 0.0
        self.connected_ever = 0
        self.bytes_total = 0  # whole run, for the progress line
        self.snapshots_total = 0  # complete ticks, whole run
        self.latency_reported = 0  # latency samples already handed to progress_counts
        transport.bind(self)

    # -- connection management --------------------------------------------------------------
    def settled(self) -> bool:
        """Every bot is connected or has failed: the set-up is over."""
        return not self.waiting and not self.handshaking

    def fail(self, bot: Bot, reason: str, now: float) -> None:
        """The bot failed (counted under ``reason``): its link is closed, it is done."""
        self.failures[reason] = self.failures.get(reason, 0) + 1
        self._close_bot(bot, now)

    def _close_bot(self, bot: Bot, now: float) -> None:
        if bot.state == LIVE:
            self.live.remove(bot)
            if bot.observer and bot.entity_id in self.observer_by_id:
                del self.observer_by_id[bot.entity_id]
                self._rebuild_observer_ids()
        elif bot.state == HANDSHAKE:
            self.handshaking.remove(bot)
        bot.state = DEAD
        bot.ended_at = now
        self.transport.close(bot)

    def _start_handshake(self, bot: Bot, now: float) -> None:
        bot.conn = ClientConnection(
            version=PROTOCOL_VERSION,
            nonce=bot.nonce,
            timeout=CONN_TIMEOUT,
            handshake_timeout=HANDSHAKE_TIMEOUT,
            token=bot.token,
            key=bot.key,
            trusted=self.transport.trusted,
        )
        bot.state = HANDSHAKE
        self.handshaking.append(bot)
        self.transport.open(bot, now)

    def hello(self, bot: Bot, now: float) -> None:
        """The bot's link is open: send its HELLO (the transport calls this)."""
        self._send(bot, bot.conn.connect(now))

    def _send(self, bot: Bot, data: bytes) -> bool:
        result = self.transport.send(bot, data)
        if result is True:
            return True
        if result:
            self.failures_soft(result)
        return False

    def failures_soft(self, name: str) -> None:
        """Counted but not a failure of the bot (the packet is simply lost)."""
        self.socket_errors[name] = self.socket_errors.get(name, 0) + 1

    def _on_connected(self, bot: Bot, event: Connected, now: float) -> None:
        try:
            welcome = Welcome.decode(event.welcome)
        except ProtocolError as exc:
            self.fail(bot, f"bad_welcome_{exc.reason}", now)
            return
        self.handshaking.remove(bot)
        self.live.append(bot)
        self.connected_ever += 1
        bot.state = LIVE
        bot.connected_at = now
        bot.entity_id = welcome.entity_id
        self._set_speed(bot, welcome.max_speed)
        (x0, _, z0), (x1, _, z1) = welcome.mins, welcome.maxs
        bot.cx, bot.cz = (x0 + x1) / 2.0, (z0 + z1) / 2.0
        margin_x = min(EDGE_MARGIN, (x1 - x0) / 4.0)
        margin_z = min(EDGE_MARGIN, (z1 - z0) / 4.0)
        bot.lo_x, bot.hi_x = x0 + margin_x, x1 - margin_x
        bot.lo_z, bot.hi_z = z0 + margin_z, z1 - margin_z
        # Light bots do not decode their own position: they dead-reckon from the centre (the
        # spawn area); observers correct it from their snapshots.
        bot.x, bot.z = bot.cx, bot.cz
        bot.radius = min(OBSERVER_RADIUS, (x1 - x0) / 4.0, (z1 - z0) / 4.0)
        bot.last_step = now
        self._set_direction(bot, self.rng.uniform(0.0, _TWO_PI), now, record=False)
        if bot.observer:
            bot.mirror = WorldMirror(welcome)
            bot.step_q = bot.speed / welcome.tick_rate / welcome.position_step
            self.observer_by_id[bot.entity_id] = bot
            self._rebuild_observer_ids()

    def _set_speed(self, bot: Bot, max_speed: float) -> None:
        """Walk at ``self.speed`` (None: the server's ``max_speed``): the movement intent is
        scaled by speed / max_speed (the server moves an entity at intent x max_speed)."""
        speed = max_speed if self.speed is None or max_speed <= 0.0 else min(self.speed, max_speed)
        bot.speed = speed
        bot.intent = 127.0 if max_speed <= 0.0 else 127.0 * speed / max_speed

    def _rebuild_observer_ids(self) -> None:
        self.observer_ids = np.array(sorted(self.observer_by_id), dtype=np.uint32)


    # -- the walk -----------------------------------------------------------------------------
    def _set_direction(self, bot: Bot, angle: float, now: float, record: bool = True) -> None:
        change = _angle_diff(angle, bot.angle)
        angle %= _TWO_PI
        bot.angle = angle
        mx = int(round(bot.intent * math.cos(angle)))
        mz = int(round(bot.intent * math.sin(angle)))
        bot.move_x, bot.move_z = mx, mz
        # Facing the movement direction: yaw 0 faces +z, growing toward +x.
        bot.yaw = int(round((math.atan2(mx, mz) % _TWO_PI) * _YAW_SCALE)) & 0xFFFF
        bot.turn_at = now + self.rng.uniform(HOLD_MIN, HOLD_MAX)
        if bot.observer:
            if record and change >= TURN_RECORD_MIN:
                bot.turn_id += 1
                bot.turn_time = -1.0  # set to the send time of the input that carries it
                bot.turn_angle = math.atan2(mz, mx)
                bot.turn_seq = 0  # and its sequence number
            elif change >= MATCH_TOLERANCE:
                bot.turn_id += 1  # a small change: old probe void, no new one
                bot.turn_time = math.inf
                bot.turn_seq = 0

    def _steer(self, bot: Bot, now: float) -> None:
        dt = min(now - bot.last_step, 0.2)
        bot.last_step = now
        k = bot.speed * dt / bot.intent
        x = bot.x + bot.move_x * k
        z = bot.z + bot.move_z * k
        if not bot.observer:
            # Light bots: random waypoints over the whole world, so that a swarm that starts
            # at the spawn point spreads out (a random walk would stay crowded for minutes).
            x = min(max(x, bot.lo_x - EDGE_MARGIN), bot.hi_x + EDGE_MARGIN)
            z = min(max(z, bot.lo_z - EDGE_MARGIN), bot.hi_z + EDGE_MARGIN)
            bot.x, bot.z = x, z
            if now >= bot.turn_at or (x - bot.tx) ** 2 + (z - bot.tz) ** 2 < WAYPOINT_REACHED**2:
                bot.tx = self.rng.uniform(bot.lo_x, bot.hi_x)
                bot.tz = self.rng.uniform(bot.lo_z, bot.hi_z)
                self._set_direction(bot, math.atan2(bot.tz - z, bot.tx - x), now)
                bot.turn_at = now + WAYPOINT_TIMEOUT
            return
        outside = (x - bot.cx) ** 2 + (z - bot.cz) ** 2 > bot.radius**2
        bot.x, bot.z = x, z
        if outside:
            home = math.atan2(bot.cz - z, bot.cx - x)
            if _angle_diff(home, bot.angle) > math.pi / 3:
                self._set_direction(bot, home + self.rng.uniform(-math.pi / 6, math.pi / 6), now)
                return
        if now >= bot.turn_at:
            self._set_direction(bot, bot.angle + self.rng.uniform(MIN_TURN, _TWO_PI - MIN_TURN), now)

    # -- the send slot ------------------------------------------------------------------------
    def send_slot(self, now: float, phase: int) -> None:
        """One sub-slot: start a batch of handshakes (as many as the transport admits),
        resend/expire pending ones, and send the input of every live bot of this ``phase``."""
        for _ in range(min(CONNECT_BATCH, self.transport.admit(now, len(self.waiting)))):
            self._start_handshake(self.waiting.popleft(), now)
        for bot in list(self.handshaking):
            self._poll(bot, now)
        counting = now >= self.measure_start
        clock = self.clock
        for bot in self.live:
            if bot.phase != phase:
                continue
            self._steer(bot, now)
            bot.seq += 1
            bot.recent.append(Input(bot.seq, bot.move_x, bot.move_z, bot.yaw, ANIM_WALK, 0))
            data = bot.conn.packet(P.INPUT, encode_inputs(list(bot.recent)), now)
            if self._send(bot, data) and counting:
                bot.inputs += 1
            if bot.observer and bot.turn_time < 0.0:
                bot.turn_time = clock()  # the turn left with this datagram
                bot.turn_seq = bot.seq  # checked once the server has applied it (_check_probe)
        if now >= self.next_timeout_poll:
            self.next_timeout_poll = now + TIMEOUT_POLL
            for bot in list(self.live):
                self._poll(bot, now)

    def _poll(self, bot: Bot, now: float) -> None:
        """The bot's connection's timers: resends, keepalives, timeouts."""
        events, out = bot.conn.poll(now)
        for data in out:
            self._send(bot, data)
        if events:
            self._handle_events(bot, events, now)

    # -- receiving ----------------------------------------------------------------------------
    def receive(self, bot: Bot, data: bytes, now: float) -> None:
        """One packet from the server for ``bot`` (the transport calls this)."""
        if bot.state == DEAD:
            return
        self.bytes_total += len(data)
        events, out = bot.conn.receive_datagram(data, now)
        for reply in out:
            self._send(bot, reply)
        if events:
            self._handle_events(bot, events, now, len(data))

    def _handle_events(self, bot: Bot, events: list, now: float, size: int = 0) -> None:
        for ev in events:
            kind = type(ev)
            if kind is Received:
                if bot.state != LIVE:
                    continue
                complete = ev.ptype == P.SNAPSHOT and tick_completed(bot, ev.payload)
                if complete:
                    self.snapshots_total += 1
                if now >= self.measure_start:
                    self._count_packet(bot, ev, size, complete)
                if bot.observer and ev.ptype == P.SNAPSHOT:
                    self._observe(bot, ev.payload, now)
            elif kind is Connected:
                self._on_connected(bot, ev, now)
            elif kind is Refused:
                self.fail(bot, f"refused_{ev.reason}", now)
            elif kind is Disconnected:
                if bot.state == LIVE:
                    reason = f"disconnect_{ev.reason}"
                elif ev.reason.startswith("handshake"):
                    reason = ev.reason
                else:
                    reason = f"handshake_{ev.reason}"
                self.fail(bot, reason, now)
                return

    def _count_packet(self, bot: Bot, ev: Received, size: int, complete: bool) -> None:
        bot.packets += 1
        bot.bytes_in += size
        if ev.ptype == P.SNAPSHOT:
            bot.parts += 1
            if complete:
                bot.snapshots += 1
        seq = ev.seq
        if bot.ext < 0:
            bot.ext = seq
            bot.last16 = seq
            ext = seq
        else:
            diff = (seq - bot.last16) & 0xFFFF
            if diff < 0x8000:
                bot.ext += diff
                bot.last16 = seq
                ext = bot.ext
            else:
                ext = bot.ext - (0x10000 - diff)
        if bot.first_ext < 0:
            bot.first_ext = ext
        if ext >= bot.first_ext:
            bot.window_packets += 1
            if ext > bot.max_ext:
                bot.max_ext = ext

    def _observe(self, bot: Bot, payload: bytes, now: float) -> None:
        """Decode one snapshot into the observer's mirror; look for other observers' turns."""
        mirror = bot.mirror
        header = mirror.apply(payload)  # decode failures are counted in mirror.dropped
        if header is None or header.tick != mirror.view.tick or header.tick <= bot.last_tick:
            return  # dropped, or arrived out of order: kept as a baseline, not news
        view = mirror.view
        bot.last_tick = view.tick
        if now >= self.measure_start and header.input_ack > 0:
            self.input_backlog.append(bot.seq - header.input_ack)
        ids, q = view.ids, view.q
        bot.seen_sum += len(ids)
        bot.seen_n += 1
        track_refresh(bot, view.tick, ids, q, now >= self.measure_start)
        qz = mirror.quantizer
        i = int(ids.searchsorted(header.self_id))
        if i < len(ids) and int(ids[i]) == header.self_id:
            own_x, own_z = int(q[i, 0]), int(q[i, 2])
            bot.x = qz.mins[0] + own_x * qz.step
            bot.z = qz.mins[2] + own_z * qz.step
            if _sent_now(mirror, header, own_x, own_z):
                ack = header.input_ack
                if bot.turn_seq and ack >= bot.turn_seq:
                    self._check_probe(bot, ack, own_x, own_z, now)
                bot.own_ack, bot.own_qx, bot.own_qz = ack, own_x, own_z
        others = self.observer_ids
        if not len(others) or not len(ids):
            return
        pos = ids.searchsorted(others)
        np.minimum(pos, len(ids) - 1, out=pos)
        hits = np.flatnonzero(ids[pos] == others)
        counting = now >= self.measure_start
        for k in hits.tolist():
            eid = int(others[k])
            if eid == header.self_id:
                continue
            row = int(pos[k])
            qx, qzv = int(q[row, 0]), int(q[row, 2])
            prev = bot.prev.get(eid)
            bot.prev[eid] = (view.tick, qx, qzv)
            if prev is None:
                continue
            gap = view.tick - prev[0]
            if gap > MAX_MOTION_GAP:
                continue
            dx, dz = qx - prev[1], qzv - prev[2]
            if dx * dx + dz * dz < (MIN_MOTION_Q * gap) ** 2:
                continue
            other = self.observer_by_id.get(eid)
            if other is None or other.turn_id == 0 or not 0.0 < other.turn_time < now:
                continue
            if bot.matched.get(eid) == other.turn_id:
                continue
            if _angle_diff(math.atan2(dz, dx), other.turn_angle) <= MATCH_TOLERANCE:
                bot.matched[eid] = other.turn_id
                if counting and other.turn_time >= self.measure_start:
                    self.latency_ms.append((now - other.turn_time) * 1000.0)

    def _check_probe(self, bot: Bot, ack: int, qx: int, qz: int, now: float) -> None:
        """The bot's own snapshot says the server has applied its probe's input (``ack`` >=
        ``turn_seq``) and where the bot is now (``qx``, ``qz``, sent in this snapshot: see
        :func:`_sent_now`): did the server carry the turn out as sent?

        Decided from the protocol's facts only, never from timing. The previous such
        snapshot (``own_ack``, ``own_qx``, ``own_qz``) is the reference. Inputs are applied
        in sequence order, one tick's worth each, so when ``own_ack`` was at least
        ``turn_seq - 1`` and ``ack`` is higher, every input applied in between is one of the
        turn's (an observer's every later change of direction makes a new probe or voids this
        one, and resets ``turn_seq``), and the bot's motion since the reference is the turn's.
        When it is shorter than half an input's worth or off the turn's direction by more than
        ``MATCH_TOLERANCE`` (a wall stopped the bot or it slides along one: the others would
        see the turn only once it leaves the wall), the probe is void and counted in
        ``probes_blocked``; samples others recorded before stay (they saw it in time).
        Otherwise the probe stands. Either way it is checked once. When the motion since the
        reference also has inputs from before the turn (a late input caught up with it), the
        check waits for the next snapshot.
        """
        if bot.own_ack < bot.turn_seq - 1 or ack <= bot.own_ack:
            return  # motion mixed with older inputs, or none applied since the last view
        bot.turn_seq = 0
        dx, dz = qx - bot.own_qx, qz - bot.own_qz
        if (4 * (dx * dx + dz * dz) >= bot.step_q * bot.step_q
                and _angle_diff(math.atan2(dz, dx), bot.turn_angle) <= MATCH_TOLERANCE):
            return
        if now >= self.measure_start and bot.turn_time >= self.measure_start:
            self.probes_blocked += 1
        bot.turn_id += 1
        bot.turn_time = math.inf

    # -- results ------------------------------------------------------------------------------
    def progress_counts(self) -> dict:
        """Totals so far (connected, complete snapshots, bytes, failures, and the packets
        expected and received while measuring) and the latency samples new since the last
        call (``latency_ms``)."""
        expected = received = 0
        for bot in self.bots:
            if bot.first_ext >= 0:
                expected += bot.max_ext - bot.first_ext + 1
                received += bot.window_packets
        new = self.latency_ms[self.latency_reported:]
        self.latency_reported = len(self.latency_ms)
        return dict(
            connected=len(self.live),
            snapshots=self.snapshots_total,
            bytes=self.bytes_total,
            failures=sum(self.failures.values()),
            packets_expected=expected,
            packets_received=received,
            latency_ms=new,
            **self.transport.counts(),
        )

    def teardown(self, now: float) -> None:
        """Say goodbye (DISCONNECT sent twice, as SPEC.md says), count the bots that never
        started, and close every link (the transport's ``close_all`` finishes the job)."""
        for bot in list(self.live):
            data = bot.conn.disconnect(now)
            if data:
                self._send(bot, data)
                self._send(bot, data)
            bot.ended_at = now
            self.live.remove(bot)
            bot.state = DEAD
        for bot in list(self.handshaking):
            self.fail(bot, "handshake_unfinished", now)
        for bot in self.waiting:
            self.failures["not_started"] = self.failures.get("not_started", 0) + 1
        self.waiting.clear()
        for bot in self.bots:
            if bot.link is not None:
                self.transport.close(bot)

    def result(self, requested: int, end: float, cpu_s: float, window: float) -> dict:
        connected_s = 0.0
        snaps = parts = pkts = nbytes = inputs = expected = received = 0
        seen_sum = seen_n = refresh_changed = refresh_moving = 0
        for bot in self.bots:
            if bot.connected_at > 0.0:
                start = max(bot.connected_at, self.measure_start)
                stop = min(bot.ended_at or end, end)
                connected_s += max(0.0, stop - start)
            snaps += bot.snapshots
            parts += bot.parts
            pkts += bot.packets
            nbytes += bot.bytes_in
            inputs += bot.inputs
            if bot.first_ext >= 0:
                expected += bot.max_ext - bot.first_ext + 1
                received += bot.window_packets
            seen_sum += bot.seen_sum
            seen_n += bot.seen_n
            refresh_changed += bot.refresh_changed
            refresh_moving += bot.refresh_moving
            if bot.mirror is not None:
                for reason, n in bot.mirror.dropped.items():
                    self.decode_errors[reason] = self.decode_errors.get(reason, 0) + n
        return dict(
            bots_requested=requested,
            observers=sum(1 for b in self.bots if b.observer),
            connected=self.connected_ever,
            failure_reasons=dict(self.failures),
            decode_errors=dict(self.decode_errors),
            socket_errors=dict(self.socket_errors),
            snapshots=snaps,
            parts=parts,
            packets=pkts,
            bytes=nbytes,
            inputs=inputs,
            connected_seconds=connected_s,
            packets_expected=expected,
            packets_received=received,
            latency_samples_ms=list(self.latency_ms),
            probes_blocked=self.probes_blocked,
            observed_entities_sum=seen_sum,
            observed_views=seen_n,
            refresh_changed=refresh_changed,
            refresh_moving=refresh_moving,
            send_late_ms=list(self.send_late),
            input_backlog=list(self.input_backlog),
            cpu_s=cpu_s,
            window_s=window,
            processes=1,
        )


def track_refresh(bot: Bot, tick: int, ids: np.ndarray, q: np.ndarray, counting: bool) -> None:
    """One complete view of an observer: which entities did it refresh?

    Compares the view with the observer's previous complete view. When that one is exactly
    one tick older (and ``counting``), the entities in both views that are moving (seen
    changing within :data:`MOVING_WINDOW` ticks, or now) are counted in ``refresh_moving``,
    and those whose state changed in ``refresh_changed``. In a crowd that walks all the time,
    changed / moving is the share of the visible entities refreshed per snapshot; an entity
    the server skipped keeps its old state and counts as not refreshed. It is a lower bound:
    an entity that really stood still for a tick (its client's input came a tick late) did
    not change either; the server's counters know the difference, the observers do not.
    """
    last = np.full(len(ids), _NEVER, dtype=np.int64)  # tick each entity was last seen changing
    prev_ids = bot.r_ids
    if prev_ids is not None and len(prev_ids) and len(ids):
        pos = prev_ids.searchsorted(ids)
        np.minimum(pos, len(prev_ids) - 1, out=pos)
        both = np.flatnonzero(prev_ids[pos] == ids)
        at = pos[both]
        changed = (q[both] != bot.r_q[at]).any(axis=1)
        before = bot.r_last[at]
        last[both] = np.where(changed, tick, before)
        if counting and tick - bot.r_tick == 1:
            bot.refresh_changed += int(np.count_nonzero(changed))
            bot.refresh_moving += int(np.count_nonzero(changed | (before >= tick - MOVING_WINDOW)))
    bot.r_tick, bot.r_ids, bot.r_q, bot.r_last = tick, ids, q, last

