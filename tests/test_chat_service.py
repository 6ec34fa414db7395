"""Chat service behaviour through the real WebSocket, hypercorn and SQLite (worldserver.chat).

Each test runs the HTTP app with a real ChatService (SQLite in a temporary directory) in its
nursery and talks to it with worldclient.chat_client over 127.0.0.1: rooms and membership,
private rooms, notices, search in Korean and English, rate limits, typing, moderation,
questions, presence and avatars. Tests about time (rate limits, typing expiry, mutes) run on
trio's MockClock, which stands still until the test moves it (``mock_clock.jump``): what the
server refills or expires then depends on the jumps, not on the machine's speed; a request's
round trip serves as the barrier that shows what the server did by then. They use the ASGI
writer path (``fanout=False``): the fan-out pump retries and drains on the clock, which would
wait for a jump. Must not: reach any address but 127.0.0.1 or wait without a deadline.
"""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing

from chat_support import FakeSession, join_identity, start_chat_server
from worldclient.chat_client import ChatRequestError, open_chat
from worldserver.chat import moderation_handlers
from worldserver.chat.peers import CLOSE_KICKED, CLOSE_REPLACED
from worldserver.identity import KICKED
from worldserver.limits import TokenBuckets

ADMIN = "admin-secret"


def is_message(author=None, text=None, room=None):
    def check(event) -> bool:
        if event.name != "message":
            return False
        m = event.fields["message"]
        return ((author is None or m["author"] == author) and (text is None or m.get("text") == text)
                and (room is None or event.fields["room"] == room))
    return check


def named(name, **fields):
    def check(event) -> bool:
        return event.name == name and all(event.fields.get(k) == v for k, v in fields.items())
    return check


async def until(predicate, deadline: float = 10.0) -> None:
    """Let the other tasks run until ``predicate()`` holds: for tests on a MockClock that stands
    still (no sleeps), so the generous deadline is in real seconds."""
    give_up = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < give_up, "condition not reached"
        await trio.testing.wait_all_tasks_blocked(cushion=0.001)


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_chat_server(nursery, tmp_path)


async def test_two_clients_public_and_created_room(server) -> None:
    ta, tb = await server.join("alice"), await server.join("밥")
    async with open_chat(server.url, ta) as a, open_chat(server.url, tb) as b:
        lobby = a.public_room
        assert lobby == b.public_room and a.user == "alice" and b.user == "밥"
        # b's arrival: a room.member event and a stored notice by "server"
        await a.wait_for(named("room.member", room=lobby, user="밥", action="joined"))
        sent = await a.send(lobby, "hello 밥", client_id="a-1")
        got = await b.wait_for(is_message("alice", "hello 밥", lobby))
        assert got.fields["message"]["id"] == sent["id"]
        reply = await b.send(lobby, "안녕 alice")
        got = await a.wait_for(is_message("밥", "안녕 alice", lobby))
        assert got.fields["message"]["id"] == reply["id"] > sent["id"]

        room = await a.create_room("gallery talk", private=False)
        assert room["owner"] == "alice" and room["joined"] and not room["private"]
        joined = await b.join(room["id"])
        assert joined["joined"] is True
        assert [m["text"] for m in joined["messages"]] == ["밥 joined"]
        # the stored notice goes out first, then the membership event
        notice = await a.wait_for(is_message("server", "밥 joined", room["id"]))
        assert notice.fields["message"]["kind"] == "notice"
        await a.wait_for(named("room.member", room=room["id"], user="밥", action="joined"))
        await b.send(room["id"], "nice pictures")
        await a.wait_for(is_message("밥", "nice pictures", room["id"]))
        await a.send(room["id"], "thanks")
        await b.wait_for(is_message("alice", "thanks", room["id"]))
        history, more = await a.history(room["id"])
        assert [m["text"] for m in history] == ["밥 joined", "nice pictures", "thanks"] and not more

        members = await a.members(room["id"])
        assert members == [{"user": "alice", "online": True, "owner": True}, {"user": "밥", "online": True}]
        left = await b.leave(room["id"])
        assert left["left"] is True
        await a.wait_for(is_message("server", "밥 left", room["id"]))
        await a.wait_for(named("room.member", room=room["id"], user="밥", action="left"))
        with pytest.raises(ChatRequestError) as info:
            await b.send(room["id"], "still here?")
        assert info.value.code == "forbidden"
        with pytest.raises(ChatRequestError) as info:
            await b.leave(lobby)
        assert info.value.code == "forbidden"
        # the public room's history holds the server's join notices
        history, _ = await a.history(lobby)
        assert {"alice joined", "밥 joined"} <= {m.get("text") for m in history if m["author"] == "server"}

        listed = await b.rooms()
        assert [r["name"] for r in listed] == ["lobby", "gallery talk"]
        assert listed[0]["public"] and listed[0]["joined"] and not listed[1]["joined"]


