"""Tests of the Hatongsu compatibility mode (worldserver/hatongsu.py), in process.

Job: drive a real Simulation with Hatongsu clients (fake geckos peers that record the texts
sent to them and can lose them) next to a native session, and check what each side sees,
the authority over claimed positions, the reliability scheme and the input validation.
Must not: open sockets or channels (the WebRTC transport is tested elsewhere).
"""

from __future__ import annotations

import json
import math

import pytest

from protocol.messages import Input
from worldserver import hatongsu as H
from worldserver.config import load_config
from worldserver.hatongsu import HatongsuService, HatongsuSession, parse_event
from worldserver.simulation import Simulation
from worldserver.stats import Stats

TICK = 0.05


class FakePeer:
    """A geckos channel as the service sees it: records texts, may lose some."""

    def __init__(self, pid: str, lose=None) -> None:
        self.id = pid
        self.sent: list[str] = []  # what arrived at the client
        self.lost: list[str] = []
        self.lose = lose  # predicate(text) -> True to lose it
        self.backlog = 0
        self.remote = "127.0.0.1"  # where the offer came from (RtcPeer.remote)

    def send(self, data) -> None:
        assert isinstance(data, str)
        if self.lose is not None and self.lose(data):
            self.lost.append(data)
        else:
            self.sent.append(data)

    def buffered_amount(self) -> int:
        return self.backlog


class FakeNative:
    """A native sender: keeps each snapshot's view (as session.views does once sent)."""

    def __init__(self) -> None:
        self.seq = 0

    def send_snapshot(self, session, parts, now: float):
        seqs = list(range(self.seq + 1, self.seq + 1 + len(parts)))
        self.seq += len(parts)
        return seqs


class HatongsuClientModel:
    """What the Hatongsu front end does with our events (WorldServerManager/PlayerManager):
    a geckos receiver (reliable envelopes delivered once per ID for 15 s) feeding a list of
    characters, with duplicates possible, exactly as the original code."""

    def __init__(self, own_id: str) -> None:
        self.own_id = own_id
        self.characters: list[dict] = []  # {"id", "mine", "transform", "state"}
        self.seen_ids: dict[str, float] = {}
        self.events: list[tuple[str, object]] = []

    def receive(self, text: str, now: float) -> None:
        obj = json.loads(text)
        event = next(iter(obj))
        data = obj[event]
        if isinstance(data, dict) and data.get("RELIABLE") == 1:
            for rid, exp in list(self.seen_ids.items()):
                if exp <= now:
                    del self.seen_ids[rid]
            if data["ID"] in self.seen_ids:
                return
            self.seen_ids[data["ID"]] = now + 15.0
            data = data["MESSAGE"]
        self.events.append((event, data))
        if event == "serverNewPlayer":
            self.characters.append({"id": data["playerId"], "mine": data["playerId"] == self.own_id, "transform": data["transform"], "state": 0})
        elif event == "serverExistingPlayers":
            for p in data:
                if p["playerId"] != self.own_id:
                    self.characters.append({"id": p["playerId"], "mine": False, "transform": p["transform"], "state": 0})
        elif event == "serverPlayerUpdate":
            c = self.find(data["playerId"])
            if c is not None and not c["mine"] and data["playerId"] != self.own_id:
                c["transform"] = data["transform"]
        elif event == "serverPlayerAnimation":
            c = self.find(data["playerId"])
            if c is not None and not c["mine"]:
                c["state"] = data["state"]
        elif event == "serverPlayerDisconnected":
            c = self.find(data)
            if c is not None:
                self.characters.remove(c)

    def find(self, pid):
        return next((c for c in self.characters if c["id"] == pid), None)

    def remotes(self) -> list[dict]:
        return [c for c in self.characters if not c["mine"]]

    def mine(self) -> list[dict]:
        return [c for c in self.characters if c["mine"]]


