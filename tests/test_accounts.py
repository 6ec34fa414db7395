"""A name belongs to its owner: worldserver.accounts and the attack of issue 8 that it stops.

The attack: private rooms went with the nickname, and a name was free again once its token was
gone -- after a restart, after the idle expiry, or after mass anonymous joins evicted the idle
token; the attacker then joined under the name, read the room's history in ``hello``, searched
it and deleted the room as its owner. One token also gave two live avatars. These tests repeat
each way in (a new server object on the same SQLite file; a fake clock past the expiry; joins
that evict the token) and check that the attacker gets a 409 and no room, and that the owner,
presenting the secret of its first join, gets everything back. Also: one identity, one avatar
and one login (the first is ended with a notice), the per-address limit on new names (explicit
``now``), and names carried over from a database of the old schema.

Must not: mock SQLite, HTTP or the chat; sleep on the wall clock to let time pass (time is a
fake clock or an explicit ``now``).
"""

from __future__ import annotations

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from chat_support import TIMEOUT, start_chat_server
from protocol import PROTOCOL_VERSION
from protocol.client import ClientConnection
from protocol.events import Connected, Disconnected
from test_identity_store import make_v1_database
from worldclient.chat_client import ChatRequestError, open_chat
from worldserver.accounts import Accounts, JoinRefused
from worldserver.app import serve
from worldserver.chat import SqliteChatStore
from worldserver.chat.peers import CLOSE_REPLACED
from worldserver.config import Config, load_config
from worldserver.identity import REPLACED, Identities
from worldserver.limits import AddressLimits

SECRET_WORDS = "the vault code is 4711"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ Accounts on a real store


def direct(store: SqliteChatStore):
    """A ``store_call`` that runs ``fn(store)`` at once (the real SQLite; no worker thread)."""

    async def call(fn):
        return fn(store)

    return call


def accounts_on(store, identities=None, **kwargs) -> Accounts:
    limits = kwargs.pop("limits", AddressLimits(Config().with_overrides({"limits.trusted_networks": []}).limits))
    return Accounts(Identities() if identities is None else identities, direct(store), limits=limits, **kwargs)


@pytest.fixture
def store(tmp_path):
    s = SqliteChatStore(tmp_path / "chat.sqlite3")
    yield s
    s.close()


async def refused(coro) -> JoinRefused:
    with pytest.raises(JoinRefused) as info:
        await coro
    return info.value


async def test_a_name_is_given_only_with_its_secret(store) -> None:
    accounts = accounts_on(store)
    first = await accounts.join(" 갤러리짱 ", address="10.0.0.1", now=0.0)
    assert first.name == "갤러리짱" and first.secret is not None and first.identity >= 1
    for attempt in ("갤러리짱", "  갤러리짱"):
        err = await refused(accounts.join(attempt, address="10.0.0.2", now=1.0))
        assert (err.status, err.code) == (409, "name_taken") and "belongs to someone else" in err.reason
    err = await refused(accounts.join("갤러리짱", "A" * 43, address="10.0.0.2", now=1.0))
    assert (err.status, err.code) == (409, "name_taken")
    err = await refused(accounts.join("갤러리짱", "not a secret", address="10.0.0.2", now=1.0))
    assert (err.status, err.code) == (400, "bad_secret")
    err = await refused(accounts.join("Server", address="10.0.0.2", now=1.0))
    assert (err.status, err.code) == (400, "bad_name") and "reserved" in err.reason
    again = await accounts.join("갤러리짱", first.secret, address="10.9.9.9", now=2.0)
    assert again.identity == first.identity and again.secret is None and again.token != first.token
    assert accounts.identities.name_for(first.token) is None
    stats = accounts.stats
    assert stats.get("identity.created") == 1 and stats.get("identity.reclaimed") == 1
    assert stats.get("drop.join_name_taken") == 2 and stats.get("drop.join_wrong_secret") == 1
    assert stats.get("drop.join_bad_secret") == 1 and stats.get("drop.join_bad_name") == 1


