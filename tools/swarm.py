"""Headless bot swarm: many simulated clients driving a running worldserver, and a report.

Job: connect N bots to a server over the real UDP protocol (each bot its own socket, its own
handshake), send inputs at 20 Hz (a random walk inside the world bounds, facing where it
goes), and measure what the clients get: snapshots and bytes per bot per second, packet loss
from the snapshot sequence numbers, handshake and connection failures, and the
move-to-observed latency -- the time from one bot sending a turn to another bot first seeing
that bot's entity move in the new direction -- measured by a few "observer" bots that decode
every snapshot. A tick's snapshot may come in several parts (SNAPSHOT packets, protocol
version 2): "snapshots" count complete ticks (every part of the tick arrived), "parts" count
the packets. Observers also measure the share of the entities in view whose state each
complete snapshot refreshed. ``speed`` (m/s) makes the bots walk slower than the server's
``sim.max_speed``. ``run_swarm(args)`` is the ``worldserver swarm`` entry point;
``run_bots(...)`` runs one process's share of bots inside trio; ``run_processes(...)``
spreads the bots over worker processes and merges their results. ``--transport webrtc|ws``
hands over to :mod:`worldtools.swarm_rtc`, the same bots over the browser transports.

Set-up, then measurement: the bots join and connect first (connected bots already walk;
nothing is counted), until every bot is connected or has failed (bounded by
:func:`setup_bound`); then ``duration`` seconds are measured, in every worker process from
one common instant (the workers report ready, the parent sets the start). The report's
``setup_s`` says how long everything before the measurement took, ``duration_s`` how long
was measured. A progress line goes to stderr every second (:class:`ProgressLine`: set-up,
then connected bots, snapshots per second, latency p99 and packet loss so far).

Joining: a server on its default configuration lets in only UDP clients with a connect token
(``net.require_connect_token``), so each bot first joins over the server's HTTP port
(``POST /api/join``, one join per bot, names ``bot<run tag>-<n>``, ``worldclient.join``) and
connects with the connect token and key it got: its packets are tagged as a real client's.
``http=None`` (``--anonymous``) connects anonymously, for open servers. A refused join is the
bot's failure (``join_<code>``).

Efficiency: one loop per process, no task per bot. Sockets are plain non-blocking stdlib
sockets registered in one ``select.epoll``; trio only waits for that epoll fd to become
readable (or for the next 50 ms send slot), so an in-process server in the same trio run keeps
running. Light bots never decode snapshots: the connection layer parses the packet header
(which also acknowledges the packet in the next input), and the bot reads the part's tick,
``part`` and ``parts`` at their fixed offsets to count complete ticks.

Must not: import server internals (a bot knows only what the wire tells it), send to anything
but the server addresses it was given (UDP, and HTTP for the joins), or run unbounded: every
loop ends at ``duration`` plus a few seconds of teardown, and every handshake and join has its
own timeout.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import queue
import random
import resource
import select
import socket
import sys
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import trio

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.client import ClientConnection
from protocol.errors import ProtocolError
from protocol.events import Connected, Disconnected, Received, Refused
from protocol.messages import Input, Welcome, encode_inputs
from worldclient.join import JoinFailed, join_sync
from worldclient.mirror import WorldMirror

__all__ = ["join_bots", "make_report", "merge_results", "run_bots", "run_processes", "run_swarm"]

SEND_INTERVAL = 0.05  # inputs at 20 Hz
# Each bot sends in one of PHASES sub-slots of the 50 ms interval (chosen at random), as
# independent clients would: the server sees no synchronized bursts, and the latency samples
# cover the phases between client sends and server ticks instead of one arbitrary phase.
PHASES = 5
INPUT_REDUNDANCY = 4  # each INPUT packet repeats the last few inputs for loss tolerance
CONNECT_BATCH = 10  # handshakes started per sub-slot (1000 bots: all started within 1 s)
JOIN_TIMEOUT = 10.0  # seconds one HTTP join may take
HANDSHAKE_TIMEOUT = 5.0
CONN_TIMEOUT = 5.0
TIMEOUT_POLL = 0.5  # how often connected bots are checked for server silence
DRAIN_ROUNDS = 4  # epoll rounds per wakeup, each reading one datagram per ready socket
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
TEARDOWN_CAP = 10.0  # seconds beyond the duration after which workers are killed
PROGRESS_INTERVAL = 1.0
SETUP_SLACK = 5.0  # seconds beyond the expected set-up (connections, worker start) allowed
BEGIN_WAIT = 300.0  # seconds after the set-up to wait for ``begin`` before measuring anyway
_TWO_PI = 2.0 * math.pi
_YAW_SCALE = 65536.0 / _TWO_PI

# States of a bot (beyond the connection's own).
WAITING, HANDSHAKE, LIVE, DEAD = 0, 1, 2, 3


def _angle_diff(a: float, b: float) -> float:
    """Absolute difference of two angles in radians, in [0, pi]."""
    d = (a - b) % _TWO_PI
    return _TWO_PI - d if d > math.pi else d


class Bot:
    """One simulated client: its socket, connection, walk and counters."""

    __slots__ = (
        "index", "observer", "sock", "fd", "conn", "state", "nonce", "phase", "token", "key",
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
        "turn_id", "turn_time", "turn_angle", "entity_id", "seen_sum", "seen_n",
        "r_tick", "r_ids", "r_q", "r_last", "refresh_changed", "refresh_moving",
    )  # fmt: skip

    def __init__(self, index: int, observer: bool, nonce: int, phase: int) -> None:
        self.index = index
        self.observer = observer
        self.nonce = nonce
        self.phase = phase
        self.token = b""  # connect token and key from the bot's HTTP join (b"": anonymous)
        self.key = b""
        self.sock = None
        self.fd = -1
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
        self.entity_id = -1
        self.seen_sum = 0
        self.seen_n = 0
        self.r_tick = -1
        self.r_ids = self.r_q = self.r_last = None
        self.refresh_changed = 0
        self.refresh_moving = 0


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


class _Swarm:
    """The bots of one process and the synchronous halves of the loop (send slot, drain)."""

    def __init__(self, host: str, port: int, bots: int, observers: int, seed,
                 speed: float | None = None, clock: Callable[[], float] = time.monotonic,
                 tickets: list | None = None) -> None:
        """``tickets``: one per bot, ``(connect token, key)`` or the reason its join failed
        (a string: the bot fails with it); None: every bot anonymous."""
        if speed is not None and not speed > 0.0:
            raise ValueError(f"speed must be > 0 m/s, got {speed!r}")
        self.speed = speed  # None: walk at the server's max speed
        self.clock = clock  # seconds; the same clock as the ``now`` the loop passes in
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        self.family, _, _, _, self.addr = infos[0]
        self.rng = random.Random(seed)
        observers = max(0, min(int(observers), int(bots)))
        self.bots = [
            Bot(i, i < observers, self.rng.getrandbits(64), self.rng.randrange(PHASES))
            for i in range(int(bots))
        ]
        self.by_fd: dict[int, Bot] = {}
        self.ep = select.epoll()
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

    # -- connection management --------------------------------------------------------------
    def settled(self) -> bool:
        """Every bot is connected or has failed: the set-up is over."""
        return not self.waiting and not self.handshaking

    def _fail(self, bot: Bot, reason: str, now: float) -> None:
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
        if bot.sock is not None:
            try:
                self.ep.unregister(bot.fd)
            except (OSError, ValueError):
                pass
            self.by_fd.pop(bot.fd, None)
            bot.sock.close()
            bot.sock = None

    def _start_handshake(self, bot: Bot, now: float) -> None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("::1" if self.family == socket.AF_INET6 else "127.0.0.1", 0)
                  if _is_loopback(self.addr[0]) else ("", 0))
        sock.connect(self.addr)  # own source port; the kernel filters other senders
        bot.sock = sock
        bot.fd = sock.fileno()
        self.by_fd[bot.fd] = bot
        self.ep.register(bot.fd, select.EPOLLIN)
        bot.conn = ClientConnection(
            version=PROTOCOL_VERSION,
            nonce=bot.nonce,
            timeout=CONN_TIMEOUT,
            handshake_timeout=HANDSHAKE_TIMEOUT,
            token=bot.token,
            key=bot.key,
        )
        bot.state = HANDSHAKE
        self.handshaking.append(bot)
        self._send(bot, bot.conn.connect(now))

    def _send(self, bot: Bot, data: bytes) -> bool:
        try:
            bot.sock.send(data)
            return True
        except (BlockingIOError, InterruptedError):
            self.failures_soft("send_buffer_full")
        except OSError:  # ICMP port unreachable reported on a connected socket, etc.
            self.failures_soft("send_error")
        return False

    def failures_soft(self, name: str) -> None:
        """Counted but not a failure of the bot (the datagram is simply lost)."""
        self.socket_errors[name] = self.socket_errors.get(name, 0) + 1

    def _on_connected(self, bot: Bot, event: Connected, now: float) -> None:
        try:
            welcome = Welcome.decode(event.welcome)
        except ProtocolError as exc:
            self._fail(bot, f"bad_welcome_{exc.reason}", now)
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
            elif change >= MATCH_TOLERANCE:
                bot.turn_id += 1  # a small change: old probe void, no new one
                bot.turn_time = math.inf

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
        """One sub-slot: start a batch of handshakes, resend/expire pending ones, and send the
        input of every live bot of this ``phase``."""
        for _ in range(min(CONNECT_BATCH, len(self.waiting))):
            self._start_handshake(self.waiting.popleft(), now)
        for bot in list(self.handshaking):
            events, out = bot.conn.poll(now)
            for data in out:
                self._send(bot, data)
            if events:
                self._handle_events(bot, events, now)
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
        if now >= self.next_timeout_poll:
            self.next_timeout_poll = now + TIMEOUT_POLL
            for bot in list(self.live):
                events, out = bot.conn.poll(now)
                for data in out:
                    self._send(bot, data)
                if events:
                    self._handle_events(bot, events, now)

    # -- receiving ----------------------------------------------------------------------------
    def drain(self, now: float) -> None:
        """Read the datagrams waiting on the ready sockets: one per socket per epoll round.

        Reading until EAGAIN would cost a failing syscall (and a Python exception) per socket
        per wakeup; a second epoll round over all sockets costs one syscall. Sockets still
        holding datagrams after the last round stay readable and wake the loop again.
        """
        by_fd = self.by_fd
        poll = self.ep.poll
        for _ in range(DRAIN_ROUNDS):
            ready = poll(0)
            if not ready:
                return
            for fd, _ in ready:
                bot = by_fd.get(fd)
                if bot is None:
                    continue
                try:
                    data = bot.sock.recv(2048)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # e.g. ECONNREFUSED: the server is not (yet) there
                    self.failures_soft("recv_error")
                    continue
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
                self._fail(bot, f"refused_{ev.reason}", now)
            elif kind is Disconnected:
                if bot.state == LIVE:
                    reason = f"disconnect_{ev.reason}"
                elif ev.reason.startswith("handshake"):
                    reason = ev.reason
                else:
                    reason = f"handshake_{ev.reason}"
                self._fail(bot, reason, now)
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
            bot.x = qz.mins[0] + int(q[i, 0]) * qz.step
            bot.z = qz.mins[2] + int(q[i, 2]) * qz.step
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
        )

    def teardown(self, now: float) -> None:
        """Say goodbye (DISCONNECT sent twice, as SPEC.md says) and close every socket."""
        for bot in list(self.live):
            data = bot.conn.disconnect(now)
            if data:
                self._send(bot, data)
                self._send(bot, data)
            bot.ended_at = now
            self.live.remove(bot)
            bot.state = DEAD
        for bot in list(self.handshaking):
            self._fail(bot, "handshake_unfinished", now)
        for bot in self.waiting:
            self.failures["not_started"] = self.failures.get("not_started", 0) + 1
        self.waiting.clear()
        for bot in self.bots:
            if bot.sock is not None:
                self.by_fd.pop(bot.fd, None)
                bot.sock.close()
                bot.sock = None
        self.ep.close()

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


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host == "::1"


# ----------------------------------------------------------------------------- joining


def join_bots(http_url: str, count: int, tag: str | None = None, timeout: float = JOIN_TIMEOUT) -> list:
    """One ``POST /api/join`` per bot on the server at ``http_url``, over one keep-alive
    connection; returns a ticket per bot: ``(connect token, key)``, or ``join_<code>`` when
    its join was refused (``join_unreachable``: no answer). ``tag`` makes the names of this run
    (``bot<tag>-<n>``; default random, since names are kept for good)."""
    import httpx

    tag = tag or os.urandom(3).hex()
    tickets: list = []
    with httpx.Client(timeout=timeout) as http:
        for i in range(int(count)):
            try:
                joined = join_sync(http_url, f"bot{tag}-{i}", http=http, timeout=timeout)
            except JoinFailed as exc:
                tickets.append(f"join_{exc.code}")
                continue
            except httpx.HTTPError:
                tickets.append("join_unreachable")
                continue
            if not joined.connect_token:
                tickets.append("join_no_connect_token")  # the server has no UDP endpoint
                continue
            tickets.append((joined.connect_token, joined.connect_key))
    return tickets


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 2)


# ----------------------------------------------------------------------------- one process


def setup_bound(bots: int, connect_rate: float | None = None, open_timeout: float = 0.0) -> float:
    """Seconds the connections of ``bots`` bots may take before the measurement starts anyway:
    their handshakes start at ``connect_rate`` per second (UDP: :data:`CONNECT_BATCH` per
    sub-slot), each may take its opening (``open_timeout``) and handshake timeouts, plus
    :data:`SETUP_SLACK`. A bot still connecting then fails."""
    rate = connect_rate or CONNECT_BATCH * PHASES / SEND_INTERVAL
    return bots / rate + open_timeout + HANDSHAKE_TIMEOUT + SETUP_SLACK


class Phases:
    """The set-up and measurement phases of one swarm loop, on ``clock``.

    :meth:`update` is called on every pass of the loop with ``settled`` (every bot connected
    or failed): the set-up ends when it is true or ``setup_end`` has passed; then
    ``ready(setup_s)`` is called once, and the measurement starts when ``begin()`` returns a
    time (on ``clock``) that has come (None: not yet; no ``begin``: at once; at most
    :data:`BEGIN_WAIT` seconds later in any case) and lasts ``duration`` seconds.
    """

    def __init__(self, clock, t_begin: float, setup_end: float, duration: float, warmup: float,
                 ready=None, begin=None) -> None:
        self.clock = clock
        self.t_begin = t_begin
        self.setup_end = setup_end
        self.duration = max(0.0, float(duration))
        self.warmup = max(0.0, float(warmup))
        self.ready, self.begin = ready, begin
        self.set_up_at: float | None = None  # when the set-up ended
        self.t0 = math.inf  # the measurement's start
        self.end = math.inf

    @property
    def measuring(self) -> bool:
        return self.t0 != math.inf

    @property
    def name(self) -> str:
        """``"setup"``, ``"waiting"`` (set up, waiting for ``begin``) or ``"measure"``."""
        return "measure" if self.measuring else "setup" if self.set_up_at is None else "waiting"

    @property
    def setup_s(self) -> float:
        """Seconds from the start until the measurement began (or until now)."""
        return (self.t0 if self.measuring else self.clock()) - self.t_begin

    def update(self, now: float, settled: bool) -> bool:
        """True when the measurement started on this pass (``t0``, ``end`` are set)."""
        if self.measuring:
            return False
        if self.set_up_at is None:
            if not (settled or now >= self.setup_end):
                return False
            self.set_up_at = now
            if self.ready is not None:
                self.ready(now - self.t_begin)
        at = None if self.begin is None else self.begin()
        if self.begin is None or (at is not None and now >= at) or now >= self.set_up_at + BEGIN_WAIT:
            self.t0 = now
            self.end = now + self.duration
            return True
        return False

    def next_wake(self) -> float:
        """The latest time of the next pass (the measurement's start or end)."""
        return self.end if self.measuring else self.clock() + SEND_INTERVAL / PHASES


async def run_bots(
    host: str,
    port: int,
    bots: int,
    duration: float,
    observers: int = 16,
    seed: int | None = None,
    progress=None,
    *,
    warmup: float = 0.0,
    speed: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    http: str | None = None,
    tickets: list | None = None,
    ready: Callable[[float], None] | None = None,
    begin: Callable[[], float | None] | None = None,
    setup_timeout: float | None = None,
) -> dict:
    """Run ``bots`` bots (the first ``observers`` of them decoding): set them up, then
    measure ``duration`` seconds.

    Runs inside trio and yields at every wait, so a server in the same trio run keeps
    ticking. Set-up: ``http`` is the server's HTTP base URL, where each bot joins first
    (:func:`join_bots`, in a worker thread) unless ``tickets`` (its result) are given;
    neither: the bots are anonymous (open servers only). Then the bots connect (those
    connected walk; nothing is counted) until all are connected or failed, at most
    ``setup_timeout`` seconds (default :func:`setup_bound`). ``ready(setup_s)`` is called
    then, and the measurement starts when ``begin()`` says (see :class:`Phases`; default: at
    once). Counting starts ``warmup`` seconds into the measurement. ``progress(elapsed_s,
    counts)`` is called about once a second with :meth:`_Swarm.progress_counts`, the
    ``phase`` (:attr:`Phases.name`; elapsed counts from the start, or from the
    measurement's start once measuring) and ``at``, the time of the counts on ``clock``;
    also when the set-up ends (how it ended), while measuring at whole seconds of it, and
    once more at its end (elapsed = ``duration``).
    ``speed``: the bots' walking speed in m/s (None: the server's ``max_speed``).
    ``clock``: where durations, rates and latencies are measured, in seconds above 0 (0.0 marks
    "not yet"); ``trio.current_time`` makes them follow trio's clock (tests run the swarm and
    an in-process server on a MockClock).
    Returns the report of these bots (see :func:`make_report`; ``setup_s`` and the measured
    ``duration_s`` among it); its raw fields can be merged with other processes' results by
    :func:`merge_results`.
    """
    raise_nofile_limit(bots + 64)
    t_begin = clock()
    if tickets is None and http:
        tickets = await trio.to_thread.run_sync(join_bots, http, bots)
    swarm = _Swarm(host, port, bots, observers, seed, speed=speed, clock=clock, tickets=tickets)
    swarm.measure_start = math.inf  # nothing is counted during the set-up
    phases = Phases(clock, t_begin, clock() + (setup_bound(bots) if setup_timeout is None else setup_timeout),
                    duration, warmup, ready, begin)
    cpu_mark = None
    next_send = clock()
    slot = SEND_INTERVAL / PHASES
    phase = 0
    next_progress = next_send + PROGRESS_INTERVAL
    epfd = swarm.ep.fileno()
    now = next_send
    try:
        while True:
            now = clock()
            was_set_up = phases.set_up_at is not None
            if phases.update(now, swarm.settled()):
                swarm.measure_start = phases.t0 + phases.warmup
                next_progress = phases.t0 + PROGRESS_INTERVAL
            if progress is not None and not was_set_up and phases.set_up_at is not None:  # how it ended
                progress(phases.set_up_at - t_begin, dict(swarm.progress_counts(), phase="setup", at=now))
            if now >= phases.end:
                if progress is not None:  # once more at the end: elapsed = duration
                    progress(phases.duration, dict(swarm.progress_counts(), phase=phases.name, at=now))
                break
            if cpu_mark is None and now >= swarm.measure_start:
                cpu_mark = (time.process_time(), now)
            if now >= next_send:
                late = now - next_send
                if now >= swarm.measure_start:
                    swarm.send_late.append(late * 1000.0)
                swarm.send_slot(now, phase)
                phase = (phase + 1) % PHASES
                next_send += slot
                if next_send <= now:  # more than a whole slot behind: do not try to catch up
                    next_send = now + slot
            if progress is not None and now >= next_progress:
                next_progress += PROGRESS_INTERVAL
                counts = swarm.progress_counts()
                counts["phase"], counts["at"] = phases.name, now
                progress(now - (phases.t0 if phases.measuring else t_begin), counts)
            wait = min(next_send, phases.next_wake(), next_progress if progress else math.inf) - clock()
            if wait > 0:
                with trio.move_on_after(wait):
                    await trio.lowlevel.wait_readable(epfd)
            else:
                await trio.lowlevel.checkpoint()
            swarm.drain(clock())
    finally:
        now = clock()
        swarm.teardown(now)
    if cpu_mark is None:
        cpu_mark = (time.process_time(), now)
    cpu_s = time.process_time() - cpu_mark[0]
    window = max(0.0, min(now, phases.end) - swarm.measure_start)
    raw = swarm.result(bots, phases.end, cpu_s, window)
    raw["duration_s"] = round(now - phases.t0, 3)
    raw["setup_s"] = round(phases.setup_s, 3)
    return make_report(raw)


def raise_nofile_limit(needed: int) -> None:
    """One socket per bot: lift the soft open-files limit toward the hard one if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# ----------------------------------------------------------------------------- the report

_SUMMED = (
    "bots_requested", "observers", "connected", "snapshots", "packets", "bytes", "inputs",
    "connected_seconds", "packets_expected", "packets_received", "observed_entities_sum",
    "observed_views", "cpu_s", "parts", "refresh_changed", "refresh_moving",
)  # fmt: skip
_DICTS = ("failure_reasons", "decode_errors", "socket_errors")
_LISTS = ("latency_samples_ms", "send_late_ms", "input_backlog")


def merge_results(results: list[dict]) -> dict:
    """Merge the results of several processes: counts summed, samples concatenated."""
    raw: dict = {k: 0 for k in _SUMMED}
    for k in _DICTS:
        raw[k] = {}
    for k in _LISTS:
        raw[k] = []
    raw["window_s"] = 0.0
    raw["duration_s"] = 0.0
    raw["setup_s"] = 0.0
    for r in results:
        for k in _SUMMED:
            raw[k] += r.get(k, 0)
        for k in _DICTS:
            for name, n in r.get(k, {}).items():
                raw[k][name] = raw[k].get(name, 0) + n
        for k in _LISTS:
            raw[k].extend(r.get(k, []))
        raw["window_s"] = max(raw["window_s"], r.get("window_s", 0.0))
        raw["duration_s"] = max(raw["duration_s"], r.get("duration_s", 0.0))
        raw["setup_s"] = max(raw["setup_s"], r.get("setup_s", 0.0))
    raw["processes"] = sum(r.get("processes", 1) for r in results)
    return make_report(raw)


def make_report(raw: dict) -> dict:
    """Add the derived figures (rates per bot per second, percentiles, loss) to raw counts."""
    r = dict(raw)
    for k in _LISTS:
        r.setdefault(k, [])
    for k in ("parts", "refresh_changed", "refresh_moving"):
        r.setdefault(k, 0)
    bot_s = r["connected_seconds"]
    failures = sum(r["failure_reasons"].values()) + sum(r["decode_errors"].values())
    lat = r["latency_samples_ms"]
    late = r["send_late_ms"]
    expected = r["packets_expected"]
    window = r["window_s"]
    r.update(
        failures=failures,
        snapshots_per_bot_s=round(r["snapshots"] / bot_s, 2) if bot_s else 0.0,
        parts_per_bot_s=round(r.get("parts", 0) / bot_s, 2) if bot_s else 0.0,
        bytes_per_bot_s=round(r["bytes"] / bot_s, 1) if bot_s else 0.0,
        inputs_per_bot_s=round(r["inputs"] / bot_s, 2) if bot_s else 0.0,
        latency_ms_p50=_percentile(lat, 50),
        latency_ms_p99=_percentile(lat, 99),
        latency_samples=len(lat),
        packet_loss=round((expected - r["packets_received"]) / expected, 5) if expected else 0.0,
        observed_entities_mean=(
            round(r["observed_entities_sum"] / r["observed_views"], 1) if r["observed_views"] else 0.0
        ),
        observed_refreshed_share=(
            round(r["refresh_changed"] / r["refresh_moving"], 4) if r.get("refresh_moving") else None
        ),
        send_late_ms_p99=_percentile(late, 99),
        input_backlog_p50=_percentile(r["input_backlog"], 50),
        input_backlog_p99=_percentile(r["input_backlog"], 99),
        cpu_percent=round(100.0 * r["cpu_s"] / window, 1) if window else 0.0,
        ok=r["connected"] == r["bots_requested"] and failures == 0,
    )
    return r


def public_report(report: dict) -> dict:
    """The report without the raw sample lists (for printing)."""
    return {k: v for k, v in report.items() if k not in _LISTS}


def format_report(report: dict) -> str:
    lat50, lat99 = report["latency_ms_p50"], report["latency_ms_p99"]
    rows = [
        ("bots requested", report["bots_requested"]),
        ("connected", report["connected"]),
        ("failures", report["failures"]),
        ("  reasons", ", ".join(f"{k}={v}" for k, v in sorted(
            {**report["failure_reasons"], **report["decode_errors"]}.items())) or "-"),
        ("snapshots / bot / s (complete ticks)", report["snapshots_per_bot_s"]),
        ("snapshot parts / bot / s", report.get("parts_per_bot_s", 0.0)),
        ("bytes in / bot / s", report["bytes_per_bot_s"]),
        ("inputs / bot / s", report["inputs_per_bot_s"]),
        ("move-to-observed p50 (ms)", "-" if lat50 is None else lat50),
        ("move-to-observed p99 (ms)", "-" if lat99 is None else lat99),
        ("latency samples", report["latency_samples"]),
        ("packet loss", f"{100.0 * report['packet_loss']:.3f} %"),
        ("entities seen by observers", report["observed_entities_mean"]),
        ("refreshed share (observers)", "-" if report.get("observed_refreshed_share") is None
         else report["observed_refreshed_share"]),
        ("inputs sent, not applied p50/p99",
         f"{report['input_backlog_p50']} / {report['input_backlog_p99']}"),
        ("swarm send lateness p99 (ms)", report["send_late_ms_p99"]),
        ("swarm CPU (% of one core)", report["cpu_percent"]),
        ("processes", report["processes"]),
        ("set-up before measuring (s)", report.get("setup_s", "-")),
        ("measured (s)", report["duration_s"]),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# ----------------------------------------------------------------------------- processes


def _split(bots: int, processes: int) -> list[int]:
    base, extra = divmod(bots, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def _worker(index, host, port, bots, duration, observers, seed, warmup, start, out,
            speed=None, cpus=None, tickets=None) -> None:
    """Worker process body: run its bots, post progress, ``ready`` and the final result on
    ``out``; the measurement starts at ``start.value`` (``time.monotonic()``), which the
    parent sets once every worker is ready."""

    def progress(elapsed: float, counts: dict) -> None:
        out.put(("progress", index, counts))

    try:
        if cpus:
            os.sched_setaffinity(0, set(cpus))
        result = trio.run(
            lambda: run_bots(
                host, port, bots, duration, observers, seed, progress,
                warmup=warmup, speed=speed, tickets=tickets,
                ready=lambda setup_s: out.put(("ready", index, setup_s)),
                begin=lambda: start.value or None,
            )
        )  # fmt: skip
        out.put(("result", index, result))
    except BaseException as exc:  # report, never hang the parent
        out.put(("error", index, f"{type(exc).__name__}: {exc}"))


def supervise(workers: list, out, start, *, duration: float, setup_wait: float, t_begin: float,
              progress=None, ready=None, begin=None, teardown: float = TEARDOWN_CAP) -> tuple[dict, dict, float]:
    """The parent's side of worker processes that run :func:`run_bots` (or the same loop over
    another transport) and post ``progress``, ``ready``, ``result`` or ``error`` messages on
    ``out``. Once every worker is ready (or ``setup_wait`` seconds have passed), it calls
    ``ready(setup_s)`` and, when ``begin()`` gives a time (``time.monotonic()``; no
    ``begin``: at once; at most :data:`BEGIN_WAIT` later), sets the shared ``start`` value
    at which every worker starts measuring. ``progress(elapsed_s, counts)`` is called about
    once a second with the workers' sums (``phase`` and the seconds as in :func:`run_bots`,
    the last call, elapsed = ``duration``, once every worker has reported; ``latency_ms``:
    the samples new since the last call; ``at``: the oldest of the workers' counts). Workers that outlive the measurement by
    ``teardown`` seconds are killed. Returns (results, errors, setup_s) by worker
    index."""
    n = len(workers)
    results: dict[int, dict] = {}
    errors: dict[int, str] = {}
    latest: dict[int, dict] = {}
    readies: set[int] = set()
    fresh: list[float] = []  # latency samples not yet given to progress
    phases = Phases(time.monotonic, t_begin, time.monotonic() + setup_wait, duration, 0.0, ready, begin)
    next_progress = time.monotonic() + PROGRESS_INTERVAL

    def report_progress(now: float, final: bool = False) -> None:
        nonlocal fresh
        counts = _sum_counts(latest.values())
        counts["latency_ms"], fresh = fresh, []
        # the counts are as of the workers' last reports (their clock is this one)
        at = min((c.get("at", now) for c in latest.values()), default=now)
        counts["phase"], counts["at"] = phases.name, at
        progress(phases.duration if final else max(0.0, at - (phases.t0 if phases.measuring else t_begin)), counts)

    try:
        while len(results) + len(errors) < n:
            now = time.monotonic()
            settled = all(i in readies or i in results or i in errors for i in range(n))
            if not phases.measuring and phases.update(now, settled):
                start.value = phases.t0
                next_progress = phases.t0 + PROGRESS_INTERVAL + 0.1  # just after the workers report
            if now >= phases.end + teardown:
                break
            if now >= next_progress:
                next_progress += PROGRESS_INTERVAL
                if progress is not None and now < phases.end:
                    report_progress(now)
            try:
                kind, index, payload = out.get(timeout=max(0.01, min(0.2, next_progress - now)))
            except queue.Empty:
                if all(not p.is_alive() for p in workers) and out.empty():
                    break
                continue
            if kind == "progress":
                fresh.extend(payload.pop("latency_ms", ()))
                latest[index] = payload
            elif kind == "ready":
                readies.add(index)
            elif kind == "result":
                results[index] = payload
            else:
                errors[index] = payload
        if progress is not None and phases.measuring:  # once more, with every worker's last counts
            report_progress(time.monotonic(), final=True)
    finally:
        stop_by = min(phases.end + teardown, time.monotonic() + 2.0 * len(workers) + 2.0)
        for p in workers:
            p.join(timeout=max(0.0, min(2.0, stop_by - time.monotonic())))
            if p.is_alive():
                p.kill()
                p.join(timeout=2.0)
    return results, errors, phases.setup_s


def run_processes(
    host: str,
    port: int,
    bots: int,
    duration: float,
    processes: int = 1,
    observers: int = 16,
    seed: int | None = None,
    progress=None,
    *,
    warmup: float = 0.0,
    speed: float | None = None,
    cpus=None,
    http: str | None = None,
    ready=None,
    begin=None,
) -> dict:
    """Spread the bots over ``processes`` worker processes; return the merged report.

    All observers run in the first worker, so that the turns they make and the turns they
    see share one process. ``http``: every bot joins there first, from this process
    (:func:`join_bots`), and the workers get their tickets; None: anonymous bots. The
    workers connect their bots, then all measure ``duration`` seconds from one instant
    (:func:`supervise`, which also takes ``ready`` and ``begin`` and calls ``progress``);
    the report's ``setup_s`` counts from the call, joins included. Workers that outlive the
    measurement by :data:`TEARDOWN_CAP` seconds are killed and count as failed. ``speed``:
    the bots' walking speed in m/s (None: the server's max speed); ``cpus``: CPU numbers
    the workers are pinned to (``os.sched_setaffinity``), None for no pinning.
    """
    t_begin = time.monotonic()
    processes = max(1, min(int(processes), int(bots)))
    counts = _split(int(bots), processes)
    tickets = join_bots(http, int(bots)) if http else None
    observers = min(int(observers), counts[0])
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    out = ctx.Queue()
    start = ctx.Value("d", 0.0, lock=False)  # the measurement's start; 0.0 until set
    workers = []
    first = 0
    for i, n in enumerate(counts):
        wseed = None if seed is None else seed * 1000 + i
        share = None if tickets is None else tickets[first: first + n]
        first += n
        p = ctx.Process(
            target=_worker,
            args=(i, host, port, n, duration, observers if i == 0 else 0, wseed, warmup,
                  start, out, speed, cpus, share),
            daemon=True,
        )  # fmt: skip
        p.start()
        workers.append(p)
    results, errors, setup_s = supervise(
        workers, out, start, duration=duration, setup_wait=setup_bound(max(counts)) + 0.5 * processes,
        t_begin=t_begin, progress=progress, ready=ready, begin=begin,
    )  # fmt: skip
    report = merge_results(list(results.values()))
    for i, n in enumerate(counts):
        if i not in results:
            reason = "worker_error" if i in errors else "worker_lost"
            report["failure_reasons"][reason] = report["failure_reasons"].get(reason, 0) + n
            report["bots_requested"] += n
    if errors:
        report["worker_errors"] = errors
    report["setup_s"] = round(setup_s, 3)
    return make_report(report)


def _sum_counts(items) -> dict:
    """Progress counts of several workers: numbers summed, lists joined (``at`` and ``phase``
    are not counts: left out)."""
    total: dict = dict(connected=0, snapshots=0, bytes=0, failures=0, packets_expected=0, packets_received=0)
    for c in items:
        for k, v in c.items():
            if k in ("at", "phase"):
                continue
            if isinstance(v, list):
                total.setdefault(k, []).extend(v)
            elif isinstance(v, (int, float)):
                total[k] = total.get(k, 0) + v
    return total


class ProgressLine:
    """``progress`` that prints one line a second on stderr: during the set-up ``swarm
    set-up 2.0s: connected a/b failures f`` (``, waiting for the start`` once set up), then
    ``swarm t=..s connected a/b snapshots/s .. kB/s .. latency p99 .. ms loss ..% failures
    ..`` (rates since the previous line, by the counts' ``at``; latency p99 and packet loss
    over the measurement so far)."""

    def __init__(self, bots: int, stream=None) -> None:
        self.bots = bots
        self.stream = stream
        self.last: tuple[float, dict] | None = None
        self.latency: list[float] = []

    def __call__(self, elapsed: float, counts: dict) -> None:
        stream = self.stream or sys.stderr
        connected = f"connected {counts.get('connected', 0)}/{self.bots}"
        failures = f"failures {counts.get('failures', 0)}"
        at = counts.get("at", elapsed)
        last, self.last = self.last, (at, counts)
        if counts.get("phase", "measure") != "measure":
            extra = f" opening {counts['opening']}" if counts.get("opening") else ""
            waiting = ", waiting for the start" if counts.get("phase") == "waiting" else ""
            print(f"swarm set-up {elapsed:5.1f}s: {connected}{extra} {failures}{waiting}", file=stream, flush=True)
            return
        self.latency.extend(counts.get("latency_ms", ()))
        snaps_s = kb_s = 0.0
        if last is not None and at > last[0]:
            snaps_s = (counts["snapshots"] - last[1]["snapshots"]) / (at - last[0])
            kb_s = (counts["bytes"] - last[1]["bytes"]) / (at - last[0]) / 1000.0
        p99 = _percentile(self.latency, 99)
        expected = counts.get("packets_expected", 0)
        loss = 100.0 * (expected - counts.get("packets_received", 0)) / expected if expected else 0.0
        print(
            f"swarm t={elapsed:5.1f}s {connected} snapshots/s {snaps_s:7.0f}  kB/s {kb_s:8.1f}  "
            f"latency p99 {'-' if p99 is None else f'{p99:.1f} ms'}  loss {loss:.3f} %  {failures}",
            file=stream, flush=True,
        )




# ----------------------------------------------------------------------------- the CLI entry


def _parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def default_http_url(host: str) -> str:
    """Where UDP bots join when no ``--http`` is given: the server's default HTTP port."""
    return f"http://[{host}]:8080" if ":" in host else f"http://{host}:8080"