class World:
    """A simulation, the service, and helpers to run ticks and feed clients' models."""

    def __init__(self, **overrides) -> None:
        settings = {"sim.spawn_clearance": 2.0, "worlds.hosted": "open"}  # the open square: bounds and distances
        settings.update(overrides)
        self.config = load_config(path=None, env={}, overrides=settings)
        self.stats = Stats()
        self.sim = Simulation(self.config, self.stats)
        self.service = HatongsuService(self.sim, self.stats)
        self.now = 100.0
        self.models: dict[str, tuple[FakePeer, HatongsuClientModel, int]] = {}

    def connect(self, pid: str, lose=None) -> HatongsuSession:
        peer = FakePeer(pid, lose)
        session = self.service.open(peer, self.now)
        assert isinstance(session, HatongsuSession)
        self.models[pid] = (peer, HatongsuClientModel(pid), 0)
        return session

    def peer(self, pid: str) -> FakePeer:
        return self.models[pid][0]

    def model(self, pid: str) -> HatongsuClientModel:
        return self.models[pid][1]

    def text(self, pid: str, event: str, payload) -> None:
        self.service.on_text(self.peer(pid), json.dumps({event: payload}), self.now)

    def claim(self, pid: str, x: float, z: float, y: float = 0.0, yaw: float = 0.0) -> None:
        self.text(pid, "clientPlayerUpdate", {
            "position": {"x": x, "y": y, "z": z},
            "rotation": {"x": 0, "y": math.sin(yaw / 2), "z": 0, "w": math.cos(yaw / 2)},
        })

    def run(self, seconds: float) -> None:
        for _ in range(int(round(seconds / TICK))):
            self.now += TICK
            self.sim.run_tick(self.now)
            self.deliver()

    def deliver(self) -> None:
        for pid, (peer, model, done) in list(self.models.items()):
            for text in peer.sent[done:]:
                model.receive(text, self.now)
            self.models[pid] = (peer, model, len(peer.sent))

    def position(self, session) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.sim.world.pos[session.slot])


def events_of(peer: FakePeer) -> list[tuple[str, object]]:
    out = []
    for text in peer.sent:
        obj = json.loads(text)
        event = next(iter(obj))
        out.append((event, obj[event]))
    return out


def unwrap(data):
    if isinstance(data, dict) and data.get("RELIABLE") == 1:
        return data["MESSAGE"]
    return data


def xz(transform) -> tuple[float, float]:
    return transform["position"]["x"], transform["position"]["z"]


# -- parsing ------------------------------------------------------------------------------------
def test_parse_event_follows_geckos_rules():
    assert parse_event('{"clientPlayerUpdate":{"a":1}}') == ("clientPlayerUpdate", {"a": 1})
    assert parse_event(' \n{"empty":null}') == ("empty", None)
    # Only the first key counts; array-index keys come first in JavaScript.
    assert parse_event('{"b":1,"a":2}')[0] == "b"
    assert parse_event('{"clientAnimationUpdate":1,"7":2,"3":3}')[0] == "3"
    # A repeated key keeps its first place and its last value.
    assert parse_event('{"x":1,"y":2,"x":3}') == ("x", 3)
    for raw in ("123", " -4{", "0x1f", "+7", "not json", "{bad", b'{"a":1}', '{"a":NaN}', '{"a":Infinity}'):
        with pytest.raises(H.Drop):
            parse_event(raw)
    # parseInt("0x") and parseInt("-") are NaN, so these go on to JSON (and fail there).
    with pytest.raises(H.Drop) as e:
        parse_event("0x")
    assert e.value.reason == "raw"
    with pytest.raises(H.Drop) as e:
        parse_event("[1,2]")
    assert e.value.reason == "not_object"


def test_accepts_only_hatongsu_client_events():
    svc = World().service
    assert svc.accepts('{"clientPlayerUpdate":{"position":{"x":0,"y":0,"z":0},"rotation":{"x":0,"y":0,"z":0,"w":1}}}')
    assert svc.accepts('{"clientAnimationUpdate":{"playerId":"x","state":2}}')
    assert svc.accepts('{"clientAnimationUpdate":{"MESSAGE":{"state":2},"RELIABLE":1,"ID":"abc"}}')
    for text in ('{"chat":"hi"}', '{"serverNewPlayer":{}}', "hello", "12", b"\x01\x02", None, "[", '{"0":1,"clientPlayerUpdate":{}}'):
        assert not svc.accepts(text)


