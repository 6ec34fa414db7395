"""Tests of the HTTP port (worldserver.http_app and the modules it routes to: http_static,
rtc_signaling, ws_movement; served by http_server) through a real hypercorn on 127.0.0.1.

Each test starts ``serve_http`` on port 0 in the test's nursery and talks to it with httpx
(HTTP) and trio_websocket (``/ws/movement``). The WebRTC and stream services are small fakes
that record their calls: these tests check routing, status codes, headers and the WebSocket
glue, not WebRTC. Also covers worldserver.sample_images.

Must not: reach any address but 127.0.0.1, leave a server running after its test, or wait
without a deadline.
"""

from __future__ import annotations

import logging
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import h2.config
import h2.connection
import h11
import httpx
import numpy as np
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from worldserver import http_server, rtc_signaling
from worldserver.http_guard import open_connections
from worldserver.accounts import Accounts
from worldserver.chat.service import ChatService
from worldserver.config import Config
from worldserver.http_app import build_app
from worldserver.http_server import hypercorn_config, serve_http
from worldserver.http_static import image_title
from worldserver.identity import Identities
from worldserver.rtc_signaling import GECKOS_CORS_HEADERS, make_authorize
from worldserver.sample_images import SAMPLES, encode_png, ensure_sample_images, has_images
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.ws_movement import MAX_WS_MESSAGE, WS_FIFO_LIMIT, WsOutbox

TIMEOUT = 10.0  # seconds any single test step may take
KNOWN_ID = "Ab3dE6gH9jK2mN5pQ8sT1vWx"
OTHER_ID = "Zz9yX8wV7uT6sR5qP4oN3mLk"
ORIGIN = "https://gallery.example"


# -- fakes -------------------------------------------------------------------------------------


class FakeSim:
    def __init__(self) -> None:
        self.sessions = [object(), object()]
        self.tick = 42
        self.stats = Stats()

    def names(self):
        return [(65537, "갤러리짱"), (131074, "guest-1")]


