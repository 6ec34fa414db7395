"""Worlds opened, closed and reloaded while the server runs, and pictures hung live (issue 10).

Servers run in process (``worldserver.app.serve`` on loopback, free ports); the players are
real clients: UDP bots (``worldclient.client``), a raw ``/ws/movement`` socket speaking the
native protocol (``protocol.client.ClientConnection``), chat clients; the operator is the real
``python -m worldserver worlds ...`` command or plain HTTP to ``/admin/api/worlds``. Images
are made with Pillow and checked by the chat's image worker processes. Nothing sleeps for a
time: waits are for conditions, each under a deadline. The pure parts (nearest clear point,
new walls for a running world, the host's clocks) are tested first.
"""

from __future__ import annotations

import io
import json
import logging
import stat
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio
from PIL import Image
from trio_websocket import open_websocket_url

from protocol import PROTOCOL_VERSION
from protocol.client import ClientConnection
from protocol.events import Connected, Disconnected
from test_admin import DEADLINE, api, cli, make_config, until
from worldclient.chat_client import open_chat
from worldclient.client import open_client
from worldclient.join import JoinFailed, join
from worldserver.app import serve
from worldserver.collision import WallSet
from worldserver.config import load_config
from worldserver.hosting import WorldHost
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.world import World
from worldserver.worldfile import builtin_world

HOST = "127.0.0.1"


# -- the pure parts -----------------------------------------------------------------------------


def test_nearest_clear_point_is_next_to_the_wall_on_the_near_side():
    walls = WallSet([(-5.0, 0.0, 5.0, 0.0)], 0.5, 0.35, (-10, -10), (10, 10))  # a 1 m thick wall on z = 0
    x, z, found = walls.nearest_clear([1.0, -2.0, 0.0], [0.3, -0.2, 5.0])
    assert found.all()
    assert walls.clear(x, z).all() and walls.penetration(x, z).max() == 0.0
    assert z[0] == pytest.approx(0.85, abs=0.18) and x[0] == pytest.approx(1.0, abs=0.18)  # up: it was above
    assert z[1] == pytest.approx(-0.85, abs=0.18) and x[1] == pytest.approx(-2.0, abs=0.18)  # down
    assert (x[2], z[2]) == (0.0, 5.0)  # clear already: stays
    boxed = WallSet([(-10, 0, 10, 0)], 20.0, 0.35, (-10, -10), (10, 10))  # nothing of the floor is clear
    x, z, found = boxed.nearest_clear([1.0], [1.0])
    assert not found[0] and (x[0], z[0]) == (1.0, 1.0)


def test_new_walls_move_the_avatars_they_overlap_and_no_one_else():
    world = World(capacity=16, half_extent=10.0, y_min=-10, y_max=50, max_speed=5, jump_speed=4, gravity=9.81,
                  walls=WallSet([], 0.0, 0.35, (-10, -10), (10, 10)), spawn_areas=[(0.0, 0.0)],
                  rng=np.random.default_rng(1))
    ids = [world.spawn(owner=i) for i in range(3)]
    slots = [i >> 16 for i in ids]
    world.pos[slots[0], ::2] = (2.0, 0.1)  # where the new wall will be
    world.pos[slots[1], ::2] = (-6.0, -6.0)  # far from it
    world.pos[slots[2], ::2] = (9.9, 9.9)  # off the new, smaller floor
    before = world.pos[slots[1]].copy()
    walls = WallSet([(-5.0, 0.0, 5.0, 0.0)], 0.2, 0.35, (-9, -9), (9, 9))
    moved = world.set_walls(walls, [(-4.0, -4.0)])
    assert sorted(moved.tolist()) == sorted([slots[0], slots[2]])
    alive = world.alive_slots()
    assert walls.clear(world.pos[alive, 0], world.pos[alive, 2]).all()
    assert np.array_equal(world.pos[slots[1]], before)
    assert abs(world.pos[slots[0], 2]) == pytest.approx(0.55, abs=0.18)  # just beside the wall's face
    assert world.pos[slots[2], 0] <= 9 - 0.35 and world.pos[slots[2], 2] <= 9 - 0.35
    assert world.spawn_candidates.tolist() == [[-4.0, -4.0]]
    with pytest.raises(ValueError):  # a floor beyond the world's bounds
        world.set_walls(WallSet([], 0.0, 0.35, (-11, -11), (11, 11)), [(0.0, 0.0)])


def test_an_opened_world_ticks_on_its_own_deadline_and_a_closed_one_no_more(tmp_path):
    config = load_config(None, {}, {"worlds.hosted": "gallery", "server.data_dir": str(tmp_path)})
    host = WorldHost(config, Stats())
    host.start(10.0)
    halls = Simulation(config, Stats(), spec=builtin_world("halls"))
    host.add(halls, 10.01)
    # half a tick after now (or after the tick due next, if later): its first tick is never late
    assert host.clocks["halls"].deadline() == pytest.approx(10.01 + 0.025)
    assert [sim.world_id for sim, _ in host.due(10.03)] == ["gallery"]
    assert [sim.world_id for sim, _ in host.due(10.04)] == ["gallery", "halls"]
    with pytest.raises(ValueError):
        host.add(halls, 10.0)
    with pytest.raises(ValueError):
        host.remove("gallery")  # the default world stays
    assert host.remove("halls") is halls and "halls" not in host.clocks and host.get("halls") is None
    assert [sim.world_id for sim, _ in host.due(10.03)] == ["gallery"]


# -- servers ------------------------------------------------------------------------------------


