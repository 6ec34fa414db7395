"""Decides what each WebRTC data channel speaks, and hands its messages to that service.

A geckos.io channel carries either worldserver's native protocol (binary "raw" messages,
starting with a HELLO) or, in compatibility mode, Hatongsu's JSON text events. The first
message decides: binary goes to the native :class:`StreamService`; text that is a Hatongsu
event goes to the :class:`HatongsuService` (when enabled). A real Hatongsu front end says
nothing until it has been told its own spawn, so a channel still silent ``HATONGSU_AFTER``
seconds after opening is served as Hatongsu; if it then sends a binary HELLO after all, it is
switched to native. Otherwise a channel never changes its mode; messages of the other kind
are dropped and counted.

Called by :class:`worldserver.rtc.RtcService` in trio context. Must not parse packets or
events itself, or touch aiortc.
"""

from __future__ import annotations

import trio

from worldserver.stats import Stats
from worldserver.stream_service import StreamService

UNDECIDED, NATIVE, HATONGSU = "undecided", "native", "hatongsu"
HATONGSU_AFTER = 1.5  # seconds of silence after which an open channel is taken as Hatongsu


class RtcDispatcher:
    def __init__(self, stream: StreamService, hatongsu, stats: Stats) -> None:
        self.stream = stream
        self.hatongsu = hatongsu  # None when the compatibility mode is off
        self.stats = stats
        self.modes: dict[str, str] = {}
        self.undecided: dict[str, tuple[object, float]] = {}  # peer id -> (peer, opened at)
        self.presumed: set[str] = set()  # Hatongsu by silence, not yet by a message

    def on_open(self, peer) -> None:
        self.modes[peer.id] = UNDECIDED
        self.undecided[peer.id] = (peer, trio.current_time())
        self.stream.open_peer(peer.id, peer.send, lambda: peer.buffered_amount() == 0, peer.remote)

    def poll(self, now: float) -> None:
        """Serves channels that stayed silent as Hatongsu clients (they wait to be spawned)."""
        if self.hatongsu is None:
            return
        for pid, (peer, opened) in list(self.undecided.items()):
            if now - opened >= HATONGSU_AFTER:
                self._become_hatongsu(peer, now)
                self.presumed.add(pid)

    def _become_hatongsu(self, peer, now: float) -> None:
        self.undecided.pop(peer.id, None)
        self.modes[peer.id] = HATONGSU
        self.stream.close_peer(peer.id, "hatongsu")  # no native session was started
        self.hatongsu.open(peer, now)

    def on_binary(self, peer, data: bytes) -> None:
        mode = self.modes.get(peer.id)
        now = trio.current_time()
        if mode == HATONGSU and peer.id in self.presumed:  # a slow native client after all
            self.presumed.discard(peer.id)
            self.hatongsu.close(peer, "native")
            self.stream.open_peer(peer.id, peer.send, lambda: peer.buffered_amount() == 0, peer.remote)
            mode = UNDECIDED
        if mode == UNDECIDED:
            self.undecided.pop(peer.id, None)
            self.modes[peer.id] = mode = NATIVE
        if mode != NATIVE:
            self.stats.incr("drop.rtc.binary_in_hatongsu_mode")
            return
        self.stream.on_message(peer.id, data, now)

    def on_text(self, peer, text: str) -> None:
        mode = self.modes.get(peer.id)
        now = trio.current_time()
        if mode == UNDECIDED and self.hatongsu is not None and self.hatongsu.accepts(text):
            self._become_hatongsu(peer, now)
            mode = HATONGSU
        self.presumed.discard(peer.id)
        if mode != HATONGSU:
            self.stats.incr("drop.rtc.text_in_native_mode")
            return
        self.hatongsu.on_text(peer, text, now)

    def on_close(self, peer, reason: str) -> None:
        mode = self.modes.pop(peer.id, None)
        self.undecided.pop(peer.id, None)
        self.presumed.discard(peer.id)
        if mode == HATONGSU:
            self.hatongsu.close(peer, reason)
        elif mode is not None:
            self.stream.close_peer(peer.id, reason)