class FakeRtc:
    """Stands in for worldserver.rtc: records calls, answers like geckos would."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail = False
        self.hang = False

    async def _enter(self, *call) -> None:
        self.calls.append(call)
        if self.fail:
            raise RuntimeError("boom")
        if self.hang:
            await trio.sleep_forever()

    async def create_connection(self, authorization, address=None):
        await self._enter("create", authorization)
        if authorization == "deny":
            return 401, None, {"WWW-Authenticate": "Token"}
        return (
            200,
            {"userData": {}, "id": KNOWN_ID, "localDescription": {"type": "offer", "sdp": "v=0"}},
            {},
        )

    async def remote_description(self, connection_id, body):
        await self._enter("remote", connection_id, body)
        return (200, None, {}) if connection_id == KNOWN_ID else (404, None, {})

    async def additional_candidates(self, connection_id):
        await self._enter("candidates", connection_id)
        if connection_id != KNOWN_ID:
            return 404, "404: Not Found", {}
        candidate = {"candidate": "candidate:1 1 UDP 1 127.0.0.1 5000 typ host", "sdpMid": "0"}
        return 200, [candidate], {}

    async def close(self, connection_id):
        await self._enter("close", connection_id)
        return 200, None, {}


class FakeStream:
    """Stands in for worldserver.stream_service: echoes packets, scripted bursts, records."""

    def __init__(self) -> None:
        self.sends: dict = {}
        self.opened: list = []
        self.addresses: dict = {}  # key -> the address the socket came from
        self.messages: list = []
        self.closed: list = []
        self.fail_open = False

    def open_peer(self, key, send, address: str = "") -> None:
        if self.fail_open:
            raise RuntimeError("open failed")
        assert key not in self.sends
        self.sends[key] = send
        self.opened.append(key)
        self.addresses[key] = address

    def on_message(self, key, data: bytes, now: float) -> None:
        assert isinstance(now, float) and isinstance(data, bytes)
        self.messages.append((key, data))
        send = self.sends[key]
        if data == b"burst":  # ten one-part snapshots in one go, then a keepalive
            for i in range(10):
                send(part(tick=i))
            send(b"\x12ka")
        elif data == b"flood":  # more non-snapshot packets than the socket may hold
            for i in range(WS_FIFO_LIMIT + 1):
                send(bytes([0x12, i]))
        elif data == b"bye":
            send(b"\x13bye")
        elif data == b"boom":
            raise RuntimeError("service bug")
        else:
            send(data)

    def close_peer(self, key, reason: str) -> None:
        self.closed.append((key, reason))

    async def wait_closed(self, count: int = 1) -> None:
        with trio.fail_after(TIMEOUT):
            while len(self.closed) < count:
                await trio.sleep(0.01)


# -- fixtures ----------------------------------------------------------------------------------


def make_config(tmp_path: Path, **overrides) -> Config:
    values = {
        "http.host": "127.0.0.1",
        "http.port": 0,
        "http.web_root": str(tmp_path / "dist"),
        "http.images_dir": str(tmp_path / "images"),
        "http.cors_origin": ORIGIN,
        "server.data_dir": str(tmp_path / "data"),
    }
    values.update(overrides)
    return Config().with_overrides(values)


class Server:
    def __init__(self, port: int, app, rtc, stream, identities, sim) -> None:
        self.port = port
        self.app = app
        self.rtc = rtc
        self.stream = stream
        self.identities = identities
        self.sim = sim
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws/movement"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT)


async def start_server(nursery, config, *, sim=None, rtc="fake", stream="fake") -> Server:
    sim = sim if sim is not None else FakeSim()
    rtc = FakeRtc() if rtc == "fake" else rtc
    stream = FakeStream() if stream == "fake" else stream
    identities = Identities()
    # Joins need the chat's database (names belong to identities kept there); the chat's
    # routes themselves stay off here (tests/test_chat_*.py cover them).
    chat = ChatService.from_config(config, sim, identities, sim.stats)
    with trio.fail_after(TIMEOUT):
        await nursery.start(chat.run)
        accounts = Accounts.from_config(config, identities, chat, sim.stats)
        app = build_app(config=config, sim=sim, identities=identities, rtc=rtc, ws_movement=stream,
                        accounts=accounts)
        port = await nursery.start(serve_http, config, app)
    return Server(port, app, rtc, stream, identities, sim)


@pytest.fixture
async def server(nursery, tmp_path) -> Server:
    return await start_server(nursery, make_config(tmp_path))


def open_ws(url: str):
    return open_websocket_url(url, connect_timeout=TIMEOUT, disconnect_timeout=TIMEOUT)


# -- plain routes ------------------------------------------------------------------------------


async def test_health_players_and_client_config(server: Server) -> None:
    async with server.client() as client:
        r = await client.get("/health")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "clients": 2, "tick": 42}
        r = await client.get("/api/players")
        assert r.json() == {
            "players": [
                {"entity_id": 65537, "name": "갤러리짱"},
                {"entity_id": 131074, "name": "guest-1"},
            ],
            "world_version": 1,  # the world document's version (a stand-in world has the first)
        }
        r = await client.get("/api/client-config")
        assert r.json() == {"datachannel_timeout_ms": 3000, "tick_rate": 20, "webrtc": True, "world": "open"}
        assert (await client.post("/health")).status_code == 405


async def test_real_simulation_health_and_players(nursery, tmp_path) -> None:
    config = make_config(tmp_path)
    srv = await start_server(nursery, config, sim=Simulation(config, Stats()))
    async with srv.client() as client:
        assert (await client.get("/health")).json() == {"status": "ok", "clients": 0, "tick": 0}
        assert (await client.get("/api/players")).json() == {"players": [], "world_version": 1}


async def test_join(server: Server) -> None:
    async with server.client() as client:
        r = await client.post("/api/join", json={"name": "  갤러리짱 "})
        assert r.status_code == 200
        body = r.json()
        assert body["name"] == "갤러리짱" and len(body["token"]) == 32
        assert server.identities.name_for(body["token"]) == "갤러리짱"

        assert len(body["secret"]) == 43 and body["id"] >= 1  # the secret: shown this once

        r = await client.post("/api/join", json={"name": "Alice"})
        assert r.status_code == 200
        r = await client.post("/api/join", json={"name": "ALICE"})
        assert r.status_code == 409 and r.json()["code"] == "name_taken"
        assert "belongs to someone else" in r.json()["error"]
        r = await client.post("/api/join", json={"name": "갤러리짱"})
        assert r.status_code == 409
        # an old token does not give the name either: only the secret does
        r = await client.post("/api/join", json={"name": "갤러리짱", "token": body["token"]})
        assert r.status_code == 409
        r = await client.post("/api/join", json={"name": "갤러리짱", "secret": "x" * 43})
        assert r.status_code == 409 and r.json()["code"] == "name_taken"

        # the owner, with its secret, gets the name back with a fresh token; the old one ends
        r = await client.post("/api/join", json={"name": "갤러리짱", "secret": body["secret"]})
        assert r.status_code == 200
        again = r.json()
        assert again["name"] == "갤러리짱" and again["id"] == body["id"] and "secret" not in again
        assert again["token"] != body["token"]
        assert server.identities.name_for(again["token"]) == "갤러리짱"
        assert server.identities.name_for(body["token"]) is None
    stats = server.sim.stats
    assert stats.get("identity.created") == 2 and stats.get("identity.reclaimed") == 1
    assert stats.get("drop.join_name_taken") == 3 and stats.get("drop.join_wrong_secret") == 1


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "JSON"),
        (b"not json", "JSON"),
        (b"\xff\xfe", "JSON"),
        (b"[1, 2]", "JSON"),
        (b'"alice"', "JSON"),
        (b"{}", "JSON"),
        (b'{"name": 5}', "string"),
        (b'{"name": ""}', "empty"),
        (b'{"name": "   "}', "empty"),
        (b'{"name": "aaaaaaaaaaaaaaaaaaaaaaaaa"}', "longer"),
        (b'{"name": "a\\u0000b"}', "control"),
        (b'{"name": "<img>"}', "'<'"),
        (b'{"name": "guest-1"}', "reserved"),
        (b'{"name": "server"}', "reserved for the server"),
        (b'{"name": "SERVER"}', "reserved for the server"),
        (b'{"name": "s.e.r.v.e.r"}', "reserved for the server"),
        (b'{"name": "Admin"}', "reserved for the server"),
        (b'{"name": "bob", "token": 7}', "token"),
        (b'{"name": "bob", "secret": 7}', "secret"),
        (b'{"name": "bob", "secret": "short"}', "secret"),
    ],
)
async def test_join_rejects_bad_bodies(server: Server, content: bytes, words: str) -> None:
    async with server.client() as client:
        headers = {"content-type": "application/json"}
        r = await client.post("/api/join", content=content, headers=headers)
        assert r.status_code == 400
        assert words in r.json()["error"]


async def test_join_wrong_method_and_oversized(server: Server) -> None:
    async with server.client() as client:
        assert (await client.get("/api/join")).status_code == 405
        r = await client.post("/api/join", content=b"{" + b" " * 100_000 + b"}")
        assert r.status_code == 413
        assert (await client.get("/health")).status_code == 200


DEEP_BODIES = [b"[" * 20000, b'{"name": ' * 5000, b'{"type": "answer", "sdp": ' + b"[" * 40 + b"]" * 40 + b"}"]


@pytest.mark.parametrize("path", ["/api/join", f"/.wrtc/v2/connections/{KNOWN_ID}/remote-description"])
async def test_deeply_nested_json_is_a_400_with_the_reason(server: Server, path, caplog) -> None:
    """Found by the attack: ``"[" * 20000`` gave a 500 and a RecursionError traceback per request
    (2,000 of them: 6.4 MB of log). Now: a 400 saying why, a counter, one log line per minute."""
    caplog.set_level(logging.INFO, logger="worldserver.http")
    async with server.client() as client:
        for i in range(300):
            r = await client.post(path, content=DEEP_BODIES[i % len(DEEP_BODIES)])
            assert r.status_code == 400, r.text
            assert "nested deeper than 32 levels" in r.text
        assert (await client.get("/health")).status_code == 200
    assert server.sim.stats.get("drop.http_json.too_deep") == 300
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING or rec.exc_info]
    refused = [rec for rec in caplog.records if rec.getMessage() == "json body refused"]
    assert len(refused) == 1 and refused[0].fields["reason"] == "too_deep"
    assert server.rtc.calls == []  # nothing reached the WebRTC service


def random_json(rng, depth: int = 0):
    """A random JSON-able value with the keys and the kinds of values the routes look at."""
    kind = rng.randrange(10 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False, 0, -1, 2**70, 1.5e308, -0.0])
    if kind == 1:
        return rng.choice(["", "alice", "answer", "offer", "v=0", "guest-1", "\ud800", "a\u0000b",
                           "x" * 300, "갤러리짱", "ＡＬＩＣＥ", "<script>", KNOWN_ID, "\"[{"])
    if kind == 2:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(12)))
    if kind in (3, 4, 5):
        return rng.randrange(-10**6, 10**6) if kind == 3 else rng.random() * 10 ** rng.randrange(-5, 5)
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["name", "token", "type", "sdp", "", "__proto__", "constructor"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def fuzz_bodies(seed: int, count: int) -> list[bytes]:
    import json
    import random

    rng = random.Random(seed)
    specials = [b"NaN", b"-Infinity", b'{"name": NaN}', b'{"name": "bob", "token": Infinity}', b"1" * 5000,
                b'{"name": 1e999}', b'{"type": "answer", "sdp": "\\ud800"}', b'{"name": "\\udfff"}',
                b"\xef\xbb\xbf{}", b'{"name": "a", "name": "b"}', "{\"name\": \"é\"}".encode("utf-16"),
                b"{" * 33 + b"}" * 33, b"[" * 32 + b"]" * 32, b"[" * 5000, b'"' + b'\\"' * 20000]
    bodies = list(specials)
    while len(bodies) < count:
        text = json.dumps(random_json(rng), ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        if rng.random() < 0.4 and text:  # a few flipped, cut or doubled bytes
            data = bytearray(text)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            text = bytes(data[: rng.randrange(len(data) + 1)]) if rng.random() < 0.3 else bytes(data)
        bodies.append(text)
    return bodies


async def test_json_routes_fuzzed_answer_without_a_server_error(server: Server, caplog) -> None:
    """Seeded random and mutated bodies to every route that reads JSON: never a 5xx, never an
    error or traceback in the log, and the server answers afterwards."""
    routes = ["/api/join", f"/.wrtc/v2/connections/{KNOWN_ID}/remote-description",
              "/.wrtc/v2/connections", f"/.wrtc/v2/connections/{KNOWN_ID}/close"]
    statuses: dict[int, int] = {}
    async with server.client() as client:
        for i, body in enumerate(fuzz_bodies(seed=8, count=400)):
            headers = {"content-type": "application/json"} if i % 3 else {}
            for path in routes[:2] + [routes[2 + i % 2]]:  # both JSON routes, one other
                r = await client.post(path, content=body, headers=headers)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert r.status_code < 500, (path, body[:80], r.text)
        assert (await client.get("/health")).status_code == 200
    assert statuses.get(400, 0) > 50 and statuses.get(200, 0) > 50  # both refusals and answers ran
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info]


# -- gallery -----------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def decode_png(data: bytes) -> np.ndarray:
    """Minimal decoder for the unfiltered RGB PNGs encode_png writes."""
    width, height = png_size(data)
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + chunk) & 0xFFFFFFFF
        if kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, 3)


def test_encode_png_round_trip() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(rgb)), rgb)
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), dtype=np.uint8))


def test_ensure_sample_images(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "images"
    written = ensure_sample_images(folder, width=64, height=48)
    assert sorted(p.name for p in written) == sorted(SAMPLES)
    for path in written:
        image = decode_png(path.read_bytes())
        assert image.shape == (48, 64, 3) and image.std() > 5  # a picture, not a flat colour
    assert has_images(folder)
    assert ensure_sample_images(folder) == []  # not twice
    other = tmp_path / "mine"
    other.mkdir()
    (other / "photo.JPG").write_bytes(b"\xff\xd8\xff")
    assert ensure_sample_images(other) == []  # a folder with pictures is left alone
    assert sorted(p.name for p in other.iterdir()) == ["photo.JPG"]


def test_image_titles() -> None:
    assert image_title("sunset-over-the-sea.png") == "Sunset over the sea"
    assert image_title("my_cat__photo.JPG") == "My cat photo"
    assert image_title("갤러리_사진.webp") == "갤러리 사진"


async def test_gallery_listing_and_files(server: Server, tmp_path: Path) -> None:
    images = tmp_path / "images"
    async with server.client() as client:
        assert (await client.get("/gallery/images")).json() == {"images": []}  # no folder yet
        ensure_sample_images(images, width=32, height=16)
        (images / "b photo.JPG").write_bytes(b"\xff\xd8\xff\xe0jpeg")
        (images / "갤러리.webp").write_bytes(b"RIFF....WEBP")
        (images / "notes.txt").write_text("not a picture")
        (images / ".hidden.png").write_bytes(encode_png(np.zeros((2, 2, 3), np.uint8)))
        (images / "folder.png").mkdir()
        secret = tmp_path / "secret.png"
        secret.write_bytes(b"outside")
        (images / "link.png").symlink_to(secret)

        listing = (await client.get("/gallery/images")).json()["images"]
        files = [item["file"] for item in listing]
        assert files == [
            "b photo.JPG",
            "concentric-rings.png",
            "diagonal-stripes.png",
            "glowing-checkerboard.png",
            "link.png",
            "sunset-over-the-sea.png",
            "갤러리.webp",
        ]
        assert listing[0] == {
            "url": "/gallery/images/b%20photo.JPG",
            "title": "B photo",
            "file": "b photo.JPG",
        }

        r = await client.get("/gallery/images/diagonal-stripes.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == (images / "diagonal-stripes.png").read_bytes()
        assert png_size(r.content) == (32, 16)
        r = await client.get(listing[0]["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        r = await client.get(listing[-1]["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/webp"

        for bad in (
            "/gallery/images/..%2F..%2Fetc%2Fpasswd",
            "/gallery/images/..%2Fsecret.png",
            "/gallery/images/%2e%2e%2fsecret.png",
            "/gallery/images/..%5Csecret.png",
            "/gallery/images/link.png",  # points outside the folder
            "/gallery/images/notes.txt",
            "/gallery/images/.hidden.png",
            "/gallery/images/folder.png",
            "/gallery/images/missing.png",
            "/gallery/images/a%00.png",
        ):
            r = await client.get(bad)
            assert r.status_code == 404, bad
            assert r.content != b"outside"


async def test_gallery_with_a_file_as_images_dir(nursery, tmp_path: Path) -> None:
    (tmp_path / "images").write_text("not a folder")
    srv = await start_server(nursery, make_config(tmp_path))
    async with srv.client() as client:
        assert (await client.get("/gallery/images")).json() == {"images": []}
        assert (await client.get("/gallery/images/x.png")).status_code == 404


# -- static web client -------------------------------------------------------------------------


async def test_static_web_client(server: Server, tmp_path: Path) -> None:
    async with server.client() as client:
        r = await client.get("/")  # not built yet
        assert r.status_code == 200 and "not built" in r.text and "scripts/setup.sh" in r.text
        assert (await client.get("/app.js")).status_code == 404
        assert (await client.post("/")).status_code == 405

        dist = tmp_path / "dist"
        (dist / "assets").mkdir(parents=True)
        (dist / "index.html").write_text("<!doctype html><title>gallery</title>")
        (dist / "assets" / "app.js").write_text("console.log('hi')")
        (tmp_path / "secret.txt").write_text("outside")

        r = await client.get("/")
        assert r.status_code == 200 and "<title>gallery</title>" in r.text
        assert r.headers["content-type"].startswith("text/html")
        r = await client.get("/assets/app.js")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"]
        assert (await client.get("/missing.css")).status_code == 404
        for bad in ("/..%2Fsecret.txt", "/assets/..%2F..%2Fsecret.txt", "/%2e%2e/secret.txt"):
            r = await client.get(bad)
            assert r.status_code == 404, bad
            assert r.text != "outside"


# -- geckos.io signaling -----------------------------------------------------------------------


def assert_cors(response: httpx.Response) -> None:
    assert response.headers["access-control-allow-origin"] == ORIGIN
    for name, value in GECKOS_CORS_HEADERS.items():
        assert response.headers[name] == value


async def test_geckos_options_everywhere(server: Server) -> None:
    paths = [
        "/.wrtc/v2/connections",
        f"/.wrtc/v2/connections/{KNOWN_ID}/remote-description",
        f"/.wrtc/v2/connections/{KNOWN_ID}/additional-candidates",
        f"/.wrtc/v2/connections/{KNOWN_ID}/close",
        "/.wrtc/v2/anything/at/all",
        "/geckos/.wrtc/v2/connections",
    ]
    async with server.client() as client:
        for path in paths:
            r = await client.options(
                path,
                headers={
                    "Origin": "https://elsewhere.example",
                    "Access-Control-Request-Method": "POST",
                },
            )
            assert r.status_code == 200, path
            assert r.text == "200: OK"
            assert_cors(r)
    assert server.rtc.calls == []


async def test_geckos_happy_path(server: Server) -> None:
    async with server.client() as client:
        r = await client.post("/.wrtc/v2/connections", headers={"Authorization": "tok"})
        assert r.status_code == 200
        assert r.json()["id"] == KNOWN_ID and r.json()["userData"] == {}
        assert r.headers["content-type"] == "application/json"
        assert_cors(r)

        answer = {"type": "answer", "sdp": "v=0\r\n"}
        r = await client.post(f"/.wrtc/v2/connections/{KNOWN_ID}/remote-description", json=answer)
        assert r.status_code == 200 and r.text == "200: OK"
        assert_cors(r)

        r = await client.get(f"/.wrtc/v2/connections/{KNOWN_ID}/additional-candidates")
        assert r.status_code == 200 and r.json()[0]["sdpMid"] == "0"
        assert_cors(r)

        r = await client.post(f"/.wrtc/v2/connections/{KNOWN_ID}/close")
        assert r.status_code == 200 and r.text == "200: OK"
        assert_cors(r)

        # a path prefix in front of /.wrtc/v2 works as with geckos (client option port: null)
        r = await client.post("/geckos/.wrtc/v2/connections")
        assert r.status_code == 200

        r = await client.post("/.wrtc/v2/connections", headers={"Authorization": "deny"})
        assert r.status_code == 401 and r.text == "401: Unauthorized"
        assert r.headers["www-authenticate"] == "Token"
        assert_cors(r)

    assert server.rtc.calls == [
        ("create", "tok"),
        ("remote", KNOWN_ID, answer),
        ("candidates", KNOWN_ID),
        ("close", KNOWN_ID),
        ("create", None),
        ("create", "deny"),
    ]


async def test_geckos_garbage_gets_status_codes(server: Server) -> None:
    base = "/.wrtc/v2/connections"
    remote = f"{base}/{KNOWN_ID}/remote-description"
    cases = [
        # (method, path, body, status)
        ("POST", remote, b"{not json", 400),
        ("POST", remote, b"", 400),
        ("POST", remote, b"\xff\xfe\x00", 400),
        ("POST", remote, b"[]", 400),
        ("POST", remote, b'"answer"', 400),
        ("POST", remote, b'{"type": "answer"}', 400),
        ("POST", remote, b'{"sdp": "v=0"}', 400),
        ("POST", remote, b'{"type": 1, "sdp": "v=0"}', 400),
        ("POST", f"{base}/{OTHER_ID}/remote-description", b'{"type": "answer", "sdp": "v=0"}', 404),
        ("GET", f"{base}/{OTHER_ID}/additional-candidates", b"", 404),
        ("POST", f"{base}/short/remote-description", b'{"type": "answer", "sdp": ""}', 400),
        ("GET", f"{base}/{KNOWN_ID}x/additional-candidates", b"", 400),
        ("POST", f"{base}//close", b"", 400),
        ("GET", base, b"", 405),
        ("PUT", base, b"", 405),
        ("DELETE", f"{base}/{KNOWN_ID}/close", b"", 405),
        ("GET", remote, b"", 405),
        ("POST", f"{base}/{KNOWN_ID}/additional-candidates", b"", 405),
        ("GET", f"{base}/{KNOWN_ID}/close", b"", 405),
        ("GET", "/.wrtc/v2", b"", 404),
        ("GET", "/.wrtc/v2/", b"", 404),
        ("POST", "/.wrtc/v2/connection", b"", 404),
        ("POST", f"{base}/{KNOWN_ID}", b"", 404),
        ("POST", f"{base}/{KNOWN_ID}/close/again", b"", 404),
        ("GET", "/.wrtc/v2/..%2F..%2Fetc%2Fpasswd", b"", 404),
        ("POST", remote, b"{" + b" " * (70 * 1024) + b"}", 413),
        ("POST", base, b"x" * (200 * 1024), 413),
    ]
    async with server.client() as client:
        for method, path, body, status in cases:
            r = await client.request(method, path, content=body)
            assert r.status_code == status, (method, path, body[:40])
            assert_cors(r)
            if status == 400:  # geckos' text, and what was wrong with a body
                assert r.text == "400: Bad Request" or (path == remote and r.text.startswith("400: Bad Request ("))
            if status == 404:
                assert r.text == "404: Not Found"
            if status == 405:
                assert "OPTIONS" in r.headers["allow"]
        assert (await client.get("/health")).status_code == 200
    # only the two calls with a valid path, method and body reached the service
    assert [c[0] for c in server.rtc.calls] == ["remote", "candidates"]


async def test_geckos_service_errors(server: Server, monkeypatch) -> None:
    monkeypatch.setattr(rtc_signaling, "RTC_TIMEOUT", 0.2)
    async with server.client() as client:
        server.rtc.fail = True
        r = await client.post("/.wrtc/v2/connections")
        assert r.status_code == 500 and r.text == "500: Internal Server Error"
        assert_cors(r)
        server.rtc.fail = False
        server.rtc.hang = True
        r = await client.post("/.wrtc/v2/connections")
        assert r.status_code == 503
        assert_cors(r)
        assert (await client.get("/health")).status_code == 200


async def test_geckos_without_webrtc(nursery, tmp_path: Path) -> None:
    srv = await start_server(nursery, make_config(tmp_path), rtc=None)
    async with srv.client() as client:
        r = await client.post("/.wrtc/v2/connections")
        assert r.status_code == 503
        assert_cors(r)
        r = await client.options("/.wrtc/v2/connections")
        assert r.status_code == 200
        assert_cors(r)


async def test_raw_garbage_does_not_hurt(server: Server) -> None:
    garbage = [
        b"\x00\x01\x02\x03 garbage\r\n\r\n",
        b"POST /.wrtc/v2/connections HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 40_000 + b"\r\n\r\n",
        b"POST /api/join HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]
    for blob in garbage:
        with trio.fail_after(TIMEOUT):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                try:
                    await stream.send_all(blob)
                    await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    pass
    async with server.client() as client:
        assert (await client.get("/health")).status_code == 200


def test_make_authorize() -> None:
    identities = Identities()
    token = identities.issue(1, "alice")
    optional = make_authorize(Config(), identities)
    assert optional(None) is True
    assert optional("") is True
    assert optional("wrong") is True
    assert optional(token) == {"name": "alice"}
    assert optional(f"Bearer {token}") == {"name": "alice"}
    required = make_authorize(Config().with_overrides({"http.require_token": True}), identities)
    assert required(None) == 401
    assert required("wrong") == 401
    assert required(token) == {"name": "alice"}
    identities.release(token)
    assert required(token) == 401


def test_hypercorn_settings() -> None:
    hc = hypercorn_config(Config())
    assert hc.bind == ["0.0.0.0:8080"]
    assert hc.keep_alive_max_requests > 1000
    assert not hc.ssl_enabled
    assert hc.alpn_protocols == ["http/1.1"]  # no HTTP/2 (worldserver.http_guard says why)
    v6 = hypercorn_config(Config().with_overrides({"http.host": "::1", "http.port": 0}))
    assert v6.bind == ["[::1]:0"]
    with pytest.raises(ValueError, match="together"):
        hypercorn_config(Config().with_overrides({"http.certfile": "cert.pem"}))


async def test_many_requests_on_one_connection(server: Server) -> None:
    async with server.client() as client:
        for _ in range(50):
            assert (await client.get("/health")).status_code == 200
        assert (await client.get("/api/players")).status_code == 200


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls(nursery, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    config = make_config(tmp_path, **{"http.certfile": str(cert), "http.keyfile": str(key)})
    srv = await start_server(nursery, config)
    base_url = f"https://127.0.0.1:{srv.port}"
    async with httpx.AsyncClient(base_url=base_url, verify=False, timeout=TIMEOUT) as client:
        r = await client.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"
    # A client that prefers HTTP/2 gets HTTP/1.1: hypercorn's HTTP/2 holds a connection whose
    # client went away (worldserver.http_guard).
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", srv.port, ssl_context=context)
        async with stream:
            await stream.do_handshake()
            assert stream.selected_alpn_protocol() == "http/1.1"


# -- /ws/movement ------------------------------------------------------------------------------


def part(tick: int, index: int = 0) -> bytes:
    """A SNAPSHOT packet as the outbox sees it: type, the rest of the 13-byte header, then a
    part payload that starts with its u32 tick (SPEC 5.2)."""
    return b"\x10" + bytes(12) + tick.to_bytes(4, "little") + bytes([index])


async def test_outbox_replaces_snapshots_and_keeps_order() -> None:
    box = WsOutbox(limit=3)
    assert box.put(b"\x04accept")
    assert box.put(part(1))
    assert box.put(b"\x12keep")
    assert box.put(part(2))  # a newer tick: the unsent part of tick 1 goes
    assert box.replaced == 1
    with trio.fail_after(TIMEOUT):
        assert [await box.get() for _ in range(3)] == [b"\x04accept", b"\x12keep", part(2)]
    assert box.put(part(3))  # nothing waits any more
    assert box.replaced == 1
    for i in range(3):
        assert box.put(bytes([0x12, i]))
    assert not box.put(b"\x12over")
    assert box.overflow and box.closed
    with trio.fail_after(TIMEOUT):
        assert await box.get() is None
    assert not box.put(b"\x10late")


async def test_outbox_keeps_every_part_of_the_newest_tick() -> None:
    box = WsOutbox(limit=3)
    for i in range(3):
        assert box.put(part(7, i))
    assert box.put(b"\x12ka")
    assert box.replaced == 0
    for i in range(2):
        assert box.put(part(8, i))  # tick 8 replaces all three parts of tick 7
    assert box.replaced == 3
    with trio.fail_after(TIMEOUT):
        assert [await box.get() for _ in range(3)] == [b"\x12ka", part(8, 0), part(8, 1)]


async def test_ws_round_trip(server: Server) -> None:
    stream = server.stream
    with trio.fail_after(TIMEOUT):
        async with open_ws(server.ws_url) as ws:
            for packet in (b"\x01" + bytes(127), b"\x11input", bytes([0x12]) * MAX_WS_MESSAGE):
                await ws.send_message(packet)
                assert await ws.get_message() == packet
            await ws.send_message(b"burst")
            assert await ws.get_message() == part(tick=9)  # only the newest snapshot went out
            assert await ws.get_message() == b"\x12ka"
        await stream.wait_closed()
    key = stream.opened[0]
    assert key.startswith("ws:127.0.0.1:")
    assert stream.addresses[key] == key[len("ws:"):].partition("#")[0]  # for the join/leave log lines
    assert [m[0] for m in stream.messages] == [key] * 4
    assert len(stream.closed) == 1
    assert stream.closed[0][0] == key and stream.closed[0][1].startswith("client closed")
    assert server.sim.stats.get("drop.ws_snapshot_replaced") == 9


@pytest.mark.parametrize(
    "message, code, reason",
    [
        ("a text frame", 1003, "text message"),
        (bytes(MAX_WS_MESSAGE + 1), 1009, "message too big"),
        (bytes(200_000), 1009, "message too big"),
        (b"flood", 1008, "send queue full"),
        (b"boom", 1011, "server error"),
    ],
)
async def test_ws_bad_messages_close(server: Server, message, code: int, reason) -> None:
    stream = server.stream
    with trio.fail_after(TIMEOUT):
        async with open_ws(server.ws_url) as ws:
            await ws.send_message(message)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.get_message()
            assert info.value.reason.code == code
        await stream.wait_closed()
    assert len(stream.closed) == 1
    if reason is not None:
        assert stream.closed[0][1] == reason
    with trio.fail_after(TIMEOUT):  # the server is fine
        async with open_ws(server.ws_url) as ws:
            await ws.send_message(b"\x12hi")
            assert await ws.get_message() == b"\x12hi"
        await stream.wait_closed(2)
    assert len(stream.closed) == 2
    if message == b"flood":
        assert server.sim.stats.get("drop.ws_send_queue_full") == 1


async def test_ws_message_beyond_hypercorn_limit(server: Server) -> None:
    server.app.state.ws_idle_timeout = 0.5  # how the handler notices (see WS_FRAME_LIMIT)
    with trio.fail_after(TIMEOUT):
        async with open_ws(server.ws_url) as ws:
            await ws.send_message(bytes(http_server.WS_FRAME_LIMIT + 1))
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1009
        await server.stream.wait_closed()
    assert len(server.stream.closed) == 1


async def test_ws_disconnect_packet_closes_the_socket(server: Server) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_ws(server.ws_url) as ws:
            await ws.send_message(b"bye")
            assert await ws.get_message() == b"\x13bye"
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1000
        await server.stream.wait_closed()
    assert server.stream.closed[0][1] == "server disconnect"


async def test_ws_idle_timeout(server: Server) -> None:
    server.app.state.ws_idle_timeout = 0.3
    with trio.fail_after(TIMEOUT):
        async with open_ws(server.ws_url) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1001
        await server.stream.wait_closed()
    assert server.stream.closed[0][1] == "idle timeout"


async def test_ws_server_shutdown_closes_peers(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            server_scope = trio.CancelScope()

            async def run_server(task_status=trio.TASK_STATUS_IGNORED) -> None:
                with server_scope:
                    async with trio.open_nursery() as inner:
                        task_status.started(await start_server(inner, make_config(tmp_path)))

            srv = await outer.start(run_server)
            async with open_ws(srv.ws_url) as ws:
                await ws.send_message(b"\x12hi")
                assert await ws.get_message() == b"\x12hi"
                server_scope.cancel()
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
    assert [reason for _, reason in srv.stream.closed] == ["server shutdown"]


async def test_ws_refused_without_service(nursery, tmp_path: Path) -> None:
    srv = await start_server(nursery, make_config(tmp_path), stream=None)
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectionRejected) as info:
            async with open_ws(srv.ws_url):
                pass
    assert info.value.status_code == 403


async def test_ws_open_peer_failure(server: Server) -> None:
    server.stream.fail_open = True
    with trio.fail_after(TIMEOUT):
        async with open_ws(server.ws_url) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1011
    assert server.stream.closed == []  # never opened, so never closed


async def test_ws_unknown_path_is_refused(server: Server) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectionRejected):
            async with open_ws(server.ws_url.replace("/ws/movement", "/ws/nothing")):
                pass


# -- one bad connection must not stop the server -------------------------------------------------

async def send_and_read_to_the_end(port: int, data: bytes) -> None:
    """Sends ``data`` on a new connection, says that is all (a half close), and reads what the
    server answers until it closes the connection (or resets it): the server is done with it."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        try:
            await stream.send_all(data)
            await stream.send_eof()
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass  # the server may reset a connection it refuses


UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize("path", ["/ws/movement", "/ws/chat", "/elsewhere"])
async def test_bytes_behind_an_upgrade_request_end_only_that_connection(server: Server, path) -> None:
    """hypercorn lets the h11 error of a WebSocket upgrade followed by early bytes escape the
    connection (pgjones/hypercorn#225) and end the whole server: contained and counted here."""
    for extra in (b"x", b"\x81\x85" + bytes(9), b"GET / HTTP/1.1\r\n\r\n"):
        with trio.fail_after(TIMEOUT):
            await send_and_read_to_the_end(server.port, UPGRADE.format(path=path).encode() + extra)
        async with server.client() as client:  # the server still answers
            assert (await client.get("/health")).status_code == 200
    stats = server.sim.stats
    assert stats.get("drop.http_connection_error") + stats.get("drop.ws_accept_failed") >= 1


@pytest.mark.parametrize("path", ["/api/join", "/.wrtc/v2/connections"])
async def test_a_body_cut_short_is_a_counted_drop(server: Server, path, caplog) -> None:
    """The client promises 100 bytes, sends 10 and goes away: counted, no error logged. Each
    client closes right after sending (however soon the server reads) and the next one comes
    once the drop before it is counted."""
    for number in range(1, 4):
        with trio.fail_after(TIMEOUT):
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
                await stream.send_all(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
                                      + b'{"name": "')
            while server.sim.stats.get("drop.http_client_disconnect") < number:
                await trio.sleep(0.01)
    assert server.sim.stats.get("drop.http_client_disconnect") == 3
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    async with server.client() as client:
        assert (await client.get("/health")).status_code == 200