class Served:
    def __init__(self, running) -> None:
        self.running = running
        self.url = f"http://{HOST}:{running.http_port}"
        self.udp = running.udp_address[1]
        self.stats = running.stats


async def start(nursery, tmp_path: Path, hosted: str, **overrides) -> Served:
    config = make_config(tmp_path, **{"worlds.hosted": hosted, **overrides})
    return Served(await nursery.start(serve, config))


ANNEX = """
id = "annex"
title = "The Annex"
floor = {{ min = [-8, -8], max = [8, 8] }}
{walls}
[[spawns]]
center = {spawn}

[[pictures]]
id = "north"
position = [0, 2, 7.8]
facing = 180
size = [2, 1.5]
image = "{image}"
"""


def annex_file(tmp_path: Path, walls: str = "", image: str = "", floor: int = 8, spawn: str = "[0, 3]") -> Path:
    path = tmp_path / "annex.toml"
    text = ANNEX.format(walls=walls, image=image, spawn=spawn).replace("[-8, -8], max = [8, 8]", f"[-{floor}, -{floor}], max = [{floor}, {floor}]")
    path.write_text(textwrap.dedent(text))
    return path


async def world_doc(url: str, world_id: str) -> tuple[int, dict]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{url}/api/worlds/{world_id}")
        return answer.status_code, answer.json()


def png(width: int = 64, height: int = 48, colour=(200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 90, 200)).save(out, "GIF")
    return out.getvalue()


async def ws_player(url: str, token: str, nursery) -> dict:
    """A native-protocol player over ``/ws/movement``: returns a dict filled with its welcome
    and, when the server ends it, its Disconnected event."""
    state: dict = {"events": []}
    ready = trio.Event()

    async def run() -> None:
        async with open_websocket_url(url.replace("http://", "ws://") + "/ws/movement") as ws:
            conn = ClientConnection(version=PROTOCOL_VERSION, nonce=7, token=token.encode(), trusted=True)
            await ws.send_message(conn.connect(trio.current_time()))
            while True:
                data = bytes(await ws.get_message())
                events, _ = conn.receive_datagram(data, trio.current_time())
                for event in events:
                    state["events"].append(event)
                    if isinstance(event, Connected):
                        state["welcome"] = event
                        ready.set()
                    if isinstance(event, Disconnected):
                        state["disconnected"] = event
                        ready.set()
                        return

    nursery.start_soon(run)
    with trio.fail_after(DEADLINE):
        await ready.wait()
    return state


# -- open ---------------------------------------------------------------------------------------


async def test_open_a_world_players_join_it_chat_in_its_room_and_it_ticks(nursery, tmp_path):
    served = await start(nursery, tmp_path, "gallery")
    url, udp = served.url, served.udp
    with pytest.raises(JoinFailed) as info:
        await join(url, "early", world="halls")
    assert info.value.status == 404
    rc, out, err = await cli("worlds", "open", "halls", url=url)
    assert (rc, err) == (0, "") and out.strip() == "opened halls (The Halls): 34 picture slot(s)"
    halls = served.running.worlds.get("halls")
    assert halls is not None and halls.world_spec.title == "The Halls"
    async with httpx.AsyncClient() as http:
        listed = (await http.get(f"{url}/api/worlds")).json()
    assert [w["id"] for w in listed["worlds"]] == ["gallery", "halls"] and listed["default"] == "gallery"
    async with open_client(HOST, udp, http=url, name="hana", world="halls") as hana, \
            open_client(HOST, udp, http=url, name="gus", world="gallery") as gus:
        assert [s.name for s in halls.sessions] == ["hana"]
        await hana.send_input(1.0, 0.0)
        ticked = halls.tick
        await until(lambda: halls.tick >= ticked + 20, "the opened world to tick")
        assert await hana.wait_until(lambda c: c.mirror.header is not None and c.mirror.tick > 5, DEADLINE)
        assert set(hana.mirror.entities()) == {hana.entity_id}  # it sees no one of the gallery
        assert hana.welcome.maxs[0] == 31.0 and gus.welcome.maxs[0] == 10.0  # each world its bounds
        assert len(served.running.worlds.get("gallery").sessions) == 1
        async with open_chat(url, hana.joined.token) as chat:
            rooms = {r["id"]: r["name"] for r in await chat.rooms()}
            assert rooms[chat.public_room] == "lobby@halls"
    # open it again, a world no one ships, a broken file: refused with one clear line
    rc, out, err = await cli("worlds", "open", "halls", url=url)
    assert (rc, err.strip()) == (1, "error: the world 'halls' is open already (409)")
    rc, out, err = await cli("worlds", "open", "nowhere", url=url)
    assert (rc, err.strip()) == (1, "error: no built-in world 'nowhere' (400)")
    broken = tmp_path / "broken.toml"
    broken.write_text('id = "broken"\nfloor = { min = [0, 0], max = [1, "a"] }\n')
    rc, out, err = await cli("worlds", "open", str(broken), "--json", url=url)
    assert rc == 1 and len(err.splitlines()) == 1
    assert err.strip() == f"error: world file {broken}: floor.max[1]: must be a finite number, got 'a' (400)"
    # a world file of one's own, named by a relative path (the command sends it absolute)
    annex_file(tmp_path)
    rc, out, err = await cli("worlds", "open", "annex.toml", "--json", url=url, cwd=tmp_path)
    assert rc == 0, err
    answer = json.loads(out)
    assert answer["id"] == "annex" and answer["file"] == str(tmp_path / "annex.toml") and answer["version"] == 1
    async with open_client(HOST, udp, http=url, name="ann", world="annex") as ann:
        assert ann.welcome.maxs[0] == 8.0
    assert served.stats.get("worlds.opened") == 2


