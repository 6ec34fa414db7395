"""`worldserver run` as a real process: it serves, logs, and shuts down cleanly on signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import trio

from worldclient.client import open_client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def start_server(*extra: str) -> tuple[subprocess.Popen, int, int]:
    """Starts `worldserver run` on free ports; returns (process, UDP port, HTTP port)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "clients", "python")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldserver", "run", "--host", "127.0.0.1", "--udp-port", "0",
         "--set", "server.log_format=json", "--set", "http.host=127.0.0.1", "--set", "http.port=0", *extra],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )
    udp = http = None
    with trio.fail_after(20):
        while udp is None or http is None:
            line = await trio.to_thread.run_sync(proc.stderr.readline)
            assert line, "server exited before listening"
            record = json.loads(line)
            if record.get("msg") == "listening":
                udp = int(record["udp"].rsplit(":", 1)[1])
            elif record.get("msg") == "http listening":
                http = int(record["http"].rsplit(":", 1)[1])
    return proc, udp, http


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_disconnects_clients_and_exits_zero(signum):
    # server.drain_grace = 0: a SIGTERM stops at once (its drain is tested in test_admin.py)
    proc, port, http = await start_server("--set", "server.drain_grace=0")
    try:
        async with open_client("127.0.0.1", port, http=f"http://127.0.0.1:{http}") as client:
            assert await client.wait_until(lambda c: c.mirror.position_of(c.entity_id) is not None, 5.0)
            proc.send_signal(signum)
            with trio.fail_after(5):
                while client.connected:
                    await trio.sleep(0.02)
            assert client.closed_reason == "server_shutdown"
        rc = await trio.to_thread.run_sync(proc.wait, 10)
        assert rc == 0
        rest = proc.stderr.read()
        assert "Traceback" not in rest
        assert any(json.loads(l).get("msg") == "stopped" for l in rest.splitlines() if l.startswith("{"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_stats_line_is_logged():
    proc, port, http = await start_server("--set", "server.stats_interval=0.3")
    try:
        async with open_client("127.0.0.1", port, http=f"http://127.0.0.1:{http}") as client:
            await client.send_input(1.0, 0.0)
            stats = None
            with trio.fail_after(10):
                while stats is None or stats["clients"] < 1:
                    line = await trio.to_thread.run_sync(proc.stderr.readline)
                    record = json.loads(line)
                    if record.get("msg") == "stats":
                        stats = record
        for key in ("clients", "entities", "tick_ms_p50", "tick_ms_p99", "late_ms_p99", "bytes_in_s", "bytes_out_s", "drops"):
            assert key in stats
        assert stats["bytes_out_s"] > 0
    finally:
        proc.terminate()
        proc.wait(10)
