"""The call service (worldserver/calls/service.py) with real parts: real worlds
(worldserver.hosting.WorldHost, avatars in their Simulations, attached to their join tokens
as the transports do), the real ChatService on SQLite behind the real HTTP app, players on
real chat WebSockets (worldclient.chat_client) over 127.0.0.1.

Most tests run on trio's MockClock standing still: the test calls the tick hook
(``CallService.on_tick``, what the server's tick loop calls after each world's tick) itself,
after putting the avatars where it wants them, and a request's round trip on each socket is
the barrier that shows what the server sent by then (events are queued before the reply).
Rate limits and mutes move by ``mock_clock.jump``. The SFU path uses a small in-memory
backend written here that implements the SfuBackend protocol (the real Janus backend has its
own tests). The last test runs the whole server (``worldserver.app.serve``) with real UDP
clients, so the tick loop itself forms the groups.

Must not: reach any address but 127.0.0.1, sleep, or wait without a deadline.
"""

from __future__ import annotations

import contextlib
import time

import attrs
import httpx
import pytest
import trio
import trio.testing

from chat_support import chat_config
from protocol import chat as P
from worldclient.chat_client import ChatRequestError, open_chat
from worldclient.client import open_client
from worldserver.app import serve
from worldserver.calls import service as calls_service
from worldserver.calls.service import CallService
from worldserver.calls.sfu import SfuError, SfuTicket
from worldserver.chat.fanout import Fanout
from worldserver.chat.peers import CLOSE_KICKED
from worldserver.chat.service import ChatService
from worldserver.config import load_config
from worldserver.hosting import WorldHost
from worldserver.http_app import build_app
from worldserver.http_server import serve_http
from worldserver.identity import Identities
from worldserver.stats import Stats

ADMIN = "admin-secret"
REAL_DEADLINE = 10.0  # real seconds: only a safety net, never a timing assumption


class Sink:
    """The snapshot sink of a test avatar: the world never asks it for anything here."""

    def send_snapshot(self, session, parts, now):
        return None


class FakeSfu:
    """An in-memory SFU that keeps what a media server would: rooms and the tokens allowed in
    each. ``fail`` names the operations that raise SfuError; ``hang`` those that never answer."""

    def __init__(self) -> None:
        self.rooms: dict[int, set[str]] = {}
        self.kicked: list[str] = []
        self.closed: list[int] = []
        self.fail: set[str] = set()
        self.hang: set[str] = set()
        self._next = 1000
        self._tokens = 0

    async def _enter(self, op: str) -> None:
        await trio.lowlevel.checkpoint()
        if op in self.hang:
            await trio.sleep_forever()
        if op in self.fail:
            raise SfuError("refused", f"{op} refused by the test")

    async def open_room(self, group: str) -> int:
        await self._enter("open")
        self._next += 1
        self.rooms[self._next] = set()
        return self._next

    async def admit(self, room: int, display: str) -> SfuTicket:
        await self._enter("admit")
        if room not in self.rooms:
            raise SfuError("no_room", "no such room")
        self._tokens += 1
        token = f"tok-{self._tokens}"
        self.rooms[room].add(token)
        return SfuTicket("ws://127.0.0.1:8188", room, token, display)

    async def revoke(self, room: int, ticket: SfuTicket) -> None:
        await self._enter("revoke")
        if room in self.rooms:
            self.rooms[room].discard(ticket.token)
            self.kicked.append(ticket.token)

    async def close_room(self, room: int) -> None:
        await self._enter("close")
        self.rooms.pop(room, None)
        self.closed.append(room)


class Calls:
    """A server's call parts without the tick loop: worlds, chat, calls, the HTTP app."""

    def __init__(self, config, worlds, identities, chat, calls, port) -> None:
        self.config, self.worlds, self.identities, self.chat, self.calls = config, worlds, identities, chat, calls
        self.stats = chat.stats
        self.url = f"http://127.0.0.1:{port}"

    async def join(self, name: str, world: str = "") -> str:
        body = {"name": name, "world": world} if world else {"name": name}
        async with httpx.AsyncClient(base_url=self.url, timeout=REAL_DEADLINE) as http:
            response = await http.post("/api/join", json=body)
        assert response.status_code == 200, response.text
        return response.json()["token"]

    def avatar(self, token: str, x: float, z: float, world: str = ""):
        """An avatar for the player of ``token``, at (x, z), held by its token as a transport's."""
        sim = self.worlds.get(world)
        session = sim.join(Sink(), trio.current_time(), name=self.identities.name_for(token))
        session.token = token.encode()
        session.transport = "test"
        session.end = lambda reason: sim.leave(session)
        assert self.identities.attach(token, session, lambda reason: sim.leave(session), avatar=True)
        self.place(session, x, z)
        return session

    @staticmethod
    def place(session, x: float, z: float) -> None:
        pos = session.sim.world.pos
        pos[session.slot, 0], pos[session.slot, 2] = x, z

    def tick(self, times: int = 1) -> None:
        """What the tick loop does after each world's tick (the worlds themselves stand still)."""
        for _ in range(times):
            for sim in list(self.worlds):
                self.calls.on_tick(sim, trio.current_time())