def nasty_requests() -> list[bytes]:
    """Malformed, hostile and truncated requests, then seeded byte mutations of them."""
    import random

    upgrade = UPGRADE.format(path="/ws/chat")
    cases = [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(range(64)),
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 100_000 + b"\r\n\r\n",
        b"POST /api/join HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /api/join HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"POST /api/join HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /\x00\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n",
        upgrade.replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=99\r\n\r\n").encode(),
        upgrade.replace("Version: 13", "Version: 99").encode(),
        upgrade.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "").encode(),
        upgrade.encode() + b"\x81\xff" + bytes(20),
        UPGRADE.format(path="/ws/movement").encode() + b"\x88\x80\x00\x00\x00\x00",
        upgrade.encode() + b"\x89\xfe\xff\xff" + bytes(8),
        b"GET /gallery/images/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n" * 50,
    ]
    rng = random.Random(7)
    for _ in range(24):
        base = bytearray(rng.choice(cases[:16])[:2000])
        for _ in range(5):
            base[rng.randrange(len(base))] = rng.randrange(256)
        cases.append(bytes(base))
        cases.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))
    return cases


async def connections_ended(stats, baseline: int = 0) -> None:
    """Returns once the server's open HTTP connections are back to ``baseline`` (each one's
    socket closed and tasks done: ``http_guard.open_connections``); the caller sets the deadline."""
    while open_connections(stats) != baseline:
        await trio.sleep(0.01)


