"""Snapshot interpolation and client-side prediction helpers.

:class:`Interpolator` buffers timestamped snapshots of remote entities and samples them a
little in the past (``delay``, about two to three snapshot intervals), so remote avatars move
smoothly between updates; yaw is interpolated along the shorter arc, entities that appear or
disappear are reported as they are in the nearest snapshot. :class:`Predictor` keeps the
inputs the server has not yet applied and replays them on the server's authoritative position,
the classic reconciliation, using the same integration rule as the server.

Pure computation: no sockets, no clocks (times are passed in).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from protocol.messages import INPUT_AXIS_SCALE, Input


class Interpolator:
    def __init__(self, delay: float = 0.1, keep: int = 32) -> None:
        self.delay = delay
        self._frames: deque[tuple[float, dict[int, tuple[np.ndarray, float]]]] = deque(maxlen=keep)

    def push(self, t: float, ids: np.ndarray, pos: np.ndarray, yaw: np.ndarray) -> None:
        """Adds the state of a snapshot stamped with server time ``t`` (tick / tick_rate)."""
        if self._frames and t <= self._frames[-1][0]:
            return  # old or duplicate snapshot
        self._frames.append((t, {int(i): (pos[k], float(yaw[k])) for k, i in enumerate(ids)}))

    def sample(self, now: float) -> dict[int, tuple[np.ndarray, float]]:
        """Entity states at server time ``now - delay``."""
        if not self._frames:
            return {}
        t = now - self.delay
        frames = self._frames
        if t <= frames[0][0]:
            return dict(frames[0][1])
        if t >= frames[-1][0]:
            return dict(frames[-1][1])
        for k in range(len(frames) - 1, 0, -1):
            t0, a = frames[k - 1]
            t1, b = frames[k]
            if t0 <= t <= t1:
                w = (t - t0) / (t1 - t0)
                out = {}
                for eid, (p1, y1) in b.items():
                    if eid in a:
                        p0, y0 = a[eid]
                        dy = (y1 - y0 + math.pi) % (2 * math.pi) - math.pi
                        out[eid] = (p0 + (p1 - p0) * w, (y0 + dy * w) % (2 * math.pi))
                    else:
                        out[eid] = (p1, y1)
                return out
        return dict(frames[-1][1])


class Predictor:
    """Predicts the own avatar's position from unacknowledged inputs (horizontal plane)."""

    def __init__(self, max_speed: float, dt: float, half_extent: float) -> None:
        self.max_speed = max_speed
        self.dt = dt
        self.half_extent = half_extent
        self.pending: deque[Input] = deque(maxlen=128)

    def step(self, pos: np.ndarray, inp: Input) -> np.ndarray:
        move = np.array([inp.move_x, inp.move_z], dtype=np.float64) / INPUT_AXIS_SCALE
        norm = math.hypot(*move)
        if norm > 1.0:
            move /= norm
        out = np.array(pos, dtype=np.float64)
        out[0] += move[0] * self.max_speed * self.dt
        out[2] += move[1] * self.max_speed * self.dt
        out[[0, 2]] = np.clip(out[[0, 2]], -self.half_extent, self.half_extent)
        return out

    def record(self, inp: Input) -> None:
        self.pending.append(inp)

    def reconcile(self, server_pos: np.ndarray, input_ack: int) -> np.ndarray:
        """Drops inputs the server applied; replays the rest on the server's position."""
        while self.pending and self.pending[0].seq <= input_ack:
            self.pending.popleft()
        pos = np.array(server_pos, dtype=np.float64)
        for inp in self.pending:
            pos = self.step(pos, inp)
        return pos