async def start_calls(nursery, tmp_path, backend=None, fanout: bool = False, **overrides) -> Calls:
    """The parts in ``nursery``; ``fanout``: chat sockets on the fan-out pump (the server's
    path), else on the ASGI writer path (both write the frames queued before a close)."""
    config = chat_config(tmp_path, **{"chat.admin_token": ADMIN, "worlds.hosted": '["open", "gallery"]',
                                      "calls.interval_ticks": 1, **overrides})
    stats = Stats()
    worlds = WorldHost(config, stats)
    identities = Identities()
    chat = ChatService.from_config(config, worlds, identities, stats)
    calls = CallService(config, chat, worlds, stats, backend=backend)
    await nursery.start(chat.run)
    await nursery.start(calls.run)
    pump = None
    if fanout:
        pump = Fanout(stats)
        await nursery.start(pump.run)
    app = build_app(config=config, sim=worlds.default, worlds=worlds, identities=identities, chat=chat,
                    chat_fanout=pump)
    port = await nursery.start(serve_http, config, app)
    return Calls(config, worlds, identities, chat, calls, port)


async def settle(*clients) -> None:
    """Let the server's tasks run, then a round trip on each socket: every frame the server
    queued for it before is in its event queue now."""
    await trio.testing.wait_all_tasks_blocked(cushion=0.001)
    for client in clients:
        await client.request("typing", room=client.public_room, active=False)


async def until(predicate, what: str) -> None:
    """Let the other tasks run until ``predicate()`` holds (the clock stands still: the
    deadline is in real seconds, a safety net only)."""
    give_up = time.monotonic() + REAL_DEADLINE
    while not predicate():
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        await trio.testing.wait_all_tasks_blocked(cushion=0.001)


def call_events(client) -> list[tuple[str, dict]]:
    return [(e.name, e.fields) for e in client.pending_events() if e.name.startswith("call.")]


def roster(*sessions) -> list[dict]:
    return sorted(({"name": s.name, "entity_id": int(s.entity_id)} for s in sessions), key=lambda m: m["name"])


def joined(group: str, *sessions, zone=None, mode="mesh", sfu=None) -> tuple[str, dict]:
    return ("call.joined", {"group": group, "zone": zone, "mode": mode, "members": roster(*sessions), "sfu": sfu})


async def players(server: Calls, *names: str, world: str = "", spots=None):
    """Join each name, give it an avatar (at ``spots[i]`` or far apart), open its chat."""
    out = []
    for i, name in enumerate(names):
        token = await server.join(name, world)
        x, z = spots[i] if spots else (-100.0 + 20.0 * i, -100.0)
        out.append((token, server.avatar(token, x, z, world)))
    return out


async def enable_calls(*chats) -> None:
    """Turn calls on on each chat socket, in this order (the arrival order a full call fills in)."""
    for chat in chats:
        assert await chat.request("call.enable", on=True) == {}


@contextlib.asynccontextmanager
async def callers(server: Calls, *names: str, world: str = "", spots=None, enable=None):
    """The ``players`` of ``names``, each on a chat socket of its own (closed at the end), with
    calls turned on in name order for those in ``enable`` (every one by default). Yields an
    (avatar, chat) pair per name; a player's token is its chat's ``token``."""
    people = await players(server, *names, world=world, spots=spots)
    async with contextlib.AsyncExitStack() as stack:
        chats = [await stack.enter_async_context(open_chat(server.url, token)) for token, _ in people]
        await enable_calls(*(chat for name, chat in zip(names, chats) if enable is None or name in enable))
        yield [(avatar, chat) for (_, avatar), chat in zip(people, chats)]


@pytest.fixture
async def server(nursery, tmp_path, mock_clock):
    return await start_calls(nursery, tmp_path)