async def test_private_room_is_closed_to_the_uninvited(server) -> None:
    ta, tb, tc = await server.join("owner"), await server.join("guest"), await server.join("stranger")
    async with open_chat(server.url, ta) as a, open_chat(server.url, tb) as b, open_chat(server.url, tc) as c:
        room = (await a.create_room("secret", private=True))["id"]
        await a.send(room, "the password is swordfish")
        for op, fields in [("msg.history", {}), ("msg.since", {"after": 0}),
                           ("msg.search", {"query": "swordfish"}), ("room.members", {}),
                           ("room.join", {})]:
            with pytest.raises(ChatRequestError) as info:
                await c.request(op, room=room, **fields)
            assert info.value.code == "forbidden", op
        with pytest.raises(ChatRequestError) as info:
            await c.send(room, "let me in")
        assert info.value.code == "forbidden"
        assert all(r["id"] != room for r in await c.rooms())
        # an invitation opens it
        await a.invite(room, "GUEST")  # names match ignoring case
        invited = await b.wait_for(named("invited"))
        assert invited.fields["room"]["id"] == room and invited.fields["by"] == "owner"
        messages, _ = await b.history(room)
        assert [m["text"] for m in messages] == ["the password is swordfish"]
        await b.join(room)
        await b.send(room, "I am in")
        await a.wait_for(is_message("guest", "I am in", room))
        # nobody but members sees its events
        assert not [e for e in c.pending_events() if e.fields.get("room") == room]
        with pytest.raises(ChatRequestError) as info:
            await c.request("room.invite", room=room, user="stranger")
        assert info.value.code == "forbidden"
        with pytest.raises(ChatRequestError) as info:
            await c.request("room.delete", room=room)
        assert info.value.code == "forbidden"
        with pytest.raises(ChatRequestError) as info:
            await b.request("room.delete", room=room)  # a member, not the owner
        assert info.value.code == "forbidden"
        await a.request("room.delete", room=room)
        await b.wait_for(named("room.deleted", room=room))
        with pytest.raises(ChatRequestError) as info:
            await b.history(room)
        assert info.value.code == "not_found"
        with pytest.raises(ChatRequestError) as info:
            await a.request("room.delete", room=a.public_room)
        assert info.value.code == "forbidden"


async def test_room_names_unique_and_errors(server) -> None:
    async with open_chat(server.url, await server.join("maker")) as a:
        await a.create_room("Photos")
        with pytest.raises(ChatRequestError) as info:
            await a.create_room("photos")
        assert info.value.code == "conflict"
        with pytest.raises(ChatRequestError) as info:
            await a.join(999_999)
        assert info.value.code == "not_found"
        with pytest.raises(ChatRequestError) as info:
            await a.send(a.public_room, "x" * 2001)
        assert info.value.code == "too_long"
        with pytest.raises(ChatRequestError) as info:
            await a.request("hello", token="whatever")
        assert info.value.code == "conflict"


