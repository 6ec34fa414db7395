"""Helpers shared by the chat tests: an in-process chat server and a server process.

:func:`start_chat_server` runs, in the caller's nursery, the real HTTP app (hypercorn on
127.0.0.1, port 0) with a real :class:`ChatService` on SQLite in a temporary directory and a
small stand-in for the simulation (sessions with token, name and entity id).
:func:`start_server_process` runs ``python -m worldserver run`` as a subprocess and returns it
with its HTTP port. :func:`join` gets a join token over HTTP (:func:`join_identity` the whole
answer, with the secret that takes the name back later).

Must not: reach any address but 127.0.0.1, or wait without a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from worldserver.chat.fanout import Fanout
from worldserver.chat.service import ChatService
from worldserver.config import Config
from worldserver.http_app import build_app
from worldserver.http_server import serve_http
from worldserver.identity import Identities
from worldserver.stats import Stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 10.0


class FakeSession:
    def __init__(self, token: str, name: str, entity_id: int) -> None:
        self.token = token.encode()
        self.name = name
        self.entity_id = entity_id


class FakeSim:
    def __init__(self) -> None:
        self.sessions: list[FakeSession] = []
        self.tick = 0
        self.stats = Stats()

    def names(self):
        return [(s.entity_id, s.name) for s in self.sessions]


class ChatServer:
    def __init__(self, port: int, chat: ChatService, identities: Identities, sim: FakeSim, app, config) -> None:
        self.port = port
        self.chat = chat
        self.identities = identities
        self.sim = sim
        self.app = app
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws/chat"
        self.stats = sim.stats

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT)

    async def join(self, name: str) -> str:
        return await join(self.url, name)


def chat_config(tmp_path: Path, **overrides) -> Config:
    values = {
        "http.host": "127.0.0.1",
        "http.port": 0,
        "http.web_root": str(tmp_path / "dist"),
        "http.images_dir": str(tmp_path / "images"),
        "server.data_dir": str(tmp_path / "data"),
        "chat.admin_token": "admin-secret",
    }
    values.update(overrides)
    return Config().with_overrides(values)


async def start_chat_server(nursery, tmp_path: Path, *, fanout: bool = True,
                            identities: Identities | None = None, **overrides) -> ChatServer:
    """The HTTP app with the chat service in ``nursery``; ``fanout=False`` leaves out the
    fan-out pump, so that every chat socket takes the ASGI writer path; ``identities`` the
    session tokens to use (e.g. with a fake clock; default: fresh ones)."""
    config = chat_config(tmp_path, **overrides)
    sim = FakeSim()
    identities = identities if identities is not None else Identities()
    chat = ChatService.from_config(config, sim, identities, sim.stats)
    with trio.fail_after(TIMEOUT):
        await nursery.start(chat.run)
        pump = None
        if fanout:
            pump = Fanout(sim.stats)
            await nursery.start(pump.run)
        app = build_app(config=config, sim=sim, identities=identities, chat=chat, chat_fanout=pump)
        port = await nursery.start(serve_http, config, app)
    return ChatServer(port, chat, identities, sim, app, config)


async def join(base_url: str, name: str, secret: str | None = None) -> str:
    """A join token for ``name`` (a new name, or one taken back with its ``secret``)."""
    return (await join_identity(base_url, name, secret))["token"]


async def join_identity(base_url: str, name: str, secret: str | None = None) -> dict:
    """The whole answer of ``POST /api/join``: token, name, id and, for a new name, secret."""
    body = {"name": name} if secret is None else {"name": name, "secret": secret}
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as http:
        response = await http.post("/api/join", json=body)
        assert response.status_code == 200, response.text
        return response.json()


def start_server_process(data_dir: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "clients", "python")]))
    return subprocess.Popen(
        [sys.executable, "-m", "worldserver", "run", "--host", "127.0.0.1", "--udp-port", "0",
         "--set", "server.log_format=json", "--set", "http.host=127.0.0.1", "--set", "http.port=0",
         "--set", "webrtc.enabled=false", "--set", f"server.data_dir={data_dir}",
         "--set", f"http.images_dir={data_dir / 'images'}", "--set", "chat.admin_token=admin-secret",
         *extra],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )


async def wait_ports(proc: subprocess.Popen, timeout: float = 30.0) -> tuple[int, int]:
    """Read the server's JSON log until it says where HTTP listens: (http port, udp port)."""
    udp = 0
    with trio.fail_after(timeout):
        while True:
            line = await trio.to_thread.run_sync(proc.stderr.readline)
            assert line, "server exited before listening"
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("msg") == "listening" and "udp" in record:
                udp = int(str(record["udp"]).rsplit(":", 1)[1])
            if record.get("msg") == "http listening" and "http" in record:
                return int(str(record["http"]).rsplit(":", 1)[1]), udp


async def wait_http_port(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """Read the server's JSON log until it says where HTTP listens."""
    return (await wait_ports(proc, timeout))[0]


def drain_stderr(proc: subprocess.Popen) -> None:
    """Keep reading the server's log in a daemon thread so that it never blocks on a full pipe."""
    import threading

    def run() -> None:
        for _ in proc.stderr:
            pass

    threading.Thread(target=run, daemon=True).start()