async def test_walking_together_starts_a_mesh_call_and_walking_apart_ends_it(server) -> None:
    async with callers(server, "amy", "ben", "cat", enable=("amy", "ben")) as ((a, amy), (b, ben), (c, cat)):
        server.tick()
        await settle(amy, ben, cat)
        assert call_events(amy) == call_events(ben) == []  # far apart: no call
        # amy and ben walk up to each other; cat (calls not enabled) stands right beside them
        server.place(a, 10.0, 10.0)
        server.place(b, 11.5, 10.0)
        server.place(c, 10.5, 11.0)
        server.tick()
        await settle(amy, ben, cat)
        assert call_events(amy) == call_events(ben) == [joined("open/p1", a, b)]
        assert call_events(cat) == []
        # a step back inside leave_radius keeps the call (hysteresis), then farther ends it
        server.place(b, 13.2, 10.0)
        server.tick(3)
        await settle(amy, ben)
        assert call_events(amy) == call_events(ben) == []
        server.place(b, 14.0, 10.0)
        server.tick()
        await settle(amy, ben, cat)
        left = [("call.left", {"group": "open/p1", "reason": "moved_away"})]
        assert call_events(amy) == call_events(ben) == left
        assert call_events(cat) == []
        # together again: a new group id
        server.place(b, 11.0, 10.0)
        server.tick()
        await settle(amy, ben)
        assert call_events(amy) == [joined("open/p2", a, b)]
    assert server.stats.get("calls.joined") == 4 and server.stats.get("calls.left.moved_away") == 2


async def test_groups_are_recomputed_every_interval_ticks(nursery, tmp_path, mock_clock) -> None:
    server = await start_calls(nursery, tmp_path, **{"calls.interval_ticks": 3})
    async with callers(server, "amy", "ben", spots=[(0.0, 0.0), (1.0, 0.0)]) as ((a, amy), (b, ben)):
        server.tick(2)
        await settle(amy)
        assert call_events(amy) == []
        server.tick()
        await settle(amy)
        assert call_events(amy) == [joined("open/p1", a, b)]


async def test_worlds_do_not_mix_and_a_player_who_leaves_the_world_leaves_the_call(server) -> None:
    async with callers(server, "amy", "ben", spots=[(0.0, 0.0), (1.0, 0.0)]) as ((a, amy), (b, ben)), \
            callers(server, "dan", world="gallery", spots=[(0.5, 0.0)]) as ((d, dan),):
        server.tick()
        await settle(amy, ben, dan)
        assert call_events(amy) == call_events(ben) == [joined("open/p1", a, b)]  # dan: another world
        assert call_events(dan) == []
        b.sim.leave(b)  # ben's avatar leaves the world (its chat socket stays)
        server.tick()
        await settle(amy, ben)
        assert call_events(ben) == [("call.left", {"group": "open/p1", "reason": "moved_away"})]
        assert call_events(amy) == [("call.left", {"group": "open/p1", "reason": "moved_away"})]  # alone
        # ben comes back with a new avatar: found through its token and grouped again
        b2 = server.avatar(ben.token, 1.0, 0.0)
        server.tick()
        await settle(amy, ben)
        assert call_events(ben) == [joined("open/p2", a, b2)]


async def test_a_closed_world_or_new_call_zones_end_the_calls(server) -> None:
    gallery = server.worlds.get("gallery")
    corner = next(z for z in gallery.world_spec.zones if z.call)
    spots = [(-8.0, -8.0), (-8.5, -8.0)]
    async with callers(server, "amy", "ben", world="gallery", spots=spots) as ((a, amy), (b, ben)):
        server.tick()
        await settle(amy)
        assert call_events(amy) == [joined("gallery/p1", a, b)]
        # a reload moves the call zone onto them: the calls end, the zone's call forms
        moved = attrs.evolve(corner, center=(-8.0, -8.0))
        gallery.world_spec = attrs.evolve(gallery.world_spec, zones=tuple(
            moved if z is corner else z for z in gallery.world_spec.zones))
        server.tick()
        await settle(amy)
        assert call_events(amy) == [("call.left", {"group": "gallery/p1", "reason": "ended"}),
                                    joined("gallery/zone:corner", a, b, zone="corner")]
        assert server.stats.get("calls.rezoned") == 1
        # the operator closes the world: its calls end
        server.worlds.remove("gallery")
        server.tick()
        await settle(amy, ben)
        for chat in (amy, ben):
            assert call_events(chat)[-1] == ("call.left", {"group": "gallery/zone:corner", "reason": "ended"})