# -- close --------------------------------------------------------------------------------------


async def test_close_tells_every_player_why_and_joins_naming_it_get_404(nursery, tmp_path):
    served = await start(nursery, tmp_path, '["gallery", "halls"]')
    url, udp = served.url, served.udp
    halls = served.running.worlds.get("halls")
    walker = await join(url, "wendy", world="halls")
    async with open_client(HOST, udp, http=url, name="uma", world="halls") as uma, \
            open_client(HOST, udp, http=url, name="gil", world="gallery") as gil, \
            open_chat(url, uma.joined.token) as uma_chat, open_chat(url, gil.joined.token) as gil_chat, \
            trio.open_nursery() as players:
        wendy = await ws_player(url, walker.token, players)
        assert "welcome" in wendy and len(halls.sessions) == 2
        halls_room = uma_chat.public_room
        rc, out, err = await cli("worlds", "close", "halls", "--reason", "closed for the night", url=url)
        assert (rc, err) == (0, ""), err
        assert out.strip() == "closed halls: 2 player(s) told: closed for the night"
        await until(lambda: not uma.connected, "the UDP player to be disconnected")
        assert (uma.closed_reason, uma.closed_text) == ("world_closed", "closed for the night")
        await until(lambda: "disconnected" in wendy, "the /ws/movement player to be disconnected")
        assert (wendy["disconnected"].reason, wendy["disconnected"].text) == ("world_closed", "closed for the night")
        notices = [m for m in (await uma_chat.history(halls_room))[0] if m["kind"] == "notice"]
        assert notices[-1]["text"] == "This world is closed: closed for the night"
        assert gil.connected and gil_chat.connected  # the other world goes on
        assert halls.sessions == [] and served.running.worlds.get("halls") is None
    with pytest.raises(JoinFailed) as info:
        await join(url, "late", world="halls")
    assert (info.value.status, info.value.reason) == (404, "no such world")
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{url}/api/join", json={"name": "later", "world": "halls"})
        assert answer.status_code == 404 and answer.json()["error"] == "no such world"
        assert [w["id"] for w in (await http.get(f"{url}/api/worlds")).json()["worlds"]] == ["gallery"]
    assert served.stats.get("clients.left.world_closed") == 2 and served.stats.get("worlds.closed") == 1
    # the default world stays; an unknown one is not found; a bad reason is refused
    rc, out, err = await cli("worlds", "close", "gallery", url=url)
    assert rc == 1 and err.startswith("error: the default world cannot be closed") and err.strip().endswith("(409)")
    rc, out, err = await cli("worlds", "close", "halls", url=url)
    assert (rc, err.strip()) == (1, "error: no such world (404)")
    async with api(url) as http:
        answer = await http.post("/admin/api/worlds/gallery/close", json={"reason": 5})
        assert answer.status_code == 400 and answer.json()["code"] == "bad_field"
        # opened again, the world has its chat room (and history) back
        assert (await http.post("/admin/api/worlds", json={"world": "halls"})).status_code == 200
    again = await join(url, "uma", secret=uma.joined.secret, world="halls")
    async with open_chat(url, again.token) as chat:
        assert chat.public_room == halls_room
        assert any(m["text"] == "This world is closed: closed for the night" for m in (await chat.history(halls_room))[0])


# -- reload -------------------------------------------------------------------------------------


async def test_reload_applies_new_walls_and_moves_a_player_out_of_them(nursery, tmp_path):
    path = annex_file(tmp_path)
    served = await start(nursery, tmp_path, f'["gallery", "{path}"]')
    url, udp = served.url, served.udp
    annex = served.running.worlds.get("annex")
    async with open_client(HOST, udp, http=url, name="rea", world="annex") as rea:
        assert await rea.wait_until(lambda c: c.mirror.position_of(c.entity_id) is not None, DEADLINE)
        start_pos = rea.mirror.position_of(rea.entity_id)
        assert abs(start_pos[0]) < 0.01 and abs(start_pos[2] - 3) < 0.01  # the spawn point: (0, 3)
        # a wall straight through the player (and spawns elsewhere), a new title and picture
        annex_file(tmp_path, walls='[[walls]]\npoints = [[-4, 3], [4, 3]]\nthickness = 1.0\n',
                   image="sunset.png", spawn="[0, -4]")
        path.write_text(path.read_text().replace('title = "The Annex"', 'title = "The New Annex"'))
        rc, out, err = await cli("worlds", "reload", "annex", "--json", url=url)
        assert rc == 0, err
        answer = json.loads(out)
        assert answer["moved"] == 1 and answer["players"] == 1 and answer["version"] == 2
        assert answer["title"] == "The New Annex"
        assert rea.connected  # the player stayed
        walls = annex.world.walls
        slot = annex.sessions[0].slot
        pos = annex.world.pos[slot]
        assert walls.clear([pos[0]], [pos[2]])[0] and abs(pos[2] - 3) == pytest.approx(0.85, abs=0.2)
        await until(lambda: abs(rea.mirror.position_of(rea.entity_id)[2] - 3) > 0.8, "the client to see the move")
        status, doc = await world_doc(url, "annex")
        assert status == 200 and doc["version"] == 2 and doc["walls"][0]["points"] == [[-4.0, 3.0], [4.0, 3.0]]
        assert doc["pictures"][0]["image"] == "sunset.png"
        # walking into the new wall (an input a tick, 20 ticks: 5 m): the player stops at it
        side = 1.0 if pos[2] > 3 else -1.0
        for _ in range(20):
            tick = rea.mirror.tick
            await rea.send_input(0.0, -side)
            assert await rea.wait_until(lambda c: c.mirror.tick > tick, DEADLINE)
        await until(lambda: annex.sessions[0].pending == type(annex.sessions[0].pending)(), "the inputs to be applied")
        z = annex.world.pos[slot, 2]
        assert walls.clear([annex.world.pos[slot, 0]], [z])[0] and (z - 3) * side > 0  # its own side
        assert abs(z - 3) == pytest.approx(0.85, abs=0.01)  # at the wall
        # a broken file, another id, a bigger floor: refused, the world as it was
        path.write_text("id = \n")
        rc, out, err = await cli("worlds", "reload", "annex", url=url)
        assert rc == 1 and len(err.splitlines()) == 1 and "not valid TOML" in err and err.strip().endswith("(400)")
        annex_file(tmp_path, floor=20)
        rc, out, err = await cli("worlds", "reload", "annex", url=url)
        assert rc == 1 and "beyond this world's bounds (8 m)" in err and err.strip().endswith("(409)")
        path.write_text(path.read_text().replace('id = "annex"', 'id = "other"').replace("[-20, -20], max = [20, 20]",
                                                                                        "[-8, -8], max = [8, 8]"))
        rc, out, err = await cli("worlds", "reload", "annex", url=url)
        assert rc == 1 and "the file now names the world 'other'" in err
        assert annex.world_spec.version == 2 and annex.world.walls is walls and rea.connected
    rc, out, err = await cli("worlds", "reload", "nowhere", url=url)
    assert (rc, err.strip()) == (1, "error: no such world (404)")
    assert served.stats.get("worlds.reloaded") == 1 and served.stats.get("worlds.avatars_moved") == 1