def test_yaw_from_quaternion_matches_native_convention():
    for yaw in (0.0, 0.5, math.pi / 2, math.pi, -2.0, 3.0):
        q = {"x": 0, "y": math.sin(yaw / 2), "z": 0, "w": math.cos(yaw / 2)}
        _, got = H.parse_player_update({"position": {"x": 0, "y": 0, "z": 0}, "rotation": q})
        assert math.isclose(math.remainder(got - yaw, 2 * math.pi), 0.0, abs_tol=1e-9)
    # yaw pi/2 faces +x, like a native client moving along +x (atan2(move_x, move_z)).
    _, got = H.parse_player_update({"position": {"x": 0, "y": 0, "z": 0}, "rotation": {"x": 0, "y": 0.7071, "z": 0, "w": 0.7071}})
    assert math.isclose(got, math.atan2(1.0, 0.0), abs_tol=1e-4)
    # A non-unit quaternion (or its negative) has the same heading.
    _, got = H.parse_player_update({"position": {"x": 0, "y": 0, "z": 0}, "rotation": {"x": 0, "y": -2.0, "z": 0, "w": -2.0}})
    assert math.isclose(got, math.pi / 2, abs_tol=1e-9)
    # Transform out and back again.
    svc = World().service
    for q in (0, 1000, 16384, 32768, 40000, 65535):
        t = svc.transform([11000, 1000, 11000, q, 0])
        r = t["rotation"]
        assert r["w"] >= 0
        assert math.isclose(r["x"] ** 2 + r["y"] ** 2 + r["z"] ** 2 + r["w"] ** 2, 1.0, abs_tol=1e-5)
        _, yaw = H.parse_player_update(t)
        assert round((yaw % (2 * math.pi)) * 65536 / (2 * math.pi)) % 65536 == q


# -- two Hatongsu clients and a native one in one world --------------------------------------
def test_hatongsu_and_native_clients_see_each_other():
    w = World()
    native = w.sim.join(FakeNative(), w.now)
    a = w.connect("A" * 24)
    w.run(0.5)
    b = w.connect("B" * 24)
    w.run(1.0)

    ev_a = events_of(w.peer("A" * 24))
    # First: A's own spawn, then the existing players including A itself.
    assert ev_a[0][0] == "serverNewPlayer"
    own = unwrap(ev_a[0][1])
    assert own["playerId"] == "A" * 24
    assert set(own["transform"]) == {"position", "rotation"}
    assert set(own["transform"]["position"]) == {"x", "y", "z"}
    assert set(own["transform"]["rotation"]) == {"x", "y", "z", "w"}
    assert ev_a[1][0] == "serverExistingPlayers"
    existing = unwrap(ev_a[1][1])
    assert existing[0]["playerId"] == "A" * 24
    ids = [p["playerId"] for p in existing]
    assert len(ids) == 2  # A and the native avatar
    native_alias = ids[1]
    assert native_alias != "A" * 24
    assert len(native_alias) == 24 and native_alias.isalnum() and native_alias.isascii()
    # Reliable envelopes: geckos' shape, a 24-character ID.
    env = ev_a[0][1]
    assert env["RELIABLE"] == 1 and len(env["ID"]) == 24 and env["ID"].isalnum()

    # A is told about B under B's own geckos id; B is told about A and the native avatar,
    # the native avatar under the same derived id as A was.
    ma, mb = w.model("A" * 24), w.model("B" * 24)
    assert sorted(c["id"] for c in ma.remotes()) == sorted([native_alias, "B" * 24])
    assert sorted(c["id"] for c in mb.remotes()) == sorted([native_alias, "A" * 24])
    assert len(ma.mine()) == 1 and len(mb.mine()) == 1
    # No duplicates despite ten and more copies of every announcement.
    w.run(13.0)
    assert len(ma.remotes()) == 2 and len(mb.remotes()) == 2 and len(ma.mine()) == 1

    # The native client's snapshots contain both Hatongsu avatars.
    newest = native.views[max(native.views)]
    assert {a.entity_id, b.entity_id, native.entity_id} <= set(int(i) for i in newest.ids)

    # B walks; A sees updates of B (and no updates of itself), the native view follows.
    bx, _, bz = w.position(b)
    w.claim("B" * 24, bx + 2.0, bz, yaw=math.pi / 2)
    w.text("B" * 24, "clientAnimationUpdate", {"playerId": "whatever", "state": 2})
    w.run(1.0)
    cb = ma.find("B" * 24)
    assert math.isclose(xz(cb["transform"])[0], bx + 2.0, abs_tol=0.05)
    assert cb["state"] == 2
    assert math.isclose(cb["transform"]["rotation"]["y"], math.sin(math.pi / 4), abs_tol=1e-4)
    updates = [d for e, d in events_of(w.peer("A" * 24)) if e == "serverPlayerUpdate"]
    assert updates and all(d["playerId"] != "A" * 24 for d in updates)
    assert {d["playerId"] for d in updates} <= {"B" * 24, native_alias}
    anims = [d for e, d in events_of(w.peer("A" * 24)) if e == "serverPlayerAnimation"]
    assert {"playerId": "B" * 24, "state": 2} in anims
    assert w.sim.world.anim[b.slot] == 2
    assert math.isclose(float(w.sim.world.yaw[b.slot]), math.pi / 2, abs_tol=1e-3)

    # The native avatar moves: both Hatongsu clients see it.
    nx = float(w.sim.world.pos[native.slot][0])
    for _ in range(20):
        native.pending.append(Input(native.last_received_seq + 1, 127, 0, 16384, 1, 0))
        native.last_received_seq += 1
        w.run(TICK)
    for m in (ma, mb):
        c = m.find(native_alias)
        assert xz(c["transform"])[0] > nx + 3.0
        assert c["state"] == 1


