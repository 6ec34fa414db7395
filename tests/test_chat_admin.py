"""The admin-token brute-force guard of the chat service (worldserver.chat.limits), on trio's
autojump clock: a real ChatService on SQLite in a temporary directory, peers on memory channels.

Found by the attack: 5,000 wrong admin tokens on one chat socket in 0.89 s, no delay, no close.
Now: every wrong token is counted (the connection and its address), its answer is held back in
that connection's task only (doubling), the socket is closed at ``chat.admin_max_failures``,
and the address stays locked out across new sockets until failures are forgiven. Must not:
read the wall clock or reach the network. On the autojump clock virtual time also runs on while
the store's worker thread works, so times are only asserted around requests that do not use
the store (every refused one).
"""

from __future__ import annotations

import itertools
import json
import logging

import pytest
import trio

from chat_support import FakeSim, chat_config
from protocol import chat as P
from worldserver.chat.errors import ChatError
from worldserver.chat.limits import CLOSE_ADMIN_FAILURES
from worldserver.chat.peers import Peer
from worldserver.chat.service import ChatService
from worldserver.chat.sqlite_store import SqliteChatStore
from worldserver.identity import Identities
from worldserver.stats import Stats

ADMIN = "admin-secret"  # chat_support.chat_config's chat.admin_token
_identity_numbers = itertools.count(1)


def token_for(identities: Identities, name: str) -> str:
    """A live join token for ``name``, as ``POST /api/join`` would give it."""
    return identities.issue(next(_identity_numbers), name)


class Client:
    """A peer as the gateway makes one, reading its own frames from a memory channel."""

    def __init__(self, chat: ChatService, token: str, address: str) -> None:
        send, self.frames = trio.open_memory_channel(1000)
        self.closed: list[tuple[int, str]] = []
        self.peer = Peer(f"chat:{address}:1#{id(self)}", send, lambda code, reason: self.closed.append((code, reason)),
                         chat.stats)
        self.peer.address = address
        self.token = token
        self.chat = chat
        self.ids = itertools.count(1)
        chat.add_peer(self.peer)

    async def hello(self, admin_token: str) -> dict:
        """Say hello with ``admin_token``; the reply and how long (trio clock) it took."""
        frame = json.dumps({"id": next(self.ids), "op": "hello", "token": self.token, "admin_token": admin_token})
        start = trio.current_time()
        await self.chat.handle(self.peer, P.decode_client_frame(frame))
        reply = json.loads(self.frames.receive_nowait())
        reply["took"] = trio.current_time() - start
        return reply

    async def admin_accepted(self) -> bool:
        """Whether the guard lets the right admin token through for this peer now (the rest of
        a successful hello, which reads the store, is tested through real sockets in
        test_chat_service)."""
        frame = json.dumps({"id": next(self.ids), "op": "hello", "token": self.token, "admin_token": ADMIN})
        try:
            await self.chat._check_admin_token(self.peer, P.decode_client_frame(frame))
        except ChatError as exc:
            assert exc.code == "forbidden"
            return False
        return True


@pytest.fixture
async def chat(nursery, tmp_path):
    config = chat_config(tmp_path, **{"chat.admin_max_failures": 3, "chat.admin_lockout": 300.0,
                                      "chat.admin_failure_delay": 0.5})
    path = tmp_path / "chat.sqlite3"
    service = ChatService(config, lambda: SqliteChatStore(str(path)), sim=FakeSim(),
                          identities=Identities(), stats=Stats())
    await nursery.start(service.run)  # (no deadline: the autojump clock would reach any at once)
    return service


async def test_wrong_tokens_are_delayed_counted_and_close_the_socket(chat, autojump_clock, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="worldserver.chat")
    client = Client(chat, token_for(chat.identities, "guesser"), "203.0.113.7")
    took = []
    for _ in range(3):
        reply = await client.hello("guess")
        assert reply["ok"] is False and reply["error"]["code"] == "forbidden"
        assert reply["error"]["message"] == "wrong admin token"
        took.append(reply["took"])
    assert took == pytest.approx([0.5, 1.0, 2.0])  # doubling, in this connection's task
    assert client.closed == [(CLOSE_ADMIN_FAILURES, "too many wrong admin tokens")]
    assert not client.peer.authenticated and not client.peer.moderator
    stats = chat.stats
    assert stats.get("drop.chat_admin_token_wrong") == 3
    assert stats.get("drop.chat_closed_admin_failures") == 1
    # one log line for the first failure; the others are held back (rate-limited per reason)
    refused = [r for r in caplog.records if r.getMessage() == "admin token refused"]
    assert len(refused) == 1 and refused[0].fields["reason"] == "wrong"


