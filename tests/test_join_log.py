"""Every join and leave on every transport is one INFO line of a real server's log.

One ``worldserver run`` process (JSON logs to a file, WebRTC on loopback) for the module.
A UDP client, a ``/ws/movement`` WebSocket, a native WebRTC channel and a Hatongsu one (JSON
events on a geckos channel) each join and leave; the log must hold ``client joined`` and
``client left`` for each, with the entity id the client was given (or the avatar's), the
name it joined with, the transport, the address it came from and, on leaving, the reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from protocol import PROTOCOL_VERSION
from protocol.client import ClientConnection
from protocol.events import Connected
from protocol.messages import Welcome
from worldclient.client import open_client
from worldclient.join import join

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 30.0


class Server:
    def __init__(self, workdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSERVER_")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
        self.log_path = workdir / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worldserver", "run", "--host", "127.0.0.1", "--udp-port", "0",
             "--set", "http.host=127.0.0.1", "--set", "http.port=0", "--set", "server.log_format=json",
             "--set", "webrtc.host_addresses=127.0.0.1", "--set", "server.stats_interval=3600"],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip
        self.udp = self.http = None
        deadline = time.monotonic() + DEADLINE
        while self.udp is None or self.http is None:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log_path.read_text()
            for record in self.records():
                if record.get("msg") == "listening":
                    self.udp = int(record["udp"].rsplit(":", 1)[1])
                elif record.get("msg") == "http listening":
                    self.http = int(record["http"].rsplit(":", 1)[1])
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.http}"

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def lines(self, msg: str, **fields) -> list[dict]:
        return [r for r in self.records() if r.get("msg") == msg and all(r.get(k) == v for k, v in fields.items())]

    async def wait_line(self, msg: str, **fields) -> dict:
        with trio.fail_after(DEADLINE):
            while not (found := self.lines(msg, **fields)):
                await trio.sleep(0.05)
        assert len(found) == 1, found
        return found[0]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(DEADLINE)
        self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("joinlog"))
    try:
        yield server
    finally:
        server.stop()


def assert_pair(joined: dict, left: dict, entity: int, name: str, transport: str) -> None:
    assert joined["level"] == left["level"] == "INFO"
    assert (joined["id"], joined["name"], joined["transport"]) == (entity, name, transport)
    assert (left["id"], left["name"], left["transport"], left["address"]) == (entity, name, transport, joined["address"])
    assert joined["address"].startswith("127.0.0.1")
    assert left["reason"]


async def test_udp(server):
    async with open_client("127.0.0.1", server.udp, http=server.url, name="log-udp") as client:
        entity = client.entity_id
        joined = await server.wait_line("client joined", name="log-udp")
    left = await server.wait_line("client left", name="log-udp")
    assert_pair(joined, left, entity, "log-udp", "udp")
    assert joined["address"].rpartition(":")[2].isdigit() and joined["world"] == "gallery"


async def test_websocket(server):
    joined_http = await join(server.url, "log-ws")
    async with open_websocket_url(f"ws://127.0.0.1:{server.http}/ws/movement") as ws:
        conn = ClientConnection(version=PROTOCOL_VERSION, nonce=7, token=joined_http.token.encode(), trusted=True)
        await ws.send_message(conn.connect(trio.current_time()))
        welcome = None
        with trio.fail_after(DEADLINE):
            while welcome is None:
                events, _ = conn.receive_datagram(bytes(await ws.get_message()), trio.current_time())
                welcome = next((Welcome.decode(e.welcome) for e in events if isinstance(e, Connected)), None)
        joined = await server.wait_line("client joined", name="log-ws")
    left = await server.wait_line("client left", name="log-ws")
    assert_pair(joined, left, welcome.entity_id, "log-ws", "ws")
    assert joined["address"].rpartition(":")[2].isdigit()
    assert left["reason"].startswith("client closed (")


def test_webrtc_native_and_hatongsu(server):
    from worldclient import aio_bridge
    from worldclient.rtc_client import open_geckos

    async def main():
        joined_http = await join(server.url, "log-rtc")
        channel = await open_geckos(server.url, host_addresses=["127.0.0.1"], timeout=DEADLINE)
        conn = ClientConnection(version=PROTOCOL_VERSION, nonce=9, token=joined_http.token.encode(), trusted=True)
        channel.send_binary(conn.connect(trio.current_time()))
        welcome = None
        with trio.fail_after(DEADLINE):
            while welcome is None:
                message = await channel.receive(timeout=DEADLINE)
                if isinstance(message, bytes):
                    events, _ = conn.receive_datagram(message, trio.current_time())
                    welcome = next((Welcome.decode(e.welcome) for e in events if isinstance(e, Connected)), None)
        native = await server.wait_line("client joined", name="log-rtc")
        hatongsu_channel = await open_geckos(server.url, host_addresses=["127.0.0.1"], timeout=DEADLINE)
        hatongsu_channel.send_text(json.dumps({"clientPlayerUpdate": {
            "position": {"x": 1.0, "y": 0.0, "z": 1.0}, "rotation": {"x": 0, "y": 0, "z": 0, "w": 1}}}))
        hatongsu = await server.wait_line("client joined", transport="hatongsu", peer=hatongsu_channel.id)
        await channel.close()
        await hatongsu_channel.close()
        native_left = await server.wait_line("client left", name="log-rtc")
        hatongsu_left = await server.wait_line("client left", transport="hatongsu", peer=hatongsu_channel.id)
        return welcome.entity_id, native, native_left, hatongsu, hatongsu_left

    entity, native, native_left, hatongsu, hatongsu_left = aio_bridge.run(main)
    assert_pair(native, native_left, entity, "log-rtc", "rtc")
    assert native["address"] == "127.0.0.1"  # the address the offer came from
    assert_pair(hatongsu, hatongsu_left, hatongsu["id"], "", "hatongsu")
    assert hatongsu["address"] == "127.0.0.1" and isinstance(hatongsu["id"], int)