def test_only_changed_entities_are_updated_at_10_hz():
    w = World()
    a = w.connect("A" * 24)
    b = w.connect("B" * 24)
    w.run(2.0)
    peer = w.peer("A" * 24)
    start = len(peer.sent)
    w.run(1.0)  # nobody moves
    plain = [e for e, _ in events_of(peer)[start:] if e in ("serverPlayerUpdate", "serverPlayerAnimation")]
    assert len(plain) <= 1  # at most the keyframe refresh
    bx, _, bz = w.position(b)
    w.claim("B" * 24, bx + 50.0, bz)
    start = len(peer.sent)
    w.run(2.0)
    updates = [d for e, d in events_of(peer)[start:] if e == "serverPlayerUpdate"]
    assert 18 <= len(updates) <= 21  # 10 Hz, not the tick rate


def test_far_entities_are_updated_at_5_hz():
    w = World()
    a = w.connect("A" * 24)
    b = w.connect("B" * 24)
    w.run(0.5)
    bx, _, bz = w.position(b)
    w.claim("B" * 24, bx + 30.0, bz)  # 6 s at 5 m/s
    w.run(4.5)
    peer = w.peer("A" * 24)
    start = len(peer.sent)
    w.run(1.0)  # B is 22 to 27 m from A and walking
    updates = [d for e, d in events_of(peer)[start:] if e == "serverPlayerUpdate"]
    assert 4 <= len(updates) <= 6
    assert math.isclose(xz(w.model("A" * 24).find("B" * 24)["transform"])[0], w.position(b)[0], abs_tol=1.1)


