"""Request bodies: the one reader, ``worldserver.http_common.read_body``, and the routes that
read theirs with it (the admin API, chat image uploads, pictures hung through the admin API).

The reader's limits are tested on a real Starlette ``Request`` whose ASGI ``receive`` is fed
from a trio channel, under trio's autojump clock: the deadlines are the configured ones to the
tick, whatever the machine. The routes are tested against in-process servers over loopback
sockets, with raw HTTP/1.1 where a client must send part of a body and stop or go away; their
deadline is lowered (a client that never sends the rest gets the 408 however fast the machine).
Nothing sleeps for a time: waits are for conditions under a deadline.
"""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest
import trio
from PIL import Image
from starlette.requests import Request

from test_admin import DEADLINE, TOKEN, Served, api, make_config, until
from worldclient.join import join
from worldserver import http_common
from worldserver.app import serve
from worldserver.chat import gateway
from worldserver.http_common import BODY_TIMEOUT, DRAIN_LIMIT, BodyError, read_body
from worldserver.stats import Stats

HOST = "127.0.0.1"


# -- the reader ----------------------------------------------------------------------------------


class Body:
    """An ASGI ``receive`` for one request: what the test puts in, counting what was taken."""

    def __init__(self) -> None:
        self.send, self._receive = trio.open_memory_channel(100)
        self.taken = 0

    def put(self, chunk: bytes, more: bool = True) -> None:
        self.send.send_nowait({"type": "http.request", "body": chunk, "more_body": more})

    def disconnect(self) -> None:
        self.send.send_nowait({"type": "http.disconnect"})

    async def receive(self) -> dict:
        message = await self._receive.receive()
        self.taken += 1
        return message

    def left(self) -> int:
        return self._receive.statistics().current_buffer_used


def request(body: Body, length: int | str | None = None) -> Request:
    headers = [(b"content-length", str(length).encode())] if length is not None else []
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}
    return Request(scope, body.receive)


async def refused(req: Request, *args, **kwargs) -> BodyError:
    with pytest.raises(BodyError) as info:
        await read_body(req, *args, **kwargs)
    return info.value


async def test_a_body_within_the_limit_is_read_whole(autojump_clock) -> None:
    body = Body()
    for chunk in (b"abc", b"def"):
        body.put(chunk)
    body.put(b"g", more=False)
    assert await read_body(request(body, 7), limit=7) == b"abcdefg"
    body = Body()
    body.put(b"x" * 7, more=False)  # no Content-Length (chunked): counted as it comes
    assert await read_body(request(body), limit=7) == b"x" * 7


async def test_a_slow_body_is_a_408_at_its_deadline(autojump_clock) -> None:
    for timeout, waited in ((None, BODY_TIMEOUT), (30.0, 30.0), (0.5, 0.5)):
        body = Body()
        body.put(b'{"text": ')  # and never the rest
        start = trio.current_time()
        error = await refused(request(body, 100), 1000, timeout=timeout)
        assert (error.status, error.code) == (408, "timeout")
        assert trio.current_time() - start == pytest.approx(waited)


async def test_a_declared_too_large_body_is_read_and_dropped_before_the_413(autojump_clock) -> None:
    body = Body()
    for _ in range(3):
        body.put(b"x" * 1000)
    body.put(b"", more=False)
    error = await refused(request(body, 3000), 1000, drain_limit=4000)
    assert (error.status, error.code) == (413, "too_large")
    assert body.left() == 0 and body.taken == 4  # all of it read (so that the client sees the 413)
    # larger than the drain limit: refused at once, nothing read
    body = Body()
    body.put(b"x" * 1000)
    error = await refused(request(body, DRAIN_LIMIT + 1), 1000)
    assert error.status == 413 and body.taken == 0
    # one that never comes is dropped at the deadline, and still a 413
    body = Body()
    body.put(b"x" * 1000)
    start = trio.current_time()
    error = await refused(request(body, 3000), 1000, timeout=5.0)
    assert error.status == 413 and trio.current_time() - start == pytest.approx(5.0)


async def test_a_streamed_body_is_stopped_past_the_limit(autojump_clock) -> None:
    body = Body()
    for _ in range(5):
        body.put(b"x" * 600)
    error = await refused(request(body), 1000)
    assert error.status == 413 and body.taken == 2  # not a byte more than needed


async def test_a_bad_content_length_is_a_400(autojump_clock) -> None:
    for length in ("twelve", "-1", "1e3"):
        body = Body()
        body.put(b"x", more=False)
        error = await refused(request(body, length), 1000)
        assert (error.status, error.code) == (400, "bad_request") and body.taken == 0


async def test_a_client_that_goes_away_is_a_counted_400(autojump_clock) -> None:
    stats = Stats()
    for with_stats in (stats, None):
        body = Body()
        body.put(b'{"te')
        body.disconnect()
        error = await refused(request(body, 100), 1000, stats=with_stats)
        assert error.status == 400
    assert stats.get("drop.http_client_disconnect") == 1


# -- the routes ----------------------------------------------------------------------------------