async def test_nasty_requests_leave_the_server_answering(server: Server, caplog) -> None:
    """Each request is sent, the client says that is all, and the server must answer and close
    the connection (an HTTP/2 switch once held it forever, pgjones/hypercorn#317)."""
    for data in nasty_requests():
        with trio.fail_after(TIMEOUT):
            await send_and_read_to_the_end(server.port, data)
    with trio.fail_after(TIMEOUT):
        await connections_ended(server.sim.stats)
    async with server.client() as client:
        assert (await client.get("/health")).status_code == 200
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


# -- no HTTP/2: h2c upgrades answered over HTTP/1.1, the HTTP/2 preface refused ------------------

H2C_UPGRADE = [("Host", "127.0.0.1"), ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
               ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]


def h2c_request(path: str) -> bytes:
    """An HTTP/1.1 GET asking to upgrade to HTTP/2 as curl --http2 does."""
    client = h11.Connection(h11.CLIENT)
    return client.send(h11.Request(method="GET", target=path, headers=H2C_UPGRADE)) + client.send(h11.EndOfMessage())


async def read_response(stream, client: h11.Connection) -> tuple[h11.Response, bytes]:
    """The next whole response on ``stream``, parsed by the client side of h11."""
    response, body = None, b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return response, body
        else:
            raise AssertionError(f"unexpected {event!r}")