async def test_the_open_world_has_no_file_to_reload(nursery, tmp_path):
    served = await start(nursery, tmp_path, '["open"]')
    async with api(served.url) as http:
        answer = await http.post("/admin/api/worlds/open/reload")
        assert answer.status_code == 409 and answer.json()["code"] == "no_file"


async def test_the_worlds_list_says_what_open_takes_and_how_large_a_picture_may_be(nursery, tmp_path):
    served = await start(nursery, tmp_path, '["gallery"]', **{"chat.max_image_bytes": "50000"})
    shipped = sorted(p.stem for p in Path(builtin_world("gallery").source).parent.glob("*.toml"))
    assert {"gallery", "halls"} <= set(shipped)
    async with api(served.url) as http:
        listed = (await http.get("/admin/api/worlds")).json()
        assert listed["builtin"] == sorted(["open", *shipped]) and listed["max_image_bytes"] == 50000
        assert [w["id"] for w in listed["worlds"]] == ["gallery"] and listed["default"] == "gallery"
        for name in listed["builtin"]:  # each is a name POST worlds takes
            if name != "gallery":
                answer = await http.post("/admin/api/worlds", json={"world": name})
                assert answer.status_code == 200 and answer.json()["id"] == name, answer.text
        again = (await http.get("/admin/api/worlds")).json()
        assert sorted(w["id"] for w in again["worlds"]) == sorted(listed["builtin"])


# -- pictures -----------------------------------------------------------------------------------