# -- authority ----------------------------------------------------------------------------------
def test_claimed_positions_are_targets_walked_at_max_speed_inside_bounds():
    w = World()
    a = w.connect("A" * 24)
    w.run(0.2)
    max_step = w.sim.world.max_speed * w.sim.dt
    start = w.position(a)
    w.claim("A" * 24, 1000.0, 0.0, y=0.0)  # far outside the world
    he = w.sim.world.half_extent
    prev = start
    for _ in range(int(3 * 110 / (max_step * 20)) * 20):
        w.run(TICK)
        p = w.position(a)
        assert math.hypot(p[0] - prev[0], p[2] - prev[2]) <= max_step + 1e-6
        assert abs(p[0]) <= he and abs(p[2]) <= he
        prev = p
    assert math.isclose(prev[0], he, abs_tol=1e-6)  # got to the edge, never past it
    # The client's claimed position never entered the world.
    assert (w.sim.world.pos[:, 0] <= he).all()

    # A near target is reached and the avatar stops there (within a few cm).
    w.claim("A" * 24, 5.0, 3.0)
    w.run(105.0 / w.sim.world.max_speed + 1.0)
    p = w.position(a)
    assert math.hypot(p[0] - 5.0, p[2] - 3.0) <= 0.04
    w.run(1.0)
    assert w.position(a) == p

    # What others are told is the server's avatar, not the claim.
    b = w.connect("B" * 24)
    w.claim("A" * 24, -100.0, 3.0)
    w.run(1.0)
    seen = w.model("B" * 24).find("A" * 24)
    assert seen is not None
    x, z = xz(seen["transform"])
    assert x >= 5.0 - 1.0 * w.sim.world.max_speed - 0.1


def test_a_jump_claim_jumps_the_avatar():
    w = World()
    a = w.connect("A" * 24)
    w.run(0.2)
    x, y, z = w.position(a)
    w.claim("A" * 24, x, z, y=0.0)
    w.run(0.1)
    w.claim("A" * 24, x, z, y=0.6)
    w.run(0.2)
    assert w.position(a)[1] > 0.3


# -- reliability ------------------------------------------------------------------------------
def test_reliable_schedule_ten_copies_then_the_same_id_until_12_s():
    w = World()
    w.connect("A" * 24)
    t0 = w.now + TICK
    times = []
    for _ in range(int(15 / TICK)):
        w.run(TICK)
        for text in w.peer("A" * 24).sent[len(times):]:
            times.append((w.now, text))
    spawn = [(t, json.loads(s)) for t, s in times if s.startswith('{"serverNewPlayer"')]
    assert len({m["serverNewPlayer"]["ID"] for _, m in spawn}) == 1
    offsets = [round(t - t0, 2) for t, _ in spawn]
    assert offsets == [0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05, 1.2, 1.35, 3.0, 6.0, 9.0, 12.0]
    # The client model delivers it once.
    assert len(w.model("A" * 24).mine()) == 1


def test_lost_spawn_heals():
    # B's client loses every copy of the first announcement of A (all 14 of them).
    w = World()
    lost_ids = set()

    def lose(text):
        obj = json.loads(text)
        event = next(iter(obj))
        data = obj[event]
        if event in ("serverNewPlayer", "serverExistingPlayers") and "A" * 24 in text:
            if not lost_ids or data["ID"] in lost_ids:
                lost_ids.add(data["ID"])
                return True
        return False

    a = w.connect("A" * 24)
    w.run(0.5)
    w.connect("B" * 24, lose=lose)
    w.run(1.0)
    mb = w.model("B" * 24)
    assert mb.find("A" * 24) is None  # invisible, as in Hatongsu...
    w.run(H.RESPAWN_INTERVAL + 1.0)
    remotes = mb.remotes()
    assert len(remotes) == 1  # ...until the respawn under a fresh alias
    alias = remotes[0]["id"]
    assert alias != "A" * 24 and len(alias) == 24
    # And it follows A from then on.
    x, _, z = w.position(a)
    w.claim("A" * 24, x + 3.0, z)
    w.run(2.0)
    assert math.isclose(xz(mb.find(alias)["transform"])[0], x + 3.0, abs_tol=0.05)
    assert w.stats.get("hatongsu.respawns") >= 1


def test_lost_first_copies_heal_without_duplicates():
    # The first N sends to B are lost: the later copies deliver everything, once.
    w = World()
    count = {"n": 0}

    def lose(text):
        count["n"] += 1
        return count["n"] <= 12

    w.connect("A" * 24)
    w.sim.join(FakeNative(), w.now)
    w.run(0.5)
    w.connect("B" * 24, lose=lose)
    w.run(3.0)
    mb = w.model("B" * 24)
    assert len(mb.mine()) == 1
    assert len(mb.remotes()) == 2
    w.run(H.RESPAWN_INTERVAL * 2 + 1)
    assert len(mb.mine()) == 1 and len(mb.remotes()) == 2  # respawns never duplicate
    ma = w.model("A" * 24)
    assert len(ma.mine()) == 1 and len(ma.remotes()) == 2


