"""A client's local copy of the part of the world the server lets it see.

:class:`WorldMirror` decodes snapshot payloads against the views it decoded before (the
server's baselines), keeps the newest view as "the world", remembers the last 64 decoded
views (the server only uses baselines the client acknowledged, so it never needs older ones)
and offers the state dequantized to metres and radians. Out-of-order snapshots are decoded
and stored (the server may use them as baselines) but never move the mirror backwards.

No sockets, no clocks: payloads and arrival times come from the caller.
"""

from __future__ import annotations

import numpy as np

from protocol.errors import ProtocolError
from protocol.messages import Welcome
from protocol.quantize import Quantizer
from protocol.snapshot import EMPTY_VIEW, SnapshotHeader, View, decode_snapshot

KEEP_VIEWS = 64


class WorldMirror:
    def __init__(self, welcome: Welcome) -> None:
        self.welcome = welcome
        self.quantizer = Quantizer(mins=welcome.mins, maxs=welcome.maxs, step=welcome.position_step)
        self.views: dict[int, View] = {}
        self.view: View = EMPTY_VIEW
        self.header: SnapshotHeader | None = None
        self.decoded = 0
        self.dropped: dict[str, int] = {}

    def apply(self, payload: bytes) -> SnapshotHeader | None:
        """Decodes one snapshot; returns its header, or None if it had to be dropped."""
        try:
            header, view = decode_snapshot(payload, self.views, self.quantizer)
        except ProtocolError as exc:
            self.dropped[exc.reason] = self.dropped.get(exc.reason, 0) + 1
            return None
        self.decoded += 1
        views = self.views
        views[header.tick] = view
        if len(views) > KEEP_VIEWS:
            for tick in sorted(views)[: len(views) - KEEP_VIEWS]:
                del views[tick]
        if header.tick > self.view.tick:
            self.view = view
            self.header = header
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