async def test_pictures_hung_and_taken_down_through_the_admin_api(nursery, tmp_path):
    served = await start(nursery, tmp_path, '["gallery", "halls"]', **{"chat.max_image_bytes": "50000"})
    url = served.url
    slot = "north-1"
    status, doc = await world_doc(url, "gallery")
    assert doc["version"] == 1 and slot in [p["id"] for p in doc["pictures"]]
    async with api(url, None) as anonymous, api(url) as http:
        for method in ("PUT", "DELETE"):  # no token: the bare 401, nothing read
            answer = await anonymous.request(method, f"/admin/api/worlds/gallery/pictures/{slot}", content=png())
            assert answer.status_code == 401 and answer.json() == {"error": "unauthorized"}
        answer = await http.put("/admin/api/worlds/nowhere/pictures/north-1", content=png())
        assert (answer.status_code, answer.json()) == (404, {"error": "no such world", "code": "not_found"})
        answer = await http.put("/admin/api/worlds/gallery/pictures/ceiling", content=png())
        assert (answer.status_code, answer.json()) == (404, {"error": "no such picture slot", "code": "not_found"})
        assert (await http.delete("/admin/api/worlds/gallery/pictures/ceiling")).status_code == 404
        assert (await http.post(f"/admin/api/worlds/gallery/pictures/{slot}")).status_code == 405
        # bad images: refused with the chat's reasons
        refusals = {
            "text": (b"just some text, no image", 415, "unsupported_type",
                     "the content is not a PNG, JPEG, WebP or GIF image"),
            "truncated": (png()[:60], 422, "corrupt", "the PNG data is damaged or truncated"),
            "empty": (b"", 400, "empty", "the upload is empty"),
            "gif": (gif(), 415, "unsupported_type", "a picture slot takes a PNG, JPEG or WebP image"),
            "large": (b"\x89PNG\r\n\x1a\n" + bytes(60000), 413, "too_large", "the image is larger than 50000 bytes"),
        }
        for body, code_status, code, message in refusals.values():
            answer = await http.put(f"/admin/api/worlds/gallery/pictures/{slot}", content=body)
            assert (answer.status_code, answer.json()) == (code_status, {"error": message, "code": code})
        assert served.stats.get("drop.world_picture_rejected") == len(refusals)
        # bad titles: refused before the image is read, saying why, as the chat refuses a name
        bad_titles = {
            "title=Red%07square": "title: control character U+0007 is not allowed",
            "title=two%0Alines": "title: control character U+000A is not allowed",
            "title=" + "x" * 101: "title: longer than 100 characters",
            "title=a&title=b": "title: given more than once",
        }
        for query, message in bad_titles.items():
            answer = await http.put(f"/admin/api/worlds/gallery/pictures/{slot}?{query}", content=png())
            assert (answer.status_code, answer.json()) == (400, {"error": message, "code": "bad_field"})
        assert served.stats.get("drop.world_picture_bad_title") == len(bad_titles)
        assert served.stats.get("drop.world_picture_rejected") == len(refusals)  # no image was looked at
        status, doc = await world_doc(url, "gallery")
        assert doc["version"] == 1  # nothing changed
        own = {p["id"]: p for p in doc["pictures"]}
        assert own[slot]["image"] != "" and own[slot]["title"] == ""  # the file's pictures have no title
        # a good one: stored, in the document with its title (NFC, stripped), served, in
        # /api/players' version, not in the list
        title = " Cafe\u0301 at night, 1888 "  # a combining accent: stored as its NFC "é"
        answer = await http.put(f"/admin/api/worlds/gallery/pictures/{slot}", params={"title": title},
                                content=png(64, 48))
        assert answer.status_code == 200, answer.text
        hung = answer.json()
        name = hung["image"]
        assert name.startswith(f"hung-gallery-{slot}-") and name.endswith(".png") and hung["version"] == 2
        assert (hung["width"], hung["height"], hung["type"]) == (64, 48, "image/png")
        assert hung["url"] == f"/gallery/images/{name}" and hung["title"] == "Caf\u00e9 at night, 1888"
        status, doc = await world_doc(url, "gallery")
        assert doc["version"] == 2 and {p["id"]: p["image"] for p in doc["pictures"]}[slot] == name
        assert {p["id"]: p["title"] for p in doc["pictures"]}[slot] == "Caf\u00e9 at night, 1888"
        served_image = await http.get(hung["url"])
        assert served_image.status_code == 200
        assert Image.open(io.BytesIO(served_image.content)).size == (64, 48)
        # stored in the server's data, nothing in the gallery's folder (the install's)
        pictures = tmp_path / "pictures"
        assert (pictures / name).read_bytes() == served_image.content
        assert stat.S_IMODE(pictures.stat().st_mode) & 0o022 == 0  # no one else writes there
        images = Path(served.running.admin.config.http.images_dir)
        assert not [p.name for p in images.iterdir() if p.name.startswith("hung-")]
        assert (await http.get("/api/players?world=gallery")).json()["world_version"] == 2
        assert (await http.get("/api/players?world=halls")).json()["world_version"] == 1
        assert name not in [i["file"] for i in (await http.get("/gallery/images")).json()["images"]]
        listed = (await http.get("/admin/api/worlds/gallery")).json()
        assert {p["id"]: p["url"] for p in listed["pictures"]}[slot] == hung["url"] and listed["hung"] == 1
        assert {p["id"]: p["title"] for p in listed["pictures"]}[slot] == hung["title"]
        # another one replaces it, with its own title: the old file is gone
        rc, out, err = await cli("worlds", "hang", "gallery", slot, str(_write(tmp_path / "blue.png", png(30, 20))),
                                 "--title", "Blue study", url=url)
        assert rc == 0, err
        assert out.startswith("hung hung-gallery-north-1-") and out.strip().endswith(
            " as 'Blue study' in gallery/north-1 (30x20, version 3)")
        assert not (pictures / name).exists()
        name = (await world_doc(url, "gallery"))[1]["pictures"]
        assert {p["id"]: p["title"] for p in name}[slot] == "Blue study"
        name = {p["id"]: p["image"] for p in name}[slot]
        assert (pictures / name).is_file() and not (images / name).exists()
        rc, out, err = await cli("worlds", "hang", "gallery", slot, str(tmp_path / "blue.png"), "--title", "a\tb",
                                 url=url)
        assert (rc, err.strip()) == (1, "error: title: control character U+0009 is not allowed (400)")
        # taken down: an empty frame, the file deleted
        rc, out, err = await cli("worlds", "unhang", "gallery", slot, url=url)
        assert (rc, out.strip()) == (0, "took down the picture of gallery/north-1 (version 4)")
        status, doc = await world_doc(url, "gallery")
        assert doc["version"] == 4 and {p["id"]: p["image"] for p in doc["pictures"]}[slot] == ""
        assert {p["id"]: p["title"] for p in doc["pictures"]}[slot] == ""  # the title went with it
        assert not (pictures / name).exists()
        hung = (await http.put(f"/admin/api/worlds/gallery/pictures/{slot}?title=", content=png(10, 10))).json()
        assert hung["title"] == ""  # an empty title: untitled
        assert {p["id"]: p["title"] for p in (await world_doc(url, "gallery"))[1]["pictures"]}[slot] == ""
    assert served.stats.get("worlds.pictures_hung") == 3 and served.stats.get("worlds.pictures_taken_down") == 1
    return hung


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_hung_pictures_survive_a_restart_and_a_reload(tmp_path):
    data = tmp_path / "data"
    async with trio.open_nursery() as nursery:
        served = await start(nursery, data, '["gallery"]')
        async with api(served.url) as http:
            hung = (await http.put("/admin/api/worlds/gallery/pictures/east-1", params={"title": "Harbour at dawn"},
                                   content=png())).json()
            assert (await http.delete("/admin/api/worlds/gallery/pictures/west-1")).status_code == 200
        nursery.cancel_scope.cancel()
    saved = json.loads((data / "worlds" / "gallery.pictures.json").read_text())
    assert saved == {"world": "gallery", "pictures": {"east-1": hung["image"], "west-1": ""},
                     "titles": {"east-1": "Harbour at dawn"}}
    async with trio.open_nursery() as nursery:
        served = await start(nursery, data, '["gallery"]')
        for step in ("restart", "reload"):
            status, doc = await world_doc(served.url, "gallery")
            images = {p["id"]: p["image"] for p in doc["pictures"]}
            titles = {p["id"]: p["title"] for p in doc["pictures"]}
            assert images["east-1"] == hung["image"] and images["west-1"] == "", step
            assert titles["east-1"] == "Harbour at dawn" and titles["west-1"] == "", step
            own = {p.id: p.image for p in builtin_world("gallery").pictures}
            assert images["north-1"] == own["north-1"] != "" and titles["north-1"] == ""  # the file's own picture
            async with api(served.url) as http:
                assert (await http.post("/admin/api/worlds/gallery/reload")).status_code == 200
        nursery.cancel_scope.cancel()


