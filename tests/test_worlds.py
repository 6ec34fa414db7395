"""Several worlds in one server (issue 10): each its own simulation, entity ids and snapshots."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from worldclient.client import open_client
from worldserver.app import serve
from worldserver.config import ConfigError, load_config
from worldserver.hosting import WorldHost
from worldserver.stats import Stats


def make_config(data_dir, **overrides):
    base = {"udp.host": "127.0.0.1", "udp.port": "0", "http.host": "127.0.0.1", "http.port": "0",
            "server.stats_interval": "60", "gc.freeze_after_start": "false", "server.data_dir": str(data_dir),
            "worlds.hosted": '["gallery", "halls"]'}
    base.update({k: str(v) for k, v in overrides.items()})
    return load_config(path=None, env={}, overrides=base)


def test_hosted_worlds_are_checked_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^worlds.hosted: two worlds have the id 'gallery'"):
        make_config(tmp_path, **{"worlds.hosted": '["gallery", "gallery"]'})
    with pytest.raises(ConfigError, match=r"^worlds.hosted: no built-in world 'nowhere'"):
        make_config(tmp_path, **{"worlds.hosted": '["nowhere"]'})
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "bad"\nfloor = {min = [0, 0], max = [10, 10]}\n')
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, **{"worlds.hosted": f'["{bad}"]'})
    assert str(info.value).startswith("worlds.hosted: world file ") and "spawns" in str(info.value)
    assert "\n" not in str(info.value)


def test_each_world_ticks_on_its_own_deadline(tmp_path):
    host = WorldHost(make_config(tmp_path, **{"worlds.hosted": '["open", "gallery", "halls"]'}), Stats())
    host.start(10.0)
    assert [round(c.start, 6) for c in host.clocks.values()] == [10.0, round(10.0 + 0.05 / 3, 6), round(10.0 + 0.1 / 3, 6)]
    assert host.next_deadline() == 10.0
    assert [sim.world_id for sim, _ in host.due(10.04)] == ["open", "gallery", "halls"]
    for sim, clock in host.due(10.04):
        sim.run_tick(10.04)
        clock.advance(10.04)
    assert host.due(10.04) == [] and host.next_deadline() == pytest.approx(10.05)
    assert host.get("") is host.default and host.get("halls").world_spec.title == "The Halls" and host.get("x") is None


async def test_two_worlds_in_one_server_do_not_see_each_other(nursery, tmp_path):
    running = await nursery.start(serve, make_config(tmp_path))
    host, port = running.udp_address[:2]
    http = f"http://127.0.0.1:{running.http_port}"
    hall_sim = running.worlds.get("halls")
    async with open_client(host, port, http=http, world="gallery") as g1, \
            open_client(host, port, http=http, world="gallery") as g2, \
            open_client(host, port, http=http, world="halls") as h1, \
            open_client(host, port, http=http) as d1:  # no world named: the default (the first)
        assert await g1.wait_until(lambda c: c.mirror.position_of(g2.entity_id) is not None, 5.0)
        assert await d1.wait_until(lambda c: c.mirror.position_of(g1.entity_id) is not None, 5.0)
        assert await h1.wait_until(lambda c: c.mirror.header is not None and c.mirror.tick > 5, 5.0)
        # halls' only avatar is h1: 10 ticks after everyone joined it still sees nobody else
        seen = h1.mirror.tick
        assert await h1.wait_until(lambda c: c.mirror.tick >= seen + 10, 5.0)
        assert set(h1.mirror.entities()) == {h1.entity_id}
        assert set(g1.mirror.entities()) == {g1.entity_id, g2.entity_id, d1.entity_id}
        assert len(hall_sim.sessions) == 1 and len(running.worlds.get("gallery").sessions) == 3
        # each world's bounds and walls are its own
        assert h1.welcome.maxs[0] == 31.0 and g1.welcome.maxs[0] == 10.0
        pos = hall_sim.world.pos[hall_sim.sessions[0].slot]
        assert hall_sim.world.walls.penetration([pos[0]], [pos[2]])[0] == 0.0
        async with httpx.AsyncClient() as client:
            worlds = (await client.get(f"{http}/api/worlds")).json()
            assert worlds == {"default": "gallery", "worlds": [
                {"id": "gallery", "title": "The Gallery", "players": 3}, {"id": "halls", "title": "The Halls", "players": 1}]}
            players = (await client.get(f"{http}/api/players?world=halls")).json()["players"]
            assert [p["entity_id"] for p in players] == [h1.entity_id]
            assert (await client.get(f"{http}/api/players?world=nowhere")).status_code == 404
            r = await client.post(f"{http}/api/join", json={"name": "lost", "world": "nowhere"})
            assert r.status_code == 404 and r.json()["error"] == "no such world"
            assert (await client.get(f"{http}/health")).json()["clients"] == 4


async def test_worldserver_worlds_lists_them(nursery, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import trio

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(root / "clients" / "python")]))
    running = await nursery.start(serve, make_config(tmp_path))
    url = f"http://127.0.0.1:{running.http_port}"
    cmd = [sys.executable, "-m", "worldserver", "worlds", "--url", url]
    done = await trio.run_process([*cmd, "--json"], capture_stdout=True, env=env)
    assert json.loads(done.stdout)["worlds"][1] == {"id": "halls", "title": "The Halls", "players": 0}
    table = (await trio.run_process(cmd, capture_stdout=True, env=env)).stdout.decode().splitlines()
    assert table[0].split() == ["world", "title", "players"]
    assert table[1].split() == ["gallery", "(default)", "The", "Gallery", "0"] and table[2].split()[0] == "halls"
    gone = await trio.run_process([sys.executable, "-m", "worldserver", "worlds", "--url", "http://127.0.0.1:9"],
                                  capture_stderr=True, check=False, env=env)
    assert gone.returncode == 1
    lines = gone.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the server at http://127.0.0.1:9")


async def test_each_world_has_its_own_public_chat_room(nursery, tmp_path):
    """A player is in the public room of the world it joined, sees no other world's public
    room, and can neither join, read nor write in it."""
    from worldclient.chat_client import ChatRequestError, open_chat
    from worldclient.join import join

    running = await nursery.start(serve, make_config(tmp_path))
    http = f"http://127.0.0.1:{running.http_port}"
    g = await join(http, "gina", world="gallery")
    h = await join(http, "hal", world="halls")
    async with open_chat(http, g.token) as gc, open_chat(http, h.token) as hc:
        assert gc.public_room != hc.public_room
        assert {r["id"] for r in await hc.rooms()}.isdisjoint({gc.public_room})
        await gc.send(gc.public_room, "only for the gallery")
        for attempt in (hc.join(gc.public_room), hc.history(gc.public_room), hc.send(gc.public_room, "hi")):
            with pytest.raises(ChatRequestError) as info:
                await attempt
            assert info.value.code == "forbidden"
        sent = await hc.send(hc.public_room, "only for the halls")
        assert sent
        gallery_texts = [m["text"] for m in (await gc.history(gc.public_room))[0]]
        halls_texts = [m["text"] for m in (await hc.history(hc.public_room))[0]]
        assert "only for the gallery" in gallery_texts and "only for the halls" not in gallery_texts
        assert "only for the halls" in halls_texts and "only for the gallery" not in halls_texts
