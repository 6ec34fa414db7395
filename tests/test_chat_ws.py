"""The chat WebSocket (worldserver.chat.gateway) with raw frames, and reconnecting with since.

Runs the real HTTP app and chat service (SQLite in a temporary directory) in the test's
nursery and talks to ``/ws/chat`` with trio_websocket: malformed, unknown, binary and
oversized frames get clear answers or closes, abuse closes the socket, a client that does not
read is closed as too slow (and counted), and a reconnect with ``since`` returns exactly what
was missed -- through raw requests and through worldclient.chat_client's automatic reconnect.
Frames queued right before the server closes a socket (a kick) arrive before the close on the
ASGI writer path too, and a peer that does not take them is cut at the close's deadline; those
tests run on trio's MockClock standing still (the test jumps it), with real-time deadlines
(:func:`until`) as the safety net.
Must not: reach any address but 127.0.0.1 or wait without a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import struct
import subprocess
import time

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from chat_support import TIMEOUT, start_chat_server
from worldclient.chat_client import open_chat
from worldserver.chat import gateway
from worldserver.chat import peers as chat_peers
from worldserver.http_app import build_app
from worldserver.http_server import serve_http
from worldserver.chat.peers import CLOSE_KICKED
from worldtools.chat_swarm import client_frame
from wsproto.frame_protocol import FrameProtocol, Opcode


def open_ws(url: str, **kw):
    return open_websocket_url(url, connect_timeout=TIMEOUT, disconnect_timeout=TIMEOUT, **kw)


async def call(ws, frame) -> dict:
    """Send a frame (dict or raw text) and return the first reply (events are skipped)."""
    await ws.send_message(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
    with trio.fail_after(TIMEOUT):
        while True:
            reply = json.loads(await ws.get_message())
            if "ev" not in reply:
                return reply


async def hello(ws, token: str, **fields) -> dict:
    reply = await call(ws, {"id": 1, "op": "hello", "token": token, **fields})
    assert reply["ok"], reply
    return reply


async def closed(ws):
    """Read (and drop) frames until the server closes ``ws``; the close's ``reason`` (with
    ``.code`` and ``.reason``)."""
    with pytest.raises(ConnectionClosed) as info:
        with trio.fail_after(TIMEOUT):
            while True:
                await ws.get_message()
    return info.value.reason


async def within(what: str, afn, *args):
    """``await afn(*args)`` on a MockClock that stands still, where trio's deadlines never pass:
    fails after TIMEOUT real seconds instead (the safety net; nothing waits for it)."""
    outcome: list = []
    give_up = time.monotonic() + TIMEOUT
    async with trio.open_nursery() as nursery:
        async def run() -> None:
            try:
                outcome.append(("value", await afn(*args)))
            except Exception as exc:
                outcome.append(("error", exc))
            nursery.cancel_scope.cancel()

        nursery.start_soon(run)
        while time.monotonic() < give_up:
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
        nursery.cancel_scope.cancel()
    assert outcome, f"timed out waiting for {what}"
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


async def until(predicate) -> None:
    """Let the other tasks run until ``predicate()`` holds (use it with :func:`within`)."""
    while not predicate():
        await trio.testing.wait_all_tasks_blocked(cushion=0.001)


def gateway_tasks() -> list[str]:
    """The tasks now running the chat gateway's code (a socket's endpoint or its writer)."""
    found = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        for frame, _ in task.iter_await_frames():
            if frame.f_code.co_filename == gateway.__file__:
                found.append(frame.f_code.co_name)
                break
        for child in task.child_nurseries:
            stack.extend(child.child_tasks)
    return found


@pytest.fixture(params=["fanout", "asgi"])
async def server(request, nursery, tmp_path):
    """Every test runs on both outbound paths: the fan-out pump and the ASGI writer task."""
    server = await start_chat_server(nursery, tmp_path, fanout=request.param == "fanout")
    yield server
    assert server.stats.get(f"chat.sockets_{request.param}") > 0  # the path was really taken
    other = "asgi" if request.param == "fanout" else "fanout"
    assert server.stats.get(f"chat.sockets_{other}") == 0


@pytest.mark.parametrize(
    "frame, code, words",
    [
        ("not json", "bad_frame", "not valid JSON"),
        ("[1, 2]", "bad_frame", "JSON object"),
        ('{"op": "rooms.list"}', "bad_frame", "missing request id"),
        ('{"id": 5, "op": "fly"}', "unknown_op", "unknown op"),
        ('{"id": 6, "op": "msg.send", "room": 1, "kind": "text"}', "bad_field", "text: required"),
        ('{"id": 7, "op": "msg.send", "room": "lobby", "kind": "text", "text": "x"}', "bad_field", "room"),
        ('{"id": 8, "op": "msg.send", "room": 1, "kind": "shout", "text": "x"}', "bad_field", "kind"),
        ('{"id": 9, "op": "rooms.list", "extra": 1}', "bad_field", "unknown field"),
        ('{"id": 10, "id": 11, "op": "rooms.list"}', "bad_frame", "duplicate key"),
        ('{"id": 12, "op": "msg.send", "room": 1, "kind": "text", "text": "a\\u0000b"}', "bad_field", "control character"),
        ("[" * 16000, "bad_frame", "nested deeper than 32 levels"),  # refused before parsing
    ],
)
async def test_bad_frames_get_errors_and_the_socket_stays(server, frame, code, words) -> None:
    token = await server.join("tester")
    async with open_ws(server.ws_url) as ws:
        await hello(ws, token)
        reply = await call(ws, frame)
        assert reply["ok"] is False and reply["error"]["code"] == code
        assert words in reply["error"]["message"]
        request_id = json.loads(frame).get("id") if frame.startswith("{") else None
        if code not in ("bad_frame",):
            assert reply["re"] == request_id
        # still usable
        reply = await call(ws, {"id": 99, "op": "rooms.list"})
        assert reply["ok"] and reply["re"] == 99
    assert server.stats.get("drop.chat_bad_frame") == 1


async def test_requests_before_hello_and_binary_frames(server) -> None:
    async with open_ws(server.ws_url) as ws:
        reply = await call(ws, {"id": 1, "op": "rooms.list"})
        assert reply["error"]["code"] == "not_authenticated" and reply["re"] == 1
        reply = await call(ws, b"\x00\x01binary")
        assert reply["error"]["code"] == "bad_frame" and "binary" in reply["error"]["message"]
        reply = await call(ws, {"id": 2, "op": "hello", "token": "x" * 32})
        assert reply["error"]["code"] == "not_authenticated"
        await hello(ws, await server.join("late"))
        reply = await call(ws, {"id": 3, "op": "rooms.list"})
        assert reply["ok"]


async def test_oversized_frame_closes_with_1009(server) -> None:
    token = await server.join("big")
    async with open_ws(server.ws_url) as ws:
        await hello(ws, token)
        big = json.dumps({"id": 2, "op": "msg.send", "room": 1, "kind": "text", "text": "가" * 6000})
        assert len(big.encode()) > 16 * 1024
        await ws.send_message(big)
        reason = await closed(ws)
        assert reason.code == 1009 and "too big" in reason.reason
    assert server.stats.get("drop.chat_frame_too_big") == 1
    async with open_ws(server.ws_url) as ws:  # the server is fine
        await hello(ws, token)


async def test_many_bad_frames_close_with_1008(server) -> None:
    async with open_ws(server.ws_url) as ws:
        for i in range(gateway.BAD_FRAME_LIMIT):
            reply = await call(ws, "garbage")
            assert reply["error"]["code"] == "bad_frame"
        await ws.send_message("one too many")
        reason = await closed(ws)
        assert reason.code == 1008 and "bad frames" in reason.reason
    assert server.stats.get("drop.chat_closed_bad_frames") == 1


@pytest.mark.parametrize("fanout", [True, False])
async def test_admin_token_guessing_closes_the_socket_and_locks_the_address(nursery, tmp_path, fanout) -> None:
    """Found by the attack: 5,000 wrong admin tokens on one socket in 0.89 s, no delay, no
    close. Now the socket is closed (1008) at chat.admin_max_failures, and new sockets from the
    address stay locked out, the right token included (the delay is 0 here so that no test
    waits on the wall clock; test_chat_admin checks the delays on trio's mock clock)."""
    server = await start_chat_server(nursery, tmp_path, fanout=fanout, **{
        "chat.admin_failure_delay": 0.0, "chat.admin_max_failures": 3})
    token = await server.join("guesser")
    async with open_ws(server.ws_url) as ws:
        for i in range(1, 3):
            reply = await call(ws, {"id": i, "op": "hello", "token": token, "admin_token": f"guess-{i}"})
            assert reply["error"] == {"code": "forbidden", "message": "wrong admin token"}
        await ws.send_message(json.dumps({"id": 3, "op": "hello", "token": token, "admin_token": "guess-3"}))
        reason = await closed(ws)
        assert reason.code == 1008 and "too many wrong admin tokens" in reason.reason
    async with open_ws(server.ws_url) as ws:  # a new socket does not start afresh
        await ws.send_message(json.dumps({"id": 1, "op": "hello", "token": token, "admin_token": "admin-secret"}))
        with pytest.raises(ConnectionClosed) as info:
            with trio.fail_after(TIMEOUT):
                while True:
                    reply = json.loads(await ws.get_message())
                    assert reply.get("ok") is not True
        assert info.value.reason.code == 1008
    stats = server.stats
    assert stats.get("drop.chat_admin_token_wrong") == 3
    assert stats.get("drop.chat_admin_locked_out") == 1
    assert stats.get("drop.chat_closed_admin_failures") == 2
    async with open_ws(server.ws_url) as ws:  # without an admin token the user is welcome
        await hello(ws, token)


async def test_slow_consumer_is_closed_and_counted(server, monkeypatch) -> None:
    monkeypatch.setattr(gateway, "OUTBOX_LIMIT", 8)
    monkeypatch.setattr(chat_peers, "OUTBOX_LIMIT", 8)
    server.chat.messages.rate = server.chat.messages.burst = 100_000.0
    slow_token, fast_token = await server.join("sloth"), await server.join("hare")
    # message_queue_size=1: trio_websocket stops reading the socket when we do not read
    async with open_ws(server.ws_url, message_queue_size=1) as slow:
        await hello(slow, slow_token)
        async with open_chat(server.url, fast_token) as fast:
            text = "x" * 1900
            with trio.fail_after(30):
                while server.stats.get("drop.chat_too_slow") == 0:
                    await fast.send(fast.public_room, text)
        reason = await closed(slow)
        assert reason.code == 1008 and reason.reason == "too slow"
    assert server.stats.get("drop.chat_frames_unsent") >= 8


async def test_reconnect_with_since_gets_exactly_the_missed(server) -> None:
    server.chat.messages.rate = server.chat.messages.burst = 1000.0
    ta, tb = await server.join("writer"), await server.join("sleeper")
    async with open_chat(server.url, ta) as a:
        lobby = a.public_room
        room = (await a.create_room("side", private=True))["id"]
        await a.invite(room, "sleeper")
        async with open_ws(server.ws_url) as ws:
            await hello(ws, tb)
            await call(ws, {"id": 2, "op": "room.join", "room": room})
            await call(ws, {"id": 3, "op": "msg.send", "room": lobby, "kind": "text", "text": "before"})
            page = await call(ws, {"id": 4, "op": "msg.history", "room": lobby, "limit": 100})
            seen_lobby = page["messages"][-1]["id"]
            page = await call(ws, {"id": 5, "op": "msg.history", "room": room, "limit": 100})
            seen_room = page["messages"][-1]["id"]
        missed_lobby = [(await a.send(lobby, f"lobby {i}"))["id"] for i in range(7)]
        missed_room = [(await a.send(room, f"side {i}"))["id"] for i in range(3)]
        deleted = await a.send(lobby, "oops")
        await a.request("msg.delete", room=lobby, message=deleted["id"])
        async with open_ws(server.ws_url) as ws:
            reply = await hello(ws, tb, since={str(lobby): seen_lobby, str(room): seen_room})
            rooms = {r["id"]: r for r in reply["rooms"]}
            assert [m["id"] for m in rooms[lobby]["messages"]] == missed_lobby
            assert [m["id"] for m in rooms[room]["messages"]] == missed_room
            assert rooms[lobby]["more"] is False
            page = await call(ws, {"id": 2, "op": "msg.since", "room": lobby, "after": seen_lobby, "limit": 3})
            assert [m["id"] for m in page["messages"]] == missed_lobby[:3] and page["more"] is True
            page = await call(ws, {"id": 3, "op": "msg.since", "room": lobby,
                                   "after": missed_lobby[2], "limit": 100})
            assert [m["id"] for m in page["messages"]] == missed_lobby[3:] and page["more"] is False


async def test_client_reconnects_and_replays_the_missed(server) -> None:
    server.chat.messages.rate = server.chat.messages.burst = 1000.0
    ta, tb = await server.join("talker"), await server.join("listener")
    async with open_chat(server.url, ta) as a, open_chat(server.url, tb) as b:
        lobby = a.public_room
        live = [(await a.send(lobby, f"live {i}"))["id"] for i in range(3)]
        got = []
        while len(got) < 3:
            event = await b.next_event()
            if event.name == "message" and event.fields["message"]["author"] == "talker":
                got.append(event.fields["message"]["id"])
        assert got == live
        # the server drops b's socket (as a restart or a network failure would); talk meanwhile
        connects = b.connects
        for peer in list(server.chat.user_peers["listener"]):
            peer.close(1012, "service restart")
        with trio.fail_after(TIMEOUT):
            while b.connected:
                await trio.sleep(0.005)
        missed = [(await a.send(lobby, f"missed {i}"))["id"] for i in range(5)]
        with trio.fail_after(TIMEOUT):
            while b.connects == connects:
                await trio.sleep(0.01)
        after = [(await a.send(lobby, f"after {i}"))["id"] for i in range(2)]
        received = []
        with trio.fail_after(TIMEOUT):
            while len(received) < 7:
                event = await b.next_event()
                if event.name == "message":
                    received.append((event.fields["message"]["id"], event.replayed))
        assert received == [(i, True) for i in missed] + [(i, False) for i in after]
        assert b.replayed == 5


async def test_client_reset_mid_stream_is_dropped_and_others_go_on(server) -> None:
    """A client whose TCP connection is reset while broadcasts flow to it: the server drops
    it (no crash, nothing stuck) and the others keep receiving."""
    server.chat.messages.rate = server.chat.messages.burst = 1000.0
    victim_token, talker_token, listener_token = [await server.join(n) for n in ("resetme", "talk", "listen")]
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(f"GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:  # the 101 first (a blocking socket with a timeout)
        answer += await trio.to_thread.run_sync(raw.recv, 4096)
    assert answer.startswith(b"HTTP/1.1 101")
    raw.sendall(client_frame(1, json.dumps({"id": 1, "op": "hello", "token": victim_token}).encode()))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing from here on
    async with open_chat(server.url, talker_token) as talker, open_chat(server.url, listener_token) as listener:
        lobby = talker.public_room
        with trio.fail_after(TIMEOUT):
            while "resetme" not in server.chat.user_peers:
                await trio.sleep(0.01)
        for i in range(20):
            await talker.send(lobby, f"before {i} " + "x" * 1500)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()  # RST: the server's next write fails
        for i in range(20):
            await talker.send(lobby, f"after {i}")
        got = []
        with trio.fail_after(TIMEOUT):
            while len(got) < 40:
                event = await listener.next_event()
                if event.name == "message":
                    got.append(event.fields["message"]["text"])
        assert got[-1] == "after 19"
        with trio.fail_after(TIMEOUT):
            while "resetme" in server.chat.user_peers:
                await trio.sleep(0.01)
        assert (await talker.send(lobby, "still fine"))["text"] == "still fine"


async def test_unknown_path_and_chat_off(nursery, tmp_path) -> None:
    from chat_support import FakeSim, chat_config
    from worldserver.identity import Identities

    config = chat_config(tmp_path)
    app = build_app(config=config, sim=FakeSim(), identities=Identities())
    port = await nursery.start(serve_http, config, app)
    with pytest.raises(ConnectionRejected):
        async with open_ws(f"ws://127.0.0.1:{port}/ws/chat"):
            pass


async def test_tls_sockets_take_the_asgi_path(nursery, tmp_path) -> None:
    """Over TLS only the TLS stream may write: the fan-out is not used, and chat works."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    server = await start_chat_server(nursery, tmp_path, **{"http.certfile": str(cert), "http.keyfile": str(key)})
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{server.port}", verify=context) as http:
        tokens = [(await http.post("/api/join", json={"name": n})).json()["token"] for n in ("tls-a", "tls-b")]
    url = f"wss://127.0.0.1:{server.port}/ws/chat"
    async with open_ws(url, ssl_context=context) as a, open_ws(url, ssl_context=context) as b:
        lobby = (await hello(a, tokens[0]))["public_room"]
        await hello(b, tokens[1])
        reply = await call(a, {"id": 2, "op": "msg.send", "room": lobby, "kind": "text", "text": "über TLS"})
        assert reply["ok"]
        with trio.fail_after(TIMEOUT):
            while True:
                frame = json.loads(await b.get_message())
                if frame.get("ev") == "message":
                    break
        assert frame["message"]["text"] == "über TLS"
    assert server.stats.get("chat.sockets_asgi") == 2 and server.stats.get("chat.sockets_fanout") == 0


async def test_a_frame_over_the_http_limit_ends_the_socket_at_once(server) -> None:
    """Issue 8: a frame over the HTTP server's WebSocket limit (256 KiB) made hypercorn send a
    close (1009) and wait for the client's answer, telling the chat nothing: a client that never
    answers stayed online until the 60 s read timeout. Now the socket ends at once: the user
    is offline well before that, without the client doing anything more."""
    token = await server.join("huge")
    host, port = "127.0.0.1", server.port
    sock = trio.socket.socket()
    await sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    await sock.send(
        (f"GET /ws/chat HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    )
    answer = b""
    with trio.fail_after(TIMEOUT):
        while b"\r\n\r\n" not in answer:
            answer += await sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 101")
    hello_frame = json.dumps({"id": 1, "op": "hello", "token": token}).encode()
    await sock.send(client_frame(0x1, hello_frame))
    with trio.fail_after(TIMEOUT):
        while "huge" not in server.chat.user_peers:
            await trio.sleep(0.01)
    payload = client_frame(0x1, b"x" * (300 * 1024))
    sent = 0
    with trio.move_on_after(TIMEOUT):  # the server may stop reading once it has closed
        while sent < len(payload):
            sent += await sock.send(payload[sent : sent + 65536])
    with trio.fail_after(TIMEOUT):  # far less than the 60 s read timeout
        while "huge" in server.chat.user_peers:
            await trio.sleep(0.01)
    sock.close()


async def test_frames_queued_before_a_kick_arrive_before_the_close(nursery, tmp_path, mock_clock) -> None:
    """Found by a helper: on the ASGI writer path (TLS, HTTP/2, or no fan-out pump) a close
    cancelled the socket's writer task and dropped the frames still queued, so a kicked player
    did not get its last events (``call.left`` "kicked" and the like) before the close frame;
    the fan-out path sent them. Now the writer sends them first. The clock stands still: a
    client that reads needs no deadline."""
    server = await start_chat_server(nursery, tmp_path, fanout=False)
    token = await server.join("victim")
    sizes = [10, 70_000, 300, 5_000] * 8  # together far more than the socket buffers take
    texts = [json.dumps({"ev": "test.last", "n": i, "pad": "x" * size}) for i, size in enumerate(sizes)]
    got = []

    async def read_until_closed() -> None:
        while True:
            frame = json.loads(await ws.get_message())
            if frame.get("ev") == "test.last":
                got.append(frame["n"])

    async with open_ws(server.ws_url) as ws:
        await hello(ws, token)
        (peer,) = server.chat.user_peers["victim"]
        for text in texts:  # queued by the server right before it closes the socket
            assert peer.send(text)
        assert server.chat.kick_user("victim", "kicked")[0] == 1
        with pytest.raises(ConnectionClosed) as info:
            await within("the last frames and the close", read_until_closed)
        assert (info.value.reason.code, info.value.reason.reason) == (CLOSE_KICKED, "kicked")
    assert got == list(range(len(texts)))
    await within("the socket's task to end", until, lambda: not gateway_tasks())
    assert server.stats.get("chat.sockets_asgi") == 1
    assert server.stats.get("drop.chat_close_unsent") == 0 and server.stats.get("drop.chat_close_aborted") == 0


async def test_a_peer_that_does_not_take_its_last_frames_is_cut_at_the_close_deadline(
        nursery, tmp_path, mock_clock) -> None:
    """The ASGI writer sends what was queued before a close until ``CLOSE_TIMEOUT / 2`` after
    it, then the close frame. hypercorn shields its socket writes from cancellation, so a
    deadline alone would leave a client that reads nothing holding the socket's task for good:
    at ``CLOSE_TIMEOUT`` the connection is cut (counted) and the task ends. What the client got
    is a prefix of the frames, in order."""
    server = await start_chat_server(nursery, tmp_path, fanout=False)
    token = await server.join("deaf")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    await sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    await sock.send(
        (f"GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    answer = b""

    async def read_answer() -> None:
        nonlocal answer
        while b"\r\n\r\n" not in answer:
            answer += await sock.recv(1)  # byte by byte: nothing past the answer is taken
    await within("the 101", read_answer)
    assert answer.startswith(b"HTTP/1.1 101")
    await sock.send(client_frame(0x1, json.dumps({"id": 1, "op": "hello", "token": token}).encode()))
    await within("the hello", until, lambda: server.stats.get("chat.hellos") == 1)
    (peer,) = server.chat.user_peers["deaf"]
    # 2 MB: far more than the socket buffers take from a client with a small window
    texts = [json.dumps({"ev": "test.last", "n": i, "pad": "y" * 2000}) for i in range(1000)]
    for text in texts:
        assert peer.send(text)
    server.chat.kick_user("deaf", "kicked")
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    assert "writer" in gateway_tasks()  # still sending: the kernel's buffers are full
    assert server.stats.get("drop.chat_close_aborted") == 0
    mock_clock.jump(gateway.CLOSE_TIMEOUT + 0.1)
    await within("the socket's task to end", until, lambda: not gateway_tasks())
    assert server.stats.get("drop.chat_close_aborted") == 1
    assert 0 < server.stats.get("drop.chat_close_unsent") < len(texts)

    async def read_to_end() -> bytes:
        data = bytearray()
        while True:
            try:
                chunk = await sock.recv(1 << 16)
            except ConnectionResetError:
                return bytes(data)
            if not chunk:
                return bytes(data)
            data += chunk
    data = await within("the end of the connection", read_to_end)
    sock.close()
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(data)
    frames = list(proto.received_frames())
    assert all(frame.opcode is Opcode.TEXT for frame in frames)  # no close frame after the cut
    whole = [json.loads(f.payload) for f in frames if f.frame_finished]
    assert len(frames) - len(whole) <= 1  # the last one may be cut short
    last = [frame["n"] for frame in whole if frame.get("ev") == "test.last"]
    assert last == list(range(len(last))) and 0 < len(last) < len(texts)