async def test_an_h2c_upgrade_request_gets_an_http11_answer(server: Server) -> None:
    """The Upgrade: h2c offer is ignored (counted): an ordinary HTTP/1.1 answer, and the
    connection serves the next request."""
    with trio.fail_after(TIMEOUT):
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            client = h11.Connection(h11.CLIENT)
            await stream.send_all(client.send(h11.Request(method="GET", target="/health", headers=H2C_UPGRADE))
                                  + client.send(h11.EndOfMessage()))
            response, body = await read_response(stream, client)
            assert response.status_code == 200 and response.http_version == b"1.1"
            assert b'"status":"ok"' in body
            assert client.our_state is h11.DONE and client.their_state is h11.DONE  # not switched
            client.start_next_cycle()
            await stream.send_all(client.send(h11.Request(method="GET", target="/api/players",
                                                          headers=[("Host", "127.0.0.1")]))
                                  + client.send(h11.EndOfMessage()))
            response, body = await read_response(stream, client)
            assert response.status_code == 200 and b"players" in body
    assert server.sim.stats.get("drop.http_h2c_upgrade") == 1


@pytest.mark.parametrize("path", ["/health", "/api/players", "/nowhere", "/"])
async def test_an_abandoned_h2c_upgrade_ends_its_connection(server: Server, path) -> None:
    """Found against the real server: an h2c upgrade request and a close held the server's
    side open for good. Now the server closes it however the client leaves: at once (half
    close, reading to the end), after reading the answer, or closing without reading."""
    stats = server.sim.stats
    baseline = open_connections(stats)
    with trio.fail_after(TIMEOUT):
        await send_and_read_to_the_end(server.port, h2c_request(path))  # EOF: the server closed
        await connections_ended(stats, baseline)

        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            client = h11.Connection(h11.CLIENT)
            await stream.send_all(h2c_request(path))
            client.send(h11.Request(method="GET", target=path, headers=H2C_UPGRADE))
            client.send(h11.EndOfMessage())
            response, _ = await read_response(stream, client)
            assert response.http_version == b"1.1" and response.status_code in (200, 404)
            await trio.testing.wait_all_tasks_blocked()  # the server is done with it too: idle
            await stream.send_eof()  # now the client is done
            assert await stream.receive_some(65536) == b""  # and so is the server
        await connections_ended(stats, baseline)

        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(h2c_request(path))
        await stream.aclose()
        await connections_ended(stats, baseline)
    assert stats.get("drop.http_h2c_upgrade") == 3
    assert stats.get("drop.http_connection_error") == 0


