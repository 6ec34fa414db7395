"""The bot swarm over the browser transports (WebSocket, WebRTC) against a real server process.

Starts ``python -m worldserver run`` on loopback (UDP and HTTP on free ports, ICE host
candidate 127.0.0.1, JSON logs) once for the module, and runs small swarms
(``worldtools.swarm.channels``) over ``/ws/movement`` and over geckos.io data channels: every bot
connects with the trusted handshake, snapshots arrive at about the tick rate, inputs go out at
20 Hz, observers measure move-to-observed latency, and the report carries the UDP swarm's
fields. Also checks the ``--transport`` dispatch of ``worldtools.swarm.run_swarm``, worker
processes, and the aiortc floor server of ``tools/bench/aiortc_floor.py`` (the benchmark's
baseline) with the same bots. The server is another process on the real clock, so rates and
latencies are not asserted (they depend on the machine; test_swarm checks them on virtual
time): only that every bot connected, received snapshots, sent inputs and saw turns, and the
waits for the server's log are conditions with generous deadlines.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from worldtools import swarm
from worldtools.swarm import channels
from worldtools.swarm.ws import ws_url

ROOT = pathlib.Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
GONE_TIMEOUT = 30.0  # for a stats line that shows the bots gone (one is written every 0.5 s)

REPORT_FIELDS = {
    "bots_requested", "connected", "failures", "failure_reasons", "decode_errors",
    "snapshots_per_bot_s", "bytes_per_bot_s", "inputs_per_bot_s", "latency_ms_p50",
    "latency_ms_p99", "latency_samples", "packet_loss", "duration_s", "processes", "ok",
    "cpu_percent", "observed_entities_mean", "transport", "open_ms_p50", "open_ms_p99", "setup_s", "probes_blocked",
}  # fmt: skip


class _LoggedProcess:
    """A subprocess whose JSON log lines (stderr) go to a file that is polled."""

    def __init__(self, cmd: list[str], workdir: pathlib.Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
        env = {k: v for k, v in env.items() if not k.startswith("WORLDSERVER_")}
        self.log_path = workdir / "stderr.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip

    def records(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def http_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for record in self.records():
                if record.get("msg") == "http listening" and record.get("http"):
                    return f"http://{record['http']}"
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"did not start: {self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("server")
    proc = _LoggedProcess(
        [
            sys.executable, "-m", "worldserver", "run", "--host", "127.0.0.1", "--udp-port", "0",
            "--set", "http.port=0", "--set", "http.host=127.0.0.1",
            "--set", "webrtc.host_addresses=127.0.0.1", "--set", "server.log_format=json",
            "--set", f"http.web_root={ROOT / 'clients' / 'web' / 'dist'}",
            "--set", "server.stats_interval=0.5",
        ],
        workdir,
    )  # fmt: skip
    try:
        url = proc.http_url()
        yield proc, url
    finally:
        proc.stop()


def _assert_healthy(report: dict, transport: str, bots: int) -> None:
    assert REPORT_FIELDS <= report.keys()
    assert report["transport"] == transport
    assert report["bots_requested"] == bots
    assert report["connected"] == bots, report["failure_reasons"]
    assert report["failures"] == 0, (report["failure_reasons"], report["decode_errors"])
    assert report["ok"] is True
    assert report["snapshots_per_bot_s"] > 0 and report["inputs_per_bot_s"] > 0
    assert report["bytes_per_bot_s"] > 0
    assert report["open_ms_p50"] is not None


def _sessions_gone(proc: _LoggedProcess, kind: str) -> None:
    """The bots said goodbye: wait until a stats line written after now shows no client of
    this transport (fails after GONE_TIMEOUT seconds)."""
    started = time.time()
    deadline = time.monotonic() + GONE_TIMEOUT
    while True:
        stats = [r for r in proc.records() if r.get("msg") == "stats" and _ts(r["ts"]) > started]
        if stats and stats[-1].get(f"clients_{kind}", 0) == 0:
            return
        assert time.monotonic() < deadline, f"clients_{kind} still in {stats[-1:]}"
        time.sleep(0.2)


def _ts(text: str) -> float:
    from datetime import datetime, timezone

    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in text else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()


def test_ws_url():
    assert ws_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/ws/movement"
    assert ws_url("https://example.org/game/") == "wss://example.org/game/ws/movement"
    with pytest.raises(ValueError):
        ws_url("127.0.0.1:8080")


def test_ws_swarm(server):
    proc, url = server
    report = channels.run_bots_sync("ws", url, 4, 3.0, observers=4, seed=11)
    _assert_healthy(report, "ws", 4)
    assert report["latency_samples"] >= 1
    assert 0.0 < report["latency_ms_p50"] <= report["latency_ms_p99"]
    assert report["observed_entities_mean"] >= 3  # the bots see each other near the spawn
    _sessions_gone(proc, "ws")


def test_webrtc_swarm(server):
    proc, url = server
    report = channels.run_bots_sync("webrtc", url, 4, 3.0, observers=4, seed=12)
    _assert_healthy(report, "webrtc", 4)
    assert report["latency_samples"] >= 1
    assert 0.0 < report["latency_ms_p50"] <= report["latency_ms_p99"]
    _sessions_gone(proc, "rtc")


def test_swarm_cli_dispatches_transports(server, capsys):
    proc, url = server
    args = argparse.Namespace(
        server=None, transport="ws", http=url, bots=3, duration=2.0, processes=1,
        observers=1, seed=3, json=True,
    )  # fmt: skip
    assert swarm.run_swarm(args) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["transport"] == "ws" and shown["connected"] == 3
    assert "latency_samples_ms" not in shown and "open_ms" not in shown

    # without --json: the table, and a progress line a second on stderr (none with --quiet)
    args.json, args.quiet = False, False
    assert swarm.run_swarm(args) == 0
    out, err = capsys.readouterr()
    assert "measured (s)" in out and "set-up before measuring (s)" in out
    assert any(line.startswith("swarm t=") and "connected 3/3" in line and "latency p99" in line
               for line in err.splitlines()), err
    args.quiet = True
    assert swarm.run_swarm(args) == 0
    assert "swarm" not in capsys.readouterr().err

    args.http = None
    assert swarm.run_swarm(args) == 2  # ws without --http
    args.transport, args.server = "udp", None
    assert swarm.run_swarm(args) == 2  # udp without --server
    assert "needs --server" in capsys.readouterr().err


def test_worker_processes_are_merged(server):
    proc, url = server
    report = channels.run_processes("ws", url, bots=5, duration=2.5, processes=2, observers=2, seed=4)
    assert report["processes"] == 2
    assert report["bots_requested"] == 5 and report["connected"] == 5
    assert report["failures"] == 0, report["failure_reasons"]
    assert report["snapshots_per_bot_s"] > 0
    assert len(report["open_ms"]) == 5
    assert report["setup_s"] > 0 and report["duration_s"] >= 2.5  # measured after the set-up


def test_unreachable_server_counts_failures():
    report = channels.run_bots_sync("ws", "http://127.0.0.1:9", 2, 1.0, observers=0, open_timeout=0.5)
    assert report["connected"] == 0
    assert report["failures"] == 2
    assert report["ok"] is False


def test_floor_server_with_webrtc_bots(tmp_path):
    """The benchmark's baseline serves the same bots: trusted handshake, 200-byte snapshots."""
    floor = _LoggedProcess(
        [sys.executable, str(ROOT / "tools" / "bench" / "aiortc_floor.py"), "--serve",
         "--max-seconds", "60"],
        tmp_path,
    )  # fmt: skip
    try:
        url = floor.http_url()
        report = channels.run_bots_sync("webrtc", url, 3, 2.5, observers=1, seed=5)
    finally:
        floor.stop()
    _assert_healthy(report, "webrtc", 3)
    assert 185 <= report["bytes"] / report["snapshots"] <= 200  # every packet a snapshot
    stats = [r for r in floor.records() if r.get("msg") == "stats"]
    assert max(s["clients"] for s in stats) == 3
