"""Delayed SCTP acknowledgements, carried with outgoing data, for aiortc's server-side peers.

Job: aiortc answers every received SCTP packet that carries DATA with a SACK in a packet of
its own ("no bundling for now", ``RTCSctpTransport._send_chunk``). A geckos client sends an
input every 50 ms and the server a snapshot every 50 ms, so each peer cost the server two
encrypted datagrams per tick: the snapshot and a bare SACK. RFC 9260 section 6.2 lets a
receiver delay its acknowledgement (at least every second DATA packet, and within 200 ms)
and bundle it in front of the DATA chunks it sends anyway. :func:`enable` does that for one
aiortc ``RTCSctpTransport`` by giving the instance its own ``_send_sack`` and ``_send_chunk``:

- a SACK is sent at once when two DATA packets are unacknowledged, when gaps or duplicate
  TSNs are to be reported, or when the association is not established; otherwise it waits;
- the next DATA chunk the peer sends carries the waiting SACK in the same packet;
- if nothing is sent within :data:`ACK_DELAY`, the SACK goes out alone.

Only the instances given to :func:`enable` change (the server's peers); aiortc clients in
the same process keep aiortc's behaviour. ``ACK_COUNTS`` counts what happened
(``immediate``, ``delayed``, ``bundled``, ``timer``).

Must not: import asyncio (the timer is aiortc's own loop, ``transport._loop``; everything here
runs in aiortc's callbacks), change the receive side or congestion control, or delay an
acknowledgement that reports loss. It relies on private attributes of aiortc's
RTCSctpTransport (``_sack_needed``, ``_last_received_tsn``, ...) and is the one module that
does: :func:`check_upstream` states what (the attributes the constructor assigns, the methods'
parameters, that aiortc calls ``self._send_sack`` after data and that its own SACK uses
exactly the fields the bundled one copies) and raises ``UpstreamChanged`` otherwise; the
server runs it at start (``RtcService.run``), and :func:`enable` raises rather than leave a
transport half patched.
"""

from __future__ import annotations

import functools
from collections import Counter
from struct import pack

from aiortc import rtcdtlstransport
from aiortc import rtcsctptransport as sctp

from worldserver.upstream import (
    UpstreamChanged,
    assigned_attributes,
    attributes_used,
    require,
    require_coroutine,
    require_names,
)

__all__ = ["ACK_COUNTS", "ACK_DELAY", "check_upstream", "enable"]

ACK_DELAY = 0.1  # seconds a lone acknowledgement may wait for data to ride with (RFC: < 0.2)
ACK_EVERY = 2  # DATA packets after which the acknowledgement goes out at once
ACK_COUNTS: Counter = Counter()

_PATCH = "worldserver.sctp_acks.enable"
# What RTCSctpTransport.__init__ must assign for this module's reads and writes.
_ASSIGNED = ("_sack_needed", "_sack_misordered", "_sack_duplicates", "_last_received_tsn",
             "_advertised_rwnd", "_association_state", "_loop", "_local_port", "_remote_port",
             "_remote_verification_tag", "_RTCSctpTransport__transport")
# The private attributes aiortc's own _send_sack touches: the bundled SACK copies the same
# fields and clears the same flag, so any other one means aiortc's SACK changed.
_SACK_FIELDS = frozenset({"_advertised_rwnd", "_last_received_tsn", "_sack_duplicates",
                          "_sack_misordered", "_sack_needed", "_send_chunk"})


@functools.cache
def check_upstream() -> None:
    """Raise ``UpstreamChanged`` unless aiortc's SCTP transport still has the shape
    :func:`enable` relies on (checked once)."""
    transport = sctp.RTCSctpTransport
    where = "aiortc.rtcsctptransport.RTCSctpTransport"
    require_names(_ASSIGNED, assigned_attributes(transport.__init__), "aiortc", f"{where}.__init__", _PATCH,
                  "assigns")
    require_coroutine(transport, "_send_sack", ("self",), "aiortc", _PATCH)
    require_coroutine(transport, "_send_chunk", ("self", "chunk"), "aiortc", _PATCH)
    require_names(["_sack_needed", "_send_sack"], attributes_used(transport._handle_data), "aiortc",
                  f"{where}._handle_data", _PATCH, "acknowledges through")
    used = {name for name in attributes_used(transport._send_sack) if name.startswith("_")}
    require(used == _SACK_FIELDS, "aiortc", f"{where}._send_sack", _PATCH,
            f"uses {sorted(used)}, not {sorted(_SACK_FIELDS)}")
    require_names(["_RTCSctpTransport__transport", "_send_data", "_local_port", "_remote_port",
                   "_remote_verification_tag"], attributes_used(transport._send_chunk), "aiortc",
                  f"{where}._send_chunk", _PATCH, "sends through")
    require_coroutine(rtcdtlstransport.RTCDtlsTransport, "_send_data", ("self", "data"), "aiortc", _PATCH)
    state = vars(transport).get("State")
    require(state is not None and "ESTABLISHED" in state.__members__, "aiortc", f"{where}.State.ESTABLISHED",
            _PATCH, "no longer exists")
    for name in ("SackChunk", "DataChunk", "crc32c"):
        require(name in vars(sctp), "aiortc", f"aiortc.rtcsctptransport.{name}", _PATCH, "no longer exists")