def test_respawns_replace_avatars_one_for_one():
    w = World()
    for i in range(5):
        w.sim.join(FakeNative(), w.now)
    w.connect("A" * 24)
    for _ in range(4):
        w.run(H.RESPAWN_INTERVAL / 2)
        ma = w.model("A" * 24)
        assert len(ma.remotes()) == 5 and len({c["id"] for c in ma.remotes()}) == 5
    assert w.stats.get("hatongsu.respawns") >= 5


def test_lost_final_update_heals_with_a_keyframe():
    w = World()
    a = w.connect("A" * 24)
    w.run(0.2)
    state = {"drop": False}
    w.connect("B" * 24, lose=lambda text: state["drop"] and text.startswith('{"serverPlayerUpdate"'))
    w.run(2.0)
    x, _, z = w.position(a)
    state["drop"] = True
    w.claim("A" * 24, x + 1.0, z)
    w.run(1.0)
    seen = w.model("B" * 24).find("A" * 24)
    assert math.isclose(xz(seen["transform"])[0], x, abs_tol=0.05)  # every update lost
    state["drop"] = False
    w.run(H.KEYFRAME_INTERVAL + 0.2)
    assert math.isclose(xz(seen["transform"])[0], x + 1.0, abs_tol=0.05)


def test_back_pressure_skips_plain_updates_never_reliable_copies():
    w = World()
    a = w.connect("A" * 24)
    w.run(0.2)
    w.connect("B" * 24)
    peer_b = w.peer("B" * 24)
    peer_b.backlog = 1000
    w.run(0.05)
    x, _, z = w.position(a)
    w.claim("A" * 24, x + 2.0, z)
    w.run(1.5)
    events = [e for e, _ in events_of(peer_b)]
    assert "serverPlayerUpdate" not in events
    assert events.count("serverNewPlayer") == 10  # the reliable schedule ran on
    assert w.stats.get("hatongsu.updates_skipped") > 0
    peer_b.backlog = 0
    w.run(0.3)
    seen = w.model("B" * 24).find("A" * 24)
    assert math.isclose(xz(seen["transform"])[0], x + 2.0, abs_tol=0.05)


# -- leaving the view, disconnecting --------------------------------------------------------------
def test_disconnect_tells_everyone_reliably():
    w = World()
    a = w.connect("A" * 24)
    b = w.connect("B" * 24)
    c = w.connect("C" * 24)
    w.run(2.0)
    w.service.close(w.peer("A" * 24), "closed")
    w.run(0.1)
    for pid in ("B" * 24, "C" * 24):
        disc = [d for e, d in events_of(w.peer(pid)) if e == "serverPlayerDisconnected"]
        assert disc and unwrap(disc[0]) == "A" * 24
        assert w.model(pid).find("A" * 24) is None
    assert a not in w.sim.sessions
    assert len(w.peer("A" * 24).sent) == len(w.peer("A" * 24).sent)  # nothing more to A
    before = len(w.peer("A" * 24).sent)
    w.run(2.0)
    assert len(w.peer("A" * 24).sent) == before
    # Texts from the closed peer are dropped.
    w.claim("A" * 24, 1.0, 1.0)
    assert w.stats.get("drop.hatongsu.no_session") == 1


def test_leaving_and_reentering_the_view_uses_a_fresh_alias():
    w = World(**{"interest.radius": 10.0, "interest.leave_margin": 1.0})
    a = w.connect("A" * 24)
    b = w.connect("B" * 24)
    w.run(1.0)
    mb = w.model("B" * 24)
    assert mb.find("A" * 24) is not None
    x, _, z = w.position(a)
    w.claim("A" * 24, x + 40.0, z)
    w.run(10.0)
    assert mb.remotes() == []
    w.claim("A" * 24, x, z)
    w.run(10.0)
    remotes = mb.remotes()
    assert len(remotes) == 1 and remotes[0]["id"] != "A" * 24
    # Late copies of the old disconnect cannot remove it.
    w.run(15.0)
    assert len(mb.remotes()) == 1