async def test_a_pictures_file_without_titles_or_with_bad_ones_is_read_for_what_it_holds(tmp_path):
    """A pictures file written before titles (no ``titles``) still hangs its pictures; a title
    damaged on disk (a control character, too long, for a slot showing nothing, not text) is
    left out, the rest kept."""
    data = tmp_path / "data"
    images = data / "images"
    images.mkdir(parents=True)
    (images / "hung-gallery-east-1-AbCdEfGhIjKlMnOpQrStUv.png").write_bytes(png())
    folder = data / "worlds"
    folder.mkdir()
    path = folder / "gallery.pictures.json"
    path.write_text(json.dumps({"world": "gallery", "pictures": {"east-1": "hung-gallery-east-1-AbCdEfGhIjKlMnOpQrStUv.png",
                                                                 "west-1": ""}}))
    async with trio.open_nursery() as nursery:
        served = await start(nursery, data, '["gallery"]')  # images in data/images
        pictures = {p["id"]: p for p in (await world_doc(served.url, "gallery"))[1]["pictures"]}
        assert pictures["east-1"]["image"].startswith("hung-gallery-east-1-") and pictures["east-1"]["title"] == ""
        assert pictures["west-1"]["image"] == ""
        path.write_text(json.dumps({"world": "gallery", "pictures": {
            "east-1": "hung-gallery-east-1-AbCdEfGhIjKlMnOpQrStUv.png", "west-1": "", "north-1": "sunset.png",
            "south-1": "hung-gallery-south-1-AbCdEfGhIjKlMnOpQrStUv.png"},
            "titles": {"east-1": "Kept", "west-1": "an empty frame's", "north-1": "bell\u0007", "south-1": "x" * 101,
                       "ceiling": "no such slot", "south-2": 7}}))
        async with api(served.url) as http:
            assert (await http.post("/admin/api/worlds/gallery/reload")).status_code == 200
        pictures = {p["id"]: p for p in (await world_doc(served.url, "gallery"))[1]["pictures"]}
        assert {slot: p["title"] for slot, p in pictures.items() if p["title"]} == {"east-1": "Kept"}
        assert pictures["north-1"]["image"] == "sunset.png"  # the image is kept, its bad title is not
        nursery.cancel_scope.cancel()


async def test_a_pictures_file_nested_thousands_deep_is_logged_once_and_the_world_works(tmp_path, caplog):
    """A damaged pictures file nested far deeper than the interpreter recurses is refused before
    it is parsed: the server starts, one warning names the file, the world shows its own
    pictures, and a picture hung then is saved over the damaged file."""
    data = tmp_path / "data"
    (data / "worlds").mkdir(parents=True)
    path = data / "worlds" / "gallery.pictures.json"
    path.write_text('{"world": "gallery", "pictures": ' + "[" * 100_000 + "]" * 100_000 + "}")
    caplog.set_level(logging.INFO, logger="worldserver.world_admin")
    async with trio.open_nursery() as nursery:
        served = await start(nursery, data, '["gallery"]')
        warnings = [r for r in caplog.records if r.name == "worldserver.world_admin" and r.levelno >= logging.WARNING]
        assert [(r.getMessage(), r.fields["path"]) for r in warnings] == [("world pictures not read", str(path))]
        assert "nested deeper" in warnings[0].fields["error"] and not any(r.exc_info for r in caplog.records)
        status, doc = await world_doc(served.url, "gallery")
        own = {p.id: (p.image, p.title) for p in builtin_world("gallery").pictures}
        assert status == 200 and {p["id"]: (p["image"], p["title"]) for p in doc["pictures"]} == own
        async with api(served.url) as http:
            hung = await http.put("/admin/api/worlds/gallery/pictures/east-1", params={"title": "After"}, content=png())
            assert hung.status_code == 200, hung.text
        assert json.loads(path.read_text()) == {"world": "gallery", "pictures": {"east-1": hung.json()["image"]},
                                                "titles": {"east-1": "After"}}
        nursery.cancel_scope.cancel()


