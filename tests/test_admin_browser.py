"""The dashboard page (``/admin``, issue 9 section 3) in a real browser with bots connected.

Starts ``python -m worldserver run`` hosting the gallery and the halls with a known admin token
(helpers shared with tests/test_browser.py), connects 15 native UDP bots
(``worldclient.client.open_client``: 12 in the gallery, one of them walking to and fro, and 3
in the halls) and a chat client of one bot, then runs ``tests/browser/admin.mjs``. From what
the page reported and what the server says through its admin API this test checks:

- a wrong token gets a message saying so, is not kept, and the page shows no figures;
- with the right token the map of the default world has one dot per bot of that world, where
  the bot is and in its transport's colour (read from the canvas), the walker's dot moves,
  hovering a dot names it, a click draws the player's interest radius at the map's scale;
- the world selector shows the other world's bots; a reload does not ask for the token again;
- the Kick button removes that bot: the server's player count drops, the bot is disconnected
  (``kicked``), the table and the map lose it;
- the notice typed into the page reaches the chat client;
- the charts hold the polled samples and have something drawn.

Needs node, the web client's node modules and ``/usr/bin/chromium`` (``bash scripts/web.sh
--browser``); a missing piece fails with that hint. Must not reach anything but the server it
starts.
"""

from __future__ import annotations

import json
import os
from contextlib import AsyncExitStack

import httpx
import pytest
import trio

from test_browser import BROWSER_DIR, ROOT, ServerProcess, _require_tools
from test_hatongsu_browser import _udp_port
from worldclient.chat_client import open_chat
from worldclient.client import open_client

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOKEN = "dashboard-admin-token-0123456789"
WORLDS = {"gallery": 12, "halls": 3}
DEADLINE = 30.0
UDP_BLUE = (0x4F, 0x9D, 0xE8)  # clients/web/src/admin/map.js TRANSPORT_COLORS.udp


async def _walk(bot) -> None:
    """To and fro along x, turning every two seconds (not a divisor of the page's polls), until
    cancelled."""
    direction = 1.0
    while True:
        for _ in range(40):
            await bot.send_input(direction, 0.0)
            await trio.sleep(0.05)
        direction = -direction