def enable(transport) -> None:
    """Give one ``RTCSctpTransport`` delayed, bundled acknowledgements. Raises
    ``UpstreamChanged`` (the transport unchanged) if it lacks an attribute this relies on."""
    missing = [name for name in _ASSIGNED if name not in vars(transport)]
    if missing:
        raise UpstreamChanged("aiortc", f"RTCSctpTransport instance attribute {missing[0]}", _PATCH,
                              "is missing")
    _DelayedAcks(transport)


class _DelayedAcks:
    """The per-transport state; installs itself as the transport's two methods."""

    __slots__ = ("t", "send_sack_now", "send_chunk_alone", "unacked", "timer", "task")

    def __init__(self, transport) -> None:
        self.t = transport
        self.send_sack_now = transport._send_sack  # aiortc's, bound to the transport
        self.send_chunk_alone = transport._send_chunk
        self.unacked = 0  # DATA packets received since the last acknowledgement
        self.timer = None  # loop.call_later handle while an acknowledgement waits
        self.task = None  # the timer's send, kept referenced until done
        transport._send_sack = self.send_sack
        transport._send_chunk = self.send_chunk

    def _acked(self) -> None:
        self.unacked = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def send_sack(self) -> None:
        """Called by aiortc after every received packet that needs acknowledging."""
        t = self.t
        self.unacked += 1
        if (self.unacked >= ACK_EVERY or t._sack_misordered or t._sack_duplicates
                or t._association_state != sctp.RTCSctpTransport.State.ESTABLISHED):
            self._acked()
            ACK_COUNTS["immediate"] += 1
            await self.send_sack_now()
            return
        ACK_COUNTS["delayed"] += 1
        if self.timer is None:
            self.timer = t._loop.call_later(ACK_DELAY, self._timer_fired)

    def _timer_fired(self) -> None:
        self.timer = None
        if self.t._sack_needed:
            self.task = self.t._loop.create_task(self._send_late())

    async def _send_late(self) -> None:
        if not self.t._sack_needed:
            return
        self._acked()
        ACK_COUNTS["timer"] += 1
        try:
            await self.send_sack_now()
        except Exception:  # the DTLS transport closed meanwhile (ConnectionError) or the
            ACK_COUNTS["timer_failed"] += 1  # association is gone: nothing left to acknowledge

    async def send_chunk(self, chunk) -> None:
        """aiortc's ``_send_chunk``, except that a DATA chunk carries a waiting SACK."""
        t = self.t
        if not (t._sack_needed and isinstance(chunk, sctp.DataChunk)):
            await self.send_chunk_alone(chunk)
            return
        if t._sack_misordered or t._sack_duplicates:  # not expected (sent at once); keep it exact
            await self.send_sack_now()
            self._acked()
            await self.send_chunk_alone(chunk)
            return
        sack = sctp.SackChunk()
        sack.cumulative_tsn = t._last_received_tsn
        sack.advertised_rwnd = max(0, t._advertised_rwnd)
        header = pack("!HHL", t._local_port, t._remote_port, t._remote_verification_tag)
        body = bytes(sack) + bytes(chunk)  # control chunks first (RFC 9260 section 6.10)
        checksum = sctp.crc32c(header + b"\x00\x00\x00\x00" + body)
        t._sack_needed = False
        self._acked()
        ACK_COUNTS["bundled"] += 1
        await t._RTCSctpTransport__transport._send_data(header + pack("<L", checksum) + body)
