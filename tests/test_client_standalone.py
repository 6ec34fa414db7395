"""worldclient runs without the server package: imported and used with ``worldserver`` unimportable.

A subprocess sets ``sys.modules["worldserver"] = None`` (so that any ``import worldserver...``
raises ImportError) before it imports every module of ``worldclient``, then uses the client's
public pieces against a real server (another process, ``worldserver run`` on loopback): a UDP
client joins over HTTP and gets its entity and a snapshot, a chat client sends a message that
is acknowledged, and a geckos.io data channel opens over WebRTC on 127.0.0.1
(``worldclient.aio_bridge.run`` hosting trio on asyncio, ``worldclient.ice`` choosing the host
address), all inside one guest run. The server runs on the real clock: the waits are
deadlines on conditions, nothing is timed.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import tomllib

import pytest

import worldclient
from worldtools.bench.server_load import SERVER_START_TIMEOUT, ServerProcess

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLIENT_DEADLINE = 60.0  # seconds the client subprocess may take in all

CLIENT = textwrap.dedent(
    """
    import sys
    sys.modules["worldserver"] = None  # any import of the server package now fails
    import importlib, json, pkgutil
    import trio
    import worldclient

    modules = sorted(m.name for m in pkgutil.iter_modules(worldclient.__path__))
    for name in modules:
        importlib.import_module(f"worldclient.{name}")
    from worldclient import aio_bridge
    from worldclient.chat_client import open_chat
    from worldclient.client import open_client
    from worldclient.join import join
    from worldclient.rtc_client import open_geckos

    http, udp_port = sys.argv[1], int(sys.argv[2])

    async def main():
        out = {"modules": modules}
        with trio.fail_after(40):
            async with open_client("127.0.0.1", udp_port, http=http, name="standalone") as client:
                await client.send_input(1.0, 0.0)
                out["entity"] = client.entity_id
                out["snapshot"] = await client.wait_until(lambda c: c.snapshots > 0, timeout=20)
            joined = await join(http, "standalone-chat")
            async with open_chat(http, joined.token, reconnect=False) as chat:
                message = await chat.send(chat.public_room, "no server package here")
                out["chat"] = message["text"]
            channel = await open_geckos(http, host_addresses=["127.0.0.1"], timeout=20)
            try:
                out["webrtc"] = [channel.opened.is_set(), channel.label, channel.ordered]
            finally:
                await channel.close()
        out["server_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "worldserver"
                                       and sys.modules[m] is not None)
        return out

    print(json.dumps(aio_bridge.run(main)))
    """
)


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess(["webrtc.host_addresses=127.0.0.1"])
    try:
        srv.wait_listening(SERVER_START_TIMEOUT)
        yield srv
    finally:
        srv.stop()


def test_the_client_imports_and_runs_without_the_server_package(server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSERVER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])  # the server is there too
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, server.http, str(server.address[1])],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=CLIENT_DEADLINE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"aio_bridge", "chat_client", "client", "ice", "join", "mirror", "rtc_client"} <= set(out["modules"])
    assert out["entity"] > 0 and out["snapshot"] is True
    assert out["chat"] == "no server package here"
    assert out["webrtc"] == [True, "geckos.io", False]  # the server's unordered channel
    assert out["server_modules"] == []


def test_the_client_names_the_projects_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert worldclient.__version__ == project["version"]
