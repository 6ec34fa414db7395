"""Attack probe: deeply nested JSON bodies and admin-token guessing against a real server.

Job: start ``python -m worldserver run`` on loopback (free ports, a temporary data directory,
WebRTC on so that the geckos routes parse their bodies, its log in a temporary file), then

1. post ``--requests`` bodies of ``"[" * 20000`` (the issue's probe) alternately to
   ``/api/join`` and to a geckos ``remote-description`` route, and report the statuses, the
   time taken and how many bytes the server's log grew by;
2. join, open one ``/ws/chat`` socket and send up to ``--guesses`` ``hello`` frames with wrong
   admin tokens, as fast as the server answers, and report how many were answered, how long
   it took and how the socket ended; then open a second socket from the same address and
   present the *right* token once (it must be refused: the address is locked out).

Prints one JSON object with the figures (docs/reliability.md quotes them). Run from the
repository root: ``.venv/bin/python tools/attack/parsers_and_admin.py``.

Must not: reach any address but 127.0.0.1, leave the server running (it is terminated, then
killed), or wait without a deadline.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from pathlib import Path

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from worldtools.server_process import ServerProcess

DEADLINE = 120.0  # seconds any phase may take


async def deep_bodies(url: str, count: int, log_path: Path) -> dict:
    body = b"[" * 20000
    paths = ["/api/join", "/.wrtc/v2/connections/" + "A" * 24 + "/remote-description"]
    statuses: dict[str, int] = {}
    before = log_path.stat().st_size
    start = time.perf_counter()
    with trio.fail_after(DEADLINE):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for i in range(count):
                r = await client.post(paths[i % 2], content=body)
                key = f"{r.status_code}"
                statuses[key] = statuses.get(key, 0) + 1
            sample = (await client.post(paths[0], content=body)).text
    elapsed = time.perf_counter() - start
    await trio.sleep(0.5)  # let the server's log lines reach the file
    return {"requests": count, "statuses": statuses, "seconds": round(elapsed, 2),
            "log_bytes": log_path.stat().st_size - before, "answer": sample}


async def admin_guesses(url: str, ws_url: str, count: int, admin_token: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.post("/api/join", json={"name": "guesser"})
        r.raise_for_status()
        token = r.json()["token"]
    answered = 0
    closed = None
    start = time.perf_counter()
    with trio.fail_after(DEADLINE):
        async with open_websocket_url(ws_url) as ws:
            try:
                for i in range(1, count + 1):
                    await ws.send_message(json.dumps(
                        {"id": i, "op": "hello", "token": token, "admin_token": f"guess-{i}"}))
                    while True:
                        frame = json.loads(await ws.get_message())
                        if "ev" not in frame:
                            break
                    answered += 1
            except ConnectionClosed as exc:
                closed = {"code": exc.reason.code, "reason": exc.reason.reason}
    elapsed = time.perf_counter() - start
    second = None
    with trio.fail_after(DEADLINE):
        async with open_websocket_url(ws_url) as ws:
            await ws.send_message(json.dumps({"id": 1, "op": "hello", "token": token, "admin_token": admin_token}))
            try:
                while True:
                    frame = json.loads(await ws.get_message())
                    if "ev" not in frame:
                        second = {"ok": frame.get("ok"), "error": frame.get("error")}
            except ConnectionClosed as exc:
                second = {**(second or {}), "closed": exc.reason.code}
    return {"guesses_answered": answered, "seconds": round(elapsed, 2), "socket_closed": closed,
            "right_token_from_same_address": second}


async def main(args) -> None:
    admin_token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        server = ServerProcess(
            [f"server.data_dir={tmp}/data", f"http.images_dir={tmp}/images", f"chat.admin_token={admin_token}"],
            defaults=(), log_path=log_path, stop_timeout=15.0, scratch="parsers_and_admin_",
        )  # fmt: skip
        try:
            url = await trio.to_thread.run_sync(server.wait_http, 60.0)
            port = int(url.rsplit(":", 1)[1])
            report = {"deep_json": await deep_bodies(url, args.requests, log_path),
                      "admin_guessing": await admin_guesses(url, f"ws://127.0.0.1:{port}/ws/chat",
                                                            args.guesses, admin_token)}
            tracebacks = sum("Traceback" in line for line in log_path.read_text(errors="replace").splitlines())
            report["log_lines_with_traceback"] = tracebacks
            print(json.dumps(report, indent=2))
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="deeply nested bodies to post")
    parser.add_argument("--guesses", type=int, default=5000, help="wrong admin tokens to try on one socket")
    trio.run(main, parser.parse_args())