async def test_signaling_goes_only_between_members_of_one_mesh_group(server) -> None:
    spots = [(0.0, 0.0), (1.0, 0.0), (50.0, 50.0), (51.0, 50.0), (-50.0, -50.0)]
    async with callers(server, "amy", "ben", "cat", "dan", "eve", spots=spots, enable=()) as people:
        (a, amy), (b, ben), (c, cat), (d, dan), (e, eve) = people
        with pytest.raises(ChatRequestError) as info:  # not enabled: in no group
            await amy.request("call.signal", to="ben", data={"type": "offer", "sdp": "v=0\r\n"})
        assert info.value.code == "forbidden"
        await enable_calls(amy, ben, cat, dan)
        server.tick()
        await settle(amy, ben, cat, dan, eve)
        for chat in (amy, ben, cat, dan, eve):
            call_events(chat)
        offer = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"}
        assert await amy.request("call.signal", to="ben", data=offer) == {}
        assert await ben.request("call.signal", to="amy", data={"type": "candidate", "candidate": "candidate:1"}) == {}
        await settle(amy, ben, cat, dan)
        assert call_events(ben) == [("call.signal", {"from": "amy", "group": "open/p1", "data": offer})]
        assert call_events(amy) == [("call.signal", {"from": "ben", "group": "open/p1", "data": {
            "type": "candidate", "candidate": "candidate:1", "sdpMid": None, "sdpMLineIndex": None,
            "usernameFragment": None}})]
        refused = [
            (amy, "cat"),  # in another group
            (cat, "amy"),  # the other way
            (amy, "eve"),  # in no group
            (eve, "amy"),  # a sender in no group
            (amy, "amy"),  # oneself
            (amy, "nobody-at-all"),  # no such player: the same answer
        ]
        for sender, to in refused:
            with pytest.raises(ChatRequestError) as info:
                await sender.request("call.signal", to=to, data=offer)
            assert info.value.code == "forbidden", (sender.user, to)
        await settle(amy, ben, cat, dan, eve)
        for chat in (amy, ben, cat, dan, eve):
            assert [e for e in call_events(chat) if e[0] == "call.signal"] == []
    assert server.stats.get("calls.signals") == 2
    assert server.stats.get("drop.call_signal_forbidden") == 7


async def test_signaling_is_rate_limited_per_player_and_sized(nursery, tmp_path, mock_clock) -> None:
    server = await start_calls(nursery, tmp_path, **{"calls.signal_rate": 2, "calls.signal_burst": 3})
    async with callers(server, "amy", "ben", spots=[(0.0, 0.0), (1.0, 0.0)]) as ((a, amy), (b, ben)):
        server.tick()
        candidate = {"type": "candidate", "candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host",
                     "sdpMid": "0", "sdpMLineIndex": 0}
        for _ in range(3):
            await amy.request("call.signal", to="ben", data=candidate)
        with pytest.raises(ChatRequestError) as info:
            await amy.request("call.signal", to="ben", data=candidate)
        assert info.value.code == "rate_limited" and info.value.retry_after == pytest.approx(0.5, abs=0.01)
        await ben.request("call.signal", to="amy", data=candidate)  # ben has his own bucket
        mock_clock.jump(0.5)
        await amy.request("call.signal", to="ben", data=candidate)
        # sizes and shapes are checked before anything else: nothing is relayed
        big = {"type": "offer", "sdp": "a=" + "x" * P.MAX_SDP_BYTES}
        with pytest.raises(ChatRequestError) as info:
            await amy.request("call.signal", to="ben", data=big)
        assert info.value.code == "too_long"
        for bad in ({"type": "offer"}, {"type": "bye", "sdp": "v=0"}, {"type": "answer", "sdp": "v=0", "x": 1},
                    {"type": "candidate", "candidate": "c", "sdpMLineIndex": -1}):
            with pytest.raises(ChatRequestError) as info:
                await amy.request("call.signal", to="ben", data=bad)
            assert info.value.code == "bad_field" and info.value.message.startswith("data"), bad
        await settle(ben)
        signals = [e for e in call_events(ben) if e[0] == "call.signal"]
        assert len(signals) == 4 and all(e[1]["data"]["sdpMid"] == "0" for e in signals)
    assert server.stats.get("drop.call_signal_rate_limited") == 1