def shows_progress(args) -> bool:
    """The progress lines are shown unless ``--quiet`` or ``--json`` (``--progress``, for a
    swarm run by another tool that reads its JSON report, shows them anyway)."""
    if getattr(args, "progress", False):
        return True
    return not (getattr(args, "quiet", False) or getattr(args, "json", False))


class StdinStart:
    """``ready`` and ``begin`` for a swarm driven by another process (``--wait-start``): when
    the set-up is over it prints ``{"ready": setup_s}`` on stdout, and measuring starts at
    the ``time.monotonic()`` value of a ``start T`` line on stdin (at once when stdin ends).
    The reading thread starts at the first ``begin()`` (after any worker processes forked)."""

    def __init__(self, stdin=None, stdout=None) -> None:
        self.stdin, self.stdout = stdin, stdout
        self.at: float | None = None
        self._reader = None

    def ready(self, setup_s: float) -> None:
        print(json.dumps({"ready": round(setup_s, 3)}), file=self.stdout or sys.stdout, flush=True)

    def begin(self) -> float | None:
        if self._reader is None:
            import threading

            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self.at

    def _read(self) -> None:
        for line in self.stdin or sys.stdin:
            word, _, value = line.strip().partition(" ")
            if word == "start":
                try:
                    self.at = float(value)
                    return
                except ValueError:
                    continue
        self.at = time.monotonic()  # stdin ended: nobody will say when