async def test_search_korean_and_english_substrings(server) -> None:
    async with open_chat(server.url, await server.join("searcher"), ) as a:
        lobby = a.public_room
        texts = ["갤러리에서 만나요", "Sunset over the sea is my favourite", "사진 정말 멋지다",
                 "the GALLERY opens at nine", "마지막 갤러리 사진"]
        server.chat.messages.rate = 1000.0
        server.chat.messages.burst = 1000.0
        for text in texts:
            await a.send(lobby, text)

        async def found(query):
            return [m["text"] for m in await a.search(lobby, query)]

        assert await found("갤러리") == ["마지막 갤러리 사진", "갤러리에서 만나요"]  # newest first
        assert await found("러리에") == ["갤러리에서 만나요"]  # a substring inside a word
        assert await found("사진") == ["마지막 갤러리 사진", "사진 정말 멋지다"]  # two syllables
        assert await found("gallery") == ["the GALLERY opens at nine"]
        assert await found("unse") == ["Sunset over the sea is my favourite"]
        assert await found("sea favour") == ["Sunset over the sea is my favourite"]
        assert await found("OR NEAR(") == []
        assert await found("nothing like this") == []


async def test_flood_is_rate_limited_and_others_keep_flowing(nursery, tmp_path, mock_clock) -> None:
    server = await start_chat_server(nursery, tmp_path, fanout=False, **{"chat.rate": "2", "chat.burst": "5"})
    tf, ta, tb = await server.join("flooder"), await server.join("calm"), await server.join("reader")
    async with open_chat(server.url, tf) as f, open_chat(server.url, ta) as a, open_chat(server.url, tb) as b:
        lobby = f.public_room
        limited = []
        accepted = 0
        for i in range(40):  # the clock stands still: no refill during the flood
            try:
                await f.send(lobby, f"spam {i}")
                accepted += 1
            except ChatRequestError as exc:
                limited.append(exc)
        assert accepted == 5  # the burst
        assert len(limited) == 35
        assert all(e.code == "rate_limited" for e in limited)
        assert all(e.retry_after == pytest.approx(0.5) for e in limited)  # one token at 2/s
        # the others are not affected
        await a.send(lobby, "calm message")
        await b.wait_for(is_message("calm", "calm message"))
        # not before retry_after, then exactly one message
        mock_clock.jump(0.4)
        with pytest.raises(ChatRequestError) as info:
            await f.send(lobby, "too early")
        assert info.value.code == "rate_limited" and info.value.retry_after == pytest.approx(0.1)
        mock_clock.jump(0.1)
        await f.send(lobby, "patient now")
        await b.wait_for(is_message("flooder", "patient now"))
        with pytest.raises(ChatRequestError):
            await f.send(lobby, "and again")
        assert server.stats.get("drop.chat_rate_limited") == 37


async def test_typing_throttles_expires_and_is_not_stored(nursery, tmp_path, mock_clock) -> None:
    server = await start_chat_server(nursery, tmp_path, fanout=False, **{"chat.typing_ttl": "0.6"})
    ta, tb = await server.join("typist"), await server.join("watcher")
    async with open_chat(server.url, ta) as a, open_chat(server.url, tb) as b:
        lobby = a.public_room
        assert (await a.typing(lobby)) == {}
        event = await b.wait_for(named("typing", user="typist", active=True))
        assert event.fields["ttl"] == pytest.approx(0.6)
        # more than one per second is ignored
        assert (await a.typing(lobby)) == {"ignored": True}
        assert (await a.typing(lobby)) == {"ignored": True}
        # not renewed: still on before the ttl (b's round trip comes after the server's sweeps
        # of the time jumped over), ended by the first sweep after it
        mock_clock.jump(0.5)
        await b.rooms()
        assert not [e for e in b.pending_events() if e.name == "typing"]
        mock_clock.jump(moderation_handlers.TYPING_POLL)
        event = await b.wait_for(named("typing", user="typist", active=False))
        assert server.stats.get("drop.chat_typing_throttled") == 2
        assert server.stats.get("chat.typing_expired") == 1
        assert not [e for e in b.pending_events() if e.name == "typing"]  # the ignored ones
        # a second after the first it is accepted again, and stopping is sent at once (the clock
        # stands still until the end of the test)
        mock_clock.jump(1.0 - 0.5 - moderation_handlers.TYPING_POLL)
        assert (await a.typing(lobby)) == {}
        await b.wait_for(named("typing", user="typist", active=True))
        await a.typing(lobby, active=False)
        await b.wait_for(named("typing", user="typist", active=False))
        history, _ = await a.history(lobby)
        assert all(m["kind"] == "notice" for m in history)  # nothing of typing is stored
        assert not [e for e in a.pending_events() if e.name == "typing"]  # own typing not echoed