@pytest.mark.parametrize("fanout", [True, False])
async def test_mute_and_kick_take_a_player_out_of_its_call_at_once(nursery, tmp_path, mock_clock, fanout) -> None:
    """On both outbound paths of the chat sockets: the kicked player's ``call.left`` arrives
    before its socket's close (the ASGI writer path once dropped it)."""
    server = await start_calls(nursery, tmp_path, fanout=fanout)
    spots = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
    (ta, a), (tb, b), (tc, c), (td, d) = await players(server, "amy", "ben", "cat", "dan", spots=spots)
    mod_token = await server.join("moddy")
    async with open_chat(server.url, ta) as amy, open_chat(server.url, tb) as ben, \
            open_chat(server.url, tc, reconnect=False) as cat, open_chat(server.url, td, reconnect=False) as dan, \
            open_chat(server.url, mod_token, admin_token=ADMIN) as mod:
        await enable_calls(amy, ben, cat, dan)
        server.tick()
        await settle(amy, ben, cat, dan)
        assert call_events(amy) == [joined("open/p1", a, b, c, d)]
        for chat in (ben, cat, dan):
            call_events(chat)
        # a moderator's mute: out now, without waiting for a tick
        await mod.request("mod.mute", user="ben", seconds=5)
        await settle(amy, ben)
        assert call_events(ben) == [("call.left", {"group": "open/p1", "reason": "muted"})]
        assert call_events(amy) == [("call.members", {"group": "open/p1", "members": roster(a, c, d)})]
        with pytest.raises(ChatRequestError) as info:
            await ben.request("call.signal", to="amy", data={"type": "answer", "sdp": "v=0"})
        assert info.value.code == "forbidden"
        server.tick(3)
        await settle(amy, ben)
        assert call_events(ben) == [] and call_events(amy) == []  # still muted: not grouped
        mock_clock.jump(5)
        server.tick()
        await settle(amy, ben)
        assert call_events(ben) == [joined("open/p1", a, b, c, d)]
        assert call_events(amy) == [("call.members", {"group": "open/p1", "members": roster(a, b, c, d)})]
        # a moderator's kick: told before its socket closes, the others hear it at once
        await mod.request("mod.kick", user="cat")
        await settle(amy)
        assert call_events(amy) == [("call.members", {"group": "open/p1", "members": roster(a, b, d)})]
        await until(lambda: cat.close_code is not None, "cat's socket to close")
        assert cat.close_code == CLOSE_KICKED
        assert call_events(cat)[-1] == ("call.left", {"group": "open/p1", "reason": "kicked"})
        # the operator's kick (the admin API's code path) does the same
        server.chat.moderation.kick("dan", reason="by the operator", now=trio.current_time())
        await settle(amy)
        assert call_events(amy) == [("call.members", {"group": "open/p1", "members": roster(a, b)})]
        assert [e for e in dan.pending_events() if e.name == "call.left"][0].fields["reason"] == "kicked"
        server.tick()
        await settle(amy, ben)
        assert call_events(amy) == []  # the kicked are gone from the worlds and the calls
    assert server.stats.get("calls.left.muted") == 1 and server.stats.get("calls.left.kicked") == 2


async def test_disabling_and_closing_the_socket_leave_the_call(server) -> None:
    spots = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    (ta, a), (tb, b), (tc, c) = await players(server, "amy", "ben", "cat", spots=spots)
    async with open_chat(server.url, ta) as amy, open_chat(server.url, tb) as ben:
        async with open_chat(server.url, tc) as cat:
            await enable_calls(amy, ben, cat)
            server.tick()
            await settle(amy, ben, cat)
            assert call_events(cat) == [joined("open/p1", a, b, c)]
            call_events(amy)
            call_events(ben)
            assert await cat.request("call.enable", on=False) == {}
            await settle(amy, cat)
            assert call_events(cat) == [("call.left", {"group": "open/p1", "reason": "disabled"})]
            assert call_events(amy) == [("call.members", {"group": "open/p1", "members": roster(a, b)})]
            await enable_calls(cat)
            server.tick(2)
            await settle(amy, cat)
            assert call_events(cat) == [joined("open/p1", a, b, c)]
            call_events(amy)
        # cat's socket closed: out of the call at once
        await until(lambda: "cat" not in server.calls.callers, "cat's socket to close")
        await settle(amy)
        assert call_events(amy) == [("call.members", {"group": "open/p1", "members": roster(a, b)})]
        # a second socket of ben's takes his call over: the first one is told
        async with open_chat(server.url, tb) as ben2:
            await enable_calls(ben2)
            await settle(ben, amy)
            assert call_events(ben) == [  # (cat left, came back, closed its socket) then the takeover
                ("call.members", {"group": "open/p1", "members": roster(a, b)}),
                ("call.members", {"group": "open/p1", "members": roster(a, b, c)}),
                ("call.members", {"group": "open/p1", "members": roster(a, b)}),
                ("call.left", {"group": "open/p1", "reason": "disabled"})]
            server.tick(2)
            await settle(ben2, ben)
            assert call_events(ben2) == [joined("open/p2", a, b)]
            assert call_events(ben) == []