@pytest.fixture
async def server(nursery, tmp_path):
    config = make_config(tmp_path, **{"worlds.hosted": '["gallery"]', "chat.max_image_bytes": "50000"})
    return Served(await nursery.start(serve, config))


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (20, 160, 90)).save(out, "PNG")
    return out.getvalue()


async def routes(served: Served) -> dict[str, tuple[str, str, dict]]:
    """name -> (method, path, headers) of the routes with a body that this test cuts short."""
    joined = await join(served.url, "painter")
    admin = {"Authorization": f"Bearer {TOKEN}"}
    return {
        "admin": ("POST", "/admin/api/notice", admin),
        "chat_image": ("POST", "/api/chat/images", {"Authorization": f"Bearer {joined.token}"}),
        "hung_picture": ("PUT", "/admin/api/worlds/gallery/pictures/north-1", admin),
    }


def head(method: str, path: str, headers: dict, length: int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Content-Length: {length}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def answer_to(port: int, data: bytes) -> tuple[int, dict]:
    """Sends ``data`` (a request whose body is cut short) and reads the answer: (status, JSON)."""
    with trio.fail_after(DEADLINE):
        async with await trio.open_tcp_stream(HOST, port) as stream:
            await stream.send_all(data)
            received = b""
            while True:
                top, _, rest = received.partition(b"\r\n\r\n")
                if _:
                    fields = dict(line.split(b": ", 1) for line in top.split(b"\r\n")[1:])
                    if len(rest) >= int(fields[b"content-length"]):
                        return int(top.split(b" ")[1]), json.loads(rest)
                chunk = await stream.receive_some(65536)
                assert chunk, f"the connection closed without a whole answer: {received!r}"
                received += chunk


async def test_a_slow_body_is_a_408_on_every_route(server, monkeypatch) -> None:
    """The admin API's bodies have the JSON routes' deadline (http_common.BODY_TIMEOUT), uploads
    their own (gateway.BODY_TIMEOUT); lowered here, they answer 408 with the route's message."""
    monkeypatch.setattr(http_common, "BODY_TIMEOUT", 0.2)
    monkeypatch.setattr(gateway, "BODY_TIMEOUT", 0.2)
    expected = {
        "admin": {"error": "the body did not come in time", "code": "timeout"},
        "chat_image": {"error": "the upload took too long", "code": "timeout"},
        "hung_picture": {"error": "the upload took too long", "code": "timeout"},
    }
    for name, (method, path, headers) in (await routes(server)).items():
        partial = b'{"text": "' if name == "admin" else png()[:20]
        status, body = await answer_to(server.running.http_port, head(method, path, headers, 1000) + partial)
        assert (status, body) == (408, expected[name]), name
    assert server.stats.get("drop.chat_image_rejected") == 1
    assert server.stats.get("drop.world_picture_rejected") == 1
    async with api(server.url) as http:  # the server goes on
        assert (await http.get("/admin/api/status")).status_code == 200


async def test_a_client_that_goes_away_mid_body_is_counted_on_every_route(server, caplog) -> None:
    """The admin API let the ClientDisconnect escape its handler; now every route counts it."""
    caplog.set_level(logging.INFO)
    cut = await routes(server)
    for number, (name, (method, path, headers)) in enumerate(cut.items(), 1):
        with trio.fail_after(DEADLINE):
            async with await trio.open_tcp_stream(HOST, server.running.http_port) as stream:
                await stream.send_all(head(method, path, headers, 1000) + b"\x89PNG\r\n")
        await until(lambda: server.stats.get("drop.http_client_disconnect") >= number, f"{name}'s drop")
    assert server.stats.get("drop.http_client_disconnect") == len(cut)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    async with api(server.url) as http:
        assert (await http.get("/admin/api/status")).status_code == 200


async def test_admin_bodies_too_large_or_not_a_json_object(server) -> None:
    stats = server.stats
    async with api(server.url) as http:
        answer = await http.post("/admin/api/notice", content=b'{"text": "' + b"x" * 20000 + b'"}')
        assert (answer.status_code, answer.json()) == (
            413, {"error": "the body is larger than 16384 bytes", "code": "too_large"})
        # past the drain limit: refused without reading it (the connection may end before the
        # whole body is sent; the next request is answered)
        try:
            answer = await http.post("/admin/api/notice", content=bytes(2 * DRAIN_LIMIT))
            assert answer.status_code == 413
        except httpx.TransportError:
            pass
        assert (await http.get("/admin/api/status")).status_code == 200
        refusals = {
            b'{"text": ': ("invalid", "the body must be a JSON object: "),
            b"[" * 5000: ("too_deep", "the body must be a JSON object: the JSON is nested deeper than 32 levels"),
            b'["a notice"]': (None, "the body must be a JSON object"),
        }
        for content, (reason, message) in refusals.items():
            answer = await http.post("/admin/api/notice", content=content)
            assert answer.status_code == 400 and answer.json()["code"] == "bad_json"
            assert answer.json()["error"].startswith(message)
            if reason is not None:  # counted as the other JSON bodies' refusals are
                assert stats.get(f"drop.http_json.{reason}") == 1
        empty = await http.post("/admin/api/notice", content=b"  ")  # {}: the notice has no text
        assert empty.status_code == 400 and empty.json()["code"] == "bad_field"
