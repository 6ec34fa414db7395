"""Per-connection sequence, acknowledgement and replay state (one side of one connection).

Every connected packet carries the sender's 16-bit sequence number and, for the other
direction, the newest sequence received plus a 32-bit bitfield of the 32 before it. From these
a :class:`Link` tells which of our packets the peer received (so the server knows which
snapshot a client holds), estimates round-trip time, and rejects duplicated, replayed and
too-old packets.

Pure state and arithmetic: no I/O, no clock (``now`` is passed in), no knowledge of payloads.
"""

from __future__ import annotations

SEQ_MOD = 0x10000
HALF = 0x8000
WINDOW = 32  # how far back a packet may arrive and still be accepted (= ack bitfield width)
MAX_UNACKED = 64


def seq_newer(a: int, b: int) -> bool:
    """True if 16-bit sequence ``a`` is newer than ``b`` (with wrap-around)."""
    return 0 < ((a - b) & 0xFFFF) < HALF


class Link:
    __slots__ = (
        "local_seq",
        "remote_seq",
        "recv_bits",
        "unacked",
        "pending",
        "rtt",
        "last_recv",
        "last_send",
        "packets_lost",
        "duplicates",
        "stale",
    )

    def __init__(self, now: float) -> None:
        self.local_seq = 0
        self.remote_seq = -1  # none received yet
        self.recv_bits = 0
        self.unacked: dict[int, float] = {}  # our sequence -> send time, oldest first
        # The same packets as a bitmask: bit k is set while packet local_seq - 1 - k is in
        # unacked (bit 0: the newest sent). process_acks finds what an ack covers with a few
        # integer operations instead of a loop over every unacknowledged packet.
        self.pending = 0
        self.rtt = 0.0
        self.last_recv = now
        self.last_send = now
        self.packets_lost = 0
        self.duplicates = 0
        self.stale = 0

    def next_send(self, now: float) -> tuple[int, int, int]:
        """Allocates a sequence number for an outgoing packet; returns (seq, ack, ack_bits)."""
        seq = self.local_seq
        self.local_seq = (seq + 1) & 0xFFFF
        unacked = self.unacked
        unacked[seq] = now
        self.pending = (self.pending << 1) | 1
        if len(unacked) > MAX_UNACKED:  # peer is not acknowledging: forget the oldest
            oldest = next(iter(unacked))
            del unacked[oldest]
            self.pending &= ~(1 << ((seq - oldest) & 0xFFFF))
            self.packets_lost += 1
        self.last_send = now
        return seq, self.remote_seq & 0xFFFF, self.recv_bits

    def accept(self, seq: int) -> bool:
        """Records an incoming sequence number; False for a duplicate or too-old packet."""
        remote = self.remote_seq
        if remote < 0:
            self.remote_seq = seq
            return True
        diff = (seq - remote) & 0xFFFF
        if diff == 0:
            self.duplicates += 1
            return False
        if diff < HALF:  # newer: shift the window forward
            bits = (self.recv_bits << diff) | (1 << (diff - 1)) if diff <= WINDOW else 0
            self.recv_bits = bits & 0xFFFFFFFF
            self.remote_seq = seq
            return True
        back = SEQ_MOD - diff  # older than the newest by this much
        if back > WINDOW:
            self.stale += 1
            return False
        mask = 1 << (back - 1)
        if self.recv_bits & mask:
            self.duplicates += 1
            return False
        self.recv_bits |= mask
        return True

    def process_acks(self, ack: int, ack_bits: int, now: float) -> list[int]:
        """Returns our sequence numbers newly acknowledged by (ack, ack_bits), oldest first.

        Packets more than WINDOW older than ``ack`` and still unacknowledged are forgotten
        and counted in ``packets_lost``. Only ``ack`` itself, when newly acknowledged, updates
        ``rtt``: the peer sent this packet soon after it got that one, while packets it
        acknowledges only in ``ack_bits`` may have waited for its next send (an idle peer sends
        a keep-alive a second), which would count that wait as round trip.
        """
        pending = self.pending
        local = self.local_seq - 1  # our newest sequence number: bit 0 of pending
        k0 = (local - ack) & 0xFFFF  # the bit of pending that ``ack`` names
        if k0 >= pending.bit_length():  # nothing unacknowledged is as old as ack
            if k0 < HALF or not pending:
                return []
            # ack is newer than anything we sent: only a broken or hostile peer does that
            return self._process_acks_slow(ack, ack_bits, now)
        # Bits k0 .. k0 + WINDOW are the packets the ack covers. Every bit above them is a
        # packet older than ack by more than WINDOW (and by less than HALF: pending spans at
        # most MAX_UNACKED + WINDOW + 1 packets, since a packet is acknowledged only together
        # with the loss of everything more than WINDOW older), so it is lost.
        hit = pending & (((ack_bits << 1) | 1) << k0)
        cut = k0 + WINDOW + 1
        old = pending >> cut
        if not hit and not old:
            return []
        unacked = self.unacked
        acked = []
        if hit:
            bits = hit
            while bits:  # highest bit first: oldest first, as they were sent
                k = bits.bit_length() - 1
                bits ^= 1 << k
                seq = (local - k) & 0xFFFF
                sent = unacked.pop(seq)
                if k == k0:  # ack itself: the one round-trip sample
                    sample = now - sent
                    self.rtt = sample if self.rtt == 0.0 else self.rtt + 0.1 * (sample - self.rtt)
                acked.append(seq)
            pending ^= hit
        if old:
            self.packets_lost += old.bit_count()
            k = cut
            while old:
                if old & 1:
                    del unacked[(local - k) & 0xFFFF]
                old >>= 1
                k += 1
            pending &= (1 << cut) - 1
        self.pending = pending
        return acked

    def _process_acks_slow(self, ack: int, ack_bits: int, now: float) -> list[int]:
        """process_acks by a walk over every unacknowledged packet (any ack value)."""
        unacked = self.unacked
        acked = []
        lost = []
        for seq, sent in unacked.items():
            d = (ack - seq) & 0xFFFF
            if d == 0 or (d <= WINDOW and (ack_bits >> (d - 1)) & 1):
                acked.append(seq)
                if d == 0:  # ack itself: the one round-trip sample
                    sample = now - sent
                    self.rtt = sample if self.rtt == 0.0 else self.rtt + 0.1 * (sample - self.rtt)
            elif WINDOW < d < HALF:
                lost.append(seq)
        for seq in acked:
            del unacked[seq]
        for seq in lost:
            del unacked[seq]
        self.packets_lost += len(lost)
        local = self.local_seq - 1
        pending = 0
        for seq in unacked:
            pending |= 1 << ((local - seq) & 0xFFFF)
        self.pending = pending
        return acked
