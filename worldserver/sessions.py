"""Per-client session state: inputs waiting to be applied, sent snapshots, acknowledgements.

A :class:`Session` belongs to one connected client (whatever its transport) and its avatar.
It validates and queues the client's inputs (sequence order, rate limit, bounded queue), keeps
the ring of snapshot views sent to it (``HeldView``: per entity, the tick whose state the
client holds) with the packets that carried each tick's parts, and tracks the newest tick the
client acknowledged **whole** (every part), which is the baseline for the next delta.

Must not: touch sockets, encode packets or run the simulation; it holds per-client facts.
"""

from __future__ import annotations

import itertools
from collections import deque

from protocol.messages import Input
from protocol.snapshot_batch import HeldView
from worldserver.limits import TokenBucket
from worldserver.stats import Stats

SEQS_KEPT = 256  # packet sequence numbers remembered for acknowledgement (> the link's 64)
MAX_PENDING_INPUTS = 4  # inputs waiting beyond this are stale: the oldest are dropped
MAX_INPUTS_PER_TICK = 2  # a late input may be applied together with the next one
CATCH_UP_SLACK = 2  # inputs applied may exceed ticks elapsed since joining by at most this
_player_ids = itertools.count(1)  # numbers every session of the process, in every world


class Session:
    """One client of the simulation. ``sink`` delivers its snapshots (a ``SnapshotSink``) or,
    for a compatibility mode (``wants_views``), its plain visible state (a ``ViewSink``; such a
    mode subclasses this with its own ``next_inputs``). See worldserver/snapshots.py."""

    __slots__ = (
        "sink",
        "sim",
        "player_id",
        "transport",
        "joined_at",
        "end",
        "bytes_in",
        "bytes_out",
        "wants_views",
        "name",
        "token",
        "entity_id",
        "slot",
        "pending",
        "last_received_seq",
        "last_applied_seq",
        "join_tick",
        "applied",
        "input_bucket",
        "views",
        "parts_left",
        "seq_to_tick",
        "acked_tick",
        "baseline",
    )

    def __init__(self, sink, entity_id: int, slot: int, now: float, *, wants_views: bool = False) -> None:
        self.sink = sink
        self.sim = None  # the Simulation (world) the session is in; set by Simulation.join
        # Set by the transport: a number unique in the process (entity ids repeat across
        # worlds), its kind ("udp", "ws", "rtc", "hatongsu"), and ``end(reason)`` which ends
        # the session on that transport (the avatar leaves; worldserver/moderation.py kicks).
        self.player_id = next(_player_ids)
        self.transport = ""
        self.joined_at = now
        self.end = None
        self.bytes_in = 0  # packets received from the client (header and payload)
        self.bytes_out = 0  # snapshot parts sent to it (header and payload)
        self.wants_views = wants_views
        self.name = ""
        self.token = b""  # the join token the client presented, if any
        self.entity_id = entity_id
        self.slot = slot
        self.pending: deque[Input] = deque()
        self.last_received_seq = -1
        self.last_applied_seq = -1  # none applied yet (sent as 0xFFFFFFFF)
        self.join_tick = 0
        self.applied = 0  # inputs applied since joining
        self.input_bucket: TokenBucket | None = None  # made full by the first take_inputs
        self.views: dict[int, HeldView] = {}
        self.parts_left: dict[int, int] = {}  # tick -> parts not yet acknowledged
        self.seq_to_tick: dict[int, int] = {}
        self.acked_tick = -1
        self.baseline: HeldView | None = None  # newest view the client acknowledged whole

    # -- inputs ---------------------------------------------------------------------------
    def take_inputs(self, inputs: list[Input], now: float, rate: float, burst: int, stats: Stats) -> bool:
        """Queues the new inputs of one INPUT packet (which repeats older ones for loss).

        One packet costs one token of the session's bucket (``rate`` per second, ``burst`` at
        most: the transport's input limit, the same on every call; the first call makes the
        bucket, full); a packet without a token is dropped (``drop.input_rate``) and False
        returned (True: taken).
        """
        bucket = self.input_bucket
        if bucket is None:
            bucket = self.input_bucket = TokenBucket(rate, burst, now)
        if bucket.take(now):
            stats.incr("drop.input_rate")
            return False
        newest = self.last_received_seq
        for inp in inputs:
            if inp.seq > newest:
                self.pending.append(inp)
                newest = inp.seq
        self.last_received_seq = newest
        while len(self.pending) > MAX_PENDING_INPUTS:
            self.pending.popleft()
            stats.incr("drop.input_overflow")
        return True

    def next_inputs(self, tick: int) -> tuple[Input | None, Input | None]:
        """The inputs to apply at ``tick``: (None, None), (input, None) or (late, input).

        One input moves the avatar for one tick, so an avatar with no input this tick stands
        still and its client's prediction stays exact. An input that arrived late is applied
        together with the next one, but only while the client has applied no more inputs than
        ticks have passed since it joined (plus ``CATCH_UP_SLACK``): catching up after jitter
        is allowed, moving faster than max speed on average never is.
        """
        pending = self.pending
        if not pending:
            return None, None
        allowed = tick - self.join_tick + CATCH_UP_SLACK - self.applied
        if allowed <= 0:
            return None, None
        first = pending.popleft()
        if pending and allowed >= 2:
            second = pending.popleft()
            self.applied += 2
            self.last_applied_seq = second.seq
            return first, second
        self.applied += 1
        self.last_applied_seq = first.seq
        return None, first

    # -- snapshots ------------------------------------------------------------------------
    def record_sent(self, tick: int, seqs: list[int], view: HeldView, ring: int) -> None:
        """Remembers the view sent at ``tick`` in packets ``seqs`` (one per part; the newest
        ``ring`` ticks kept)."""
        views = self.views
        views[tick] = view
        self.parts_left[tick] = len(seqs)
        seq_to_tick = self.seq_to_tick
        for seq in seqs:
            seq_to_tick[seq] = tick
        while len(views) > ring:  # dicts keep insertion order, which is tick order
            old = next(iter(views))
            del views[old]
            self.parts_left.pop(old, None)
        while len(seq_to_tick) > SEQS_KEPT:
            del seq_to_tick[next(iter(seq_to_tick))]

    def on_acked(self, seqs) -> None:
        """The client received these packets: a tick all of whose parts arrived, if newer than
        the baseline, becomes the baseline."""
        seq_to_tick = self.seq_to_tick
        if not seq_to_tick:
            return
        parts_left = self.parts_left
        for seq in seqs:
            tick = seq_to_tick.pop(seq, None)
            if tick is None:
                continue
            left = parts_left.get(tick)
            if left is None:
                continue
            if left > 1:
                parts_left[tick] = left - 1
                continue
            del parts_left[tick]
            if tick > self.acked_tick:
                self.acked_tick = tick
                self.baseline = self.views[tick]