async def test_a_zone_puts_everyone_inside_in_one_call(server) -> None:
    corner = next(z for z in server.worlds.get("gallery").world_spec.zones if z.call)
    cx, cz = corner.center
    spots = [(cx, cz), (-8.0, -8.0), (-8.5, -8.0)]
    async with callers(server, "amy", "ben", "cat", world="gallery", spots=spots) as ((a, amy), (b, ben), (c, cat)):
        server.tick()
        await settle(amy, ben)
        group = f"gallery/zone:{corner.id}"
        assert call_events(amy) == [joined(group, a, zone=corner.id)]  # alone in the zone: a call of one
        assert call_events(ben) == [joined("gallery/p1", b, c)]
        # ben walks into the corner (out of his group with cat), near its far edge
        server.place(b, cx + corner.size[0] / 2 - 0.1, cz + corner.size[1] / 2 - 0.1)
        server.tick()
        await settle(amy, ben, cat)
        assert call_events(ben) == [("call.left", {"group": "gallery/p1", "reason": "moved_away"}),
                                    joined(group, a, b, zone=corner.id)]
        assert call_events(amy) == [("call.members", {"group": group, "members": roster(a, b)})]
        assert call_events(cat) == [joined("gallery/p1", b, c),
                                    ("call.left", {"group": "gallery/p1", "reason": "moved_away"})]
        await amy.request("call.signal", to="ben", data={"type": "offer", "sdp": "v=0"})  # a mesh zone
        server.place(b, -8.0, -8.0)
        server.tick()
        await settle(amy, ben)
        assert call_events(ben) == [
            ("call.signal", {"from": "amy", "group": group, "data": {"type": "offer", "sdp": "v=0"}}),
            ("call.left", {"group": group, "reason": "moved_away"}),
            joined("gallery/p2", b, c)]  # back beside cat: a new group
        assert call_events(amy) == [("call.members", {"group": group, "members": roster(a)})]


async def test_without_an_sfu_a_full_call_makes_the_next_one_wait(nursery, tmp_path, mock_clock) -> None:
    server = await start_calls(nursery, tmp_path, **{"calls.max_members": 2})
    spots = [(0.0, 0.0), (1.0, 0.0), (0.5, 1.0)]
    async with callers(server, "amy", "ben", "cat", spots=spots) as ((a, amy), (b, ben), (c, cat)):
        server.tick()
        await settle(amy, ben, cat)
        assert call_events(amy) == call_events(ben) == [joined("open/p1", a, b)]  # the first two (arrival order)
        assert call_events(cat) == [("call.full", {"group": "open/p1"})]
        with pytest.raises(ChatRequestError) as info:  # waiting is not being a member
            await cat.request("call.signal", to="amy", data={"type": "offer", "sdp": "v=0"})
        assert info.value.code == "forbidden"
        server.place(a, 30.0, 30.0)  # amy walks away: cat takes her place
        server.tick()
        await settle(amy, ben, cat)
        assert call_events(amy) == [("call.left", {"group": "open/p1", "reason": "moved_away"})]
        assert call_events(ben) == [("call.members", {"group": "open/p1", "members": roster(b, c)})]
        assert call_events(cat) == [joined("open/p1", b, c)]
    assert server.stats.get("drop.call_full") == 1


async def test_calls_turned_off(nursery, tmp_path, mock_clock) -> None:
    server = await start_calls(nursery, tmp_path, **{"calls.enabled": False})
    (ta, a), (tb, b) = await players(server, "amy", "ben", spots=[(0.0, 0.0), (1.0, 0.0)])
    async with open_chat(server.url, ta) as amy:
        with pytest.raises(ChatRequestError) as info:
            await amy.request("call.enable", on=True)
        assert info.value.code == "forbidden"
    assert server.stats.get("drop.call_disabled") == 1


# -- the SFU path ------------------------------------------------------------------------------