def h2_preface_and_request(path: str) -> bytes:
    """What an HTTP/2 client with prior knowledge sends first: the preface, SETTINGS and a GET."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    connection.send_headers(1, [(":method", "GET"), (":path", path), (":scheme", "http"),
                                (":authority", "127.0.0.1")], end_stream=True)
    return connection.data_to_send()


async def test_the_http2_preface_is_refused_and_the_connection_closed(server: Server) -> None:
    """HTTP/2 with prior knowledge held the connection as the h2c upgrade did: a 505 now."""
    stats = server.sim.stats
    with trio.fail_after(TIMEOUT):
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(h2_preface_and_request("/health"))  # no half close: the server ends it
            received = b""
            while chunk := await stream.receive_some(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 505 "), received[:200]
        assert b"connection: close" in received.lower()
        await connections_ended(stats)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)  # and a client that goes at once
        await stream.send_all(h2_preface_and_request("/"))
        await stream.aclose()
        await connections_ended(stats)
    assert stats.get("drop.http_h2_preface") == 2
    assert stats.get("drop.http_connection_error") == 0


async def test_a_client_that_closes_between_requests_ends_the_connection(server: Server) -> None:
    """hypercorn kept a keep-alive connection whose client had closed until its keep-alive
    timer (20 s) fired; the server's side now closes at once."""
    stats = server.sim.stats
    with trio.fail_after(TIMEOUT):
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            client = h11.Connection(h11.CLIENT)
            await stream.send_all(client.send(h11.Request(method="GET", target="/health",
                                                          headers=[("Host", "127.0.0.1")]))
                                  + client.send(h11.EndOfMessage()))
            response, _ = await read_response(stream, client)
            assert response.status_code == 200
            await trio.testing.wait_all_tasks_blocked()  # the server waits for the next request
            assert open_connections(stats) == 1
            await stream.send_eof()
            assert await stream.receive_some(65536) == b""
        await connections_ended(stats)
    with trio.fail_after(TIMEOUT):  # and a WebSocket still opens, works and ends
        async with open_ws(server.ws_url) as ws:
            await ws.send_message(b"echo")
            assert await ws.get_message() == b"echo"
        await connections_ended(stats)