def test_despawn_during_the_announcement_leaves_no_ghost():
    # B gets none of the copies of A's announcement sent before A leaves, and then the ones
    # already scheduled arrive after the disconnect: the closing disconnect removes it.
    w = World()
    a = w.connect("A" * 24)
    w.run(0.2)
    gate = {"open": False}
    w.connect("B" * 24, lose=lambda text: not gate["open"] and '"serverPlayerDisconnected"' not in text)
    w.run(0.5)
    w.service.close(w.peer("A" * 24), "closed")
    w.run(0.5)
    gate["open"] = True
    w.run(16.0)
    assert w.model("B" * 24).remotes() == []


def test_lost_disconnect_ghost_heals_with_plain_follow_ups():
    w = World()
    a = w.connect("A" * 24)
    w.run(0.2)

    def lose(text):  # every reliable disconnect, all copies
        return text.startswith('{"serverPlayerDisconnected":{')

    w.connect("B" * 24, lose=lose)
    w.run(2.0)
    mb = w.model("B" * 24)
    assert mb.find("A" * 24) is not None
    w.service.close(w.peer("A" * 24), "closed")
    w.run(13.0)
    assert mb.find("A" * 24) is not None  # a frozen ghost, as in Hatongsu...
    w.run(H.FOLLOW_UP_INTERVAL)
    assert mb.remotes() == []  # ...until the plain follow-up
    plain = [d for e, d in events_of(w.peer("B" * 24)) if e == "serverPlayerDisconnected"]
    assert plain and all(d == "A" * 24 for d in plain)


# -- hostile and malformed input ----------------------------------------------------------------
def test_malformed_and_hostile_texts_are_counted_and_ignored():
    w = World()
    a = w.connect("A" * 24)
    w.run(0.5)
    before = w.position(a)
    peer = w.peer("A" * 24)
    svc = w.service
    good_rot = {"x": 0, "y": 0, "z": 0, "w": 1}
    bad = {
        "raw": ["12345", "hello", "{not json", '{"clientPlayerUpdate":NaN}', '["[[[[' + '\\"[' * 50],
        "too_deep": ["[" * 3000, '{"clientPlayerUpdate":' * 150 + "1" + "}" * 150, "[" * 33 + "]" * 33],
        "not_object": ["[1]", "null", '"clientPlayerUpdate"', "{}"],
        "unknown_event": ['{"serverNewPlayer":{}}', '{"chat":"x"}', '{"1":{},"clientPlayerUpdate":{}}'],
        "bad_shape": [
            '{"clientPlayerUpdate":null}',
            '{"clientPlayerUpdate":{"position":{"x":1,"y":2},"rotation":%s}}' % json.dumps(good_rot),
            '{"clientPlayerUpdate":{"position":{"x":"1","y":0,"z":0},"rotation":%s}}' % json.dumps(good_rot),
            '{"clientPlayerUpdate":{"position":{"x":true,"y":0,"z":0},"rotation":%s}}' % json.dumps(good_rot),
            '{"clientPlayerUpdate":{"position":[1,2,3],"rotation":%s}}' % json.dumps(good_rot),
            '{"clientAnimationUpdate":{"playerId":"x"}}',
            '{"clientAnimationUpdate":[2]}',
        ],
        "bad_number": [
            '{"clientPlayerUpdate":{"position":{"x":1e400,"y":0,"z":0},"rotation":%s}}' % json.dumps(good_rot),
            '{"clientPlayerUpdate":{"position":{"x":1e9,"y":0,"z":0},"rotation":%s}}' % json.dumps(good_rot),
            '{"clientPlayerUpdate":{"position":{"x":%s,"y":0,"z":0},"rotation":%s}}' % ("9" * 400, json.dumps(good_rot)),
            '{"clientAnimationUpdate":{"playerId":"x","state":256}}',
        ],
        "bad_state": ['{"clientAnimationUpdate":{"playerId":"x","state":1.5}}', '{"clientAnimationUpdate":{"playerId":"x","state":-1}}'],
        "bad_rotation": ['{"clientPlayerUpdate":{"position":{"x":1,"y":0,"z":0},"rotation":{"x":0,"y":0,"z":0,"w":0}}}'],
        "bad_envelope": [
            '{"clientAnimationUpdate":{"MESSAGE":{"state":1},"RELIABLE":1,"ID":5}}',
            '{"clientAnimationUpdate":{"RELIABLE":1,"ID":"abc"}}',
            '{"clientAnimationUpdate":{"MESSAGE":{"state":1},"RELIABLE":1,"ID":"%s"}}' % ("x" * 100),
        ],
        "not_text": [b'{"clientAnimationUpdate":{"state":1}}', None, 5],
        "too_long": ['{"clientAnimationUpdate":{"state":1,"pad":"%s"}}' % ("x" * 5000)],
    }
    for reason, texts in bad.items():
        for text in texts:
            svc.on_text(peer, text, w.now)
            w.now += 0.1  # stay under the rate limit
        assert w.stats.get(f"drop.hatongsu.{reason}") == len(texts), reason
    w.run(1.0)
    assert w.position(a) == before
    assert w.sim.world.anim[a.slot] == 0
    # A flood is rate limited like native inputs.
    for _ in range(100):
        svc.on_text(peer, '{"clientAnimationUpdate":{"playerId":"x","state":1}}', w.now)
    assert w.stats.get("drop.hatongsu.rate") >= 100 - w.config.sim.input_burst - 1
    # Unknown peers.
    svc.on_text(FakePeer("Z" * 24), '{"clientAnimationUpdate":{"state":1}}', w.now)
    assert w.stats.get("drop.hatongsu.no_session") == 1