async def test_mute_kick_delete_need_the_admin_token(nursery, tmp_path, mock_clock) -> None:
    server = await start_chat_server(nursery, tmp_path, fanout=False)
    tm, tu, tv = await server.join("mod"), await server.join("user"), await server.join("victim")
    async with open_chat(server.url, tm, admin_token=ADMIN) as mod, open_chat(server.url, tu) as user, \
            open_chat(server.url, tv) as victim:
        assert mod.moderator and not user.moderator
        lobby = mod.public_room
        message = await victim.send(lobby, "something rude")
        for op, fields in [("mod.mute", {"user": "victim", "seconds": 60}), ("mod.kick", {"user": "victim"}),
                           ("msg.delete", {"room": lobby, "message": message["id"]})]:
            with pytest.raises(ChatRequestError) as info:
                await user.request(op, **fields)
            assert info.value.code == "forbidden", op
        await mod.request("msg.delete", room=lobby, message=message["id"])
        deleted = await user.wait_for(named("message.deleted", room=lobby, message=message["id"]))
        assert deleted.fields["by"] == "mod"
        history, _ = await user.history(lobby)
        assert message["id"] not in [m["id"] for m in history]
        # authors may delete their own messages
        own = await user.send(lobby, "typo")
        await user.request("msg.delete", room=lobby, message=own["id"])

        await mod.request("mod.mute", user="victim", seconds=30)
        with pytest.raises(ChatRequestError) as info:
            await victim.send(lobby, "can I talk?")
        assert info.value.code == "muted" and info.value.retry_after == pytest.approx(30)
        mock_clock.jump(29.5)
        with pytest.raises(ChatRequestError) as info:
            await victim.send(lobby, "now?")
        assert info.value.code == "muted" and info.value.retry_after == pytest.approx(0.5)

        reply = await mod.request("mod.kick", user="victim")
        assert reply["closed"] == 1
        await user.wait_for(named("presence", user="victim", online=False))
        await until(lambda: victim.close_code is not None)
        assert (victim.close_code, victim.close_reason) == (CLOSE_KICKED, "removed by a moderator; banned for 60 s")
        # a kicked user is logged out (its token was released: worldserver/moderation.py) and
        # cannot come straight back: its name is refused for a while
        with pytest.raises(ChatRequestError) as info:
            async with open_chat(server.url, tv, reconnect=False):
                pass
        assert info.value.code == "not_authenticated"
        async with server.http() as http:
            again = await http.post("/api/join", json={"name": "victim"})
        assert again.status_code == 403 and again.json()["code"] == "banned"
        assert int(again.headers["Retry-After"]) == 60
        # the client (made to reconnect) does not try again after a kick: its token is dead
        await trio.testing.wait_all_tasks_blocked(cushion=0.001)
        mock_clock.jump(10)  # past any backoff
        await trio.testing.wait_all_tasks_blocked(cushion=0.001)
        assert victim._run_done.is_set() and (victim.connects, victim.disconnects) == (1, 1)


