"""The geckos.io signaling routes of a real `worldserver run` (real aiortc service) under garbage.

Malformed bodies, unknown ids, wrong methods and odd paths get the right status codes, every
answer carries the CORS headers, and the server keeps serving (health, and a real WebRTC
connection afterwards).
"""

from __future__ import annotations

import httpx
import pytest

from tests.test_server_process import start_server

PREFIX = "/.wrtc/v2"
CORS = "access-control-allow-origin"


@pytest.fixture
async def server():
    proc, _udp, http = await start_server("--set", "webrtc.host_addresses=127.0.0.1")
    try:
        yield f"http://127.0.0.1:{http}"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_garbage_gets_status_codes_and_server_survives(server):
    async with httpx.AsyncClient(base_url=server, timeout=10) as http:
        created = await http.post(f"{PREFIX}/connections")
        assert created.status_code == 200 and created.headers[CORS] == "*"
        body = created.json()
        cid = body["id"]
        assert len(cid) == 24 and body["localDescription"]["type"] == "offer" and body["userData"] == {}
        assert "a=candidate" in body["localDescription"]["sdp"]
        unknown = "A" * 24
        cases = [
            ("OPTIONS", f"{PREFIX}/connections", None, 200),
            ("OPTIONS", f"{PREFIX}/anything/at/all", None, 200),
            ("POST", f"{PREFIX}/connections/{cid}/remote-description", b"{not json", 400),
            ("POST", f"{PREFIX}/connections/{cid}/remote-description", b'{"type": "answer"}', 400),
            ("POST", f"{PREFIX}/connections/{cid}/remote-description", b'["sdp"]', 400),
            ("POST", f"{PREFIX}/connections/{cid}/remote-description", b'{"type":"answer","sdp":"garbage"}', 400),
            ("POST", f"{PREFIX}/connections/{unknown}/remote-description", b'{"type":"answer","sdp":"v=0"}', 404),
            ("GET", f"{PREFIX}/connections/{unknown}/additional-candidates", None, 404),
            ("GET", f"{PREFIX}/connections/{cid}/additional-candidates", None, 200),
            ("GET", f"{PREFIX}/connections", None, 405),
            ("DELETE", f"{PREFIX}/connections/{cid}/close", None, 405),
            ("POST", f"{PREFIX}/connections/short/close", None, 400),
            ("POST", f"{PREFIX}/no-such-route", None, 404),
            ("POST", f"{PREFIX}/connections/{cid}/remote-description", b"x" * 200_000, 413),
            ("POST", f"{PREFIX}/connections/{unknown}/close", None, 200),
        ]
        for method, path, content, expected in cases:
            reply = await http.request(method, path, content=content, headers={"content-type": "application/json"})
            assert reply.status_code == expected, (method, path, reply.status_code, reply.text[:200])
            assert reply.headers.get(CORS) == "*", (method, path)
        assert (await http.post(f"{PREFIX}/connections/{cid}/close")).status_code == 200
        health = await http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        # and a fresh, well-formed connection still gets an offer
        again = await http.post(f"{PREFIX}/connections")
        assert again.status_code == 200 and again.json()["localDescription"]["type"] == "offer"