def run_swarm(args) -> int:
    """``worldserver swarm``: run the swarm as the argparse ``args`` say; 0 if all went well.

    ``args.transport`` (default ``udp``) picks the transport: ``webrtc`` and ``ws`` go to
    :func:`worldtools.swarm_rtc.run_swarm`, which needs ``args.http`` (the HTTP base URL).
    UDP bots join at ``args.http`` (default ``http://HOST:8080``, the server's default HTTP
    port), or connect anonymously with ``args.anonymous``. ``args.duration`` seconds are
    measured after the set-up; progress lines go to stderr (:func:`shows_progress`);
    ``args.wait_start`` waits for the start on stdin (:class:`StdinStart`).
    """
    transport = getattr(args, "transport", None) or "udp"
    if float(getattr(args, "chat_rate", 0.0) or 0.0) > 0.0:
        return _run_with_chat(args, transport)
    if transport != "udp":
        from worldtools import swarm_rtc

        if transport not in swarm_rtc.TRANSPORTS:
            print(f"error: --transport must be udp, webrtc or ws, not {transport!r}", file=sys.stderr)
            return 2
        return swarm_rtc.run_swarm(args)
    if not getattr(args, "server", None):
        print("error: --transport udp needs --server HOST:PORT", file=sys.stderr)
        return 2
    host, port = _parse_hostport(args.server)
    bots = int(args.bots)
    duration = float(args.duration)
    processes = max(1, int(getattr(args, "processes", 1) or 1))
    observers = int(getattr(args, "observers", 16))
    seed = getattr(args, "seed", None)
    speed = getattr(args, "speed", None)
    as_json = bool(getattr(args, "json", False))
    progress = ProgressLine(bots) if shows_progress(args) else None
    driven = StdinStart() if getattr(args, "wait_start", False) else None
    hooks = dict(ready=driven.ready, begin=driven.begin) if driven else {}
    http = None if getattr(args, "anonymous", False) else (getattr(args, "http", None) or default_http_url(host))
    if processes == 1:
        report = trio.run(
            lambda: run_bots(host, port, bots, duration, observers, seed, progress, speed=speed, http=http,
                             **hooks)
        )
    else:
        report = run_processes(
            host, port, bots, duration, processes, observers, seed, progress, speed=speed, http=http, **hooks
        )
    reasons = report.get("failure_reasons", {})
    if "join_unreachable" in reasons:
        print(f"swarm: no answer from {http} to the joins: give the server's HTTP port with --http URL",
              file=sys.stderr)
    if "refused_token_required" in reasons:
        print("swarm: the server requires connect tokens: let the bots join (--http URL), not --anonymous",
              file=sys.stderr)
    shown = public_report(report)
    if as_json:
        print(json.dumps(shown, sort_keys=True))
    else:
        print(format_report(shown))
    return 0 if report["ok"] else 1