async def test_a_socket_ended_by_its_released_token_is_told_it_was_kicked_or_replaced(server, monkeypatch) -> None:
    """SPEC 7.8: a chat socket whose join token a kick releases closes with 4001 and what the
    kicked player is told, as the kick's own close of the player's sockets says it, never a
    bare "kicked"; one whose player logged in again, 4002 "signed in elsewhere"."""
    tk, first = await server.join("kicked-by-token"), await join_identity(server.url, "renewed")
    async with open_chat(server.url, tk) as kicked, open_chat(server.url, first["token"]) as renewed:
        # the kick's chat step misses this socket (kick_user closes nothing here), so it ends
        # only when the kick releases the token its avatar holds
        monkeypatch.setattr(server.chat, "kick_user", lambda user, reason: (0, set()))
        server.sim.sessions.append(FakeSession(tk, "kicked-by-token", 65537))
        result = server.chat.moderation.kick("kicked-by-token", reason="flooding", ban=600, now=trio.current_time())
        assert result is not None
        await until(lambda: kicked.close_code is not None)
        assert (kicked.close_code, kicked.close_reason) == (CLOSE_KICKED, "removed by the operator: flooding; "
                                                                           "banned for 10 min")
        assert server.chat.moderation.kick_text == ""  # only while the kick runs
        await join_identity(server.url, "renewed", first["secret"])  # a newer login of the same player
        await until(lambda: renewed.close_code is not None)
        assert (renewed.close_code, renewed.close_reason) == (CLOSE_REPLACED, "signed in elsewhere")
    assert server.stats.get("chat.closed_kicked") == 1 and server.stats.get("chat.closed_replaced") == 1
    # a token released for a kick outside Moderation.kick (none is): the generic kick line
    tl = await server.join("late")
    async with open_chat(server.url, tl) as late:
        assert server.identities.release(tl, KICKED) == 1
        await until(lambda: late.close_code is not None)
        assert (late.close_code, late.close_reason) == (CLOSE_KICKED, "removed by the operator")


async def test_wrong_admin_token_is_refused(server) -> None:
    token = await server.join("pretender")
    with pytest.raises(ChatRequestError) as info:
        async with open_chat(server.url, token, admin_token="guess", reconnect=False):
            pass
    assert info.value.code == "forbidden"
    with pytest.raises(ChatRequestError) as info:
        async with open_chat(server.url, "not-a-token", reconnect=False):
            pass
    assert info.value.code == "not_authenticated"


async def test_questions_and_notices_by_owner_or_moderator(server) -> None:
    to, tm, tu = await server.join("host"), await server.join("moder"), await server.join("asker")
    async with open_chat(server.url, to) as owner, open_chat(server.url, tm, admin_token=ADMIN) as mod, \
            open_chat(server.url, tu) as asker:
        room = (await owner.create_room("q and a"))["id"]
        await asker.join(room)
        await mod.join(room)
        q1 = await asker.send(room, "when does it open?", kind="question")
        q2 = await asker.send(room, "is it free?", kind="question")
        assert q1["answered"] is False and q1["kind"] == "question"
        text = await asker.send(room, "plain text")
        with pytest.raises(ChatRequestError) as info:
            await asker.request("msg.answer", room=room, message=q1["id"])
        assert info.value.code == "forbidden"
        await owner.request("msg.answer", room=room, message=q1["id"])
        event = await asker.wait_for(named("message.answered", room=room, message=q1["id"]))
        assert event.fields["by"] == "host"
        with pytest.raises(ChatRequestError) as info:
            await mod.request("msg.answer", room=room, message=q1["id"])
        assert info.value.code == "conflict"  # already answered
        await mod.request("msg.answer", room=room, message=q2["id"])
        with pytest.raises(ChatRequestError) as info:
            await owner.request("msg.answer", room=room, message=text["id"])
        assert info.value.code == "conflict"
        history, _ = await asker.history(room)
        answered = {m["id"]: m.get("answered") for m in history if m["kind"] == "question"}
        assert answered == {q1["id"]: True, q2["id"]: True}

        with pytest.raises(ChatRequestError) as info:
            await asker.send(room, "I declare", kind="notice")
        assert info.value.code == "forbidden"
        await owner.send(room, "Opening at nine", kind="notice")
        await mod.send(room, "Be nice", kind="notice")
        got = await asker.wait_for(is_message("moder", "Be nice", room))
        assert got.fields["message"]["kind"] == "notice"
        # the public room belongs to the server: only moderators post notices there
        with pytest.raises(ChatRequestError) as info:
            await owner.send(owner.public_room, "lobby notice", kind="notice")
        assert info.value.code == "forbidden"
        await mod.send(mod.public_room, "lobby notice", kind="notice")