async def test_new_sockets_from_the_address_stay_locked_out(chat, autojump_clock) -> None:
    attacker = "198.51.100.9"
    first = Client(chat, token_for(chat.identities, "mallory"), attacker)
    for _ in range(3):
        await first.hello("guess")
    assert first.closed
    # a new socket from the same address: locked out, even with the right token, and closed
    second = Client(chat, token_for(chat.identities, "mallory2"), attacker)
    reply = await second.hello(ADMIN)
    assert reply["error"]["code"] == "forbidden" and "too many wrong admin tokens" in reply["error"]["message"]
    assert second.closed == [(CLOSE_ADMIN_FAILURES, "too many wrong admin tokens")]
    assert reply["took"] == pytest.approx(0.5)
    assert chat.stats.get("drop.chat_admin_locked_out") == 1
    assert chat.stats.get("drop.chat_admin_token_wrong") == 3  # nothing was compared
    # IPv6: the whole /64 is one address, so rotating addresses inside it does not help
    v6 = [Client(chat, token_for(chat.identities, f"v6-{i}"), f"2001:db8:1:2::{i + 1:x}") for i in range(4)]
    for client in v6[:3]:
        assert (await client.hello("guess"))["error"]["message"] == "wrong admin token"
    assert "too many" in (await v6[3].hello(ADMIN))["error"]["message"]
    assert not await Client(chat, token_for(chat.identities, "mallory-b"), attacker).admin_accepted()
    assert await Client(chat, token_for(chat.identities, "elsewhere"), "192.0.2.2").admin_accepted()
    # one failure is forgiven every admin_lockout / admin_max_failures = 100 s
    await trio.sleep(100.0)
    third = Client(chat, token_for(chat.identities, "mallory3"), attacker)
    assert (await third.hello("guess"))["error"]["message"] == "wrong admin token"
    fourth = Client(chat, token_for(chat.identities, "mallory4"), attacker)
    assert "too many" in (await fourth.hello("guess"))["error"]["message"]
    await trio.sleep(300.0)  # all forgiven: the right token works again from there
    fifth = Client(chat, token_for(chat.identities, "mallory5"), attacker)
    assert await fifth.admin_accepted()
    # another address was never affected
    admin = Client(chat, token_for(chat.identities, "moderator"), "192.0.2.1")
    assert await admin.admin_accepted()
    chat.sweep(trio.current_time() + 1000.0)
    assert len(chat.admin_failures) == 0  # forgiven addresses are forgotten


async def test_parallel_sockets_are_counted_before_any_waits(chat, autojump_clock) -> None:
    """Many sockets guessing at once: each failure counts before its answer is held back, so
    only admin_max_failures tokens are ever compared from one address."""
    clients = [Client(chat, token_for(chat.identities, f"bot{i}"), "203.0.113.50") for i in range(20)]
    replies: list[dict] = []

    async def guess(client: Client, token: str) -> None:
        replies.append(await client.hello(token))

    async with trio.open_nursery() as nursery:
        for i, client in enumerate(clients):
            nursery.start_soon(guess, client, f"guess-{i}")
    assert chat.stats.get("drop.chat_admin_token_wrong") == 3
    assert chat.stats.get("drop.chat_admin_locked_out") == 17
    assert sorted(r["error"]["message"] == "wrong admin token" for r in replies) == [False] * 17 + [True] * 3
    assert sum(bool(c.closed) for c in clients) == 17  # the locked-out ones; the first 3 had one try


async def test_a_waiting_guess_does_not_hold_up_other_connections(chat, autojump_clock) -> None:
    slow = Client(chat, token_for(chat.identities, "slow"), "203.0.113.60")
    await slow.hello("guess")
    await slow.hello("guess")  # the next answer waits 2 s
    other = Client(chat, token_for(chat.identities, "other"), "203.0.113.61")
    done: dict[str, float] = {}
    start = trio.current_time()

    async def run(client: Client, name: str) -> None:
        await client.hello("guess")
        done[name] = trio.current_time() - start

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, slow, "slow")
        await trio.sleep(0.1)
        nursery.start_soon(run, other, "other")
    assert done["slow"] == pytest.approx(2.0)
    assert done["other"] == pytest.approx(0.6)  # its own 0.5 s, not behind the 2 s