def _result(proc) -> dict:
    """The script's JSON line, or a failed result saying what it printed instead."""
    lines = [line for line in proc.stdout.decode(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"admin.mjs printed no result (exit {proc.returncode}):\n"
                                      f"{proc.stderr.decode(errors='replace')[-3000:]}"}
    return json.loads(lines[-1])


async def test_the_dashboard_shows_the_bots_kicks_one_and_sends_a_notice(tmp_path):
    _require_tools()
    srv = ServerProcess(tmp_path / "data", "--set", f"server.admin_token={TOKEN}",
                        "--set", 'worlds.hosted=["gallery", "halls"]')  # fmt: skip
    try:
        srv.wait_listening()
        port = await _udp_port(srv)
        tag = os.urandom(2).hex()
        names = {world: [f"dash{tag}-{world}-{i}" for i in range(n)] for world, n in WORLDS.items()}
        walker, listener, victim = names["gallery"][0], names["gallery"][1], names["gallery"][5]
        notice = f"The gallery closes in ten minutes ({tag})"
        bots = {}
        async with AsyncExitStack() as stack:
            for world, world_names in names.items():
                for name in world_names:
                    bots[name] = await stack.enter_async_context(
                        open_client("127.0.0.1", port, http=srv.http, name=name, world=world))
            chat = await stack.enter_async_context(open_chat(srv.http, bots[listener].joined.token))
            heard = trio.Event()
            async with trio.open_nursery() as nursery:

                async def listen() -> None:
                    while True:
                        event = await chat.wait_for(lambda e: e.name == "message", timeout=3 * DEADLINE)
                        message = event.fields.get("message") or {}
                        if message.get("kind") == "notice" and message.get("author") == "server" and message.get("text") == notice:
                            heard.set()
                            return

                nursery.start_soon(listen)
                nursery.start_soon(_walk, bots[walker])
                shot = tmp_path / "admin.png"
                proc = await trio.run_process(
                    ["node", str(BROWSER_DIR / "admin.mjs"), "--url", srv.http, "--token", TOKEN,
                     "--worlds", json.dumps(WORLDS), "--walker", walker, "--kick", victim, "--notice", notice,
                     "--screenshot", str(shot), "--timeout", "150"],
                    cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False,
                )  # fmt: skip
                result = _result(proc)
                if result.get("ok"):
                    with trio.fail_after(DEADLINE):
                        await heard.wait()  # the notice typed into the page reached the chat client
                    with trio.fail_after(DEADLINE):
                        while bots[victim].connected:
                            await trio.sleep(0.05)
                    headers = {"Authorization": f"Bearer {TOKEN}"}
                    async with httpx.AsyncClient(base_url=srv.http, headers=headers) as api:
                        players = (await api.get("/admin/api/players")).json()["players"]
                        status = (await api.get("/admin/api/status")).json()
                nursery.cancel_scope.cancel()
        if not result.get("ok"):
            pytest.fail(f"browser script failed: {result.get('error')}\n"
                        f"page logs: {json.dumps(result.get('logs', []), indent=1)}\n"
                        f"server log tail:\n{srv.log_tail()}")
        assert bots[victim].closed_reason == "kicked"
        logs = [line for line in result["logs"] if "willReadFrequently" not in line]  # (this test's pixel reads)
        refusals = [line for line in logs if "status of 401" in line]
        assert len(refusals) == 1, logs  # the wrong token was sent once: no polling with it
        assert not [line for line in logs if line not in refusals], logs

        # a wrong token: said, not kept, nothing shown
        wrong = result["wrong"]
        assert wrong["login"] and not wrong["verified"] and not wrong["tokenStored"]
        assert "refused this admin token" in wrong["loginError"] and "admin.token" in wrong["loginError"]
        assert wrong["players"] == 0 and wrong["dots"] == []

        # one dot per bot of the default world, where the server says it is, in the UDP colour
        first = result["first"]
        total = sum(WORLDS.values())
        assert first["players"] == first["rows"] == total and not first["login"] and first["tokenStored"]
        assert first["world"] == "gallery" and set(first["worlds"]) == {"gallery", "halls"}
        assert sorted(d["name"] for d in first["dots"]) == sorted(names["gallery"])
        assert {d["transport"] for d in first["dots"]} == {"udp"}
        for pixel in result["pixels"]:
            assert all(abs(a - b) <= 2 for a, b in zip(pixel["rgb"], UDP_BLUE)), pixel
        assert all(-10.0 <= d["x"] <= 10.0 and -10.0 <= d["z"] <= 10.0 for d in first["dots"])  # the gallery's floor
        still = {p["name"]: p["position"] for p in players}
        for dot in first["dots"]:
            if dot["name"] not in (walker, victim):  # the others stand where they spawned
                x, _, z = still[dot["name"]]
                assert abs(dot["x"] - x) < 0.05 and abs(dot["z"] - z) < 0.05, (dot, still[dot["name"]])
        xs = [p["x"] for p in result["walker"]]
        assert len(xs) == 6 and max(xs) - min(xs) > 2.0, result["walker"]  # the map is live

        # hover names, a click selects and draws the interest radius at the map's scale
        assert result["hovered"] in result["tip"] and "(udp)" in result["tip"]
        selected = result["selected"]
        chosen = next(d for d in first["dots"] if d["name"] == result["hovered"])
        assert selected["selected"] == chosen["id"] and result["selectedRow"] == str(chosen["id"])
        assert selected["radius"] == status["interest_radius"] == 50.0
        assert selected["interest"]["r"] == pytest.approx(selected["radius"] * selected["scale"])

        # the other world; a reload keeps the token
        other = result["other"]
        assert other["world"] == "halls" and sorted(d["name"] for d in other["dots"]) == sorted(names["halls"])
        reloaded = result["reloaded"]
        assert reloaded["verified"] and not reloaded["login"] and reloaded["players"] == total

        # the kick from the page: gone from the server, the table and the map
        assert result["kickRows"] == 1
        kicked = result["kicked"]
        assert kicked["actionResult"].startswith(f"Kicked {victim}: 1 avatar(s)"), kicked["actionResult"]
        assert victim not in result["kickedNames"] and len(result["kickedNames"]) == total - 1
        assert status["clients"]["total"] == total - 1 and victim not in {p["name"] for p in players}
        assert len(kicked["dots"]) == WORLDS["gallery"] - 1

        # the notice, and the charts
        assert result["notice"].startswith("Sent to ") and notice in result["notice"], result["notice"]
        final = result["final"]
        assert final["samples"] >= 5 and all(c["points"] == final["samples"] for c in final["charts"])
        assert {c["window"] for c in final["charts"]} == {60}  # a minute while the ring holds less
        assert len(final["charts"]) == 5 and min(result["chartInk"]) > 500, result["chartInk"]
        assert any(r["public"] for r in final["rooms"])
        assert shot.stat().st_size > 20_000
    finally:
        srv.stop()
