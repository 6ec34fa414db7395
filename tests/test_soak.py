"""tools/soak.py, briefly: a real server, 20 UDP bots and 5 chat bots for 12 seconds.

Checks the report's shape and what does not depend on the machine's speed: the server stayed
up and wrote stats lines, every sample has the server's RSS, the swarms ran with the bots
asked for and reported, and the soak stopped the server it started. The hour-long run and
its figures are in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_soak_smoke_report():
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSERVER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "soak.py"), "--minutes", "0.2", "--bots", "20", "--chat-bots", "5",
         "--chat-rate", "1", "--sample-every", "2", "--stats-interval", "1", "--warmup-minutes", "0.05",
         "--json", "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("date", "settings", "machine", "server_alive", "stats_lines", "rss", "lateness_p99_ms_per_minute",
                "stalls", "samples", "udp", "chat", "ok"):
        assert key in report, key
    assert report["server_alive"] is True and report["server_exit"] is None
    assert not [s for s in report["stalls"] if s["kind"] == "server_exited"]
    assert report["stats_lines"] >= 3
    assert report["lateness_p99_ms_per_minute"] and report["lateness_p99_ms_per_minute"][0]["lines"] >= 3
    assert len(report["samples"]) >= 3
    assert all(s["rss_kb"] > 10_000 and s["fds"] > 0 for s in report["samples"])
    assert report["rss"]["samples"] == len(report["samples"]) and report["rss"]["max_mb"] > 10
    assert report["udp_error"] is None and report["udp"]["bots_requested"] == 20
    assert report["chat_error"] is None and report["chat"]["bots"] == 5
    assert any("chat_ready" in s for s in report["samples"])  # the chat swarm reported progress
    assert report["settings"]["server_sets"] == []  # the default configuration: the bots joined
    assert proc.returncode == (0 if report["ok"] else 1)
