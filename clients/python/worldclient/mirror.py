"""A client's local copy of the part of the world the server lets it see.

:class:`WorldMirror` decodes snapshot parts against the views it decoded before (the server's
baselines) with :class:`protocol.snapshot.PartAssembler`: the parts of a tick are collected
until all have arrived, the newest complete tick is "the world", and the last 64 complete
views are kept (the server only uses baselines the client acknowledged whole, so it never
needs older ones). It offers the state dequantized to metres and radians. Out-of-order ticks
are decoded and stored (the server may use them as baselines) but never move the mirror
backwards.

No sockets, no clocks: payloads and arrival times come from the caller.
"""

from __future__ import annotations

import numpy as np

from protocol.errors import ProtocolError
from protocol.messages import Welcome
from protocol.quantize import Quantizer
from protocol.snapshot import PartAssembler, PartHeader, View

KEEP_VIEWS = 64


class WorldMirror:
    def __init__(self, welcome: Welcome) -> None:
        self.welcome = welcome
        self.quantizer = Quantizer(mins=welcome.mins, maxs=welcome.maxs, step=welcome.position_step)
        self.assembler = PartAssembler(self.quantizer, keep=KEEP_VIEWS)
        self.decoded = 0  # parts decoded
        self.completed = 0  # ticks with every part decoded
        self.dropped: dict[str, int] = {}

    @property
    def views(self) -> dict[int, View]:
        return self.assembler.views

    @property
    def view(self) -> View:
        """The newest complete view (the empty view before any)."""
        return self.assembler.view

    @property
    def header(self) -> PartHeader | None:
        """A part header of the newest complete tick."""
        return self.assembler.header

    def apply(self, payload: bytes) -> PartHeader | None:
        """Decodes one snapshot part; returns its header, or None if it had to be dropped.

        The mirror moves when the part completes a tick newer than the current one
        (``header.tick == mirror.view.tick`` right after)."""
        try:
            header, completed = self.assembler.add(payload)
        except ProtocolError as exc:
            self.dropped[exc.reason] = self.dropped.get(exc.reason, 0) + 1
            return None
        self.decoded += 1
        self.completed += completed
        return header

    @property
    def tick(self) -> int:
        return self.view.tick

    def entities(self) -> dict[int, tuple[np.ndarray, float, int]]:
        """{entity id: (position (3,) metres, yaw radians, anim)} of the newest view."""
        pos, yaw, anim = self.quantizer.dequantize_state(self.view.q)
        return {int(i): (pos[k], float(yaw[k]), int(anim[k])) for k, i in enumerate(self.view.ids)}

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, positions (n,3) metres) of the newest view."""
        return self.view.ids, self.quantizer.dequantize_positions(self.view.q[:, :3])

    def position_of(self, entity_id: int) -> np.ndarray | None:
        ids = self.view.ids
        k = int(np.searchsorted(ids, entity_id))
        if k < len(ids) and ids[k] == entity_id:
            return self.quantizer.dequantize_positions(self.view.q[k : k + 1, :3])[0]
        return None