async def test_presence_members_and_avatar_entity(server) -> None:
    ta, tb = await server.join("walker"), await server.join("chatter")
    server.sim.sessions.append(FakeSession(ta, "walker", 65537))  # walker is in the world
    async with open_chat(server.url, tb) as b:
        lobby = b.public_room
        async with open_chat(server.url, ta) as a:
            assert a.hello["entity_id"] == 65537 and b.hello["entity_id"] is None
            await b.wait_for(named("presence", user="walker", online=True))
            sent = await a.send(lobby, "I am by the window")
            assert sent["entity_id"] == 65537
            got = await b.wait_for(is_message("walker", "I am by the window"))
            assert got.fields["message"]["entity_id"] == 65537
            members = {m["user"]: m for m in await b.members(lobby)}
            assert members["walker"] == {"user": "walker", "online": True, "entity_id": 65537}
            assert members["chatter"] == {"user": "chatter", "online": True}
            history, _ = await b.history(lobby)
            assert [m.get("entity_id") for m in history if m["author"] == "walker"] == [65537]
        await b.wait_for(named("presence", user="walker", online=False))
        members = {m["user"]: m for m in await b.members(lobby)}
        assert members["walker"]["online"] is False
        assert server.identities.name_for(ta) == "walker"


async def test_presence_goes_only_through_rooms_within_the_limit(server, monkeypatch) -> None:
    """A crowded room carries no presence events (room.members still says who is online);
    members who also share a small room hear it there."""
    from worldserver.chat import rooms as chat_rooms

    monkeypatch.setattr(chat_rooms, "PRESENCE_ROOM_LIMIT", 2)
    ta, tb, tc, td = [await server.join(n) for n in ("arriver", "friend", "crowd", "more")]
    async with open_chat(server.url, ta) as a:
        side = (await a.create_room("pair", private=True))["id"]
        await a.invite(side, "friend")
    async with open_chat(server.url, tb) as b, open_chat(server.url, tc) as c, open_chat(server.url, td):
        await b.join(side)
        async with open_chat(server.url, ta):  # the lobby holds 4 sockets now, the pair room 2
            await b.wait_for(named("presence", user="arriver", online=True))
            members = {m["user"]: m["online"] for m in await c.members(c.public_room)}
            assert members["arriver"] is True
        await b.wait_for(named("presence", user="arriver", online=False))
        await b.typing(b.public_room)  # a marker: what the server sent c before it has arrived
        seen = []
        while not named("typing", user="friend")(event := await c.next_event()):
            seen.append(event)
        assert not [e for e in seen if named("presence", user="arriver")(e)]
    assert server.stats.get("chat.presence_skipped_rooms") >= 2


async def test_history_pages_and_since(server) -> None:
    server.chat.messages.rate = 1000.0
    server.chat.messages.burst = 1000.0
    async with open_chat(server.url, await server.join("pager")) as a:
        lobby = a.public_room
        ids = [(await a.send(lobby, f"m{i}"))["id"] for i in range(25)]
        page, more = await a.history(lobby, limit=10)
        assert [m["text"] for m in page] == [f"m{i}" for i in range(15, 25)] and more
        page, more = await a.history(lobby, before=page[0]["id"], limit=10)
        assert [m["text"] for m in page] == [f"m{i}" for i in range(5, 15)] and more
        page, more = await a.history(lobby, before=page[0]["id"], limit=10)
        assert [m["text"] for m in page] == ["pager joined"] + [f"m{i}" for i in range(5)] and not more
        page, more = await a.since(lobby, ids[9], limit=10)
        assert [m["id"] for m in page] == ids[10:20] and more
        page, more = await a.since(lobby, ids[19], limit=10)
        assert [m["id"] for m in page] == ids[20:] and not more


async def test_idempotent_client_id(server) -> None:
    async with open_chat(server.url, await server.join("retrier")) as a:
        first = await a.send(a.public_room, "once", client_id="x-1")
        again = await a.send(a.public_room, "once", client_id="x-1")
        assert again["id"] == first["id"]
        history, _ = await a.history(a.public_room)
        assert [m["text"] for m in history].count("once") == 1


def test_token_buckets() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("u", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("u", 0.0) == pytest.approx(0.5)
    assert buckets.take("u", 0.25) == pytest.approx(0.25)
    assert buckets.take("u", 0.5) == 0.0
    assert buckets.take("other", 0.5) == 0.0
    buckets.sweep(10.0)
    assert len(buckets) == 0