async def test_a_hung_picture_is_retitled_without_a_new_upload(nursery, tmp_path):
    served = await start(nursery, tmp_path, '["gallery"]')
    url, slot = served.url, "east-1"
    route = f"/admin/api/worlds/gallery/pictures/{slot}"
    async with api(url, None) as anonymous, api(url) as http:
        hung = (await http.put(route, params={"title": "Harbour at dawn"}, content=png())).json()
        assert hung["version"] == 2
        stored = sorted(p.name for p in (tmp_path / "pictures").iterdir())
        assert stored == [hung["image"]]
        # no token: the bare 401, nothing changed
        answer = await anonymous.patch(route, json={"title": "Stolen"})
        assert answer.status_code == 401 and answer.json() == {"error": "unauthorized"}
        # a new title: the same image under it, a new version the pages see
        answer = await http.patch(route, json={"title": "  Cafe\u0301 at dusk "})  # stored NFC, stripped
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"world": "gallery", "slot": slot, "image": hung["image"], "title": "Caf\u00e9 at dusk",
                                 "url": hung["url"], "version": 3, "changed": True}
        status, doc = await world_doc(url, "gallery")
        pictures = {p["id"]: p for p in doc["pictures"]}
        assert doc["version"] == 3 and pictures[slot]["image"] == hung["image"]
        assert pictures[slot]["title"] == "Caf\u00e9 at dusk"
        assert (await http.get("/api/players?world=gallery")).json()["world_version"] == 3
        listed = (await http.get("/admin/api/worlds/gallery")).json()
        assert {p["id"]: p["title"] for p in listed["pictures"]}[slot] == "Caf\u00e9 at dusk"
        saved = json.loads((tmp_path / "worlds" / "gallery.pictures.json").read_text())
        assert saved["titles"] == {slot: "Caf\u00e9 at dusk"} and saved["pictures"][slot] == hung["image"]
        assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == stored  # nothing uploaded, nothing deleted
        assert (await http.get(hung["url"])).status_code == 200
        # the same title again: nothing changes; "" takes the title away
        answer = (await http.patch(route, json={"title": "Caf\u00e9 at dusk"})).json()
        assert (answer["changed"], answer["version"]) == (False, 3)
        answer = (await http.patch(route, json={"title": ""})).json()
        assert (answer["changed"], answer["version"], answer["title"]) == (True, 4, "")
        assert {p["id"]: p["title"] for p in (await world_doc(url, "gallery"))[1]["pictures"]}[slot] == ""
        assert json.loads((tmp_path / "worlds" / "gallery.pictures.json").read_text())["titles"] == {}
        # refusals: the admin API's JSON errors, nothing changed
        refusals = [
            ("/admin/api/worlds/nowhere/pictures/east-1", {"title": "x"}, 404, "not_found", "no such world"),
            ("/admin/api/worlds/gallery/pictures/ceiling", {"title": "x"}, 404, "not_found", "no such picture slot"),
            (route, {"title": "bell\u0007"}, 400, "bad_field", "title: control character U+0007 is not allowed"),
            (route, {"title": "two\nlines"}, 400, "bad_field", "title: control character U+000A is not allowed"),
            (route, {"title": "x" * 101}, 400, "bad_field", "title: longer than 100 characters"),
            (route, {"title": 7}, 400, "bad_field", "title: expected a string, got an integer"),
            (route, {}, 400, "bad_field", 'title: missing (a text; "" for none)'),
            # the world file's own picture (its title belongs in the file), an empty frame
            ("/admin/api/worlds/gallery/pictures/north-1", {"title": "x"}, 409, "not_hung", None),
        ]
        for path, body, status_code, code, message in refusals:
            answer = await http.patch(path, json=body)
            assert (answer.status_code, answer.json()["code"]) == (status_code, code), (path, body, answer.text)
            if message is not None:
                assert answer.json()["error"] == message
        assert (await http.delete("/admin/api/worlds/gallery/pictures/west-1")).status_code == 200  # version 5
        answer = await http.patch("/admin/api/worlds/gallery/pictures/west-1", json={"title": "x"})
        assert (answer.status_code, answer.json()["code"]) == (409, "not_hung")
        assert answer.json()["error"].startswith("this slot shows no picture hung through the admin API")
        answer = await http.patch(route, content=b"not json", headers={"Content-Type": "application/json"})
        assert (answer.status_code, answer.json()["code"]) == (400, "bad_json")
        assert (await world_doc(url, "gallery"))[1]["version"] == 5
    assert served.stats.get("drop.world_picture_bad_title") == 5
    assert served.stats.get("drop.world_picture_not_hung") == 2
    assert served.stats.get("worlds.pictures_retitled") == 2


