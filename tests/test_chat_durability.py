"""Chat durability with a real ``worldserver run`` process: restarts and ``kill -9``.

A restarted server (same ``server.data_dir``) has the rooms, memberships and history of the
one before; a server killed with SIGKILL while 20 clients send has, after a restart, every
message that was acknowledged to its sender (acknowledged means committed). Tokens are not
kept across restarts, so the players join again under the same names. Must not: reach any
address but 127.0.0.1, leave a process running, or wait without a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import trio

from chat_support import ROOT, drain_stderr, join, join_identity, start_server_process, wait_http_port, wait_ports
from worldclient.chat_client import ChatDisconnected, ChatRequestError, open_chat

pytestmark = pytest.mark.slow


async def start(data_dir, *extra) -> tuple[subprocess.Popen, str]:
    proc = start_server_process(data_dir, *extra)
    try:
        port = await wait_http_port(proc)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    drain_stderr(proc)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


async def swarm_against_a_server(data_dir, *args: str) -> subprocess.CompletedProcess:
    """``worldserver swarm --server ... --http ... *args`` against a real ``worldserver run`` on
    ``data_dir``, which is stopped after and must exit cleanly (status 0)."""
    proc = start_server_process(data_dir)
    try:
        http_port, udp_port = await wait_ports(proc)
        drain_stderr(proc)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "clients", "python")]))
        return await trio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, "-m", "worldserver", "swarm", "--server", f"127.0.0.1:{udp_port}",
             "--http", f"http://127.0.0.1:{http_port}", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120))
    finally:
        assert stop(proc) == 0


async def all_messages(chat, room: int) -> list[dict]:
    out, after = [], 0
    while True:
        page, more = await chat.since(room, after, limit=500)
        out.extend(page)
        if not more:
            return out
        after = page[-1]["id"]


async def test_restart_keeps_rooms_and_history(tmp_path) -> None:
    data = tmp_path / "data"
    proc, url = await start(data)
    try:
        keeper = await join_identity(url, "keeper")
        visitor = await join_identity(url, "visitor")
        async with open_chat(url, keeper["token"]) as a, open_chat(url, visitor["token"]) as b:
            lobby = a.public_room
            room = (await a.create_room("Archive 기록", private=True))["id"]
            await a.invite(room, "visitor")
            await b.join(room)
            await a.send(lobby, "hello lobby")
            await a.send(room, "비밀 기록", client_id="k-1")
            question = await b.send(room, "what is kept?", kind="question")
            await a.request("msg.answer", room=room, message=question["id"])
            before_lobby = await all_messages(a, lobby)
            before_room = await all_messages(a, room)
    finally:
        assert stop(proc) == 0
    proc, url = await start(data)
    try:
        # the names are still theirs: they come back with their secrets
        async with open_chat(url, await join(url, "visitor", visitor["secret"])) as b, \
                open_chat(url, await join(url, "stranger")) as c:
            rooms = {r["name"]: r for r in await b.rooms()}
            assert rooms["Archive 기록"]["id"] == room and rooms["Archive 기록"]["joined"]
            assert rooms["Archive 기록"]["owner"] == "keeper" and rooms["Archive 기록"]["private"]
            assert b.public_room == lobby
            # the shutdown notice goes to every room that still had a socket when SIGTERM came;
            # whether the test's closed sockets were gone by then is the machine's timing
            room_now = await all_messages(b, room)
            assert room_now[: len(before_room)] == before_room
            assert all(m["author"] == "server" and m["text"].startswith("The server is shutting down")
                       for m in room_now[len(before_room):]), room_now[len(before_room):]
            lobby_now = await all_messages(b, lobby)
            assert lobby_now[: len(before_lobby)] == before_lobby
            # SIGTERM drains: the server's notice that it is going down, then the new member
            new = [m["text"] for m in lobby_now[len(before_lobby):]]
            assert new[-1:] == ["stranger joined"], new
            assert all(text.startswith("The server is shutting down") for text in new[:-1]), new
            assert [m["text"] for m in await b.search(room, "기록")] == ["비밀 기록"]
            assert [m.get("answered") for m in before_room if m["kind"] == "question"] == [True]
            with pytest.raises(ChatRequestError) as info:
                await c.history(room)
            assert info.value.code == "forbidden"
            # the idempotency key survives too
            async with open_chat(url, await join(url, "keeper", keeper["secret"])) as a:
                again = await a.send(room, "비밀 기록", client_id="k-1")
                assert again["id"] == before_room[1]["id"]
    finally:
        assert stop(proc) == 0


async def test_kill_9_loses_no_acknowledged_message(tmp_path) -> None:
    data = tmp_path / "data"
    proc, url = await start(data, "--set", "chat.rate=10000", "--set", "chat.burst=10000")
    acked: dict[int, tuple[str, str]] = {}  # id -> (author, text)
    attempted = 0
    try:
        tokens = [await join(url, f"sender{i}") for i in range(20)]
        ready = trio.Event()
        connected = 0

        async def sender(i: int) -> None:
            nonlocal attempted, connected
            try:
                async with open_chat(url, tokens[i], reconnect=False, timeout=5) as chat:
                    connected += 1
                    if connected == 20:
                        ready.set()
                    await ready.wait()
                    n = 0
                    while True:
                        text = f"sender{i} message {n}"
                        attempted += 1
                        message = await chat.send(chat.public_room, text, client_id=f"{i}-{n}", timeout=5)
                        acked[message["id"]] = (f"sender{i}", text)
                        n += 1
            except (ChatDisconnected, ChatRequestError, trio.TooSlowError, OSError):
                return

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(sender, i)
                await ready.wait()
                while len(acked) < 300:
                    await trio.sleep(0.01)
                proc.send_signal(signal.SIGKILL)
                await trio.to_thread.run_sync(proc.wait, 10)
    finally:
        stop(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 300 and attempted >= len(acked)
    proc, url = await start(data)
    try:
        async with open_chat(url, await join(url, "auditor")) as chat:
            stored = {m["id"]: (m["author"], m["text"]) for m in await all_messages(chat, chat.public_room)}
    finally:
        assert stop(proc) == 0
    missing = {i: v for i, v in acked.items() if stored.get(i) != v}
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {list(missing.items())[:3]}"


def test_chat_swarm_measures_delivery(tmp_path) -> None:
    """The chat swarm tool (tools/chat_swarm.py) against a real server: every delivery counted."""
    from worldtools import chat_swarm

    proc = start_server_process(tmp_path / "data")
    try:
        port = trio.run(wait_http_port, proc)
        drain_stderr(proc)
        report = chat_swarm.run_chat_swarm(
            f"http://127.0.0.1:{port}", 24, 1.0, 3.0, senders=6, processes=2, settle=0.5,
            server_pid=proc.pid, seed=7, prejoin=True,
        )
    finally:
        assert stop(proc) == 0
    assert report["ready"] == 24 and report["members"] == 24 and not report["errors"] and not report["closed"]
    assert report["acked"] >= 12 and report["deliveries_expected"] == report["acked"] * 23
    # counted per message: every acknowledged message reached each of the 23 others, once
    assert report["deliveries"] == report["deliveries_expected"] and report["deliveries_missing"] == 0
    assert report["deliveries_duplicate"] == 0 and report["messages_incomplete"] == 0
    assert report["unanswered"] == 0 and report["sent"] == report["acked"] + sum(report["refused"].values())
    assert report["duration_s"] == 3.0 and report["setup_s"] > 0.5  # joins, connections, settling
    assert 0 < report["delivery_ms_p50"] <= report["delivery_ms_p99"] < 2000
    assert report["server_cpu_percent"] is not None and report["ok"]


async def test_swarm_chat_rate_adds_chat_delivery_to_the_report(tmp_path) -> None:
    """``worldserver swarm --chat-rate``: bots move over UDP and chat at the same time."""
    swarm = await swarm_against_a_server(tmp_path / "data", "--bots", "8", "--observers", "2", "--duration", "2",
                                         "--chat-rate", "1", "--seed", "3", "--json")
    assert swarm.returncode == 0, swarm.stderr[-2000:]
    assert "swarm t=" not in swarm.stderr and "chat  t=" not in swarm.stderr  # --json: no progress lines
    report = json.loads(swarm.stdout.strip().splitlines()[-1])
    # snapshots arrived; how many a second is the machine's figure (a loaded 2-core machine
    # gave 4-6.5), not this test's
    assert report["connected"] == 8 and report["snapshots_per_bot_s"] > 0
    chat = report["chat"]
    assert chat["ready"] == 8 and chat["senders"] == 8 and chat["acked"] >= 8
    assert chat["deliveries"] == chat["deliveries_expected"] == chat["acked"] * 7
    assert chat["deliveries_missing"] == 0 and chat["deliveries_duplicate"] == 0
    assert 0 < chat["delivery_ms_p50"] <= chat["delivery_ms_p99"]
    # --duration 2 is the measured window of both halves (it was the whole run), after set-ups
    # that both reported: the movement started measuring when the chat's window opened
    assert chat["duration_s"] == 2.0 and 2.0 <= report["duration_s"] < 2.0 + chat["setup_s"]
    assert report["setup_s"] > 0 and chat["setup_s"] > 0
    assert report["ok"] and chat["ok"]


async def test_swarm_refuses_a_chat_rate_above_the_servers_limit(tmp_path) -> None:
    """``--chat-rate`` above ``chat.rate`` (here 2, the default) is refused before any bot starts."""
    swarm = await swarm_against_a_server(tmp_path / "data", "--bots", "4", "--duration", "30", "--chat-rate", "2.5")
    assert swarm.returncode == 2
    assert swarm.stderr.strip() == (
        "error: --chat-rate: 2.5 messages per second per bot is above the server's chat limit of 2 per"
        " user (chat.rate; chat.burst = 10): send less, or raise the server's chat.rate")
    assert swarm.stdout == ""  # no report: nothing ran