@pytest.fixture
async def sfu_server(nursery, tmp_path, mock_clock):
    backend = FakeSfu()
    server = await start_calls(nursery, tmp_path, backend=backend, **{"calls.mesh_max": 2, "calls.sfu": "janus"})
    server.backend = backend
    return server


async def test_a_group_over_mesh_max_moves_to_an_sfu_room_with_a_ticket_each(sfu_server) -> None:
    server, sfu = sfu_server, sfu_server.backend
    spots = [(0.0, 0.0), (1.0, 0.0), (40.0, 40.0)]
    async with callers(server, "amy", "ben", "cat", spots=spots) as ((a, amy), (b, ben), (c, cat)):
        server.tick()
        await settle(amy, ben)
        assert call_events(amy) == [joined("open/p1", a, b)]  # two: a mesh, no room
        call_events(ben)
        assert sfu.rooms == {}
        server.place(c, 0.5, 1.0)  # the third: over mesh_max
        server.tick()
        await settle(amy, ben, cat)
        (room, tokens), = sfu.rooms.items()
        seen = {}
        for chat, me in ((amy, a), (ben, b), (cat, c)):
            (name, fields), = call_events(chat)
            assert name == "call.joined" and fields["mode"] == "sfu" and fields["members"] == roster(a, b, c)
            ticket = fields["sfu"]
            assert ticket["room"] == room and ticket["display"] == me.name and ticket["url"] == "ws://127.0.0.1:8188"
            seen[me.name] = ticket["token"]
        assert set(seen.values()) == tokens and len(tokens) == 3
        with pytest.raises(ChatRequestError) as info:  # no relay in an SFU group
            await amy.request("call.signal", to="ben", data={"type": "offer", "sdp": "v=0"})
        assert info.value.code == "forbidden"
        # cat walks away: told, its token withdrawn and kicked; the room stays with two
        server.place(c, 40.0, 40.0)
        server.tick()
        await settle(amy, cat)
        assert call_events(cat) == [("call.left", {"group": "open/p1", "reason": "moved_away"})]
        assert call_events(amy) == [("call.members", {"group": "open/p1", "members": roster(a, b)})]
        assert sfu.rooms[room] == {seen["amy"], seen["ben"]} and sfu.kicked == [seen["cat"]]
        # a mute withdraws the ticket too
        server.chat.mute("ben", 30)
        await settle(amy)
        assert sfu.rooms[room] == {seen["amy"]}
        # the group ends: the room is closed
        server.place(b, -40.0, -40.0)
        server.tick()
        await settle(amy)
        assert call_events(amy) == [("call.members", {"group": "open/p1", "members": roster(a)}),
                                    ("call.left", {"group": "open/p1", "reason": "moved_away"})]
        assert sfu.rooms == {} and sfu.closed == [room]
    assert server.stats.get("calls.sfu_rooms_opened") == 1 and server.stats.get("calls.sfu_tickets") == 3


async def test_zone_groups_go_to_the_sfu_from_the_first_member(sfu_server) -> None:
    server, sfu = sfu_server, sfu_server.backend
    corner = next(z for z in server.worlds.get("gallery").world_spec.zones if z.call)
    async with callers(server, "amy", world="gallery", spots=[corner.center]) as ((a, amy),):
        server.tick()
        await settle(amy)
        (name, fields), = call_events(amy)
        assert (name, fields["mode"], fields["zone"], fields["members"]) == ("call.joined", "sfu", "corner", roster(a))
        assert sfu.rooms == {fields["sfu"]["room"]: {fields["sfu"]["token"]}}


async def test_a_failing_sfu_keeps_a_small_group_on_the_mesh(sfu_server, mock_clock) -> None:
    server, sfu = sfu_server, sfu_server.backend
    sfu.fail.add("open")
    spots = [(0.0, 0.0), (1.0, 0.0), (0.5, 1.0)]
    async with callers(server, "amy", "ben", "cat", spots=spots) as ((a, amy), (b, ben), (c, cat)):
        server.tick()
        await settle(amy, ben, cat)
        # three over mesh_max 2, the room could not be made: a mesh of three (max_members 8)
        assert call_events(cat) == [joined("open/p1", a, b, c)]
        await cat.request("call.signal", to="amy", data={"type": "offer", "sdp": "v=0"})
        assert server.stats.get("calls.sfu_failed.open") == 1 and server.stats.get("calls.sfu_fallback_mesh") == 1
        # a backend that does not answer: the deadline, then the same
        sfu.fail.clear()
        sfu.hang.add("open")
        spots = [(30.0, 0.0), (31.0, 0.0), (30.5, 1.0)]
        async with callers(server, "dan", "eve", "fay", spots=spots) as ((d, dan), (e, eve), (f, fay)):
            server.tick()
            await settle(dan, fay)
            assert call_events(dan) == []  # three over mesh_max: they wait for the room
            mock_clock.jump(calls_service.SFU_CALL_TIMEOUT)
            await settle(dan, eve, fay)
            events = call_events(fay)
            assert events == [joined("open/p2", d, e, f)]
        assert server.stats.get("calls.sfu_failed.open") == 2
    assert sfu.rooms == {}


