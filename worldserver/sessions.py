"""Per-client session state: inputs waiting to be applied, sent snapshots, acknowledgements.

A :class:`Session` belongs to one connected client (whatever its transport) and its avatar.
It validates and queues the client's inputs (sequence order, rate limit, bounded queue), keeps
the ring of snapshot views sent to it with the packet that carried each, and tracks the newest
view the client acknowledged, which is the baseline for the next delta.

Must not: touch sockets, encode packets or run the simulation; it holds per-client facts.
"""

from __future__ import annotations

from collections import deque

from protocol.messages import Input
from protocol.snapshot import View
from worldserver.stats import Stats

MAX_PENDING_INPUTS = 4  # inputs waiting beyond this are stale: the oldest are dropped
INPUT_STALE_AFTER = 0.25  # seconds without input after which the avatar stops


class Session:
    __slots__ = (
        "conn",
        "entity_id",
        "slot",
        "pending",
        "last_received_seq",
        "last_applied_seq",
        "last_input_time",
        "intent",
        "tokens",
        "token_time",
        "views",
        "seq_to_tick",
        "acked_tick",
        "baseline",
        "last_full_tick",
        "last_sent",
        "snapshots_sent",
    )

    def __init__(self, conn: object, entity_id: int, slot: int, now: float) -> None:
        self.conn = conn
        self.entity_id = entity_id
        self.slot = slot
        self.pending: deque[Input] = deque()
        self.last_received_seq = -1
        self.last_applied_seq = 0
        self.last_input_time = now
        self.intent: Input | None = None
        self.tokens = 0.0
        self.token_time = now
        self.views: dict[int, View] = {}
        self.seq_to_tick: dict[int, int] = {}
        self.acked_tick = -1
        self.baseline: View | None = None  # newest view the client acknowledged
        self.last_full_tick = -1  # newest tick at which every candidate was sent
        self.last_sent = None  # per-slot tick of the last partial send (numpy, made lazily)
        self.snapshots_sent = 0

    # -- inputs ---------------------------------------------------------------------------
    def take_inputs(self, inputs: list[Input], now: float, rate: float, burst: int, stats: Stats) -> None:
        """Queues the new inputs of one INPUT packet (which repeats older ones for loss)."""
        tokens = min(float(burst), self.tokens + (now - self.token_time) * rate)
        self.token_time = now
        if tokens < 1.0:
            self.tokens = tokens
            stats.incr("drop.input_rate")
            return
        self.tokens = tokens - 1.0
        newest = self.last_received_seq
        for inp in inputs:
            if inp.seq > newest:
                self.pending.append(inp)
                newest = inp.seq
        if newest != self.last_received_seq:
            self.last_received_seq = newest
            self.last_input_time = now
        while len(self.pending) > MAX_PENDING_INPUTS:
            self.pending.popleft()
            stats.incr("drop.input_overflow")

    def next_input(self, now: float) -> Input | None:
        """The input to apply this tick: the next queued one, else the last one while fresh."""
        if self.pending:
            self.intent = self.pending.popleft()
            self.last_applied_seq = self.intent.seq
        elif self.intent is not None and now - self.last_input_time > INPUT_STALE_AFTER:
            self.intent = None
        return self.intent

    # -- snapshots ------------------------------------------------------------------------
    def record_sent(self, tick: int, seq: int, view: View, ring: int) -> None:
        """Remembers the view sent at ``tick`` in packet ``seq`` (the newest ``ring`` kept)."""
        views = self.views
        views[tick] = view
        self.seq_to_tick[seq] = tick
        self.snapshots_sent += 1
        while len(views) > ring:  # dicts keep insertion order, which is tick order
            del views[next(iter(views))]
        while len(self.seq_to_tick) > ring:
            del self.seq_to_tick[next(iter(self.seq_to_tick))]

    def on_acked(self, seqs: list[int]) -> None:
        """The client received these packets: the newest snapshot among them is the baseline."""
        for seq in seqs:
            tick = self.seq_to_tick.pop(seq, None)
            if tick is not None and tick > self.acked_tick:
                view = self.views.get(tick)
                if view is not None:
                    self.acked_tick = tick
                    self.baseline = view