async def test_worlds_routes_serve_the_world_document(nursery, tmp_path) -> None:
    config = make_config(tmp_path, **{"worlds.hosted": "halls"})
    srv = await start_server(nursery, config, sim=Simulation(config, Stats()))
    async with srv.client() as client:
        assert (await client.get("/api/worlds")).json() == {
            "default": "halls", "worlds": [{"id": "halls", "title": "The Halls", "players": 0}]}
        doc = (await client.get("/api/worlds/halls")).json()
        assert doc["id"] == "halls" and len(doc["walls"]) == 11 and len(doc["pictures"]) == 34
        r = await client.get("/api/worlds/gallery")
        assert r.status_code == 404 and r.json()["error"] == "no such world"


async def test_world_pages_serve_the_page(nursery, tmp_path) -> None:
    """``/w/{id}`` is the page (it shows that world); other paths under /w/ are not."""
    config = make_config(tmp_path)
    srv = await start_server(nursery, config, sim=Simulation(config, Stats()))
    async with srv.client() as client:
        root = await client.get("/")
        page = await client.get("/w/halls")
        assert page.status_code == 200 and page.text == root.text
        assert (await client.get("/w/halls/")).status_code == 200
        assert (await client.get("/w/Not-A-World!")).status_code == 404
        assert (await client.get("/w/halls/app.js")).status_code == 404


async def test_admin_serves_the_dashboard_page_beside_its_api(nursery, tmp_path) -> None:
    """``/admin`` is the built client's admin.html (the not-built page while there is none);
    ``/admin/api/...`` stays the API, and no other path under /admin/ is the page."""
    config = make_config(tmp_path)
    srv = await start_server(nursery, config, sim=Simulation(config, Stats()))
    async with srv.client() as client:
        r = await client.get("/admin")
        assert r.status_code == 200 and "not built" in r.text
        dist = tmp_path / "dist"
        dist.mkdir()
        (dist / "index.html").write_text("<!doctype html><title>gallery</title>")
        (dist / "admin.html").write_text("<!doctype html><title>dashboard</title>")
        for path in ("/admin", "/admin/", "/admin.html"):
            r = await client.get(path)
            assert r.status_code == 200 and r.text == "<!doctype html><title>dashboard</title>", path
            assert r.headers["content-type"].startswith("text/html")
        assert (await client.get("/")).text == "<!doctype html><title>gallery</title>"
        for path in ("/admin/x", "/admin/admin.html", "/administrator"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.post("/admin")).status_code == 405
