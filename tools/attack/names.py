"""Attack probe: taking someone's name -- and with it their private rooms -- on a real server.

Job: start ``python -m worldserver run`` on loopback (free ports, a temporary data directory,
WebRTC off, its log in a temporary file; ``--untrusted`` applies the per-address limits to
loopback too: ``limits.trusted_networks=[]``), then

1. the owner joins as ``alice``, makes a private room and says a secret in it;
2. the attacker posts ``--joins`` anonymous ``POST /api/join`` with fresh names as fast as the
   server answers (the issue's 100,100 evicted the owner's idle token) and the probe reports the
   statuses, the time, and whether the owner's token is still live;
3. the attacker asks for ``alice`` (no secret, then a made-up one), and, as a fresh name of its
   own, for the room's history, a search, the member list and the room's deletion;
4. the server is restarted on the same data directory (all tokens gone) and step 3 is repeated;
5. the owner comes back with the secret of its first join: the room, its history, a search
   and the deletion;
6. one join token opens two ``/ws/movement`` avatars: how many stay in the world.

Prints one JSON object with the figures (docs/reliability.md quotes them). Run from the
repository root: ``.venv/bin/python tools/attack/names.py [--joins 100100] [--untrusted]``.

Must not: reach any address but 127.0.0.1, leave the server running (it is terminated, then
killed), or wait without a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "clients" / "python")]

from protocol import PROTOCOL_VERSION  # noqa: E402
from protocol.client import ClientConnection  # noqa: E402
from protocol.events import Connected, Disconnected  # noqa: E402
from worldtools.server_process import ServerProcess  # noqa: E402

DEADLINE = 60.0  # seconds any single step may take
SECRET_WORDS = "the vault code is 4711"


class Server:
    """The server on ``data`` (a restart keeps it), its log appended to ``log_path``, under
    the tools' one runner (:mod:`worldtools.server_process`)."""

    def __init__(self, data: Path, log_path: Path, untrusted: bool) -> None:
        self.data, self.log_path, self.untrusted = data, log_path, untrusted
        self.process: ServerProcess | None = None
        self.port = 0

    async def start(self) -> None:
        extra = ["limits.trusted_networks=[]"] if self.untrusted else []
        self.process = ServerProcess(
            ["webrtc.enabled=false", f"server.data_dir={self.data}", f"http.images_dir={self.data}/images", *extra],
            defaults=(), log_path=self.log_path, stop_timeout=15.0, scratch="names_",
        )  # fmt: skip
        await trio.to_thread.run_sync(self.process.wait_http, DEADLINE)
        self.port = int(self.process.http.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class Chat:
    """One /ws/chat socket speaking SPEC 7 frames by hand."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 1

    async def request(self, op: str, **fields) -> dict:
        request_id = self.next_id
        self.next_id += 1
        await self.ws.send_message(json.dumps({"id": request_id, "op": op, **fields}))
        with trio.fail_after(DEADLINE):
            while True:
                frame = json.loads(await self.ws.get_message())
                if frame.get("re") == request_id:
                    return frame


async def join(http: httpx.AsyncClient, name: str, secret: str | None = None) -> httpx.Response:
    return await http.post("/api/join", json={"name": name} if secret is None else {"name": name, "secret": secret})


async def owner_sets_up(server: Server) -> dict:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        joined = (await join(http, "alice")).json()
    async with open_websocket_url(f"{server.ws}/ws/chat") as ws:
        chat = Chat(ws)
        assert (await chat.request("hello", token=joined["token"]))["ok"]
        room = (await chat.request("room.create", name="alice's vault", private=True))["room"]["id"]
        assert (await chat.request("msg.send", room=room, kind="text", text=SECRET_WORDS))["ok"]
    return {**joined, "room": room}


async def flood(server: Server, count: int, owner_token: str) -> dict:
    statuses: dict[str, int] = {}
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tag = os.urandom(3).hex()
        for i in range(count):
            r = await join(http, f"f{tag}{i}")
            statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
    elapsed = time.perf_counter() - start
    # is the owner's token still live? (a chat hello answers it)
    async with open_websocket_url(f"{server.ws}/ws/chat") as ws:
        live = bool((await Chat(ws).request("hello", token=owner_token))["ok"])
    return {"joins": count, "statuses": statuses, "seconds": round(elapsed, 1),
            "joins_per_second": round(count / elapsed, 1) if elapsed else None, "owner_token_live": live}


async def attacker(server: Server, room: int, tag: str) -> dict:
    out: dict = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for label, secret in (("no_secret", None), ("made_up_secret", "A" * 43)):
            r = await join(http, "alice", secret)
            out[f"join_alice_{label}"] = {"status": r.status_code, **r.json()}
        own = await join(http, f"mallory-{tag}")
        if own.status_code != 200:
            out["own_name"] = {"status": own.status_code, **own.json()}
            return out
        token = own.json()["token"]
    async with open_websocket_url(f"{server.ws}/ws/chat") as ws:
        chat = Chat(ws)
        hello = await chat.request("hello", token=token)
        out["room_in_hello"] = any(info["id"] == room for info in hello.get("rooms", []))
        for op, fields in (("msg.history", {}), ("msg.search", {"query": "4711"}),
                           ("room.members", {}), ("room.join", {}), ("room.delete", {})):
            reply = await chat.request(op, room=room, **fields)
            out[op] = "ok" if reply.get("ok") else reply["error"]["code"]
    return out


async def owner_comes_back(server: Server, owner: dict) -> dict:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        r = await join(http, "alice", owner["secret"])
    out = {"join_with_secret": r.status_code}
    if r.status_code != 200:
        return out
    async with open_websocket_url(f"{server.ws}/ws/chat") as ws:
        chat = Chat(ws)
        hello = await chat.request("hello", token=r.json()["token"])
        vault = next((info for info in hello.get("rooms", []) if info["id"] == owner["room"]), None)
        out["history"] = [m.get("text") for m in (vault or {}).get("messages", [])]
        found = await chat.request("msg.search", room=owner["room"], query="4711")
        out["search"] = [m.get("text") for m in found.get("messages", [])]
        out["delete"] = "ok" if (await chat.request("room.delete", room=owner["room"]))["ok"] else "refused"
    return out


async def two_avatars(server: Server) -> dict:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        token = (await join(http, f"twin-{os.urandom(3).hex()}")).json()["token"]
    results = []
    async with open_websocket_url(f"{server.ws}/ws/movement") as a, open_websocket_url(f"{server.ws}/ws/movement") as b:
        conns = []
        for nonce, ws in ((1, a), (2, b)):
            conn = ClientConnection(version=PROTOCOL_VERSION, nonce=nonce, token=token.encode(), trusted=True)
            await ws.send_message(conn.connect(trio.current_time()))
            conns.append((conn, ws))
            events: list = []
            with trio.fail_after(DEADLINE):
                while not any(isinstance(e, Connected) for e in events):
                    evs, _ = conn.receive_datagram(bytes(await ws.get_message()), trio.current_time())
                    events += evs
        first, ws = conns[0]
        ended = None
        with trio.move_on_after(5):
            try:
                while ended is None:
                    evs, _ = first.receive_datagram(bytes(await ws.get_message()), trio.current_time())
                    ended = next((e.reason for e in evs if isinstance(e, Disconnected)), None)
            except ConnectionClosed:
                ended = "socket closed"
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            players = (await http.get("/api/players")).json()["players"]
        results = {"first_avatar_ended": ended, "avatars_in_world": len(players)}
    return results


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data", Path(tmp) / "server.log", args.untrusted)
        report: dict = {"untrusted": args.untrusted}
        try:
            await server.start()
            owner = await owner_sets_up(server)
            report["flood"] = await flood(server, args.joins, owner["token"])
            report["attacker"] = await attacker(server, owner["room"], "1")
            server.stop()
            await server.start()
            report["attacker_after_restart"] = await attacker(server, owner["room"], "2")
            report["owner_after_restart"] = await owner_comes_back(server, owner)
            report["one_token_two_avatars"] = await two_avatars(server)
            report["log_lines_with_traceback"] = sum(
                "Traceback" in line for line in server.log_path.read_text(errors="replace").splitlines())
            db = Path(tmp) / "data" / "chat.sqlite3"
            report["database_bytes"] = sum(p.stat().st_size for p in db.parent.glob("chat.sqlite3*"))
        finally:
            server.stop()
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=2000, help="anonymous joins with fresh names")
    parser.add_argument("--untrusted", action="store_true",
                        help="apply the per-address limits to loopback (limits.trusted_networks=[])")
    trio.run(main, parser.parse_args())