def test_reliable_envelopes_from_a_client_are_unwrapped_and_deduplicated():
    w = World()
    a = w.connect("A" * 24)
    w.run(0.2)
    peer = w.peer("A" * 24)
    env = '{"clientAnimationUpdate":{"MESSAGE":{"playerId":"x","state":%d},"RELIABLE":1,"ID":"%s"}}'
    w.service.on_text(peer, env % (2, "I" * 24), w.now)
    w.run(0.1)
    assert w.sim.world.anim[a.slot] == 2
    w.service.on_text(peer, env % (0, "J" * 24), w.now)
    for _ in range(5):
        w.now += 0.15
        w.service.on_text(peer, env % (2, "I" * 24), w.now)  # late copies of the first
    w.run(0.1)
    assert w.sim.world.anim[a.slot] == 0
    assert w.stats.get("drop.hatongsu.duplicate") == 5
    # After 15 s the ID is forgotten (as in geckos) and would be delivered again.
    w.run(16.0)
    w.service.on_text(peer, env % (3, "I" * 24), w.now)
    assert w.stats.get("drop.hatongsu.duplicate") == 5
    w.run(0.1)
    assert w.sim.world.requested_anim[a.slot] == 3


def test_world_full_refuses_the_client():
    w = World(**{"sim.max_entities": 2, "net.max_clients": 2})
    w.connect("A" * 24)
    w.connect("B" * 24)
    peer = FakePeer("C" * 24)
    assert w.service.open(peer, w.now) is None
    assert w.stats.get("drop.hatongsu.world_full") == 1
    w.run(0.5)
    assert peer.sent == []
    w.service.on_text(peer, '{"clientAnimationUpdate":{"state":1}}', w.now)
    assert w.stats.get("drop.hatongsu.no_session") == 1
    w.service.close(peer, "closed")


def test_native_entity_ids_are_stable_and_unique():
    w = World()
    svc = w.service
    n1 = w.sim.join(FakeNative(), w.now)
    id1 = svc.canonical_id(n1.entity_id)
    assert id1 == svc.canonical_id(n1.entity_id)
    assert len(id1) == 24 and id1.isascii() and id1.isalnum()
    w.sim.leave(n1)
    n2 = w.sim.join(FakeNative(), w.now)
    assert n2.slot == n1.slot and n2.entity_id != n1.entity_id
    assert svc.canonical_id(n2.entity_id) != id1
