"""The page in a crowd (issue 10): name tags and the camera with 30 bots, in a real browser.

Starts ``python -m worldserver run`` on a world file (helpers shared with tests/test_browser.py),
connects 30 native bots over UDP (``worldclient.client.open_client``, each joined over HTTP
with its own name) and runs ``tests/browser/crowd.mjs``: the page looks at the crowd, then
walks into a corner and turns the view to eight yaws. From the page's samples this test
checks, against the world file's walls (read here with ``worldserver.worldfile``, the lines
of sight sampled on a 1 cm grid, independent of the page's own ray code):

- the page never displays more name tags than its cap, and the cap did hold tags back;
- no displayed tag's box overlaps the chat panel's box;
- no displayed tag has a wall between the camera and it (in the halls, tags behind the walls
  were there to hide, and were hidden);
- in the corner, at every yaw, the camera stays inside the room and out of every wall.

Needs node, the web client's node modules and ``/usr/bin/chromium`` (``bash scripts/web.sh
--browser``); a missing piece fails with that hint. Must not reach anything but the server
it starts.
"""

from __future__ import annotations

import json
import os
from contextlib import AsyncExitStack

import numpy as np
import pytest
import trio

from test_browser import BROWSER_DIR, ROOT, ServerProcess, _require_tools
from test_hatongsu_browser import _udp_port
from worldclient.client import open_client
from worldserver.worldfile import builtin_world

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BOTS = 30
CAMERA_PAD = 0.25  # clients/web/src/scene/camera.js: the camera keeps this off any wall


def _blocked(spec, a: dict, b: dict, slack: float = 0.01) -> bool:
    """True when the straight line from a to b ({x, y, z}) passes through a wall: sampled
    every centimetre, a sample within a wall's half thickness (less ``slack``) of its segment,
    below its height. Obstacles count with no thickness, so only their height matters here:
    they are benches, lower than any camera or tag, and are checked the same way."""
    p0 = np.array([a["x"], a["y"], a["z"]])
    p1 = np.array([b["x"], b["y"], b["z"]])
    n = max(2, int(np.linalg.norm(p1 - p0) / 0.01) + 1)
    pts = p0 + np.linspace(0.0, 1.0, n)[:, None] * (p1 - p0)
    for (ax, az, bx, bz), half, height in _capsules(spec):
        d = np.array([bx - ax, bz - az])
        l2 = float(d @ d)
        rel = pts[:, [0, 2]] - np.array([ax, az])
        t = np.clip(rel @ d / l2, 0.0, 1.0) if l2 else np.zeros(len(pts))
        dist = np.linalg.norm(rel - t[:, None] * d, axis=1)
        if np.any((dist < max(half - slack, 0.02)) & (pts[:, 1] <= height)):
            return True
    return False


def _capsules(spec):
    segs, half = spec.segments()
    heights = [w.height for w in spec.walls for _ in w.points[1:]] + [o.height for o in spec.obstacles for _ in range(4)]
    return list(zip(segs, half, heights))


def _wall_distance(spec, x: float, z: float) -> float:
    """How far (x, z) is from the nearest wall's surface (negative: inside one)."""
    best = float("inf")
    for (ax, az, bx, bz), half, _height in _capsules(spec):
        d = np.array([bx - ax, bz - az])
        l2 = float(d @ d)
        rel = np.array([x - ax, z - az])
        t = float(np.clip(rel @ d / l2, 0.0, 1.0)) if l2 else 0.0
        best = min(best, float(np.linalg.norm(rel - t * d)) - half)
    return best


def _overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