async def test_restart_idle_expiry_and_evictions_free_no_name(tmp_path) -> None:
    path = tmp_path / "chat.sqlite3"
    clock = FakeClock()
    store = SqliteChatStore(path)
    accounts = accounts_on(store, Identities(ttl=60.0, max_tokens=5, clock=clock))
    alice = await accounts.join("alice", address="10.0.0.1", now=0.0)
    # idle expiry: the token is gone, the name is not
    clock.now += 61
    assert accounts.identities.name_for(alice.token) is None
    assert (await refused(accounts.join("alice", address="10.6.6.6", now=1.0))).code == "name_taken"
    # evictions: a new login for alice, left idle, then mass joins fill the token table
    token = (await accounts.join("alice", alice.secret, now=2.0)).token
    for i in range(20):
        await accounts.join(f"flood-{i}", address=f"10.1.{i}.1", now=3.0)
    assert accounts.identities.name_for(token) is None and len(accounts.identities) == 5
    assert (await refused(accounts.join("ALICE", address="10.6.6.6", now=4.0))).code == "name_taken"
    store.close()
    # restart: a new store object, new accounts, new tokens; the name is still alice's
    store = SqliteChatStore(path)
    try:
        accounts = accounts_on(store)
        assert (await refused(accounts.join("alice", address="10.6.6.6", now=0.0))).code == "name_taken"
        back = await accounts.join("alice", alice.secret, address="10.0.0.1", now=0.0)
        assert back.identity == alice.identity and accounts.identities.name_for(back.token) == "alice"
    finally:
        store.close()


async def test_a_new_login_ends_the_holders_of_the_old_token(store) -> None:
    accounts = accounts_on(store)
    first = await accounts.join("kim", now=0.0)
    ended = []
    accounts.identities.attach(first.token, "avatar", ended.append, avatar=True)
    accounts.identities.attach(first.token, "chat socket", ended.append)
    await accounts.join("kim", first.secret, now=1.0)
    assert ended == [REPLACED, REPLACED]


async def test_new_names_per_address_are_limited(store) -> None:
    config = Config().with_overrides({"limits.trusted_networks": ["192.168.0.0/16"]})
    accounts = accounts_on(store, limits=AddressLimits(config.limits), names_per_hour=3)
    made = [await accounts.join(f"n{i}", address="10.0.0.1", now=100.0) for i in range(3)]
    err = await refused(accounts.join("n3", address="10.0.0.1", now=100.0))
    assert (err.status, err.code) == (429, "rate_limited") and err.retry_after == pytest.approx(1200.0)
    assert accounts.stats.get("drop.limit_new_names_address") == 1
    await accounts.join("other-address", address="10.0.0.2", now=100.0)
    # IPv6 addresses count by their /64
    await accounts.join("v6-a", address="2001:db8::1", now=100.0)
    await accounts.join("v6-b", address="2001:db8::2", now=100.0)
    await accounts.join("v6-c", address="2001:db8::3:4", now=100.0)
    assert (await refused(accounts.join("v6-d", address="2001:db8::99", now=100.0))).status == 429
    # taking back a name is never limited; trusted networks are not limited
    for name in made:
        await accounts.join(name.name, name.secret, address="10.0.0.1", now=101.0)
    for i in range(10):
        await accounts.join(f"lan-{i}", address="192.168.1.5", now=101.0)
    # a token comes back after an hour / 3 = 1200 s
    assert (await refused(accounts.join("n3", address="10.0.0.1", now=1299.0))).status == 429
    assert (await accounts.join("n3", address="10.0.0.1", now=1300.5)).name == "n3"


async def test_names_in_all_are_limited(store) -> None:
    accounts = accounts_on(store, max_names=2)
    await accounts.join("one", now=0.0)
    await accounts.join("two", address="10.0.0.7", now=0.0)
    err = await refused(accounts.join("three", address="10.0.0.8", now=0.0))
    assert (err.status, err.code) == (503, "full")
    assert accounts.stats.get("drop.join_names_full") == 1
    accounts = accounts_on(store, max_names=2)  # the count is read from the store
    assert (await refused(accounts.join("three", address="10.0.0.9", now=0.0))).status == 503


async def test_names_from_an_old_database(tmp_path) -> None:
    """An upgraded database keeps its names, with no secret: one that holds nothing anyone
    could take may be taken once (and gets a secret then); one that owns a room, or is in or
    invited to a private room, stays locked -- its rooms go to nobody."""
    path = tmp_path / "old.sqlite3"
    make_v1_database(path)
    store = SqliteChatStore(path)
    try:
        accounts = accounts_on(store)
        for locked in ("kim", "Kim", "민수", "anna", "lee"):  # owner, member, invited, owner
            err = await refused(accounts.join(locked, address="10.6.6.6", now=0.0))
            assert err.code == "name_taken", locked
        claimed = await accounts.join("guestly", address="10.0.0.1", now=0.0)
        assert claimed.secret is not None and accounts.stats.get("identity.claimed") == 1
        assert (await refused(accounts.join("guestly", address="10.6.6.6", now=1.0))).code == "name_taken"
        assert (await accounts.join("guestly", claimed.secret, now=2.0)).identity == claimed.identity
    finally:
        store.close()