def _run_with_chat(args, transport: str) -> int:
    """``--chat-rate R``: every bot also chats (its own ``/ws/chat`` connection, R messages a
    second) while the movement swarm runs in its own processes, both measuring the same
    ``--duration`` seconds after their set-ups; the report is the movement report with the
    chat report (delivery latency p50/p99, deliveries missing and duplicate) under ``chat``.
    A rate above the server's per-user chat limit is refused before anything starts."""
    from worldtools import chat_swarm

    http_url = getattr(args, "http", None)
    if not http_url:
        print("error: --chat-rate needs --http URL (the chat is on the HTTP port)", file=sys.stderr)
        return 2
    if transport == "udp" and not getattr(args, "server", None):
        print("error: --transport udp needs --server HOST:PORT", file=sys.stderr)
        return 2
    try:
        server = chat_swarm.probe_server(http_url)
        chat_swarm.check_chat_rate(float(args.chat_rate), server)
    except chat_swarm.ChatRateAboveLimit as exc:
        print(f"error: --chat-rate: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:
        print(f"error: --http {http_url}: the chat does not answer ({exc})", file=sys.stderr)
        return 1
    processes = max(1, int(getattr(args, "processes", 1) or 1))
    movement_argv = ["--transport", transport, "--http", http_url, "--bots", str(args.bots),
                     "--processes", str(processes),
                     "--observers", str(int(getattr(args, "observers", 16)))]
    if getattr(args, "server", None):
        movement_argv += ["--server", args.server]
    seed = getattr(args, "seed", None)
    if seed is not None:
        movement_argv += ["--seed", str(seed)]
    as_json = bool(getattr(args, "json", False))
    show = shows_progress(args)
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if show else None
    movement, chat = chat_swarm.run_with_movement(
        movement_argv, http_url, int(args.bots), float(args.chat_rate), float(args.duration),
        processes=processes, seed=seed, progress=say, server=server, movement_progress=show,
        on_counts=chat_swarm.ProgressLine(say, int(args.bots)) if show else None)
    report = dict(movement, chat=chat, ok=bool(movement.get("ok")) and bool(chat["ok"]))
    if as_json:
        print(json.dumps(report, sort_keys=True))
    else:
        if "error" in movement:
            print(f"movement: {movement['error']}")
        else:
            from worldtools import swarm_rtc

            print(format_report(movement) if transport == "udp" else swarm_rtc.format_report(movement))
        print("chat:")
        print(chat_swarm.format_report(chat))
    return 0 if report["ok"] else 1


if __name__ == "__main__":  # pragma: no cover - convenience: python -m worldtools.swarm
    import argparse

    parser = argparse.ArgumentParser(prog="python -m worldtools.swarm")
    parser.add_argument("--server", help="HOST:PORT of the UDP endpoint (udp)")
    parser.add_argument("--transport", choices=("udp", "webrtc", "ws"), default="udp")
    parser.add_argument("--http", help="the HTTP base URL, e.g. http://127.0.0.1:8080 (webrtc, ws;"
                        " udp: where the bots join, default http://HOST:8080)")
    parser.add_argument("--anonymous", action="store_true",
                        help="udp: connect without joining (servers with net.require_connect_token = false)")
    parser.add_argument("--bots", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured, after the set-up")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--observers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--speed", type=float, default=None,
                        help="walking speed of the bots in m/s (default: the server's max speed)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--progress", action="store_true", help="progress lines even with --json")
    parser.add_argument("--wait-start", action="store_true",
                        help='after the set-up print {"ready": S} and wait for "start T" (T: time.monotonic())'
                        " on stdin")
    sys.exit(run_swarm(parser.parse_args()))