async def _crowd_run(tmp_path, world: str, route: list, *extra: str) -> dict:
    _require_tools()
    srv = ServerProcess(tmp_path / "data", "--set", f"worlds.hosted={world}")
    try:
        srv.wait_listening()
        port = await _udp_port(srv)
        tag = os.urandom(2).hex()
        async with AsyncExitStack() as stack:
            for i in range(BOTS):
                await stack.enter_async_context(open_client("127.0.0.1", port, http=srv.http, name=f"crowd{tag}-{i}"))
            proc = await trio.run_process(
                ["node", str(BROWSER_DIR / "crowd.mjs"), "--url", srv.http, "--bots", str(BOTS),
                 "--route", json.dumps(route), "--timeout", "150", *extra],
                cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
        lines = [line for line in proc.stdout.decode(errors="replace").splitlines() if line.startswith("{")]
        if not lines:
            pytest.fail(f"crowd.mjs printed no result (exit {proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
        result = json.loads(lines[-1])
        if not result.get("ok"):
            pytest.fail(
                f"browser script failed: {result.get('error')}\n"
                f"page logs: {json.dumps(result.get('logs', []), indent=1)}\n"
                f"server log tail:\n{srv.log_tail()}"
            )
        return result
    finally:
        srv.stop()


def _check_tags(spec, samples: list) -> dict:
    """The tag rules on every sample; returns counts for the callers' non-vacuity checks."""
    counts = {"displayed_max": 0, "cap": 0, "wall": 0, "panel": 0, "checked_lines": 0}
    for s in samples:
        tags = s["tags"]
        cap = tags["cap"]
        assert 8 <= cap <= 18, cap
        assert len(s["dom"]) <= cap, (len(s["dom"]), cap)  # what the page really displays
        counts["displayed_max"] = max(counts["displayed_max"], len(s["dom"]))
        if s["chat"] is not None:
            for box in s["dom"]:
                assert not _overlap(box, s["chat"]), (box, s["chat"])
        camera = tags["camera"]
        self_id = s["self"]["id"] if s["self"] else None
        for t in tags["tags"]:
            if t["reason"]:
                counts[t["reason"]] = counts.get(t["reason"], 0) + 1
            if t["displayed"] and t["id"] != self_id:
                assert t["shown"], t
                assert not _blocked(spec, camera, t), f"tag of {t['name']} shown through a wall: camera {camera}, tag {t}"
                counts["checked_lines"] += 1
    return counts


def _check_corner(spec, result: dict, room: tuple[float, float, float, float], corner: tuple[float, float]) -> None:
    end = result["walked"][-1]
    assert abs(end["x"] - corner[0]) < 1.0 and abs(end["z"] - corner[1]) < 1.0, end  # in the corner
    x0, z0, x1, z1 = room
    yaws = set()
    pulled = 0
    for s in result["corner"]:
        v = s["view"]
        assert x0 < v["x"] < x1 and z0 < v["z"] < z1, f"camera outside the room at yaw {s['yaw']}: {v}"
        assert _wall_distance(spec, v["x"], v["z"]) > CAMERA_PAD - 0.02, f"camera in a wall at yaw {s['yaw']}: {v}"
        assert not _blocked(spec, {"x": end["x"], "y": 1.6, "z": end["z"]}, v), f"a wall between the head and the camera: {v}"
        yaws.add(round(s["yaw"], 3))
        pulled += bool(v["blocked"])
    assert len(yaws) == 8
    assert pulled >= 8, pulled  # with its back to the walls the camera was pulled in


async def test_a_crowd_in_the_gallery(tmp_path):
    """30 bots around the visitor in the gallery room: at most the cap of name tags, none over
    the chat panel; in the north-east corner the camera stays in the room at every yaw."""
    spec = builtin_world("gallery")
    result = await _crowd_run(tmp_path, "gallery", [[20.0, 20.0]])
    assert result["world"]["id"] == "gallery"
    counts = _check_tags(spec, result["crowd"] + result["corner"])
    assert counts["displayed_max"] >= 3, counts  # tags were shown (crowded ones left out)
    assert counts["cap"] > 0, counts  # the cap held tags back
    assert counts["checked_lines"] > 50, counts
    face = 10.0 - 0.15
    _check_corner(spec, result, (-face, -face, face, face), (face - 0.35, face - 0.35))


async def test_a_crowd_in_the_halls_and_the_corner_of_a_room(tmp_path):
    """30 bots in the halls' corridor: at most the cap of tags, none over the chat panel nor
    through a wall; the visitor walks through a doorway into the north-west room's corner,
    where the corridor's bots are behind the room's wall: their tags are hidden, and the
    camera stays in the room."""
    spec = builtin_world("halls")
    result = await _crowd_run(tmp_path, "halls", [[-15.0, None], [-15.0, 12.0], [-40.0, 40.0]])
    assert result["world"]["id"] == "halls"
    crowd = _check_tags(spec, result["crowd"])
    assert crowd["displayed_max"] >= 1, crowd  # (many bots are beyond TAG_FAR along the corridor)
    corner = _check_tags(spec, result["corner"])
    assert corner["wall"] > 0, corner  # there were tags behind the wall to hide
    _check_corner(spec, result, (-30.0 + 0.15, 3.0 + 0.15, -0.15, 23.0 - 0.15), (-30.0 + 0.5, 23.0 - 0.5))
