"""Hatongsu compatibility mode end to end: a geckos.io page and a native bot in one world.

Starts ``python -m worldserver run`` (helpers shared with tests/test_browser.py), connects a
native Python bot over UDP (``worldclient.client.open_client``) and runs
``tests/browser/hatongsu.mjs``: headless chromium with the unmodified ``@geckos.io/client``
sending Hatongsu's JSON events. The page must see the bot walk (serverPlayerUpdate), the bot
must see the page's avatar walk where the page claims to go (never faster than max speed),
and the page must be told when the bot leaves (serverPlayerDisconnected).

Needs node, the web client's node modules and ``/usr/bin/chromium`` (``bash scripts/web.sh
--browser``); a missing piece fails with that hint. Must not reach anything but the server
it starts.
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import trio

from test_browser import BROWSER_DIR, ROOT, ServerProcess, server  # noqa: F401 (server: the fixture)
from worldclient.client import open_client

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MAX_SPEED = 5.0  # sim.max_speed default
TICK_RATE = 20  # sim.tick_rate default



async def _udp_port(server: ServerProcess) -> int:
    with trio.move_on_after(20):
        while True:
            for line in list(server.lines):
                if line.startswith("{"):
                    record = json.loads(line)
                    if record.get("msg") == "listening" and record.get("udp"):
                        return int(record["udp"].rsplit(":", 1)[1])
            await trio.sleep(0.05)
    pytest.fail("server did not log its UDP address; log:\n" + server.log_tail())


async def test_hatongsu_page_and_native_bot_see_each_other(server):
    port = await _udp_port(server)
    out: dict = {"stdout": b"", "stderr": [], "walked": trio.Event(), "done": trio.Event(), "way": None}
    seen: dict = {"page": None, "start": None, "track": [], "max_anim": 0}

    def along(x: float, z: float) -> float:
        """How far the page's avatar went from where the bot first saw it, the way it walks."""
        dx, dz = out["way"]
        return (x - seen["start"][0]) * dx + (z - seen["start"][1]) * dz

    async def read_stdout(stream):
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
        out["stdout"] = b"".join(chunks)

    async def read_stderr(stream):
        buf = b""
        async for chunk in stream:
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                out["stderr"].append(text)
                if text.startswith("progress: walk-way "):
                    out["way"] = tuple(float(v) for v in text.split()[2:4])
                if text.strip() == "progress: done-walking":
                    out["walked"].set()

    cmd = ["node", str(BROWSER_DIR / "hatongsu.mjs"), "--url", server.http, "--timeout", "110"]
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(lambda task_status: trio.run_process(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, task_status=task_status,
        ))  # fmt: skip
        nursery.start_soon(read_stdout, proc.stdout)
        nursery.start_soon(read_stderr, proc.stderr)

        async with open_client("127.0.0.1", port, http=server.http) as bot:  # joins first
            me = bot.entity_id
            started = trio.current_time()
            tick = 0
            # Walk back and forth along x (1.5 s each way) until the page walked and the bot
            # saw the page's avatar arrive 6 m further the way it walked (the page chose the
            # way with the most room in the world and said which).
            with trio.move_on_after(100):
                while True:
                    direction = 1.0 if (tick // 30) % 2 == 0 else -1.0
                    await bot.send_input(direction, 0.0, anim=1)
                    tick += 1
                    await trio.sleep(0.05)
                    mirror = bot.mirror
                    if mirror is None:
                        continue
                    others = {eid: v for eid, v in mirror.entities().items() if eid != me}
                    if seen["page"] is None and len(others) == 1:
                        seen["page"] = next(iter(others))
                    page = others.get(seen["page"]) if seen["page"] is not None else None
                    if page is not None:
                        pos, _yaw, anim = page
                        snap_tick = mirror.tick  # the server tick of this view
                        if seen["start"] is None:
                            seen["start"] = (float(pos[0]), float(pos[2]))
                        if not seen["track"] or seen["track"][-1][0] != snap_tick:
                            seen["track"].append((snap_tick, float(pos[0]), float(pos[2])))
                        seen["max_anim"] = max(seen["max_anim"], int(anim))
                        if out["walked"].is_set() and along(float(pos[0]), float(pos[2])) > 5.8:
                            break
                    if proc.returncode is not None:
                        break
            walk_seconds = trio.current_time() - started
        # The bot is gone now; the page waits for its serverPlayerDisconnected and exits.
        with trio.move_on_after(40):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()

    lines = [line for line in out["stdout"].decode(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        pytest.fail(
            f"hatongsu.mjs printed no result (exit {proc.returncode}):\n"
            + "\n".join(out["stderr"][-40:])
            + "\nserver log tail:\n" + server.log_tail()
        )
    result = json.loads(lines[-1])
    if not result.get("ok"):
        pytest.fail(
            f"browser script failed: {result.get('error')}\n"
            f"page logs: {json.dumps(result.get('logs', []), indent=1)}\n"
            f"bot saw: page={seen['page']} start={seen['start']} last={seen['track'][-3:]}\n"
            f"server log tail:\n{server.log_tail()}"
        )

    # The page saw the bot walk, under a 24-character alias, and got its own spawn first.
    bot_seen = result["bot_seen"]
    assert bot_seen["span"] > 2.0 and len(bot_seen["id"]) == 24 and bot_seen["id"].isalnum()
    before = result["before_walk"]
    assert before["counts"].get("serverNewPlayer", 0) >= 1
    assert before["counts"].get("serverExistingPlayers", 0) >= 1
    mine = [p for p in before["players"] if p["mine"]]
    assert len(mine) == 1 and mine[0]["id"] == result["before_walk"]["id"]  # exactly one own avatar
    assert len([p for p in before["players"] if not p["mine"]]) == 1  # no duplicate of the bot
    assert result["events"][0][0] == "serverNewPlayer"
    assert result["events"][0][1]["playerId"] == before["id"]
    # ...and was told the bot left.
    assert result["after"]["counts"].get("serverPlayerDisconnected", 0) >= 1
    assert [p for p in result["after"]["players"] if not p["mine"]] == []

    # The bot saw the page's avatar go where the page said, never faster than max speed.
    assert seen["page"] is not None, "the bot never saw the page's avatar"
    assert out["way"] == (result["way"]["dx"], result["way"]["dz"]), (out["way"], result["way"])
    track = seen["track"]
    assert along(track[-1][1], track[-1][2]) > 5.8, (out["way"], track[-5:])
    for (ta, xa, za), (tb, xb, zb) in zip(track, track[1:]):
        # measured in server ticks (the views' tick numbers), not in when the bot looked:
        # however the snapshots bunch up on a busy machine; 5 cm for quantisation
        assert tb > ta and math.hypot(xb - xa, zb - za) <= MAX_SPEED * (tb - ta) / TICK_RATE + 0.05, (ta, tb, xa, za, xb, zb)
    assert seen["max_anim"] == 2  # the page's running state reached the native bot
    assert walk_seconds < 100
    # A real Hatongsu front end says nothing before it is spawned: the server must not wait.
    assert result["before_walk"]["nudged"] is False, "the server waited for the page's first message"