async def test_pictures_hung_by_an_older_version_move_into_the_data_folder_and_stay_served(tmp_path, caplog):
    """An older version stored hung pictures in ``http.images_dir`` (here a folder outside the
    data, as an install's): at start they move into ``<data_dir>/pictures``; the world keeps
    them, the gallery's own pictures and anything that is not such a picture stay; one left in
    the images folder (as when it could not be moved) is still served from there."""
    data, install = tmp_path / "data", tmp_path / "install-images"
    install.mkdir()
    old = "hung-gallery-east-1-AbCdEfGhIjKlMnOpQrStUv.png"
    (install / old).write_bytes(png(20, 10))
    (install / "my-photo.png").write_bytes(png(5, 5))
    (install / "hung-notes.txt").write_text("not a picture of a slot")
    outside = tmp_path / "outside.png"
    outside.write_bytes(png(7, 7))
    linked = "hung-gallery-west-1-AbCdEfGhIjKlMnOpQrStUw.png"
    (install / linked).symlink_to(outside)  # not a file the server stored: not moved, not served
    (data / "worlds").mkdir(parents=True)
    (data / "worlds" / "gallery.pictures.json").write_text(json.dumps(
        {"world": "gallery", "pictures": {"east-1": old}, "titles": {"east-1": "Old one"}}))
    caplog.set_level(logging.INFO, logger="worldserver.world_admin")
    async with trio.open_nursery() as nursery:
        served = await start(nursery, data, '["gallery"]', **{"http.images_dir": str(install)})
        moved = [r for r in caplog.records if r.name == "worldserver.world_admin" and "hung pictures" in r.getMessage()]
        assert [(r.levelname, r.getMessage(), r.fields["count"]) for r in moved] == [("INFO", "hung pictures moved", 1)]
        assert (data / "pictures" / old).read_bytes() == png(20, 10) and not (install / old).exists()
        assert sorted(p.name for p in install.iterdir() if not p.name.startswith(("concentric", "diagonal",
                                                                                     "glowing", "sunset"))) \
            == sorted(["my-photo.png", "hung-notes.txt", linked])
        pictures = {p["id"]: p for p in (await world_doc(served.url, "gallery"))[1]["pictures"]}
        assert (pictures["east-1"]["image"], pictures["east-1"]["title"]) == (old, "Old one")
        async with api(served.url) as http:
            answer = await http.get(f"/gallery/images/{old}")
            assert answer.status_code == 200 and answer.content == png(20, 10)
            assert (await http.get(f"/gallery/images/{linked}")).status_code == 404
            left = "hung-gallery-south-1-AbCdEfGhIjKlMnOpQrStUx.png"  # one not moved: served from the old folder
            (install / left).write_bytes(png(9, 9))
            answer = await http.get(f"/gallery/images/{left}")
            assert answer.status_code == 200 and answer.content == png(9, 9)
            assert left not in [i["file"] for i in (await http.get("/gallery/images")).json()["images"]]
            # retitled and taken down like any hung picture: its file goes
            answer = await http.patch("/admin/api/worlds/gallery/pictures/east-1", json={"title": "New one"})
            assert answer.json()["changed"] is True
            assert (await http.delete("/admin/api/worlds/gallery/pictures/east-1")).status_code == 200
            assert not (data / "pictures" / old).exists()
        nursery.cancel_scope.cancel()


async def test_an_images_dir_that_is_the_pictures_folder_keeps_its_pictures(tmp_path):
    data = tmp_path / "data"
    pictures = data / "pictures"
    pictures.mkdir(parents=True)
    name = "hung-gallery-east-1-AbCdEfGhIjKlMnOpQrStUv.png"
    (pictures / name).write_bytes(png(20, 10))
    (data / "worlds").mkdir()
    (data / "worlds" / "gallery.pictures.json").write_text(json.dumps({"world": "gallery", "pictures": {"east-1": name}}))
    async with trio.open_nursery() as nursery:
        served = await start(nursery, data, '["gallery"]', **{"http.images_dir": str(data / "." / "pictures")})
        assert (pictures / name).read_bytes() == png(20, 10)  # not "moved" onto itself, nor deleted
        async with api(served.url) as http:
            assert (await http.get(f"/gallery/images/{name}")).content == png(20, 10)
        nursery.cancel_scope.cancel()


async def test_the_hung_pictures_folder_serves_only_hung_pictures_inside_it(nursery, tmp_path):
    served = await start(nursery, tmp_path, '["gallery"]')
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (tmp_path / "secret.png").write_bytes(b"outside")
    (pictures / "plain.png").write_bytes(png())  # not a hung picture's name: not looked for here
    (pictures / "hung-link.png").symlink_to(tmp_path / "secret.png")
    (pictures / "hung-folder.png").mkdir()
    (pictures / "hung-notes.txt").write_text("not a picture")
    (pictures / ".hung-hidden.png").write_bytes(png())
    (pictures / "hung-fine.png").write_bytes(png(3, 3))
    async with api(served.url) as http:
        assert (await http.get("/gallery/images/hung-fine.png")).content == png(3, 3)
        for bad in ("plain.png", "hung-link.png", "hung-folder.png", "hung-notes.txt", ".hung-hidden.png",
                    "hung-..%2Fsecret.png", "hung-..%2F..%2Fsecret.png", "hung-%2e%2e%2fsecret.png",
                    "hung-..%5Csecret.png", "hung-a%00.png", "hung-missing.png", "..%2Fpictures%2Fhung-fine.png"):
            answer = await http.get(f"/gallery/images/{bad}")
            assert answer.status_code == 404 and answer.content != b"outside", bad
        listed = {i["file"] for i in (await http.get("/gallery/images")).json()["images"]}
        assert "diagonal-stripes.png" in listed and not {"plain.png", "hung-fine.png"} & listed  # the gallery's own


def test_a_picture_copied_from_another_file_system_is_written_whole(tmp_path):
    """The move of an old picture across file systems (a rename cannot): a copy written to a
    temporary name, fsynced and renamed; nothing left when it fails."""
    from worldserver.world_admin import WorldAdmin

    source, target = tmp_path / "a.png", tmp_path / "pictures" / "a.png"
    target.parent.mkdir()
    source.write_bytes(png())
    WorldAdmin._copy(source, target)
    assert target.read_bytes() == png() and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.png"]
    with pytest.raises(FileNotFoundError):
        WorldAdmin._copy(tmp_path / "missing.png", target.with_name("b.png"))
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.png"]