async def test_an_sfu_that_refuses_a_newcomer_tells_it_the_call_ended(sfu_server) -> None:
    server, sfu = sfu_server, sfu_server.backend
    spots = [(0.0, 0.0), (1.0, 0.0), (0.5, 1.0), (40.0, 40.0)]
    (ta, a), (tb, b), (tc, c), (td, d) = await players(server, "amy", "ben", "cat", "dan", spots=spots)
    async with open_chat(server.url, ta) as amy, open_chat(server.url, td) as dan:
        await enable_calls(amy, dan)
        async with open_chat(server.url, tb) as ben, open_chat(server.url, tc) as cat:
            await enable_calls(ben, cat)
            server.tick()
            await settle(amy, ben, cat)
            assert call_events(amy)[0][1]["mode"] == "sfu"
            sfu.fail.add("admit")
            server.place(d, 1.0, 1.0)
            server.tick()
            await settle(dan, amy)
            assert call_events(dan) == [("call.left", {"group": "open/p1", "reason": "ended"})]
            assert call_events(amy) == []  # the room goes on without dan
            assert server.stats.get("calls.sfu_failed.admit") == 1


# -- the whole server --------------------------------------------------------------------------


async def test_the_servers_tick_loop_forms_calls_for_players_in_the_world(nursery, tmp_path) -> None:
    """Real time here: the server ticks on its own; every wait is for an event, with a deadline."""
    config = load_config(path=None, env={}, overrides={
        "udp.host": "127.0.0.1", "udp.port": "0", "http.host": "127.0.0.1", "http.port": "0",
        "server.stats_interval": "60", "gc.freeze_after_start": "false", "server.data_dir": str(tmp_path),
        "http.images_dir": str(tmp_path / "images"), "worlds.hosted": '["open"]'})
    running = await nursery.start(serve, config)
    url, udp = f"http://127.0.0.1:{running.http_port}", running.udp_address[1]
    world = running.worlds.default.world
    async with open_client("127.0.0.1", udp, http=url, name="amy") as amy, \
            open_client("127.0.0.1", udp, http=url, name="ben") as ben, \
            open_chat(url, amy.joined.token) as amy_chat, open_chat(url, ben.joined.token) as ben_chat:
        for client, x in ((amy, 20.0), (ben, 60.0)):
            slot = world.slot_of(client.entity_id)
            world.pos[slot, 0], world.pos[slot, 2] = x, 20.0
        await amy_chat.request("call.enable", on=True)
        await ben_chat.request("call.enable", on=True)
        ben_slot = world.slot_of(ben.entity_id)
        world.pos[ben_slot, 0] = 21.0  # ben walks up to amy
        event = await ben_chat.wait_for(lambda e: e.name == "call.joined", timeout=REAL_DEADLINE)
        names = [m["name"] for m in event.fields["members"]]
        assert (event.fields["group"].split("/")[0], event.fields["mode"], names) == ("open", "mesh", ["amy", "ben"])
        await amy_chat.wait_for(lambda e: e.name == "call.joined", timeout=REAL_DEADLINE)
        async with httpx.AsyncClient(base_url=url, timeout=REAL_DEADLINE) as http:
            text = (await http.get("/metrics")).text
        assert 'worldserver_call_groups{mode="mesh"} 1.0' in text
        assert 'worldserver_call_members{mode="mesh"} 2.0' in text and "worldserver_calls_enabled 2.0" in text
        await amy_chat.request("call.signal", to="ben", data={"type": "offer", "sdp": "v=0"})
        relayed = await ben_chat.wait_for(lambda e: e.name == "call.signal", timeout=REAL_DEADLINE)
        assert relayed.fields["from"] == "amy"
        world.pos[ben_slot, 0] = 60.0
        left = await ben_chat.wait_for(lambda e: e.name == "call.left", timeout=REAL_DEADLINE)
        assert left.fields["reason"] == "moved_away"
    assert running.stats.get("calls.signals") == 1