# ------------------------------------------------------------------ the attack, end to end


async def post_join(url: str, name: str, secret: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        body = {"name": name} if secret is None else {"name": name, "secret": secret}
        return await http.post("/api/join", json=body)


async def owner_sets_up(url: str) -> tuple[dict, int]:
    """alice joins, makes a private room and says a secret in it; returns (join body, room)."""
    r = await post_join(url, "alice")
    assert r.status_code == 200, r.text
    joined = r.json()
    async with open_chat(url, joined["token"], reconnect=False) as alice:
        room = (await alice.create_room("alice's vault", private=True))["id"]
        await alice.send(room, SECRET_WORDS)
    return joined, room


async def attacker_gets_nothing(url: str, room: int, tag: str) -> None:
    for name in ("alice", "ALICE", " alice "):
        r = await post_join(url, name)
        assert r.status_code == 409 and r.json()["code"] == "name_taken", r.text
    r = await post_join(url, f"mallory-{tag}")
    assert r.status_code == 200
    async with open_chat(url, r.json()["token"], reconnect=False) as mallory:
        assert room not in [info["id"] for info in mallory.hello["rooms"]]
        for op, fields in (("msg.search", {"query": "4711"}), ("msg.history", {}),
                           ("room.delete", {}), ("room.members", {})):
            with pytest.raises(ChatRequestError) as info:
                await mallory.request(op, room=room, **fields)
            assert info.value.code == "forbidden", op
        with pytest.raises(ChatRequestError) as info:
            await mallory.join(room)
        assert info.value.code == "forbidden"


async def owner_gets_everything_back(url: str, joined: dict, room: int) -> None:
    r = await post_join(url, "alice", joined["secret"])
    assert r.status_code == 200 and r.json()["id"] == joined["id"], r.text
    async with open_chat(url, r.json()["token"], reconnect=False) as alice:
        vault = next(info for info in alice.hello["rooms"] if info["id"] == room)
        assert vault["owner"] == "alice" and [m["text"] for m in vault["messages"]][-1] == SECRET_WORDS
        assert [m["text"] for m in await alice.search(room, "4711")] == [SECRET_WORDS]
        assert (await alice.request("room.delete", room=room))["room"] == room


async def test_after_a_restart(tmp_path) -> None:
    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def run_first(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with first:
                async with trio.open_nursery() as inner:
                    task_status.started(await start_chat_server(inner, tmp_path))
                    await trio.sleep_forever()

        server = await nursery.start(run_first)
        joined, room = await owner_sets_up(server.url)
        first.cancel()
    # a new server object on the same SQLite file: no token survives, the names do
    async with trio.open_nursery() as nursery:
        server = await start_chat_server(nursery, tmp_path)
        assert server.identities.name_for(joined["token"]) is None
        await attacker_gets_nothing(server.url, room, "restart")
        await owner_gets_everything_back(server.url, joined, room)
        nursery.cancel_scope.cancel()


async def test_after_the_idle_expiry(nursery, tmp_path) -> None:
    clock = FakeClock()
    server = await start_chat_server(nursery, tmp_path, identities=Identities(ttl=3600.0, clock=clock))
    joined, room = await owner_sets_up(server.url)
    clock.now += 3601.0  # alice's token idles past the expiry
    assert server.identities.name_for(joined["token"]) is None
    await attacker_gets_nothing(server.url, room, "idle")
    await owner_gets_everything_back(server.url, joined, room)


async def test_after_mass_joins_evicted_the_token(nursery, tmp_path) -> None:
    server = await start_chat_server(nursery, tmp_path, identities=Identities(max_tokens=50))
    joined, room = await owner_sets_up(server.url)
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        for i in range(120):  # anonymous joins from loopback (trusted: no per-address limit)
            r = await http.post("/api/join", json={"name": f"bot {i}"})
            assert r.status_code == 200
    assert server.identities.name_for(joined["token"]) is None  # evicted
    await attacker_gets_nothing(server.url, room, "mass")
    await owner_gets_everything_back(server.url, joined, room)


async def test_new_names_limited_per_address_over_http(nursery, tmp_path) -> None:
    server = await start_chat_server(nursery, tmp_path, **{
        "limits.trusted_networks": [], "limits.joins_per_second": 0, "limits.names_per_hour": 5})
    for i in range(5):
        assert (await post_join(server.url, f"n{i}")).status_code == 200
    r = await post_join(server.url, "n5")
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 700 and r.json()["retry_after"] > 700


# ------------------------------------------------------------------ one identity, one avatar


async def test_the_python_chat_client_stops_when_a_newer_login_closes_it(nursery, tmp_path) -> None:
    server = await start_chat_server(nursery, tmp_path)
    kim = (await post_join(server.url, "kim")).json()
    async with open_chat(server.url, kim["token"], reconnect=True) as chat:
        assert (await post_join(server.url, "kim", kim["secret"])).status_code == 200
        with trio.fail_after(TIMEOUT):
            await chat._run_done.wait()  # its connect loop ended instead of retrying
        assert (chat.close_code, chat.close_reason) == (CLOSE_REPLACED, "signed in elsewhere")
        assert chat.connects == 1 and not chat.connected



def server_config(tmp_path):
    return load_config(path=None, env={}, overrides={
        "udp.host": "127.0.0.1", "udp.port": "0", "http.host": "127.0.0.1", "http.port": "0",
        "server.stats_interval": "60", "gc.freeze_after_start": "false",
        "server.data_dir": str(tmp_path / "data"), "http.images_dir": str(tmp_path / "images"),
        "http.web_root": str(tmp_path / "dist"), "webrtc.enabled": "false",
    })


class MovementSocket:
    """A native client on ``/ws/movement`` (the trusted HELLO carries the join token), driven
    by hand."""

    def __init__(self, ws, token: str, nonce: int) -> None:
        self.ws = ws
        self.conn = ClientConnection(version=PROTOCOL_VERSION, nonce=nonce, token=token.encode(), trusted=True)
        self.events: list = []

    async def connect(self) -> None:
        await self.ws.send_message(self.conn.connect(trio.current_time()))
        while not any(isinstance(e, Connected) for e in self.events):
            await self.receive()

    async def receive(self) -> None:
        with trio.fail_after(TIMEOUT):
            data = await self.ws.get_message()
        events, replies = self.conn.receive_datagram(bytes(data), trio.current_time())
        self.events += events
        for reply in replies:
            await self.ws.send_message(reply)

    async def wait_disconnected(self) -> str:
        while not any(isinstance(e, Disconnected) for e in self.events):
            await self.receive()
        return next(e.reason for e in self.events if isinstance(e, Disconnected))


async def test_one_identity_one_avatar_and_one_login(nursery, tmp_path) -> None:
    running = await nursery.start(serve, server_config(tmp_path))
    url = f"http://127.0.0.1:{running.http_port}"
    movement = f"ws://127.0.0.1:{running.http_port}/ws/movement"
    kim = (await post_join(url, "kim")).json()
    async with open_websocket_url(movement) as ws1, open_websocket_url(movement) as ws2, \
            open_websocket_url(movement) as ws3, \
            open_websocket_url(f"ws://127.0.0.1:{running.http_port}/ws/chat") as chat:
        # The same token twice: the second avatar replaces the first (the attack had two).
        first = MovementSocket(ws1, kim["token"], 1)
        await first.connect()
        second = MovementSocket(ws2, kim["token"], 2)
        await second.connect()
        assert await first.wait_disconnected() == "replaced"  # not "kicked": nobody kicked kim
        assert [s.name for s in running.sim.sessions] == ["kim"]
        assert running.stats.get("clients.left.replaced") == 1
        # A chat socket with that token, then a second login (the secret): the avatar leaves
        # the world and the chat socket is closed with 4002 "signed in elsewhere".
        await chat.send_message('{"id": 1, "op": "hello", "token": "%s"}' % kim["token"])
        assert '"ok":true' in await chat.get_message()
        again = await post_join(url, "kim", kim["secret"])
        assert again.status_code == 200
        assert await second.wait_disconnected() == "replaced"
        assert [e.text for e in second.events if isinstance(e, Disconnected)] == [""]
        with pytest.raises(ConnectionClosed) as info:
            with trio.fail_after(TIMEOUT):
                while True:
                    await chat.get_message()
        assert info.value.reason.code == CLOSE_REPLACED
        assert info.value.reason.reason == "signed in elsewhere"
        assert [s.name for s in running.sim.sessions] == []
        assert running.stats.get("chat.closed_replaced") == 1
        # the new login works
        third = MovementSocket(ws3, again.json()["token"], 3)
        await third.connect()
        assert [s.name for s in running.sim.sessions] == ["kim"]
